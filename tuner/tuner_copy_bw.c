/* The device's copy bandwidth, the floor every row of the tuning database
 * is read against (`kda-tune list`'s %COPY, `show`'s "% of the card's copy
 * bandwidth"): measured by a context's first tuning run, under the GPU's
 * timing lock (so no other run's kernels share the device), and stored with
 * the GPU model. Device-to-device copies of 128 MiB, counting the bytes
 * read and written as kda-bench does (it copies 1 GiB at a time), the
 * median of 9 samples after 2 warm-ups. Best effort:
 * where the 256 MiB cannot be allocated (a server that holds nearly all of
 * the memory) nothing is measured. Each sample times 8 copies back to
 * back. */
#include <stdlib.h>

#include "tuner.h"

#define KDA__COPY_BYTES ((size_t)128 << 20)
#define KDA__COPY_REPS 9
/* Copies per timed sample: one alone read 9% low on an H200 (3844 against
 * kda-bench's 4236 GB/s), its launch and ramp not amortised; eight read
 * 4099 against kda-bench's 4183 in the same process (2026-11-29). */
#define KDA__COPY_BACK_TO_BACK 8

static int cmp_float(const void *a, const void *b) {
  const float x = *(const float *)a, y = *(const float *)b;
  return x < y ? -1 : x > y;
}

double kda__tune_copy_bw(const kda__driver *d, const kda__tune_kit *kit) {
  if (kit->nev < 2) return -1;
  CUdeviceptr src = 0, dst = 0;
  double gbps = -1;
  float ms[KDA__COPY_REPS];
  int n = 0;
  if (d->cuMemAlloc(&src, KDA__COPY_BYTES) != CUDA_SUCCESS) src = 0;
  if (src != 0 && d->cuMemAlloc(&dst, KDA__COPY_BYTES) != CUDA_SUCCESS) dst = 0;
  if (src != 0 && dst != 0 &&
      d->cuMemsetD32Async(src, 0x3f803f80u, KDA__COPY_BYTES / 4, kit->stream) == CUDA_SUCCESS) {
    for (int i = 0; i < 2 + KDA__COPY_REPS; ++i) {
      int ok = d->cuEventRecord(kit->ev[0], kit->stream) == CUDA_SUCCESS;
      for (int k = 0; k < KDA__COPY_BACK_TO_BACK && ok; ++k)
        ok = d->cuMemcpyDtoDAsync(dst, src, KDA__COPY_BYTES, kit->stream) == CUDA_SUCCESS;
      if (!ok || d->cuEventRecord(kit->ev[1], kit->stream) != CUDA_SUCCESS ||
          d->cuEventSynchronize(kit->ev[1]) != CUDA_SUCCESS)
        break;
      float t = 0;
      if (i >= 2 && d->cuEventElapsedTime(&t, kit->ev[0], kit->ev[1]) == CUDA_SUCCESS && t > 0)
        ms[n++] = t;
    }
  }
  d->cuStreamSynchronize(kit->stream);
  if (n == KDA__COPY_REPS) {
    qsort(ms, (size_t)n, sizeof ms[0], cmp_float);
    gbps = 2.0 * KDA__COPY_BACK_TO_BACK * (double)KDA__COPY_BYTES / (ms[n / 2] * 1e-3) / 1e9;
  }
  if (dst != 0) d->cuMemFree(dst);
  if (src != 0) d->cuMemFree(src);
  return gbps;
}
