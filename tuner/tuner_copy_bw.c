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

/* Records the first failure of a call; 1 if r succeeded. */
static int ok_or_note(CUresult r, const char *call, CUresult *bad, const char **bad_call) {
  if (r == CUDA_SUCCESS) return 1;
  if (*bad == CUDA_SUCCESS) *bad = r, *bad_call = call;
  return 0;
}

kda_status kda__tune_copy_bw(const kda__driver *d, const kda__tune_kit *kit, double *gbps) {
  *gbps = -1;
  if (kit->nev < 2) return KDA_OK;
  CUdeviceptr src = 0, dst = 0;
  float ms[KDA__COPY_REPS];
  int n = 0;
  /* Any failure ends the measurement quietly (it is best effort), except
   * a lost context: the run it ends must not store what it timed. */
  CUresult bad = CUDA_SUCCESS;
  const char *bad_call = NULL;
#define NOTE(call, ...) ok_or_note(d->call(__VA_ARGS__), #call "(copy bandwidth)", &bad, &bad_call)
  if (!NOTE(cuMemAlloc, &src, KDA__COPY_BYTES)) src = 0;
  if (src != 0 && !NOTE(cuMemAlloc, &dst, KDA__COPY_BYTES)) dst = 0;
  if (src != 0 && dst != 0 &&
      NOTE(cuMemsetD32Async, src, 0x3f803f80u, KDA__COPY_BYTES / 4, kit->stream)) {
    for (int i = 0; i < 2 + KDA__COPY_REPS; ++i) {
      int ok = NOTE(cuEventRecord, kit->ev[0], kit->stream);
      for (int k = 0; k < KDA__COPY_BACK_TO_BACK && ok; ++k)
        ok = NOTE(cuMemcpyDtoDAsync, dst, src, KDA__COPY_BYTES, kit->stream);
      if (!ok || !NOTE(cuEventRecord, kit->ev[1], kit->stream) ||
          !NOTE(cuEventSynchronize, kit->ev[1]))
        break;
      float t = 0;
      if (i >= 2 && NOTE(cuEventElapsedTime, &t, kit->ev[0], kit->ev[1]) && t > 0) ms[n++] = t;
    }
  }
  NOTE(cuStreamSynchronize, kit->stream);
  if (dst != 0) NOTE(cuMemFree, dst);
  if (src != 0) NOTE(cuMemFree, src);
#undef NOTE
  if (kda__cu_context_lost(bad)) return kda__cu_status(d, bad, bad_call, __FILE__, __LINE__);
  if (n == KDA__COPY_REPS) {
    qsort(ms, (size_t)n, sizeof ms[0], cmp_float);
    *gbps = 2.0 * KDA__COPY_BACK_TO_BACK * (double)KDA__COPY_BYTES / (ms[n / 2] * 1e-3) / 1e9;
  }
  return KDA_OK;
}
