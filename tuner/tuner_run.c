/* One tuning run of a slot: prune the space to the budget, compile every
 * candidate (and the compare kernel) in NVRTC programs on parallel threads
 * (tuner_compile.c), validate each
 * against the heuristic config's output, time the valid ones, re-measure
 * the finalists, pick the winner with a stable tie-break, persist cubin,
 * result and trials. The caller's output is never written here. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gate_args.h"
#include "nvrtc_compile.h"
#include "store.h"
#include "tuner.h"
#include "tuner_compile.h"
#include "tuner_job.h"

#define KDA__BATCH_KERNEL "kda_tune_kernel.cuh"
#define KDA__BATCH_MAIN "kda_tune_batch.cu"

typedef struct run {
  kda__slot_job *j;
  size_t count;            /* candidates */
  size_t *ids;             /* their config ids (ids[0]: heuristic) */
  size_t *left_out;        /* config ids left out before compiling (tuner.h) */
  size_t n_left_out;
  char **names;            /* count + 1 name expressions (last: compare) */
  kda__compile_lease lease; /* compile threads, held from choose() to the compile's end */
  kda__tune_programs progs;
  CUmodule *modules;       /* one per program */
  CUfunction *fns;         /* count + 1 */
  kda__tune_trial *trials;
  double *samples;         /* count x 2 * KDA__TUNE_SAMPLES */
  int *nsamples;
  kda__tune_launch launch;
  kda__tune_bench *bench;
  int kit_held;            /* the device's timing lock (tuner_kit.c) */
  double timing_wait_ms;   /* waiting for it while another run timed */
  int graph_timings;       /* the bench's, kept for the log */
  double t0, compile_ms;
  double counted_ms;       /* launch time per candidate the budget model counted */
  int hook_set;            /* KDA_TEST_WRONG_CONFIG: 1 wrong values, 2 unwritten */
  kda__config hook;
} run;

/* Hands the module holding candidate i to the caller: run_free keeps it. */
static CUmodule take_module(run *r, size_t i) {
  const size_t q = kda__tune_programs_of(&r->progs, i);
  CUmodule m = r->modules[q];
  r->modules[q] = NULL;
  return m;
}

/* Ends the run's use of the GPU: frees the bench and lets the next run of
 * the device time. */
static void end_timing(run *r) {
  if (r->bench != NULL) {
    r->graph_timings = kda__bench_graph_timings(r->bench);
    kda__bench_destroy(r->bench);
    r->bench = NULL;
  }
  if (r->kit_held) {
    kda__tune_kit_release(r->j->ctx);
    r->kit_held = 0;
  }
}

static void run_free(run *r) {
  kda__compile_pool_release(&r->lease); /* an error before the compile ended */
  end_timing(r);
  for (size_t q = 0; r->modules != NULL && q < r->progs.count; ++q)
    if (r->modules[q]) r->j->ctx->drv->cuModuleUnload(r->modules[q]);
  free(r->modules);
  if (r->names)
    for (size_t i = 0; i <= r->count; ++i) free(r->names[i]);
  free(r->names);
  kda__tune_programs_free(&r->progs);
  free(r->ids);
  free(r->left_out);
  free(r->fns);
  free(r->trials);
  free(r->samples);
  free(r->nsamples);
}

static int dtype_size(int dt) { return dt == KDA_DTYPE_F32 ? 4 : 2; }

static void describe_launch(run *r) {
  const kda_gate_args *a = r->j->rq->args;
  const kda__launch_plan *p = r->j->rq->plan;
  kda__tune_launch *l = &r->launch;
  const size_t elems = (size_t)a->batch * (size_t)a->seq_len * (size_t)a->num_heads *
                       (size_t)a->head_dim;
  l->g = a->g;
  l->A_log = a->A_log;
  l->dt_bias = a->dt_bias;
  kda__plan_table_args(p, a, &l->cu_seqlens, &l->chunk_indices, &l->num_chunks_device);
  l->rows = kda__plan_rows_arg(p); /* the plan outlives the tuning run */
  l->scale = a->scale;
  l->lower_bound = a->lower_bound;
  l->T = p->seq_len;
  l->chunks_per_seq = p->chunks_per_seq;
  l->num_chunks = p->num_chunks;
  l->in_bytes = elems * (size_t)dtype_size(a->g_dtype);
  l->out_bytes = elems * (size_t)dtype_size(a->out_dtype);
  l->out_dtype = a->out_dtype;
  l->g_offset = (unsigned)kda__view_offset(a->g);
  l->out_offset = (unsigned)kda__view_offset(a->out);
}

/* The chunk columns (chunks x heads x head_dim) of the slot's token bucket:
 * its winner serves every size in the bucket. */
static void slot_columns(const kda__spec *slot, int64_t *lo, int64_t *hi) {
  int64_t tok_lo, tok_hi;
  kda__tune_bucket_tokens(slot->bucket, &tok_lo, &tok_hi);
  const int64_t per_chunk = (int64_t)slot->heads * slot->head_dim;
  const int64_t chunk = slot->chunk > 0 ? slot->chunk : 1;
  *lo = (tok_lo + chunk - 1) / chunk * per_chunk;
  *hi = per_chunk > 0 && tok_hi / chunk < INT64_MAX / 4 / per_chunk
            ? (tok_hi + chunk - 1) / chunk * per_chunk
            : INT64_MAX / 4;
}

/* Picks the candidates: the budget's share of the ranked space, plus the
 * test hook's config when set. */
static kda_status choose(run *r) {
  kda__slot_job *j = r->j;
  const double est_us =
      (double)(r->launch.in_bytes + r->launch.out_bytes) / (KDA__TUNE_ASSUMED_GBPS * 1e3) + 3.0;
  kda__tune_budget b =
      kda__tune_budget_default(j->ctx->tune_budget_ms, est_us, kda__tune_compile_class(&j->slot));
  r->counted_ms = b.launches_per_candidate * est_us / 1000.0;
  /* Other runs of this process may be compiling: the budget is for the
   * threads this one really gets. */
  r->lease = kda__compile_pool_reserve(NULL, j->ctx->compile_threads);
  b.threads = r->lease.threads;
  size_t keep = kda__tune_fit(&b);
  r->ids = malloc((j->n + 1) * sizeof *r->ids);
  r->left_out = malloc((j->n + 1) * sizeof *r->left_out);
  KDA__REQUIRE(r->ids != NULL && r->left_out != NULL, KDA_ERROR_OUT_OF_MEMORY,
               "out of memory choosing candidates");
  /* The whole space ranked, then the first `keep` the launch can use: the
   * grid's x dimension is 2^31 - 1 blocks at most, and shapes that PyTorch
   * servers run slower than the tuner measures are left out (tuner.h). */
  size_t k = kda__tune_prune(&j->slot, j->space, j->n, j->hid, r->launch.num_chunks,
                             j->ctx->info.sm_count, j->n, r->ids);
  int64_t cols_lo, cols_hi;
  slot_columns(&j->slot, &cols_lo, &cols_hi);
  /* vec=1 is left out only for head dims of 64 or more (the measured case
   * is 128): at smaller ones wider vectors leave lanes idle. */
  int wider = 0;
  for (size_t i = 0; i < j->n && j->slot.head_dim >= 64; ++i) wider |= j->space[i].vec >= 2;
  size_t w = 0, left_out = 0;
  for (size_t i = 0; i < k; ++i) {
    const kda__spec s = kda__job_concrete(&j->slot, j->space[r->ids[i]]);
    if (i > 0 && kda__tune_unsafe_in_servers(j->space[r->ids[i]], wider, cols_lo, cols_hi)) {
      r->left_out[left_out++] = r->ids[i]; /* i >= w: not yet overwritten */
      continue;
    }
    if (w < keep && (i == 0 || kda__spec_grid(&s, r->launch.num_chunks) <= INT32_MAX))
      r->ids[w++] = r->ids[i];
  }
  k = w;
  r->n_left_out = left_out;
  if (left_out > 0)
    kda__log(j->ctx, KDA_LOG_DEBUG,
             "[%s]: %zu configs left out: they run slower in PyTorch servers than timed here",
             j->what, left_out);
  const char *hook = getenv("KDA_TEST_WRONG_CONFIG");
  char form[16] = "";
  if (hook && sscanf(hook, "%d,%d,%d,%15s", &r->hook.vec, &r->hook.tx, &r->hook.seg, form) >= 3) {
    r->hook_set = strcmp(form, "unwritten") == 0 ? 2 : 1;
    for (size_t i = 0; i < j->n; ++i) {
      if (!same_config(&j->space[i], &r->hook) || i == j->hid) continue;
      int present = 0;
      for (size_t q = 0; q < k; ++q) present |= r->ids[q] == i;
      if (!present) r->ids[k < keep || k < 2 ? k++ : k - 1] = i;
    }
  }
  r->count = k;
  kda__log(j->ctx, KDA_LOG_DEBUG,
           "[%s]: %zu of %zu configs fit the %.0f ms budget (estimate %.0f ms, compile %.0f ms, "
           "launch ~%.1f us; %d compile threads reserved of %d asked, %d of %d in use)",
           j->what, k, j->n, b.budget_ms, kda__tune_estimate_ms(&b, k), kda__tune_compile_ms(&b, k),
           est_us, r->lease.threads, j->ctx->compile_threads, kda__compile_pool_in_use(NULL),
           kda__compile_pool_capacity(NULL));
  return KDA_OK;
}

/* The kernel's template as a header, the compare kernel, and a name
 * expression per candidate, split over the reserved threads' programs. */
static kda_status compile_batch(run *r) {
  kda__slot_job *j = r->j;
  kda_context *ctx = j->ctx;
  r->names = calloc(r->count + 1, sizeof *r->names);
  KDA__REQUIRE(r->names != NULL, KDA_ERROR_OUT_OF_MEMORY, "out of memory naming candidates");
  for (size_t i = 0; i < r->count; ++i) {
    const kda__spec s = kda__job_concrete(&j->slot, j->space[r->ids[i]]);
    char name[KDA__NAME_MAX];
    KDA__REQUIRE(kda__spec_name(&s, name, sizeof name) > 0, KDA_ERROR_INTERNAL, "name too long");
    r->names[i] = strdup(name);
    KDA__REQUIRE(r->names[i] != NULL, KDA_ERROR_OUT_OF_MEMORY, "out of memory");
  }
  char cmp[64];
  snprintf(cmp, sizeof cmp, "kda::tune_compare<%d>", j->slot.out_dtype);
  r->names[r->count] = strdup(cmp);
  KDA__REQUIRE(r->names[r->count] != NULL, KDA_ERROR_OUT_OF_MEMORY, "out of memory");

  const kda__source *kernel = kda__source_find(&ctx->sources, kda__spec_source_name(&j->slot));
  KDA__REQUIRE(kernel != NULL, KDA_ERROR_KERNEL_SOURCE, "template %s missing",
               kda__spec_source_name(&j->slot));
  static const char batch_text[] =
      "#include \"" KDA__BATCH_KERNEL "\"\n#include \"tune_compare.cuh\"\n";
  kda__source *files = calloc(ctx->sources.count + 2, sizeof *files);
  KDA__REQUIRE(files != NULL, KDA_ERROR_OUT_OF_MEMORY, "out of memory");
  memcpy(files, ctx->sources.files, ctx->sources.count * sizeof *files);
  files[ctx->sources.count] = (kda__source){KDA__BATCH_KERNEL, kernel->text, kernel->size};
  files[ctx->sources.count + 1] = (kda__source){KDA__BATCH_MAIN, batch_text, sizeof batch_text - 1};
  kda__source_set set;
  memset(&set, 0, sizeof set);
  set.files = files;
  set.count = ctx->sources.count + 2;
  kda_status st = kda__tune_programs_compile(&set, KDA__BATCH_MAIN, ctx->arch,
                                             (const char *const *)r->names, r->count + 1,
                                             r->lease.threads, &r->progs);
  kda__compile_pool_release(&r->lease);
  free(files);
  r->compile_ms = r->progs.wall_ms;
  /* The caller waited the wall time, so that is what the budget model
   * learns (summed NVRTC time says nothing of it under contention). A
   * failed compile may have stopped early: it teaches nothing. */
  if (st == KDA_OK) {
    size_t largest = 0;
    for (size_t q = 0; q < r->progs.count; ++q)
      if (r->progs.first[q + 1] - r->progs.first[q] > largest)
        largest = r->progs.first[q + 1] - r->progs.first[q];
    kda__tune_calibrate(kda__tune_compile_class(&j->slot), r->progs.wall_ms, r->progs.count,
                        largest);
  }
  atomic_fetch_add(&ctx->compile_ns, (uint_fast64_t)(r->progs.wall_ms * 1e6));
  if (st != KDA_OK) return st;
  atomic_fetch_add(&ctx->nvrtc_compiles, 1);
  kda__log(ctx, KDA_LOG_DEBUG, "[%s]: %zu candidates compiled in %zu NVRTC programs: %.0f ms "
           "wall, %.0f ms of NVRTC time", j->what, r->count, r->progs.count, r->progs.wall_ms,
           r->progs.cpu_ms);

  r->fns = calloc(r->count + 1, sizeof *r->fns);
  r->modules = calloc(r->progs.count, sizeof *r->modules);
  KDA__REQUIRE(r->fns != NULL && r->modules != NULL, KDA_ERROR_OUT_OF_MEMORY, "out of memory");
  /* Each program loads through its first name; the compare kernel (the
   * last name) must be found, a candidate that is not is left NULL. */
  for (size_t q = 0; q < r->progs.count; ++q) {
    const size_t i0 = r->progs.first[q];
    KDA__TRY(kda__context_load(ctx, r->progs.out[q].cubin, kda__tune_programs_lowered(&r->progs, i0),
                               &r->modules[q], &r->fns[i0]));
    for (size_t i = i0 + 1; i < r->progs.first[q + 1]; ++i) {
      const char *lowered = kda__tune_programs_lowered(&r->progs, i);
      CUresult cr = lowered ? ctx->drv->cuModuleGetFunction(&r->fns[i], r->modules[q], lowered)
                            : CUDA_ERROR_NOT_FOUND;
      if (cr != CUDA_SUCCESS) r->fns[i] = NULL;
    }
  }
  KDA__REQUIRE(r->fns[r->count] != NULL, KDA_ERROR_INTERNAL,
               "the compare kernel is missing from its compiled program");
  return KDA_OK;
}

static int inner_for(double launch_us) {
  /* Samples of at least KDA__TUNE_SAMPLE_US (tuner.h says why). */
  int inner = launch_us > 0 ? (int)ceil(KDA__TUNE_SAMPLE_US / launch_us) : 1;
  return inner < 1 ? 1 : inner > KDA__TUNE_INNER_MAX ? KDA__TUNE_INNER_MAX : inner;
}

/* Times `samples` more samples of candidate i and summarises all it has. */
static kda_status measure(run *r, size_t i, int inner, int samples) {
  const kda__spec s = kda__job_concrete(&r->j->slot, r->trials[i].cfg);
  const int room = 2 * KDA__TUNE_SAMPLES - r->nsamples[i];
  if (samples > room) samples = room;
  double *dst = r->samples + i * 2 * KDA__TUNE_SAMPLES + r->nsamples[i];
  KDA__TRY(kda__bench_time(r->bench, r->fns[i], &s, samples, inner, dst));
  r->nsamples[i] += samples;
  kda__tune_trial *t = &r->trials[i];
  kda__tune_summarize(r->samples + i * 2 * KDA__TUNE_SAMPLES, (size_t)r->nsamples[i],
                      &t->median_us, &t->p10_us, &t->p90_us);
  t->measured = 1;
  return KDA_OK;
}

/* Validates and times every candidate; the heuristic (index 0) first, as
 * the reference. Compilation is the expensive part and is already paid:
 * timing a candidate costs milliseconds, so every compiled candidate is
 * measured unless the run has taken three times its budget (a pathological
 * shape), after which the rest are rejected as not measured. */
static kda_status bench_all(run *r, size_t *rejected) {
  kda__slot_job *j = r->j;
  const double budget = 3.0 * j->ctx->tune_budget_ms;
  const kda__spec s0 = kda__job_concrete(&j->slot, r->trials[0].cfg);
  KDA__TRY(kda__bench_reference(r->bench, r->fns[0], &s0));
  int inner = inner_for((double)(r->launch.in_bytes + r->launch.out_bytes) /
                            (KDA__TUNE_ASSUMED_GBPS * 1e3) + 3.0);
  for (size_t i = 0; i < r->count; ++i) {
    kda__tune_trial *t = &r->trials[i];
    if (i > 0 && kda__job_now_ms() - r->t0 > budget) {
      t->status = KDA__TRIAL_REJECTED;
      snprintf(t->reason, sizeof t->reason, "not measured: the run passed %.0f ms", budget);
      ++*rejected;
      continue;
    }
    if (r->fns[i] == NULL) {
      t->status = KDA__TRIAL_COMPILE_FAILED;
      snprintf(t->reason, sizeof t->reason, "no function in the compiled program");
      ++*rejected;
      continue;
    }
    const kda__spec s = kda__job_concrete(&j->slot, t->cfg);
    const int corrupt = same_config(&t->cfg, &r->hook) ? r->hook_set : 0;
    KDA__TRY(kda__bench_validate(r->bench, r->fns[i], &s, corrupt, t));
    if (t->status != KDA__TRIAL_OK) {
      ++*rejected;
      kda__log(j->ctx, KDA_LOG_INFO, "[%s]: candidate vec=%d,tx=%d,seg=%d rejected: %s", j->what,
               t->cfg.vec, t->cfg.tx, t->cfg.seg, t->reason);
      continue;
    }
    KDA__TRY(measure(r, i, inner, KDA__TUNE_SAMPLES));
    if (i == 0) inner = inner_for(t->median_us);
    kda__log(j->ctx, KDA_LOG_DEBUG, "[%s]: vec=%d,tx=%d,seg=%d %.2f us (p10 %.2f, p90 %.2f)",
             j->what, t->cfg.vec, t->cfg.tx, t->cfg.seg, t->median_us, t->p10_us, t->p90_us);
  }
  /* Finalists are timed again in rounds (each round times every finalist),
   * so drift hits them alike, and are then judged on these samples only. */
  size_t fin[KDA__TUNE_SPACE_MAX];
  size_t nf = kda__tune_finalists(r->trials, r->count, KDA__TUNE_FINALIST_FRAC, fin,
                                  KDA__TUNE_SPACE_MAX);
  if (nf > KDA__TUNE_SPACE_MAX) nf = KDA__TUNE_SPACE_MAX;
  if (nf > 1) {
    for (size_t q = 0; q < nf; ++q) r->nsamples[fin[q]] = 0;
    const int per_round = KDA__TUNE_SAMPLES / KDA__TUNE_FINALIST_ROUNDS;
    for (int round = 0; round < KDA__TUNE_FINALIST_ROUNDS; ++round)
      for (size_t q = 0; q < nf; ++q) KDA__TRY(measure(r, fin[q], inner, per_round));
  }
  return KDA_OK;
}

static void persist(run *r, long win, size_t rejected, double tune_ms) {
  kda__slot_job *j = r->j;
  kda_context *ctx = j->ctx;
  if (!j->have_keys) return;
  const kda__tune_trial *w = &r->trials[win];
  kda__store_record rec;
  memset(&rec, 0, sizeof rec);
  kda__config_text(&w->cfg, rec.config, sizeof rec.config);
  rec.config_id = w->config_id;
  rec.median_us = w->median_us;
  rec.gbps = (double)(r->launch.in_bytes + r->launch.out_bytes) / (w->median_us * 1e3);
  rec.max_err = w->max_err;
  rec.candidates = (int64_t)r->count;
  rec.rejected = (int64_t)rejected;
  rec.heuristic_us = r->trials[0].median_us;
  rec.tune_ms = tune_ms;
  rec.compile_ms = r->compile_ms;
  snprintf(rec.lib_version, sizeof rec.lib_version, "%s", kda_version());
  snprintf(rec.nvrtc_version, sizeof rec.nvrtc_version, "%.63s", j->keys.nvrtc);
  kda__tune_provenance(ctx, j->rq->report != NULL, &rec);
  /* The timed candidates, then the shapes left out before compiling, so
   * that the database says why they have no time. */
  const size_t n = r->count + r->n_left_out;
  kda__store_trial *trials = calloc(n, sizeof *trials);
  char(*texts)[64] = calloc(n, sizeof *texts);
  kda__tune_trial *left = calloc(r->n_left_out + 1, sizeof *left);
  void *framed = NULL;
  size_t framed_size = 0;
  /* The winner's program only: its cubin holds a share of the candidates. */
  const kda__compiled *prog = &r->progs.out[kda__tune_programs_of(&r->progs, (size_t)win)];
  if (trials == NULL || texts == NULL || left == NULL ||
      kda__cubin_frame(prog->cubin, prog->cubin_size,
                       kda__tune_programs_lowered(&r->progs, (size_t)win), &framed,
                       &framed_size) != KDA_OK) {
    free(trials);
    free(texts);
    free(left);
    kda__fail(KDA_ERROR_OUT_OF_MEMORY, "out of memory");
    kda__job_persist_failed(ctx, "a tuning result");
    return;
  }
  for (size_t i = 0; i < r->n_left_out; ++i)
    kda__tune_left_out_trial(j->space[r->left_out[i]], (int32_t)r->left_out[i], &left[i]);
  for (size_t i = 0; i < n; ++i) {
    const kda__tune_trial *t = i < r->count ? &r->trials[i] : &left[i - r->count];
    kda__config_text(&t->cfg, texts[i], sizeof texts[i]);
    trials[i].config = texts[i];
    trials[i].config_id = t->config_id;
    trials[i].median_us = t->median_us;
    trials[i].p10_us = t->p10_us;
    trials[i].p90_us = t->p90_us;
    trials[i].status = t->status;
    trials[i].reason = t->reason[0] ? t->reason : NULL;
  }
  kda__store_key key;
  kda__tune_result_key(&j->keys, &key);
  kda__cubin_key ck;
  kda__tune_cubin_key(&j->keys, rec.config, &ck);
  kda__store *store = kda__context_store_lock(ctx);
  if (store != NULL) {
    /* The copy bandwidth if this context measured it (else kept). */
    kda__store_put_gpu(store, j->keys.gpu, ctx->info.name,
                       ctx->copy_bw_gbps > 0 ? ctx->copy_bw_gbps : -1);
    /* The cubin first: a process that sees the result finds its cubin. */
    if (kda__store_put_cubin(store, &ck, framed, framed_size, r->compile_ms) != KDA_OK)
      kda__job_persist_failed(ctx, "a tuned cubin");
    if (kda__store_put_result(store, &key, &rec, trials, n, KDA__PUT_REPLACE, NULL) !=
        KDA_OK)
      kda__job_persist_failed(ctx, "a tuning result");
  }
  kda__context_store_unlock(ctx);
  free(framed);
  free(trials);
  free(texts);
  free(left);
}

static void report(run *r, long win, size_t rejected, double tune_ms) {
  kda_prewarm_result *p = r->j->rq->report;
  if (p == NULL) return;
  p->outcome = KDA_PREWARM_TUNED;
  kda__config_text(&r->trials[win].cfg, p->config, sizeof p->config);
  p->median_us = r->trials[win].median_us;
  p->heuristic_us = r->trials[0].median_us;
  p->compile_ms = r->compile_ms;
  p->tune_ms = tune_ms;
  p->candidates = (int32_t)r->count;
  p->rejected = (int32_t)rejected;
}

static kda_status prepare(run *r) {
  kda__slot_job *j = r->j;
  const kda__driver *d = j->ctx->drv;
  /* Inputs may still be written by work queued on the caller's stream. */
  CUresult cr = d->cuStreamSynchronize(j->rq->stream);
  if (cr != CUDA_SUCCESS) return kda__cu_status(d, cr, "cuStreamSynchronize(caller)", __FILE__, __LINE__);
  describe_launch(r);
  KDA__TRY(choose(r));
  r->trials = calloc(r->count, sizeof *r->trials);
  r->samples = calloc(r->count * 2 * KDA__TUNE_SAMPLES, sizeof *r->samples);
  r->nsamples = calloc(r->count, sizeof *r->nsamples);
  KDA__REQUIRE(r->trials && r->samples && r->nsamples, KDA_ERROR_OUT_OF_MEMORY, "out of memory");
  for (size_t i = 0; i < r->count; ++i) {
    r->trials[i].cfg = j->space[r->ids[i]];
    r->trials[i].config_id = (int32_t)r->ids[i];
    r->trials[i].median_us = r->trials[i].p10_us = r->trials[i].p90_us = -1;
    r->trials[i].max_err = -1;
  }
  return KDA_OK;
}

kda_status kda__job_tune(kda__slot_job *j, CUmodule *module, CUfunction *function,
                         kda__config *cfg) {
  kda_context *ctx = j->ctx;
  run r;
  memset(&r, 0, sizeof r);
  r.j = j;
  r.t0 = kda__job_now_ms();
  kda_status st = prepare(&r);
  if (st == KDA_OK) {
    st = compile_batch(&r);
    if (st != KDA_OK && st != KDA_ERROR_CONTEXT_LOST) {
      kda__log(ctx, KDA_LOG_WARN, "[%s]: compiling %zu tuning candidates failed (%s); using the "
               "heuristic config", j->what, r.count, kda_last_error());
      run_free(&r);
      *cfg = j->heuristic;
      return kda__job_use_config(j, j->heuristic, module, function);
    }
  }
  if (st == KDA_OK) {
    /* Compiled: from here to end_timing the run is the only one of this
     * process timing on the device. */
    kda__tune_kit *kit = NULL;
    st = kda__tune_kit_acquire(ctx, &kit, &r.timing_wait_ms);
    if (st == KDA_OK) {
      r.kit_held = 1;
      if (r.timing_wait_ms > 0)
        kda__log(ctx, KDA_LOG_DEBUG, "[%s]: waited %.0f ms for another tuning run's timing",
                 j->what, r.timing_wait_ms);
      st = kda__bench_create(ctx->drv, &ctx->launch_overlap, &r.launch, ctx->info.l2_bytes,
                             ctx->info.sm_count, r.fns[r.count], kit, &r.bench);
    }
    if (st == KDA_ERROR_OUT_OF_MEMORY) {
      kda__log(ctx, KDA_LOG_WARN, "[%s]: no device memory for tuning scratch buffers; using "
               "the heuristic config", j->what);
      end_timing(&r);
      *module = take_module(&r, 0);
      *function = r.fns[0];
      *cfg = j->heuristic;
      run_free(&r);
      return KDA_OK;
    }
  }
  if (st == KDA_OK) {
    const double set = (double)(r.launch.in_bytes + r.launch.out_bytes);
    const int sets = kda__bench_rotation(r.bench);
    kda__log(ctx, KDA_LOG_DEBUG, "[%s]: timing over %d buffer sets of %.0f KB (%.1fx L2)", j->what,
             sets, set / 1024.0, ctx->info.l2_bytes > 0 ? sets * set / ctx->info.l2_bytes : 0.0);
  }
  size_t rejected = 0;
  if (st == KDA_OK) st = bench_all(&r, &rejected);
  /* Still holding the timing lock: the device is ours alone for a moment. */
  if (st == KDA_OK && r.kit_held && ctx->copy_bw_gbps == 0 && ctx->tune_kit != NULL) {
    double gbps = -1;
    st = kda__tune_copy_bw(ctx->drv, ctx->tune_kit, &gbps);
    if (st == KDA_OK) ctx->copy_bw_gbps = gbps;
  }
  if (r.bench != NULL && kda__bench_overlap_refused(r.bench)) {
    char what[600];
    snprintf(what, sizeof what, "the tuning run of %s", j->what);
    kda__context_overlap_refused(j->ctx, what);
  }
  end_timing(&r); /* before the store is written: the next run may time meanwhile */
  /* A lost context fails whatever comes next: the heuristic's own compile
   * and load would be spent for nothing. */
  if (st != KDA_OK && st != KDA_ERROR_CONTEXT_LOST && r.fns != NULL && r.j->rq->report == NULL) {
    /* Compiled, but the bench or the validation could not run (e.g. the
     * compare kernel visited nothing): a kernel call keeps the heuristic
     * config, unstored, instead of failing (prewarm reports the failure). */
    kda__log(ctx, KDA_LOG_WARN, "[%s]: tuning stopped (%s); using the heuristic config "
             "without storing it", j->what, kda_last_error());
    run_free(&r);
    *cfg = j->heuristic;
    return kda__job_use_config(j, j->heuristic, module, function);
  }
  if (st != KDA_OK) {
    run_free(&r);
    return st;
  }
  const long win = kda__tune_pick_keep(r.trials, r.count, KDA__TUNE_BAND, 0);
  /* The run's own time: without its wait for another run's timing. */
  const double tune_ms = kda__job_now_ms() - r.t0 - r.timing_wait_ms;
  /* What the budget model did not count, per candidate, for later runs:
   * the run's time besides the compile and the launches it estimated. */
  if (r.count > 0)
    kda__tune_calibrate_overhead((tune_ms - r.compile_ms) / (double)r.count - r.counted_ms);
  atomic_fetch_add(&ctx->tuning_runs, 1);
  atomic_fetch_add(&ctx->rejected_candidates, rejected);
  atomic_fetch_add(&ctx->tune_ns, (uint_fast64_t)(tune_ms * 1e6));
  if (win < 0) {
    /* Even the heuristic did not validate against itself (nondeterministic
     * or unwritten output): nothing trustworthy to store. */
    kda__log(ctx, KDA_LOG_WARN, "[%s]: no candidate validated (%s); using the heuristic config "
             "without storing it", j->what, r.trials[0].reason);
    *module = take_module(&r, 0);
    *function = r.fns[0];
    *cfg = j->heuristic;
    run_free(&r);
    return KDA_OK;
  }
  persist(&r, win, rejected, tune_ms);
  report(&r, win, rejected, tune_ms);
  const kda__tune_trial *w = &r.trials[win];
  kda__log(ctx, KDA_LOG_INFO,
           "tuned [%s]: vec=%d,tx=%d,seg=%d %.2f us (heuristic %.2f us), %zu candidates, %zu "
           "rejected, compile %.0f ms, tuning %.0f ms in all, %d timings as captured graphs",
           j->what, w->cfg.vec, w->cfg.tx, w->cfg.seg, w->median_us, r.trials[0].median_us,
           r.count, rejected, r.compile_ms, tune_ms, r.graph_timings);
  *module = take_module(&r, (size_t)win);
  *function = r.fns[win];
  *cfg = w->cfg;
  run_free(&r);
  return KDA_OK;
}
