// Device builders of the varlen chunk table: (sequence, chunk within
// sequence) for every chunk of BT tokens, in sequence order, with no host
// round trip; and of a chunk plan (its layout: src/plan_pack.h).
//
// One block walks the sequences THREADS at a time: each thread counts the
// chunks of one sequence, a block scan turns counts into offsets, and then
// all threads fill the tile's rows together (a binary search over the
// offsets finds each row's sequence), so one long sequence does not
// serialise on one thread. Rows past the count are set to -1.
#include "kda_common.cuh"

namespace kda {

template <int IDX_DT, int BT, int THREADS>
__device__ __forceinline__ void build_rows(const typename storage<IDX_DT>::type *__restrict__ cu_seqlens,
                                           long long num_seqs, long long total_tokens,
                                           int *__restrict__ out, long long capacity,
                                           int *__restrict__ count) {
  static_assert(THREADS % 32 == 0 && THREADS <= 1024, "whole warps");
  __shared__ long long offs[THREADS + 1];
  __shared__ long long warp_sums[THREADS / 32];
  // A table builder may overlap the kernel before it.
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

template <int IDX_DT, int BT, int THREADS>
__global__ void __launch_bounds__(THREADS)
build_chunk_indices(const typename storage<IDX_DT>::type *__restrict__ cu_seqlens,
                    long long num_seqs, long long total_tokens, int *__restrict__ out,
                    long long capacity, int *__restrict__ count) {
  build_rows<IDX_DT, BT, THREADS>(cu_seqlens, num_seqs, total_tokens, out, capacity, count);
}

// ---------------------------------------------------------------------------
// The chunk plan's builder (kda_chunk_plan_build). Layout and packing:
// src/plan_pack.h, whose host copy of this builder the GPU tests compare
// bit for bit. Three steps: every thread counts its sequences' short chunks
// by granules and their whole chunks; one thread turns the counts into runs
// of slots that repeat one pattern (a few dozen steps at most, however many
// sequences); then every thread places its sequences' chunks, a short chunk
// by its rank among those of its size, a whole chunk by its rank in
// sequence order (the tile's threads share each tile's whole chunks, so one
// long sequence does not serialise on one thread).

constexpr int PLAN_MAX_NG = 9;        // KDA__PLAN_MAX_NG
constexpr int PLAN_GREEDY_RUNS = 64;  // KDA__PLAN_GREEDY_RUNS
constexpr int PLAN_MAX_RUNS = 72;     // KDA__PLAN_MAX_RUNS

struct plan_run {
  long long start, reps;
  long long taken[PLAN_MAX_NG];
  int m[PLAN_MAX_NG];
};

// Sequence i's tokens [a, b), clamped as the table's builder clamps them,
// its chunks, its last chunk's rows and that chunk's granules k (k == NG:
// a whole chunk; k == 0: an empty sequence).
template <int IDX_DT, int BT>
__device__ __forceinline__ void plan_seq(const typename storage<IDX_DT>::type *__restrict__ cu,
                                         long long i, long long T, long long &a, long long &b,
                                         long long &nc, long long &last, int &k) {
  constexpr int G = host_granule(BT);
  a = (long long)cu[i];
  b = (long long)cu[i + 1];
  a = a < 0 ? 0 : (a > T ? T : a);
  b = b > T ? T : b;
  b = b > a ? b : a;
  nc = (b - a + BT - 1) / BT;
  last = b - a - (nc > 0 ? nc - 1 : 0) * BT;
  k = nc > 0 ? (int)((last + G - 1) / G) : 0;
}

// The plan's runs from the counts (kda__plan_runs), on one thread.
template <int NG>
__device__ void plan_make_runs(const unsigned long long *count, plan_run *runs, int &nruns,
                               long long &packed) {
  long long c[PLAN_MAX_NG], taken[PLAN_MAX_NG];
  for (int k = 0; k < PLAN_MAX_NG; ++k) {
    c[k] = k < NG ? (long long)count[k] : 0;
    taken[k] = 0;
  }
  long long slot = 0;
  int n = 0;
  for (;;) {
    int big = 0;
    for (int k = NG - 1; k >= 1 && big == 0; --k)
      if (c[k] > 0) big = k;
    if (big == 0) break;
    plan_run &r = runs[n++];
    for (int k = 0; k < PLAN_MAX_NG; ++k) r.m[k] = 0;
    if (n > PLAN_GREEDY_RUNS) {
      r.m[big] = 1;
    } else {
      int fill = 0;
      for (int k = big; k >= 1; --k)
        while (c[k] - r.m[k] > 0 && fill + k <= NG) {
          ++r.m[k];
          fill += k;
        }
    }
    long long reps = 0x7fffffffffffffffll;
    for (int k = 1; k < NG; ++k)
      if (r.m[k] > 0 && c[k] / r.m[k] < reps) reps = c[k] / r.m[k];
    r.reps = reps;
    r.start = slot;
    for (int k = 0; k < PLAN_MAX_NG; ++k) {
      r.taken[k] = taken[k];
      taken[k] += reps * r.m[k];
      c[k] -= reps * r.m[k];
    }
    slot += reps;
  }
  nruns = n;
  packed = slot;
}

// Writes granules [g0, g1) of a slot: the chunk's first row, and its rows |
// g0 << 16 | g1 << 24. Slots past capacity are dropped.
template <int NG>
__device__ __forceinline__ void plan_put(unsigned *__restrict__ out, long long capacity,
                                         long long slot, int g0, int g1, long long row0,
                                         long long len) {
  if (slot < 0 || slot >= capacity) return;
  const uint2 e =
      make_uint2((unsigned)row0, (unsigned)len | (unsigned)g0 << 16 | (unsigned)g1 << 24);
  uint2 *p = reinterpret_cast<uint2 *>(out) + slot * NG;
  for (int q = g0; q < g1; ++q) p[q] = e;
}

// total_tokens < 2^31 (kda_chunk_plan_create), so rows fit in 32 bits.
template <int IDX_DT, int BT, int THREADS>
__global__ void __launch_bounds__(THREADS)
build_chunk_plan(const typename storage<IDX_DT>::type *__restrict__ cu_seqlens,
                 long long num_seqs, long long total_tokens, unsigned *__restrict__ out,
                 long long capacity) {
  static_assert(THREADS % 32 == 0 && THREADS <= 1024, "whole warps");
  constexpr int NG = BT / host_granule(BT);
  constexpr int NW = THREADS / 32;
  static_assert(NG < PLAN_MAX_NG, "granules per slot");
  __shared__ long long offs[THREADS + 1];
  __shared__ long long warp_sums[NW];
  __shared__ long long bos[THREADS], eos[THREADS];
  __shared__ unsigned long long count[NG], whole_total;
  __shared__ long long rank_carry[NG];
  __shared__ int size_in_warp[NG][NW];
  __shared__ plan_run runs[PLAN_MAX_RUNS];
  __shared__ int nruns;
  __shared__ long long packed;
  // Launched plainly (src/chunk_plan.c): the wait is a no-op but for the
  // tests' overlap mutant.
  grid_dependency_wait();
  grid_dependents_launch();
  const int tid = (int)threadIdx.x;
  const int lane = tid & 31, warp = tid >> 5;
  const unsigned lanes_before = (1u << lane) - 1u;
  if (tid < NG) {
    count[tid] = 0;
    rank_carry[tid] = 0;
  }
  if (tid == 0) whole_total = 0;
  __syncthreads();

  // 1. Count the short chunks by granules, and the whole chunks.
  unsigned long long whole = 0;
  for (long long tile = 0; tile < num_seqs; tile += THREADS) {
    const long long i = tile + tid;
    long long a = 0, b = 0, nc = 0, last = 0;
    int k = 0;
    if (i < num_seqs) plan_seq<IDX_DT, BT>(cu_seqlens, i, total_tokens, a, b, nc, last, k);
    whole += (unsigned long long)(k == NG ? nc : (nc > 0 ? nc - 1 : 0));
    for (int s = 1; s < NG; ++s) {
      const unsigned got = __ballot_sync(0xffffffffu, k == s);
      if (lane == 0 && got != 0u) atomicAdd(&count[s], (unsigned long long)__popc(got));
    }
  }
  if (whole != 0) atomicAdd(&whole_total, whole);
  __syncthreads();
  if (tid == 0) plan_make_runs<NG>(count, runs, nruns, packed);
  __syncthreads();
  const long long first_whole = packed;

  // 2. Place every chunk.
  long long carry = 0;
  for (long long tile = 0; tile < num_seqs; tile += THREADS) {
    const long long i = tile + tid;
    long long a = 0, b = 0, nc = 0, last = 0;
    int k = 0;
    if (i < num_seqs) plan_seq<IDX_DT, BT>(cu_seqlens, i, total_tokens, a, b, nc, last, k);
    const long long wc = k == NG ? nc : (nc > 0 ? nc - 1 : 0);
    // Exclusive scan of the tile's whole chunks (as the table's builder).
    long long incl = wc;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const long long y = __shfl_up_sync(0xffffffffu, incl, d);
      if (lane >= d) incl += y;
    }
    if (lane == 31) warp_sums[warp] = incl;
    // This chunk's rank among the tile's short chunks of its size, by warp.
    int lane_rank = 0;
    for (int s = 1; s < NG; ++s) {
      const unsigned got = __ballot_sync(0xffffffffu, k == s);
      if (k == s) lane_rank = __popc(got & lanes_before);
      if (lane == 0) size_in_warp[s][warp] = __popc(got);
    }
    __syncthreads();
    if (warp == 0) {
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
    offs[tid] = warp_sums[warp] + incl - wc;
    bos[tid] = a;
    eos[tid] = b;
    if (k >= 1 && k < NG) {
      long long q = rank_carry[k] + lane_rank;
      for (int w = 0; w < warp; ++w) q += size_in_warp[k][w];
      // kda__plan_place: the run that holds the q-th chunk of k granules.
      for (int r = 0; r < nruns; ++r) {
        const plan_run &run = runs[r];
        if (run.m[k] == 0 || q >= run.taken[k] + run.reps * run.m[k]) continue;
        const long long at = q - run.taken[k];
        const int j = (int)(at % run.m[k]);
        int base = 0, smallest = k;
        for (int s = NG - 1; s > k; --s) base += run.m[s] * s;
        for (int s = k - 1; s >= 1; --s)
          if (run.m[s] > 0) smallest = s;
        const int g0 = base + j * k;
        const int g1 = smallest == k && j == run.m[k] - 1 ? NG : g0 + k;
        plan_put<NG>(out, capacity, run.start + at / run.m[k], g0, g1, a + (nc - 1) * BT, last);
        break;
      }
    }
    __syncthreads();
    if (tid >= 1 && tid < NG) {
      for (int w = 0; w < NW; ++w) rank_carry[tid] += size_in_warp[tid][w];
    }
    const long long tile_total = offs[THREADS];
    const int in_tile = (int)(num_seqs - tile < THREADS ? num_seqs - tile : THREADS);
    for (long long e = tid; e < tile_total; e += THREADS) {
      int lo = 0, hi = in_tile - 1;
      while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (offs[mid] <= e) lo = mid; else hi = mid - 1;
      }
      const long long r0 = bos[lo] + (e - offs[lo]) * BT;
      const long long left = eos[lo] - r0;
      plan_put<NG>(out, capacity, first_whole + carry + e, 0, NG, r0, left < BT ? left : BT);
    }
    carry += tile_total;
    __syncthreads();
  }

  // 3. Unused slots are all zero.
  const long long used = first_whole + (long long)whole_total;
  uint2 *o = reinterpret_cast<uint2 *>(out);
  const long long first_unused = used < capacity ? used : capacity;
  for (long long p = first_unused * NG + tid; p < capacity * NG; p += THREADS)
    o[p] = make_uint2(0u, 0u);
}

}  // namespace kda
