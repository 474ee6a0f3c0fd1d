/* kda-bench's shared state and helpers (bench_common.h). */
#include "bench_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

cuda_api cu;
_Thread_local CUstream g_stream;
kda_device_info g_info;

double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void kda_ok(kda_status st, const char *what) {
  if (st == KDA_OK) return;
  fprintf(stderr, "%s: %s\n", what, kda_last_error());
  exit(1);
}

double event_ms(CUevent a, CUevent b) {
  float ms = 0;
  cuda_check(&cu, cu.EventSynchronize(b), "cuEventSynchronize");
  cuda_check(&cu, cu.EventElapsedTime(&ms, a, b), "cuEventElapsedTime");
  return ms;
}

kda_gate_args softplus_args(void *g, void *out, const void *A_log, int64_t T, int H, int K) {
  kda_gate_args a = kda_gate_args_default();
  a.g = g;
  a.g_dtype = KDA_DTYPE_BF16;
  a.out = out;
  a.batch = 1;
  a.seq_len = T;
  a.num_heads = H;
  a.head_dim = K;
  a.gate = KDA_GATE_SOFTPLUS;
  a.A_log = A_log;
  return a;
}
