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

// A register array of N elements moved with the widest accesses its
// alignment allows (N * sizeof(T) bytes, which the host guarantees).
template <typename T, int N> struct alignas(sizeof(T) * N) vec {
  T v[N];
};

// Softplus with the upstream threshold: z for z > 20, else log(1 + e^z).
// log1pf(expf(z)) is accurate to a few ulp over the whole range, which keeps
// the fused cumsum well inside the 2e-5 relative error budget. A variant
// with the fast ex2/lg2 units, a branch for small e^-|z| and an IEEE
// division ran 20% slower on an H100 (docs/perf-notes.md, v2), so the
// accurate form stays until a faster approximation is measured.
__device__ __forceinline__ float softplus(float z) {
  return z > 20.0f ? z : log1pf(expf(z));
}

__device__ __forceinline__ float sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

template <int GATE>
__device__ __forceinline__ float activate(float x, float a_exp, float lower_bound) {
  if (GATE == GATE_SOFTPLUS) return -a_exp * softplus(x);
  if (GATE == GATE_LOWER_BOUND) return lower_bound * sigmoid(a_exp * x);
  return x;
}

}  // namespace kda
