/* The host side of the real launch path, driven through the stand-in driver
 * (tests/fake_cuda, loaded via KDA_LIBCUDA by ctest): context lifecycle
 * without growth, and many threads meeting cold specializations at once.
 * NVRTC really compiles; the stand-in counts launches instead of running. */
#include <dirent.h>
#include <dlfcn.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kda/kda.h"

static long (*fake_launches)(void);
static long (*fake_live_allocations)(void);
static long (*fake_loaded_modules)(void);

static long open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  long n = 0;
  if (!d) return -1;
  while (readdir(d)) ++n;
  closedir(d);
  return n;
}

static long rss_kib(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = 0, resident = 0;
  if (!f) return -1;
  if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = -1;
  fclose(f);
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* A warm call's arguments on stand-in "device" memory (host memory). */
typedef struct call {
  kda_gate_args a;
  void *g, *out;
  float A_log[64];
} call;

static void call_init(call *c, int H, int K, int chunk, int64_t T) {
  memset(c, 0, sizeof *c);
  const size_t n = (size_t)T * H * K;
  c->g = aligned_alloc(256, n * 2 + 256);
  c->out = aligned_alloc(256, n * 4 + 256);
  memset(c->g, 0x3f, n * 2);
  c->a = kda_gate_args_default();
  c->a.g = c->g;
  c->a.g_dtype = KDA_DTYPE_BF16;
  c->a.out = c->out;
  c->a.batch = 1;
  c->a.seq_len = T;
  c->a.num_heads = H;
  c->a.head_dim = K;
  c->a.chunk_size = chunk;
  c->a.gate = KDA_GATE_SOFTPLUS;
  c->a.A_log = c->A_log;
}

static void call_free(call *c) {
  free(c->g);
  free(c->out);
}

static void context_lifecycle_10000_cycles_keeps_memory_and_fds_flat(void **state) {
  (void)state;
  call c;
  call_init(&c, 4, 64, 64, 128);
  long fds0 = 0, rss0 = 0;
  const int cycles = 10000;
  for (int i = 0; i < cycles; ++i) {
    kda_context *ctx = NULL;
    kda_options o = kda_options_default();
    o.db_path = ":memory:";
    o.tune_mode = KDA_TUNE_OFF;
    assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
    /* Every 1000th context compiles, loads and launches a kernel too. */
    if (i % 1000 == 999) assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, NULL), KDA_OK);
    kda_context_destroy(ctx);
    /* The baseline follows the first compile: NVRTC keeps ~45 MB of its
     * own (builtins, compiler state) for the life of the process. */
    if (i == 999) {
      fds0 = open_fds();
      rss0 = rss_kib();
    }
  }
  const long fds1 = open_fds(), rss1 = rss_kib();
  printf("%d create/destroy cycles (10 with a compile and a launch): from cycle 1000 on, "
         "fds %ld -> %ld, RSS %ld -> %ld KiB; stand-in allocations live %ld, modules loaded %ld\n",
         cycles, fds0, fds1, rss0, rss1, fake_live_allocations(), fake_loaded_modules());
  assert_int_equal(fds1, fds0);
#if defined(__SANITIZE_ADDRESS__)
  /* ASan's quarantine keeps freed memory resident, so RSS says nothing
   * here; LeakSanitizer checks this build for leaks at exit instead. */
  (void)rss1;
#else
  assert_true(rss1 - rss0 < 2048);
#endif
  assert_int_equal(fake_live_allocations(), 0);
  assert_int_equal(fake_loaded_modules(), 0);
  call_free(&c);
}

enum { THREADS = 16, SPECS = 8, ROUNDS = 300 };

typedef struct worker {
  kda_context *ctx;
  call *calls;
  int failures;
} worker;

static void *work(void *p) {
  worker *w = p;
  for (int r = 0; r < ROUNDS; ++r)
    for (int s = 0; s < SPECS; ++s)
      if (kda_gate_chunk_cumsum(w->ctx, &w->calls[s].a, NULL) != KDA_OK) ++w->failures;
  return NULL;
}

static void sixteen_threads_compile_each_cold_specialization_once(void **state) {
  (void)state;
  kda_context *ctx = NULL;
  kda_options o = kda_options_default();
  o.db_path = ":memory:";
  o.tune_mode = KDA_TUNE_OFF;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  call calls[SPECS];
  for (int s = 0; s < SPECS; ++s) call_init(&calls[s], 1 + s, 64, s % 2 ? 32 : 64, 96);
  const long launches0 = fake_launches();
  pthread_t th[THREADS];
  worker w[THREADS];
  for (int t = 0; t < THREADS; ++t) {
    w[t] = (worker){ctx, calls, 0};
    assert_int_equal(pthread_create(&th[t], NULL, work, &w[t]), 0);
  }
  int failures = 0;
  for (int t = 0; t < THREADS; ++t) {
    pthread_join(th[t], NULL);
    failures += w[t].failures;
  }
  kda_stats st = {.struct_size = sizeof st};
  assert_int_equal(kda_context_get_stats(ctx, &st), KDA_OK);
  printf("%d threads x %d specializations x %d rounds: %llu NVRTC compiles, %llu launches, "
         "%llu cache hits, %d failures\n",
         THREADS, SPECS, ROUNDS, (unsigned long long)st.nvrtc_compiles,
         (unsigned long long)st.launches, (unsigned long long)st.cache_hits, failures);
  assert_int_equal(failures, 0);
  assert_int_equal(st.nvrtc_compiles, SPECS);
  assert_int_equal(st.launches, (uint64_t)THREADS * SPECS * ROUNDS);
  assert_int_equal(fake_launches() - launches0, (long)THREADS * SPECS * ROUNDS);
  kda_context_destroy(ctx);
  for (int s = 0; s < SPECS; ++s) call_free(&calls[s]);
}

/* Background mode: a cold call returns at once (the heuristic config
 * launched), the worker runs off the caller's thread, and destroying the
 * context while it works neither hangs nor leaks (LeakSanitizer in the ASan
 * build). On the stand-in driver the worker's tuning fails (nothing is ever
 * written, so every candidate is "unwritten"): the calls keep running the
 * heuristic, which is the defined fallback. */
static void background_mode_runs_cold_calls_at_once_and_shuts_down_cleanly(void **state) {
  (void)state;
  call c;
  call_init(&c, 2, 64, 64, 300);
  for (int round = 0; round < 2; ++round) {
    kda_context *ctx = NULL;
    kda_options o = kda_options_default();
    o.db_path = ":memory:";
    o.tune_mode = KDA_TUNE_BACKGROUND;
    o.log_level = KDA_LOG_ERROR;
    assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
    const long launches0 = fake_launches();
    assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, NULL), KDA_OK);
    assert_int_equal(fake_launches() - launches0, 1);
    kda_stats st = {.struct_size = sizeof st};
    if (round == 1) {
      /* Let the worker finish its job, then call again. */
      for (int i = 0; i < 600; ++i) {
        assert_int_equal(kda_context_get_stats(ctx, &st), KDA_OK);
        if (st.background_jobs >= 1) break;
        usleep(10000);
      }
      assert_int_equal(st.background_jobs, 1);
      assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, NULL), KDA_OK);
    }
    /* Round 0 destroys while the worker is (most likely) compiling. */
    kda_context_destroy(ctx);
  }
  call_free(&c);
}

int main(void) {
  /* Each test names its tuning mode; ctest's KDA_TUNE=off would override. */
  unsetenv("KDA_TUNE");
  const char *path = getenv("KDA_LIBCUDA");
  void *h = path ? dlopen(path, RTLD_NOW) : NULL;
  if (h) {
    *(void **)&fake_launches = dlsym(h, "fake_cuda_launches");
    *(void **)&fake_live_allocations = dlsym(h, "fake_cuda_live_allocations");
    *(void **)&fake_loaded_modules = dlsym(h, "fake_cuda_loaded_modules");
  }
  if (!fake_launches || !fake_live_allocations || !fake_loaded_modules) {
    fprintf(stderr, "KDA_LIBCUDA must name the stand-in driver (tests/fake_cuda); got %s\n",
            path ? path : "(unset)");
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(context_lifecycle_10000_cycles_keeps_memory_and_fds_flat),
      cmocka_unit_test(sixteen_threads_compile_each_cold_specialization_once),
      cmocka_unit_test(background_mode_runs_cold_calls_at_once_and_shuts_down_cleanly),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
