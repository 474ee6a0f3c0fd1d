/* The context object, shared by the files that implement the public calls. */
#ifndef KDA_SRC_CONTEXT_INTERNAL_H
#define KDA_SRC_CONTEXT_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "driver.h"
#include "kda/kda.h"
#include "kernel_source.h"
#include "module_cache.h"
#include "spec.h"

struct kda_context {
  const kda__driver *drv;
  CUdevice device;
  CUcontext cu;
  int retained_primary; /* release the primary context on destroy */
  int arch;             /* cc_major * 10 + cc_minor */
  kda_device_info info;
  kda__source_set sources;
  kda__module_cache *cache;
  atomic_uint_fast64_t nvrtc_compiles, modules_loaded, cache_hits, cache_misses, launches;
  atomic_uint_fast64_t compile_ns;
  /* Autotuning (tuner/): options after the environment's overrides. */
  int tune_mode;        /* kda_tune_mode */
  double tune_budget_ms;
  int compile_threads;  /* resolved: >= 1 */
  /* Launch with programmatic stream serialization (kda_launch_overlap);
   * cleared for good if the driver refuses the attribute. */
  atomic_int launch_overlap;
  char *db_path;        /* option copy; NULL: default path */
  int db_memory;        /* ":memory:" */
  kda_log_fn log_fn;
  void *log_user;
  int log_level;
  /* The store is opened on first need (never with KDA_TUNE_OFF) and used
   * under store_lock (a kda__store is single-threaded). */
  pthread_mutex_t store_lock;
  int store_opened;
  struct kda__store *store;
  atomic_uint_fast64_t tuning_runs, db_result_hits, db_cubin_hits, persist_failures,
      rejected_candidates, tune_ns;
  /* Stored cubins of another NVRTC build of the same major version are
   * loaded on a miss of this build's (KDA_CUBIN_NVRTC=exact clears it), and
   * counted apart as well as in db_cubin_hits. */
  int cubin_other_builds;
  atomic_uint_fast64_t db_cubin_other_nvrtc_hits;
  /* The stream and events of this context's tuning runs, made by the first
   * and used under the device's timing lock (tuner/tuner_kit.c); runs that
   * waited for another run's timing, and how long. */
  struct kda__tune_kit *tune_kit;
  atomic_uint_fast64_t tune_timing_waits, tune_timing_wait_ns;
  /* KDA_TUNE_BACKGROUND: the worker and its queue (src/background.c). */
  struct kda__background *background;
  atomic_uint_fast64_t background_jobs;
  /* Set by kda_context_destroy before it joins the background worker: a
   * run in progress stops waiting for another process (its lease, the
   * GPU's timing lock) and ends with what it has. */
  atomic_int stopping;
  /* The device's copy bandwidth: measured once, by the first tuning run
   * (0: not yet; -1: could not be; tuner/tuner_copy_bw.c). Under the
   * timing lock. */
  _Atomic double copy_bw_gbps;
};

struct kda__launch_plan;

/* Queues a background tuning job for slot (once per slot); starts the
 * worker on first use. Never blocks on tuning. */
void kda__background_enqueue(kda_context *ctx, const struct kda__launch_plan *plan,
                             const kda_gate_args *args, const kda__spec *slot);
/* Stops the worker: waits for the job in progress, drops the rest. */
void kda__background_stop(kda_context *ctx);

struct kda__launch_plan;

/* Logs at level when the context's level allows it: to log_fn, else to
 * stderr as "libkda: <message>". */
void kda__log(kda_context *ctx, kda_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The context's store, opened on first call; NULL in KDA_TUNE_OFF mode or
 * when it could not be created. Caller holds ctx->store_lock. Queued store
 * warnings are logged by kda__context_store_unlock. */
/* While this thread holds a library lock, its log messages wait (in order)
 * until it holds none: kda__log_hold after taking the lock,
 * kda__log_release after letting it go (emits them at the outermost). */
void kda__log_hold(void);
void kda__log_release(void);
struct kda__store *kda__context_store_lock(kda_context *ctx);
void kda__context_store_unlock(kda_context *ctx);

/* Launches fn (1-D grid) on stream the way the context launches every
 * kernel (src/kernel_launch.c), counts the launch, and turns a failure
 * into a status naming `what`. */
kda_status kda__context_launch(kda_context *ctx, CUfunction fn, unsigned grid, unsigned threads,
                               CUstream stream, void **params, const char *what);
/* The same without programmatic overlap: the kernel starts only after
 * everything before it in the stream has completed (chunk plans). */
kda_status kda__context_launch_plain(kda_context *ctx, CUfunction fn, unsigned grid,
                                     unsigned threads, CUstream stream, void **params,
                                     const char *what);
/* KDA_ERROR_INVALID_ARGUMENT, naming `what`, if stream belongs to another
 * CUDA context than ctx's (another device's); KDA_OK otherwise, or where
 * the driver cannot say. One driver query: for the cold paths, before a
 * compile, a tuning run or a background job is spent on a call whose
 * launch the driver would refuse (a warm call learns it from the launch). */
kda_status kda__context_check_stream(const kda_context *ctx, CUstream stream, const char *what);
/* Says once that the driver refused programmatic dependent launch for
 * `what` (a kernel call or a tuning run) and that ctx launches plainly now. */
void kda__context_overlap_refused(kda_context *ctx, const char *what);

/* Loads a cubin and gets one function from it (ctx current on the thread). */
kda_status kda__context_load(kda_context *ctx, const void *cubin, const char *lowered,
                             CUmodule *module, CUfunction *function);

/* The tuned slot of a launch plan: its spec without config, the call's
 * token bucket and the vector width the call's pointers allow. */
void kda__context_slot(const struct kda__launch_plan *plan, const kda_gate_args *args,
                       kda__spec *slot);

/* The function and config for a gate_cumsum launch plan: the tuned slot's
 * winner (tuning on first use per the mode), or the plan's heuristic config
 * with KDA_TUNE_OFF. Never tunes or compiles while stream is capturing. */
kda_status kda__context_resolve(kda_context *ctx, const struct kda__launch_plan *plan,
                                const kda_gate_args *args, CUstream stream, CUfunction *fn,
                                kda__config *cfg);

/* Makes ctx's CUcontext current on this thread if it is not; *pushed says
 * whether kda__context_leave must pop it. */
kda_status kda__context_enter(kda_context *ctx, int *pushed);
void kda__context_leave(kda_context *ctx, int pushed);

/* Returns the loaded function for spec, compiling it on first use. Refuses
 * to compile while stream is capturing (KDA_ERROR_CAPTURE_COLD). */
kda_status kda__context_function(kda_context *ctx, const kda__spec *spec, CUstream stream,
                                 CUfunction *fn);

#endif
