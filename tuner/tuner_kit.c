/* What a tuning run times with: its context's stream and events, made on
 * the context's first tuning run and kept until the context is destroyed,
 * and its device's timing lock, so that two tuning runs of one process
 * never time on one GPU at once.
 *
 * Why one lock per device: two runs timing at once on different streams
 * share the GPU, so each times the other's kernels too and may keep a
 * config for the wrong reason (a server's threads can meet several cold
 * keys at once: test_gpu_server). Only the timing waits; the NVRTC
 * compiles, the longer part of a run, still overlap.
 *
 * Why one stream per context rather than one per run: a process that has
 * made 4 or more streams, even destroyed one after another, ran some small
 * grids slower afterwards (H200 T=512 H=8 2.26 -> 2.68-3.12 us;
 * docs/PERFORMANCE.md, sixteenth session). Runs that each made their own
 * stream put a process that tuned into that state; with the kit a context
 * makes one. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "context_internal.h"
#include "error.h"
#include "tuner.h"

/* Devices share a lock when their ordinals agree modulo this: still
 * correct (their runs just take turns), and no process has this many. */
#define KDA__KIT_LOCKS 64

static pthread_mutex_t g_locks[KDA__KIT_LOCKS];
static pthread_once_t g_locks_once = PTHREAD_ONCE_INIT;
/* Runs inside the timing section now, and the most ever at once (tests). */
static atomic_int g_inside, g_inside_max;

static void init_locks(void) {
  for (int i = 0; i < KDA__KIT_LOCKS; ++i) pthread_mutex_init(&g_locks[i], NULL);
}

static pthread_mutex_t *lock_of(const kda_context *ctx) {
  pthread_once(&g_locks_once, init_locks);
  const unsigned d = (unsigned)ctx->device;
  return &g_locks[d % KDA__KIT_LOCKS];
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void kit_free(const kda__driver *d, kda__tune_kit *k) {
  if (k == NULL) return;
  for (int i = 0; i < k->nev; ++i) d->cuEventDestroy(k->ev[i]);
  if (k->stream) d->cuStreamDestroy(k->stream);
  free(k);
}

static kda_status kit_make(kda_context *ctx, kda__tune_kit **out) {
  const kda__driver *d = ctx->drv;
  kda__tune_kit *k = calloc(1, sizeof *k);
  KDA__REQUIRE(k != NULL, KDA_ERROR_OUT_OF_MEMORY, "out of memory creating the tuning stream");
  CUresult r = d->cuStreamCreate(&k->stream, CU_STREAM_NON_BLOCKING);
  for (int i = 0; r == CUDA_SUCCESS && i < KDA__KIT_EVENTS; ++i) {
    r = d->cuEventCreate(&k->ev[i], CU_EVENT_DEFAULT);
    if (r == CUDA_SUCCESS) k->nev = i + 1;
  }
  if (r != CUDA_SUCCESS) {
    const char *call = k->stream ? "cuEventCreate(tuning)" : "cuStreamCreate(tuning)";
    kit_free(d, k);
    return kda__cu_status(d, r, call, __FILE__, __LINE__);
  }
  *out = k;
  return KDA_OK;
}

kda_status kda__tune_kit_acquire(kda_context *ctx, kda__tune_kit **kit, double *waited_ms) {
  *kit = NULL;
  *waited_ms = 0;
  pthread_mutex_t *m = lock_of(ctx);
  if (pthread_mutex_trylock(m) == EBUSY) {
    /* Counted as it begins, so that the stats show a run waiting now. */
    atomic_fetch_add(&ctx->tune_timing_waits, 1);
    const double t0 = now_ms();
    pthread_mutex_lock(m);
    *waited_ms = now_ms() - t0;
    atomic_fetch_add(&ctx->tune_timing_wait_ns, (uint_fast64_t)(*waited_ms * 1e6));
  }
  const int inside = atomic_fetch_add(&g_inside, 1) + 1;
  for (int seen = atomic_load(&g_inside_max);
       inside > seen && !atomic_compare_exchange_weak(&g_inside_max, &seen, inside);)
    ;
  /* Only the lock's holder reads or makes the kit. */
  kda_status st = ctx->tune_kit != NULL ? KDA_OK : kit_make(ctx, &ctx->tune_kit);
  if (st != KDA_OK) {
    kda__tune_kit_release(ctx);
    return st;
  }
  *kit = ctx->tune_kit;
  return KDA_OK;
}

void kda__tune_kit_release(kda_context *ctx) {
  /* The next holder's first event must not time this run's last work. */
  if (ctx->tune_kit != NULL) ctx->drv->cuStreamSynchronize(ctx->tune_kit->stream);
  atomic_fetch_sub(&g_inside, 1);
  pthread_mutex_unlock(lock_of(ctx));
}

void kda__tune_kit_destroy(kda_context *ctx) {
  kit_free(ctx->drv, ctx->tune_kit);
  ctx->tune_kit = NULL;
}

int kda__tune_kit_inside_max(void) { return atomic_load(&g_inside_max); }
