/* 16 threads compiling offline at once (no GPU): kda_compile_offline and
 * kda_compile_offline_store are documented thread-safe. Eight shapes, each
 * taken by two threads, all released together by a barrier: every call
 * succeeds, errors stay per thread, and one database written by 16 threads
 * (while this thread holds another handle on it, as kda-tune prewarm does)
 * ends with exactly the 8 cubins, all sound. Built with KDA_TSAN=ON it is
 * also the ThreadSanitizer check of the offline path. cmocka's asserts are
 * not thread-safe: workers only record, the main thread checks. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "kda/kda.h"
#include "kda/kda_db.h"

#define THREADS 16
#define SHAPES 8

typedef struct shape {
  kda_kernel kernel;
  kda_gate_args args;
} shape;

static shape g_shapes[SHAPES];

static void make_shapes(void) {
  for (int i = 0; i < SHAPES; i++) {
    kda_gate_args a = kda_gate_args_default();
    a.batch = 1;
    a.seq_len = 512;
    a.num_heads = 32;
    a.head_dim = 128;
    a.chunk_size = 64;
    a.gate = KDA_GATE_SOFTPLUS;
    kda_kernel k = KDA_KERNEL_GATE_CHUNK_CUMSUM;
    switch (i) {
      case 0: break;
      case 1: a.num_heads = 16; a.g_dtype = KDA_DTYPE_F32; break;
      case 2: a.num_heads = 8; a.head_dim = 64; a.gate = KDA_GATE_LOWER_BOUND; a.lower_bound = -5.0f; break;
      case 3: a.num_heads = 4; a.g_dtype = KDA_DTYPE_F16; a.dt_bias = (const float *)(uintptr_t)(UINT64_C(1) << 42); break;
      case 4: k = KDA_KERNEL_CHUNK_LOCAL_CUMSUM; a.num_heads = 8; a.gate = KDA_GATE_NONE; break;
      case 5: a.seq_len = 4096; a.num_seqs = 4; break; /* varlen, described without pointers */
      case 6: a.has_scale = 1; a.scale = 0.5f; a.reverse = 1; break;
      case 7: k = KDA_KERNEL_GATE; a.num_heads = 16; break;
    }
    g_shapes[i].kernel = k;
    g_shapes[i].args = a;
  }
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct worker {
  int index;
  const char *db_path; /* NULL: kda_compile_offline; else ..._store into it */
  pthread_barrier_t *barrier;
  kda_status bad_arch_status;
  char bad_arch_error[256]; /* kda_last_error() read after every thread failed */
  kda_status status;
  char error[512];
  double compile_ms;
} worker;

static void *work(void *p) {
  worker *w = p;
  const shape *s = &g_shapes[w->index % SHAPES];
  /* A failure first, with a message naming this thread's own value: after
   * the barrier, every thread has failed, so a shared error buffer would
   * show another thread's text. */
  w->bad_arch_status = kda_compile_offline(s->kernel, &s->args, 20 + w->index, NULL);
  pthread_barrier_wait(w->barrier);
  snprintf(w->bad_arch_error, sizeof w->bad_arch_error, "%s", kda_last_error());
  pthread_barrier_wait(w->barrier);
  w->compile_ms = -1;
  w->status = w->db_path ? kda_compile_offline_store(s->kernel, &s->args, 90, w->db_path, &w->compile_ms)
                         : kda_compile_offline(s->kernel, &s->args, 90, &w->compile_ms);
  if (w->status != KDA_OK) snprintf(w->error, sizeof w->error, "%s", kda_last_error());
  return NULL;
}

static void run_threads(const char *db_path, const char *what) {
  pthread_barrier_t barrier;
  assert_int_equal(pthread_barrier_init(&barrier, NULL, THREADS), 0);
  worker w[THREADS];
  pthread_t t[THREADS];
  memset(w, 0, sizeof w);
  double t0 = now_s();
  for (int i = 0; i < THREADS; i++) {
    w[i].index = i;
    w[i].db_path = db_path;
    w[i].barrier = &barrier;
    assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
  }
  for (int i = 0; i < THREADS; i++) assert_int_equal(pthread_join(t[i], NULL), 0);
  double secs = now_s() - t0;
  pthread_barrier_destroy(&barrier);
  double total_ms = 0;
  int ok = 0;
  for (int i = 0; i < THREADS; i++) {
    char want[32];
    snprintf(want, sizeof want, "arch %d", 20 + i);
    if (w[i].bad_arch_status != KDA_ERROR_INVALID_ARGUMENT || strstr(w[i].bad_arch_error, want) == NULL)
      print_error("thread %d: bad arch gave %d, message \"%s\" (wanted \"%s\")\n", i,
                  (int)w[i].bad_arch_status, w[i].bad_arch_error, want);
    assert_int_equal(w[i].bad_arch_status, KDA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(w[i].bad_arch_error, want));
    if (w[i].status != KDA_OK) print_error("thread %d (shape %d): %s\n", i, i % SHAPES, w[i].error);
    else ok++;
    total_ms += w[i].compile_ms;
  }
  printf("%s: %d threads, %d shapes (each by %d threads), %d/%d succeeded, %.1f s wall, "
         "per-call NVRTC times summed %.0f ms\n",
         what, THREADS, SHAPES, THREADS / SHAPES, ok, THREADS, secs, total_ms);
  fflush(stdout);
  assert_int_equal(ok, THREADS);
  for (int i = 0; i < THREADS; i++) assert_true(w[i].compile_ms > 0);
}

static void sixteen_threads_compile_offline(void **state) {
  (void)state;
  run_threads(NULL, "kda_compile_offline");
}

static void sixteen_threads_store_into_one_database(void **state) {
  (void)state;
  char dir[] = "/tmp/kda_threads_offline.XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[256];
  snprintf(path, sizeof path, "%s/tune.db", dir);
  /* A handle held open across the writes, as kda-tune prewarm holds one. */
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(path, 0, &db), KDA_OK);
  assert_string_equal(kda_db_mode(db), "read-write");
  run_threads(path, "kda_compile_offline_store");
  for (int i = 0; i < SHAPES; i++) {
    int32_t present = 0;
    assert_int_equal(kda_db_has_offline_cubin(db, g_shapes[i].kernel, &g_shapes[i].args, 90, &present),
                     KDA_OK);
    if (!present) print_error("shape %d: no cubin stored\n", i);
    assert_int_equal(present, 1);
  }
  int64_t checked = -1, bad = -1;
  assert_int_equal(kda_db_check_cubins(db, 0, NULL, NULL, &checked, &bad), KDA_OK);
  kda_db_stats st;
  memset(&st, 0, sizeof st);
  assert_int_equal(kda_db_stats_get(db, &st, NULL, NULL), KDA_OK);
  assert_null(kda_db_pop_warning(db));
  kda_db_close(db);
  sqlite3 *raw = NULL;
  assert_int_equal(sqlite3_open_v2(path, &raw, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
  sqlite3_stmt *q = NULL;
  assert_int_equal(sqlite3_prepare_v2(raw, "PRAGMA integrity_check", -1, &q, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(q), SQLITE_ROW);
  char integrity[128];
  snprintf(integrity, sizeof integrity, "%s", (const char *)sqlite3_column_text(q, 0));
  sqlite3_finalize(q);
  sqlite3_close(raw);
  printf("one database: %lld cubins (expected %d), %lld checked, %lld bad, integrity_check %s\n",
         (long long)st.cubins, SHAPES, (long long)checked, (long long)bad, integrity);
  fflush(stdout);
  assert_int_equal(st.cubins, SHAPES);
  assert_int_equal(checked, SHAPES);
  assert_int_equal(bad, 0);
  assert_string_equal(integrity, "ok");
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

int main(void) {
  make_shapes();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(sixteen_threads_compile_offline),
      cmocka_unit_test(sixteen_threads_store_into_one_database),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
