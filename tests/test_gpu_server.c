/* Issue 6, "safe inside a long-running server", on a real GPU: 16 threads
 * on one tuning context meeting 8 cold specializations at once; a whole
 * varlen layer captured into one CUDA graph and replayed on fresh inputs;
 * two GPU models (the second simulated through KDA_TEST_GPU_IDENTITY) in
 * one database never sharing a row; a context destroyed while background
 * tuning runs. Every output is poisoned with NaN first and checked against
 * the float64 reference. Skips (exit 77) without a GPU. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "gpu_util.h"
#include "kda/kda.h"
#include "kda/kda_db.h"
#include "reference.h"
#include "test_util.h"
#include "tuner.h" /* kda__tune_kit_inside_max */

#define TOL 2e-5
#define POISON 0x7fc00000u /* float NaN */

static const kda__driver *g_drv;
static CUcontext g_cu;

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static void temp_db(char *path, size_t n) {
  char dir[] = "/tmp/kda_gpu_server_XXXXXX";
  assert_non_null(mkdtemp(dir));
  snprintf(path, n, "%s/tune.db", dir);
}

static kda_context *context(const char *db, int mode, double budget_ms) {
  kda_options o = kda_options_default();
  o.db_path = db;
  o.tune_mode = mode;
  o.tune_budget_ms = budget_ms;
  kda_context *ctx = NULL;
  GU_CHECK(kda_context_create(&o, &ctx));
  return ctx;
}

static kda_stats stats_of(kda_context *ctx) {
  kda_stats s = {.struct_size = sizeof s};
  GU_CHECK(kda_context_get_stats(ctx, &s));
  return s;
}

/* First column of the first row as text ("" if none), straight through SQLite. */
static void sql_text(const char *db, const char *sql, char *out, size_t n) {
  sqlite3 *h = NULL;
  out[0] = '\0';
  assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
  sqlite3_busy_timeout(h, 5000);
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK)
    fail_msg("%s: %s", sql, sqlite3_errmsg(h));
  if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
    snprintf(out, n, "%s", (const char *)sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
  sqlite3_close(h);
}

static void sql_exec(const char *db, const char *sql) {
  sqlite3 *h = NULL;
  assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
  sqlite3_busy_timeout(h, 5000);
  char *err = NULL;
  const int rc = sqlite3_exec(h, sql, NULL, NULL, &err);
  if (rc != SQLITE_OK) fprintf(stderr, "%s: %s\n", sql, err ? err : "?");
  sqlite3_free(err);
  sqlite3_close(h);
  assert_int_equal(rc, SQLITE_OK);
}

static long long sql_int(const char *db, const char *sql) {
  char t[64];
  sql_text(db, sql, t, sizeof t);
  return t[0] ? atoll(t) : -1;
}

/* Results rows that are not whole: a winner without its trials (one per
 * candidate, besides the shapes left out before timing, kda_db.h), its 'ok'
 * trial, its GPU model row or its cubin. Zero for a consistent database. */
#define SQL_INCOMPLETE_RESULTS                                                               \
  "SELECT count(*) FROM results r WHERE r.config = '' OR r.median_us IS NULL"              \
  " OR r.median_us <= 0"                                                                   \
  " OR r.candidates != (SELECT count(*) FROM trials t WHERE t.result_id = r.id"           \
  "   AND coalesce(t.reason, '') NOT LIKE '" KDA_DB_TRIAL_LEFT_OUT "%')"                   \
  " OR NOT EXISTS (SELECT 1 FROM trials t WHERE t.result_id = r.id AND t.config = r.config" \
  "   AND t.status = 'ok')"                                                                \
  " OR NOT EXISTS (SELECT 1 FROM gpu_models g WHERE g.gpu_key = r.gpu_key)"                \
  " OR NOT EXISTS (SELECT 1 FROM cubins c WHERE c.config = r.config"                       \
  "   AND substr(r.spec, 1, length(c.spec)) = c.spec"                                      \
  "   AND substr(r.spec, length(c.spec) + 1, 8) = ' veccap=')"

/* ------------------------------------------------------------------------ */
/* A specialization with its inputs on the device and its reference          */
/* ------------------------------------------------------------------------ */

typedef struct shape {
  kda_dtype in;
  int H, K, chunk;
  kda_gate_kind gate; /* NONE: kda_chunk_local_cumsum */
  int bias, alog, scale, reverse;
  int B;
  int64_t T;           /* dense */
  const int64_t *lens; /* varlen sequence lengths (NULL: dense) */
  int nseq;
  kda_dtype idx;
} shape;

typedef struct prepared {
  kda_gate_args a; /* device pointers */
  size_t n;
  double *ref;
  void *dev[6];
} prepared;

/* Random inputs (seeded), the reference, and device copies; a varlen shape
 * gets a host-built chunk table, so no chunk-indices kernel is compiled. */
static void prepare(const shape *s, uint64_t seed, prepared *p) {
  memset(p, 0, sizeof *p);
  tu_rng rng;
  tu_rng_seed(&rng, seed);
  int64_t cu[16] = {0}, B = s->B, T = s->T;
  int32_t cu32[16] = {0};
  if (s->lens) {
    for (int i = 0; i < s->nseq; ++i) cu[i + 1] = cu[i] + s->lens[i];
    for (int i = 0; i <= s->nseq; ++i) cu32[i] = (int32_t)cu[i];
    B = 1;
    T = cu[s->nseq];
  }
  const size_t hk = (size_t)s->H * (size_t)s->K;
  p->n = (size_t)B * (size_t)T * hk;
  const size_t in_sz = tu_dtype_size(s->in);
  void *g = malloc(p->n * in_sz);
  double *gd = malloc(p->n * sizeof(double));
  p->ref = malloc(p->n * sizeof(double));
  float alog[64], *bias = malloc(hk * sizeof(float));
  tu_fill_random_input(&rng, s->in, g, gd, p->n, 1.0);
  for (int h = 0; h < s->H; ++h) alog[h] = (float)log(1.0 + 15.0 * tu_uniform(&rng));
  for (size_t i = 0; i < hk; ++i) bias[i] = (float)tu_normal(&rng);

  kda_gate_args a = kda_gate_args_default();
  a.g_dtype = s->in;
  a.batch = B;
  a.seq_len = T;
  a.num_heads = s->H;
  a.head_dim = s->K;
  a.chunk_size = s->chunk;
  a.gate = s->gate;
  a.lower_bound = -5.0f;
  a.has_scale = s->scale;
  a.scale = 0.75f;
  a.reverse = s->reverse;
  kda_gate_args h = a;
  h.A_log = s->alog ? alog : NULL;
  h.dt_bias = s->bias ? bias : NULL;
  const void *cu_host = s->idx == KDA_DTYPE_I64 ? (const void *)cu : (const void *)cu32;
  if (s->lens) {
    h.cu_seqlens = cu_host;
    h.cu_seqlens_dtype = s->idx;
    h.num_seqs = s->nseq;
  }
  assert_int_equal(kda_ref_gate_chunk_cumsum(&h, gd, p->ref), 0);

  p->dev[0] = gu_upload(g, p->n * in_sz);
  p->dev[1] = gu_alloc(p->n * sizeof(float));
  p->dev[2] = gu_upload(alog, (size_t)s->H * sizeof(float));
  p->dev[3] = gu_upload(bias, hk * sizeof(float));
  a.g = p->dev[0];
  a.out = p->dev[1];
  a.A_log = s->alog ? p->dev[2] : NULL;
  a.dt_bias = s->bias ? p->dev[3] : NULL;
  if (s->lens) {
    const int64_t cap = kda_chunk_indices_capacity(T, s->nseq, s->chunk);
    int32_t *table = malloc((size_t)cap * 8);
    int64_t nc = 0;
    GU_CHECK(kda_chunk_indices_build_host(cu_host, s->idx, s->nseq, s->chunk, table, cap, &nc));
    p->dev[4] = gu_upload(cu_host, ((size_t)s->nseq + 1) * tu_dtype_size(s->idx));
    p->dev[5] = gu_upload(table, (size_t)nc * 8);
    a.cu_seqlens = p->dev[4];
    a.cu_seqlens_dtype = s->idx;
    a.num_seqs = s->nseq;
    a.chunk_indices = p->dev[5];
    a.num_chunks = nc;
    free(table);
  }
  p->a = a;
  free(g);
  free(gd);
  free(bias);
}

static void prepared_free(prepared *p) {
  for (int i = 0; i < 6; ++i) gu_free(p->dev[i]);
  free(p->ref);
}

#define RUN_FAILED ((size_t)-1)

/* Poisons the output, launches on stream s, copies back, synchronises s
 * only, and returns the elements out of budget (RUN_FAILED if a call
 * failed). No cmocka assertion: worker threads call it. */
static size_t run_checked(kda_context *ctx, const prepared *p, CUstream s, float *host) {
  const CUdeviceptr out = (CUdeviceptr)(uintptr_t)p->a.out;
  if (g_drv->cuMemsetD32Async(out, POISON, p->n, s) != CUDA_SUCCESS) return RUN_FAILED;
  kda_status st = p->a.gate == KDA_GATE_NONE ? kda_chunk_local_cumsum(ctx, &p->a, (kda_stream)s)
                                             : kda_gate_chunk_cumsum(ctx, &p->a, (kda_stream)s);
  if (st != KDA_OK) {
    fprintf(stderr, "kernel call: %s\n", kda_last_error());
    return RUN_FAILED;
  }
  if (g_drv->cuMemcpyDtoHAsync(host, out, p->n * sizeof(float), s) != CUDA_SUCCESS ||
      g_drv->cuStreamSynchronize(s) != CUDA_SUCCESS)
    return RUN_FAILED;
  return tu_check_close(host, p->ref, p->n, TOL, NULL, NULL);
}

/* ------------------------------------------------------------------------ */
/* 1. Sixteen threads, one tuning context, eight cold specializations        */
/* ------------------------------------------------------------------------ */

#define THREADS 16
#define NSPEC 8
#define LAUNCHES_PER_THREAD 1024

static const int64_t LENS_A[] = {1, 17, 64, 65};
static const int64_t LENS_B[] = {130, 3, 60};

/* Eight distinct keys (dtype, H, K, chunk, gate, flags, dense or varlen),
 * all in token bucket 0, small so tuning is quick. */
static const shape STRESS[NSPEC] = {
    {KDA_DTYPE_BF16, 4, 32, 64, KDA_GATE_SOFTPLUS, 1, 1, 0, 0, 2, 70, NULL, 0, KDA_DTYPE_I32},
    {KDA_DTYPE_F16, 2, 48, 32, KDA_GATE_LOWER_BOUND, 0, 1, 0, 0, 1, 130, NULL, 0, KDA_DTYPE_I32},
    {KDA_DTYPE_F32, 3, 16, 16, KDA_GATE_SOFTPLUS, 1, 1, 0, 1, 3, 45, NULL, 0, KDA_DTYPE_I32},
    {KDA_DTYPE_BF16, 4, 32, 64, KDA_GATE_SOFTPLUS, 1, 1, 0, 0, 1, 0, LENS_A, 4, KDA_DTYPE_I32},
    {KDA_DTYPE_F32, 2, 32, 128, KDA_GATE_LOWER_BOUND, 1, 0, 1, 0, 1, 0, LENS_B, 3, KDA_DTYPE_I64},
    {KDA_DTYPE_BF16, 4, 64, 64, KDA_GATE_NONE, 0, 0, 0, 0, 1, 60, NULL, 0, KDA_DTYPE_I32},
    {KDA_DTYPE_F32, 16, 1, 32, KDA_GATE_NONE, 0, 0, 1, 1, 2, 200, NULL, 0, KDA_DTYPE_I32},
    {KDA_DTYPE_F16, 4, 16, 256, KDA_GATE_SOFTPLUS, 1, 1, 1, 0, 1, 300, NULL, 0, KDA_DTYPE_I32},
};

typedef struct worker {
  int id;
  kda_context *ctx;
  CUstream stream;
  pthread_barrier_t *start;
  prepared p[NSPEC];
  float *host;
  long launches, failures;
  size_t bad;
} worker;

static void *stress_thread(void *arg) {
  worker *w = arg;
  g_drv->cuCtxSetCurrent(g_cu);
  pthread_barrier_wait(w->start);
  /* Thread t starts on spec t % 8: every spec is met cold by two threads
   * at the same moment, and all eight at once. */
  for (int i = 0; i < LAUNCHES_PER_THREAD; ++i) {
    const size_t bad = run_checked(w->ctx, &w->p[(i + w->id) % NSPEC], w->stream, w->host);
    if (bad == RUN_FAILED) {
      ++w->failures;
      break;
    }
    w->bad += bad;
    ++w->launches;
  }
  return NULL;
}

static void sixteen_threads_tune_eight_cold_specializations_once_each(void **state) {
  (void)state;
  char db[256];
  temp_db(db, sizeof db);
  kda_context *ctx = context(db, KDA_TUNE_ON, 500.0);
  static worker w[THREADS];
  pthread_t th[THREADS];
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, THREADS);
  size_t most = 0;
  for (int t = 0; t < THREADS; ++t) {
    memset(&w[t], 0, sizeof w[t]);
    w[t].id = t;
    w[t].ctx = ctx;
    w[t].start = &start;
    for (int s = 0; s < NSPEC; ++s) {
      prepare(&STRESS[s], 0x5e7e0000u + (uint64_t)(t * NSPEC + s), &w[t].p[s]);
      assert_int_equal(kda_token_bucket(w[t].p[s].a.batch * w[t].p[s].a.seq_len), 0);
      if (w[t].p[s].n > most) most = w[t].p[s].n;
    }
    assert_int_equal(g_drv->cuStreamCreate(&w[t].stream, CU_STREAM_NON_BLOCKING), CUDA_SUCCESS);
  }
  for (int t = 0; t < THREADS; ++t) w[t].host = malloc(most * sizeof(float));
  gu_sync(); /* the uploads ran on the legacy stream; the workers' streams do not wait for it */
  const double t0 = now_ms();
  for (int t = 0; t < THREADS; ++t) pthread_create(&th[t], NULL, stress_thread, &w[t]);
  long launches = 0, failures = 0;
  size_t bad = 0;
  for (int t = 0; t < THREADS; ++t) {
    pthread_join(th[t], NULL);
    launches += w[t].launches;
    failures += w[t].failures;
    bad += w[t].bad;
  }
  const double ms = now_ms() - t0;
  const kda_stats s = stats_of(ctx);
  printf("%d threads, %ld checked launches in %.0f ms: %zu elements out of budget, %ld failed "
         "calls; tuning_runs=%llu nvrtc=%llu db_result_hits=%llu launches=%llu tune=%.0f ms; "
         "%llu runs waited %.0f ms in all for another's timing\n",
         THREADS, launches, ms, bad, failures, (unsigned long long)s.tuning_runs,
         (unsigned long long)s.nvrtc_compiles, (unsigned long long)s.db_result_hits,
         (unsigned long long)s.launches, s.tune_ms_total,
         (unsigned long long)s.tuning_timing_waits, s.tuning_timing_wait_ms_total);
  assert_int_equal(failures, 0);
  assert_int_equal(bad, 0);
  assert_int_equal(launches, (long)THREADS * LAUNCHES_PER_THREAD);
  /* The counters that say "once per specialization": tuning_runs counts
   * benchmarking runs; nvrtc_compiles counts one per tuning run (its
   * candidates are compiled as programs on parallel threads, and the
   * winner's program is then loaded), so a cold key costs exactly one of
   * each. db_result_hits stays 0:
   * nobody looked up a key after another thread tuned it (they waited on
   * the module cache's slot instead). launches counts the callers' kernels
   * only (the tuner's timing launches are not counted). */
  assert_int_equal(s.tuning_runs, NSPEC);
  assert_int_equal(s.nvrtc_compiles, NSPEC);
  assert_int_equal(s.db_result_hits, 0);
  assert_int_equal(s.launches, (uint64_t)THREADS * LAUNCHES_PER_THREAD);
  assert_int_equal(s.persist_failures, 0);
  /* The runs took turns on the GPU (tuner/tuner_kit.c). */
  assert_int_equal(kda__tune_kit_inside_max(), 1);
  assert_true(s.tuning_timing_waits < NSPEC);
  kda_context_destroy(ctx);
  assert_int_equal(sql_int(db, "SELECT count(*) FROM results"), NSPEC);
  assert_int_equal(sql_int(db, SQL_INCOMPLETE_RESULTS), 0);
  for (int t = 0; t < THREADS; ++t) {
    for (int k = 0; k < NSPEC; ++k) prepared_free(&w[t].p[k]);
    g_drv->cuStreamDestroy(w[t].stream);
    free(w[t].host);
  }
  pthread_barrier_destroy(&start);
}

/* ------------------------------------------------------------------------ */
/* 2. A whole varlen layer in one captured graph                            */
/* ------------------------------------------------------------------------ */

#define L_T 700 /* total tokens of the packed batch (fixed: the graph's shape) */
#define L_N 5   /* sequences */
#define L_H 4
#define L_K 64
#define L_CHUNK 64

typedef struct layer {
  void *g, *g_act, *alog, *bias, *cu, *table, *ws;
  void *out[4]; /* fused, local cumsum (scalar), gate alone, layer entry */
  int64_t cap;
  size_t ws_bytes;
  kda_gate_args fused, local, gate, entry;
} layer;

static void layer_alloc(layer *L) {
  const size_t n = (size_t)L_T * L_H * L_K;
  memset(L, 0, sizeof *L);
  L->g = gu_alloc(n * 2);
  L->g_act = gu_alloc((size_t)L_T * L_H * 4);
  L->alog = gu_alloc(L_H * 4);
  L->bias = gu_alloc((size_t)L_H * L_K * 4);
  L->cu = gu_alloc((L_N + 1) * 4);
  L->cap = kda_chunk_indices_capacity(L_T, L_N, L_CHUNK);
  L->table = gu_alloc((size_t)L->cap * 8 + 4);
  L->ws_bytes = kda_layer_workspace_size(L_T, L_N, L_CHUNK);
  L->ws = gu_alloc(L->ws_bytes);
  L->out[0] = gu_alloc(n * 4);
  L->out[1] = gu_alloc((size_t)L_T * L_H * 4);
  L->out[2] = gu_alloc(n * 4);
  L->out[3] = gu_alloc(n * 4);
  kda_gate_args a = kda_gate_args_default();
  a.g = L->g;
  a.g_dtype = KDA_DTYPE_BF16;
  a.batch = 1;
  a.seq_len = L_T;
  a.num_heads = L_H;
  a.head_dim = L_K;
  a.chunk_size = L_CHUNK;
  a.gate = KDA_GATE_SOFTPLUS;
  a.A_log = L->alog;
  a.dt_bias = L->bias;
  a.cu_seqlens = L->cu;
  a.cu_seqlens_dtype = KDA_DTYPE_I32;
  a.num_seqs = L_N;
  a.chunk_indices = L->table;
  a.num_chunks = L->cap;
  a.num_chunks_device = (const int32_t *)L->table + L->cap * 2;
  L->fused = a;
  L->fused.out = L->out[0];
  /* The scalar [B,T,H] cumsum of an already activated gate, same table. */
  L->local = a;
  L->local.g = L->g_act;
  L->local.g_dtype = KDA_DTYPE_F32;
  L->local.head_dim = 1;
  L->local.gate = KDA_GATE_NONE;
  L->local.A_log = L->local.dt_bias = NULL;
  L->local.reverse = 1;
  L->local.out = L->out[1];
  /* The activation alone is elementwise: it takes the packed batch dense. */
  L->gate = a;
  L->gate.gate = KDA_GATE_LOWER_BOUND;
  L->gate.lower_bound = -5.0f;
  L->gate.cu_seqlens = NULL;
  L->gate.num_seqs = 0;
  L->gate.chunk_indices = NULL;
  L->gate.num_chunks = 0;
  L->gate.num_chunks_device = NULL;
  L->gate.out = L->out[2];
  /* The layer entry builds its own table in the workspace. */
  L->entry = a;
  L->entry.chunk_indices = NULL;
  L->entry.num_chunks = 0;
  L->entry.num_chunks_device = NULL;
  L->entry.has_scale = 1;
  L->entry.scale = 0.5f;
  L->entry.out = L->out[3];
}

static void layer_free(layer *L) {
  void *all[] = {L->g, L->g_act, L->alog, L->bias, L->cu, L->table, L->ws,
                 L->out[0], L->out[1], L->out[2], L->out[3]};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; ++i) gu_free(all[i]);
}

/* Every kernel of the layer, in order, on stream s. */
static kda_status layer_record(kda_context *ctx, const layer *L, CUstream s) {
  kda_status st = kda_chunk_indices_build_device(ctx, L->cu, KDA_DTYPE_I32, L_N, L_T, L_CHUNK,
                                                 L->table, L->cap,
                                                 (int32_t *)L->table + L->cap * 2, (kda_stream)s);
  if (st == KDA_OK) st = kda_gate_chunk_cumsum(ctx, &L->fused, (kda_stream)s);
  if (st == KDA_OK) st = kda_chunk_local_cumsum(ctx, &L->local, (kda_stream)s);
  if (st == KDA_OK) st = kda_gate(ctx, &L->gate, (kda_stream)s);
  if (st == KDA_OK) st = kda_layer_gate_fwd(ctx, &L->entry, L->ws, L->ws_bytes, (kda_stream)s);
  return st;
}

/* Fresh random inputs (a new split of the L_T tokens into L_N sequences,
 * one of them sometimes empty) copied into the layer's buffers, outputs,
 * table and workspace poisoned; the references of the four outputs. */
static void layer_inputs(const layer *L, tu_rng *rng, double *ref[4]) {
  const size_t n = (size_t)L_T * L_H * L_K, ns = (size_t)L_T * L_H;
  uint16_t *g = malloc(n * 2);
  double *gd = malloc(n * sizeof(double)), *gad = malloc(ns * sizeof(double));
  float *ga = malloc(ns * 4), alog[L_H], bias[L_H * L_K];
  tu_fill_random_input(rng, KDA_DTYPE_BF16, g, gd, n, 1.0);
  tu_fill_random_input(rng, KDA_DTYPE_F32, ga, gad, ns, 0.5);
  for (int h = 0; h < L_H; ++h) alog[h] = (float)log(1.0 + 15.0 * tu_uniform(rng));
  for (int i = 0; i < L_H * L_K; ++i) bias[i] = (float)tu_normal(rng);
  int32_t cu[L_N + 1];
  cu[0] = 0;
  cu[L_N] = L_T;
  for (int i = 1; i < L_N; ++i) cu[i] = (int32_t)tu_uniform_int(rng, 0, L_T);
  for (int i = 1; i < L_N; ++i) /* sort the cut points */
    for (int j = i; j > 1 && cu[j - 1] > cu[j]; --j) {
      const int32_t x = cu[j];
      cu[j] = cu[j - 1];
      cu[j - 1] = x;
    }
  if (tu_uniform(rng) < 0.5) cu[2] = cu[1]; /* an empty sequence */
  assert_int_equal(g_drv->cuMemcpyHtoD((CUdeviceptr)(uintptr_t)L->g, g, n * 2), CUDA_SUCCESS);
  assert_int_equal(g_drv->cuMemcpyHtoD((CUdeviceptr)(uintptr_t)L->g_act, ga, ns * 4), CUDA_SUCCESS);
  assert_int_equal(g_drv->cuMemcpyHtoD((CUdeviceptr)(uintptr_t)L->alog, alog, sizeof alog),
                   CUDA_SUCCESS);
  assert_int_equal(g_drv->cuMemcpyHtoD((CUdeviceptr)(uintptr_t)L->bias, bias, sizeof bias),
                   CUDA_SUCCESS);
  assert_int_equal(g_drv->cuMemcpyHtoD((CUdeviceptr)(uintptr_t)L->cu, cu, sizeof cu), CUDA_SUCCESS);
  gu_poison(L->table, (size_t)L->cap * 8 + 4, POISON);
  gu_poison(L->ws, L->ws_bytes & ~(size_t)3, POISON);
  gu_poison(L->out[0], n * 4, POISON);
  gu_poison(L->out[1], ns * 4, POISON);
  gu_poison(L->out[2], n * 4, POISON);
  gu_poison(L->out[3], n * 4, POISON);
  const kda_gate_args *args[4] = {&L->fused, &L->local, &L->gate, &L->entry};
  for (int o = 0; o < 4; ++o) {
    kda_gate_args h = *args[o];
    h.A_log = h.A_log ? alog : NULL;
    h.dt_bias = h.dt_bias ? bias : NULL;
    if (h.cu_seqlens) h.cu_seqlens = cu;
    const double *in = o == 1 ? gad : gd;
    const int rc = o == 2 ? kda_ref_gate(&h, in, ref[o]) : kda_ref_gate_chunk_cumsum(&h, in, ref[o]);
    assert_int_equal(rc, 0);
  }
  free(g);
  free(gd);
  free(gad);
  free(ga);
  /* The copies and poison ran on the legacy stream, which a non-blocking
   * stream does not wait for. */
  gu_sync();
}

static size_t layer_check(const layer *L, double *ref[4]) {
  const size_t n = (size_t)L_T * L_H * L_K, sizes[4] = {n, (size_t)L_T * L_H, n, n};
  float *got = malloc(n * 4);
  size_t bad = 0;
  for (int o = 0; o < 4; ++o) {
    gu_download(got, L->out[o], sizes[o] * 4);
    const size_t b = tu_check_close(got, ref[o], sizes[o], TOL, NULL, NULL);
    if (b) fprintf(stderr, "layer output %d: %zu elements out of budget\n", o, b);
    bad += b;
  }
  free(got);
  return bad;
}

static void whole_varlen_layer_replays_from_one_captured_graph(void **state) {
  (void)state;
  char db[256];
  temp_db(db, sizeof db);
  kda_context *ctx = context(db, KDA_TUNE_ON, 500.0);
  layer L;
  layer_alloc(&L);
  tu_rng rng;
  tu_rng_seed(&rng, 0x9a9e);
  double *ref[4];
  for (int o = 0; o < 4; ++o) ref[o] = malloc((size_t)L_T * L_H * L_K * sizeof(double));
  CUstream s;
  assert_int_equal(g_drv->cuStreamCreate(&s, CU_STREAM_NON_BLOCKING), CUDA_SUCCESS);

  /* Warm (and tune) every specialization outside capture, checked too. */
  layer_inputs(&L, &rng, ref);
  GU_CHECK(layer_record(ctx, &L, s));
  assert_int_equal(layer_check(&L, ref), 0);
  /* Four tuned slots (fused, scalar cumsum, gate alone, the entry's scaled
   * fused kernel), one NVRTC program each, plus the chunk-table builder
   * (compiled, never tuned) shared by the direct call and the entry. */
  const kda_stats warm = stats_of(ctx);
  assert_int_equal(warm.tuning_runs, 4);
  assert_int_equal(warm.nvrtc_compiles, 5);

  assert_int_equal(g_drv->cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL), CUDA_SUCCESS);
  const kda_status rec = layer_record(ctx, &L, s);
  /* A cold specialization inside capture: refused, nothing compiled or
   * tuned, and the capture goes on. */
  kda_gate_args cold = L.fused;
  cold.reverse = 1;
  const kda_status cold_st = kda_gate_chunk_cumsum(ctx, &cold, (kda_stream)s);
  CUstreamCaptureStatus cap = CU_STREAM_CAPTURE_STATUS_NONE;
  assert_int_equal(g_drv->cuStreamIsCapturing(s, &cap), CUDA_SUCCESS);
  CUgraph graph = NULL;
  assert_int_equal(g_drv->cuStreamEndCapture(s, &graph), CUDA_SUCCESS);
  GU_CHECK(rec);
  assert_int_equal(cold_st, KDA_ERROR_CAPTURE_COLD);
  assert_int_equal(cap, CU_STREAM_CAPTURE_STATUS_ACTIVE);
  const kda_stats captured = stats_of(ctx);
  assert_int_equal(captured.nvrtc_compiles, warm.nvrtc_compiles);
  assert_int_equal(captured.tuning_runs, warm.tuning_runs);

  CUgraphExec exec;
  assert_int_equal(g_drv->cuGraphInstantiate(&exec, graph, 0), CUDA_SUCCESS);
  size_t bad = 0;
  const int replays = 6;
  for (int r = 0; r < replays; ++r) {
    layer_inputs(&L, &rng, ref); /* synchronous copies and poison */
    assert_int_equal(g_drv->cuGraphLaunch(exec, s), CUDA_SUCCESS);
    assert_int_equal(g_drv->cuStreamSynchronize(s), CUDA_SUCCESS);
    bad += layer_check(&L, ref);
  }
  const kda_stats after = stats_of(ctx);
  printf("graph: %d replays of a varlen layer (5 calls, 6 kernels), %zu elements out of budget; "
         "nvrtc=%llu tuning_runs=%llu (unchanged since warm-up)\n",
         replays, bad, (unsigned long long)after.nvrtc_compiles,
         (unsigned long long)after.tuning_runs);
  assert_int_equal(bad, 0);
  assert_int_equal(after.nvrtc_compiles, warm.nvrtc_compiles);
  assert_int_equal(after.tuning_runs, warm.tuning_runs);
  g_drv->cuGraphExecDestroy(exec);
  g_drv->cuGraphDestroy(graph);
  g_drv->cuStreamDestroy(s);
  for (int o = 0; o < 4; ++o) free(ref[o]);
  layer_free(&L);
  kda_context_destroy(ctx);
}

/* ------------------------------------------------------------------------ */
/* 2b. Cold work on one thread while another thread captures a graph         */
/* ------------------------------------------------------------------------ */

static const shape CAP_WARM = {KDA_DTYPE_BF16, 8, 64, 64, KDA_GATE_SOFTPLUS, 1, 1, 0, 0,
                               1, 4096, NULL, 0, KDA_DTYPE_I32};
static const shape CAP_COLD = {KDA_DTYPE_BF16, 4, 128, 64, KDA_GATE_SOFTPLUS, 1, 1, 0, 0,
                               2, 1500, NULL, 0, KDA_DTYPE_I32};

typedef struct cold_worker {
  kda_context *ctx;
  const prepared *p;
  CUstream s; /* non-blocking, made by the main thread */
  CUresult poison;
  kda_status call, prewarm, plan;
} cold_worker;

/* The other thread: a cold specialization (NVRTC, module load, a tuning
 * run's allocations and timing), a prewarm of another bucket and a chunk
 * plan's creation and destruction, on a stream of its own. It stays in the
 * default global capture mode and reads nothing back (a copy to pageable
 * memory is itself refused during another thread's global capture): the
 * main thread checks the output once the capture has ended. */
static void *cold_worker_run(void *arg) {
  cold_worker *w = arg;
  if (g_drv->cuCtxSetCurrent(g_cu) != CUDA_SUCCESS) return NULL;
  const CUdeviceptr out = (CUdeviceptr)(uintptr_t)w->p->a.out;
  w->poison = g_drv->cuMemsetD32Async(out, POISON, w->p->n, w->s);
  w->call = kda_gate_chunk_cumsum(w->ctx, &w->p->a, (kda_stream)w->s);
  if (w->call != KDA_OK) fprintf(stderr, "cold call: %s\n", kda_last_error());
  kda_gate_args shape = w->p->a;
  shape.seq_len = 9000; /* another bucket */
  kda_prewarm_result r = {.struct_size = sizeof r};
  w->prewarm = kda_prewarm(w->ctx, KDA_KERNEL_GATE_CHUNK_CUMSUM, &shape, 0, &r);
  if (w->prewarm != KDA_OK) fprintf(stderr, "prewarm: %s\n", kda_last_error());
  kda_chunk_plan *plan = NULL;
  w->plan = kda_chunk_plan_create(w->ctx, 8192, 16, 64, &plan);
  kda_chunk_plan_destroy(plan);
  return NULL;
}

/* A server captures a graph on one thread (the default global mode, on a
 * blocking stream) while another thread's call meets a cold specialization
 * with tuning on. The cold thread's allocations, frees and module loads
 * must neither be refused nor invalidate the capture (the library relaxes
 * its own thread's capture mode around them), and none of its work may go
 * to the legacy stream (which waits for blocking streams, the capturing one
 * included). Both answers are checked: the cold call's output, and the
 * captured graph's, replayed. */
static void cold_work_beside_another_threads_capture_leaves_it_whole(void **state) {
  (void)state;
  char db[256];
  temp_db(db, sizeof db);
  kda_context *ctx = context(db, KDA_TUNE_ON, 300.0);
  prepared warm, cold;
  prepare(&CAP_WARM, 0xca97, &warm);
  prepare(&CAP_COLD, 0xc01d, &cold);
  float *host = malloc(warm.n * sizeof(float));
  CUstream s;
  assert_int_equal(g_drv->cuStreamCreate(&s, CU_STREAM_DEFAULT), CUDA_SUCCESS); /* blocking */
  assert_int_equal(run_checked(ctx, &warm, s, host), 0); /* warm (tuned) outside capture */
  const kda_stats before = stats_of(ctx);

  assert_int_equal(g_drv->cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL), CUDA_SUCCESS);
  const CUdeviceptr out = (CUdeviceptr)(uintptr_t)warm.a.out;
  const CUresult poison = g_drv->cuMemsetD32Async(out, POISON, warm.n, s);
  const kda_status rec = kda_gate_chunk_cumsum(ctx, &warm.a, (kda_stream)s);
  cold_worker w = {ctx, &cold, NULL, CUDA_ERROR_UNKNOWN, KDA_ERROR_INTERNAL, KDA_ERROR_INTERNAL,
                   KDA_ERROR_INTERNAL};
  assert_int_equal(g_drv->cuStreamCreate(&w.s, CU_STREAM_NON_BLOCKING), CUDA_SUCCESS);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, cold_worker_run, &w), 0);
  assert_int_equal(pthread_join(t, NULL), 0);
  CUstreamCaptureStatus cap = CU_STREAM_CAPTURE_STATUS_NONE;
  const CUresult query = g_drv->cuStreamIsCapturing(s, &cap);
  CUgraph graph = NULL;
  const CUresult end = g_drv->cuStreamEndCapture(s, &graph);
  const kda_stats after = stats_of(ctx);
  float *cold_host = malloc(cold.n * sizeof(float));
  assert_int_equal(g_drv->cuMemcpyDtoHAsync(cold_host, (CUdeviceptr)(uintptr_t)cold.a.out,
                                            cold.n * sizeof(float), w.s),
                   CUDA_SUCCESS);
  assert_int_equal(g_drv->cuStreamSynchronize(w.s), CUDA_SUCCESS);
  const size_t cold_bad = tu_check_close(cold_host, cold.ref, cold.n, TOL, NULL, NULL);
  printf("capture beside a cold call: capture %s, end %d; cold call %s, %zu elements out of "
         "budget, tuning runs %llu -> %llu, prewarm %s, plan %s\n",
         cap == CU_STREAM_CAPTURE_STATUS_ACTIVE ? "active" : "NOT active", (int)end,
         kda_status_string(w.call), cold_bad, (unsigned long long)before.tuning_runs,
         (unsigned long long)after.tuning_runs, kda_status_string(w.prewarm),
         kda_status_string(w.plan));
  assert_int_equal(poison, CUDA_SUCCESS);
  GU_CHECK(rec);
  assert_int_equal(w.poison, CUDA_SUCCESS);
  GU_CHECK(w.call);
  GU_CHECK(w.prewarm);
  GU_CHECK(w.plan);
  assert_int_equal(query, CUDA_SUCCESS);
  assert_int_equal(cap, CU_STREAM_CAPTURE_STATUS_ACTIVE);
  assert_int_equal(end, CUDA_SUCCESS);
  assert_int_equal(cold_bad, 0);
  assert_true(after.tuning_runs >= before.tuning_runs + 2); /* the cold call and the prewarm */
  free(cold_host);
  g_drv->cuStreamDestroy(w.s);
  /* The first tuning run measured the card's copy bandwidth and stored it
   * with the GPU model: what kda-tune's %COPY reads rows against. */
  char bw[64];
  sql_text(db, "SELECT copy_bw_gbps FROM gpu_models", bw, sizeof bw);
  printf("copy bandwidth stored with the GPU model: %s GB/s\n", bw);
  assert_int_equal(sql_int(db, "SELECT count(*) FROM gpu_models WHERE copy_bw_gbps BETWEEN 500 AND 50000"), 1);

  CUgraphExec exec;
  assert_int_equal(g_drv->cuGraphInstantiate(&exec, graph, 0), CUDA_SUCCESS);
  size_t bad = 0;
  for (int r = 0; r < 3; ++r) {
    gu_poison(warm.a.out, warm.n * sizeof(float), 0x12345678u); /* the graph poisons again */
    assert_int_equal(g_drv->cuGraphLaunch(exec, s), CUDA_SUCCESS);
    assert_int_equal(g_drv->cuMemcpyDtoHAsync(host, out, warm.n * sizeof(float), s), CUDA_SUCCESS);
    assert_int_equal(g_drv->cuStreamSynchronize(s), CUDA_SUCCESS);
    bad += tu_check_close(host, warm.ref, warm.n, TOL, NULL, NULL);
  }
  assert_int_equal(bad, 0);
  g_drv->cuGraphExecDestroy(exec);
  g_drv->cuGraphDestroy(graph);
  g_drv->cuStreamDestroy(s);
  free(host);
  prepared_free(&warm);
  prepared_free(&cold);
  kda_context_destroy(ctx);
}

/* ------------------------------------------------------------------------ */
/* 3. Two GPU models in one database                                         */
/* ------------------------------------------------------------------------ */

#define FAKE_GPU "name=Fake GPU X;pci=0xfffe"

static const shape ID_SHAPE = {KDA_DTYPE_BF16, 8, 64, 64, KDA_GATE_SOFTPLUS, 1, 1, 0, 0,
                               2, 300, NULL, 0, KDA_DTYPE_I32};

/* One checked call in a fresh context (posing as the fake model when
 * fake); its counters, and the GPU key it used. */
static kda_stats identity_run(const char *db, int fake, const prepared *p, char *key, size_t n) {
  if (fake) setenv("KDA_TEST_GPU_IDENTITY", FAKE_GPU, 1);
  kda_context *ctx = context(db, KDA_TUNE_ON, 500.0);
  unsetenv("KDA_TEST_GPU_IDENTITY");
  kda_device_info info = {.struct_size = sizeof info};
  GU_CHECK(kda_context_get_device_info(ctx, &info));
  if (fake) assert_string_equal(info.name, "Fake GPU X");
  assert_true(kda_db_gpu_key(&info, key, n) > 0);
  float *host = malloc(p->n * sizeof(float));
  assert_int_equal(run_checked(ctx, p, NULL, host), 0);
  free(host);
  const kda_stats s = stats_of(ctx);
  kda_context_destroy(ctx);
  printf("%s model (%s): tuning_runs=%llu db_result_hits=%llu db_cubin_hits=%llu nvrtc=%llu\n",
         fake ? "fake" : "real", key, (unsigned long long)s.tuning_runs,
         (unsigned long long)s.db_result_hits, (unsigned long long)s.db_cubin_hits,
         (unsigned long long)s.nvrtc_compiles);
  return s;
}

static void two_gpu_models_in_one_database_never_share_a_row(void **state) {
  (void)state;
  char db[256], real[128], fake[128], sql[512], name[256];
  temp_db(db, sizeof db);
  prepared p;
  prepare(&ID_SHAPE, 0x1d, &p);
  kda_stats s = identity_run(db, 0, &p, real, sizeof real);
  assert_int_equal(s.tuning_runs, 1);
  /* The fake model does not see the real one's row: it tunes its own. */
  s = identity_run(db, 1, &p, fake, sizeof fake);
  assert_string_not_equal(real, fake);
  assert_int_equal(s.tuning_runs, 1);
  assert_int_equal(s.db_result_hits, 0);
  assert_int_equal(sql_int(db, "SELECT count(*) FROM results"), 2);
  assert_int_equal(sql_int(db, "SELECT count(DISTINCT gpu_key) FROM results"), 2);
  snprintf(sql, sizeof sql, "SELECT count(*) FROM results WHERE gpu_key = '%s'", fake);
  assert_int_equal(sql_int(db, sql), 1);
  snprintf(sql, sizeof sql, "SELECT name FROM gpu_models WHERE gpu_key = '%s'", fake);
  sql_text(db, sql, name, sizeof name);
  assert_string_equal(name, "Fake GPU X");
  /* Without its own row the real model tunes again rather than load the
   * fake model's, which stays. */
  snprintf(sql, sizeof sql, "PRAGMA foreign_keys = ON; DELETE FROM results WHERE gpu_key = '%s'",
           real);
  sql_exec(db, sql);
  assert_int_equal(sql_int(db, "SELECT count(*) FROM results"), 1);
  s = identity_run(db, 0, &p, real, sizeof real);
  assert_int_equal(s.tuning_runs, 1);
  assert_int_equal(s.db_result_hits, 0);
  /* And the fake model still finds its own. */
  s = identity_run(db, 1, &p, fake, sizeof fake);
  assert_int_equal(s.tuning_runs, 0);
  assert_int_equal(s.db_result_hits, 1);
  assert_int_equal(sql_int(db, "SELECT count(DISTINCT gpu_key) FROM results"), 2);
  assert_int_equal(sql_int(db, "SELECT count(*) FROM results"), 2);
  assert_int_equal(sql_int(db, SQL_INCOMPLETE_RESULTS), 0);
  prepared_free(&p);
}

/* ------------------------------------------------------------------------ */
/* 4. Destroy while background tuning runs                                  */
/* ------------------------------------------------------------------------ */

/* Bucket 2 (4096 tokens), big enough that tuning takes a while. */
static const shape BG_SHAPES[2] = {
    {KDA_DTYPE_BF16, 16, 128, 64, KDA_GATE_SOFTPLUS, 1, 1, 0, 0, 1, 4096, NULL, 0, KDA_DTYPE_I32},
    {KDA_DTYPE_BF16, 16, 128, 32, KDA_GATE_SOFTPLUS, 1, 1, 0, 1, 1, 4096, NULL, 0, KDA_DTYPE_I32},
};

static void destroy_during_background_tuning_is_bounded_and_leaves_whole_rows(void **state) {
  (void)state;
  const double budget = 1000.0;
  prepared p[2];
  for (int k = 0; k < 2; ++k) prepare(&BG_SHAPES[k], 0xb6 + (uint64_t)k, &p[k]);
  float *host = malloc(p[0].n * sizeof(float));
  /* Destroy at several moments of the first job (compile, timing, persist)
   * while the second waits in the queue. */
  const int delays_ms[] = {0, 250, 700};
  for (int d = 0; d < 3; ++d) {
    char db[256];
    temp_db(db, sizeof db);
    kda_context *ctx = context(db, KDA_TUNE_BACKGROUND, budget);
    for (int k = 0; k < 2; ++k) {
      const double t = now_ms();
      assert_int_equal(run_checked(ctx, &p[k], NULL, host), 0); /* the heuristic, at once */
      printf("  cold call %d (heuristic): %.0f ms\n", k, now_ms() - t);
    }
    usleep((useconds_t)delays_ms[d] * 1000u);
    const kda_stats s = stats_of(ctx);
    const double t0 = now_ms();
    kda_context_destroy(ctx);
    const double destroy_ms = now_ms() - t0;
    struct stat sb;
    const int exists = stat(db, &sb) == 0;
    char check[64] = "no file";
    long long rows = 0;
    if (exists) {
      sql_text(db, "PRAGMA integrity_check", check, sizeof check);
      rows = sql_int(db, "SELECT count(*) FROM results");
    }
    printf("destroy after %d ms: %.0f ms (background_jobs=%llu tuning_runs=%llu before it); "
           "database: %s, %lld result rows\n",
           delays_ms[d], destroy_ms, (unsigned long long)s.background_jobs,
           (unsigned long long)s.tuning_runs, check, rows);
    /* The run in progress ends within its budget (NVRTC included, with
     * slack for a loaded machine); the queued job is dropped. */
    assert_true(destroy_ms < 3.0 * budget + 5000.0);
    if (!exists) continue;
    assert_string_equal(check, "ok");
    assert_int_equal(sql_int(db, SQL_INCOMPLETE_RESULTS), 0);
    assert_int_equal(sql_int(db, "SELECT count(*) FROM leases WHERE expires_at > 0"), 0);
    /* A row present is whole enough to serve: a cached-mode context loads
     * it (without tuning) and computes the right output; absent, it runs
     * the heuristic. Each row is one of the two specializations. */
    uint64_t hits = 0;
    for (int k = 0; k < 2; ++k) {
      kda_context *c2 = context(db, KDA_TUNE_CACHED, budget);
      assert_int_equal(run_checked(c2, &p[k], NULL, host), 0);
      const kda_stats s2 = stats_of(c2);
      kda_context_destroy(c2);
      assert_int_equal(s2.tuning_runs, 0);
      hits += s2.db_result_hits;
    }
    assert_int_equal(hits, rows);
    assert_int_equal(sql_int(db, "SELECT count(*) FROM results"), rows);
  }
  free(host);
  for (int k = 0; k < 2; ++k) prepared_free(&p[k]);
}

int main(void) {
  g_drv = gu_require_gpu("test_gpu_server");
  if (g_drv->cuCtxGetCurrent(&g_cu) != CUDA_SUCCESS || g_cu == NULL) return 1;
  /* The tests set the mode and the identity themselves. */
  unsetenv("KDA_TUNE");
  unsetenv("KDA_TEST_GPU_IDENTITY");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(sixteen_threads_tune_eight_cold_specializations_once_each),
      cmocka_unit_test(whole_varlen_layer_replays_from_one_captured_graph),
      cmocka_unit_test(cold_work_beside_another_threads_capture_leaves_it_whole),
      cmocka_unit_test(two_gpu_models_in_one_database_never_share_a_row),
      cmocka_unit_test(destroy_during_background_tuning_is_bounded_and_leaves_whole_rows),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
