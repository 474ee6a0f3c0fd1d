/* The tuner's selection logic with injected timings: statistics, rejection
 * of wrong, unwritten and failed candidates, budget pruning, tie handling
 * and the finalists that are re-measured. No device. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

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

static void ties_within_the_band_go_to_the_lowest_config_id(void **state) {
  (void)state;
  /* Best 10.0; 10.15 is within 2%, 10.3 is not. */
  kda__tune_trial t[4] = {ok_trial(9, 10.15), ok_trial(5, 10.0), ok_trial(3, 10.3),
                          ok_trial(12, 10.1)};
  /* Within 10.2: ids 9, 5 and 12; the lowest id (5) wins over the fastest. */
  assert_int_equal(kda__tune_pick(t, 4, KDA__TUNE_BAND), 1);
  /* Exactly on the band's edge counts as within it. */
  t[1].median_us = 10.0;
  t[0].median_us = 10.2;
  t[0].config_id = 1;
  assert_int_equal(kda__tune_pick(t, 4, KDA__TUNE_BAND), 0);
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
    long w = kda__tune_pick(t, 4, KDA__TUNE_BAND);
    assert_true(w >= 0);
    assert_int_equal(t[w].config_id, 5);
  }
  /* A noisy re-run that swaps the two fastest keeps the same winner. */
  base[1].median_us = 10.12;
  base[3].median_us = 10.0;
  long w = kda__tune_pick(base, 4, KDA__TUNE_BAND);
  assert_int_equal(base[w].config_id, 5);
  /* Clearly faster (beyond the band) wins regardless of id. */
  base[3].median_us = 9.0;
  w = kda__tune_pick(base, 4, KDA__TUNE_BAND);
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

static void budget_fit_respects_the_estimate_and_compile_share(void **state) {
  (void)state;
  for (double budget = 100; budget <= 20000; budget *= 1.7) {
    for (double launch = 2; launch <= 20000; launch *= 5) {
      kda__tune_budget b = kda__tune_budget_default(budget, launch);
      size_t n = kda__tune_fit(&b);
      assert_true(n >= 1);
      if (n > 1) {
        assert_true(kda__tune_estimate_ms(&b, n) <= budget);
        assert_true(b.compile_first_ms + b.compile_extra_ms * (double)(n - 1) <=
                    b.compile_share * budget + 1e-9);
      }
      /* Maximal: one more would not fit. */
      if (n < KDA__TUNE_SPACE_MAX) {
        const int over_compile = b.compile_first_ms + b.compile_extra_ms * (double)n >
                                 b.compile_share * budget;
        const int over_total = kda__tune_estimate_ms(&b, n + 1) > budget;
        assert_true(over_compile || over_total);
      }
    }
  }
  /* The default budget keeps two (NVRTC takes ~0.3-0.45 s per candidate on
   * an H100 machine); a large one keeps many; a tiny one only the heuristic. */
  kda__tune_budget b = kda__tune_budget_default(1000, 20);
  assert_int_equal(kda__tune_fit(&b), 2);
  b = kda__tune_budget_default(10000, 20);
  assert_true(kda__tune_fit(&b) >= 20);
  b = kda__tune_budget_default(50, 20);
  assert_int_equal(kda__tune_fit(&b), 1);
}

/* The wall time of a compile split over t programs at once: the largest
 * program's, ceil((n + 1) / t) instantiations with the compare kernel. */
static double model_compile_ms(const kda__tune_budget *b, size_t n, int t) {
  const size_t largest = (n + 1 + (size_t)t - 1) / (size_t)t;
  return b->compile_first_ms + b->compile_extra_ms * (double)(largest > 2 ? largest - 2 : 0);
}

static void parallel_compile_threads_fit_more_candidates_in_the_same_budget(void **state) {
  (void)state;
  for (double budget = 100; budget <= 20000; budget *= 1.7) {
    for (double launch = 2; launch <= 20000; launch *= 5) {
      size_t prev = 0;
      for (int t = 1; t <= 16; t *= 2) {
        kda__tune_budget b = kda__tune_budget_default(budget, launch);
        b.threads = t;
        const size_t n = kda__tune_fit(&b);
        assert_true(n >= prev); /* more threads never fewer candidates */
        prev = n;
        if (n > 1) {
          assert_true(kda__tune_estimate_ms(&b, n) <= budget);
          assert_true(model_compile_ms(&b, n, t) <= b.compile_share * budget + 1e-9);
        }
        if (n < KDA__TUNE_SPACE_MAX) {
          const int over_compile = model_compile_ms(&b, n + 1, t) > b.compile_share * budget;
          assert_true(over_compile || kda__tune_estimate_ms(&b, n + 1) > budget);
        }
      }
    }
  }
  /* Default costs (450 ms first, 300 ms each), 1 s: one thread keeps 2;
   * eight keep 23 (24 instantiations in programs of 3: 450 + 300 ms). */
  kda__tune_budget b = kda__tune_budget_default(1000, 20);
  b.threads = 8;
  assert_int_equal(kda__tune_fit(&b), 23);
  b.threads = 1;
  assert_int_equal(kda__tune_fit(&b), 2);
  b.threads = 0; /* treated as one */
  assert_int_equal(kda__tune_fit(&b), 2);
}

static void measured_compile_cost_replaces_the_default(void **state) {
  (void)state;
  kda__tune_budget before = kda__tune_budget_default(1000, 20);
  kda__tune_calibrate(400.0, 4); /* 100 ms per instantiation */
  kda__tune_budget after = kda__tune_budget_default(1000, 20);
  assert_true(after.compile_extra_ms < before.compile_extra_ms);
  assert_true(kda__tune_fit(&after) > kda__tune_fit(&before));
  assert_true(kda__tune_estimate_ms(&after, kda__tune_fit(&after)) <= 1000);
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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(median_of_odd_and_even_counts_and_percentiles),
      cmocka_unit_test(rejected_candidates_never_win_even_when_fastest),
      cmocka_unit_test(unmeasured_candidates_never_win),
      cmocka_unit_test(ties_within_the_band_go_to_the_lowest_config_id),
      cmocka_unit_test(tie_break_is_stable_under_permutation),
      cmocka_unit_test(finalists_are_those_within_five_percent),
      cmocka_unit_test(bucket_boundaries_match_the_header),
      cmocka_unit_test(budget_fit_respects_the_estimate_and_compile_share),
      cmocka_unit_test(parallel_compile_threads_fit_more_candidates_in_the_same_budget),
      cmocka_unit_test(pruning_keeps_the_heuristic_first_and_is_deterministic),
      cmocka_unit_test(the_space_honours_the_alignment_cap),
      /* Last: it changes the process-wide compile estimate. */
      cmocka_unit_test(measured_compile_cost_replaces_the_default),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
