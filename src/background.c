/* KDA_TUNE_BACKGROUND: a cold specialization runs at once with the
 * heuristic config, and one worker thread per context tunes it off the
 * caller's thread, on inputs the library allocates (kda_prewarm), then
 * installs the stored winner in the module cache, where later calls find
 * it. The caller's buffers are never touched after its call returns. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "context_internal.h"
#include "error.h"
#include "gate_args.h"
#include "tuner.h"

typedef struct job {
  struct job *next;
  kda_kernel kernel;
  kda_gate_args shape; /* the call's shape and flags; no pointers */
  kda__launch_plan plan;
  kda__spec slot;
} job;

struct kda__background {
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t wake;
  job *head, *tail;
  kda__spec *seen; /* slots ever queued: each is tuned once */
  size_t nseen, capseen;
  int stop;
};

/* Everything the worker needs to re-create the call without its buffers.
 * Non-NULL A_log / dt_bias tell kda_prewarm they are present; g and out
 * keep only their offsets within 256 bytes (NULL when aligned), which
 * kda_prewarm reads as a view's: a call on a view is tuned on inputs at
 * its offsets, under its own key (with NULL the worker tuned the aligned
 * tensor's key and found nothing to install for the view). */
static kda_gate_args shape_of(const kda_gate_args *a, const kda__launch_plan *plan) {
  kda_gate_args s = *a;
  s.g = (const void *)kda__view_offset(a->g);
  s.out = (void *)kda__view_offset(a->out);
  s.A_log = a->A_log ? (const float *)(uintptr_t)1 : NULL;
  s.dt_bias = a->dt_bias ? (const float *)(uintptr_t)1 : NULL;
  s.cu_seqlens = NULL;
  s.chunk_indices = NULL;
  s.num_chunks = 0;
  s.num_chunks_device = NULL;
  /* Non-NULL: "the host-rows specialization" (kda_prewarm does not read it),
   * only where the call took it: a batch past KDA_MAX_HOST_ROWS chunks
   * passes cu_seqlens_host and still reads a table. */
  s.cu_seqlens_host = plan->spec.varlen == 2 ? (const void *)(uintptr_t)1 : NULL;
  /* Non-NULL: "the chunk-plan specialization" (kda_prewarm builds its own). */
  s.chunk_plan = a->chunk_plan ? (const kda_chunk_plan *)(uintptr_t)1 : NULL;
  if (a->cu_seqlens == NULL && a->chunk_plan == NULL) s.num_seqs = 0;
  return s;
}

static kda_kernel kernel_of(const kda__spec *spec) {
  if (!spec->cumsum) return KDA_KERNEL_GATE;
  return spec->gate == KDA_GATE_NONE ? KDA_KERNEL_CHUNK_LOCAL_CUMSUM : KDA_KERNEL_GATE_CHUNK_CUMSUM;
}

static void run_job(kda_context *ctx, job *j) {
  kda_prewarm_result r;
  memset(&r, 0, sizeof r);
  r.struct_size = sizeof r;
  kda_status st = kda_prewarm(ctx, j->kernel, &j->shape, 0, &r);
  if (st != KDA_OK) {
    kda__log(ctx, KDA_LOG_WARN, "background tuning failed; the heuristic config stays: %s",
             kda_last_error());
    return;
  }
  /* Install the stored winner under the caller's slot: a database lookup
   * and a cubin load, no tuning (cached mode). */
  int pushed = 0;
  if (kda__context_enter(ctx, &pushed) != KDA_OK) return;
  kda__tune_request req;
  memset(&req, 0, sizeof req);
  req.ctx = ctx;
  req.args = &j->shape;
  req.plan = &j->plan;
  req.mode = KDA_TUNE_CACHED;
  /* kda_prewarm tuned equal-length sequences: for a host-rows call whose
   * equal split takes more chunks than host rows hold, that is another
   * specialization, and this call's has no winner to install. */
  kda_prewarm_result found;
  memset(&found, 0, sizeof found);
  found.struct_size = sizeof found;
  kda__tune_call *call = malloc(sizeof *call);
  const int stored = call != NULL &&
                     kda__tune_call_of(&ctx->info, ctx->arch, &ctx->sources, &j->plan, &j->slot,
                                       call) == KDA_OK &&
                     kda__tuner_lookup(ctx, call, &found);
  free(call);
  if (!stored) {
    char what[512];
    kda__spec_describe(&j->slot, what, sizeof what);
    kda__log(ctx, KDA_LOG_INFO, "background tuning stored no winner for [%s] (an equal split "
             "of its tokens over its sequences is another specialization); the heuristic stays",
             what);
    kda__context_leave(ctx, pushed);
    return;
  }
  CUfunction fn;
  kda__config cfg;
  int hit = 0;
  kda__log_hold(); /* (kda__context_resolve says why) */
  st = kda__cache_get_cfg(ctx->cache, &j->slot, kda__tuner_build, &req, &fn, &cfg, &hit);
  kda__log_release();
  if (st == KDA_OK)
    kda__log(ctx, KDA_LOG_INFO, "background tuning installed vec=%d,tx=%d,seg=%d (%s)", cfg.vec,
             cfg.tx, cfg.seg, r.outcome == KDA_PREWARM_TUNED ? "tuned" : "found stored");
  else
    kda__log(ctx, KDA_LOG_WARN, "background tuning could not install its winner: %s",
             kda_last_error());
  kda__context_leave(ctx, pushed);
}

static void *worker(void *arg) {
  kda_context *ctx = arg;
  /* Its jobs allocate, load and time while the server may capture a graph
   * on another thread (vLLM's warm-up queues jobs, then captures): this
   * thread's calls must neither be refused nor invalidate that capture. */
  (void)kda__driver_relax_capture(ctx->drv);
  struct kda__background *bg = ctx->background;
  pthread_mutex_lock(&bg->lock);
  for (;;) {
    while (!bg->stop && bg->head == NULL) pthread_cond_wait(&bg->wake, &bg->lock);
    if (bg->stop) break;
    job *j = bg->head;
    bg->head = j->next;
    if (bg->head == NULL) bg->tail = NULL;
    pthread_mutex_unlock(&bg->lock);
    run_job(ctx, j);
    free(j);
    atomic_fetch_add(&ctx->background_jobs, 1);
    pthread_mutex_lock(&bg->lock);
  }
  pthread_mutex_unlock(&bg->lock);
  return NULL;
}

/* Creates the worker on first use; NULL (logged) if it cannot. Called under
 * no lock: two first callers race through the compare-exchange. */
static struct kda__background *background_of(kda_context *ctx) {
  struct kda__background *bg = __atomic_load_n(&ctx->background, __ATOMIC_ACQUIRE);
  if (bg) return bg;
  bg = calloc(1, sizeof *bg);
  if (bg == NULL) return NULL;
  pthread_mutex_init(&bg->lock, NULL);
  pthread_cond_init(&bg->wake, NULL);
  struct kda__background *expected = NULL;
  if (!__atomic_compare_exchange_n(&ctx->background, &expected, bg, 0, __ATOMIC_ACQ_REL,
                                   __ATOMIC_ACQUIRE)) {
    pthread_cond_destroy(&bg->wake);
    pthread_mutex_destroy(&bg->lock);
    free(bg);
    return expected;
  }
  if (pthread_create(&bg->thread, NULL, worker, ctx) != 0) {
    kda__log(ctx, KDA_LOG_WARN, "could not start the background tuning thread");
    bg->stop = 1; /* enqueue then refuses; stop joins nothing */
    bg->thread = 0;
  }
  return bg;
}

void kda__background_enqueue(kda_context *ctx, const kda__launch_plan *plan,
                             const kda_gate_args *args, const kda__spec *slot) {
  struct kda__background *bg = background_of(ctx);
  if (bg == NULL) return;
  pthread_mutex_lock(&bg->lock);
  int known = bg->stop;
  for (size_t i = 0; i < bg->nseen && !known; ++i)
    known = memcmp(&bg->seen[i], slot, sizeof *slot) == 0;
  job *j = NULL;
  if (!known) {
    if (bg->nseen == bg->capseen) {
      size_t cap = bg->capseen ? 2 * bg->capseen : 16;
      kda__spec *grown = realloc(bg->seen, cap * sizeof *grown);
      if (grown) {
        bg->seen = grown;
        bg->capseen = cap;
      }
    }
    j = bg->nseen < bg->capseen ? calloc(1, sizeof *j) : NULL;
  }
  if (j) {
    bg->seen[bg->nseen++] = *slot;
    j->kernel = kernel_of(&plan->spec);
    j->shape = shape_of(args, plan);
    j->plan = *plan;
    j->slot = *slot;
    if (bg->tail) bg->tail->next = j;
    else bg->head = j;
    bg->tail = j;
    pthread_cond_signal(&bg->wake);
  }
  pthread_mutex_unlock(&bg->lock);
}

void kda__background_stop(kda_context *ctx) {
  struct kda__background *bg = ctx->background;
  if (bg == NULL) return;
  atomic_store(&ctx->stopping, 1);
  pthread_mutex_lock(&bg->lock);
  const int running = !bg->stop;
  bg->stop = 1;
  pthread_cond_broadcast(&bg->wake);
  pthread_mutex_unlock(&bg->lock);
  if (running) pthread_join(bg->thread, NULL);
  for (job *j = bg->head; j;) {
    job *next = j->next;
    free(j);
    j = next;
  }
  free(bg->seen);
  pthread_cond_destroy(&bg->wake);
  pthread_mutex_destroy(&bg->lock);
  free(bg);
  ctx->background = NULL;
}
