/* The build step of a tuned slot: the database's winner when it has one
 * (cubin loaded without NVRTC), else, in KDA_TUNE_ON mode and holding the
 * key's lease, a tuning run: candidates pruned to the budget, compiled in
 * up to compile_threads NVRTC programs at once (each with the compare
 * kernel; tuner_compile.c), validation against
 * the heuristic config, timing, re-measure of the finalists, a stable pick,
 * and one write of cubin, result and trials. Database faults never fail the
 * call: they are logged and counted and the kernel still runs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "context_internal.h"
#include "error.h"
#include "gate_args.h"
#include "nvrtc_compile.h"
#include "store.h"
#include "tuner.h"
#include "tuner_job.h"

#define KDA__POLL_MS 50

double kda__job_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

kda__spec kda__job_concrete(const kda__spec *slot, kda__config cfg) {
  kda__spec s = *slot;
  s.tuned = s.bucket = s.vec_cap = 0;
  s.cfg = cfg;
  return s;
}

void kda__job_persist_failed(kda_context *ctx, const char *what) {
  if (atomic_fetch_add(&ctx->persist_failures, 1) == 0)
    kda__log(ctx, KDA_LOG_WARN, "could not persist %s: %s (the kernel still runs; later "
             "failures are only counted)", what, kda_last_error());
}

/* cfg's cubin for the slot, from the database: 1 and the framed blob
 * (freed by the caller), or 0. ck gets the key (set when j has keys).
 * Unless the context asks for its own NVRTC build only, a miss looks for
 * the cubin another build of the same major version compiled (a server
 * whose PyTorch wheel ships an NVRTC other than the toolkit's kda-tune
 * prewarm ran with); built_by then names that build, else it is "". */
static int lookup_cubin(kda__slot_job *j, const char *ctext, kda__cubin_key *ck, void **blob,
                        size_t *size, int *tampered, char *built_by, size_t built_by_size) {
  built_by[0] = '\0';
  if (!j->have_keys) return 0;
  kda__tune_cubin_key(&j->keys, ctext, ck);
  int found = 0;
  kda__store *store = kda__context_store_lock(j->ctx);
  if (store != NULL && kda__store_lookup_cubin(store, ck, &found, blob, size, tampered) != KDA_OK)
    found = 0;
  if (store != NULL && !found && !*tampered && j->ctx->cubin_other_builds &&
      kda__store_lookup_cubin_other_build(store, ck, &found, blob, size, tampered, built_by,
                                          built_by_size) != KDA_OK)
    found = 0;
  if (!found) built_by[0] = '\0';
  kda__context_store_unlock(j->ctx);
  return found;
}

kda_status kda__job_use_config(kda__slot_job *j, kda__config cfg, CUmodule *module,
                               CUfunction *function) {
  kda_context *ctx = j->ctx;
  const kda__spec spec = kda__job_concrete(&j->slot, cfg);
  char ctext[64];
  kda__config_text(&cfg, ctext, sizeof ctext);
  kda__cubin_key ck;
  memset(&ck, 0, sizeof ck);
  int tampered = 0;
  void *blob = NULL;
  size_t size = 0;
  char built_by[KDA__NVRTC_TEXT_MAX];
  const int found = lookup_cubin(j, ctext, &ck, &blob, &size, &tampered, built_by, sizeof built_by);

  if (found) {
    const char *name = NULL;
    const void *cubin = NULL;
    size_t name_len = 0, cubin_size = 0;
    char lowered[4097];
    kda_status st = KDA_ERROR_STORE;
    if (kda__cubin_unframe(blob, size, &name, &name_len, &cubin, &cubin_size) == 0) {
      memcpy(lowered, name, name_len);
      lowered[name_len] = '\0';
      /* A private copy: the driver wants an aligned image. */
      void *image = malloc(cubin_size);
      if (image != NULL) {
        memcpy(image, cubin, cubin_size);
        st = kda__context_load(ctx, image, lowered, module, function);
        free(image);
      }
    }
    free(blob);
    if (st == KDA_OK && built_by[0] != '\0') {
      atomic_fetch_add(&ctx->db_cubin_hits, 1);
      atomic_fetch_add(&ctx->db_cubin_other_nvrtc_hits, 1);
      kda__log(ctx, KDA_LOG_INFO,
               "loaded the stored cubin of [%s] %s, compiled by NVRTC %s (this process has %s)",
               j->what, ctext, built_by, ck.nvrtc_version);
      return KDA_OK;
    }
    if (st == KDA_OK) {
      atomic_fetch_add(&ctx->db_cubin_hits, 1);
      kda__log(ctx, KDA_LOG_DEBUG, "loaded the stored cubin of [%s] %s", j->what, ctext);
      return KDA_OK;
    }
    /* The driver fails every call of a lost context: the cubin was not
     * refused, and a compile would be spent for nothing. */
    if (st == KDA_ERROR_CONTEXT_LOST) return st;
    /* Another build's cubin may be newer than the driver: expected, not a fault. */
    kda__log(ctx, built_by[0] != '\0' ? KDA_LOG_INFO : KDA_LOG_WARN,
             "the stored cubin of [%s] %s%s%s was refused (%s); recompiling", j->what, ctext,
             built_by[0] != '\0' ? ", compiled by NVRTC " : "", built_by, kda_last_error());
  } else if (tampered) {
    /* The store has warned once already. */
    kda__log(ctx, KDA_LOG_INFO, "the stored cubin of [%s] %s failed its hash check; recompiling",
             j->what, ctext);
  }

  char name[KDA__NAME_MAX];
  KDA__REQUIRE(kda__spec_name(&spec, name, sizeof name) > 0, KDA_ERROR_INTERNAL,
               "specialization name too long");
  const char *names[1] = {name};
  kda__compile_request req = {&ctx->sources, kda__spec_source_name(&spec), ctx->arch, names, 1};
  kda__compiled out;
  kda_status st = kda__nvrtc_compile(&req, &out);
  atomic_fetch_add(&ctx->compile_ns, (uint_fast64_t)(out.compile_ms * 1e6));
  if (st != KDA_OK) return st;
  atomic_fetch_add(&ctx->nvrtc_compiles, 1);
  st = kda__context_load(ctx, out.cubin, out.lowered_names[0], module, function);
  if (st == KDA_OK && j->have_keys) {
    void *framed = NULL;
    size_t framed_size = 0;
    if (kda__cubin_frame(out.cubin, out.cubin_size, out.lowered_names[0], &framed,
                         &framed_size) == KDA_OK) {
      kda__store *store = kda__context_store_lock(ctx);
      if (store != NULL &&
          kda__store_put_cubin(store, &ck, framed, framed_size, out.compile_ms) != KDA_OK)
        kda__job_persist_failed(ctx, "a cubin");
      kda__context_store_unlock(ctx);
      free(framed);
    }
  }
  kda__compiled_free(&out);
  return st;
}

/* The database's winner for the slot, if any and still in the space. */
static int stored_winner(kda__slot_job *j, kda__store_record *rec, kda__config *cfg) {
  if (!j->have_keys) return 0;
  kda__store_key key;
  kda__tune_result_key(&j->keys, &key);
  int found = 0;
  kda__store *store = kda__context_store_lock(j->ctx);
  if (store != NULL && kda__store_lookup_result(store, &key, &found, rec) != KDA_OK) found = 0;
  kda__context_store_unlock(j->ctx);
  if (!found) return 0;
  kda__config c;
  if (kda__config_parse(rec->config, &c) != 0) return 0;
  for (size_t i = 0; i < j->n; ++i)
    if (same_config(&j->space[i], &c)) {
      *cfg = c;
      return 1;
    }
  kda__log(j->ctx, KDA_LOG_INFO, "stored winner %s of [%s] is not in the space; ignored",
           rec->config, j->what);
  return 0;
}

/* 1 if the database holds cfg's cubin for the slot (a lookup only). */
static int cubin_stored(kda__slot_job *j, kda__config cfg) {
  char ctext[64];
  kda__config_text(&cfg, ctext, sizeof ctext);
  kda__cubin_key ck;
  memset(&ck, 0, sizeof ck);
  int tampered = 0;
  void *blob = NULL;
  size_t size = 0;
  char built_by[KDA__NVRTC_TEXT_MAX];
  const int found = lookup_cubin(j, ctext, &ck, &blob, &size, &tampered, built_by, sizeof built_by);
  free(blob);
  return found;
}


static void report_record(kda_prewarm_result *r, const kda__store_record *rec, int outcome) {
  if (r == NULL) return;
  r->outcome = outcome;
  snprintf(r->config, sizeof r->config, "%.63s", rec->config);
  r->median_us = rec->median_us;
  r->heuristic_us = rec->heuristic_us;
  r->compile_ms = rec->compile_ms;
  r->tune_ms = rec->tune_ms;
  r->candidates = (int32_t)rec->candidates;
  r->rejected = (int32_t)rec->rejected;
}

/* Lease: 1 if this process may tune the key now. Without a database (or
 * when it cannot be written) the process tunes uncoordinated. */
static int take_lease(kda__slot_job *j, char *holder, size_t holder_size) {
  if (j->holder[0] == '\0') {
    static atomic_uint_fast64_t jobs;
    char self[256];
    kda__store_default_holder(self, sizeof self);
    snprintf(j->holder, sizeof j->holder, "%s#%llu", self,
             (unsigned long long)atomic_fetch_add(&jobs, 1) + 1);
  }
  kda__store *store = kda__context_store_lock(j->ctx);
  int acquired = 1;
  if (store != NULL) {
    kda__lease lease;
    memset(&lease, 0, sizeof lease);
    const double ttl_s = 10.0 + 3.0 * j->ctx->tune_budget_ms / 1000.0;
    kda__store_lease_acquire(store, j->keys.lease, j->holder, ttl_s, &lease);
    acquired = lease.acquired;
    snprintf(holder, holder_size, "%s", lease.holder);
  }
  kda__context_store_unlock(j->ctx);
  return acquired;
}

static void drop_lease(kda__slot_job *j) {
  kda__store *store = kda__context_store_lock(j->ctx);
  if (store != NULL) kda__store_lease_release(store, j->keys.lease, j->holder, NULL);
  kda__context_store_unlock(j->ctx);
}

static kda_status tuner_build(const kda__tune_request *rq, const kda__spec *slot,
                              CUmodule *module, CUfunction *function, kda__config *config);

kda_status kda__tuner_build(void *user, const kda__spec *slot, CUmodule *module,
                            CUfunction *function, kda__config *config) {
  const kda__tune_request *rq = user;
  const CUstreamCaptureMode mode = kda__driver_relax_capture(rq->ctx->drv);
  const kda_status st = tuner_build(rq, slot, module, function, config);
  kda__driver_restore_capture(rq->ctx->drv, mode);
  return st;
}

static kda_status tuner_build(const kda__tune_request *rq, const kda__spec *slot,
                              CUmodule *module, CUfunction *function, kda__config *config) {
  kda_context *ctx = rq->ctx;
  kda__slot_job *j = calloc(1, sizeof *j);
  KDA__REQUIRE(j != NULL, KDA_ERROR_OUT_OF_MEMORY, "out of memory starting a tuning job");
  j->ctx = ctx;
  j->rq = rq;
  j->slot = *slot;
  j->heuristic = rq->plan->spec.cfg;
  j->n = kda__tune_space(slot, j->heuristic, j->space, KDA__TUNE_SPACE_MAX, &j->hid);
  kda__spec_describe(&rq->plan->spec, j->what, sizeof j->what);
  char *cut = strstr(j->what, " vec=");
  if (cut) snprintf(cut, sizeof j->what - (size_t)(cut - j->what), " bucket=%d", slot->bucket);
  if (kda__tune_keys_make(&ctx->info, ctx->arch, &ctx->sources, slot, j->space, j->n, NULL,
                          &j->keys) == KDA_OK)
    j->have_keys = 1;
  else
    kda__log(ctx, KDA_LOG_WARN, "no database key for [%s]: %s", j->what, kda_last_error());

  kda_status st;
  kda__store_record rec;
  memset(&rec, 0, sizeof rec);
  kda__config cfg = j->heuristic;
  if (!rq->force && stored_winner(j, &rec, &cfg)) {
    atomic_fetch_add(&ctx->db_result_hits, 1);
    kda__log(ctx, KDA_LOG_INFO, "[%s]: stored winner %s (%.2f us)", j->what, rec.config,
             rec.median_us);
    report_record(rq->report, &rec, KDA_PREWARM_SKIPPED);
    st = kda__job_use_config(j, cfg, module, function);
  } else if (rq->mode == KDA_TUNE_CACHED) {
    kda__config plain;
    if (!cubin_stored(j, cfg) && kda__tune_offline_heuristic(&j->slot, j->heuristic, &plain) &&
        cubin_stored(j, plain)) {
      kda__log(ctx, KDA_LOG_INFO, "[%s]: no stored winner; the stored heuristic %d/%d/%d, "
               "compiled without the device (cached mode)", j->what, plain.vec, plain.tx,
               plain.seg);
      cfg = plain;
    } else {
      kda__log(ctx, KDA_LOG_INFO, "[%s]: no stored winner; heuristic %d/%d/%d (cached mode)",
               j->what, cfg.vec, cfg.tx, cfg.seg);
    }
    st = kda__job_use_config(j, cfg, module, function);
  } else {
    char holder[256] = "";
    int acquired = !j->have_keys || take_lease(j, holder, sizeof holder);
    if (!acquired) {
      /* Another process tunes this key: wait for its row, retrying the
       * lease now and then in case it died. */
      const double deadline = kda__job_now_ms() + 2.0 * ctx->tune_budget_ms + 3000.0;
      kda__log(ctx, KDA_LOG_INFO, "[%s]: %s is tuning it; waiting", j->what, holder);
      int found = 0;
      for (int poll = 1; kda__job_now_ms() < deadline && !atomic_load(&ctx->stopping); ++poll) {
        sleep_ms(KDA__POLL_MS);
        if ((found = stored_winner(j, &rec, &cfg)) != 0) break;
        if (poll % 8 == 0 && take_lease(j, holder, sizeof holder)) {
          acquired = 1;
          break;
        }
      }
      if (found) {
        atomic_fetch_add(&ctx->db_result_hits, 1);
        kda__log(ctx, KDA_LOG_INFO, "[%s]: winner %s stored by another process", j->what,
                 rec.config);
        report_record(rq->report, &rec, KDA_PREWARM_SKIPPED);
      } else if (!acquired) {
        kda__log(ctx, KDA_LOG_WARN, "[%s]: gave up waiting for %s to tune it; using the "
                 "heuristic config in this context", j->what, holder);
        cfg = j->heuristic;
      }
    }
    if (acquired && j->have_keys && !rq->force && stored_winner(j, &rec, &cfg)) {
      /* Another process stored the row and released the lease between our
       * lookup and our lease: use its row rather than tune the key twice. */
      drop_lease(j);
      atomic_fetch_add(&ctx->db_result_hits, 1);
      kda__log(ctx, KDA_LOG_INFO, "[%s]: winner %s stored by another process", j->what,
               rec.config);
      report_record(rq->report, &rec, KDA_PREWARM_SKIPPED);
      st = kda__job_use_config(j, cfg, module, function);
    } else if (acquired) {
      st = kda__job_tune(j, module, function, &cfg);
      if (j->have_keys) drop_lease(j);
    } else {
      st = kda__job_use_config(j, cfg, module, function);
    }
  }
  if (st == KDA_OK) *config = cfg;
  free(j);
  return st;
}

static kda_status stored_build(kda_context *ctx, const kda__spec *spec, CUmodule *module,
                               CUfunction *function);

kda_status kda__stored_build(void *user, const kda__spec *spec, CUmodule *module,
                             CUfunction *function) {
  kda_context *ctx = user;
  const CUstreamCaptureMode mode = kda__driver_relax_capture(ctx->drv);
  const kda_status st = stored_build(ctx, spec, module, function);
  kda__driver_restore_capture(ctx->drv, mode);
  return st;
}

static kda_status stored_build(kda_context *ctx, const kda__spec *spec, CUmodule *module,
                               CUfunction *function) {
  kda__slot_job *j = calloc(1, sizeof *j);
  KDA__REQUIRE(j != NULL, KDA_ERROR_OUT_OF_MEMORY, "out of memory building a kernel");
  j->ctx = ctx;
  j->slot = *spec;
  j->heuristic = spec->cfg;
  kda__spec_describe(spec, j->what, sizeof j->what);
  /* The keys kda__offline_cubin_make makes: the spec, its one config. */
  if (kda__tune_keys_make(&ctx->info, ctx->arch, &ctx->sources, spec, &spec->cfg, 1, NULL,
                          &j->keys) == KDA_OK)
    j->have_keys = 1;
  else
    kda__log(ctx, KDA_LOG_WARN, "no database key for [%s]: %s", j->what, kda_last_error());
  const kda_status st = kda__job_use_config(j, spec->cfg, module, function);
  free(j);
  return st;
}

int kda__tuner_lookup(struct kda_context *ctx, const kda__tune_call *call,
                      kda_prewarm_result *report) {
  kda__slot_job *j = calloc(1, sizeof *j);
  if (j == NULL) return 0;
  j->ctx = ctx;
  j->slot = call->slot;
  j->heuristic = call->heuristic;
  memcpy(j->space, call->space, call->n * sizeof call->space[0]);
  j->n = call->n;
  j->keys = call->keys;
  j->have_keys = 1;
  kda__store_record rec;
  memset(&rec, 0, sizeof rec);
  kda__config cfg = j->heuristic;
  const int found = stored_winner(j, &rec, &cfg);
  if (found) report_record(report, &rec, KDA_PREWARM_SKIPPED);
  free(j);
  return found;
}
