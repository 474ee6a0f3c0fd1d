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

// Softplus with the upstream threshold: z for z > 20, else log(1 + e^z),
// computed as max(z, 0) + log1p(e^-|z|) so the exponential never
// overflows, with the fast ex2/lg2 units instead of the libm-accurate
// expf/log1pf (which cost several percent of bandwidth at full speed).
// log1p(e) for e = e^-|z| in (0, 1]: below 1/16 a 5-term series (error
// under e^6/6, relative 1e-8); above it log(u) * e / (u - 1) with u = 1 + e,
// which cancels the rounding of u, and lg2.approx's absolute error (2^-22)
// is small against log(u) >= 0.06. Worst case about 1e-6 relative to
// float64, inside the 2e-5 budget after a 256-step cumsum.
__device__ __forceinline__ float log1p_unit(float e) {
  if (e < 0.0625f) {
    return e * (1.0f + e * (-0.5f + e * (0.33333334f + e * (-0.25f + e * 0.2f))));
  }
  const float u = 1.0f + e;
  return __logf(u) * (e / (u - 1.0f));
}

__device__ __forceinline__ float softplus(float z) {
  if (z > 20.0f) return z;
  return fmaxf(z, 0.0f) + log1p_unit(__expf(-fabsf(z)));
}

// 1 / (1 + e^-z) with the fast exponential; saturates cleanly at both ends.
__device__ __forceinline__ float sigmoid(float z) { return __frcp_rn(1.0f + __expf(-z)); }

template <int GATE>
__device__ __forceinline__ float activate(float x, float a_exp, float lower_bound) {
  if (GATE == GATE_SOFTPLUS) return -a_exp * softplus(x);
  if (GATE == GATE_LOWER_BOUND) return lower_bound * sigmoid(a_exp * x);
  return x;
}

}  // namespace kda
