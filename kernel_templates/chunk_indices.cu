// Device builders of the varlen chunk table: (sequence, chunk within
// sequence) for every chunk of BT tokens, in sequence order, with no host
// round trip; and of a chunk plan: (first row, rows) per chunk.
//
// One block walks the sequences THREADS at a time: each thread counts the
// chunks of one sequence, a block scan turns counts into offsets, and then
// all threads fill the tile's rows together (a binary search over the
// offsets finds each row's sequence), so one long sequence does not
// serialise on one thread. Rows past the count are set to -1.
#include "kda_common.cuh"

namespace kda {

// PLAN: rows are a chunk plan's (first row, rows) instead of (sequence,
// chunk), unused rows (0, 0), and no count (kda_chunk_plan_build).
template <int IDX_DT, int BT, int THREADS, bool PLAN>
__device__ __forceinline__ void build_rows(const typename storage<IDX_DT>::type *__restrict__ cu_seqlens,
                                           long long num_seqs, long long total_tokens,
                                           int *__restrict__ out, long long capacity,
                                           int *__restrict__ count) {
  static_assert(THREADS % 32 == 0 && THREADS <= 1024, "whole warps");
  __shared__ long long offs[THREADS + 1];
  __shared__ long long warp_sums[THREADS / 32];
  __shared__ long long bos[PLAN ? THREADS : 1], eos[PLAN ? THREADS : 1];
  // A plan builder is launched plainly (src/chunk_plan.c), so the wait is a
  // no-op there; a table builder may overlap the kernel before it.
  grid_dependency_wait();
  grid_dependents_launch();
  const int tid = (int)threadIdx.x;
  const int lane = tid & 31, warp = tid >> 5;
  long long carry = 0;

  for (long long tile = 0; tile < num_seqs; tile += THREADS) {
    const long long i = tile + tid;
    long long nc = 0, a = 0, b = 0;
    if (i < num_seqs) {
      a = (long long)cu_seqlens[i];
      b = (long long)cu_seqlens[i + 1];
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
    if (PLAN) {
      // The plan's rows need each sequence's bounds: kept beside the
      // offsets (the table's rows need only the sequence's index).
      bos[tid] = a;
      eos[tid] = b;
    }
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
        if (PLAN) {
          const long long r0 = bos[lo] + (e - offs[lo]) * BT;
          const long long left = eos[lo] - r0;
          out[2 * pos] = (int)r0;
          out[2 * pos + 1] = (int)(left < BT ? left : BT);
        } else {
          out[2 * pos] = (int)(tile + lo);
          out[2 * pos + 1] = (int)(e - offs[lo]);
        }
      }
    }
    carry += tile_total;
    __syncthreads();
  }

  for (long long p = carry + tid; p < capacity; p += THREADS) {
    out[2 * p] = PLAN ? 0 : -1;
    out[2 * p + 1] = PLAN ? 0 : -1;
  }
  if (!PLAN && tid == 0) *count = (int)(carry < capacity ? carry : capacity);
}

template <int IDX_DT, int BT, int THREADS>
__global__ void __launch_bounds__(THREADS)
build_chunk_indices(const typename storage<IDX_DT>::type *__restrict__ cu_seqlens,
                    long long num_seqs, long long total_tokens, int *__restrict__ out,
                    long long capacity, int *__restrict__ count) {
  build_rows<IDX_DT, BT, THREADS, false>(cu_seqlens, num_seqs, total_tokens, out, capacity, count);
}

// total_tokens < 2^31 (kda_chunk_plan_create), so rows fit in int.
template <int IDX_DT, int BT, int THREADS>
__global__ void __launch_bounds__(THREADS)
build_chunk_plan(const typename storage<IDX_DT>::type *__restrict__ cu_seqlens,
                 long long num_seqs, long long total_tokens, int *__restrict__ out,
                 long long capacity) {
  build_rows<IDX_DT, BT, THREADS, true>(cu_seqlens, num_seqs, total_tokens, out, capacity, nullptr);
}

}  // namespace kda
