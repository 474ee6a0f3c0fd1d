/* Where tuning runs time (tuner/tuner_kit.c), on the stand-in driver
 * (KDA_LIBCUDA names tests/fake_cuda): one stream per context however many
 * runs it makes, and one run of the process timing on a device at a time,
 * whatever its context. The stand-in runs no kernel, so every run here
 * compiles its candidates, times, then stops at validation and keeps the
 * heuristic config: enough to see its stream and its wait. */
#include <dlfcn.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "context_internal.h"
#include "kda/kda.h"
#include "tuner.h"

static long (*fake_streams_made)(void);
static long (*fake_streams_live)(void);

/* A call's arguments on stand-in "device" memory (host memory). */
typedef struct call {
  kda_gate_args a;
  void *g, *out;
  float A_log[64];
} call;

static void call_init(call *c, int H, int64_t T) {
  memset(c, 0, sizeof *c);
  const size_t n = (size_t)T * H * 64;
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
  c->a.head_dim = 64;
  c->a.gate = KDA_GATE_SOFTPLUS;
  c->a.A_log = c->A_log;
}

static void call_free(call *c) {
  free(c->g);
  free(c->out);
}

/* Tuning runs that reached their timing and validation: on the stand-in
 * each ends there ("tuning stopped"), so the context's tuning_runs stays 0. */
static atomic_int g_stopped;

static void count_stopped(void *user, kda_log_level level, const char *message) {
  (void)user;
  if (level == KDA_LOG_WARN && strstr(message, "tuning stopped")) atomic_fetch_add(&g_stopped, 1);
}

static kda_context *tuning_context(void) {
  kda_options o = kda_options_default();
  o.db_path = ":memory:";
  o.tune_mode = KDA_TUNE_ON;
  o.log_level = KDA_LOG_WARN;
  o.log_fn = count_stopped;
  /* At least two candidates whatever NVRTC costs here (sanitizer builds). */
  o.tune_budget_ms = 3000;
  kda_context *ctx = NULL;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  return ctx;
}

static kda_stats stats_of(kda_context *ctx) {
  kda_stats s = {.struct_size = sizeof s};
  assert_int_equal(kda_context_get_stats(ctx, &s), KDA_OK);
  return s;
}

/* Three tuning runs (three head counts) make one stream; a second context
 * makes its own; destroying the contexts destroys both. */
static void tuning_runs_of_a_context_share_one_stream(void **state) {
  (void)state;
  const long made0 = fake_streams_made(), live0 = fake_streams_live();
  atomic_store(&g_stopped, 0);
  kda_context *ctx = tuning_context();
  const int heads[] = {2, 4, 8};
  for (int i = 0; i < 3; ++i) {
    call c;
    call_init(&c, heads[i], 300);
    assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, NULL), KDA_OK);
    call_free(&c);
  }
  assert_int_equal(atomic_load(&g_stopped), 3);
  assert_int_equal(fake_streams_made() - made0, 1);
  kda_context *other = tuning_context();
  call c;
  call_init(&c, 2, 300);
  assert_int_equal(kda_gate_chunk_cumsum(other, &c.a, NULL), KDA_OK);
  call_free(&c);
  assert_int_equal(atomic_load(&g_stopped), 4);
  assert_int_equal(fake_streams_made() - made0, 2);
  assert_int_equal(fake_streams_live() - live0, 2);
  kda_context_destroy(ctx);
  kda_context_destroy(other);
  assert_int_equal(fake_streams_live(), live0);
}

typedef struct cold_call {
  kda_context *ctx;
  call c;
  kda_status st;
  atomic_int done;
} cold_call;

static void *run_cold_call(void *p) {
  cold_call *w = p;
  w->st = kda_gate_chunk_cumsum(w->ctx, &w->c.a, NULL);
  atomic_store(&w->done, 1);
  return NULL;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* This thread holds the device's timing lock as a run of context A would;
 * a cold call on context B (same device) compiles, then waits to time:
 * its context counts the wait, and the call finishes once A lets go. */
static void a_tuning_run_waits_while_another_context_times_on_the_device(void **state) {
  (void)state;
  kda_context *a = tuning_context(), *b = tuning_context();
  kda__tune_kit *kit = NULL;
  double waited = -1;
  assert_int_equal(kda__tune_kit_acquire(a, &kit, &waited), KDA_OK);
  assert_non_null(kit);
  assert_true(waited == 0);
  cold_call w = {.ctx = b, .st = KDA_ERROR_INTERNAL};
  call_init(&w.c, 4, 300);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, run_cold_call, &w), 0);
  /* Up to 5 minutes for its compile (sanitizer builds are slow). */
  for (int i = 0; i < 30000 && stats_of(b).tuning_timing_waits == 0 && !atomic_load(&w.done); ++i)
    usleep(10000);
  assert_int_equal(stats_of(b).tuning_timing_waits, 1);
  const double held_from = now_ms();
  usleep(200000);
  assert_int_equal(atomic_load(&w.done), 0); /* still waiting */
  atomic_store(&g_stopped, 0);
  kda__tune_kit_release(a);
  const double released = now_ms();
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(w.st, KDA_OK);
  const kda_stats s = stats_of(b);
  printf("the run waited %.0f ms (this thread held the lock %.0f ms after the run began "
         "waiting)\n", s.tuning_timing_wait_ms_total, released - held_from);
  assert_int_equal(atomic_load(&g_stopped), 1); /* it timed, then stopped at validation */
  assert_int_equal(s.tuning_timing_waits, 1);
  assert_true(s.tuning_timing_wait_ms_total >= released - held_from - 1.0);
  assert_int_equal(stats_of(a).tuning_timing_waits, 0);
  assert_int_equal(kda__tune_kit_inside_max(), 1);
  call_free(&w.c);
  kda_context_destroy(a);
  kda_context_destroy(b);
}

int main(void) {
  /* Each test names its tuning mode; ctest's KDA_TUNE=off would override. */
  unsetenv("KDA_TUNE");
  const char *path = getenv("KDA_LIBCUDA");
  void *h = path ? dlopen(path, RTLD_NOW) : NULL;
  if (h) {
    *(void **)&fake_streams_made = dlsym(h, "fake_cuda_streams_made");
    *(void **)&fake_streams_live = dlsym(h, "fake_cuda_streams_live");
  }
  if (!fake_streams_made || !fake_streams_live) {
    fprintf(stderr, "KDA_LIBCUDA must name the stand-in driver (tests/fake_cuda); got %s\n",
            path ? path : "(unset)");
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(tuning_runs_of_a_context_share_one_stream),
      cmocka_unit_test(a_tuning_run_waits_while_another_context_times_on_the_device),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
