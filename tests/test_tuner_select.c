/* The tuner's selection logic with injected timings: statistics, rejection
 * of wrong, unwritten and failed candidates, budget pruning, tie handling,
 * the finalists that are re-measured, and the NVRTC wall-time model the
 * budget learns. No device. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../tools/prewarm_budget.h"
#include "spec.h"
#include "tuner.h"

static kda__tune_trial ok_trial(int32_t id, double median) {
  kda__tune_trial t;
  memset(&t, 0, sizeof t);
  t.config_id = id;
  t.status = KDA__TRIAL_OK;
  t.median_us = t.p10_us = t.p90_us = median;
  t.measured = 1;
  return t;
}

/* vec=1 is left out wherever a wider shape exists; vec=2,tx=8,seg=16 only
 * where the bucket meets the window; nothing else. */
static void shapes_slow_in_servers_are_left_out_and_nothing_else(void **state) {
  (void)state;
  const int64_t min = KDA__TUNE_SERVER_SLOW_MIN_COLUMNS, end = KDA__TUNE_SERVER_SLOW_END_COLUMNS;
  const kda__config v1[] = {{.vec = 1, .tx = 16, .seg = 8}, {.vec = 1, .tx = 16, .seg = 16},
                            {.vec = 1, .tx = 64, .seg = 4}};
  for (size_t i = 0; i < sizeof v1 / sizeof v1[0]; ++i) {
    assert_true(kda__tune_unsafe_in_servers(v1[i], 1, 128, 256));
    assert_true(kda__tune_unsafe_in_servers(v1[i], 1, end, 1ll << 40));
    /* Nothing wider (alignment): vec=1 is all there is, so it is timed. */
    assert_false(kda__tune_unsafe_in_servers(v1[i], 0, min, end));
  }
  const kda__config v2 = {.vec = 2, .tx = 8, .seg = 16};
  assert_false(kda__tune_unsafe_in_servers(v2, 1, 128, min - 1));
  assert_true(kda__tune_unsafe_in_servers(v2, 1, 128, min));
  assert_true(kda__tune_unsafe_in_servers(v2, 1, 16384, 16384));
  assert_true(kda__tune_unsafe_in_servers(v2, 1, end - 1, 1ll << 40));
  assert_false(kda__tune_unsafe_in_servers(v2, 1, end, 1ll << 40));
  const kda__config others[] = {{.vec = 2, .tx = 8, .seg = 8},  {.vec = 2, .tx = 8, .seg = 32},
                                {.vec = 2, .tx = 16, .seg = 16}, {.vec = 4, .tx = 4, .seg = 8},
                                {.vec = 4, .tx = 4, .seg = 32},  {.vec = 8, .tx = 16, .seg = 8}};
  for (size_t i = 0; i < sizeof others / sizeof others[0]; ++i)
    assert_false(kda__tune_unsafe_in_servers(others[i], 1, 0, 1ll << 40));
  /* The buckets' token ranges tile [1, inf) as kda__tune_bucket does. */
  for (int32_t b = 0; b < 5; ++b) {
    int64_t lo, hi;
    kda__tune_bucket_tokens(b, &lo, &hi);
    assert_int_equal(kda__tune_bucket(lo), b);
    assert_int_equal(kda__tune_bucket(hi), b);
    if (b < 4) assert_int_equal(kda__tune_bucket(hi + 1), b + 1);
  }
}

/* A left-out shape is stored as a rejected, untimed trial whose reason
 * starts with the public prefix (kda_db.h), which kda-tune show counts;
 * it can never win. */
static void left_out_shapes_are_stored_as_untimed_rejected_trials(void **state) {
  (void)state;
  kda__tune_trial t[2];
  memset(t, 0, sizeof t);
  t[0].cfg = (kda__config){.vec = 4, .tx = 4, .seg = 32};
  t[0].status = KDA__TRIAL_OK;
  t[0].median_us = 5.0;
  t[0].measured = 1;
  kda__tune_left_out_trial((kda__config){.vec = 1, .tx = 16, .seg = 8}, 17, &t[1]);
  assert_int_equal(t[1].status, KDA__TRIAL_REJECTED);
  assert_int_equal(t[1].config_id, 17);
  assert_int_equal(t[1].cfg.vec, 1);
  assert_true(t[1].median_us < 0 && t[1].p10_us < 0 && t[1].p90_us < 0 && t[1].max_err < 0);
  assert_int_equal(t[1].measured, 0);
  assert_int_equal(strncmp(t[1].reason, KDA_DB_TRIAL_LEFT_OUT, strlen(KDA_DB_TRIAL_LEFT_OUT)), 0);
  assert_string_equal(kda__trial_status_name(t[1].status), "rejected");
  assert_int_equal(kda__tune_pick(t, 2, 0.005), 0);
}

static void median_of_odd_and_even_counts_and_percentiles(void **state) {
  (void)state;
  double odd[] = {9, 1, 5, 3, 7};
  double m, lo, hi;
  kda__tune_summarize(odd, 5, &m, &lo, &hi);
  assert_true(m == 5);
  assert_true(lo == 1);
  assert_true(hi == 9);
  double even[] = {4, 1, 3, 2};
  kda__tune_summarize(even, 4, &m, NULL, NULL);
  assert_true(m == 2.5);
  /* An outlier moves neither the median nor p10. */
  double spiky[] = {10, 10, 10, 10, 10, 10, 10, 10, 10, 500};
  kda__tune_summarize(spiky, 10, &m, &lo, &hi);
  assert_true(m == 10 && lo == 10 && hi == 10);
  kda__tune_summarize(NULL, 0, &m, &lo, &hi);
  assert_true(m < 0 && lo < 0 && hi < 0);
  /* The input is not reordered. */
  assert_true(odd[0] == 9 && odd[4] == 7);
}

static void rejected_candidates_never_win_even_when_fastest(void **state) {
  (void)state;
  kda__tune_trial t[5];
  t[0] = ok_trial(7, 10.0);
  t[1] = ok_trial(2, 1.0);
  t[1].status = KDA__TRIAL_WRONG_RESULT;
  t[2] = ok_trial(3, 0.5);
  t[2].status = KDA__TRIAL_UNWRITTEN;
  t[3] = ok_trial(4, 0.1);
  t[3].status = KDA__TRIAL_COMPILE_FAILED;
  t[4] = ok_trial(5, 0.2);
  t[4].status = KDA__TRIAL_LAUNCH_FAILED;
  assert_int_equal(kda__tune_pick(t, 5, KDA__TUNE_BAND), 0);
  size_t idx[5];
  assert_int_equal(kda__tune_finalists(t, 5, KDA__TUNE_FINALIST_FRAC, idx, 5), 1);
  assert_int_equal(idx[0], 0);
  /* Nothing valid: no winner at all. */
  t[0].status = KDA__TRIAL_WRONG_RESULT;
  assert_int_equal(kda__tune_pick(t, 5, KDA__TUNE_BAND), -1);
  assert_int_equal(kda__tune_finalists(t, 5, KDA__TUNE_FINALIST_FRAC, idx, 5), 0);
}

static void unmeasured_candidates_never_win(void **state) {
  (void)state;
  kda__tune_trial t[2] = {ok_trial(1, 10.0), ok_trial(0, 1.0)};
  t[1].measured = 0; /* skipped for budget */
  assert_int_equal(kda__tune_pick(t, 2, KDA__TUNE_BAND), 0);
  t[1].measured = 1;
  t[1].median_us = NAN;
  assert_int_equal(kda__tune_pick(t, 2, KDA__TUNE_BAND), 0);
}

/* The compile-model class these tests use (fused gate + cumsum, chunk 64). */
#define CLS 4

/* The pick logic with a 2% band (the tests' numbers were chosen for it). */
#define BAND_2PCT 0.02

static void ties_within_the_band_go_to_the_lowest_config_id(void **state) {
  (void)state;
  /* Best 10.0; 10.15 is within 2%, 10.3 is not. */
  kda__tune_trial t[4] = {ok_trial(9, 10.15), ok_trial(5, 10.0), ok_trial(3, 10.3),
                          ok_trial(12, 10.1)};
  /* Within 10.2: ids 9, 5 and 12; the lowest id (5) wins over the fastest. */
  assert_int_equal(kda__tune_pick(t, 4, BAND_2PCT), 1);
  /* Exactly on the band's edge counts as within it. */
  t[1].median_us = 10.0;
  t[0].median_us = 10.2;
  t[0].config_id = 1;
  assert_int_equal(kda__tune_pick(t, 4, BAND_2PCT), 0);
}

/* The heuristic (trial 0) keeps its place within the band; a config that
 * beats it by more than the band replaces it. */
static void heuristic_within_the_band_is_kept(void **state) {
  (void)state;
  kda__tune_trial t[3] = {ok_trial(7, 10.04), ok_trial(2, 10.0), ok_trial(5, 10.02)};
  assert_int_equal(kda__tune_pick(t, 3, KDA__TUNE_BAND), 1);      /* lowest id */
  assert_int_equal(kda__tune_pick_keep(t, 3, KDA__TUNE_BAND, 0), 0); /* 10.04 <= 10.05 */
  t[0].median_us = 10.06;                                          /* past the band */
  assert_int_equal(kda__tune_pick_keep(t, 3, KDA__TUNE_BAND, 0), 1);
  t[0].median_us = 10.0;
  t[0].status = KDA__TRIAL_WRONG_RESULT; /* a rejected heuristic is not kept */
  assert_int_equal(kda__tune_pick_keep(t, 3, KDA__TUNE_BAND, 0), 1);
  t[0].status = KDA__TRIAL_OK;
  assert_int_equal(kda__tune_pick_keep(t, 3, KDA__TUNE_BAND, 9), 1); /* ref out of range */
  assert_int_equal(kda__tune_pick_keep(t, 0, KDA__TUNE_BAND, 0), -1);
}

static void tie_break_is_stable_under_permutation(void **state) {
  (void)state;
  kda__tune_trial base[4] = {ok_trial(9, 10.15), ok_trial(5, 10.0), ok_trial(3, 10.3),
                             ok_trial(12, 10.1)};
  /* Every order of the same trials picks config id 5 (lowest within 2%). */
  const int perms[6][4] = {{0, 1, 2, 3}, {3, 2, 1, 0}, {1, 3, 0, 2},
                           {2, 0, 3, 1}, {3, 1, 2, 0}, {2, 3, 0, 1}};
  for (int p = 0; p < 6; ++p) {
    kda__tune_trial t[4];
    for (int i = 0; i < 4; ++i) t[i] = base[perms[p][i]];
    long w = kda__tune_pick(t, 4, BAND_2PCT);
    assert_true(w >= 0);
    assert_int_equal(t[w].config_id, 5);
  }
  /* A noisy re-run that swaps the two fastest keeps the same winner. */
  base[1].median_us = 10.12;
  base[3].median_us = 10.0;
  long w = kda__tune_pick(base, 4, BAND_2PCT);
  assert_int_equal(base[w].config_id, 5);
  /* Clearly faster (beyond the band) wins regardless of id. */
  base[3].median_us = 9.0;
  w = kda__tune_pick(base, 4, BAND_2PCT);
  assert_int_equal(base[w].config_id, 12);
}

static void finalists_are_those_within_five_percent(void **state) {
  (void)state;
  kda__tune_trial t[5] = {ok_trial(0, 10.0), ok_trial(1, 10.4), ok_trial(2, 10.6),
                          ok_trial(3, 9.9), ok_trial(4, 20.0)};
  size_t idx[5];
  size_t n = kda__tune_finalists(t, 5, KDA__TUNE_FINALIST_FRAC, idx, 5);
  /* best 9.9 -> cutoff 10.395: ids 0 and 3 */
  assert_int_equal(n, 2);
  assert_int_equal(idx[0], 0);
  assert_int_equal(idx[1], 3);
  /* After the re-measure, the combined medians decide. */
  t[0].median_us = 9.7;
  assert_int_equal(kda__tune_pick(t, 5, KDA__TUNE_BAND), 0);
  /* cap bounds what is written, not the count. */
  assert_int_equal(kda__tune_finalists(t, 5, 1.0, idx, 1), 4);
}

static void bucket_boundaries_match_the_header(void **state) {
  (void)state;
  assert_int_equal(kda__tune_bucket(1), 0);
  assert_int_equal(kda__tune_bucket(1023), 0);
  assert_int_equal(kda__tune_bucket(1024), 1);
  assert_int_equal(kda__tune_bucket(4095), 1);
  assert_int_equal(kda__tune_bucket(4096), 2);
  assert_int_equal(kda__tune_bucket(16383), 2);
  assert_int_equal(kda__tune_bucket(16384), 3);
  assert_int_equal(kda__tune_bucket(65535), 3);
  assert_int_equal(kda__tune_bucket(65536), 4);
  assert_int_equal(kda__tune_bucket(INT64_C(1) << 40), 4);
  assert_int_equal(kda_token_bucket(5000), 2);
}

/* The compile estimate recomputed here: n candidates and the compare kernel
 * in min(t, n + 1) programs, the largest of ceil((n + 1) / programs). */
static double model_compile_ms(const kda__tune_budget *b, size_t n, int t) {
  const size_t programs = (size_t)t < n + 1 ? (size_t)t : n + 1;
  const size_t largest = (n + 1 + programs - 1) / programs;
  return b->compile.parse_ms + kda__compile_model_inst_ms(&b->compile, programs) * (double)largest;
}

static int fits(const kda__tune_budget *b, size_t n, int t) {
  return model_compile_ms(b, n, t) <= b->compile_share * b->budget_ms &&
         kda__tune_estimate_ms(b, n) <= b->budget_ms;
}

/* Models to check the fit against: the defaults, one that learned slow
 * parallel compiles, one that learned nearly linear scaling. */
static kda__compile_model test_model(int which) {
  kda__compile_model m = kda__compile_model_default();
  if (which == 1) kda__compile_model_observe(&m, 100 + 2 * 900.0, 8, 2);
  if (which == 2) {
    kda__compile_model_observe(&m, 100 + 4 * 120.0, 8, 4);
    kda__compile_model_observe(&m, 100 + 4 * 110.0, 1, 4);
  }
  return m;
}

static void budget_fit_is_the_most_candidates_within_the_estimate(void **state) {
  (void)state;
  for (int which = 0; which < 3; ++which) {
    for (double budget = 100; budget <= 20000; budget *= 1.7) {
      for (double launch = 2; launch <= 20000; launch *= 5) {
        for (int t = 1; t <= 16; ++t) {
          kda__tune_budget b = kda__tune_budget_default(budget, launch, CLS);
          b.compile = test_model(which);
          b.threads = t;
          const size_t n = kda__tune_fit(&b);
          assert_true(n >= 1 && n <= KDA__TUNE_SPACE_MAX);
          /* The floor: what the default compile model admits. */
          kda__tune_budget d = b;
          d.compile = kda__compile_model_default();
          if (n > 1) {
            assert_true(fits(&b, n, t) || fits(&d, n, t));
            if (fits(&b, n, t))
              assert_true(kda__tune_compile_ms(&b, n) == model_compile_ms(&b, n, t));
          }
          /* Maximal: no larger count fits either model. */
          for (size_t m = n + 1; m <= KDA__TUNE_SPACE_MAX && m <= n + 40; ++m)
            assert_false(fits(&b, m, t) || fits(&d, m, t));
        }
      }
    }
  }
  /* A large budget keeps many; a tiny one only the heuristic. */
  kda__tune_budget b = kda__tune_budget_default(10000, 20, CLS);
  b.compile = kda__compile_model_default();
  assert_true(kda__tune_fit(&b) >= 20);
  b = kda__tune_budget_default(50, 20, CLS);
  b.compile = kda__compile_model_default();
  b.threads = 8;
  assert_int_equal(kda__tune_fit(&b), 1);
  b.threads = 0; /* treated as one */
  assert_int_equal(kda__tune_fit(&b), 1);
}

/* The figures of the H100 machine (16 cores, NVRTC 13.0) that the defaults
 * come from (tuner.h): the defaults may not predict less than any of them. */
static void defaults_are_no_faster_than_the_gpu_machine_measured(void **state) {
  (void)state;
  const kda__compile_model m = kda__compile_model_default();
  const struct {
    size_t programs, largest;
    double wall_ms;
  } seen[] = {{1, 1, 197}, {1, 4, 500}, {8, 3, 1012}, {8, 4, 1715}, {8, 3, 1625}};
  for (size_t i = 0; i < sizeof seen / sizeof seen[0]; ++i)
    assert_true(m.parse_ms + kda__compile_model_inst_ms(&m, seen[i].programs) *
                                 (double)seen[i].largest >= seen[i].wall_ms);
  /* At most a 2x speedup from any number of programs. */
  const double one = kda__compile_model_inst_ms(&m, 1);
  for (size_t p = 1; p <= 64; ++p)
    assert_true((double)p * one / kda__compile_model_inst_ms(&m, p) <= 2.0 + 1e-9);
}

/* The first tuning run of a process, any thread count: the heuristic and a
 * few more, the compile estimated within 75% of the 1 s budget. */
static void defaults_admit_a_few_candidates_in_the_default_budget(void **state) {
  (void)state;
  for (int t = 1; t <= 16; ++t) {
    kda__tune_budget b = kda__tune_budget_default(1000, 20, CLS);
    b.compile = kda__compile_model_default();
    b.threads = t;
    const size_t n = kda__tune_fit(&b);
    printf("defaults, %2d threads: %zu candidates, compile ~%.0f ms\n", t, n,
           kda__tune_compile_ms(&b, n));
    assert_true(n >= 2 && n <= 10);
    assert_true(kda__tune_compile_ms(&b, n) <= 750);
    assert_true(kda__tune_estimate_ms(&b, n) <= 1000);
  }
  /* One thread: one program of 4 (100 + 4 x 150 ms); 8 threads (the
   * default on 16 cores): 8 programs of one (100 + 150 x 8 / 2 ms). */
  kda__tune_budget b = kda__tune_budget_default(1000, 20, CLS);
  b.compile = kda__compile_model_default();
  assert_int_equal(kda__tune_fit(&b), 3);
  b.threads = 8;
  assert_int_equal(kda__tune_fit(&b), 7);
}

static void calibration_learns_the_wall_time_of_parallel_compiles(void **state) {
  (void)state;
  kda__tune_budget b = kda__tune_budget_default(1000, 20, CLS);
  b.compile = kda__compile_model_default();
  b.threads = 8;
  const size_t cold = kda__tune_fit(&b);
  /* 8 programs that scale badly (1 s per instantiation of the largest):
   * fewer candidates, and the estimate is what was observed. */
  for (int i = 0; i < 4; ++i) kda__compile_model_observe(&b.compile, 100 + 2 * 1000.0, 8, 2);
  assert_true(fabs(kda__tune_compile_ms(&b, 15) - 2100) < 1e-6); /* 16 names: 8 x 2 */
  const size_t slow = kda__tune_fit(&b);
  /* The learned model admits fewer, but the search never shrinks below
   * what the defaults admit (kda__tune_fit's floor). */
  kda__tune_budget learned_only = b;
  learned_only.threads = 8;
  size_t fewer = 1;
  for (size_t m = 2; m <= 40; ++m)
    if (fits(&learned_only, m, 8)) fewer = m;
  assert_true(fewer < cold);
  assert_int_equal(slow, cold);
  /* The same 8 programs scaling well (120 ms each): more candidates. The
   * estimate follows in a few runs. */
  for (int i = 0; i < 10; ++i) kda__compile_model_observe(&b.compile, 100 + 4 * 120.0, 8, 4);
  assert_true(fabs(kda__tune_compile_ms(&b, 31) - 580) < 5); /* 32 names: 8 x 4 */
  const size_t fast = kda__tune_fit(&b);
  assert_true(fast > cold);
  assert_true(kda__tune_compile_ms(&b, fast) <= 750);
  printf("8 threads: %zu candidates cold, %zu after slow compiles, %zu after fast ones\n", cold,
         slow, fast);
  /* What is not a compile teaches nothing. */
  const kda__compile_model before = b.compile;
  kda__compile_model_observe(&b.compile, 0, 8, 4);
  kda__compile_model_observe(&b.compile, -5, 8, 4);
  kda__compile_model_observe(&b.compile, NAN, 8, 4);
  kda__compile_model_observe(&b.compile, 500, 0, 4);
  kda__compile_model_observe(&b.compile, 500, 8, 0);
  assert_memory_equal(&before, &b.compile, sizeof before);
  /* A compile faster than the assumed parse still costs something each. */
  kda__compile_model m = kda__compile_model_default();
  kda__compile_model_observe(&m, 60, 1, 1);
  assert_true(kda__compile_model_inst_ms(&m, 1) == 30);
}

static void unseen_levels_assume_no_more_speedup_than_observed(void **state) {
  (void)state;
  assert_int_equal(kda__tune_level(0), 0);
  assert_int_equal(kda__tune_level(1), 0);
  assert_int_equal(kda__tune_level(2), 1);
  assert_int_equal(kda__tune_level(3), 2);
  assert_int_equal(kda__tune_level(4), 2);
  assert_int_equal(kda__tune_level(5), 3);
  assert_int_equal(kda__tune_level(8), 3);
  assert_int_equal(kda__tune_level(9), 4);
  assert_int_equal(kda__tune_level(64), 4);
  kda__compile_model m = kda__compile_model_default();
  kda__compile_model_observe(&m, 100 + 4 * 150.0, 2, 4); /* 2 programs: 150 ms each */
  assert_true(kda__compile_model_inst_ms(&m, 2) == 150);
  assert_true(kda__compile_model_inst_ms(&m, 1) == 150); /* fewer: as long each */
  assert_true(kda__compile_model_inst_ms(&m, 4) == 300); /* more: 2 programs' throughput */
  assert_true(kda__compile_model_inst_ms(&m, 8) == 600);
  assert_true(kda__compile_model_inst_ms(&m, 16) == 1200);
  kda__compile_model_observe(&m, 100 + 2 * 400.0, 8, 2); /* 8 programs: 400 ms each */
  assert_true(kda__compile_model_inst_ms(&m, 8) == 400);
  assert_true(kda__compile_model_inst_ms(&m, 6) == 400);
  assert_true(kda__compile_model_inst_ms(&m, 16) == 800); /* nearest: 8 */
  /* 4 is as near to 2 (300) as to 8 (400): the slower. */
  assert_true(kda__compile_model_inst_ms(&m, 4) == 400);
  assert_true(kda__compile_model_inst_ms(&m, 1) == 150); /* nearest: 2 */
  /* Within a level, more programs than seen scale up too. */
  kda__compile_model_observe(&m, 100 + 300.0, 9, 1);
  assert_true(fabs(kda__compile_model_inst_ms(&m, 18) - 600) < 1e-9);
}

typedef struct calib_arg {
  int writer;
  _Atomic int *bad;
} calib_arg;

static void *calibrate_thread(void *p) {
  calib_arg *a = p;
  for (int i = 0; i < 200; ++i) {
    if (a->writer) {
      kda__tune_calibrate(CLS, 100 + 2 * 190.0, 4, 2);
    } else {
      const kda__tune_budget b = kda__tune_budget_default(1000, 20, CLS);
      /* Either the defaults or the learned level, never a torn mixture. */
      const double v = b.compile.inst_ms[2];
      if (!(v == 0 || v == 190) || b.compile.parse_ms != KDA__TUNE_COMPILE_PARSE_MS)
        atomic_fetch_add(a->bad, 1);
    }
  }
  return NULL;
}

/* Tuning runs on several threads calibrate the one model of the process
 * while others read it; every later budget starts from it. */
static void process_calibration_is_shared_by_concurrent_runs(void **state) {
  (void)state;
  const kda__tune_budget cold = kda__tune_budget_default(1000, 20, CLS);
  for (int l = 0; l < KDA__TUNE_COMPILE_LEVELS; ++l) assert_true(cold.compile.inst_ms[l] == 0);
  _Atomic int bad = 0;
  pthread_t th[8];
  calib_arg args[8];
  for (int i = 0; i < 8; ++i) {
    args[i] = (calib_arg){i % 2, &bad};
    assert_int_equal(pthread_create(&th[i], NULL, calibrate_thread, &args[i]), 0);
  }
  for (int i = 0; i < 8; ++i) pthread_join(th[i], NULL);
  assert_int_equal(atomic_load(&bad), 0);
  kda__tune_budget b = kda__tune_budget_default(1000, 20, CLS);
  assert_true(b.compile.inst_ms[2] == 190);
  for (int l = 0; l < KDA__TUNE_COMPILE_LEVELS; ++l)
    if (l != 2) assert_true(b.compile.inst_ms[l] == 0);
  b.threads = 4;
  assert_true(kda__tune_compile_ms(&b, 7) == 100 + 190 * 2); /* 8 names: 4 x 2 */
  /* 4 programs of 3 at 190 ms fit where the defaults (300 ms) fit 2 each. */
  assert_int_equal(kda__tune_fit(&b), 11);
  b.compile = kda__compile_model_default();
  assert_int_equal(kda__tune_fit(&b), 7);
}

static kda__spec gate_slot(int H, int K, int chunk) {
  kda__spec s;
  memset(&s, 0, sizeof s);
  s.kernel = KDA__KERNEL_GATE_CUMSUM;
  s.in_dtype = KDA_DTYPE_F32;
  s.out_dtype = KDA_DTYPE_F32;
  s.heads = H;
  s.head_dim = K;
  s.chunk = chunk;
  s.cumsum = 1;
  s.gate = KDA_GATE_SOFTPLUS;
  s.has_alog = 1;
  s.idx_dtype = KDA_DTYPE_I32;
  s.tuned = 1;
  s.vec_cap = 8;
  return s;
}

static void pruning_keeps_the_heuristic_first_and_is_deterministic(void **state) {
  (void)state;
  static kda__config space[KDA__TUNE_SPACE_MAX];
  const int shapes[][3] = {{32, 128, 64}, {4, 64, 16}, {1, 1, 64}, {64, 128, 256}, {3, 5, 32}};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; ++s) {
    kda__spec slot = gate_slot(shapes[s][0], shapes[s][1], shapes[s][2]);
    kda__spec h = slot;
    h.tuned = 0;
    h.vec_cap = 0;
    kda__config heur = kda__config_heuristic(&h);
    size_t hid = 0;
    size_t n = kda__tune_space(&slot, heur, space, KDA__TUNE_SPACE_MAX, &hid);
    assert_true(n >= 1 && hid < n);
    assert_true(space[hid].vec == heur.vec && space[hid].tx == heur.tx &&
                space[hid].seg == heur.seg);
    for (size_t keep = 1; keep <= 9; keep += 2) {
      size_t a[KDA__TUNE_SPACE_MAX], b[KDA__TUNE_SPACE_MAX];
      size_t ka = kda__tune_prune(&slot, space, n, hid, 1000, 132, keep, a);
      size_t kb = kda__tune_prune(&slot, space, n, hid, 1000, 132, keep, b);
      assert_int_equal(ka, keep < n ? keep : n);
      assert_int_equal(ka, kb);
      assert_memory_equal(a, b, ka * sizeof a[0]);
      assert_int_equal(a[0], hid);
      for (size_t i = 0; i < ka; ++i) {
        assert_true(a[i] < n);
        for (size_t q = 0; q < i; ++q) assert_true(a[q] != a[i]); /* no duplicates */
        kda__spec c = h;
        c.cfg = space[a[i]];
        assert_int_equal(kda__config_check(&c), KDA_OK);
      }
    }
  }
}

static void the_space_honours_the_alignment_cap(void **state) {
  (void)state;
  static kda__config space[KDA__TUNE_SPACE_MAX];
  kda__spec slot = gate_slot(8, 128, 64);
  slot.vec_cap = 2;
  kda__config heur = {2, 32, 8};
  size_t hid;
  size_t n = kda__tune_space(&slot, heur, space, KDA__TUNE_SPACE_MAX, &hid);
  for (size_t i = 0; i < n; ++i) assert_true(space[i].vec <= 2);
  /* A heuristic outside the enumerated space is appended, never lost. */
  kda__config odd = {1, 1, 1};
  n = kda__tune_space(&slot, odd, space, KDA__TUNE_SPACE_MAX, &hid);
  assert_int_equal(hid, n - 1);
  n = kda__tune_space(&slot, odd, space, 3, &hid);
  assert_int_equal(n, 3);
  assert_int_equal(hid, 2);
}

/* The library's band gives away less than 1%: a candidate 1% faster than a
 * lower config id wins (the 2% band lost 1.5-2.5% on the H100). */
static void the_library_band_keeps_a_one_percent_win(void **state) {
  (void)state;
  assert_true(KDA__TUNE_BAND < 0.01);
  kda__tune_trial t[2] = {ok_trial(3, 10.0), ok_trial(7, 9.9)};
  assert_int_equal(kda__tune_pick(t, 2, KDA__TUNE_BAND), 1);
  t[1].median_us = 9.97; /* 0.3%: a tie, the lower id */
  assert_int_equal(kda__tune_pick(t, 2, KDA__TUNE_BAND), 0);
}

/* What runs measured besides compiling makes later budgets admit fewer
 * candidates; a measurement below the default floor changes nothing.
 * Changes the process's model: registered last. */
static void measured_overhead_per_candidate_shrinks_later_budgets(void **state) {
  (void)state;
  kda__tune_budget b = kda__tune_budget_default(1000, 20, CLS);
  assert_true(b.overhead_ms == KDA__TUNE_CANDIDATE_OVERHEAD_MS);
  b.threads = 8;
  const size_t before = kda__tune_fit(&b);
  kda__tune_calibrate_overhead(KDA__TUNE_CANDIDATE_OVERHEAD_MS / 10);
  kda__tune_calibrate_overhead(-1);
  kda__tune_calibrate_overhead(NAN);
  assert_true(kda__tune_budget_default(1000, 20, CLS).overhead_ms == KDA__TUNE_CANDIDATE_OVERHEAD_MS);
  kda__tune_calibrate_overhead(200.0); /* EMA with the first: (0.05 + 200) / 2 */
  b = kda__tune_budget_default(1000, 20, CLS);
  assert_true(fabs(b.overhead_ms - (KDA__TUNE_CANDIDATE_OVERHEAD_MS / 10 + 200.0) / 2) < 1e-9);
  b.threads = 8;
  const size_t after = kda__tune_fit(&b);
  assert_true(after < before);
  assert_true(kda__tune_estimate_ms(&b, after) <= 1000);
}

/* A cheap kernel's compiles do not teach the fused kernel's model. Changes
 * the process's model: registered last. */
static void each_kernel_class_learns_its_own_compile_cost(void **state) {
  (void)state;
  kda__spec s = gate_slot(32, 128, 64);
  assert_int_equal(kda__tune_compile_class(&s), 4); /* fused */
  s.cumsum = 0;
  assert_int_equal(kda__tune_compile_class(&s), 3); /* gate only */
  s.cumsum = 1;
  s.gate = KDA_GATE_NONE;
  assert_int_equal(kda__tune_compile_class(&s), 2); /* cumsum only */
  s.chunk = 128;
  assert_int_equal(kda__tune_compile_class(&s), 5);
  s.gate = KDA_GATE_SOFTPLUS;
  assert_int_equal(kda__tune_compile_class(&s), 7);
  s.kernel = KDA__KERNEL_CHUNK_INDICES;
  assert_int_equal(kda__tune_compile_class(&s), 0);
  const double fused_before = kda__tune_budget_default(1000, 20, 4).compile.inst_ms[3];
  kda__tune_calibrate(3, 100 + 200.0, 8, 1); /* gate only: 200 ms per instantiation */
  assert_true(kda__tune_budget_default(1000, 20, 3).compile.inst_ms[3] == 200);
  assert_true(kda__tune_budget_default(1000, 20, 4).compile.inst_ms[3] == fused_before);
  /* An out-of-range class reads and writes class 0, never past the table. */
  kda__tune_calibrate(KDA__TUNE_COMPILE_CLASSES, 100 + 300.0, 8, 1);
  assert_true(kda__tune_budget_default(1000, 20, -1).compile.inst_ms[3] == 300);
}

/* kda-tune prewarm's default budget is meant to search the whole space:
 * even a process's first search, on the default NVRTC cost model (nothing
 * calibrated yet) with 8 compile threads, fits every candidate of the
 * fused kernel's space at T=512 and at T=65536 (launch estimates 5 and 545
 * us). At 10 s the first search fitted 95 of 124 (H100, thirteenth
 * session). */
static void prewarm_budget_fits_the_whole_space_on_the_default_model(void **state) {
  (void)state;
  static kda__config space[KDA__TUNE_SPACE_MAX];
  const int heads[] = {4, 8, 16, 32, 64};
  for (size_t h = 0; h < sizeof heads / sizeof heads[0]; ++h) {
    kda__spec slot = gate_slot(heads[h], 128, 64);
    kda__spec c = slot;
    c.tuned = 0;
    c.vec_cap = 0;
    size_t hid = 0;
    const size_t n = kda__tune_space(&slot, kda__config_heuristic(&c), space, KDA__TUNE_SPACE_MAX, &hid);
    for (int e = 0; e < 2; ++e) {
      kda__tune_budget b = kda__tune_budget_default(KDA_PREWARM_BUDGET_MS, e ? 545 : 5,
                                                    kda__tune_compile_class(&slot));
      b.compile = kda__compile_model_default();
      b.threads = 8;
      printf("H=%d, launch %s us: %zu candidates, the prewarm budget fits %zu\n", heads[h],
             e ? "545" : "5", n, kda__tune_fit(&b));
      assert_true(kda__tune_fit(&b) >= n);
    }
  }
}

/* A short run still tries every vector width: the small grids' winners on
 * the H100 were vec 2 and 4 where the heuristic is vec 8. */
static void pruning_tries_every_vector_width_early(void **state) {
  (void)state;
  static kda__config space[KDA__TUNE_SPACE_MAX];
  size_t out[KDA__TUNE_SPACE_MAX];
  kda__spec slot = gate_slot(32, 128, 64);
  kda__spec h = slot;
  h.tuned = 0;
  h.vec_cap = 0;
  const kda__config heur = kda__config_heuristic(&h);
  size_t hid = 0;
  const size_t n = kda__tune_space(&slot, heur, space, KDA__TUNE_SPACE_MAX, &hid);
  for (size_t keep = 4; keep <= 8; ++keep) {
    const size_t k = kda__tune_prune(&slot, space, n, hid, 128, 132, keep, out);
    assert_int_equal(k, keep);
    assert_int_equal(out[0], hid);
    int seen[9] = {0};
    for (size_t i = 0; i < k; ++i) seen[space[out[i]].vec] = 1;
    for (int v = 1; v <= 8; v *= 2) {
      int present = 0;
      for (size_t i = 0; i < n; ++i) present |= space[i].vec == v;
      if (present) assert_true(seen[v]);
    }
    /* The width's representative is its nearest shape to the heuristic:
     * the vec-4 one keeps the heuristic's tx and seg where that exists. */
    for (size_t i = 1; i < k; ++i)
      if (space[out[i]].vec == heur.vec / 2) {
        assert_int_equal(space[out[i]].tx, heur.tx);
        assert_int_equal(space[out[i]].seg, heur.seg);
        break;
      }
  }
  /* Fewer than 4 kept: by rank only, the heuristic first. */
  assert_int_equal(kda__tune_prune(&slot, space, n, hid, 128, 132, 3, out), 3);
  assert_int_equal(out[0], hid);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(median_of_odd_and_even_counts_and_percentiles),
      cmocka_unit_test(shapes_slow_in_servers_are_left_out_and_nothing_else),
      cmocka_unit_test(left_out_shapes_are_stored_as_untimed_rejected_trials),
      cmocka_unit_test(rejected_candidates_never_win_even_when_fastest),
      cmocka_unit_test(unmeasured_candidates_never_win),
      cmocka_unit_test(ties_within_the_band_go_to_the_lowest_config_id),
      cmocka_unit_test(heuristic_within_the_band_is_kept),
      cmocka_unit_test(tie_break_is_stable_under_permutation),
      cmocka_unit_test(finalists_are_those_within_five_percent),
      cmocka_unit_test(bucket_boundaries_match_the_header),
      cmocka_unit_test(budget_fit_is_the_most_candidates_within_the_estimate),
      cmocka_unit_test(defaults_are_no_faster_than_the_gpu_machine_measured),
      cmocka_unit_test(defaults_admit_a_few_candidates_in_the_default_budget),
      cmocka_unit_test(prewarm_budget_fits_the_whole_space_on_the_default_model),
      cmocka_unit_test(calibration_learns_the_wall_time_of_parallel_compiles),
      cmocka_unit_test(unseen_levels_assume_no_more_speedup_than_observed),
      cmocka_unit_test(pruning_keeps_the_heuristic_first_and_is_deterministic),
      cmocka_unit_test(the_space_honours_the_alignment_cap),
      cmocka_unit_test(pruning_tries_every_vector_width_early),
      cmocka_unit_test(the_library_band_keeps_a_one_percent_win),
      /* Last: they change the process-wide model. */
      cmocka_unit_test(process_calibration_is_shared_by_concurrent_runs),
      cmocka_unit_test(measured_overhead_per_candidate_shrinks_later_budgets),
      cmocka_unit_test(each_kernel_class_learns_its_own_compile_cost),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
