/* Context lifetime: driver, device and CUDA context binding, kernel sources
 * and the module cache; plus the build step the cache calls on a miss. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "context_internal.h"
#include "error.h"
#include "nvrtc_compile.h"

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
  return o;
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

static kda_status context_init(kda_context *ctx, const kda_options *o) {
  KDA__TRY(kda__driver_load(&ctx->drv));
  KDA__TRY(bind_device(ctx, o->device));
  KDA__TRY(read_device_info(ctx));
  ctx->info.ordinal = o->device >= 0 ? o->device : (int32_t)ctx->device;
  const char *dir = o->kernel_dir ? o->kernel_dir : getenv("KDA_KERNEL_DIR");
  if (dir && !*dir) dir = NULL;
  KDA__TRY(kda__source_set_load(dir, &ctx->sources));
  return kda__cache_create(&ctx->cache);
}

kda_status kda_context_create(const kda_options *options, kda_context **out) {
  KDA__REQUIRE(out != NULL, KDA_ERROR_NULL_POINTER, "kda_context_create: out is NULL");
  *out = NULL;
  kda_options o = kda_options_default();
  if (options) {
    KDA__REQUIRE(options->struct_size == sizeof(kda_options), KDA_ERROR_BAD_OPTIONS,
                 "kda_options.struct_size is %u, this library knows %zu (use kda_options_default())",
                 options->struct_size, sizeof(kda_options));
    o = *options;
  }
  KDA__REQUIRE(o.device >= -1, KDA_ERROR_NO_DEVICE, "device ordinal %d is negative", o.device);
  kda_context *ctx = calloc(1, sizeof *ctx);
  KDA__REQUIRE(ctx != NULL, KDA_ERROR_OUT_OF_MEMORY, "allocating a context");
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
  if (ctx->cache) {
    int pushed = 0;
    if (kda__context_enter(ctx, &pushed) == KDA_OK) {
      kda__cache_destroy(ctx->cache, unload_module, ctx);
      kda__context_leave(ctx, pushed);
    }
  }
  kda__source_set_free(&ctx->sources);
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
  KDA__REQUIRE(stats->struct_size == sizeof *stats, KDA_ERROR_BAD_OPTIONS,
               "kda_stats.struct_size is %u, expected %zu", stats->struct_size, sizeof *stats);
  stats->nvrtc_compiles = atomic_load(&ctx->nvrtc_compiles);
  stats->modules_loaded = atomic_load(&ctx->modules_loaded);
  stats->cache_hits = atomic_load(&ctx->cache_hits);
  stats->cache_misses = atomic_load(&ctx->cache_misses);
  stats->launches = atomic_load(&ctx->launches);
  stats->compile_ms_total = (double)atomic_load(&ctx->compile_ns) / 1e6;
  return KDA_OK;
}

/* The cache's build step: one NVRTC program for one instantiation, loaded
 * into ctx's CUcontext. Runs outside every lock. */
static kda_status build_spec(void *user, const kda__spec *spec, CUmodule *module,
                             CUfunction *function) {
  kda_context *ctx = user;
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
  int pushed = 0;
  st = kda__context_enter(ctx, &pushed);
  if (st == KDA_OK) {
    CUresult r = ctx->drv->cuModuleLoadData(module, out.cubin);
    if (r != CUDA_SUCCESS) {
      st = kda__cu_status(ctx->drv, r, "cuModuleLoadData", __FILE__, __LINE__);
    } else {
      r = ctx->drv->cuModuleGetFunction(function, *module, out.lowered_names[0]);
      if (r != CUDA_SUCCESS) {
        st = kda__cu_status(ctx->drv, r, "cuModuleGetFunction", __FILE__, __LINE__);
        ctx->drv->cuModuleUnload(*module);
      } else {
        atomic_fetch_add(&ctx->modules_loaded, 1);
      }
    }
    kda__context_leave(ctx, pushed);
  }
  kda__compiled_free(&out);
  return st;
}

kda_status kda__context_function(kda_context *ctx, const kda__spec *spec, CUstream stream,
                                 CUfunction *fn) {
  if (kda__cache_peek(ctx->cache, spec, fn)) {
    atomic_fetch_add_explicit(&ctx->cache_hits, 1, memory_order_relaxed);
    return KDA_OK;
  }
  CUstreamCaptureStatus cap = CU_STREAM_CAPTURE_STATUS_NONE;
  KDA__CU(ctx->drv, cuStreamIsCapturing, stream, &cap);
  if (cap != CU_STREAM_CAPTURE_STATUS_NONE) {
    char what[512];
    kda__spec_describe(spec, what, sizeof what);
    return kda__fail(KDA_ERROR_CAPTURE_COLD,
                     "specialization [%s] is not compiled yet and the stream is capturing; "
                     "call it once outside capture to warm it", what);
  }
  atomic_fetch_add_explicit(&ctx->cache_misses, 1, memory_order_relaxed);
  int hit = 0;
  return kda__cache_get(ctx->cache, spec, build_spec, ctx, fn, &hit);
}
