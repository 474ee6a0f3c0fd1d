/* Programmatic dependent launch, with a plain launch as the fallback. The
 * kernels wait (griddepcontrol.wait) before their first global access, so
 * the attribute changes when a kernel is scheduled, never what it reads. */
#include "kernel_launch.h"

#include <stdio.h>
#include <string.h>

#include "context_internal.h"
#include "error.h"

static CUresult launch_plain(const kda__driver *drv, CUfunction fn, unsigned grid,
                             unsigned threads, CUstream stream, void **params) {
  return drv->cuLaunchKernel(fn, grid, 1, 1, threads, 1, 1, 0, stream, params, NULL);
}

CUresult kda__launch_kernel(const kda__driver *drv, atomic_int *overlap, int *refused,
                            CUfunction fn, unsigned grid, unsigned threads, CUstream stream,
                            void **params) {
  if (overlap == NULL || drv->cuLaunchKernelEx == NULL ||
      !atomic_load_explicit(overlap, memory_order_relaxed))
    return launch_plain(drv, fn, grid, threads, stream, params);
  CUlaunchAttribute attr;
  memset(&attr, 0, sizeof attr);
  attr.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
  attr.value.programmaticStreamSerializationAllowed = 1;
  CUlaunchConfig cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.gridDimX = grid;
  cfg.gridDimY = cfg.gridDimZ = 1;
  cfg.blockDimX = threads;
  cfg.blockDimY = cfg.blockDimZ = 1;
  cfg.hStream = stream;
  cfg.attrs = &attr;
  cfg.numAttrs = 1;
  CUresult r = drv->cuLaunchKernelEx(&cfg, fn, params, NULL);
  if (r != CUDA_ERROR_NOT_SUPPORTED && r != CUDA_ERROR_INVALID_VALUE) return r;
  /* Refused: the attribute, or the launch itself? The plain launch tells. */
  CUresult plain = launch_plain(drv, fn, grid, threads, stream, params);
  if (plain == CUDA_SUCCESS) {
    int was = atomic_exchange(overlap, 0);
    if (refused != NULL) *refused = was;
  }
  return plain;
}

void kda__context_overlap_refused(kda_context *ctx, const char *what) {
  kda__log(ctx, KDA_LOG_WARN,
           "the driver refused programmatic dependent launch for %s; this context launches "
           "plainly from now on", what);
}

/* 1 if stream belongs to another CUDA context than ctx's (another GPU's,
 * in a server driving several), the caller's mistake a driver error code
 * would not name. Asked after a failed launch, and on the cold paths
 * before any work is done for the call. */
static int stream_of_another_context(const kda_context *ctx, CUstream stream) {
  CUcontext owner = NULL;
  return stream != NULL && ctx->drv->cuStreamGetCtx != NULL &&
         ctx->drv->cuStreamGetCtx(stream, &owner) == CUDA_SUCCESS && owner != NULL &&
         owner != ctx->cu;
}

static kda_status foreign_stream(const kda_context *ctx, const char *what) {
  return kda__fail(KDA_ERROR_INVALID_ARGUMENT,
                   "%s: the stream belongs to another CUDA context than this kda_context's "
                   "(device %d's): pass a stream made in that CUDA context (a process driving "
                   "several GPUs needs a kda_context per device, each called with its own "
                   "device's streams; a stream of another context on the same device is "
                   "refused too); nothing was launched", what, ctx->info.ordinal);
}

kda_status kda__context_check_stream(const kda_context *ctx, CUstream stream, const char *what) {
  return stream_of_another_context(ctx, stream) ? foreign_stream(ctx, what) : KDA_OK;
}

static kda_status context_launch(kda_context *ctx, int overlap, CUfunction fn, unsigned grid,
                                 unsigned threads, CUstream stream, void **params,
                                 const char *what) {
  int refused = 0;
  CUresult r = kda__launch_kernel(ctx->drv, overlap ? &ctx->launch_overlap : NULL, &refused, fn,
                                  grid, threads, stream, params);
  if (refused) kda__context_overlap_refused(ctx, what);
  if (r != CUDA_SUCCESS && stream_of_another_context(ctx, stream)) return foreign_stream(ctx, what);
  if (r != CUDA_SUCCESS) {
    char call[96];
    snprintf(call, sizeof call, "cuLaunchKernel%s(%s)",
             overlap && atomic_load_explicit(&ctx->launch_overlap, memory_order_relaxed) ? "Ex"
                                                                                        : "",
             what);
    return kda__cu_status(ctx->drv, r, call, __FILE__, __LINE__);
  }
  atomic_fetch_add_explicit(&ctx->launches, 1, memory_order_relaxed);
  return KDA_OK;
}

kda_status kda__context_launch(kda_context *ctx, CUfunction fn, unsigned grid, unsigned threads,
                               CUstream stream, void **params, const char *what) {
  return context_launch(ctx, 1, fn, grid, threads, stream, params, what);
}

kda_status kda__context_launch_plain(kda_context *ctx, CUfunction fn, unsigned grid,
                                     unsigned threads, CUstream stream, void **params,
                                     const char *what) {
  return context_launch(ctx, 0, fn, grid, threads, stream, params, what);
}
