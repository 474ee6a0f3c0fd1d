/* Where tuning runs time (tuner/tuner_kit.c), on the stand-in driver
 * (KDA_LIBCUDA names tests/fake_cuda): one stream per context however many
 * runs it makes, and one run timing on a GPU at a time, whatever its
 * context or process (the processes' lock files live in a directory of
 * this test's own, KDA_TIMING_LOCK_DIR). The stand-in runs no kernel, so every run here
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
#include <sys/select.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

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
/* Warnings that a run timed without another process's lock. */
static atomic_int g_timed_anyway;

static void count_stopped(void *user, kda_log_level level, const char *message) {
  (void)user;
  if (level == KDA_LOG_WARN && strstr(message, "tuning stopped")) atomic_fetch_add(&g_stopped, 1);
  if (level == KDA_LOG_WARN && strstr(message, "timing lock")) atomic_fetch_add(&g_timed_anyway, 1);
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
  /* Read before letting go: the run's wait ends after it. */
  const double released = now_ms();
  kda__tune_kit_release(a);
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

/* A child process holds the GPU's timing lock (its own context's kit) until
 * it reads a byte from `go` (or gives up after 5 minutes); it writes a byte
 * to `ready` once it holds it. Returns its pid. */
static pid_t child_holding_the_lock(const int ready[2], const int go[2]) {
  const pid_t pid = fork();
  if (pid != 0) {
    /* Only the child writes `ready` and reads `go`: a child that dies
     * closes them, and the parent's read ends. */
    close(ready[1]);
    close(go[0]);
    return pid;
  }
  close(ready[0]);
  close(go[1]);
  const int rd = ready[1], gd = go[0];
  kda_options o = kda_options_default();
  o.db_path = ":memory:";
  o.tune_mode = KDA_TUNE_ON;
  o.log_level = KDA_LOG_ERROR;
  kda_context *ctx = NULL;
  kda__tune_kit *kit = NULL;
  double waited = 0;
  if (kda_context_create(&o, &ctx) != KDA_OK || kda__tune_kit_acquire(ctx, &kit, &waited) != KDA_OK ||
      !kit->flocked)
    _exit(2);
  char b = 1;
  if (write(rd, &b, 1) != 1) _exit(3);
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const time_t until = ts.tv_sec + 300;
  for (;;) {
    fd_set fds;
    FD_ZERO(&fds);
    FD_SET(gd, &fds);
    struct timeval tv = {1, 0};
    if (select(gd + 1, &fds, NULL, NULL, &tv) > 0) break;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (ts.tv_sec > until) break;
  }
  kda__tune_kit_release(ctx);
  kda_context_destroy(ctx);
  _exit(0);
}

/* A child process holding the lock, and the pipes to it. */
typedef struct holder {
  int ready[2], go[2];
  pid_t pid;
} holder;

/* Starts the child and returns once it holds the lock. */
static void holder_start(holder *h) {
  assert_int_equal(pipe(h->ready), 0);
  assert_int_equal(pipe(h->go), 0);
  h->pid = child_holding_the_lock(h->ready, h->go);
  assert_true(h->pid > 0);
  char b = 0;
  assert_int_equal(read(h->ready[0], &b, 1), 1);
}

/* Tells the child to let go, then checks that it ended cleanly. */
static void holder_release(holder *h) {
  const char b = 1;
  assert_int_equal(write(h->go[1], &b, 1), 1);
  int status = -1;
  assert_int_equal(waitpid(h->pid, &status, 0), h->pid);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  close(h->ready[0]);
  close(h->go[1]);
}

/* Another process holds the GPU's timing lock: this process's run waits for
 * it, counted, and times once the other lets go. */
static void a_tuning_run_waits_while_another_process_times_on_the_gpu(void **state) {
  (void)state;
  holder h;
  holder_start(&h);
  kda_context *ctx = tuning_context();
  cold_call w = {.ctx = ctx, .st = KDA_ERROR_INTERNAL};
  call_init(&w.c, 8, 300);
  atomic_store(&g_stopped, 0);
  atomic_store(&g_timed_anyway, 0);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, run_cold_call, &w), 0);
  for (int i = 0; i < 30000 && stats_of(ctx).tuning_timing_waits == 0 && !atomic_load(&w.done); ++i)
    usleep(10000);
  assert_int_equal(stats_of(ctx).tuning_timing_waits, 1);
  const double held_from = now_ms();
  usleep(200000);
  assert_int_equal(atomic_load(&w.done), 0);
  const double released = now_ms(); /* before the other lets go */
  holder_release(&h);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(w.st, KDA_OK);
  const kda_stats s = stats_of(ctx);
  printf("the run waited %.0f ms for the other process (which held the lock %.0f ms after the "
         "run began waiting)\n", s.tuning_timing_wait_ms_total, released - held_from);
  assert_int_equal(s.tuning_timing_waits, 1);
  assert_true(s.tuning_timing_wait_ms_total >= released - held_from - 1.0);
  assert_int_equal(atomic_load(&g_stopped), 1);
  assert_int_equal(atomic_load(&g_timed_anyway), 0);
  call_free(&w.c);
  kda_context_destroy(ctx);
}

/* Another process holds the lock for good (stopped, hung): the run times
 * anyway once the bound has passed (2 x the budget + 3 s, at least 10 s),
 * with one warning. */
static void a_tuning_run_times_anyway_when_another_process_never_lets_go(void **state) {
  (void)state;
  holder h;
  holder_start(&h);
  kda_context *ctx = tuning_context();
  call c;
  call_init(&c, 16, 300);
  atomic_store(&g_stopped, 0);
  atomic_store(&g_timed_anyway, 0);
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, NULL), KDA_OK);
  const kda_stats s = stats_of(ctx);
  printf("the run waited %.0f ms, then timed anyway\n", s.tuning_timing_wait_ms_total);
  assert_int_equal(s.tuning_timing_waits, 1);
  assert_true(s.tuning_timing_wait_ms_total >= 9000.0); /* the 10 s bound, a sleep's slack */
  assert_int_equal(atomic_load(&g_timed_anyway), 1);
  assert_int_equal(atomic_load(&g_stopped), 1);
  holder_release(&h);
  call_free(&c);
  kda_context_destroy(ctx);
}

int main(void) {
  /* Each test names its tuning mode; ctest's KDA_TUNE=off would override. */
  unsetenv("KDA_TUNE");
  /* This test's own lock files: runs of other tests on the stand-in's
   * device (same bus id) do not wait on it, nor it on them. */
  char dir[] = "/tmp/kda-timing-test-XXXXXX";
  if (mkdtemp(dir) == NULL) return 1;
  setenv("KDA_TIMING_LOCK_DIR", dir, 1);
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
      cmocka_unit_test(a_tuning_run_waits_while_another_process_times_on_the_gpu),
      cmocka_unit_test(a_tuning_run_times_anyway_when_another_process_never_lets_go),
  };
  const int failed = cmocka_run_group_tests(tests, NULL, NULL);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) return 1;
  return failed;
}
