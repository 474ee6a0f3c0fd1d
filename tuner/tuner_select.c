/* Selection logic of the tuner, free of any device: statistics of samples,
 * finalists, the winner's tie-break, and the budget model that prunes the
 * candidate list, with the NVRTC wall times this process has learned.
 * Tested with injected timings (tests/test_tuner_select.c). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tuner.h"

/* The first token count of each bucket (tuner.h). */
static const int64_t bucket_start[KDA__TUNE_BUCKETS] = {1, 1024, 4096, 16384, 65536};

int32_t kda__tune_bucket(int64_t tokens) {
  int32_t b = 0;
  while (b + 1 < KDA__TUNE_BUCKETS && tokens >= bucket_start[b + 1]) ++b;
  return b;
}

void kda__tune_bucket_tokens(int32_t bucket, int64_t *lo, int64_t *hi) {
  if (bucket < 0) bucket = 0;
  if (bucket > KDA__TUNE_BUCKETS - 1) bucket = KDA__TUNE_BUCKETS - 1;
  *lo = bucket_start[bucket];
  *hi = bucket + 1 < KDA__TUNE_BUCKETS ? bucket_start[bucket + 1] - 1 : INT64_MAX / 4;
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

long kda__tune_pick_keep(const kda__tune_trial *trials, size_t n, double band, size_t ref) {
  const double best = best_median(trials, n);
  if (ref < n && usable(&trials[ref]) && trials[ref].median_us <= best * (1.0 + band))
    return (long)ref;
  return kda__tune_pick(trials, n, band);
}

void kda__tune_left_out_trial(kda__config c, int32_t config_id, kda__tune_trial *t) {
  memset(t, 0, sizeof *t);
  t->cfg = c;
  t->config_id = config_id;
  t->status = KDA__TRIAL_REJECTED;
  snprintf(t->reason, sizeof t->reason, "%s", KDA__TUNE_LEFT_OUT_REASON);
  t->median_us = t->p10_us = t->p90_us = t->max_err = -1;
}

int kda__tune_unsafe_in_servers(kda__config c, int wider, int64_t lo_columns,
                                int64_t hi_columns) {
  if (c.vec == 1) return wider;
  if (c.vec == 2 && c.tx == 8 && c.seg == 16)
    return hi_columns >= KDA__TUNE_SERVER_SLOW_MIN_COLUMNS &&
           lo_columns < KDA__TUNE_SERVER_SLOW_END_COLUMNS;
  return 0;
}

int kda__tune_level(size_t programs) {
  if (programs <= 1) return 0;
  if (programs == 2) return 1;
  if (programs <= 4) return 2;
  if (programs <= 8) return 3;
  return 4;
}

kda__compile_model kda__compile_model_default(void) {
  kda__compile_model m;
  memset(&m, 0, sizeof m);
  m.parse_ms = KDA__TUNE_COMPILE_PARSE_MS;
  return m;
}

void kda__compile_model_observe(kda__compile_model *m, double wall_ms, size_t programs,
                                size_t largest) {
  if (programs == 0 || largest == 0 || !(wall_ms > 0) || !isfinite(wall_ms)) return;
  /* The parse is a guess, not measured: on a machine faster than the one it
   * came from it must not eat the whole compile, so at most half of it. */
  const double work = wall_ms - m->parse_ms > wall_ms / 2 ? wall_ms - m->parse_ms : wall_ms / 2;
  const double inst = work / (double)largest;
  const int l = kda__tune_level(programs);
  const double a = m->inst_ms[l] > 0 ? KDA__TUNE_COMPILE_EMA : 1.0;
  m->inst_ms[l] = (1 - a) * m->inst_ms[l] + a * inst;
  m->programs[l] = (1 - a) * m->programs[l] + a * (double)programs;
}

/* inst_ms for p programs from level l, seen at m->programs[l] programs:
 * more programs than that share its throughput; fewer take as long each. */
static double derive(const kda__compile_model *m, int l, double p) {
  const double seen = m->programs[l] >= 1 ? m->programs[l] : 1;
  return p > seen ? m->inst_ms[l] * p / seen : m->inst_ms[l];
}

double kda__compile_model_inst_ms(const kda__compile_model *m, size_t programs) {
  const double p = programs > 1 ? (double)programs : 1;
  const int want = kda__tune_level(programs);
  double est = 0;
  int dist = KDA__TUNE_COMPILE_LEVELS;
  for (int l = 0; l < KDA__TUNE_COMPILE_LEVELS; ++l) {
    if (!(m->inst_ms[l] > 0)) continue;
    const int d = abs(l - want);
    const double e = derive(m, l, p);
    if (d < dist || (d == dist && e > est)) est = e; /* equally near: the slower */
    if (d < dist) dist = d;
  }
  if (est > 0) return est;
  const double speedup = p < KDA__TUNE_COMPILE_SPEEDUP_MAX ? p : KDA__TUNE_COMPILE_SPEEDUP_MAX;
  return KDA__TUNE_COMPILE_INST_MS * p / speedup;
}

/* The process's model: tuning runs on several threads calibrate and read it
 * at once, and a budget takes a consistent copy. */
static pthread_mutex_t g_model_lock = PTHREAD_MUTEX_INITIALIZER;
static kda__compile_model g_model[KDA__TUNE_COMPILE_CLASSES];
static int g_model_init; /* under g_model_lock */

static kda__compile_model *model_of(int cls) {
  if (!g_model_init) {
    for (int c = 0; c < KDA__TUNE_COMPILE_CLASSES; ++c) g_model[c] = kda__compile_model_default();
    g_model_init = 1;
  }
  return &g_model[cls >= 0 && cls < KDA__TUNE_COMPILE_CLASSES ? cls : 0];
}

int kda__tune_compile_class(const kda__spec *slot) {
  if (slot->kernel != KDA__KERNEL_GATE_CUMSUM) return 0;
  return 1 + (slot->cumsum ? 1 : 0) + (slot->gate != KDA_GATE_NONE ? 2 : 0) +
         (slot->chunk > 64 ? 3 : 0);
}

/* Learned time per candidate besides its compile and its timed launches
 * (module loads, validation, syncs); 0 until a run has measured it. */
static double g_overhead_ms;

void kda__tune_calibrate_overhead(double per_candidate_ms) {
  if (!(per_candidate_ms > 0) || !isfinite(per_candidate_ms)) return;
  pthread_mutex_lock(&g_model_lock);
  g_overhead_ms = g_overhead_ms > 0 ? (1 - KDA__TUNE_COMPILE_EMA) * g_overhead_ms +
                                          KDA__TUNE_COMPILE_EMA * per_candidate_ms
                                    : per_candidate_ms;
  pthread_mutex_unlock(&g_model_lock);
}

void kda__tune_calibrate(int cls, double wall_ms, size_t programs, size_t largest) {
  pthread_mutex_lock(&g_model_lock);
  kda__compile_model_observe(model_of(cls), wall_ms, programs, largest);
  pthread_mutex_unlock(&g_model_lock);
}

kda__tune_budget kda__tune_budget_default(double budget_ms, double launch_us, int cls) {
  kda__tune_budget b;
  b.budget_ms = budget_ms;
  pthread_mutex_lock(&g_model_lock);
  b.compile = *model_of(cls);
  const double learned_overhead = g_overhead_ms;
  pthread_mutex_unlock(&g_model_lock);
  b.compile_share = KDA__TUNE_COMPILE_SHARE;
  b.launch_us = launch_us;
  /* validation + warm-up + samples + a re-measure for finalists. A sample
   * of a short kernel is several launches (KDA__TUNE_SAMPLE_US); that time
   * is not counted here but reaches overhead_ms, which is learned. */
  b.launches_per_candidate = 1 + KDA__TUNE_WARMUP + 2 * KDA__TUNE_SAMPLES;
  /* The default is a floor: a learned overhead below it is noise. */
  b.overhead_ms = learned_overhead > KDA__TUNE_CANDIDATE_OVERHEAD_MS
                      ? learned_overhead
                      : KDA__TUNE_CANDIDATE_OVERHEAD_MS;
  b.threads = 1;
  return b;
}

/* n candidates and the compare kernel split over min(threads, n + 1)
 * programs whose sizes differ by at most one (tuner_compile.c). */
double kda__tune_compile_ms(const kda__tune_budget *b, size_t n) {
  if (n == 0) return 0;
  const size_t names = n + 1;
  const size_t threads = b->threads > 1 ? (size_t)b->threads : 1;
  const size_t programs = threads < names ? threads : names;
  const size_t largest = (names + programs - 1) / programs;
  return b->compile.parse_ms + kda__compile_model_inst_ms(&b->compile, programs) * (double)largest;
}

double kda__tune_estimate_ms(const kda__tune_budget *b, size_t n) {
  const double per = b->overhead_ms + b->launches_per_candidate * b->launch_us / 1000.0;
  return kda__tune_compile_ms(b, n) + per * (double)n;
}

/* Every count is tried, not only up to the first that does not fit: a
 * learned model may rate a level of few programs (small n) slower than the
 * run's full thread count, and the larger n that fits is still the answer. */
static size_t fit_with(const kda__tune_budget *b) {
  size_t best = 1;
  for (size_t n = 2; n <= KDA__TUNE_SPACE_MAX; ++n)
    if (kda__tune_compile_ms(b, n) <= b->compile_share * b->budget_ms &&
        kda__tune_estimate_ms(b, n) <= b->budget_ms)
      best = n;
  return best;
}

/* The learned model may go below what the defaults admit, never the search:
 * one slow compile (NVRTC's wall time for the same 8 programs varied 2x on
 * the H100 machine) taught a level a cost that admitted the heuristic
 * alone, and a level no run compiles again is never corrected. */
size_t kda__tune_fit(const kda__tune_budget *b) {
  const size_t learned = fit_with(b);
  kda__tune_budget d = *b;
  d.compile = kda__compile_model_default();
  const size_t floor = fit_with(&d);
  return learned > floor ? learned : floor;
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
  /* Every other vector width gets its best-scored config first, nearest
   * width first: the score is a distance from the heuristic, and on the
   * H100 the winners of small grids were at vec 2 and 4 where the heuristic
   * is vec 8, scored behind a dozen vec-8 shapes (a 7-candidate run never
   * reached them: T=512 H=4 3.01 us against 2.03 with them). */
  if (keep >= 4) {
    for (int dist = 1; dist <= 3 && k < keep; ++dist) {
      for (int dir = -1; dir <= 1 && k < keep; dir += 2) {
        const int v = dir < 0 ? h->vec >> dist : h->vec << dist;
        if (v < 1 || v > 8) continue;
        size_t best = n;
        for (size_t i = 0; i < n; ++i)
          if (!taken[i] && space[i].vec == v && (best == n || sc[i] < sc[best])) best = i;
        if (best == n) continue;
        taken[best] = 1;
        out[k++] = best;
      }
    }
  }
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
