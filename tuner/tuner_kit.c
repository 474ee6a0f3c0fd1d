/* What a tuning run times with: its context's stream and events, made on
 * the context's first tuning run and kept until the context is destroyed,
 * and its device's timing lock, so that two tuning runs never time on one
 * GPU at once: a mutex per device within the process, then an flock on a
 * file named by the GPU's PCI bus id across processes (several `kda-tune
 * prewarm` at once on one GPU, test_stress_concurrent_prewarm_gpu).
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
 * docs/performance-runs.md, sixteenth session). Runs that each made their own
 * stream put a process that tuned into that state; with the kit a context
 * makes one. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "context_internal.h"
#include "error.h"
#include "tuner.h"
#include "tuner_job.h" /* kda__job_now_ms */

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

static void kit_free(const kda__driver *d, kda__tune_kit *k) {
  if (k == NULL) return;
  for (int i = 0; i < k->nev; ++i) d->cuEventDestroy(k->ev[i]);
  if (k->stream) d->cuStreamDestroy(k->stream);
  if (k->lock_fd >= 0) close(k->lock_fd);
  free(k);
}

/* The file every process locks to time on this GPU:
 * $KDA_TIMING_LOCK_DIR (default /tmp)/kda-timing-<PCI bus id>.lock, or -1
 * where there is none ("off", no bus id, a directory that cannot hold it):
 * then only this process's runs take turns. Opened read-only (flock needs
 * no write access, so users sharing a GPU share the file) and created only
 * where it is missing (an O_CREAT open of another user's file in a sticky
 * directory fails under fs.protected_regular). */
static int open_lock_file(kda_context *ctx, char *path, size_t size) {
  const char *dir = getenv("KDA_TIMING_LOCK_DIR");
  if (dir == NULL || dir[0] == '\0') dir = "/tmp";
  path[0] = '\0';
  if (strcmp(dir, "off") == 0) return -1;
  char bus[64];
  if (ctx->drv->cuDeviceGetPCIBusId(bus, (int)sizeof bus, ctx->device) != CUDA_SUCCESS) return -1;
  snprintf(path, size, "%s/kda-timing-%s.lock", dir, bus);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0444);
  if (fd < 0 && errno == EEXIST) fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    kda__log(ctx, KDA_LOG_INFO, "cannot open the timing lock %s (%s): tuning runs of other "
             "processes on this GPU may time at the same moment", path, kda__errno_text(errno));
  return fd;
}

/* How long a run waits for another process's timing before timing anyway:
 * as long as a tuning run of this budget may time, twice, and 3 s (a
 * process stopped while holding the lock must not stall tuning for good). */
static double flock_bound_ms(const kda_context *ctx) {
  const double b = 2.0 * ctx->tune_budget_ms + 3000.0;
  return b < 10000.0 ? 10000.0 : b;
}

/* Takes the kit's file lock, waiting at most flock_bound_ms. Returns 1 if
 * held; adds the wait to *waited_ms (and counts it, if it did not already). */
static int lock_file(kda_context *ctx, kda__tune_kit *k, int counted, double *waited_ms) {
  if (k->lock_fd < 0) return 0;
  if (flock(k->lock_fd, LOCK_EX | LOCK_NB) == 0) return 1;
  if (errno != EWOULDBLOCK) return 0;
  const double t0 = kda__job_now_ms(), bound = flock_bound_ms(ctx);
  if (!counted) atomic_fetch_add(&ctx->tune_timing_waits, 1);
  int held = 0;
  for (long sleep_us = 200; !held && kda__job_now_ms() - t0 < bound && !atomic_load(&ctx->stopping);) {
    usleep((useconds_t)sleep_us);
    if (sleep_us < 5000) sleep_us *= 2;
    held = flock(k->lock_fd, LOCK_EX | LOCK_NB) == 0;
  }
  const double w = kda__job_now_ms() - t0;
  *waited_ms += w;
  atomic_fetch_add(&ctx->tune_timing_wait_ns, (uint_fast64_t)(w * 1e6));
  if (!held && !atomic_load(&ctx->stopping))
    kda__log(ctx, KDA_LOG_WARN, "another process held this GPU's timing lock (%s) for %.0f s; "
             "timing anyway, and its kernels may share the GPU with these", k->lock_path,
             w / 1e3);
  return held;
}

static kda_status kit_make(kda_context *ctx, kda__tune_kit **out) {
  const kda__driver *d = ctx->drv;
  kda__tune_kit *k = calloc(1, sizeof *k);
  KDA__REQUIRE(k != NULL, KDA_ERROR_OUT_OF_MEMORY, "out of memory creating the tuning stream");
  k->lock_fd = open_lock_file(ctx, k->lock_path, sizeof k->lock_path);
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

/* Takes m, in slices of 50 ms so that a context being destroyed stops
 * waiting: the holder may be another context's run, itself waiting up to
 * flock_bound_ms for another process. 1 if held. */
static int lock_unless_stopping(kda_context *ctx, pthread_mutex_t *m) {
  for (;;) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += 50 * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
      until.tv_sec += 1;
      until.tv_nsec -= 1000000000L;
    }
    const int rc = pthread_mutex_timedlock(m, &until);
    if (rc == 0) return 1;
    if (rc != ETIMEDOUT) {
      pthread_mutex_lock(m); /* no timed wait here: wait plainly */
      return 1;
    }
    if (atomic_load(&ctx->stopping)) return 0;
  }
}

kda_status kda__tune_kit_acquire(kda_context *ctx, kda__tune_kit **kit, double *waited_ms) {
  *kit = NULL;
  *waited_ms = 0;
  pthread_mutex_t *m = lock_of(ctx);
  int counted = 0;
  if (pthread_mutex_trylock(m) == EBUSY) {
    counted = 1;
    /* Counted as it begins (after its clock starts: whoever sees the count
     * sees a wait already being timed), so the stats show a run waiting. */
    const double t0 = kda__job_now_ms();
    atomic_fetch_add(&ctx->tune_timing_waits, 1);
    const int held = lock_unless_stopping(ctx, m);
    *waited_ms = kda__job_now_ms() - t0;
    atomic_fetch_add(&ctx->tune_timing_wait_ns, (uint_fast64_t)(*waited_ms * 1e6));
    if (!held)
      return kda__fail(KDA_ERROR_INTERNAL, "the context is being destroyed: its tuning run "
                       "stopped waiting for another run's timing on this GPU");
  }
  /* Held for the whole timing: what it logs waits until the release. */
  kda__log_hold();
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
  ctx->tune_kit->flocked = lock_file(ctx, ctx->tune_kit, counted, waited_ms);
  *kit = ctx->tune_kit;
  return KDA_OK;
}

void kda__tune_kit_release(kda_context *ctx) {
  /* The next holder's first event must not time this run's last work. */
  kda__tune_kit *k = ctx->tune_kit;
  if (k != NULL) {
    ctx->drv->cuStreamSynchronize(k->stream);
    if (k->flocked) flock(k->lock_fd, LOCK_UN);
    k->flocked = 0;
  }
  atomic_fetch_sub(&g_inside, 1);
  pthread_mutex_unlock(lock_of(ctx));
  kda__log_release();
}

void kda__tune_kit_destroy(kda_context *ctx) {
  kit_free(ctx->drv, ctx->tune_kit);
  ctx->tune_kit = NULL;
}

void kda__tune_kit_abandon(kda_context *ctx) {
  kda__tune_kit *k = ctx->tune_kit;
  ctx->tune_kit = NULL;
  if (k == NULL) return;
  if (k->lock_fd >= 0) close(k->lock_fd);
  free(k);
}

int kda__tune_kit_inside_max(void) { return atomic_load(&g_inside_max); }
