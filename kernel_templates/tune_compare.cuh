// Device-side validation for the autotuner: compares a candidate's output
// with the reference config's, element by element, without copying either
// to the host. Compiled into the tuner's one NVRTC program together with
// the candidates (the tuner's batch source includes it after the kernel).
//
// result[0]: elements outside |got - ref| <= tol * (1 + |ref|), or a number
//            where the reference is NaN
// result[1]: unwritten elements: NaN (the poison) where the reference is not
// result[2]: low 32 bits: max |got - ref| / (1 + |ref|) as float bits
// result[3]: elements visited (must equal n: proves the comparison ran)
// result[4]: elements NaN in both: outside every sequence (varlen), where
//            nothing is written; for a dense shape the host refuses any
// Elements NaN in both are not counted as bad or unwritten.
#pragma once
#include "kda_common.cuh"

namespace kda {

template <int OUT_DT>
__global__ void __launch_bounds__(256)
tune_compare(const typename storage<OUT_DT>::type *__restrict__ got,
             const typename storage<OUT_DT>::type *__restrict__ ref, long long n, float tol,
             unsigned long long *__restrict__ result) {
  unsigned long long bad = 0, unwritten = 0, seen = 0, both_nan = 0;
  float max_err = 0.0f;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float r = to_float<OUT_DT>(ref[i]);
    const float g = to_float<OUT_DT>(got[i]);
    const bool rn = r != r, gn = g != g;
    ++seen;
    if (rn && gn) {
      ++both_nan;
      continue;
    }
    if (gn) {
      ++unwritten;
      continue;
    }
    if (rn) {
      ++bad;
      continue;
    }
    const float e = fabsf(g - r) / (1.0f + fabsf(r));
    if (!(e <= tol)) ++bad;
    if (e > max_err) max_err = e;
  }
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) {
    bad += __shfl_down_sync(0xffffffffu, bad, d);
    unwritten += __shfl_down_sync(0xffffffffu, unwritten, d);
    seen += __shfl_down_sync(0xffffffffu, seen, d);
    both_nan += __shfl_down_sync(0xffffffffu, both_nan, d);
    max_err = fmaxf(max_err, __shfl_down_sync(0xffffffffu, max_err, d));
  }
  if ((threadIdx.x & 31) == 0) {
    if (bad) atomicAdd(&result[0], bad);
    if (unwritten) atomicAdd(&result[1], unwritten);
    if (seen) atomicAdd(&result[3], seen);
    if (both_nan) atomicAdd(&result[4], both_nan);
    // A NaN error (inf - inf) counts as bad above; keep the max finite.
    if (max_err == max_err) atomicMax((unsigned int *)&result[2], __float_as_uint(max_err));
  }
}

}  // namespace kda
