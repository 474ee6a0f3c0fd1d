/* Context lifetime: driver, device and CUDA context binding, kernel sources
 * and the module cache; plus the build step the cache calls on a miss. */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "context_internal.h"
#include "error.h"
#include "gate_args.h"
#include "nvrtc_compile.h"
#include "store.h"
#include "tuner.h"
#include "tuner_compile.h"

#define KDA__STR2(x) #x
#define KDA__STR(x) KDA__STR2(x)

const char *kda_version(void) {
  return KDA__STR(KDA_VERSION_MAJOR) "." KDA__STR(KDA_VERSION_MINOR) "." KDA__STR(KDA_VERSION_PATCH);
}
uint32_t kda_version_number(void) { return KDA_VERSION_NUMBER; }

kda_options kda_options_default(void) {
  kda_options o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.device = 0;
  o.kernel_dir = NULL;
  o.tune_mode = KDA_TUNE_ON;
  o.db_path = NULL;
  o.tune_budget_ms = 1000.0;
  o.log_fn = NULL;
  o.log_user = NULL;
  o.log_level = KDA_LOG_WARN;
  o.reserved0 = 0;
  o.compile_threads = 0;
  o.reserved1 = 0;
  o.launch_overlap = KDA_LAUNCH_OVERLAP_AUTO;
  return o;
}

static int parse_word(const char *v, const char *const *words, int n) {
  for (int i = 0; i < n; ++i)
    if (strcasecmp(v, words[i]) == 0) return i;
  return -1;
}

/* Options, then the environment's overrides (KDA_TUNE, KDA_LOG). */
static kda_status apply_tuning_options(kda_context *ctx, const kda_options *o) {
  ctx->log_fn = o->log_fn;
  ctx->log_user = o->log_user;
  ctx->log_level = o->log_level;
  const char *lv = getenv("KDA_LOG");
  if (lv && *lv) {
    static const char *const levels[] = {"error", "warn", "info", "debug"};
    int l = parse_word(lv, levels, 4);
    if (l >= 0) ctx->log_level = l;
    else kda__log(ctx, KDA_LOG_WARN, "KDA_LOG=%s is not error, warn, info or debug; ignored", lv);
  }
  KDA__REQUIRE(o->tune_mode >= KDA_TUNE_ON && o->tune_mode <= KDA_TUNE_BACKGROUND, KDA_ERROR_BAD_OPTIONS,
               "kda_options.tune_mode %d is not a kda_tune_mode", o->tune_mode);
  ctx->tune_mode = o->tune_mode;
  const char *tv = getenv("KDA_TUNE");
  if (tv && *tv) {
    static const char *const modes[] = {"on", "off", "cached", "background"};
    int m = parse_word(tv, modes, 4);
    if (m >= 0) ctx->tune_mode = m;
    else kda__log(ctx, KDA_LOG_WARN, "KDA_TUNE=%s is not on, off, cached or background; ignored", tv);
  }
  ctx->tune_budget_ms = o->tune_budget_ms > 0 ? o->tune_budget_ms : 1000.0;
  KDA__REQUIRE(o->compile_threads >= 0, KDA_ERROR_BAD_OPTIONS,
               "kda_options.compile_threads %d is negative", o->compile_threads);
  int threads = o->compile_threads;
  const char *cv = getenv("KDA_COMPILE_THREADS");
  if (cv && *cv) {
    char *end = NULL;
    const long n = strtol(cv, &end, 10);
    if (end != cv && *end == '\0' && n >= 0 && n <= 1024) threads = (int)n;
    else kda__log(ctx, KDA_LOG_WARN, "KDA_COMPILE_THREADS=%s is not a count of threads; ignored", cv);
  }
  ctx->compile_threads = kda__tune_compile_threads(threads);
  KDA__REQUIRE(o->launch_overlap == KDA_LAUNCH_OVERLAP_AUTO ||
                   o->launch_overlap == KDA_LAUNCH_OVERLAP_OFF,
               KDA_ERROR_BAD_OPTIONS, "kda_options.launch_overlap %d is not a kda_launch_overlap",
               o->launch_overlap);
  int overlap = o->launch_overlap == KDA_LAUNCH_OVERLAP_AUTO;
  const char *ov = getenv("KDA_LAUNCH_OVERLAP");
  if (ov && *ov) {
    static const char *const words[] = {"auto", "off"};
    int w = parse_word(ov, words, 2);
    if (w >= 0) overlap = w == 0;
    else kda__log(ctx, KDA_LOG_WARN, "KDA_LAUNCH_OVERLAP=%s is not auto or off; ignored", ov);
  }
  ctx->cubin_other_builds = 1;
  const char *nv = getenv("KDA_CUBIN_NVRTC");
  if (nv && *nv) {
    static const char *const words[] = {"same-major", "exact"};
    int w = parse_word(nv, words, 2);
    if (w >= 0) ctx->cubin_other_builds = w == 0;
    else kda__log(ctx, KDA_LOG_WARN, "KDA_CUBIN_NVRTC=%s is not same-major or exact; ignored", nv);
  }
  /* griddepcontrol exists from sm_90; older drivers lack cuLaunchKernelEx. */
  overlap = overlap && ctx->arch >= 90 && ctx->drv->cuLaunchKernelEx != NULL;
  atomic_store(&ctx->launch_overlap, overlap);
  if (o->db_path != NULL) {
    if (strcmp(o->db_path, ":memory:") == 0) {
      ctx->db_memory = 1;
    } else {
      ctx->db_path = strdup(o->db_path);
      KDA__REQUIRE(ctx->db_path != NULL, KDA_ERROR_OUT_OF_MEMORY, "copying db_path");
    }
  }
  return KDA_OK;
}

/* Messages logged while this thread holds a library lock (a context's
 * store lock, a GPU's tuning timing lock) wait here until it holds none:
 * the caller's log_fn may call back into the library (kda_context_db_path
 * takes the store lock; a call on another context of the GPU may tune and
 * take the timing lock), and a callback that blocks must not hold up the
 * other threads waiting for the lock. A tuning run logs a line per
 * candidate at debug level while it times, hence a queue on the heap. */
enum { KDA__DEFERRED_MAX = 512 };
typedef struct deferred_log {
  kda_context *ctx;
  kda_log_level level;
  char *msg;
} deferred_log;
static _Thread_local int tls_locks_held;
static _Thread_local deferred_log *tls_deferred;
static _Thread_local int tls_deferred_n, tls_deferred_cap, tls_deferred_lost;
static _Thread_local kda_context *tls_lost_ctx;

static void emit(kda_context *ctx, kda_log_level level, const char *msg) {
  if (ctx->log_fn) {
    ctx->log_fn(ctx->log_user, level, msg);
  } else {
    static const char *const names[] = {"error", "warning", "info", "debug"};
    fprintf(stderr, "libkda: %s: %s\n", names[level >= 0 && level <= 3 ? level : 1], msg);
  }
}

static void defer(kda_context *ctx, kda_log_level level, const char *msg) {
  if (tls_deferred_n == tls_deferred_cap && tls_deferred_cap < KDA__DEFERRED_MAX) {
    const int cap = tls_deferred_cap ? 2 * tls_deferred_cap : 16;
    deferred_log *q = realloc(tls_deferred, (size_t)cap * sizeof *q);
    if (q != NULL) {
      tls_deferred = q;
      tls_deferred_cap = cap;
    }
  }
  char *copy = tls_deferred_n < tls_deferred_cap ? strdup(msg) : NULL;
  if (copy == NULL) {
    ++tls_deferred_lost;
    tls_lost_ctx = ctx;
    return;
  }
  tls_deferred[tls_deferred_n++] = (deferred_log){ctx, level, copy};
}

void kda__log(kda_context *ctx, kda_log_level level, const char *fmt, ...) {
  if (ctx == NULL || (int)level > ctx->log_level) return;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (tls_locks_held == 0) emit(ctx, level, msg);
  else defer(ctx, level, msg);
}

void kda__log_hold(void) { ++tls_locks_held; }

void kda__log_release(void) {
  if (--tls_locks_held > 0) return;
  if (tls_deferred_n == 0 && tls_deferred_lost == 0) return; /* the usual case */
  /* Taken off the thread first: a log_fn that logs again queues anew. */
  deferred_log *q = tls_deferred;
  const int n = tls_deferred_n, lost = tls_deferred_lost;
  kda_context *lost_ctx = tls_lost_ctx;
  tls_deferred = NULL;
  tls_deferred_n = tls_deferred_cap = tls_deferred_lost = 0;
  tls_lost_ctx = NULL;
  for (int i = 0; i < n; ++i) {
    emit(q[i].ctx, q[i].level, q[i].msg);
    free(q[i].msg);
  }
  free(q);
  if (lost > 0 && lost_ctx != NULL)
    kda__log(lost_ctx, KDA_LOG_WARN, "%d more messages logged under a library lock were not logged",
             lost);
}

struct kda__store *kda__context_store_lock(kda_context *ctx) {
  pthread_mutex_lock(&ctx->store_lock);
  kda__log_hold();
  if (ctx->tune_mode == KDA_TUNE_OFF) return NULL;
  if (!ctx->store_opened) {
    ctx->store_opened = 1;
    /* An empty path is the store's in-memory mode. */
    kda_status st = kda__store_open(ctx->db_memory ? "" : ctx->db_path, 0, &ctx->store);
    if (st != KDA_OK) {
      ctx->store = NULL;
      kda__log(ctx, KDA_LOG_WARN, "cannot open the tuning database (%s); tuning results are "
               "not kept", kda_last_error());
    } else if (ctx->db_memory) {
      while (kda__store_pop_warning(ctx->store) != NULL) {
        /* "no usable path": asked for */
      }
    } else {
      kda__log(ctx, KDA_LOG_INFO, "tuning database %s (%s)", kda__store_path(ctx->store),
               kda__store_path_rule(ctx->store));
    }
  }
  return ctx->store;
}

void kda__context_store_unlock(kda_context *ctx) {
  if (ctx->store != NULL) {
    const char *w;
    while ((w = kda__store_pop_warning(ctx->store)) != NULL)
      kda__log(ctx, KDA_LOG_WARN, "%s", strncmp(w, "kda: ", 5) == 0 ? w + 5 : w);
  }
  pthread_mutex_unlock(&ctx->store_lock);
  kda__log_release();
}

const char *kda_context_db_path(kda_context *ctx) {
  if (ctx == NULL) return "";
  pthread_mutex_lock(&ctx->store_lock);
  /* A store that fell back to memory (an unusable path) uses no file. */
  const char *p = ctx->store && !ctx->db_memory &&
                          kda__store_get_mode(ctx->store) != KDA__STORE_MODE_MEMORY
                      ? kda__store_path(ctx->store)
                      : "";
  pthread_mutex_unlock(&ctx->store_lock);
  return p;
}

static kda_status read_device_info(kda_context *ctx) {
  const kda__driver *d = ctx->drv;
  kda_device_info *info = &ctx->info;
  memset(info, 0, sizeof *info);
  info->struct_size = sizeof *info;
  KDA__CU(d, cuDeviceGetName, info->name, (int)sizeof info->name, ctx->device);
  KDA__CU(d, cuDeviceGetAttribute, &info->cc_major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
          ctx->device);
  KDA__CU(d, cuDeviceGetAttribute, &info->cc_minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
          ctx->device);
  KDA__CU(d, cuDeviceGetAttribute, &info->sm_count, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
          ctx->device);
  KDA__CU(d, cuDeviceGetAttribute, &info->l2_bytes, CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, ctx->device);
  KDA__CU(d, cuDriverGetVersion, &info->driver_version);
  /* The PCI device id names the part (an H100 SXM and PCIe differ). The
   * driver API has no attribute for it, so read sysfs at the device's bus id;
   * where sysfs is missing it stays 0 and the other key fields still differ. */
  char bus[64] = {0};
  if (d->cuDeviceGetPCIBusId(bus, (int)sizeof bus, ctx->device) == CUDA_SUCCESS) {
    for (char *p = bus; *p; ++p)
      if (*p >= 'A' && *p <= 'F') *p = (char)(*p - 'A' + 'a');
    char path[160];
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/device", bus);
    FILE *f = fopen(path, "r");
    if (f) {
      unsigned id = 0;
      if (fscanf(f, "%x", &id) == 1) info->pci_device_id = (int32_t)id;
      fclose(f);
    }
  }
  kda__nvrtc_version(&info->nvrtc_major, &info->nvrtc_minor);
  ctx->arch = info->cc_major * 10 + info->cc_minor;
  return KDA_OK;
}

static kda_status bind_device(kda_context *ctx, int32_t device) {
  const kda__driver *d = ctx->drv;
  if (device < 0) {
    CUcontext cur = NULL;
    KDA__CU(d, cuCtxGetCurrent, &cur);
    KDA__REQUIRE(cur != NULL, KDA_ERROR_NO_DEVICE,
                 "options.device is -1 but no CUDA context is current on this thread");
    ctx->cu = cur;
    KDA__CU(d, cuCtxGetDevice, &ctx->device);
    return KDA_OK;
  }
  int count = 0;
  KDA__CU(d, cuDeviceGetCount, &count);
  KDA__REQUIRE(device < count, KDA_ERROR_NO_DEVICE, "device %d requested, %d device(s) present",
               device, count);
  KDA__CU(d, cuDeviceGet, &ctx->device, device);
  KDA__CU(d, cuDevicePrimaryCtxRetain, &ctx->cu, ctx->device);
  ctx->retained_primary = 1;
  return KDA_OK;
}

/* KDA_TEST_GPU_IDENTITY (tuner.h): a test hook, applied after the log
 * options so that a hook left set in production is always loud. */
static void apply_identity_hook(kda_context *ctx) {
  const char *v = getenv("KDA_TEST_GPU_IDENTITY");
  if (v == NULL || *v == '\0') return;
  if (kda__gpu_identity_override(v, &ctx->info) != 0) {
    kda__log(ctx, KDA_LOG_WARN, "KDA_TEST_GPU_IDENTITY=%s is not name=..;pci=..;sms=..;l2=..; "
             "ignored", v);
    return;
  }
  kda__log(ctx, KDA_LOG_WARN, "KDA_TEST_GPU_IDENTITY (test hook): this context poses as \"%s\" "
           "(pci 0x%04x, %d SMs, L2 %d bytes) in the tuning database", ctx->info.name,
           (unsigned)ctx->info.pci_device_id, ctx->info.sm_count, ctx->info.l2_bytes);
}

static kda_status context_init(kda_context *ctx, const kda_options *o) {
  KDA__TRY(kda__driver_load(&ctx->drv));
  KDA__TRY(bind_device(ctx, o->device));
  KDA__TRY(read_device_info(ctx));
  ctx->info.ordinal = o->device >= 0 ? o->device : (int32_t)ctx->device;
  const char *dir = o->kernel_dir ? o->kernel_dir : getenv("KDA_KERNEL_DIR");
  if (dir && !*dir) dir = NULL;
  KDA__TRY(kda__source_set_load(dir, &ctx->sources));
  KDA__TRY(apply_tuning_options(ctx, o));
  apply_identity_hook(ctx);
  return kda__cache_create(&ctx->cache);
}

kda_status kda_context_create(const kda_options *options, kda_context **out) {
  KDA__REQUIRE(out != NULL, KDA_ERROR_NULL_POINTER, "kda_context_create: out is NULL");
  *out = NULL;
  kda_options o = kda_options_default();
  if (options) {
    /* Callers built against an older header pass the size they know: the
     * fields it covers are theirs, the rest keep their defaults. */
    const size_t v1 = offsetof(kda_options, tune_mode);
    const size_t v2 = offsetof(kda_options, compile_threads);
    const size_t v3 = offsetof(kda_options, launch_overlap);
    KDA__REQUIRE(options->struct_size == sizeof(kda_options) || options->struct_size == v1 ||
                     options->struct_size == v2 || options->struct_size == v3,
                 KDA_ERROR_BAD_OPTIONS,
                 "kda_options.struct_size is %u; this library knows %zu, %zu, %zu and %zu (use "
                 "kda_options_default())",
                 options->struct_size, v1, v2, v3, sizeof(kda_options));
    memcpy(&o, options, options->struct_size);
    o.struct_size = sizeof o;
  }
  KDA__REQUIRE(o.device >= -1, KDA_ERROR_NO_DEVICE, "device ordinal %d is negative", o.device);
  /* The budget sizes lease lifetimes and waits that other processes rely
   * on expiring: an infinite or NaN one would never let a crashed tuner's
   * lease go. 0 or less: the default. */
  KDA__REQUIRE(isfinite(o.tune_budget_ms) && o.tune_budget_ms <= KDA__TUNE_BUDGET_MAX_MS,
               KDA_ERROR_BAD_OPTIONS, "kda_options.tune_budget_ms %g is not a number of ms "
               "up to %.0f (one hour)", o.tune_budget_ms, KDA__TUNE_BUDGET_MAX_MS);
  kda_context *ctx = calloc(1, sizeof *ctx);
  KDA__REQUIRE(ctx != NULL, KDA_ERROR_OUT_OF_MEMORY, "allocating a context");
  if (pthread_mutex_init(&ctx->store_lock, NULL) != 0) {
    free(ctx);
    return kda__fail(KDA_ERROR_INTERNAL, "pthread_mutex_init failed");
  }
  kda_status st = context_init(ctx, &o);
  if (st != KDA_OK) {
    /* Keep the failure's message: destroy may overwrite nothing, but be safe. */
    kda_context_destroy(ctx);
    return st;
  }
  *out = ctx;
  return KDA_OK;
}

static void unload_module(void *user, CUmodule module) {
  kda_context *ctx = user;
  ctx->drv->cuModuleUnload(module);
}

void kda_context_destroy(kda_context *ctx) {
  if (ctx == NULL) return;
  kda__background_stop(ctx);
  if (ctx->cache || ctx->tune_kit) {
    int pushed = 0;
    if (kda__context_enter(ctx, &pushed) == KDA_OK) {
      if (ctx->cache) kda__cache_destroy(ctx->cache, unload_module, ctx);
      kda__tune_kit_destroy(ctx);
      kda__context_leave(ctx, pushed);
    } else {
      /* The CUDA context is gone (its owner destroyed it, or the driver
       * is shutting down at exit) and its modules with it: free the host
       * side only, so that a server cycling contexts leaks nothing. */
      if (ctx->cache) kda__cache_destroy(ctx->cache, NULL, NULL);
      kda__tune_kit_abandon(ctx);
    }
  }
  kda__source_set_free(&ctx->sources);
  kda__store_close(ctx->store);
  pthread_mutex_destroy(&ctx->store_lock);
  free(ctx->db_path);
  if (ctx->retained_primary) ctx->drv->cuDevicePrimaryCtxRelease(ctx->device);
  free(ctx);
}

kda_status kda__context_enter(kda_context *ctx, int *pushed) {
  CUcontext cur = NULL;
  *pushed = 0;
  KDA__CU(ctx->drv, cuCtxGetCurrent, &cur);
  if (cur == ctx->cu) return KDA_OK;
  KDA__CU(ctx->drv, cuCtxPushCurrent, ctx->cu);
  *pushed = 1;
  return KDA_OK;
}

void kda__context_leave(kda_context *ctx, int pushed) {
  if (pushed) {
    CUcontext popped;
    ctx->drv->cuCtxPopCurrent(&popped);
  }
}

kda_status kda_context_get_device_info(kda_context *ctx, kda_device_info *info) {
  KDA__REQUIRE(ctx && info, KDA_ERROR_NULL_POINTER, "kda_context_get_device_info: NULL argument");
  KDA__REQUIRE(info->struct_size == sizeof *info, KDA_ERROR_BAD_OPTIONS,
               "kda_device_info.struct_size is %u, expected %zu", info->struct_size, sizeof *info);
  *info = ctx->info;
  return KDA_OK;
}

kda_status kda_context_get_stats(kda_context *ctx, kda_stats *stats) {
  KDA__REQUIRE(ctx && stats, KDA_ERROR_NULL_POINTER, "kda_context_get_stats: NULL argument");
  /* Sizes of the struct as earlier headers declared it: such callers get
   * the fields they know and nothing is written past them. */
  const size_t v1 = offsetof(kda_stats, tuning_runs), v2 = offsetof(kda_stats, background_jobs);
  const size_t v3 = offsetof(kda_stats, launch_overlap_active);
  const size_t v4 = offsetof(kda_stats, tuning_timing_waits);
  const size_t v5 = offsetof(kda_stats, db_cubin_other_nvrtc_hits);
  const size_t size = stats->struct_size;
  KDA__REQUIRE(size == sizeof *stats || size == v1 || size == v2 || size == v3 || size == v4 ||
                   size == v5,
               KDA_ERROR_BAD_OPTIONS,
               "kda_stats.struct_size is %zu; this library knows %zu, %zu, %zu, %zu, %zu and %zu",
               size, v1, v2, v3, v4, v5, sizeof *stats);
  kda_stats full;
  kda_stats *out = stats;
  stats = &full;
  stats->struct_size = (uint32_t)size;
  stats->nvrtc_compiles = atomic_load(&ctx->nvrtc_compiles);
  stats->modules_loaded = atomic_load(&ctx->modules_loaded);
  stats->cache_hits = atomic_load(&ctx->cache_hits);
  stats->cache_misses = atomic_load(&ctx->cache_misses);
  stats->launches = atomic_load(&ctx->launches);
  stats->compile_ms_total = (double)atomic_load(&ctx->compile_ns) / 1e6;
  stats->tuning_runs = atomic_load(&ctx->tuning_runs);
  stats->db_result_hits = atomic_load(&ctx->db_result_hits);
  stats->db_cubin_hits = atomic_load(&ctx->db_cubin_hits);
  stats->memory_hits = stats->cache_hits;
  stats->persist_failures = atomic_load(&ctx->persist_failures);
  stats->rejected_candidates = atomic_load(&ctx->rejected_candidates);
  stats->tune_ms_total = (double)atomic_load(&ctx->tune_ns) / 1e6;
  stats->background_jobs = atomic_load(&ctx->background_jobs);
  stats->launch_overlap_active = atomic_load(&ctx->launch_overlap) ? 1 : 0;
  stats->tuning_timing_waits = atomic_load(&ctx->tune_timing_waits);
  stats->tuning_timing_wait_ms_total = (double)atomic_load(&ctx->tune_timing_wait_ns) / 1e6;
  stats->db_cubin_other_nvrtc_hits = atomic_load(&ctx->db_cubin_other_nvrtc_hits);
  memcpy(out, &full, size);
  return KDA_OK;
}

kda_status kda__context_load(kda_context *ctx, const void *cubin, const char *lowered,
                             CUmodule *module, CUfunction *function) {
  int pushed = 0;
  KDA__TRY(kda__context_enter(ctx, &pushed));
  kda_status st = KDA_OK;
  CUresult r = ctx->drv->cuModuleLoadData(module, cubin);
  if (r != CUDA_SUCCESS) {
    st = kda__cu_status(ctx->drv, r, "cuModuleLoadData", __FILE__, __LINE__);
  } else {
    r = ctx->drv->cuModuleGetFunction(function, *module, lowered);
    if (r != CUDA_SUCCESS) {
      st = kda__cu_status(ctx->drv, r, "cuModuleGetFunction", __FILE__, __LINE__);
      ctx->drv->cuModuleUnload(*module);
      *module = NULL;
    } else {
      atomic_fetch_add(&ctx->modules_loaded, 1);
    }
  }
  kda__context_leave(ctx, pushed);
  return st;
}

/* The cache's build step: one NVRTC program for one instantiation, loaded
 * into ctx's CUcontext. Runs outside every lock. */
static kda_status build_spec_relaxed(kda_context *ctx, const kda__spec *spec, CUmodule *module,
                                     CUfunction *function);

static kda_status build_spec(void *user, const kda__spec *spec, CUmodule *module,
                             CUfunction *function) {
  kda_context *ctx = user;
  const CUstreamCaptureMode mode = kda__driver_relax_capture(ctx->drv);
  const kda_status st = build_spec_relaxed(ctx, spec, module, function);
  kda__driver_restore_capture(ctx->drv, mode);
  return st;
}

static kda_status build_spec_relaxed(kda_context *ctx, const kda__spec *spec, CUmodule *module,
                                     CUfunction *function) {
  char name[KDA__NAME_MAX];
  KDA__REQUIRE(kda__spec_name(spec, name, sizeof name) > 0, KDA_ERROR_INTERNAL,
               "specialization name too long");
  const char *names[1] = {name};
  kda__compile_request req = {&ctx->sources, kda__spec_source_name(spec), ctx->arch, names, 1};
  kda__compiled out;
  memset(&out, 0, sizeof out);
  kda_status st = kda__nvrtc_compile(&req, &out);
  if (st != KDA_OK) return st;
  atomic_fetch_add(&ctx->nvrtc_compiles, 1);
  atomic_fetch_add(&ctx->compile_ns, (uint_fast64_t)(out.compile_ms * 1e6));
  st = kda__context_load(ctx, out.cubin, out.lowered_names[0], module, function);
  kda__compiled_free(&out);
  return st;
}

static kda_status capture_cold(kda_context *ctx, const kda__spec *spec, CUstream stream);

kda_status kda__context_function(kda_context *ctx, const kda__spec *spec, CUstream stream,
                                 CUfunction *fn) {
  if (kda__cache_peek(ctx->cache, spec, fn)) {
    atomic_fetch_add_explicit(&ctx->cache_hits, 1, memory_order_relaxed);
    return KDA_OK;
  }
  KDA__TRY(capture_cold(ctx, spec, stream));
  atomic_fetch_add_explicit(&ctx->cache_misses, 1, memory_order_relaxed);
  int hit = 0;
  /* The builders are not tuned, but a prewarmed database holds their
   * cubins (KDA_TUNE_OFF never reads the database). */
  const kda__build_fn build = spec->kernel == KDA__KERNEL_CHUNK_INDICES &&
                                      ctx->tune_mode != KDA_TUNE_OFF
                                  ? kda__stored_build
                                  : build_spec;
  /* What the build logs waits until its entry is ready: a log_fn that
   * calls the library for the same specialization finds it built, rather
   * than waiting for its own thread's build. */
  kda__log_hold();
  const kda_status st = kda__cache_get(ctx->cache, spec, build, ctx, fn, &hit);
  kda__log_release();
  return st;
}

/* Widest vector width (8, 4, 2, 1) both pointers are aligned for. */
static int alignment_vec_cap(const kda_gate_args *a) {
  const uintptr_t in_sz = a->g_dtype == KDA_DTYPE_F32 ? 4 : 2;
  const uintptr_t out_sz = a->out_dtype == KDA_DTYPE_F32 ? 4 : 2;
  int v = 8;
  while (v > 1 && (((uintptr_t)a->g % ((uintptr_t)v * in_sz)) != 0 ||
                   ((uintptr_t)a->out % ((uintptr_t)v * out_sz)) != 0))
    v >>= 1;
  return v;
}

void kda__context_slot(const kda__launch_plan *plan, const kda_gate_args *args, kda__spec *slot) {
  *slot = plan->spec;
  memset(&slot->cfg, 0, sizeof slot->cfg);
  slot->tuned = 1;
  slot->bucket = kda__tune_bucket(args->batch * args->seq_len);
  slot->vec_cap = alignment_vec_cap(args);
}

static kda_status capture_cold(kda_context *ctx, const kda__spec *spec, CUstream stream) {
  /* The legacy stream is never captured; asking would fail (capture
   * "implicit") while another thread captures a blocking stream. */
  if (stream == NULL) return KDA_OK;
  /* Another device's stream: refused before the compile or tuning run the
   * call would otherwise spend before its launch fails. */
  KDA__TRY(kda__context_check_stream(
      ctx, stream, spec->kernel == KDA__KERNEL_CHUNK_INDICES ? "chunk_indices" : "gate_cumsum"));
  CUstreamCaptureStatus cap = CU_STREAM_CAPTURE_STATUS_NONE;
  KDA__CU(ctx->drv, cuStreamIsCapturing, stream, &cap);
  if (cap == CU_STREAM_CAPTURE_STATUS_NONE) return KDA_OK;
  char what[512];
  kda__spec_describe(spec, what, sizeof what);
  return kda__fail(KDA_ERROR_CAPTURE_COLD,
                   "specialization [%s] is not compiled yet and the stream is capturing; "
                   "call it once outside capture to warm it", what);
}

kda_status kda__context_resolve(kda_context *ctx, const kda__launch_plan *plan,
                                const kda_gate_args *args, CUstream stream, CUfunction *fn,
                                kda__config *cfg) {
  if (ctx->tune_mode == KDA_TUNE_OFF || plan->spec.kernel != KDA__KERNEL_GATE_CUMSUM) {
    *cfg = plan->spec.cfg;
    return kda__context_function(ctx, &plan->spec, stream, fn);
  }
  kda__spec slot;
  kda__context_slot(plan, args, &slot);
  if (kda__cache_peek_cfg(ctx->cache, &slot, fn, cfg)) {
    atomic_fetch_add_explicit(&ctx->cache_hits, 1, memory_order_relaxed);
    return KDA_OK;
  }
  if (ctx->tune_mode == KDA_TUNE_BACKGROUND) {
    /* Run now with the heuristic; a worker tunes the slot and installs the
     * winner, which later calls find in the cache. Not queued while the
     * stream captures (the worker's calls are capture-safe, but a job that
     * outlives the capture is the caller's warm-up, not its graph); the
     * slot stays unqueued, so the next call outside capture queues it. */
    CUstreamCaptureStatus cap = CU_STREAM_CAPTURE_STATUS_NONE;
    KDA__TRY(kda__context_check_stream(ctx, stream, "gate_cumsum")); /* no job for a refused call */
    if (stream != NULL) KDA__CU(ctx->drv, cuStreamIsCapturing, stream, &cap);
    if (cap == CU_STREAM_CAPTURE_STATUS_NONE) kda__background_enqueue(ctx, plan, args, &slot);
    *cfg = plan->spec.cfg;
    return kda__context_function(ctx, &plan->spec, stream, fn);
  }
  KDA__TRY(capture_cold(ctx, &plan->spec, stream));
  atomic_fetch_add_explicit(&ctx->cache_misses, 1, memory_order_relaxed);
  kda__tune_request req;
  memset(&req, 0, sizeof req);
  req.ctx = ctx;
  req.args = args;
  req.plan = plan;
  req.stream = stream;
  req.mode = ctx->tune_mode;
  int hit = 0;
  /* As in kda__context_function: messages after the entry is ready (a
   * tuning run's wait for another job's lease included). */
  kda__log_hold();
  const kda_status st = kda__cache_get_cfg(ctx->cache, &slot, kda__tuner_build, &req, fn, cfg, &hit);
  kda__log_release();
  return st;
}
