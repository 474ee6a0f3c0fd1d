// Device builder of the varlen chunk table: (sequence, chunk within sequence)
// for every chunk of BT tokens, in sequence order, with no host round trip.
//
// One block walks the sequences THREADS at a time: each thread counts the
// chunks of one sequence, a block scan turns counts into offsets, and then
// all threads fill the tile's rows together (a binary search over the
// offsets finds each row's sequence), so one long sequence does not
// serialise on one thread. Rows past the count are set to -1.
#include "kda_common.cuh"

namespace kda {

template <int IDX_DT, int BT, int THREADS>
__global__ void __launch_bounds__(THREADS)
build_chunk_indices(const typename storage<IDX_DT>::type *__restrict__ cu_seqlens,
                    long long num_seqs, long long total_tokens, int *__restrict__ out,
                    long long capacity, int *__restrict__ count) {
  static_assert(THREADS % 32 == 0 && THREADS <= 1024, "whole warps");
  __shared__ long long offs[THREADS + 1];
  __shared__ long long warp_sums[THREADS / 32];
  grid_dependency_wait();
  grid_dependents_launch();
  const int tid = (int)threadIdx.x;
  const int lane = tid & 31, warp = tid >> 5;
  long long carry = 0;

  for (long long tile = 0; tile < num_seqs; tile += THREADS) {
    const long long i = tile + tid;
    long long nc = 0;
    if (i < num_seqs) {
      long long a = (long long)cu_seqlens[i], b = (long long)cu_seqlens[i + 1];
      a = a < 0 ? 0 : (a > total_tokens ? total_tokens : a);
      b = b > total_tokens ? total_tokens : b;
      if (b > a) nc = (b - a + BT - 1) / BT;
    }
    // Inclusive warp scan, then a scan of the warp totals.
    long long incl = nc;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const long long y = __shfl_up_sync(0xffffffffu, incl, d);
      if (lane >= d) incl += y;
    }
    if (lane == 31) warp_sums[warp] = incl;
    __syncthreads();
    if (warp == 0) {
      // Exclusive scan of the warp totals by the first warp (shuffles, not
      // a serial loop on one thread: that loop cost ~0.5 us at 1024 threads).
      constexpr int NW = THREADS / 32;  // at most 32
      const long long w = lane < NW ? warp_sums[lane] : 0;
      long long x = w;
#pragma unroll
      for (int d = 1; d < 32; d <<= 1) {
        const long long y = __shfl_up_sync(0xffffffffu, x, d);
        if (lane >= d) x += y;
      }
      if (lane < NW) warp_sums[lane] = x - w;
      const long long wincl = __shfl_sync(0xffffffffu, x, 31);
      if (lane == 0) offs[THREADS] = wincl;
    }
    __syncthreads();
    offs[tid] = warp_sums[warp] + incl - nc;
    __syncthreads();

    const long long tile_total = offs[THREADS];
    // Only the tile's sequences can own a row: search those.
    const int in_tile = (int)(num_seqs - tile < THREADS ? num_seqs - tile : THREADS);
    for (long long e = tid; e < tile_total; e += THREADS) {
      // Largest k with offs[k] <= e: empty sequences share their
      // successor's offset, so the largest one is the non-empty owner.
      int lo = 0, hi = in_tile - 1;
      while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (offs[mid] <= e) lo = mid; else hi = mid - 1;
      }
      const long long pos = carry + e;
      if (pos < capacity) {
        out[2 * pos] = (int)(tile + lo);
        out[2 * pos + 1] = (int)(e - offs[lo]);
      }
    }
    carry += tile_total;
    __syncthreads();
  }

  for (long long p = carry + tid; p < capacity; p += THREADS) {
    out[2 * p] = -1;
    out[2 * p + 1] = -1;
  }
  if (tid == 0) *count = (int)(carry < capacity ? carry : capacity);
}

}  // namespace kda
