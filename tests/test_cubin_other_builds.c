/* Stored cubins that another NVRTC build compiled (kda.h, "Stored cubins and
 * the NVRTC build"): a server whose PyTorch wheel ships an NVRTC other than
 * the one `kda-tune prewarm` ran with loads them instead of compiling; a
 * different major version, KDA_CUBIN_NVRTC=exact or a driver that refuses
 * the image make it compile, as on a miss. The database is made with
 * kda_compile_offline_store and its rows relabelled as another build's.
 * Runs on the stand-in driver (KDA_LIBCUDA, tests/fake_cuda); NVRTC is
 * real. */
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "kda/kda.h"

static void (*fake_refuse_module_loads)(long);

typedef struct fixture {
  char dir[64];
  char db[96];
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (f == NULL) return -1;
  snprintf(f->dir, sizeof f->dir, "/tmp/kda_other_builds_XXXXXX");
  if (mkdtemp(f->dir) == NULL) return -1;
  snprintf(f->db, sizeof f->db, "%s/tune.db", f->dir);
  unsetenv("KDA_CUBIN_NVRTC");
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  char cmd[96];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
  int rc = system(cmd);
  unsetenv("KDA_CUBIN_NVRTC");
  free(f);
  return rc == 0 ? 0 : -1;
}

/* Runs sql on the database file; returns the changed rows. */
static int exec_sql(const char *path, const char *sql) {
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  char *err = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) fail_msg("%s: %s", sql, err);
  const int n = sqlite3_changes(db);
  sqlite3_close(db);
  return n;
}

/* The one integer a query answers. */
static int64_t scalar(const char *path, const char *sql) {
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  const int64_t v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

/* Every stored cubin relabelled as compiled by another build of the same
 * release ("13.0 build-id=<this one's>" -> "13.0 build-id=0000...").
 * `release` non-NULL replaces the release too ("12.9"). */
static void relabel(const char *path, const char *release) {
  char sql[512];
  if (release == NULL)
    snprintf(sql, sizeof sql,
             "UPDATE cubins SET nvrtc_version = substr(nvrtc_version, 1, instr(nvrtc_version, ' '))"
             " || 'build-id=0000000000000000000000000000000000000000'");
  else
    snprintf(sql, sizeof sql,
             "UPDATE cubins SET nvrtc_version = '%s build-id=0000000000000000000000000000000000000000'",
             release);
  assert_true(exec_sql(path, sql) > 0);
}

typedef struct log_grab {
  char other[512]; /* the INFO line of a load of another build's cubin */
  char refused[512];
  int warnings;
} log_grab;

static void grab_log(void *user, kda_log_level level, const char *message) {
  log_grab *g = user;
  if (strstr(message, "compiled by NVRTC") && strstr(message, "loaded"))
    snprintf(g->other, sizeof g->other, "%s", message);
  if (strstr(message, "refused")) snprintf(g->refused, sizeof g->refused, "%s", message);
  if (level <= KDA_LOG_WARN) g->warnings++;
}

typedef struct counts {
  uint64_t compiles, hits, other_hits;
} counts;

/* The device chunk-table builder, once, in a fresh context of mode on
 * path: the only kernel it needs, so its counters are the builder's. */
static counts build_table(const char *path, int mode, log_grab *g) {
  kda_options o = kda_options_default();
  o.tune_mode = mode;
  o.db_path = path;
  o.log_fn = grab_log;
  o.log_user = g;
  o.log_level = KDA_LOG_INFO;
  kda_context *ctx = NULL;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  /* The stand-in runs no kernel: host arrays stand for device ones. */
  static const int32_t cu[3] = {0, 5, 70};
  static int32_t table[64], count;
  assert_int_equal(kda_chunk_indices_build_device(ctx, cu, KDA_DTYPE_I32, 2, 70, 64, table, 64,
                                                  &count, NULL),
                   KDA_OK);
  kda_stats s = {.struct_size = sizeof s};
  assert_int_equal(kda_context_get_stats(ctx, &s), KDA_OK);
  kda_context_destroy(ctx);
  counts c = {s.nvrtc_compiles, s.db_cubin_hits, s.db_cubin_other_nvrtc_hits};
  printf("  %llu compiles, %llu stored cubins loaded, %llu of them another build's\n",
         (unsigned long long)c.compiles, (unsigned long long)c.hits,
         (unsigned long long)c.other_hits);
  return c;
}

static void store_builder(const char *path) {
  kda_gate_args shape = kda_gate_args_default();
  shape.cu_seqlens_dtype = KDA_DTYPE_I32;
  shape.chunk_size = 64;
  assert_int_equal(kda_compile_offline_store(KDA_KERNEL_CHUNK_INDICES, &shape, 90, path, NULL),
                   KDA_OK);
}

static void assert_counts(counts c, uint64_t compiles, uint64_t hits, uint64_t other_hits) {
  assert_int_equal(c.compiles, compiles);
  assert_int_equal(c.hits, hits);
  assert_int_equal(c.other_hits, other_hits);
}

/* Another build of the same release: loaded in CACHED and ON modes, logged
 * at INFO with both builds named, no warning. ON then runs on it and
 * stores nothing new: a second ON context loads it again. */
static void another_build_of_the_same_release_is_loaded(void **state) {
  fixture *f = *state;
  store_builder(f->db);
  relabel(f->db, NULL);
  const int modes[] = {KDA_TUNE_CACHED, KDA_TUNE_ON, KDA_TUNE_ON};
  for (int i = 0; i < 3; ++i) {
    log_grab g = {0};
    printf("mode %d:\n", modes[i]);
    assert_counts(build_table(f->db, modes[i], &g), 0, 1, 1);
    assert_non_null(strstr(g.other, " build-id=0000000000000000000000000000000000000000 "));
    assert_non_null(strstr(g.other, "(this process has "));
    assert_int_equal(g.warnings, 0);
  }
  /* The database holds the one cubin still, under the other build. */
  assert_int_equal(scalar(f->db, "SELECT count(*) FROM cubins"), 1);
  assert_int_equal(scalar(f->db, "SELECT count(*) FROM cubins WHERE nvrtc_version LIKE "
                                 "'% build-id=0000000000000000000000000000000000000000'"),
                   1);
}

/* KDA_CUBIN_NVRTC=exact: the other build's cubin is not loaded; the
 * process compiles and stores its own (a builder is stored by any mode that
 * reads the database), which the next context loads as its own. A bad
 * value is ignored with a warning. */
static void exact_mode_compiles_instead(void **state) {
  fixture *f = *state;
  store_builder(f->db);
  relabel(f->db, NULL);
  setenv("KDA_CUBIN_NVRTC", "exact", 1);
  log_grab g = {0};
  assert_counts(build_table(f->db, KDA_TUNE_CACHED, &g), 1, 0, 0);
  assert_counts(build_table(f->db, KDA_TUNE_ON, &g), 0, 1, 0);
  assert_string_equal(g.other, "");
  assert_int_equal(scalar(f->db, "SELECT count(*) FROM cubins"), 2);
  setenv("KDA_CUBIN_NVRTC", "sometimes", 1);
  log_grab bad = {0};
  assert_counts(build_table(f->db, KDA_TUNE_CACHED, &bad), 0, 1, 0);
  assert_int_equal(bad.warnings, 1);
}

/* Another major version's cubin is never loaded. */
static void another_major_version_compiles(void **state) {
  fixture *f = *state;
  store_builder(f->db);
  relabel(f->db, "12.9");
  log_grab g = {0};
  assert_counts(build_table(f->db, KDA_TUNE_CACHED, &g), 1, 0, 0);
  assert_string_equal(g.other, "");
}

/* A driver that refuses the other build's cubin (one of a newer release
 * than the driver): the call compiles, logged at INFO, not as a fault. */
static void a_refused_cubin_of_another_build_is_compiled_instead(void **state) {
  fixture *f = *state;
  store_builder(f->db);
  relabel(f->db, NULL);
  fake_refuse_module_loads(1);
  log_grab g = {0};
  assert_counts(build_table(f->db, KDA_TUNE_CACHED, &g), 1, 0, 0);
  fake_refuse_module_loads(0);
  assert_non_null(strstr(g.refused, "compiled by NVRTC "));
  assert_non_null(strstr(g.refused, " build-id=0000000000000000000000000000000000000000"));
  assert_int_equal(g.warnings, 0);
}

/* A gate kernel through a database `kda-tune prewarm --compile-only` made
 * with another build: the offline heuristic of a large shape (the CACHED
 * fallback of a fitted heuristic) is found under the other build too. */
static void gate_kernels_of_an_offline_database_of_another_build(void **state) {
  fixture *f = *state;
  const int64_t T = 2048;
  const int H = 32, K = 128;
  const size_t n = (size_t)T * H * K;
  void *g = aligned_alloc(256, n * 2), *out = aligned_alloc(256, n * 4);
  float *A_log = calloc((size_t)H, sizeof *A_log);
  assert_non_null(g);
  assert_non_null(out);
  assert_non_null(A_log);
  memset(g, 0x3f, n * 2);
  kda_gate_args a = kda_gate_args_default();
  a.g = g;
  a.g_dtype = KDA_DTYPE_BF16;
  a.out = out;
  a.batch = 1;
  a.seq_len = T;
  a.num_heads = H;
  a.head_dim = K;
  a.chunk_size = 64;
  a.gate = KDA_GATE_SOFTPLUS;
  a.A_log = A_log;
  assert_int_equal(kda_compile_offline_store(KDA_KERNEL_GATE_CHUNK_CUMSUM, &a, 90, f->db, NULL),
                   KDA_OK);
  relabel(f->db, NULL);
  kda_options o = kda_options_default();
  o.tune_mode = KDA_TUNE_CACHED;
  o.db_path = f->db;
  kda_context *ctx = NULL;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &a, NULL), KDA_OK);
  kda_stats s = {.struct_size = sizeof s};
  assert_int_equal(kda_context_get_stats(ctx, &s), KDA_OK);
  printf("gate kernel: %llu compiles, %llu stored cubins loaded, %llu of them another build's\n",
         (unsigned long long)s.nvrtc_compiles, (unsigned long long)s.db_cubin_hits,
         (unsigned long long)s.db_cubin_other_nvrtc_hits);
  assert_counts((counts){s.nvrtc_compiles, s.db_cubin_hits, s.db_cubin_other_nvrtc_hits}, 0, 1, 1);
  kda_context_destroy(ctx);
  free(g);
  free(out);
  free(A_log);
}

int main(void) {
  /* Each test names its tuning mode; ctest's KDA_TUNE=off would override. */
  unsetenv("KDA_TUNE");
  const char *path = getenv("KDA_LIBCUDA");
  void *h = path ? dlopen(path, RTLD_NOW) : NULL;
  if (h) *(void **)&fake_refuse_module_loads = dlsym(h, "fake_cuda_refuse_module_loads");
  if (!fake_refuse_module_loads) {
    fprintf(stderr, "KDA_LIBCUDA must name the stand-in driver (tests/fake_cuda); got %s\n",
            path ? path : "(unset)");
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(another_build_of_the_same_release_is_loaded, setup, teardown),
      cmocka_unit_test_setup_teardown(exact_mode_compiles_instead, setup, teardown),
      cmocka_unit_test_setup_teardown(another_major_version_compiles, setup, teardown),
      cmocka_unit_test_setup_teardown(a_refused_cubin_of_another_build_is_compiled_instead, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(gate_kernels_of_an_offline_database_of_another_build, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
