/* Selection logic of the tuner, free of any device: statistics of samples,
 * finalists, the winner's tie-break, and the budget model that prunes the
 * candidate list. Tested with injected timings (tests/test_tuner_select.c). */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "tuner.h"

int32_t kda__tune_bucket(int64_t tokens) {
  if (tokens < 1024) return 0;
  if (tokens < 4096) return 1;
  if (tokens < 16384) return 2;
  if (tokens < 65536) return 3;
  return 4;
}

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Nearest rank on a sorted array: the value at ceil(q * n) - 1. */
static double rank(const double *sorted, size_t n, double q) {
  size_t r = (size_t)ceil(q * (double)n);
  if (r < 1) r = 1;
  if (r > n) r = n;
  return sorted[r - 1];
}

void kda__tune_summarize(const double *samples, size_t n, double *median, double *p10,
                         double *p90) {
  double m = -1, lo = -1, hi = -1;
  double stack[128];
  double *v = n <= 128 ? stack : malloc(n * sizeof *v);
  if (n > 0 && v != NULL) {
    memcpy(v, samples, n * sizeof *v);
    qsort(v, n, sizeof *v, cmp_double);
    m = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    lo = rank(v, n, 0.10);
    hi = rank(v, n, 0.90);
  }
  if (v != stack) free(v);
  if (median) *median = m;
  if (p10) *p10 = lo;
  if (p90) *p90 = hi;
}

static int usable(const kda__tune_trial *t) {
  return t->status == KDA__TRIAL_OK && t->measured && t->median_us >= 0 && isfinite(t->median_us);
}

static double best_median(const kda__tune_trial *trials, size_t n) {
  double best = -1;
  for (size_t i = 0; i < n; ++i)
    if (usable(&trials[i]) && (best < 0 || trials[i].median_us < best)) best = trials[i].median_us;
  return best;
}

size_t kda__tune_finalists(const kda__tune_trial *trials, size_t n, double frac, size_t *idx,
                           size_t cap) {
  const double best = best_median(trials, n);
  if (best < 0) return 0;
  size_t k = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!usable(&trials[i]) || trials[i].median_us > best * (1.0 + frac)) continue;
    if (k < cap) idx[k] = i;
    ++k;
  }
  return k;
}

long kda__tune_pick(const kda__tune_trial *trials, size_t n, double band) {
  const double best = best_median(trials, n);
  if (best < 0) return -1;
  long win = -1;
  for (size_t i = 0; i < n; ++i) {
    if (!usable(&trials[i]) || trials[i].median_us > best * (1.0 + band)) continue;
    if (win < 0 || trials[i].config_id < trials[win].config_id) win = (long)i;
  }
  return win;
}

/* Measured NVRTC cost per instantiation in this process, microseconds
 * (0 until the first tuning run compiles). */
static _Atomic uint64_t g_compile_us_per_instantiation;

void kda__tune_calibrate(double compile_ms, size_t instantiations) {
  if (instantiations == 0 || !(compile_ms > 0)) return;
  const uint64_t now = (uint64_t)(compile_ms * 1e3 / (double)instantiations);
  const uint64_t old = atomic_load(&g_compile_us_per_instantiation);
  atomic_store(&g_compile_us_per_instantiation, old ? (old + now) / 2 : now);
}

kda__tune_budget kda__tune_budget_default(double budget_ms, double launch_us) {
  kda__tune_budget b;
  b.budget_ms = budget_ms;
  b.compile_first_ms = KDA__TUNE_COMPILE_FIRST_MS;
  b.compile_extra_ms = KDA__TUNE_COMPILE_EXTRA_MS;
  const uint64_t per_us = atomic_load(&g_compile_us_per_instantiation);
  if (per_us > 0) {
    /* The first candidate comes with the compare kernel and the parse. */
    b.compile_extra_ms = (double)per_us / 1e3;
    b.compile_first_ms = 1.5 * b.compile_extra_ms;
  }
  b.compile_share = KDA__TUNE_COMPILE_SHARE;
  b.launch_us = launch_us;
  /* validation + warm-up + samples + a re-measure for finalists */
  b.launches_per_candidate = 1 + KDA__TUNE_WARMUP + 2 * KDA__TUNE_SAMPLES;
  b.overhead_ms = KDA__TUNE_CANDIDATE_OVERHEAD_MS;
  b.threads = 1;
  return b;
}

/* n candidates and the compare kernel split over b->threads programs
 * compiled at once: the wall time is the largest program's, whose first
 * instantiation also pays for the parse (compile_first_ms). */
static double compile_ms(const kda__tune_budget *b, size_t n) {
  if (n == 0) return 0;
  const size_t threads = b->threads > 1 ? (size_t)b->threads : 1;
  const size_t largest = (n + 1 + threads - 1) / threads;
  return b->compile_first_ms + b->compile_extra_ms * (double)(largest > 2 ? largest - 2 : 0);
}

double kda__tune_estimate_ms(const kda__tune_budget *b, size_t n) {
  const double per = b->overhead_ms + b->launches_per_candidate * b->launch_us / 1000.0;
  return compile_ms(b, n) + per * (double)n;
}

size_t kda__tune_fit(const kda__tune_budget *b) {
  size_t n = 1;
  while (n < KDA__TUNE_SPACE_MAX && compile_ms(b, n + 1) <= b->compile_share * b->budget_ms &&
         kda__tune_estimate_ms(b, n + 1) <= b->budget_ms)
    ++n;
  return n;
}

static double log2_ratio(int a, int b) {
  if (a <= 0 || b <= 0) return 8;
  return fabs(log2((double)a / (double)b));
}

/* Lower is more promising. */
static double score(const kda__spec *slot, const kda__config *c, const kda__config *h,
                    int64_t num_chunks, int sm_count) {
  double s = log2_ratio(c->vec, h->vec) + log2_ratio(c->tx, h->tx) + log2_ratio(c->seg, h->seg);
  const int threads = c->tx * c->seg;
  if (threads < 64) s += 1.0;  /* too few warps per block to hide latency */
  if (threads > 512) s += 0.5; /* one block per SM at most: tail effects */
  kda__spec t = *slot;
  t.cfg = *c;
  const uint64_t grid = kda__spec_grid(&t, num_chunks);
  if (kda__grid_starves_sms(grid, sm_count)) s += 1.0; /* idle SMs */
  return s;
}

size_t kda__tune_prune(const kda__spec *slot, const kda__config *space, size_t n,
                       size_t heuristic_id, int64_t num_chunks, int sm_count, size_t keep,
                       size_t *out) {
  if (n == 0 || keep == 0 || heuristic_id >= n) return 0;
  if (keep > n) keep = n;
  const kda__config *h = &space[heuristic_id];
  double *sc = malloc(n * sizeof *sc);
  char *taken = calloc(n, 1);
  if (sc == NULL || taken == NULL) {
    free(sc);
    free(taken);
    out[0] = heuristic_id;
    return 1;
  }
  for (size_t i = 0; i < n; ++i) sc[i] = score(slot, &space[i], h, num_chunks, sm_count);
  size_t k = 0;
  out[k++] = heuristic_id;
  taken[heuristic_id] = 1;
  while (k < keep) {
    size_t best = n;
    for (size_t i = 0; i < n; ++i)
      if (!taken[i] && (best == n || sc[i] < sc[best])) best = i; /* ties: lower index */
    if (best == n) break;
    taken[best] = 1;
    out[k++] = best;
  }
  free(sc);
  free(taken);
  return k;
}
