/* The module cache's single-flight behaviour, with a fake build function in
 * place of NVRTC + cuModuleLoadData, so it runs without a GPU. cmocka's
 * asserts are not thread-safe: workers only record, the main thread checks. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "error.h"
#include "module_cache.h"

#define SLOW_HEADS 1000 /* a spec with this many heads builds slowly */

/* The fake build holds itself until the state a test needs exists (every
 * build started, every caller waiting, a gate opened), with a deadline only
 * for the failure case: the tests assert what happened, never how long it
 * took, so a loaded machine cannot fail them. */
typedef struct fake_builder {
  atomic_int builds_started;
  atomic_int builds_finished;
  atomic_int fail; /* nonzero: builds fail */
  atomic_int in_flight, peak_in_flight;
  atomic_int slow_gate_closed; /* nonzero: a SLOW_HEADS build waits for it to open */
  int build_ms;
  int rendezvous;   /* > 0: each build waits until this many builds have started */
  int wait_waiters; /* > 0: each build waits until this many callers wait for it */
  kda__module_cache *cache; /* for wait_waiters */
} fake_builder;

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* Polls cond(f, spec) every millisecond for up to 10 s; returns whether it held. */
static int wait_until(int (*cond)(fake_builder *, const kda__spec *), fake_builder *f,
                      const kda__spec *spec) {
  const double deadline = now_ms() + 10000.0;
  while (!cond(f, spec)) {
    if (now_ms() > deadline) return 0;
    sleep_ms(1);
  }
  return 1;
}

static int all_started(fake_builder *f, const kda__spec *spec) {
  (void)spec;
  return atomic_load(&f->builds_started) >= f->rendezvous;
}

static int gate_open(fake_builder *f, const kda__spec *spec) {
  (void)spec;
  return !atomic_load(&f->slow_gate_closed);
}

static int all_waiting(fake_builder *f, const kda__spec *spec) {
  return kda__cache_waiters(f->cache, spec) >= f->wait_waiters;
}

static kda__spec make_spec(int heads) {
  kda__spec s;
  memset(&s, 0, sizeof s);
  s.kernel = KDA__KERNEL_GATE_CUMSUM;
  s.heads = heads;
  s.head_dim = 64;
  s.chunk = 64;
  s.cumsum = 1;
  s.idx_dtype = KDA_DTYPE_I32;
  s.cfg.vec = 4;
  s.cfg.tx = 16;
  s.cfg.seg = 4;
  return s;
}

static uintptr_t fake_handle(const kda__spec *spec) {
  return (uintptr_t)(kda__spec_hash(spec) | 1u);
}

static kda_status fake_build(void *user, const kda__spec *spec, CUmodule *module,
                             CUfunction *function) {
  fake_builder *f = user;
  atomic_fetch_add(&f->builds_started, 1);
  const int now = atomic_fetch_add(&f->in_flight, 1) + 1;
  int peak = atomic_load(&f->peak_in_flight);
  while (now > peak && !atomic_compare_exchange_weak(&f->peak_in_flight, &peak, now)) {
  }
  if (f->rendezvous > 0) wait_until(all_started, f, spec);
  if (spec->heads == SLOW_HEADS) wait_until(gate_open, f, spec);
  if (f->wait_waiters > 0) wait_until(all_waiting, f, spec);
  sleep_ms(f->build_ms);
  atomic_fetch_sub(&f->in_flight, 1);
  atomic_fetch_add(&f->builds_finished, 1);
  if (atomic_load(&f->fail))
    return kda__fail(KDA_ERROR_COMPILE, "fake compile error for heads=%d", spec->heads);
  *module = (CUmodule)fake_handle(spec);
  *function = (CUfunction)fake_handle(spec);
  return KDA_OK;
}

typedef struct unload_log {
  int count;
  uintptr_t modules[64];
} unload_log;

static void fake_unload(void *user, CUmodule module) {
  unload_log *log = user;
  if (log->count < 64) log->modules[log->count] = (uintptr_t)module;
  log->count++;
}

/* One caller of kda__cache_get on its own thread. */
typedef struct call {
  kda__module_cache *cache;
  fake_builder *builder;
  pthread_barrier_t *start;
  kda__spec spec;
  kda_status status;
  CUfunction function;
  int hit;
  char message[512];
  pthread_t thread;
} call;

static void *call_main(void *arg) {
  call *c = arg;
  if (c->start) pthread_barrier_wait(c->start);
  c->status = kda__cache_get(c->cache, &c->spec, fake_build, c->builder, &c->function, &c->hit);
  snprintf(c->message, sizeof c->message, "%s", c->status == KDA_OK ? "" : kda_last_error());
  return NULL;
}

static void run_calls(call *calls, int n) {
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, (unsigned)n);
  for (int i = 0; i < n; ++i) {
    calls[i].start = &start;
    assert_int_equal(pthread_create(&calls[i].thread, NULL, call_main, &calls[i]), 0);
  }
  for (int i = 0; i < n; ++i) pthread_join(calls[i].thread, NULL);
  pthread_barrier_destroy(&start);
}

static void wait_for_builds_started(fake_builder *f, int n) {
  const double deadline = now_ms() + 10000.0;
  while (atomic_load(&f->builds_started) < n && now_ms() < deadline) sleep_ms(1);
  assert_true(atomic_load(&f->builds_started) >= n);
}

static void concurrent_first_calls_build_once(void **state) {
  (void)state;
  /* The build holds until the other 15 callers wait for it. */
  fake_builder f = {.build_ms = 1, .wait_waiters = 15};
  kda__module_cache *cache = NULL;
  assert_int_equal(kda__cache_create(&cache), KDA_OK);
  f.cache = cache;
  call calls[16];
  memset(calls, 0, sizeof calls);
  for (int i = 0; i < 16; ++i) {
    calls[i].cache = cache;
    calls[i].builder = &f;
    calls[i].spec = make_spec(8);
  }
  run_calls(calls, 16);
  assert_int_equal(atomic_load(&f.builds_started), 1);
  kda__spec s = make_spec(8);
  for (int i = 0; i < 16; ++i) {
    assert_int_equal(calls[i].status, KDA_OK);
    assert_true((uintptr_t)calls[i].function == fake_handle(&s));
    assert_int_equal(calls[i].hit, 0);
  }
  assert_int_equal(kda__cache_size(cache), 1);

  CUfunction fn = NULL;
  int hit = 0;
  assert_int_equal(kda__cache_get(cache, &s, fake_build, &f, &fn, &hit), KDA_OK);
  assert_int_equal(hit, 1);
  assert_true((uintptr_t)fn == fake_handle(&s));
  assert_int_equal(atomic_load(&f.builds_started), 1);
  kda__cache_destroy(cache, NULL, NULL);
}

static void distinct_specs_build_once_each_and_in_parallel(void **state) {
  (void)state;
  /* Each build holds until all 8 have started: a cache that serialised
   * builds of different specs would leave the peak at 1. */
  fake_builder f = {.build_ms = 1, .rendezvous = 8};
  kda__module_cache *cache = NULL;
  assert_int_equal(kda__cache_create(&cache), KDA_OK);
  call calls[16];
  memset(calls, 0, sizeof calls);
  for (int i = 0; i < 16; ++i) {
    calls[i].cache = cache;
    calls[i].builder = &f;
    calls[i].spec = make_spec(i % 8 + 1);
  }
  run_calls(calls, 16);
  assert_int_equal(atomic_load(&f.builds_started), 8);
  assert_int_equal(atomic_load(&f.peak_in_flight), 8);
  for (int i = 0; i < 16; ++i) {
    assert_int_equal(calls[i].status, KDA_OK);
    assert_true((uintptr_t)calls[i].function == fake_handle(&calls[i].spec));
  }
  assert_int_equal(kda__cache_size(cache), 8);
  kda__cache_destroy(cache, NULL, NULL);
}

static void slow_build_does_not_delay_other_spec(void **state) {
  (void)state;
  /* Spec A's build holds until the gate opens, which happens only after
   * spec B's call has returned: a cache that made B wait for A would return
   * B only after A's 10 s deadline, with A finished. */
  fake_builder f = {.build_ms = 1};
  atomic_store(&f.slow_gate_closed, 1);
  kda__module_cache *cache = NULL;
  assert_int_equal(kda__cache_create(&cache), KDA_OK);
  call slow;
  memset(&slow, 0, sizeof slow);
  slow.cache = cache;
  slow.builder = &f;
  slow.spec = make_spec(SLOW_HEADS);
  assert_int_equal(pthread_create(&slow.thread, NULL, call_main, &slow), 0);
  wait_for_builds_started(&f, 1);

  kda__spec b = make_spec(2);
  CUfunction fn = NULL;
  int hit = -1;
  assert_int_equal(kda__cache_get(cache, &b, fake_build, &f, &fn, &hit), KDA_OK);
  assert_int_equal(hit, 0);
  assert_int_equal(atomic_load(&f.builds_finished), 1); /* B's; A still building */
  assert_int_equal(kda__cache_peek(cache, &slow.spec, NULL), 0);

  atomic_store(&f.slow_gate_closed, 0);
  pthread_join(slow.thread, NULL);
  assert_int_equal(slow.status, KDA_OK);
  assert_int_equal(atomic_load(&f.builds_finished), 2);
  assert_int_equal(kda__cache_size(cache), 2);
  kda__cache_destroy(cache, NULL, NULL);
}

static void failed_build_reported_to_all_waiters_then_retried(void **state) {
  (void)state;
  /* The one build fails only once the other 7 callers wait for it. */
  fake_builder f = {.build_ms = 1, .wait_waiters = 7};
  atomic_store(&f.fail, 1);
  kda__module_cache *cache = NULL;
  assert_int_equal(kda__cache_create(&cache), KDA_OK);
  f.cache = cache;
  call calls[8];
  memset(calls, 0, sizeof calls);
  for (int i = 0; i < 8; ++i) {
    calls[i].cache = cache;
    calls[i].builder = &f;
    calls[i].spec = make_spec(3);
  }
  run_calls(calls, 8);
  assert_int_equal(atomic_load(&f.builds_started), 1);
  int builders = 0, waiters = 0;
  for (int i = 0; i < 8; ++i) {
    assert_int_equal(calls[i].status, KDA_ERROR_COMPILE);
    assert_null(calls[i].function);
    assert_non_null(strstr(calls[i].message, "fake compile error for heads=3"));
    if (strstr(calls[i].message, "concurrent build of this specialization failed: ") != NULL)
      ++waiters;
    else
      ++builders;
  }
  assert_int_equal(builders, 1);
  assert_int_equal(waiters, 7);
  kda__spec s = make_spec(3);
  assert_int_equal(kda__cache_peek(cache, &s, NULL), 0);
  assert_int_equal(kda__cache_size(cache), 0);

  /* The next call retries the build instead of replaying the failure. */
  atomic_store(&f.fail, 0);
  f.wait_waiters = 0;
  CUfunction fn = NULL;
  int hit = -1;
  assert_int_equal(kda__cache_get(cache, &s, fake_build, &f, &fn, &hit), KDA_OK);
  assert_int_equal(hit, 0);
  assert_int_equal(atomic_load(&f.builds_started), 2);
  assert_true((uintptr_t)fn == fake_handle(&s));
  assert_int_equal(kda__cache_get(cache, &s, fake_build, &f, &fn, &hit), KDA_OK);
  assert_int_equal(hit, 1);
  assert_int_equal(atomic_load(&f.builds_started), 2);
  kda__cache_destroy(cache, NULL, NULL);
}

static void failed_build_retried_by_next_caller_and_fails_again(void **state) {
  (void)state;
  fake_builder f = {.build_ms = 1};
  atomic_store(&f.fail, 1);
  kda__module_cache *cache = NULL;
  assert_int_equal(kda__cache_create(&cache), KDA_OK);
  kda__spec s = make_spec(4);
  CUfunction fn = NULL;
  for (int i = 1; i <= 3; ++i) {
    assert_int_equal(kda__cache_get(cache, &s, fake_build, &f, &fn, NULL), KDA_ERROR_COMPILE);
    assert_int_equal(atomic_load(&f.builds_started), i);
    /* The caller that built sees the build's own message, unprefixed. */
    assert_null(strstr(kda_last_error(), "concurrent build"));
    assert_non_null(strstr(kda_last_error(), "fake compile error for heads=4"));
  }
  kda__cache_destroy(cache, NULL, NULL);
}

static void peek_never_waits_and_sees_only_ready_entries(void **state) {
  (void)state;
  fake_builder f = {.build_ms = 1};
  atomic_store(&f.slow_gate_closed, 1); /* the build holds until the peek returned */
  kda__module_cache *cache = NULL;
  assert_int_equal(kda__cache_create(&cache), KDA_OK);
  kda__spec s = make_spec(SLOW_HEADS);
  CUfunction fn = (CUfunction)(uintptr_t)0x1234;
  assert_int_equal(kda__cache_peek(cache, &s, &fn), 0);
  assert_true((uintptr_t)fn == 0x1234); /* untouched on a miss */

  call c;
  memset(&c, 0, sizeof c);
  c.cache = cache;
  c.builder = &f;
  c.spec = s;
  assert_int_equal(pthread_create(&c.thread, NULL, call_main, &c), 0);
  wait_for_builds_started(&f, 1);
  assert_int_equal(kda__cache_peek(cache, &s, &fn), 0);
  assert_int_equal(atomic_load(&f.builds_finished), 0); /* it did not wait for the build */
  atomic_store(&f.slow_gate_closed, 0);
  pthread_join(c.thread, NULL);
  assert_int_equal(c.status, KDA_OK);

  assert_int_equal(kda__cache_peek(cache, &s, &fn), 1);
  assert_true((uintptr_t)fn == fake_handle(&s));
  assert_int_equal(kda__cache_peek(cache, &s, NULL), 1);
  kda__spec other = make_spec(5);
  assert_int_equal(kda__cache_peek(cache, &other, &fn), 0);
  kda__cache_destroy(cache, NULL, NULL);
}

static void destroy_unloads_each_ready_module_once(void **state) {
  (void)state;
  fake_builder f = {.build_ms = 1};
  kda__module_cache *cache = NULL;
  assert_int_equal(kda__cache_create(&cache), KDA_OK);
  CUfunction fn;
  for (int h = 1; h <= 5; ++h) {
    kda__spec s = make_spec(h);
    assert_int_equal(kda__cache_get(cache, &s, fake_build, &f, &fn, NULL), KDA_OK);
    assert_int_equal(kda__cache_get(cache, &s, fake_build, &f, &fn, NULL), KDA_OK);
  }
  atomic_store(&f.fail, 1);
  kda__spec bad = make_spec(6);
  assert_int_equal(kda__cache_get(cache, &bad, fake_build, &f, &fn, NULL), KDA_ERROR_COMPILE);
  assert_int_equal(kda__cache_size(cache), 5);

  unload_log log;
  memset(&log, 0, sizeof log);
  kda__cache_destroy(cache, fake_unload, &log);
  assert_int_equal(log.count, 5);
  for (int h = 1; h <= 5; ++h) {
    kda__spec s = make_spec(h);
    int seen = 0;
    for (int i = 0; i < log.count; ++i) seen += log.modules[i] == fake_handle(&s);
    assert_int_equal(seen, 1);
  }
  kda__cache_destroy(NULL, fake_unload, &log); /* no-op */
  assert_int_equal(log.count, 5);
}

static void many_specs_in_one_cache_stay_distinct(void **state) {
  (void)state;
  fake_builder f = {.build_ms = 0};
  kda__module_cache *cache = NULL;
  assert_int_equal(kda__cache_create(&cache), KDA_OK);
  CUfunction fn;
  int hit;
  /* More specs than buckets, so chains hold several entries. */
  for (int h = 1; h <= 3000; ++h) {
    kda__spec s = make_spec(h);
    assert_int_equal(kda__cache_get(cache, &s, fake_build, &f, &fn, &hit), KDA_OK);
    assert_int_equal(hit, 0);
  }
  for (int h = 1; h <= 3000; ++h) {
    kda__spec s = make_spec(h);
    assert_int_equal(kda__cache_get(cache, &s, fake_build, &f, &fn, &hit), KDA_OK);
    assert_int_equal(hit, 1);
    assert_true((uintptr_t)fn == fake_handle(&s));
  }
  assert_int_equal(atomic_load(&f.builds_started), 3000);
  assert_int_equal(kda__cache_size(cache), 3000);
  kda__cache_destroy(cache, NULL, NULL);
}

static void null_arguments_are_rejected(void **state) {
  (void)state;
  fake_builder f = {.build_ms = 0};
  kda__module_cache *cache = NULL;
  assert_int_equal(kda__cache_create(NULL), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda__cache_create(&cache), KDA_OK);
  kda__spec s = make_spec(1);
  CUfunction fn;
  int hit = 7;
  assert_int_equal(kda__cache_get(NULL, &s, fake_build, &f, &fn, &hit), KDA_ERROR_NULL_POINTER);
  assert_int_equal(hit, 0);
  assert_int_equal(kda__cache_get(cache, NULL, fake_build, &f, &fn, &hit), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda__cache_get(cache, &s, NULL, &f, &fn, &hit), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda__cache_get(cache, &s, fake_build, &f, NULL, &hit), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda__cache_peek(NULL, &s, &fn), 0);
  assert_int_equal(kda__cache_size(NULL), 0);
  assert_int_equal(atomic_load(&f.builds_started), 0);
  kda__cache_destroy(cache, NULL, NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(concurrent_first_calls_build_once),
      cmocka_unit_test(distinct_specs_build_once_each_and_in_parallel),
      cmocka_unit_test(slow_build_does_not_delay_other_spec),
      cmocka_unit_test(failed_build_reported_to_all_waiters_then_retried),
      cmocka_unit_test(failed_build_retried_by_next_caller_and_fails_again),
      cmocka_unit_test(peek_never_waits_and_sees_only_ready_entries),
      cmocka_unit_test(destroy_unloads_each_ready_module_once),
      cmocka_unit_test(many_specs_in_one_cache_stay_distinct),
      cmocka_unit_test(null_arguments_are_rejected),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
