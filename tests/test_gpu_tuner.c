/* The autotuner on a real GPU: a cold specialization tunes once and
 * persists; later contexts and processes load the stored cubin without
 * NVRTC or timing and compute bit-identical output; eight processes racing
 * on a cold key tune it once; an injected wrong candidate is rejected; a
 * tampered cubin is recompiled; OFF touches no database; CACHED never
 * tunes. Every output is checked against the float64 reference.
 * Skips (exit 77) without a GPU.
 *
 * `test_gpu_tuner child DB OUT` is the child process: one call of the
 * test's shape with database DB; the output goes to OUT and the counters
 * to OUT.txt. */
#include <math.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "gpu_util.h"
#include "kda/kda.h"
#include "reference.h"
#include "spec.h"
#include "test_util.h"
#include "tuner.h"

extern char **environ;

#define B 2
#define T 1000
#define H 16
#define K 64
#define N ((size_t)B * T * H * K)

static const kda__driver *g_drv;
static char g_self[4096];

typedef struct shape_data {
  float *g_host, alog[H], bias[H * K];
  double *g_d, *ref;
  void *d_g, *d_out, *d_alog, *d_bias;
} shape_data;

static shape_data g_data;

static kda_gate_args shape_args(void) {
  kda_gate_args a = kda_gate_args_default();
  a.batch = B;
  a.seq_len = T;
  a.num_heads = H;
  a.head_dim = K;
  a.chunk_size = 64;
  a.gate = KDA_GATE_SOFTPLUS;
  return a;
}

/* Deterministic inputs (same in every process) and the reference. */
static void make_data(shape_data *s) {
  tu_rng rng;
  tu_rng_seed(&rng, 0x7e57u);
  s->g_host = malloc(N * sizeof(float));
  s->g_d = malloc(N * sizeof(double));
  s->ref = malloc(N * sizeof(double));
  tu_fill_random_input(&rng, KDA_DTYPE_F32, s->g_host, s->g_d, N, 1.0);
  for (int h = 0; h < H; ++h) s->alog[h] = (float)log(1.0 + 15.0 * tu_uniform(&rng));
  for (int i = 0; i < H * K; ++i) s->bias[i] = (float)tu_normal(&rng);
  kda_gate_args a = shape_args();
  a.A_log = s->alog;
  a.dt_bias = s->bias;
  if (kda_ref_gate_chunk_cumsum(&a, s->g_d, s->ref) != 0) abort();
  s->d_g = gu_upload(s->g_host, N * sizeof(float));
  s->d_out = gu_alloc(N * sizeof(float));
  s->d_alog = gu_upload(s->alog, sizeof s->alog);
  s->d_bias = gu_upload(s->bias, sizeof s->bias);
}

static kda_context *context(const char *db, int mode) {
  kda_options o = kda_options_default();
  o.db_path = db;
  o.tune_mode = mode;
  kda_context *ctx = NULL;
  if (kda_context_create(&o, &ctx) != KDA_OK) {
    fprintf(stderr, "kda_context_create: %s\n", kda_last_error());
    return NULL;
  }
  return ctx;
}

/* One call into a NaN-poisoned output; returns the output (malloc'd). */
static float *run_once(kda_context *ctx, kda_stats *stats) {
  gu_poison(g_data.d_out, N * sizeof(float), 0x7fc00000u);
  kda_gate_args a = shape_args();
  a.g = g_data.d_g;
  a.out = g_data.d_out;
  a.A_log = g_data.d_alog;
  a.dt_bias = g_data.d_bias;
  kda_status st = kda_gate_chunk_cumsum(ctx, &a, NULL);
  if (st != KDA_OK) {
    fprintf(stderr, "kda_gate_chunk_cumsum: %s\n", kda_last_error());
    return NULL;
  }
  float *out = malloc(N * sizeof(float));
  gu_download(out, g_data.d_out, N * sizeof(float));
  stats->struct_size = sizeof *stats;
  kda_context_get_stats(ctx, stats);
  return out;
}

static void check_reference(const float *out) {
  double max_err = 0;
  size_t bad = tu_check_close(out, g_data.ref, N, 2e-5, &max_err, NULL);
  if (bad) fprintf(stderr, "%zu elements outside 2e-5 (max rel err %.3g)\n", bad, max_err);
  assert_int_equal(bad, 0);
}

static void temp_db(char *path, size_t n) {
  char dir[] = "/tmp/kda_gpu_tuner_XXXXXX";
  assert_non_null(mkdtemp(dir));
  snprintf(path, n, "%s/tune.db", dir);
}

static int64_t sql_int(const char *db, const char *sql) {
  sqlite3 *h = NULL;
  int64_t v = -1;
  if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK) {
    sqlite3_busy_timeout(h, 5000);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
      v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
  }
  sqlite3_close(h);
  return v;
}

static void sql_exec(const char *db, const char *sql) {
  sqlite3 *h = NULL;
  assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
  sqlite3_busy_timeout(h, 5000);
  char *err = NULL;
  int rc = sqlite3_exec(h, sql, NULL, NULL, &err);
  if (rc != SQLITE_OK) fprintf(stderr, "%s: %s\n", sql, err ? err : "?");
  sqlite3_free(err);
  sqlite3_close(h);
  assert_int_equal(rc, SQLITE_OK);
}

static void print_stats(const char *what, const kda_stats *s) {
  printf("%s: tuning_runs=%llu nvrtc=%llu db_result_hits=%llu db_cubin_hits=%llu rejected=%llu "
         "compile=%.0f ms tune=%.0f ms\n",
         what, (unsigned long long)s->tuning_runs, (unsigned long long)s->nvrtc_compiles,
         (unsigned long long)s->db_result_hits, (unsigned long long)s->db_cubin_hits,
         (unsigned long long)s->rejected_candidates, s->compile_ms_total, s->tune_ms_total);
}

/* KDA_TUNE_BACKGROUND: the cold call runs at once with the heuristic (no
 * tuning in the caller's thread), the worker tunes and installs the winner,
 * later calls use it; destroying a context while its worker tunes is clean. */
static void background_mode_tunes_off_the_callers_thread_then_switches(void **state) {
  (void)state;
  char db[256];
  temp_db(db, sizeof db);
  kda_context *ctx = context(db, KDA_TUNE_BACKGROUND);
  assert_non_null(ctx);
  kda_stats s1;
  float *first = run_once(ctx, &s1);
  assert_non_null(first);
  check_reference(first);
  print_stats("background, first call", &s1);
  kda_stats s = {.struct_size = sizeof s};
  for (int i = 0; i < 3000; ++i) { /* up to 30 s */
    kda_context_get_stats(ctx, &s);
    if (s.background_jobs >= 1) break;
    usleep(10000);
  }
  print_stats("background, after the worker", &s);
  assert_int_equal(s.background_jobs, 1);
  assert_int_equal(s.tuning_runs, 1);
  assert_true(s.db_result_hits >= 1); /* the worker installed the stored winner */
  const uint64_t hits = s.cache_hits;
  kda_stats s2;
  float *second = run_once(ctx, &s2);
  assert_non_null(second);
  check_reference(second);
  assert_true(s2.cache_hits > hits); /* served from the installed slot */
  assert_int_equal(s2.tuning_runs, 1);
  assert_int_equal(sql_int(db, "SELECT count(*) FROM results"), 1);
  kda_context_destroy(ctx);
  free(first);
  free(second);

  /* Destroy right after the cold call, while the worker compiles. */
  temp_db(db, sizeof db);
  ctx = context(db, KDA_TUNE_BACKGROUND);
  kda_stats s3;
  float *third = run_once(ctx, &s3);
  assert_non_null(third);
  check_reference(third);
  kda_context_destroy(ctx);
  free(third);
}

static void cold_call_tunes_persists_and_warm_contexts_reuse_it(void **state) {
  (void)state;
  char db[256];
  temp_db(db, sizeof db);
  kda_context *ctx = context(db, KDA_TUNE_ON);
  assert_non_null(ctx);
  kda_stats s1;
  float *first = run_once(ctx, &s1);
  assert_non_null(first);
  print_stats("cold", &s1);
  assert_int_equal(s1.tuning_runs, 1);
  assert_int_equal(s1.nvrtc_compiles, 1);
  check_reference(first);
  /* A second call is a memory hit. */
  kda_stats s1b;
  float *again = run_once(ctx, &s1b);
  assert_int_equal(s1b.tuning_runs, 1);
  assert_int_equal(s1b.nvrtc_compiles, 1);
  assert_memory_equal(first, again, N * sizeof(float));
  free(again);
  kda_context_destroy(ctx);
  assert_int_equal(sql_int(db, "SELECT count(*) FROM results"), 1);
  assert_true(sql_int(db, "SELECT count(*) FROM trials") >= 1);
  assert_int_equal(sql_int(db, "SELECT count(*) FROM cubins"), 1);

  /* A fresh context: no NVRTC, no tuning, the same bits. */
  ctx = context(db, KDA_TUNE_ON);
  kda_stats s2;
  float *second = run_once(ctx, &s2);
  assert_non_null(second);
  print_stats("warm context", &s2);
  assert_int_equal(s2.tuning_runs, 0);
  assert_int_equal(s2.nvrtc_compiles, 0);
  assert_int_equal(s2.db_result_hits, 1);
  assert_int_equal(s2.db_cubin_hits, 1);
  assert_memory_equal(first, second, N * sizeof(float));
  kda_context_destroy(ctx);

  /* A fresh process. */
  char out[300], txt[400];
  snprintf(out, sizeof out, "%s.child.bin", db);
  char *argv[] = {g_self, "child", db, out, NULL};
  pid_t pid;
  assert_int_equal(posix_spawn(&pid, g_self, NULL, NULL, argv, environ), 0);
  int status = 0;
  waitpid(pid, &status, 0);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  snprintf(txt, sizeof txt, "%.300s.txt", out);
  FILE *f = fopen(txt, "r");
  assert_non_null(f);
  unsigned long long tr = 9, nv = 9;
  double warm_ms = -1;
  assert_int_equal(fscanf(f, "tuning_runs=%llu nvrtc=%llu warm_ms=%lf", &tr, &nv, &warm_ms), 3);
  fclose(f);
  printf("fresh process: context creation to first kernel finished: %.1f ms\n", warm_ms);
  assert_int_equal(tr, 0);
  assert_int_equal(nv, 0);
  struct stat sb;
  assert_int_equal(stat(db, &sb), 0);
  printf("database: %lld bytes file, cubin blob %lld bytes, %lld trials for one specialization\n",
         (long long)sb.st_size, (long long)sql_int(db, "SELECT sum(length(blob)) FROM cubins"),
         (long long)sql_int(db, "SELECT count(*) FROM trials"));
  float *child = malloc(N * sizeof(float));
  f = fopen(out, "rb");
  assert_non_null(f);
  assert_int_equal(fread(child, sizeof(float), N, f), N);
  fclose(f);
  assert_memory_equal(first, child, N * sizeof(float));
  free(child);
  free(first);
  free(second);
}

static void eight_processes_tune_a_cold_key_once(void **state) {
  (void)state;
  char db[256];
  temp_db(db, sizeof db);
  enum { P = 8 };
  pid_t pids[P];
  char outs[P][300];
  for (int i = 0; i < P; ++i) {
    snprintf(outs[i], sizeof outs[i], "%s.child%d.bin", db, i);
    char *argv[] = {g_self, "child", db, outs[i], NULL};
    assert_int_equal(posix_spawn(&pids[i], g_self, NULL, NULL, argv, environ), 0);
  }
  unsigned long long tuning = 0, compiles = 0;
  float *first = NULL, *buf = malloc(N * sizeof(float));
  for (int i = 0; i < P; ++i) {
    int status = 0;
    waitpid(pids[i], &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    char txt[400];
    snprintf(txt, sizeof txt, "%.300s.txt", outs[i]);
    FILE *f = fopen(txt, "r");
    assert_non_null(f);
    unsigned long long tr = 0, nv = 0;
    assert_int_equal(fscanf(f, "tuning_runs=%llu nvrtc=%llu", &tr, &nv), 2);
    fclose(f);
    printf("child %d: tuning_runs=%llu nvrtc=%llu\n", i, tr, nv);
    tuning += tr;
    compiles += nv;
    f = fopen(outs[i], "rb");
    assert_non_null(f);
    assert_int_equal(fread(buf, sizeof(float), N, f), N);
    fclose(f);
    if (first == NULL) {
      first = buf;
      buf = malloc(N * sizeof(float));
      check_reference(first);
    } else {
      assert_memory_equal(first, buf, N * sizeof(float));
    }
  }
  assert_int_equal(tuning, 1);
  assert_int_equal(sql_int(db, "SELECT count(*) FROM results"), 1);
  assert_int_equal(sql_int(db, "SELECT count(*) FROM leases WHERE expires_at > 0"), 0);
  free(first);
  free(buf);
}

/* A legal config of the test's shape other than the heuristic. */
static kda__config non_heuristic_config(void) {
  kda__spec s;
  memset(&s, 0, sizeof s);
  s.kernel = KDA__KERNEL_GATE_CUMSUM;
  s.in_dtype = s.out_dtype = KDA_DTYPE_F32;
  s.heads = H;
  s.head_dim = K;
  s.chunk = 64;
  s.cumsum = 1;
  s.gate = KDA_GATE_SOFTPLUS;
  s.has_alog = s.has_bias = 1;
  s.idx_dtype = KDA_DTYPE_I32;
  kda__config h = kda__config_heuristic(&s);
  s.tuned = 1;
  s.vec_cap = 8;
  static kda__config space[KDA__TUNE_SPACE_MAX];
  size_t hid;
  size_t n = kda__tune_space(&s, h, space, KDA__TUNE_SPACE_MAX, &hid);
  for (size_t i = 0; i < n; ++i)
    if (i != hid && space[i].vec == h.vec) return space[i];
  return space[hid == 0 ? 1 : 0];
}

/* KDA_TEST_WRONG_CONFIG makes the tuning run corrupt one candidate's output
 * (form "": wrong values; "unwritten": elements left as the poison): the
 * candidate is rejected with that status and never stored as the result. */
static void injected_candidate_is_rejected(const char *form, const char *status) {
  char db[256];
  temp_db(db, sizeof db);
  kda__config bad = non_heuristic_config();
  char hook[64], text[64];
  snprintf(hook, sizeof hook, "%d,%d,%d%s%s", bad.vec, bad.tx, bad.seg, *form ? "," : "", form);
  kda__config_text(&bad, text, sizeof text);
  setenv("KDA_TEST_WRONG_CONFIG", hook, 1);
  kda_context *ctx = context(db, KDA_TUNE_ON);
  kda_stats s;
  float *out = run_once(ctx, &s);
  unsetenv("KDA_TEST_WRONG_CONFIG");
  assert_non_null(out);
  print_stats(*form ? form : "wrong candidate", &s);
  assert_int_equal(s.tuning_runs, 1);
  assert_true(s.rejected_candidates >= 1);
  check_reference(out);
  kda_context_destroy(ctx);
  char sql[256];
  snprintf(sql, sizeof sql, "SELECT count(*) FROM trials WHERE config = '%s' AND status = '%s'",
           text, status);
  assert_int_equal(sql_int(db, sql), 1);
  snprintf(sql, sizeof sql, "SELECT count(*) FROM results WHERE config = '%s'", text);
  assert_int_equal(sql_int(db, sql), 0);
  assert_int_equal(sql_int(db, "SELECT count(*) FROM results"), 1);
  free(out);
}

static void injected_wrong_candidate_is_rejected_and_never_wins(void **state) {
  (void)state;
  injected_candidate_is_rejected("", "wrong_result");
}

/* Unwritten elements are counted apart from wrong ones (tune_compare.cuh):
 * without that count a candidate that skips elements would pass, since the
 * poison is NaN and compares as neither close nor far. */
static void injected_unwriting_candidate_is_rejected(void **state) {
  (void)state;
  injected_candidate_is_rejected("unwritten", "unwritten");
}

static void tampered_cubin_is_recompiled_and_stored_again(void **state) {
  (void)state;
  char db[256];
  temp_db(db, sizeof db);
  kda_context *ctx = context(db, KDA_TUNE_ON);
  kda_stats s;
  float *first = run_once(ctx, &s);
  assert_non_null(first);
  kda_context_destroy(ctx);
  sql_exec(db, "UPDATE cubins SET blob = zeroblob(length(blob))");
  ctx = context(db, KDA_TUNE_ON);
  float *second = run_once(ctx, &s);
  assert_non_null(second);
  print_stats("tampered", &s);
  assert_int_equal(s.tuning_runs, 0);
  assert_int_equal(s.db_result_hits, 1);
  assert_int_equal(s.db_cubin_hits, 0);
  assert_int_equal(s.nvrtc_compiles, 1);
  assert_memory_equal(first, second, N * sizeof(float));
  kda_context_destroy(ctx);
  /* Stored again: the next context compiles nothing. */
  ctx = context(db, KDA_TUNE_ON);
  float *third = run_once(ctx, &s);
  assert_int_equal(s.nvrtc_compiles, 0);
  assert_int_equal(s.db_cubin_hits, 1);
  assert_memory_equal(first, third, N * sizeof(float));
  kda_context_destroy(ctx);
  free(first);
  free(second);
  free(third);
}

static void mode_off_does_not_touch_the_database(void **state) {
  (void)state;
  char db[256];
  temp_db(db, sizeof db);
  kda_context *ctx = context(db, KDA_TUNE_OFF);
  kda_stats s;
  float *out = run_once(ctx, &s);
  assert_non_null(out);
  assert_int_equal(s.tuning_runs, 0);
  assert_int_equal(s.nvrtc_compiles, 1);
  check_reference(out);
  assert_string_equal(kda_context_db_path(ctx), "");
  kda_context_destroy(ctx);
  struct stat st;
  assert_int_equal(stat(db, &st), -1);
  free(out);
}

static void mode_cached_never_tunes(void **state) {
  (void)state;
  char db[256];
  temp_db(db, sizeof db);
  kda_context *ctx = context(db, KDA_TUNE_CACHED);
  kda_stats s;
  float *out = run_once(ctx, &s);
  assert_non_null(out);
  assert_int_equal(s.tuning_runs, 0);
  check_reference(out);
  kda_context_destroy(ctx);
  assert_int_equal(sql_int(db, "SELECT count(*) FROM results"), 0);
  /* With a winner stored (by an ON context), CACHED uses it. */
  ctx = context(db, KDA_TUNE_ON);
  free(run_once(ctx, &s));
  assert_int_equal(s.tuning_runs, 1);
  kda_context_destroy(ctx);
  ctx = context(db, KDA_TUNE_CACHED);
  free(run_once(ctx, &s));
  assert_int_equal(s.tuning_runs, 0);
  assert_int_equal(s.db_result_hits, 1);
  assert_int_equal(s.nvrtc_compiles, 0);
  kda_context_destroy(ctx);
  free(out);
}

static void prewarm_tunes_then_skips(void **state) {
  (void)state;
  char db[256];
  temp_db(db, sizeof db);
  kda_context *ctx = context(db, KDA_TUNE_ON);
  kda_gate_args shape = shape_args();
  shape.A_log = (const float *)1; /* present */
  kda_prewarm_result r = {.struct_size = sizeof r};
  GU_CHECK(kda_prewarm(ctx, KDA_KERNEL_GATE_CHUNK_CUMSUM, &shape, 0, &r));
  printf("prewarm: outcome=%d config=%s median=%.2f us heuristic=%.2f us compile=%.0f ms "
         "tune=%.0f ms candidates=%d rejected=%d bucket=%d\n",
         r.outcome, r.config, r.median_us, r.heuristic_us, r.compile_ms, r.tune_ms, r.candidates,
         r.rejected, r.bucket);
  assert_int_equal(r.outcome, KDA_PREWARM_TUNED);
  assert_true(r.median_us > 0 && r.candidates >= 1);
  GU_CHECK(kda_prewarm(ctx, KDA_KERNEL_GATE_CHUNK_CUMSUM, &shape, 0, &r));
  assert_int_equal(r.outcome, KDA_PREWARM_SKIPPED);
  kda_context_destroy(ctx);
  /* The row says where it was tuned: this machine, its driver, prewarm. */
  char host[64];
  assert_int_equal(gethostname(host, sizeof host), 0);
  host[sizeof host - 1] = '\0';
  char sql[320];
  /* The driver's release where the kernel module says it ("580.159.04
   * (CUDA 13.0)"), else the CUDA version alone. */
  const int release = access("/proc/driver/nvidia/version", R_OK) == 0;
  snprintf(sql, sizeof sql, "SELECT count(*) FROM results WHERE host = '%s' AND source ="
           " 'kda_prewarm' AND driver GLOB '%s'", host,
           release ? "[0-9]*.[0-9]* (CUDA [0-9]*.[0-9]*)" : "CUDA [0-9]*.[0-9]*");
  assert_int_equal(sql_int(db, sql), 1);
}

/* A view: prewarm given g 2 floats and out 8 floats past aligned addresses
 * tunes the view's key (veccap=2: no candidate wider) on inputs at those
 * offsets, and skips it the second time; a call on such a view in a fresh
 * cached context then reads that row and its cubin (no tuning, no NVRTC)
 * and writes the reference's values, and nothing around them. */
static void prewarm_of_a_view_then_a_call_on_the_view_uses_its_row(void **state) {
  (void)state;
  char db[256];
  temp_db(db, sizeof db);
  kda_context *ctx = context(db, KDA_TUNE_ON);
  assert_non_null(ctx);
  kda_gate_args shape = shape_args();
  shape.A_log = (const float *)1;
  shape.dt_bias = (const float *)1;
  shape.g = (const void *)(uintptr_t)8;
  shape.out = (void *)(uintptr_t)32;
  kda_prewarm_result r = {.struct_size = sizeof r};
  GU_CHECK(kda_prewarm(ctx, KDA_KERNEL_GATE_CHUNK_CUMSUM, &shape, 0, &r));
  printf("view prewarm: outcome=%d config=%s median=%.2f us candidates=%d\n", r.outcome,
         r.config, r.median_us, r.candidates);
  assert_int_equal(r.outcome, KDA_PREWARM_TUNED);
  assert_true(strncmp(r.config, "vec=1,", 6) == 0 || strncmp(r.config, "vec=2,", 6) == 0);
  assert_int_equal(sql_int(db, "SELECT count(*) FROM results WHERE spec LIKE '% veccap=2'"), 1);
  assert_int_equal(sql_int(db, "SELECT count(*) FROM results"), 1);
  GU_CHECK(kda_prewarm(ctx, KDA_KERNEL_GATE_CHUNK_CUMSUM, &shape, 0, &r));
  assert_int_equal(r.outcome, KDA_PREWARM_SKIPPED);
  kda_context_destroy(ctx);

  char *g_big = gu_alloc(N * sizeof(float) + 256), *o_big = gu_alloc(N * sizeof(float) + 256);
  gu_copy_to(g_big + 8, g_data.g_host, N * sizeof(float));
  gu_poison(o_big, N * sizeof(float) + 256, 0x7fc00000u);
  kda_gate_args a = shape_args();
  a.g = g_big + 8;
  a.out = o_big + 32;
  a.A_log = g_data.d_alog;
  a.dt_bias = g_data.d_bias;
  ctx = context(db, KDA_TUNE_CACHED);
  assert_non_null(ctx);
  GU_CHECK(kda_gate_chunk_cumsum(ctx, &a, NULL));
  float *all = malloc(N * sizeof(float) + 256);
  gu_download(all, o_big, N * sizeof(float) + 256);
  kda_stats s = {.struct_size = sizeof s};
  kda_context_get_stats(ctx, &s);
  print_stats("call on the view after prewarm", &s);
  assert_int_equal(s.tuning_runs, 0);
  assert_int_equal(s.db_result_hits, 1);
  assert_int_equal(s.nvrtc_compiles, 0);
  check_reference(all + 8);
  for (size_t i = 0; i < 8; ++i) assert_true(isnan(all[i]));
  for (size_t i = 8 + N; i < N + 64; ++i) assert_true(isnan(all[i]));
  free(all);
  kda_context_destroy(ctx);
  gu_free(g_big);
  gu_free(o_big);
}

/* A varlen batch with its rows in the launch (cu_seqlens_host): prewarm
 * tunes that specialization (the database row says varlen=2), and a call
 * with a ragged batch of the same size then finds it: no NVRTC, no tuning,
 * no chunk table, the reference's values. The input is g_data's [B*T, H, K]
 * buffer read as one packed batch. */
static void host_rows_prewarm_then_call_uses_the_tuned_row(void **state) {
  (void)state;
  char db[256];
  temp_db(db, sizeof db);
  kda_context *ctx = context(db, KDA_TUNE_ON);
  assert_non_null(ctx);
  enum { NS = 5 };
  const int32_t cu[NS + 1] = {0, 100, 100, 877, 1900, B * T}; /* one empty sequence */
  kda_gate_args shape = shape_args();
  shape.batch = 1;
  shape.seq_len = B * T;
  shape.num_seqs = NS;
  shape.A_log = (const float *)1;
  shape.dt_bias = (const float *)1;
  shape.cu_seqlens_host = (const void *)1; /* "the host-rows specialization", not read */
  kda_prewarm_result r = {.struct_size = sizeof r};
  GU_CHECK(kda_prewarm(ctx, KDA_KERNEL_GATE_CHUNK_CUMSUM, &shape, 0, &r));
  printf("host-rows prewarm: outcome=%d config=%s median=%.2f us candidates=%d bucket=%d\n",
         r.outcome, r.config, r.median_us, r.candidates, r.bucket);
  assert_int_equal(r.outcome, KDA_PREWARM_TUNED);
  assert_int_equal(sql_int(db, "SELECT count(*) FROM results WHERE spec LIKE '% varlen=2 %'"), 1);

  kda_gate_args a = shape_args();
  a.batch = 1;
  a.seq_len = B * T;
  a.g = g_data.d_g;
  a.out = g_data.d_out;
  a.A_log = g_data.d_alog;
  a.dt_bias = g_data.d_bias;
  void *d_cu = gu_upload(cu, sizeof cu);
  a.cu_seqlens = d_cu;
  a.num_seqs = NS;
  a.cu_seqlens_host = cu;
  kda_stats before = {.struct_size = sizeof before}, after = {.struct_size = sizeof after};
  kda_context_get_stats(ctx, &before);
  gu_poison(g_data.d_out, N * sizeof(float), 0x7fc00000u);
  GU_CHECK(kda_gate_chunk_cumsum(ctx, &a, NULL));
  float *out = malloc(N * sizeof(float));
  gu_download(out, g_data.d_out, N * sizeof(float));
  kda_context_get_stats(ctx, &after);
  print_stats("host-rows call after prewarm", &after);
  assert_int_equal(after.tuning_runs, before.tuning_runs);
  assert_int_equal(after.nvrtc_compiles, before.nvrtc_compiles);
  /* The reference of the same packed batch. */
  kda_gate_args h = a;
  h.A_log = g_data.alog;
  h.dt_bias = g_data.bias;
  h.cu_seqlens = cu;
  double *ref = malloc(N * sizeof(double));
  assert_int_equal(kda_ref_gate_chunk_cumsum(&h, g_data.g_d, ref), 0);
  double max_err = 0;
  size_t bad = tu_check_close(out, ref, N, 2e-5, &max_err, NULL);
  if (bad) fprintf(stderr, "%zu elements outside 2e-5 (max rel err %.3g)\n", bad, max_err);
  assert_int_equal(bad, 0);
  free(ref);
  free(out);
  gu_free(d_cu);
  kda_context_destroy(ctx);
}

/* The same for the chunk-plan specialization (varlen mode 3): prewarm
 * builds its own plan; a call with a real plan then neither tunes nor
 * compiles (its plan's builder compiles when the plan is built). */
static void chunk_plan_prewarm_then_call_uses_the_tuned_row(void **state) {
  (void)state;
  char db[256];
  temp_db(db, sizeof db);
  kda_context *ctx = context(db, KDA_TUNE_ON);
  assert_non_null(ctx);
  enum { NS = 5 };
  const int32_t cu[NS + 1] = {0, 100, 100, 877, 1900, B * T}; /* one empty sequence */
  kda_gate_args shape = shape_args();
  shape.batch = 1;
  shape.seq_len = B * T;
  shape.num_seqs = NS;
  shape.A_log = (const float *)1;
  shape.dt_bias = (const float *)1;
  shape.chunk_plan = (const kda_chunk_plan *)1; /* "the chunk-plan specialization", not read */
  kda_prewarm_result r = {.struct_size = sizeof r};
  GU_CHECK(kda_prewarm(ctx, KDA_KERNEL_GATE_CHUNK_CUMSUM, &shape, 0, &r));
  printf("chunk-plan prewarm: outcome=%d config=%s median=%.2f us candidates=%d bucket=%d\n",
         r.outcome, r.config, r.median_us, r.candidates, r.bucket);
  assert_int_equal(r.outcome, KDA_PREWARM_TUNED);
  assert_int_equal(sql_int(db, "SELECT count(*) FROM results WHERE spec LIKE '% varlen=3 %'"), 1);

  void *d_cu = gu_upload(cu, sizeof cu);
  kda_chunk_plan *plan = NULL;
  GU_CHECK(kda_chunk_plan_create(ctx, B * T, NS, 64, &plan));
  GU_CHECK(kda_chunk_plan_build(plan, d_cu, KDA_DTYPE_I32, NS, B * T, NULL));
  kda_gate_args a = shape_args();
  a.batch = 1;
  a.seq_len = B * T;
  a.g = g_data.d_g;
  a.out = g_data.d_out;
  a.A_log = g_data.d_alog;
  a.dt_bias = g_data.d_bias;
  a.num_seqs = NS;
  a.chunk_plan = plan;
  kda_stats before = {.struct_size = sizeof before}, after = {.struct_size = sizeof after};
  kda_context_get_stats(ctx, &before);
  gu_poison(g_data.d_out, N * sizeof(float), 0x7fc00000u);
  GU_CHECK(kda_gate_chunk_cumsum(ctx, &a, NULL));
  float *out = malloc(N * sizeof(float));
  gu_download(out, g_data.d_out, N * sizeof(float));
  kda_context_get_stats(ctx, &after);
  print_stats("chunk-plan call after prewarm", &after);
  assert_int_equal(after.tuning_runs, before.tuning_runs);
  assert_int_equal(after.nvrtc_compiles, before.nvrtc_compiles);
  kda_gate_args h = a;
  h.A_log = g_data.alog;
  h.dt_bias = g_data.bias;
  h.cu_seqlens = cu;
  h.chunk_plan = NULL;
  double *ref = malloc(N * sizeof(double));
  assert_int_equal(kda_ref_gate_chunk_cumsum(&h, g_data.g_d, ref), 0);
  double max_err = 0;
  size_t bad = tu_check_close(out, ref, N, 2e-5, &max_err, NULL);
  if (bad) fprintf(stderr, "%zu elements outside 2e-5 (max rel err %.3g)\n", bad, max_err);
  assert_int_equal(bad, 0);
  free(ref);
  free(out);
  kda_chunk_plan_destroy(plan);
  gu_free(d_cu);
  kda_context_destroy(ctx);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int child_main(const char *db, const char *out_path) {
  gu_require_gpu("test_gpu_tuner child");
  make_data(&g_data);
  const double t0 = now_ms();
  kda_context *ctx = context(db, KDA_TUNE_ON);
  if (ctx == NULL) return 2;
  kda_stats s;
  float *out = run_once(ctx, &s); /* includes the download's synchronisation */
  const double warm_ms = now_ms() - t0;
  if (out == NULL) return 3;
  FILE *f = fopen(out_path, "wb");
  if (f == NULL || fwrite(out, sizeof(float), N, f) != N) return 4;
  fclose(f);
  char txt[4200];
  snprintf(txt, sizeof txt, "%s.txt", out_path);
  f = fopen(txt, "w");
  if (f == NULL) return 5;
  fprintf(f, "tuning_runs=%llu nvrtc=%llu warm_ms=%.3f\n", (unsigned long long)s.tuning_runs,
          (unsigned long long)s.nvrtc_compiles, warm_ms);
  fclose(f);
  kda_context_destroy(ctx);
  return 0;
}

typedef struct graph_log {
  int tuned;  /* "tuned [...]" lines seen */
  int graphs; /* their "N timings as captured graphs", summed */
} graph_log;

static void grab_graph_log(void *user, kda_log_level level, const char *message) {
  graph_log *g = user;
  const char *p = strstr(message, " timings as captured graphs");
  if (level != KDA_LOG_INFO || strncmp(message, "tuned [", 7) != 0 || p == NULL) return;
  while (p > message && p[-1] >= '0' && p[-1] <= '9') --p;
  g->tuned++;
  g->graphs += atoi(p);
}

/* A short kernel is timed as a captured graph of launches (as kda-bench and
 * a server's graphs run it), not as a stream paced by the host's launches;
 * the winner is still checked against float64 like any other. */
static void short_candidates_are_timed_as_captured_graphs(void **state) {
  (void)state;
  char db[256];
  temp_db(db, sizeof db);
  graph_log g = {0, 0};
  kda_options o = kda_options_default();
  o.db_path = db;
  o.tune_mode = KDA_TUNE_ON;
  o.log_fn = grab_graph_log;
  o.log_user = &g;
  o.log_level = KDA_LOG_INFO;
  kda_context *ctx = NULL;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  kda_stats s;
  float *out = run_once(ctx, &s);
  assert_non_null(out);
  check_reference(out);
  free(out);
  assert_int_equal((int)s.tuning_runs, 1);
  printf("tuning run: %d timings as captured graphs\n", g.graphs);
  assert_int_equal(g.tuned, 1);
  assert_true(g.graphs >= 1);
  kda_context_destroy(ctx);
  unlink(db);
}

int main(int argc, char **argv) {
  ssize_t n = readlink("/proc/self/exe", g_self, sizeof g_self - 1);
  if (n <= 0) return 1;
  g_self[n] = '\0';
  if (argc == 4 && strcmp(argv[1], "child") == 0) return child_main(argv[2], argv[3]);
  g_drv = gu_require_gpu("test_gpu_tuner");
  /* The tests set the mode themselves. */
  unsetenv("KDA_TUNE");
  make_data(&g_data);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(cold_call_tunes_persists_and_warm_contexts_reuse_it),
      cmocka_unit_test(eight_processes_tune_a_cold_key_once),
      cmocka_unit_test(injected_wrong_candidate_is_rejected_and_never_wins),
      cmocka_unit_test(injected_unwriting_candidate_is_rejected),
      cmocka_unit_test(tampered_cubin_is_recompiled_and_stored_again),
      cmocka_unit_test(mode_off_does_not_touch_the_database),
      cmocka_unit_test(mode_cached_never_tunes),
      cmocka_unit_test(prewarm_tunes_then_skips),
      cmocka_unit_test(prewarm_of_a_view_then_a_call_on_the_view_uses_its_row),
      cmocka_unit_test(host_rows_prewarm_then_call_uses_the_tuned_row),
      cmocka_unit_test(chunk_plan_prewarm_then_call_uses_the_tuned_row),
      cmocka_unit_test(background_mode_tunes_off_the_callers_thread_then_switches),
      cmocka_unit_test(short_candidates_are_timed_as_captured_graphs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
