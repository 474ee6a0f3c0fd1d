/* Loads libcuda with dlopen once per process and resolves the function
 * table. The library itself never links libcuda, so it loads on machines
 * without a driver and reports KDA_ERROR_NO_DRIVER instead of failing at
 * load time. The handle is never closed: modules and contexts created through
 * it may outlive any one kda_context. */
#include "driver.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* Every field of kda__driver. cuda.h #defines many API names to their current
 * ABI versions (cuMemAlloc -> cuMemAlloc_v2, cuGraphInstantiate ->
 * cuGraphInstantiateWithFlags, cuEventElapsedTime -> cuEventElapsedTime_v2,
 * ...), and the same #defines rename the struct fields, so stringifying the
 * expanded name gives exactly the symbol whose signature cuda.h declares. */
#define KDA__DRIVER_SYMBOLS(X)                                                      \
  X(cuInit) X(cuDriverGetVersion) X(cuGetErrorName) X(cuGetErrorString)             \
  X(cuDeviceGetCount) X(cuDeviceGet) X(cuDeviceGetName) X(cuDeviceGetAttribute)     \
  X(cuDeviceGetPCIBusId) X(cuDevicePrimaryCtxRetain) X(cuDevicePrimaryCtxRelease)   \
  X(cuCtxGetCurrent) X(cuCtxSetCurrent) X(cuCtxPushCurrent) X(cuCtxPopCurrent)      \
  X(cuCtxGetDevice) X(cuCtxSynchronize) X(cuModuleLoadData) X(cuModuleUnload)       \
  X(cuModuleGetFunction) X(cuFuncGetAttribute) X(cuLaunchKernel) X(cuMemAlloc)      \
  X(cuMemFree) X(cuMemcpyHtoD) X(cuMemcpyDtoH) X(cuMemcpyDtoD) X(cuMemcpyHtoDAsync) \
  X(cuMemcpyDtoDAsync)                                                               \
  X(cuMemcpyDtoHAsync) X(cuMemsetD32) X(cuMemsetD32Async) X(cuStreamCreate)         \
  X(cuStreamDestroy) X(cuStreamSynchronize) X(cuStreamIsCapturing)                  \
  X(cuStreamBeginCapture) X(cuStreamEndCapture) X(cuGraphInstantiate)               \
  X(cuGraphLaunch) X(cuGraphExecDestroy) X(cuGraphDestroy) X(cuEventCreate)         \
  X(cuEventDestroy) X(cuEventRecord) X(cuEventSynchronize) X(cuEventElapsedTime)

/* A field added to kda__driver but not to the list above would stay NULL. */
#define KDA__COUNT_ONE(fn) +1
/* + 3: cuLaunchKernelEx, cuThreadExchangeStreamCaptureMode and
 * cuStreamGetCtx, resolved on their own because they are optional. */
_Static_assert(sizeof(kda__driver) ==
                   (0 KDA__DRIVER_SYMBOLS(KDA__COUNT_ONE) + 3) * sizeof(void (*)(void)),
               "KDA__DRIVER_SYMBOLS must list every required field of kda__driver");
#undef KDA__COUNT_ONE

#define KDA__STR_(x) #x
#define KDA__STR(x) KDA__STR_(x)

#define KDA__LOAD_MESSAGE_CAP 1024

static pthread_once_t kda__driver_once = PTHREAD_ONCE_INIT;
static kda__driver kda__driver_table;
static kda_status kda__driver_status = KDA_ERROR_INTERNAL;
/* The first failure, replayed into the calling thread's message each time. */
static char kda__driver_message[KDA__LOAD_MESSAGE_CAP];

static void record_status(kda_status st, const char *fmt, va_list ap) {
  vsnprintf(kda__driver_message, sizeof kda__driver_message, fmt, ap);
  kda__driver_status = st;
}

static void record_failure(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void record_failure(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  record_status(KDA_ERROR_NO_DRIVER, fmt, ap);
  va_end(ap);
}

/* A driver that loads but sees no GPU (CUDA_VISIBLE_DEVICES="", a
 * container without devices) is not a missing driver. */
static void record_no_device(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void record_no_device(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  record_status(KDA_ERROR_NO_DEVICE, fmt, ap);
  va_end(ap);
}

static int resolve(void *handle, const char *path, const char *symbol, void *field) {
  dlerror();
  void *p = dlsym(handle, symbol);
  if (p == NULL) {
    const char *why = dlerror();
    record_failure("%s has no symbol %s: %s", path, symbol, why ? why : "symbol is NULL");
    return 0;
  }
  /* POSIX guarantees data and function pointers have the same
   * representation; memcpy avoids the ISO C cast diagnostic. */
  memcpy(field, &p, sizeof p);
  return 1;
}

/* Name and text of r. A code the driver cannot name (a stub library, a code
 * newer than its table) is shown by number so it can still be looked up. */
static void describe(const kda__driver *d, CUresult r, char *buf, size_t cap, const char **name,
                     const char **text) {
  *name = NULL;
  *text = NULL;
  if (d == NULL || d->cuGetErrorName(r, name) != CUDA_SUCCESS || *name == NULL) {
    snprintf(buf, cap, "CUresult %d", (int)r);
    *name = buf;
  }
  if (d == NULL || d->cuGetErrorString(r, text) != CUDA_SUCCESS || *text == NULL)
    *text = "no description";
}

static void load_once(void) {
  const char *path = getenv("KDA_LIBCUDA");
  if (path == NULL || path[0] == '\0') path = "libcuda.so.1";

  void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (handle == NULL) {
    const char *why = dlerror();
    record_failure("cannot load the CUDA driver library %s: %s", path,
                   why ? why : "unknown dlopen error");
    return;
  }

  kda__driver *d = &kda__driver_table;
#define KDA__RESOLVE(fn) \
  if (!resolve(handle, path, KDA__STR(fn), (void *)&d->fn)) return;
  KDA__DRIVER_SYMBOLS(KDA__RESOLVE)
#undef KDA__RESOLVE
  /* Optional: a driver without it launches plainly (no launch overlap). */
  void *ex = dlsym(handle, KDA__STR(cuLaunchKernelEx));
  if (ex != NULL) memcpy((void *)&d->cuLaunchKernelEx, &ex, sizeof ex);
  void *mode = dlsym(handle, KDA__STR(cuThreadExchangeStreamCaptureMode));
  if (mode != NULL) memcpy((void *)&d->cuThreadExchangeStreamCaptureMode, &mode, sizeof mode);
  void *sctx = dlsym(handle, KDA__STR(cuStreamGetCtx));
  if (sctx != NULL) memcpy((void *)&d->cuStreamGetCtx, &sctx, sizeof sctx);

  CUresult r = d->cuInit(0);
  if (r != CUDA_SUCCESS) {
    char unknown[32];
    const char *name, *text;
    describe(d, r, unknown, sizeof unknown, &name, &text);
    if (r == CUDA_ERROR_NO_DEVICE)
      record_no_device("the CUDA driver (%s) sees no GPU: cuInit(0): %s (%s); check "
                       "CUDA_VISIBLE_DEVICES and the container's devices", path, name, text);
    else
      record_failure("cuInit(0) failed in %s: %s (%s)", path, name, text);
    return;
  }
  kda__driver_status = KDA_OK;
}

kda_status kda__driver_load(const kda__driver **out) {
  if (out == NULL) return kda__fail(KDA_ERROR_NULL_POINTER, "kda__driver_load: out is NULL");
  *out = NULL;
  int rc = pthread_once(&kda__driver_once, load_once);
  if (rc != 0)
    return kda__fail(KDA_ERROR_INTERNAL, "pthread_once failed loading the CUDA driver: %s",
                     kda__errno_text(rc));
  if (kda__driver_status != KDA_OK) return kda__fail(kda__driver_status, "%s", kda__driver_message);
  *out = &kda__driver_table;
  return KDA_OK;
}

kda_status kda__cu_status(const kda__driver *drv, CUresult r, const char *call, const char *file,
                          int line) {
  if (r == CUDA_SUCCESS) return KDA_OK;
  char unknown[32];
  const char *name, *text;
  describe(drv, r, unknown, sizeof unknown, &name, &text);
  const int lost = kda__cu_context_lost(r);
  const kda_status s = lost ? KDA_ERROR_CONTEXT_LOST
                       : r == CUDA_ERROR_OUT_OF_MEMORY ? KDA_ERROR_OUT_OF_MEMORY
                                                       : KDA_ERROR_CUDA;
  return kda__fail(s, "%s failed: %s (%s) at %s:%d%s", call ? call : "CUDA call", name, text,
                   file ? file : "?", line,
                   lost ? "; the CUDA context is lost: a kernel faulted (one of this library's, "
                          "or any other in the process), and every later CUDA call of this "
                          "process on that device (with current drivers, on every device) fails "
                          "the same way: restart the process"
                        : "");
}

int kda__cu_context_lost(CUresult r) {
  /* The errors cuda.h documents as leaving the process "in an inconsistent
   * state" where "any further CUDA work will return the same error", and
   * CUDA_ERROR_ASSERT, after which the context "cannot be used anymore".
   * And CUDA_ERROR_ECC_UNCORRECTABLE, which cuda.h leaves undescribed: the
   * driver ends the work of the process that met it (Xid 94/48), whose
   * later calls fail, and what its kernels wrote is not to be trusted. */
  switch (r) {
    case CUDA_ERROR_ECC_UNCORRECTABLE:
    case CUDA_ERROR_CONTAINED:
    case CUDA_ERROR_ILLEGAL_ADDRESS:
    case CUDA_ERROR_LAUNCH_TIMEOUT:
    case CUDA_ERROR_ASSERT:
    case CUDA_ERROR_HARDWARE_STACK_ERROR:
    case CUDA_ERROR_ILLEGAL_INSTRUCTION:
    case CUDA_ERROR_MISALIGNED_ADDRESS:
    case CUDA_ERROR_INVALID_ADDRESS_SPACE:
    case CUDA_ERROR_INVALID_PC:
    case CUDA_ERROR_LAUNCH_FAILED:
    case CUDA_ERROR_TENSOR_MEMORY_LEAK:
    case CUDA_ERROR_MPS_CLIENT_TERMINATED:
    case CUDA_ERROR_EXTERNAL_DEVICE:
      return 1;
    default:
      return 0;
  }
}

CUstreamCaptureMode kda__driver_relax_capture(const kda__driver *d) {
  CUstreamCaptureMode mode = CU_STREAM_CAPTURE_MODE_RELAXED;
  if (d->cuThreadExchangeStreamCaptureMode == NULL ||
      d->cuThreadExchangeStreamCaptureMode(&mode) != CUDA_SUCCESS)
    return CU_STREAM_CAPTURE_MODE_RELAXED; /* nothing to restore */
  return mode;
}

void kda__driver_restore_capture(const kda__driver *d, CUstreamCaptureMode mode) {
  if (mode == CU_STREAM_CAPTURE_MODE_RELAXED || d->cuThreadExchangeStreamCaptureMode == NULL) return;
  d->cuThreadExchangeStreamCaptureMode(&mode);
}
