/* A tuning run's candidates split over NVRTC programs compiled on parallel
 * threads (tuner/tuner_compile.c), with real NVRTC and no GPU: the split,
 * each name found in its own program's cubin with the same mangled name a
 * single program gives, failures carrying their NVRTC log, the thread
 * count a context resolves, and the process-wide pool of compile threads
 * that concurrent tuning runs share. */
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "gate_args.h"
#include "kernel_source.h"
#include "spec.h"
#include "tuner_compile.h"

enum { NAMES = 7 };

static kda__source_set g_set;
static char *g_names[NAMES + 1];

/* Seven distinct block configs of one gate_cumsum slot. */
static void names_make(void) {
  kda_gate_args a = kda_gate_args_default();
  a.g = (void *)(uintptr_t)0x100000;
  a.out = (void *)(uintptr_t)0x10000000;
  a.batch = 1;
  a.seq_len = 512;
  a.num_heads = 8;
  a.head_dim = 128;
  a.gate = KDA_GATE_SOFTPLUS;
  a.A_log = (const float *)(uintptr_t)0x1000;
  kda__launch_plan plan;
  assert_int_equal(kda__plan_gate_op(KDA__OP_GATE_CHUNK_CUMSUM, &a, &plan), KDA_OK);
  kda__config space[512];
  const size_t n = kda__config_space(&plan.spec, space, 512);
  assert_true(n >= NAMES);
  for (size_t i = 0; i < NAMES; ++i) {
    kda__spec s = plan.spec;
    s.cfg = space[i * (n / NAMES)];
    g_names[i] = malloc(512);
    assert_true(kda__spec_name(&s, g_names[i], 512) > 0);
  }
}

static int setup(void **state) {
  (void)state;
  if (kda__source_set_load(NULL, &g_set) != KDA_OK) return -1;
  names_make();
  return 0;
}

static int teardown(void **state) {
  (void)state;
  for (size_t i = 0; i < NAMES; ++i) free(g_names[i]);
  kda__source_set_free(&g_set);
  return 0;
}

static int holds(const kda__compiled *c, const char *text) {
  const size_t len = strlen(text);
  const char *b = c->cubin;
  for (size_t i = 0; i + len <= c->cubin_size; ++i)
    if (memcmp(b + i, text, len) == 0) return 1;
  return 0;
}

static void split_programs_hold_their_own_names_with_one_programs_mangling(void **state) {
  (void)state;
  kda__tune_programs one, three;
  assert_int_equal(kda__tune_programs_compile(&g_set, "gate_cumsum.cu", 90,
                                              (const char *const *)g_names, NAMES, 1, &one),
                   KDA_OK);
  assert_int_equal(one.count, 1);
  assert_int_equal(kda__tune_programs_compile(&g_set, "gate_cumsum.cu", 90,
                                              (const char *const *)g_names, NAMES, 3, &three),
                   KDA_OK);
  assert_int_equal(three.count, 3);
  /* 7 over 3: sizes 2, 2, 3, in order. */
  const size_t first[] = {0, 2, 4, 7};
  for (size_t q = 0; q <= 3; ++q) assert_int_equal(three.first[q], first[q]);
  for (size_t i = 0; i < NAMES; ++i) {
    const size_t q = kda__tune_programs_of(&three, i);
    assert_true(i >= first[q] && i < first[q + 1]);
    const char *lowered = kda__tune_programs_lowered(&three, i);
    assert_non_null(lowered);
    assert_string_equal(lowered, kda__tune_programs_lowered(&one, i));
    for (size_t p = 0; p < 3; ++p) assert_int_equal(holds(&three.out[p], lowered), p == q);
    assert_true(holds(&one.out[0], lowered));
  }
  printf("7 instantiations: one program %.0f ms; three programs %.0f ms wall, %.0f ms of NVRTC "
         "time (%ld online CPUs)\n",
         one.wall_ms, three.wall_ms, three.cpu_ms, sysconf(_SC_NPROCESSORS_ONLN));
  assert_true(three.cpu_ms > 0 && three.wall_ms > 0);
  kda__tune_programs_free(&one);
  kda__tune_programs_free(&three);
}

static void more_threads_than_names_give_one_program_each(void **state) {
  (void)state;
  kda__tune_programs p;
  assert_int_equal(kda__tune_programs_compile(&g_set, "gate_cumsum.cu", 90,
                                              (const char *const *)g_names, 2, 16, &p),
                   KDA_OK);
  assert_int_equal(p.count, 2);
  assert_int_equal(kda__tune_programs_of(&p, 0), 0);
  assert_int_equal(kda__tune_programs_of(&p, 1), 1);
  kda__tune_programs_free(&p);
  assert_int_equal(kda__tune_programs_compile(&g_set, "gate_cumsum.cu", 90,
                                              (const char *const *)g_names, 3, 0, &p),
                   KDA_OK);
  assert_int_equal(p.count, 1); /* 0 threads: one program */
  kda__tune_programs_free(&p);
  assert_int_equal(kda__tune_programs_compile(&g_set, "gate_cumsum.cu", 90, NULL, 0, 4, &p),
                   KDA_ERROR_INTERNAL);
  assert_int_equal(p.count, 0);
}

static void a_failing_program_fails_the_compile_with_its_log_and_frees_the_rest(void **state) {
  (void)state;
  const char *names[NAMES];
  for (size_t i = 0; i < NAMES; ++i) names[i] = g_names[i];
  names[5] = "kda::no_such_kernel<3>"; /* in the third program of three */
  kda__tune_programs p;
  assert_int_equal(kda__tune_programs_compile(&g_set, "gate_cumsum.cu", 90, names, NAMES, 3, &p),
                   KDA_ERROR_COMPILE);
  const char *m = kda_last_error();
  printf("message: %.300s\n", m);
  assert_non_null(strstr(m, "no_such_kernel"));          /* NVRTC's log */
  assert_non_null(strstr(m, "[program 3 of 3, candidates 4-6]"));
  assert_null(strstr(m + 1, "KDA_ERROR_COMPILE: KDA_ERROR_COMPILE")); /* one prefix */
  assert_int_equal(p.count, 0);
  assert_null(p.out);
  assert_true(p.wall_ms > 0); /* the time spent is still reported */
}

static void thread_counts_resolve_to_cpus_capped_or_the_request(void **state) {
  (void)state;
  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  const int autod = kda__tune_compile_threads(0);
  assert_true(autod >= 1 && autod <= KDA__COMPILE_THREADS_AUTO_MAX);
  assert_int_equal(autod, cpus < KDA__COMPILE_THREADS_AUTO_MAX ? cpus : KDA__COMPILE_THREADS_AUTO_MAX);
  assert_int_equal(kda__tune_compile_threads(1), 1);
  assert_int_equal(kda__tune_compile_threads(5), 5);
  assert_int_equal(kda__tune_compile_threads(100000), KDA__COMPILE_THREADS_MAX);
  /* The process's pool of compile threads: the online CPUs. */
  assert_int_equal(kda__compile_pool_capacity(NULL),
                   cpus < KDA__COMPILE_THREADS_MAX ? cpus : KDA__COMPILE_THREADS_MAX);
  assert_int_equal(kda__compile_pool_in_use(NULL), 0);
}

static void a_released_reservation_is_reusable(void **state) {
  (void)state;
  kda__compile_pool pool = {.capacity = 4};
  kda__compile_lease a = kda__compile_pool_reserve(&pool, 3);
  assert_int_equal(a.taken, 3);
  assert_int_equal(a.threads, 3);
  kda__compile_lease b = kda__compile_pool_reserve(&pool, 3);
  assert_int_equal(b.taken, 1); /* what is left */
  assert_int_equal(b.threads, 1);
  kda__compile_lease c = kda__compile_pool_reserve(&pool, 2);
  assert_int_equal(c.taken, 0); /* empty: compiles on its own thread */
  assert_int_equal(c.threads, 1);
  assert_int_equal(kda__compile_pool_in_use(&pool), 4);
  kda__compile_pool_release(&c);
  assert_int_equal(kda__compile_pool_in_use(&pool), 4);
  kda__compile_pool_release(&a);
  assert_int_equal(kda__compile_pool_in_use(&pool), 1);
  kda__compile_pool_release(&a); /* twice: nothing */
  assert_int_equal(kda__compile_pool_in_use(&pool), 1);
  kda__compile_lease d = kda__compile_pool_reserve(&pool, 8);
  assert_int_equal(d.taken, 3); /* a's threads again */
  kda__compile_pool_release(&b);
  kda__compile_pool_release(&d);
  assert_int_equal(kda__compile_pool_in_use(&pool), 0);
  kda__compile_lease e = kda__compile_pool_reserve(&pool, 0); /* at least one */
  assert_int_equal(e.taken, 1);
  kda__compile_pool_release(&e);
  e = kda__compile_pool_reserve(&pool, 4);
  assert_int_equal(e.taken, 4);
  kda__compile_pool_release(&e);
  kda__compile_pool_release(NULL);
  assert_int_equal(kda__compile_pool_in_use(&pool), 0);
}

enum { POOL_THREADS = 16, POOL_ROUNDS = 2000 };

typedef struct pool_run {
  kda__compile_pool *pool;
  int capacity, seed;
  _Atomic int *held, *most, *bad;
} pool_run;

/* Many tuning runs' reservations at once: each counts what it holds while
 * it holds it, so the sum is what the pool has handed out at that moment. */
static void *pool_thread(void *p) {
  pool_run *r = p;
  for (int i = 0; i < POOL_ROUNDS; ++i) {
    const int want = 1 + (i * 7 + r->seed) % 12;
    kda__compile_lease l = kda__compile_pool_reserve(r->pool, want);
    if (l.taken < 0 || l.taken > want || l.threads != (l.taken > 0 ? l.taken : 1))
      atomic_fetch_add(r->bad, 1);
    const int now = atomic_fetch_add(r->held, l.taken) + l.taken;
    int most = atomic_load(r->most);
    while (now > most && !atomic_compare_exchange_weak(r->most, &most, now)) {
    }
    if (now > r->capacity || kda__compile_pool_in_use(r->pool) > r->capacity)
      atomic_fetch_add(r->bad, 1);
    if (i % 3 == 0) sched_yield();
    atomic_fetch_sub(r->held, l.taken);
    kda__compile_pool_release(&l);
  }
  return NULL;
}

static void the_pool_never_hands_out_more_than_its_threads_across_threads(void **state) {
  (void)state;
  kda__compile_pool pool16 = {.capacity = 16};
  kda__compile_pool *pools[2] = {&pool16, NULL};
  for (int k = 0; k < 2; ++k) {
    const int capacity = kda__compile_pool_capacity(pools[k]);
    _Atomic int held = 0, most = 0, bad = 0;
    pthread_t th[POOL_THREADS];
    pool_run runs[POOL_THREADS];
    for (int t = 0; t < POOL_THREADS; ++t) {
      runs[t] = (pool_run){pools[k], capacity, t, &held, &most, &bad};
      assert_int_equal(pthread_create(&th[t], NULL, pool_thread, &runs[t]), 0);
    }
    for (int t = 0; t < POOL_THREADS; ++t) pthread_join(th[t], NULL);
    printf("pool of %d: at most %d handed out at once by %d threads\n", capacity,
           atomic_load(&most), POOL_THREADS);
    assert_int_equal(atomic_load(&bad), 0);
    assert_true(atomic_load(&most) >= 1 && atomic_load(&most) <= capacity);
    assert_int_equal(kda__compile_pool_in_use(pools[k]), 0);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(split_programs_hold_their_own_names_with_one_programs_mangling),
      cmocka_unit_test(more_threads_than_names_give_one_program_each),
      cmocka_unit_test(a_failing_program_fails_the_compile_with_its_log_and_frees_the_rest),
      cmocka_unit_test(thread_counts_resolve_to_cpus_capped_or_the_request),
      cmocka_unit_test(a_released_reservation_is_reusable),
      cmocka_unit_test(the_pool_never_hands_out_more_than_its_threads_across_threads),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
