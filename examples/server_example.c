/* server_example: libkda inside a small server, built against the installed
 * package (find_package(kda) -> kda::kda) the way a user's server is.
 *
 * One kda_context is shared by N worker threads. Each worker owns a CUDA
 * stream and its buffers, and serves M "requests": a packed variable-length
 * batch with random sequence lengths (some empty). Per request it builds ONE
 * chunk-index table on the device (kda_chunk_indices_build_device, no host
 * synchronisation) and every gate kernel of the layer reuses it:
 *   - kda_gate_chunk_cumsum: raw bf16 gate [T, H, K] -> activated and
 *     chunk-cumsummed fp32 (softplus gate with A_log and dt_bias),
 *   - kda_chunk_local_cumsum: an already activated scalar gate [T, H]
 *     (head_dim 1) -> its chunk cumsum.
 * A sample of both outputs is checked against a float64 CPU computation.
 * Shutdown: workers are joined, their streams and buffers freed, then the
 * context destroyed and the device released.
 *
 * Without a GPU (no driver, no device) it prints "no GPU: <reason>" and
 * exits 0 having created nothing.
 *
 * Usage: server_example [--workers N] [--requests M] [--device D]
 * Exit status: 0 all checks passed (or no GPU), 1 a check or a call failed,
 * 2 bad usage. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kda/kda.h>

#include "cuda_loader.h"

enum {
  HEADS = 8,        /* H */
  HEAD_DIM = 64,    /* K */
  CHUNK = 64,       /* chunk size of the layer */
  MAX_SEQS = 12,    /* sequences per request: 1 .. MAX_SEQS */
  MAX_SEQ_LEN = 700, /* tokens per sequence: 0 .. MAX_SEQ_LEN */
  SAMPLES = 512     /* outputs checked per kernel per request */
};
#define TOLERANCE 1e-4 /* |gpu - ref| / (1 + |ref|) */

static ex_cuda cu;
static kda_context *ctx;
/* Layer weights, shared read-only by every worker. */
static float h_A_log[HEADS], h_dt_bias[HEADS * HEAD_DIM];
static ex_cu_ptr d_A_log, d_dt_bias;

typedef struct worker {
  int id;
  int requests;
  pthread_t thread;
  /* results */
  int failed;
  long long checks;
  long long tokens;
  double worst;
  char error[512];
} worker;

/* ---- small helpers ------------------------------------------------------- */

static uint64_t next_random(uint64_t *s) { /* xorshift64*: one state per thread */
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 0x2545F4914F6CDD1DULL;
}

static double uniform(uint64_t *s) { return (next_random(s) >> 11) * (1.0 / 9007199254740992.0); }

static uint16_t to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

static double from_bf16(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static void *dev_ptr(ex_cu_ptr p) { return (void *)(uintptr_t)p; }

#define CU_OR_FAIL(w, call)                                                              \
  do {                                                                                   \
    ex_cu_result r_ = (call);                                                            \
    if (r_ != 0) {                                                                       \
      snprintf((w)->error, sizeof (w)->error, "%s: %s", #call, ex_cuda_error_name(&cu, r_)); \
      goto done;                                                                         \
    }                                                                                    \
  } while (0)

#define KDA_OR_FAIL(w, call)                                                             \
  do {                                                                                   \
    kda_status s_ = (call);                                                              \
    if (s_ != KDA_OK) {                                                                  \
      snprintf((w)->error, sizeof (w)->error, "%s: %s: %s", #call, kda_status_name(s_),   \
               kda_last_error());                                                        \
      goto done;                                                                         \
    }                                                                                    \
  } while (0)

/* ---- one worker ------------------------------------------------------------ */

static void check(worker *w, double gpu, double ref) {
  double err = fabs(gpu - ref) / (1 + fabs(ref));
  if (!(err <= w->worst)) w->worst = err; /* NaN counts as worst */
  w->checks++;
}

/* Samples outputs of both kernels and compares them with float64 sums from
 * the start of the token's chunk within its sequence. */
static void check_request(worker *w, uint64_t *rng, int n, const int32_t *cu_h,
                          const uint16_t *g, const float *out_g, const float *beta,
                          const float *out_beta) {
  for (int i = 0; i < SAMPLES; ++i) {
    int s;
    do s = (int)(next_random(rng) % (uint64_t)n);
    while (cu_h[s + 1] == cu_h[s]);
    const int32_t t = cu_h[s] + (int32_t)(next_random(rng) % (uint64_t)(cu_h[s + 1] - cu_h[s]));
    const int32_t t0 = cu_h[s] + (t - cu_h[s]) / CHUNK * CHUNK;
    const int h = (int)(next_random(rng) % HEADS), k = (int)(next_random(rng) % HEAD_DIM);
    const int hk = h * HEAD_DIM + k;
    double acc = 0, acc_beta = 0;
    for (int32_t u = t0; u <= t; ++u) {
      double z = from_bf16(g[(size_t)u * HEADS * HEAD_DIM + hk]) + h_dt_bias[hk];
      double softplus = z > 20 ? z : log1p(exp(z));
      acc += -exp((double)h_A_log[h]) * softplus;
      acc_beta += beta[(size_t)u * HEADS + h];
    }
    check(w, out_g[(size_t)t * HEADS * HEAD_DIM + hk], acc);
    check(w, out_beta[(size_t)t * HEADS + h], acc_beta);
  }
}

static void *worker_main(void *arg) {
  worker *w = arg;
  uint64_t rng = 0x9E3779B97F4A7C15ULL * (uint64_t)(w->id + 1);
  const int64_t max_tokens = (int64_t)MAX_SEQS * MAX_SEQ_LEN;
  const int64_t max_rows = kda_chunk_indices_capacity(max_tokens, MAX_SEQS, CHUNK);
  const size_t hk = (size_t)HEADS * HEAD_DIM;
  ex_cu_stream stream = NULL;
  ex_cu_ptr d_g = 0, d_out_g = 0, d_beta = 0, d_out_beta = 0, d_cu = 0, d_table = 0, d_count = 0;
  uint16_t *g = malloc((size_t)max_tokens * hk * sizeof *g);
  float *out_g = malloc((size_t)max_tokens * hk * sizeof *out_g);
  float *beta = malloc((size_t)max_tokens * HEADS * sizeof *beta);
  float *out_beta = malloc((size_t)max_tokens * HEADS * sizeof *out_beta);
  if (!g || !out_g || !beta || !out_beta) {
    snprintf(w->error, sizeof w->error, "out of host memory");
    goto done;
  }
  /* The driver's calls of this thread act on the device's primary context
   * (libkda's calls make their context current themselves). */
  CU_OR_FAIL(w, cu.CtxSetCurrent(cu.primary));
  CU_OR_FAIL(w, cu.StreamCreate(&stream, 1 /* CU_STREAM_NON_BLOCKING */));
  /* Buffers sized once for the largest request, reused by every request. */
  CU_OR_FAIL(w, cu.MemAlloc(&d_g, (size_t)max_tokens * hk * sizeof *g));
  CU_OR_FAIL(w, cu.MemAlloc(&d_out_g, (size_t)max_tokens * hk * sizeof *out_g));
  CU_OR_FAIL(w, cu.MemAlloc(&d_beta, (size_t)max_tokens * HEADS * sizeof *beta));
  CU_OR_FAIL(w, cu.MemAlloc(&d_out_beta, (size_t)max_tokens * HEADS * sizeof *out_beta));
  CU_OR_FAIL(w, cu.MemAlloc(&d_cu, (MAX_SEQS + 1) * sizeof(int32_t)));
  CU_OR_FAIL(w, cu.MemAlloc(&d_table, (size_t)max_rows * 2 * sizeof(int32_t)));
  CU_OR_FAIL(w, cu.MemAlloc(&d_count, sizeof(int32_t)));

  for (int req = 0; req < w->requests; ++req) {
    /* The request: n sequences of random lengths, at least one token. */
    const int n = 1 + (int)(next_random(&rng) % MAX_SEQS);
    int32_t cu_h[MAX_SEQS + 1] = {0};
    for (int s = 0; s < n; ++s) {
      int32_t len = next_random(&rng) % 10 == 0 ? 0 : 1 + (int32_t)(next_random(&rng) % MAX_SEQ_LEN);
      cu_h[s + 1] = cu_h[s] + len;
    }
    if (cu_h[n] == 0) cu_h[n] = 1;
    const int64_t T = cu_h[n];
    for (size_t i = 0; i < (size_t)T * hk; ++i) g[i] = to_bf16((float)(uniform(&rng) * 6 - 3));
    for (size_t i = 0; i < (size_t)T * HEADS; ++i) beta[i] = (float)-uniform(&rng);
    CU_OR_FAIL(w, cu.MemcpyHtoDAsync(d_cu, cu_h, (size_t)(n + 1) * sizeof(int32_t), stream));
    CU_OR_FAIL(w, cu.MemcpyHtoDAsync(d_g, g, (size_t)T * hk * sizeof *g, stream));
    CU_OR_FAIL(w, cu.MemcpyHtoDAsync(d_beta, beta, (size_t)T * HEADS * sizeof *beta, stream));

    /* One chunk table per request, on the device, on this worker's stream. */
    const int64_t rows = kda_chunk_indices_capacity(T, n, CHUNK);
    KDA_OR_FAIL(w, kda_chunk_indices_build_device(ctx, dev_ptr(d_cu), KDA_DTYPE_I32, n, T, CHUNK,
                                                  dev_ptr(d_table), rows, dev_ptr(d_count),
                                                  stream));

    /* Every kernel of the layer reuses that table. */
    kda_gate_args a = kda_gate_args_default();
    a.g = dev_ptr(d_g);
    a.g_dtype = KDA_DTYPE_BF16;
    a.out = dev_ptr(d_out_g);
    a.batch = 1;
    a.seq_len = T;
    a.num_heads = HEADS;
    a.head_dim = HEAD_DIM;
    a.chunk_size = CHUNK;
    a.gate = KDA_GATE_SOFTPLUS;
    a.A_log = dev_ptr(d_A_log);
    a.dt_bias = dev_ptr(d_dt_bias);
    a.cu_seqlens = dev_ptr(d_cu);
    a.cu_seqlens_dtype = KDA_DTYPE_I32;
    a.num_seqs = n;
    a.chunk_indices = dev_ptr(d_table);
    a.num_chunks = rows;
    a.num_chunks_device = dev_ptr(d_count);
    KDA_OR_FAIL(w, kda_gate_chunk_cumsum(ctx, &a, stream));

    kda_gate_args b = a; /* same batch, same table */
    b.g = dev_ptr(d_beta);
    b.g_dtype = KDA_DTYPE_F32;
    b.out = dev_ptr(d_out_beta);
    b.head_dim = 1;
    b.gate = KDA_GATE_NONE;
    b.A_log = NULL;
    b.dt_bias = NULL;
    KDA_OR_FAIL(w, kda_chunk_local_cumsum(ctx, &b, stream));

    CU_OR_FAIL(w, cu.MemcpyDtoHAsync(out_g, d_out_g, (size_t)T * hk * sizeof *out_g, stream));
    CU_OR_FAIL(w, cu.MemcpyDtoHAsync(out_beta, d_out_beta, (size_t)T * HEADS * sizeof *out_beta,
                                     stream));
    CU_OR_FAIL(w, cu.StreamSynchronize(stream));
    check_request(w, &rng, n, cu_h, g, out_g, beta, out_beta);
    w->tokens += T;
  }

done:
  /* Clean shutdown of this worker whatever happened: wait for its stream,
   * then free what it made. */
  if (stream) {
    cu.StreamSynchronize(stream);
    cu.StreamDestroy(stream);
  }
  ex_cu_ptr bufs[] = {d_g, d_out_g, d_beta, d_out_beta, d_cu, d_table, d_count};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; ++i)
    if (bufs[i]) cu.MemFree(bufs[i]);
  free(g);
  free(out_g);
  free(beta);
  free(out_beta);
  w->failed = w->error[0] != 0 || !(w->worst <= TOLERANCE);
  return NULL;
}

/* ---- main ------------------------------------------------------------------- */

static int parse_int(const char *s, int lo, int hi, int *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v < lo || v > hi) return -1;
  *out = (int)v;
  return 0;
}

int main(int argc, char **argv) {
  int workers = 4, requests = 8, device = 0;
  for (int i = 1; i < argc; ++i) {
    int *target = !strcmp(argv[i], "--workers")    ? &workers
                  : !strcmp(argv[i], "--requests") ? &requests
                  : !strcmp(argv[i], "--device")   ? &device
                                                   : NULL;
    if (!target || i + 1 >= argc || parse_int(argv[++i], 0, 4096, target) != 0 ||
        (target == &workers && workers == 0)) {
      fprintf(stderr, "usage: %s [--workers 1..4096] [--requests N] [--device D]\n", argv[0]);
      return 2;
    }
  }
  if (kda_version_number() != KDA_VERSION_NUMBER) {
    fprintf(stderr, "libkda %s does not match the header this was built with (%d.%d.%d)\n",
            kda_version(), KDA_VERSION_MAJOR, KDA_VERSION_MINOR, KDA_VERSION_PATCH);
    return 1;
  }

  char why[512];
  if (ex_cuda_load(&cu, device, why, sizeof why) != 0) {
    printf("no GPU: %s\n", why);
    return 0;
  }
  /* The server owns the CUDA context; libkda binds to the one current here.
   * A server prewarms its shapes with `kda-tune prewarm` and never
   * benchmarks on the request path: KDA_TUNE_CACHED (KDA_TUNE=... overrides). */
  kda_options opts = kda_options_default();
  opts.device = -1;
  opts.tune_mode = KDA_TUNE_CACHED;
  kda_status st = kda_context_create(&opts, &ctx);
  if (st == KDA_ERROR_NO_DRIVER || st == KDA_ERROR_NO_DEVICE) {
    printf("no GPU: %s\n", kda_last_error());
    ex_cuda_unload(&cu);
    return 0;
  }
  if (st != KDA_OK) {
    fprintf(stderr, "kda_context_create: %s: %s\n", kda_status_name(st), kda_last_error());
    ex_cuda_unload(&cu);
    return 1;
  }
  kda_device_info info = {.struct_size = sizeof info};
  if (kda_context_get_device_info(ctx, &info) == KDA_OK)
    printf("libkda %s on %s (sm_%d%d): %d workers x %d requests, H=%d K=%d chunk %d\n",
           kda_version(), info.name, info.cc_major, info.cc_minor, workers, requests, HEADS,
           HEAD_DIM, CHUNK);

  int rc = 1;
  worker *pool = calloc((size_t)workers, sizeof *pool);
  if (!pool) goto shutdown;
  /* Layer weights: A_log = log(uniform(1, 16)), dt_bias ~ uniform(-1, 1). */
  uint64_t rng = 42;
  for (int h = 0; h < HEADS; ++h) h_A_log[h] = (float)log(1 + 15 * uniform(&rng));
  for (int i = 0; i < HEADS * HEAD_DIM; ++i) h_dt_bias[i] = (float)(uniform(&rng) * 2 - 1);
  if (cu.MemAlloc(&d_A_log, sizeof h_A_log) || cu.MemAlloc(&d_dt_bias, sizeof h_dt_bias) ||
      cu.MemcpyHtoDAsync(d_A_log, h_A_log, sizeof h_A_log, NULL) ||
      cu.MemcpyHtoDAsync(d_dt_bias, h_dt_bias, sizeof h_dt_bias, NULL) ||
      cu.StreamSynchronize(NULL)) {
    fprintf(stderr, "uploading the layer weights failed\n");
    goto shutdown;
  }

  int started = 0;
  for (; started < workers; ++started) {
    pool[started].id = started;
    pool[started].requests = requests;
    if (pthread_create(&pool[started].thread, NULL, worker_main, &pool[started]) != 0) {
      fprintf(stderr, "pthread_create failed after %d workers\n", started);
      break;
    }
  }
  int failed = started < workers;
  long long checks = 0, tokens = 0;
  double worst = 0;
  for (int i = 0; i < started; ++i) {
    pthread_join(pool[i].thread, NULL);
    if (pool[i].error[0]) fprintf(stderr, "worker %d: %s\n", i, pool[i].error);
    failed |= pool[i].failed;
    checks += pool[i].checks;
    tokens += pool[i].tokens;
    if (!(pool[i].worst <= worst)) worst = pool[i].worst;
  }
  kda_stats stats = {.struct_size = sizeof stats};
  kda_context_get_stats(ctx, &stats);
  printf("served %d requests (%lld tokens) on %d threads; %llu launches, %llu NVRTC compiles\n",
         started * requests, tokens, started, (unsigned long long)stats.launches,
         (unsigned long long)stats.nvrtc_compiles);
  printf("checked %lld outputs against float64: max relative error %.2e (tolerance %.0e): %s\n",
         checks, worst, TOLERANCE, failed ? "FAILED" : "OK");
  rc = failed ? 1 : 0;

shutdown:
  /* Every worker has been joined: nothing else uses the context now. */
  if (d_A_log) cu.MemFree(d_A_log);
  if (d_dt_bias) cu.MemFree(d_dt_bias);
  free(pool);
  kda_context_destroy(ctx);
  ex_cuda_unload(&cu);
  return rc;
}
