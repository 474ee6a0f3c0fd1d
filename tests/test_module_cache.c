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

typedef struct fake_builder {
  atomic_int builds_started;
  atomic_int builds_finished;
  atomic_int fail; /* nonzero: builds fail */
  int build_ms;
  int slow_build_ms;
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
  sleep_ms(spec->heads == SLOW_HEADS ? f->slow_build_ms : f->build_ms);
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
  double latency_ms;
  char message[512];
  pthread_t thread;
} call;

static void *call_main(void *arg) {
  call *c = arg;
  if (c->start) pthread_barrier_wait(c->start);
  double t0 = now_ms();
  c->status = kda__cache_get(c->cache, &c->spec, fake_build, c->builder, &c->function, &c->hit);
  c->latency_ms = now_ms() - t0;
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
  for (int i = 0; i < 2000 && atomic_load(&f->builds_started) < n; ++i) sleep_ms(1);
  assert_true(atomic_load(&f->builds_started) >= n);
}

static void concurrent_first_calls_build_once(void **state) {
  (void)state;
  fake_builder f = {.build_ms = 50};
  kda__module_cache *cache = NULL;
  assert_int_equal(kda__cache_create(&cache), KDA_OK);
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
  fake_builder f = {.build_ms = 50};
  kda__module_cache *cache = NULL;
  assert_int_equal(kda__cache_create(&cache), KDA_OK);
  call calls[16];
  memset(calls, 0, sizeof calls);
  for (int i = 0; i < 16; ++i) {
    calls[i].cache = cache;
    calls[i].builder = &f;
    calls[i].spec = make_spec(i % 8 + 1);
  }
  double t0 = now_ms();
  run_calls(calls, 16);
  double wall = now_ms() - t0;
  assert_int_equal(atomic_load(&f.builds_started), 8);
  for (int i = 0; i < 16; ++i) {
    assert_int_equal(calls[i].status, KDA_OK);
    assert_true((uintptr_t)calls[i].function == fake_handle(&calls[i].spec));
  }
  assert_int_equal(kda__cache_size(cache), 8);
  /* Serialised builds would take 8 x 50 ms. */
  print_message("8 concurrent 50 ms builds took %.1f ms\n", wall);
  assert_true(wall < 350.0);
  kda__cache_destroy(cache, NULL, NULL);
}

static void slow_build_does_not_delay_other_spec(void **state) {
  (void)state;
  fake_builder f = {.build_ms = 50, .slow_build_ms = 500};
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
  double t0 = now_ms();
  assert_int_equal(kda__cache_get(cache, &b, fake_build, &f, &fn, &hit), KDA_OK);
  double latency = now_ms() - t0;
  print_message("spec B built in %.1f ms while spec A's 500 ms build ran\n", latency);
  assert_true(latency < 300.0);
  assert_int_equal(hit, 0);
  assert_int_equal(atomic_load(&f.builds_finished), 1); /* A still building */

  pthread_join(slow.thread, NULL);
  assert_int_equal(slow.status, KDA_OK);
  assert_true(slow.latency_ms >= 450.0);
  assert_int_equal(kda__cache_size(cache), 2);
  kda__cache_destroy(cache, NULL, NULL);
}

static void failed_build_reported_to_all_waiters_then_retried(void **state) {
  (void)state;
  /* 200 ms: long enough that every thread released by the barrier arrives
   * while the one build is still running. */
  fake_builder f = {.build_ms = 200};
  atomic_store(&f.fail, 1);
  kda__module_cache *cache = NULL;
  assert_int_equal(kda__cache_create(&cache), KDA_OK);
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
  fake_builder f = {.build_ms = 50, .slow_build_ms = 400};
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
  double t0 = now_ms();
  assert_int_equal(kda__cache_peek(cache, &s, &fn), 0);
  double peek_ms = now_ms() - t0;
  assert_true(peek_ms < 100.0);
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
