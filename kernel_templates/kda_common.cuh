// Shared device helpers for the KDA gate kernels.
//
// Deliberately free of CUDA headers: NVRTC then parses only these few
// hundred lines, which keeps a cold compile short. 16-bit types travel as
// raw `unsigned short` and are converted with single PTX instructions.
#pragma once

namespace kda {

// dtype codes, identical to kda_dtype in include/kda/kda.h.
enum { DT_F32 = 0, DT_F16 = 1, DT_BF16 = 2, DT_I32 = 3, DT_I64 = 4 };
// gate codes, identical to kda_gate_kind.
enum { GATE_NONE = 0, GATE_SOFTPLUS = 1, GATE_LOWER_BOUND = 2 };

template <int DT> struct storage;
template <> struct storage<DT_F32> { typedef float type; };
template <> struct storage<DT_F16> { typedef unsigned short type; };
template <> struct storage<DT_BF16> { typedef unsigned short type; };
template <> struct storage<DT_I32> { typedef int type; };
template <> struct storage<DT_I64> { typedef long long type; };

template <int DT> __device__ __forceinline__ float to_float(typename storage<DT>::type v);
template <> __device__ __forceinline__ float to_float<DT_F32>(float v) { return v; }
template <> __device__ __forceinline__ float to_float<DT_BF16>(unsigned short v) {
  return __uint_as_float(((unsigned)v) << 16);
}
template <> __device__ __forceinline__ float to_float<DT_F16>(unsigned short v) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v));
  return f;
}

template <int DT> __device__ __forceinline__ typename storage<DT>::type from_float(float v);
template <> __device__ __forceinline__ float from_float<DT_F32>(float v) { return v; }
template <> __device__ __forceinline__ unsigned short from_float<DT_BF16>(float v) {
  unsigned short h;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(v));
  return h;
}

// Varlen mode 2: the host passes the batch's chunks in the launch, for
// batches of at most HOST_ROWS chunks (KDA_MAX_HOST_ROWS in kda.h). Kernel
// parameters live in a constant bank: a block reads its rows through the
// constant cache instead of a global load queued behind the other blocks'
// streaming loads (docs/perf-notes.md, "Chunk rows as a launch parameter").
//  r[i]:   chunk i's first row << 8 | (rows - 1);
//  slots[b]: chunk slot b's first chunk (low byte) and the granules at which
//          its chunks start (high byte, bit q: granule q).
// A chunk slot (one block per channel block) holds one whole chunk, or
// several short ones (a sequence's last chunk, a short sequence) packed at
// granules of host_granule(BT) rows, so that a batch of many short
// sequences does not launch a mostly idle block per chunk. Configs of this
// mode keep a segment within a granule (L = BT / SEG <= the granule).
// Other modes take a one-word stand-in.
constexpr int HOST_ROWS = 256;
__host__ __device__ constexpr int host_granule(int bt) { return bt / 8 > 8 ? bt / 8 : 8; }
template <int N> struct host_plan {
  unsigned r[N];
  unsigned short slots[N];
};
template <> struct host_plan<1> {
  unsigned r[1];
};

// pick<B, T, F>::type is T when B, else F (NVRTC has no <type_traits>).
template <bool B, typename T, typename F> struct pick { typedef T type; };
template <typename T, typename F> struct pick<false, T, F> { typedef F type; };

// A register array of N elements moved with the widest accesses its
// alignment allows (N * sizeof(T) bytes, which the host guarantees).
template <typename T, int N> struct alignas(sizeof(T) * N) vec {
  T v[N];
};

// The gates are computed in base 2: the kernel scales its input by
// log2(e) in the same FMA that adds the bias (y = x * m + b * m), so the
// exponential is one MUFU.EX2 with no multiply ahead of it, and ln 2 joins
// the outer factor. Per element this saves the bias add and the scaling
// multiply (and, below, the softplus's final multiply and add become one
// FMA): fewer issue slots where a small grid's blocks all compute at once
// (docs/perf-notes.md, "Thirteenth session").
#define KDA_LOG2E 1.4426950408889634f
#define KDA_LN2 0.6931471805599453f

// log2(1 + e) / e for e in [0, 1], the interpolant at Chebyshev nodes
// (coefficients rounded to float), in Horner form. Relative error of
// e * p(e) against float64, 2e7 points in float arithmetic: degree 7
// at most 3.5e-7, degree 6 1.5e-6 (the error budget is 2e-5). Degree 8 (the
// previous form) reached 1.6e-7, float rounding's floor.
__device__ __forceinline__ float log2_1p_ratio(float e) {
#if KDA_LOG2_1P_DEGREE == 6
  float p = 2.001664974e-02f;
  p = fmaf(p, e, -9.462680668e-02f);
  p = fmaf(p, e, 2.139432132e-01f);
  p = fmaf(p, e, -3.383772075e-01f);
  p = fmaf(p, e, 4.774963558e-01f);
  p = fmaf(p, e, -7.211440802e-01f);
  return fmaf(p, e, 1.442692995e+00f);
#else
  float p = -1.207702048e-02f;
  p = fmaf(p, e, 6.274843216e-02f);
  p = fmaf(p, e, -1.541520059e-01f);
  p = fmaf(p, e, 2.551763356e-01f);
  p = fmaf(p, e, -3.530963659e-01f);
  p = fmaf(p, e, 4.800124466e-01f);
  p = fmaf(p, e, -7.213067412e-01f);
  return fmaf(p, e, 1.442694783e+00f);
#endif
}

// 2^x by the fast unit with results below 2^-126 flushed to zero.
// ex2.approx.f32 without .ftz keeps denormal results on sm_90 by a compare,
// a scaling multiply and a squaring around MUFU.EX2: three more
// instructions per element (SASS of the 8x16 block). A flushed 2^x is
// below 2^-126, where log2(1 + e) = e / ln 2 and 1 / (1 + e) = 1 are off
// by less than 1e-38.
__device__ __forceinline__ float exp2_ftz(float x) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}

// softplus(z) / ln 2 for y = z * log2(e): max(y, 0) + log2(1 + 2^-|y|), no
// branch, one MUFU.EX2. The exponent's argument is never positive, so e is
// in [0, 1]; the fast unit's relative error (about |y| * 2^-24 + 2^-22)
// stays far inside the 2e-5 budget, and for large |y| the term is
// negligible next to max(y, 0) or tiny in absolute terms. Matches
// upstream's threshold form (z for z > 20) to within 2e-9. The accurate
// log1pf(expf(z)) took about 45 instructions per element against a budget
// of about 65 at full bandwidth; this form takes 11 (degree 7).
__device__ __forceinline__ float softplus2(float y) {
  const float e = exp2_ftz(-fabsf(y));
  return fmaf(e, log2_1p_ratio(e), fmaxf(y, 0.0f));
}

// 1 / (1 + e^-z) for y = z * log2(e), with the fast units: relative error a
// few ulp; for 2^-y = inf (or past 2^126, where the flushed reciprocal is
// 0) the result is 0, the right limit.
__device__ __forceinline__ float sigmoid2(float y) {
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(1.0f + exp2_ftz(-y)));
  return r;
}

// Programmatic dependent launch (sm_90+). A kernel launched with the
// programmatic-serialization attribute may start while the kernel before it
// in the stream is still running; `wait` holds every thread until that
// kernel has finished and its writes are visible, so it comes before the
// first global read. `launch_dependents` lets the next such kernel start
// its own launch while this one runs (it takes effect once every block has
// issued it or exited). Without the attribute both are no-ops.
__device__ __forceinline__ void grid_dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && !defined(KDA_NO_PDL)
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void grid_dependents_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && !defined(KDA_NO_PDL)
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

// A chunk plan's entry (first row; rows and granules, src/plan_pack.h) from
// L2, not L1: it is read before griddepcontrol.wait, and an SM's L1 could
// still hold the line from the plan's previous build. Volatile, so it stays
// ahead of the wait.
__device__ __forceinline__ void load_plan_row(const int *p, int &row0, int &word) {
  asm volatile("ld.global.cg.v2.s32 {%0, %1}, [%2];" : "=r"(row0), "=r"(word) : "l"(p));
}

// Streaming accesses: every input byte is read once and every output byte
// written once, so neither should displace other lines of L1 or L2 (`.cs`:
// evict first). Measured on the H100 (bench/probe, same process, best of 14
// block shapes, plain -> streaming): T=8192 H=16 36.14 -> 35.33 us, T=512
// H=32 7.13 -> 6.54, T=32768 H=32 275.6 -> 271.6; T=512 H=4 2.97 -> 3.06
// (docs/perf-notes.md, v8). KDA_PLAIN_LOADS / KDA_PLAIN_STORES restore the
// plain form for the probe's comparisons. Sizes 4, 8 and 16 bytes (the
// kernel's VEC accesses); any other size is a plain access.
template <typename V> __device__ __forceinline__ V load_stream(const V *p) {
#ifndef KDA_PLAIN_LOADS
  V r;
  unsigned *u = reinterpret_cast<unsigned *>(&r);
  if (sizeof(V) == 16) {
    asm volatile("ld.global.cs.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(u[0]), "=r"(u[1]), "=r"(u[2]), "=r"(u[3]) : "l"(p));
  } else if (sizeof(V) == 8) {
    asm volatile("ld.global.cs.v2.u32 {%0, %1}, [%2];" : "=r"(u[0]), "=r"(u[1]) : "l"(p));
  } else if (sizeof(V) == 4) {
    asm volatile("ld.global.cs.u32 %0, [%1];" : "=r"(u[0]) : "l"(p));
  } else {
    r = *p;
  }
  return r;
#else
  return *p;
#endif
}
template <typename V> __device__ __forceinline__ void store_stream(V *p, const V &v) {
#ifndef KDA_PLAIN_STORES
  const unsigned *u = reinterpret_cast<const unsigned *>(&v);
  if (sizeof(V) == 16) {
    asm volatile("st.global.cs.v4.u32 [%0], {%1, %2, %3, %4};"
                 :: "l"(p), "r"(u[0]), "r"(u[1]), "r"(u[2]), "r"(u[3]) : "memory");
  } else if (sizeof(V) == 8) {
    asm volatile("st.global.cs.v2.u32 [%0], {%1, %2};" :: "l"(p), "r"(u[0]), "r"(u[1]) : "memory");
  } else if (sizeof(V) == 4) {
    asm volatile("st.global.cs.u32 [%0], %1;" :: "l"(p), "r"(u[0]) : "memory");
  } else {
    *p = v;
  }
#else
  *p = v;
#endif
}

// The gate without its outer factor, of y = (x + dt_bias) * m, where m is
// log2(e) (softplus) or exp(A_log) * log2(e) (sigmoid) and the outer factor
// -exp(A_log) * ln 2 (softplus) or lower_bound (sigmoid); the kernel folds
// the factor with the scale into one multiplier per channel.
template <int GATE> __device__ __forceinline__ float activate_inner(float y) {
  if (GATE == GATE_SOFTPLUS) return softplus2(y);
  if (GATE == GATE_LOWER_BOUND) return sigmoid2(y);
  return y;
}

}  // namespace kda
