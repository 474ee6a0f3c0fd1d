#include "gpu_util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

static const kda__driver *g_drv;
static CUcontext g_ctx;

const kda__driver *gu_driver_or_reason(char *reason, size_t n) {
  const kda__driver *d = NULL;
  if (kda__driver_load(&d) != KDA_OK) {
    snprintf(reason, n, "no CUDA driver: %s", kda_last_error());
    return NULL;
  }
  int count = 0;
  if (d->cuDeviceGetCount(&count) != CUDA_SUCCESS || count < 1) {
    snprintf(reason, n, "the CUDA driver reports no device");
    return NULL;
  }
  return d;
}

const kda__driver *gu_require_gpu(const char *test_name) {
  char reason[1024];
  g_drv = gu_driver_or_reason(reason, sizeof reason);
  if (!g_drv) {
    printf("SKIPPED: %s needs a GPU: %s\n", test_name, reason);
    exit(GU_SKIP_EXIT);
  }
  CUdevice dev;
  if (g_drv->cuDeviceGet(&dev, 0) != CUDA_SUCCESS ||
      g_drv->cuDevicePrimaryCtxRetain(&g_ctx, dev) != CUDA_SUCCESS ||
      g_drv->cuCtxSetCurrent(g_ctx) != CUDA_SUCCESS) {
    fprintf(stderr, "%s: could not make device 0 current\n", test_name);
    exit(1);
  }
  return g_drv;
}

kda_context *gu_context(void) {
  kda_context *ctx = NULL;
  kda_options o = kda_options_default();
  kda_status st = kda_context_create(&o, &ctx);
  if (st != KDA_OK) {
    fprintf(stderr, "kda_context_create: %s\n", kda_last_error());
    fail();
  }
  return ctx;
}

static void cu_ok(CUresult r, const char *what) {
  if (r != CUDA_SUCCESS) {
    const char *name = "?";
    g_drv->cuGetErrorName(r, &name);
    fprintf(stderr, "%s failed: %s\n", what, name);
    fail();
  }
}

void *gu_alloc(size_t bytes) {
  CUdeviceptr p = 0;
  g_drv->cuCtxSetCurrent(g_ctx);
  cu_ok(g_drv->cuMemAlloc(&p, bytes ? bytes : 4), "cuMemAlloc");
  return (void *)(uintptr_t)p;
}

void *gu_upload(const void *src, size_t bytes) {
  void *d = gu_alloc(bytes);
  if (src && bytes) cu_ok(g_drv->cuMemcpyHtoD((CUdeviceptr)(uintptr_t)d, src, bytes), "cuMemcpyHtoD");
  return d;
}

void gu_copy_to(void *dev, const void *src, size_t bytes) {
  if (bytes) cu_ok(g_drv->cuMemcpyHtoD((CUdeviceptr)(uintptr_t)dev, src, bytes), "cuMemcpyHtoD");
}

void gu_download(void *dst, const void *dev, size_t bytes) {
  cu_ok(g_drv->cuCtxSynchronize(), "cuCtxSynchronize (kernel error?)");
  cu_ok(g_drv->cuMemcpyDtoH(dst, (CUdeviceptr)(uintptr_t)dev, bytes), "cuMemcpyDtoH");
}

void gu_free(void *dev) {
  if (dev) g_drv->cuMemFree((CUdeviceptr)(uintptr_t)dev);
}

void gu_poison(void *dev, size_t bytes, uint32_t pattern) {
  cu_ok(g_drv->cuMemsetD32((CUdeviceptr)(uintptr_t)dev, pattern, bytes / 4), "cuMemsetD32");
}

void gu_sync(void) { cu_ok(g_drv->cuCtxSynchronize(), "cuCtxSynchronize"); }
