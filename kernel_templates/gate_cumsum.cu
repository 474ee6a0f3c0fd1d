// KDA gate kernels: activation, chunk-local cumsum, and the two fused.
//
// Layout: rows of HK = H*K contiguous channels, one row per token. A block
// owns TX*VEC channels of one chunk of BT rows. Its threads form a TX x SEG
// grid: thread (tx, s) holds VEC adjacent channels (one 16-byte access for
// bf16 VEC=8) over the L = BT/SEG rows of segment s. Every load of a thread
// is issued before the first use, so each thread keeps L independent
// requests in flight; the segment totals are combined through shared memory.
// The whole chunk is read once and written once: the floor is the bytes.
#include "kda_common.cuh"

namespace kda {

// The running total of the segments before segment s (after it when
// REVERSE), per channel, from every thread's segment total `acc`, in one of
// four forms (bench/probe on the H100, docs/perf-notes.md, v9 and v12):
//  0: each thread sums the totals before its own, one word per load: SEG *
//     VEC loads and adds (v8's form);
//  1: the same with 16-byte loads: a quarter of the loads, one barrier and
//     every load independent;
//  2: one thread per channel scans that channel's column of SEG totals, then
//     each thread reads its VEC offsets: SEG + VEC accesses in place of SEG *
//     VEC, but a second barrier and a chain of dependent shared accesses;
//  3: the segments within a warp scan by shuffles and only the warps'
//     totals go through shared memory (SEG / (32 / TX) of them).
// Form 2 was the fastest with 2 rows per thread (32 registers, many blocks
// per SM to cover the chain) and much slower with 4 or more, where form 1
// is used. Form 3 was slower than form 1 or 2 on nearly every block shape
// (10-75%: its shuffles form a dependent chain), and faster in one: 16
// channel threads x 32 segments of 4 rows (chunk 128's default block),
// 71.55 -> 70.34 us at T=8192 H=32, where form 1 sums 31 totals per thread
// and form 3 at most 15; it is used there (and at more segments).
// KDA_OFFSETS_FORM forces one for the probe's comparisons.
template <int TX, int SEG, int VEC>
struct form3_fits {
  static constexpr bool value = TX < 32 && (TX * SEG) % 32 == 0 && 32 / TX <= SEG && VEC % 4 == 0;
};

// Varlen modes 2 and 3 pack several chunks into one block (SEGMENTED): a segment
// takes only the totals of its own chunk's segments, which forms 0 and 1
// test per total; forms 2 and 3 are not used there.
template <int L, int VEC, int TX, int SEG, bool SEGMENTED>
struct offsets_form {
#ifdef KDA_OFFSETS_FORM
  static constexpr int value = (SEGMENTED || KDA_OFFSETS_FORM == 1) && VEC % 4 != 0 ? 0
                               : SEGMENTED ? 1
                               : (KDA_OFFSETS_FORM == 3 && !form3_fits<TX, SEG, VEC>::value)
                                   ? (VEC % 4 == 0 ? 1 : 0)
                                   : KDA_OFFSETS_FORM;
#else
  static constexpr int value = SEGMENTED                                               ? (VEC % 4 != 0 ? 0 : 1)
                               : L <= 2                                                 ? 2
                               : VEC % 4 != 0                                           ? 0
                               : (TX == 16 && SEG >= 32 && form3_fits<TX, SEG, VEC>::value) ? 3
                                                                                        : 1;
#endif
};

// Forms 1 and 3 keep N totals per channel in shared memory as [N][VEC/4][TX]
// 16-byte words (lanes of a warp hit consecutive words): `put` stores this
// thread's `total` as number `me`, `add_before` adds every total in [lo, hi)
// before number `me` (after it when REVERSE) to `offset`.
template <int N, int TX, int VEC, typename T>
__device__ __forceinline__ void put_total(vec<T, 4> (&totals)[N * (VEC / 4) * TX],
                                          const T (&total)[VEC], int me, int tx) {
  constexpr int Q = VEC / 4;
#pragma unroll
  for (int k = 0; k < Q; ++k) {
    vec<T, 4> m;
#pragma unroll
    for (int i = 0; i < 4; ++i) m.v[i] = total[4 * k + i];
    totals[(me * Q + k) * TX + tx] = m;
  }
}

template <int N, int TX, int VEC, int REVERSE, typename T>
__device__ __forceinline__ void add_totals_before(const vec<T, 4> (&totals)[N * (VEC / 4) * TX],
                                                  int me, int lo, int hi, int tx,
                                                  T (&offset)[VEC]) {
  constexpr int Q = VEC / 4;
#pragma unroll
  for (int q = 0; q < N; ++q) {
    if ((REVERSE ? q > me : q < me) && q >= lo && q < hi) {
#pragma unroll
      for (int k = 0; k < Q; ++k) {
        const vec<T, 4> t = totals[(q * Q + k) * TX + tx];
#pragma unroll
        for (int i = 0; i < 4; ++i) offset[4 * k + i] += t.v[i];
      }
    }
  }
}

// The segments of s's chunk are [cb, ce): all of the block's but in a packed
// block of varlen mode 2 (forms 0 and 1 only). T is float, or double for the
// plain cumsum (see WIDE below).
template <int FORM, int TX, int SEG, int VEC, int REVERSE, typename T>
__device__ __forceinline__ void segment_offsets(const T (&acc)[VEC], int tx, int s, int cb,
                                                int ce, T (&offset)[VEC]) {
  if constexpr (FORM == 0) {
    // [SEG][VEC][TX]: lanes of a warp hit consecutive words.
    __shared__ T totals[SEG * VEC * TX];
#pragma unroll
    for (int j = 0; j < VEC; ++j) totals[(s * VEC + j) * TX + tx] = acc[j];
    __syncthreads();
#pragma unroll
    for (int j = 0; j < VEC; ++j) offset[j] = T(0);
#pragma unroll
    for (int q = 0; q < SEG; ++q) {
      if ((REVERSE ? q > s : q < s) && q >= cb && q < ce) {
#pragma unroll
        for (int j = 0; j < VEC; ++j) offset[j] += totals[(q * VEC + j) * TX + tx];
      }
    }
  } else if constexpr (FORM == 1) {
    __shared__ vec<T, 4> totals[SEG * (VEC / 4) * TX];
    put_total<SEG, TX, VEC>(totals, acc, s, tx);
    __syncthreads();
#pragma unroll
    for (int j = 0; j < VEC; ++j) offset[j] = T(0);
    add_totals_before<SEG, TX, VEC, REVERSE>(totals, s, cb, ce, tx, offset);
  } else if constexpr (FORM == 3) {
    // Segments in one warp scan by shuffles; one shared total per warp.
    // Thread (tx, s) is lane (s % W) * TX + tx of warp s / W: a shuffle by
    // TX lanes moves a channel's value one segment. Inclusive scan in
    // log2(W) steps, the exclusive offset by one more shift (not incl - acc,
    // which would cancel digits), then the totals of the earlier warps:
    // SEG / W - 1 shared loads of 16 bytes in place of form 1's SEG - 1.
    constexpr int W = 32 / TX;  // segments per warp
    constexpr int NW = SEG / W;
    static_assert(TX < 32 && (TX * SEG) % 32 == 0 && VEC % 4 == 0, "form 3 needs whole warps");
    const int sl = s % W, w = s / W;
    T incl[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) incl[j] = acc[j];
#pragma unroll
    for (int d = 1; d < W; d *= 2) {
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const T t = REVERSE ? __shfl_down_sync(0xffffffffu, incl[j], d * TX)
                            : __shfl_up_sync(0xffffffffu, incl[j], d * TX);
        if (REVERSE ? sl + d < W : sl >= d) incl[j] += t;
      }
    }
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const T t = REVERSE ? __shfl_down_sync(0xffffffffu, incl[j], TX)
                          : __shfl_up_sync(0xffffffffu, incl[j], TX);
      offset[j] = (REVERSE ? sl + 1 < W : sl >= 1) ? t : T(0);
    }
    if (NW > 1) {
      __shared__ vec<T, 4> totals[NW * (VEC / 4) * TX];
      if (sl == (REVERSE ? 0 : W - 1)) put_total<NW, TX, VEC>(totals, incl, w, tx);
      __syncthreads();
      add_totals_before<NW, TX, VEC, REVERSE>(totals, w, 0, NW, tx, offset);
    }
  } else {
    constexpr int CW = TX * VEC;  // channels of the block: [SEG][CW]
    __shared__ vec<T, VEC> totals_v[SEG * TX];
    T *totals = reinterpret_cast<T *>(totals_v);
    vec<T, VEC> mine;
#pragma unroll
    for (int j = 0; j < VEC; ++j) mine.v[j] = acc[j];
    totals_v[s * TX + tx] = mine;
    __syncthreads();
    // Batches of up to 8 independent loads keep the chain short without
    // holding SEG more registers next to the thread's values.
    constexpr int B = SEG < 8 ? SEG : 8;
    for (int col = (int)threadIdx.x; col < CW; col += TX * SEG) {
      T run = T(0);
#pragma unroll
      for (int q0 = 0; q0 < SEG; q0 += B) {
        T t[B];
#pragma unroll
        for (int b = 0; b < B; ++b) t[b] = totals[(REVERSE ? SEG - 1 - q0 - b : q0 + b) * CW + col];
#pragma unroll
        for (int b = 0; b < B; ++b) {
          totals[(REVERSE ? SEG - 1 - q0 - b : q0 + b) * CW + col] = run;
          run += t[b];
        }
      }
    }
    __syncthreads();
    const vec<T, VEC> got = totals_v[s * TX + tx];
#pragma unroll
    for (int j = 0; j < VEC; ++j) offset[j] = got.v[j];
  }
}

template <int IN_DT, int OUT_DT, int H, int K, int BT, int CUMSUM, int GATE, int HAS_BIAS,
          int HAS_ALOG, int HAS_SCALE, int REVERSE, int VARLEN, int IDX_DT, int VEC, int TX,
          int SEG>
__global__ void __launch_bounds__(TX * SEG)
gate_cumsum(const typename storage<IN_DT>::type *__restrict__ g,
            typename storage<OUT_DT>::type *__restrict__ out,
            const float *__restrict__ A_log, const float *__restrict__ dt_bias, float scale,
            float lower_bound, const typename storage<IDX_DT>::type *__restrict__ cu_seqlens,
            const int *__restrict__ chunk_indices, const int *__restrict__ num_chunks_device,
            long long T, long long chunks_per_seq_or_num_seqs,
            const host_plan<VARLEN == 2 ? HOST_ROWS : 1> host_rows) {
  typedef typename storage<IN_DT>::type in_t;
  typedef typename storage<OUT_DT>::type out_t;
  constexpr int HK = H * K;
  constexpr int L = BT / SEG;
  constexpr int CHANNELS_PER_BLOCK = TX * VEC;
  constexpr int NCB = (HK + CHANNELS_PER_BLOCK - 1) / CHANNELS_PER_BLOCK;
  static_assert(BT % SEG == 0, "SEG must divide the chunk");
  static_assert(HK % VEC == 0, "VEC must divide H*K");
  static_assert(CUMSUM || GATE != GATE_NONE, "nothing to do");

  const long long n = (long long)blockIdx.x / NCB;  // chunk (chunk slot in mode 2)
  const int chb = (int)(blockIdx.x % NCB);          // channel block

  const int tx = (int)(threadIdx.x % TX);
  const int s = (int)(threadIdx.x / TX);
  // Varlen mode 3 reads its granule's entry of a kda_chunk_plan (layout:
  // src/plan_pack.h) before the wait: only the library's builder writes a
  // plan, and the first kernel to read it after a build starts when the
  // build has completed (launched without overlap, src/launch.c), so no
  // kernel that may still run writes it. A caller's table (mode 1) may be
  // written by the kernel just before, so it is read after the wait, where
  // every block of the launch's first round pays its round trip
  // (docs/perf-notes.md, "Chunk plans"). A slot past the batch's is all
  // zero: its block leaves at once (the test is uniform over the block, so
  // a damaged plan cannot split a block at a barrier).
  int plan_row0 = 0, plan_word = 0;
  if constexpr (VARLEN == 3) {
    constexpr int NG = BT / host_granule(BT), SPG = SEG / NG;
    static_assert(SPG >= 1 && L <= host_granule(BT),
                  "varlen mode 3 needs a segment within a granule");
    load_plan_row(chunk_indices + 2 * (n * NG + s / SPG), plan_row0, plan_word);
    if (!__syncthreads_or(plan_word & 0xffff)) return;
  }
  grid_dependency_wait();
  grid_dependents_launch();

  // Row r of the block (thread s has rows s * L .. s * L + L - 1) is row
  // row0 + r of the input, and rows r >= len are past its chunk's end. The
  // chunk's segments are [seg_lo, seg_hi) of the block: all of them, but in
  // a packed block of modes 2 and 3, where row0 and len are the thread's chunk's
  // (moved by its first segment) and not the block's.
  long long row0;
  int len;
  int seg_lo = 0, seg_hi = SEG;
  if constexpr (VARLEN == 2) {
    // The host validated the rows (within [0, T), 1..BT long), packed them
    // at granules and sized the grid to the slots. A segment lies within
    // one granule; the chunk holding granule q is the last one starting
    // at or before it. The clamps keep the compiler's view of row0 and len
    // what it is in the other modes (without them ptxas took 63 registers
    // instead of 56 at 8x16, sm_90).
    constexpr int G = host_granule(BT), NG = BT / G;
    static_assert(L <= G, "varlen mode 2 needs a segment within a granule");
    constexpr int SPG = G / L > 0 ? G / L : 1;  // segments per granule
    const unsigned d = host_rows.slots[(unsigned)n];
    const unsigned starts = d >> 8;
    const unsigned upto = starts & ((2u << (s / SPG)) - 1u);
    const unsigned later = starts & ~((2u << (s / SPG)) - 1u);
    seg_lo = (31 - __clz(upto)) * SPG;
    seg_hi = (later != 0u ? __ffs(later) - 1 : NG) * SPG;
    const unsigned e = host_rows.r[(d & 255u) + (unsigned)__popc(upto) - 1u];
    // Block rows, not chunk rows, index the thread's rows (a row index
    // relative to its chunk cost 19 registers at 16x8, sm_90).
    row0 = (long long)(e >> 8);
    row0 = (row0 > T ? T : row0) - (long long)(seg_lo * L);
    const int l = (int)(e & 255u) + 1 + seg_lo * L;
    len = l > BT ? BT : l;
  } else if constexpr (VARLEN == 3) {
    // As mode 2, from the thread's granule's entry: its chunk's first row,
    // rows, and granules [g0, g1). Clamped: a damaged plan must not move
    // the kernel outside [0, T) or a segment outside the block.
    constexpr int NG = BT / host_granule(BT), SPG = SEG / NG;
    const int q = s / SPG;
    const unsigned w = (unsigned)plan_word;
    int g0 = (int)((w >> 16) & 255u), g1 = (int)(w >> 24);
    g0 = g0 > q ? q : g0;
    g1 = g1 > NG ? NG : (g1 <= q ? q + 1 : g1);
    seg_lo = g0 * SPG;
    seg_hi = g1 * SPG;
    const long long r0 = (long long)(unsigned)plan_row0 > T ? T : (long long)(unsigned)plan_row0;
    const long long left = T - r0;
    const int l = (int)(w & 0xffffu) > BT ? BT : (int)(w & 0xffffu);
    const int clen = left < (long long)l ? (int)left : l;
    // A chunk without rows leaves its segments idle (len 0: no loads).
    row0 = r0 - (long long)(seg_lo * L);
    len = clen > 0 ? clen + seg_lo * L : 0;
  } else if constexpr (VARLEN != 0) {
    // Varlen: a block needs its table row, then its sequence's bounds, before
    // it can address any data. For batches of fewer sequences than a warp has
    // lanes, every bound loads together with the table row (one lane each)
    // and this chunk's pair comes from a shuffle: one round trip ahead of the
    // data instead of two (three with a device count).
    typedef typename storage<IDX_DT>::type idx_t;
    constexpr int LANES = TX * SEG < 32 ? TX * SEG : 32;
    constexpr unsigned MASK = LANES == 32 ? 0xffffffffu : (1u << LANES) - 1u;
    const long long num_seqs = chunks_per_seq_or_num_seqs;
    const bool few = num_seqs < LANES;
    const int lane = (int)(threadIdx.x % 32);
    idx_t bound = 0;
    if (few && lane <= num_seqs) bound = cu_seqlens[lane];
    // n < the table's rows (the host sizes the grid from them): these loads
    // need no guard and issue together.
    const int seq = chunk_indices[2 * n];
    const int chunk = chunk_indices[2 * n + 1];
    const long long count = num_chunks_device != nullptr ? (long long)*num_chunks_device : n + 1;
    // A malformed table must not make the kernel touch memory outside [0, T)
    // or cu_seqlens; the test is uniform over the block.
    const bool skip = n >= count || seq < 0 || chunk < 0 || seq >= num_seqs;
    long long bos, eos;
    if (few) {
      const int src = skip ? 0 : seq;
      bos = (long long)__shfl_sync(MASK, bound, src);
      eos = (long long)__shfl_sync(MASK, bound, src + 1);
    }
    if (skip) return;
    if (!few) {
      bos = (long long)cu_seqlens[seq];
      eos = (long long)cu_seqlens[seq + 1];
    }
    // Rows [bos + chunk * BT, eos) within [0, T): kda.h's model (a =
    // clamp(cu[i], 0, T), b = clamp(cu[i+1], a, T)) without raising the end
    // to the start, since an end before the start leaves no rows anyway
    // (left <= 0). That clamp cost 7 registers: with it the 128-thread block
    // fit 8 in place of 9 per SM (ptxas -v, sm_90). The start stays clamped
    // to T, which keeps bos + chunk * BT far from overflow.
    bos = bos < 0 ? 0 : (bos > T ? T : bos);
    eos = eos > T ? T : eos;
    row0 = bos + (long long)chunk * BT;
    const long long left = eos - row0;
    len = left > BT ? BT : (int)left;
    if (len <= 0) return;
  } else {
    // n < gridDim.x < 2^31 and chunks_per_seq <= n + 1: a 32-bit division
    // (a 64-bit one is a ~70-instruction call ahead of every load).
    const long long chunks_per_seq = chunks_per_seq_or_num_seqs;
    const unsigned b32 = (unsigned)n / (unsigned)chunks_per_seq;
    const long long b = b32;
    const long long t0 = (long long)((unsigned)n - b32 * (unsigned)chunks_per_seq) * BT;
    row0 = b * T + t0;
    const long long left = T - t0;
    len = left > BT ? BT : (int)left;
  }

  const int c = (chb * TX + tx) * VEC;
  // Every thread has channels when the blocks tile H*K exactly; saying so
  // spares the compiler the merge of a predicated load with zeros.
  const bool cvalid = HK % CHANNELS_PER_BLOCK == 0 || c < HK;

  // The plain cumsum (no gate) adds values of either sign, whose partial
  // sums can be hundreds of times its result: in fp32 their rounding
  // (about 6e-8 of each partial sum, over up to 256 adds) reached 6e-5 of
  // results near 0.1 for inputs of standard deviation 8 at chunk 256,
  // three times the budget of 2e-5 * (1 + |ref|) (test_gpu_random). It
  // sums in double, and scales once at the end: every result within one
  // fp32 rounding. A gate's values all have one sign (softplus and the
  // sigmoid are positive, their factors negative), so no digit cancels and
  // the fused kernel keeps fp32 (its partial sums are at most its result).
  constexpr bool WIDE = CUMSUM && GATE == GATE_NONE;
  typedef typename pick<WIDE, double, float>::type acc_t;

  float a_exp[VEC], bias[VEC];
  // When VEC divides K a thread's channels share one head: one expf.
  constexpr bool ONE_HEAD = K % VEC == 0;
  const float a_head = (GATE != GATE_NONE && HAS_ALOG && ONE_HEAD && cvalid) ? expf(A_log[c / K]) : 1.0f;
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    a_exp[j] = ONE_HEAD ? a_head : 1.0f;
    bias[j] = 0.0f;
    if (GATE != GATE_NONE && cvalid) {
      if (HAS_ALOG && !ONE_HEAD) a_exp[j] = expf(A_log[(c + j) / K]);
      if (HAS_BIAS) bias[j] = dt_bias[c + j];
    }
  }

  // The gate's input in base 2 (kda_common.cuh): y = x * m + b * m in one
  // FMA, m = log2(e) for softplus, exp(A_log) * log2(e) for the sigmoid.
  // The outer factor (-exp(A_log) * ln 2, lower_bound or 1) times the
  // scale: one multiply per value. (Applying it to the sums at the end
  // instead took 2 more registers, 58 at 8x16 on sm_90: 8 blocks per SM in
  // place of 9.)
  float in_mul[VEC], in_add[VEC], post[VEC];
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    const float m = GATE == GATE_SOFTPLUS ? KDA_LOG2E : GATE == GATE_LOWER_BOUND ? a_exp[j] * KDA_LOG2E : 1.0f;
    in_mul[j] = m;
    in_add[j] = bias[j] * m;
    const float p = GATE == GATE_SOFTPLUS ? -a_exp[j] * KDA_LN2 : GATE == GATE_LOWER_BOUND ? lower_bound : 1.0f;
    post[j] = HAS_SCALE && !WIDE ? p * scale : p;
  }

  // Issue every load of the segment before using any of them. Rows past the
  // chunk's end (its last chunk only) load the last row again, so no load
  // is predicated or merged with zeros; below, their values reach no
  // stored row. In varlen modes a segment wholly past its chunk's end (a
  // sequence's partial last chunk, the end of a packed slot) loads nothing:
  // one test per thread, not per row. Measured on the H100 (bench/probe,
  // T=8192 H=16 through the table): 8 ragged sequences 35.74-35.79 ->
  // 35.57-35.62 us, 128 sequences 38.16-38.24 -> 37.50-37.52
  // (docs/perf-notes.md, seventh session).
  const bool seg_rows = VARLEN == 0 || s * L < len;
  vec<in_t, VEC> x[L];
#pragma unroll
  for (int i = 0; i < L; ++i) {
    const int r = s * L + i;
    const int rr = r < len ? r : len - 1;
    if (cvalid && seg_rows) {
      x[i] = load_stream(reinterpret_cast<const vec<in_t, VEC> *>(g + (row0 + rr) * HK + c));
    } else {
#pragma unroll
      for (int j = 0; j < VEC; ++j) x[i].v[j] = in_t(0);
    }
  }

  // A forward sum carries a row's value only to later rows, and the rows
  // past the end are the chunk's last, so their values reach no stored
  // row (a segment's total goes only to later segments, which are then
  // past the end too). A reverse sum carries them to every earlier row:
  // there they are zeroed.
  constexpr bool MASK_TAIL = CUMSUM && REVERSE;
  float v[L][VEC];
#pragma unroll
  for (int i = 0; i < L; ++i) {
    const bool rvalid = s * L + i < len;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const float xf = to_float<IN_DT>(x[i].v[j]);
      const float a = activate_inner<GATE>(GATE == GATE_NONE ? xf : fmaf(xf, in_mul[j], in_add[j]));
      v[i][j] = (!MASK_TAIL || rvalid) ? a * post[j] : 0.0f;
    }
  }

  if (CUMSUM) {
    // fp32: the segment's running sums in place, then its offset added.
    // WIDE: only the segment's total here; the running sums start from the
    // offset below, in double.
    acc_t acc[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) acc[j] = acc_t(0);
#pragma unroll
    for (int ii = 0; ii < L; ++ii) {
      const int i = REVERSE ? L - 1 - ii : ii;
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        acc[j] += acc_t(v[i][j]);
        if (!WIDE) v[i][j] = float(acc[j]);
      }
    }
    acc_t offset[VEC];
#pragma unroll
    for (int j = 0; j < VEC; ++j) offset[j] = acc_t(0);
    if (SEG > 1) {
      constexpr bool SEGMENTED = VARLEN == 2 || VARLEN == 3;
      segment_offsets<offsets_form<L, VEC, TX, SEG, SEGMENTED>::value, TX, SEG, VEC, REVERSE>(
          acc, tx, s, seg_lo, seg_hi, offset);
    }
    if constexpr (WIDE) {
      const double sc = HAS_SCALE ? (double)scale : 1.0;
#pragma unroll
      for (int ii = 0; ii < L; ++ii) {
        const int i = REVERSE ? L - 1 - ii : ii;
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          offset[j] += (double)v[i][j];
          v[i][j] = (float)(HAS_SCALE ? offset[j] * sc : offset[j]);
        }
      }
    } else if (SEG > 1) {
#pragma unroll
      for (int i = 0; i < L; ++i)
#pragma unroll
        for (int j = 0; j < VEC; ++j) v[i][j] += float(offset[j]);
    }
  }

  // fp32 output at VEC = 8: a thread's 32 bytes leave as two 16-byte stores,
  // and each store instruction of the warp writes half of every 32-byte
  // sector it touches, doubling the L2 write requests (L2 was the busiest
  // unit in ncu at full bandwidth). Lane pairs swap halves so that each
  // instruction writes whole sectors: the even lane stores channels
  // c..c+3 and c+8..c+11, the odd lane c-4..c-1 and c+4..c+7 (its own c is
  // the even lane's + 8). HK % 16 == 0 keeps both lanes of a pair valid
  // together; the shuffles run before any lane leaves.
  constexpr bool PAIR = OUT_DT == DT_F32 && VEC == 8 && TX % 2 == 0 && HK % (2 * VEC) == 0
#ifdef KDA_NO_PAIR_STORES  // bench/probe's "before" variant
                        && false
#endif
      ;
  if (PAIR) {
    const bool odd = (tx & 1) != 0;
#pragma unroll
    for (int i = 0; i < L; ++i) {
      const int r = s * L + i;
      vec<float, 4> first, second;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float a = v[i][j];
        const float b = v[i][4 + j];
        const float got = __shfl_xor_sync(0xffffffffu, odd ? a : b, 1);
        first.v[j] = odd ? got : a;
        second.v[j] = odd ? b : got;
      }
      if (cvalid && r < len) {
        float *row = reinterpret_cast<float *>(out + (row0 + r) * HK + c);
        store_stream(reinterpret_cast<vec<float, 4> *>(row + (odd ? -4 : 0)), first);
        store_stream(reinterpret_cast<vec<float, 4> *>(row + (odd ? 4 : 8)), second);
      }
    }
    return;
  }

  if (!cvalid) return;
#pragma unroll
  for (int i = 0; i < L; ++i) {
    const int r = s * L + i;
    if (r < len) {
      vec<out_t, VEC> o;
#pragma unroll
      for (int j = 0; j < VEC; ++j) o.v[j] = from_float<OUT_DT>(v[i][j]);
      store_stream(reinterpret_cast<vec<out_t, VEC> *>(out + (row0 + r) * HK + c), o);
    }
  }
}

}  // namespace kda
