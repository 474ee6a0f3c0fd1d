/* The CUDA Driver API, loaded at run time with dlopen("libcuda.so.1") so the
 * library loads (and reports KDA_ERROR_NO_DRIVER) where there is no driver.
 * cuda.h is used for its types only; every call goes through this table. */
#ifndef KDA_SRC_DRIVER_H
#define KDA_SRC_DRIVER_H

#include <cuda.h>

#include "kda/kda.h"

typedef struct kda__driver {
  CUresult (*cuInit)(unsigned int);
  CUresult (*cuDriverGetVersion)(int *);
  CUresult (*cuGetErrorName)(CUresult, const char **);
  CUresult (*cuGetErrorString)(CUresult, const char **);
  CUresult (*cuDeviceGetCount)(int *);
  CUresult (*cuDeviceGet)(CUdevice *, int);
  CUresult (*cuDeviceGetName)(char *, int, CUdevice);
  CUresult (*cuDeviceGetAttribute)(int *, CUdevice_attribute, CUdevice);
  CUresult (*cuDeviceGetPCIBusId)(char *, int, CUdevice);
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
  CUresult (*cuDevicePrimaryCtxRelease)(CUdevice);
  CUresult (*cuCtxGetCurrent)(CUcontext *);
  CUresult (*cuCtxSetCurrent)(CUcontext);
  CUresult (*cuCtxPushCurrent)(CUcontext);
  CUresult (*cuCtxPopCurrent)(CUcontext *);
  CUresult (*cuCtxGetDevice)(CUdevice *);
  CUresult (*cuCtxSynchronize)(void);
  CUresult (*cuModuleLoadData)(CUmodule *, const void *);
  CUresult (*cuModuleUnload)(CUmodule);
  CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
  CUresult (*cuFuncGetAttribute)(int *, CUfunction_attribute, CUfunction);
  CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                             unsigned, unsigned, CUstream, void **, void **);
  CUresult (*cuMemAlloc)(CUdeviceptr *, size_t);
  CUresult (*cuMemFree)(CUdeviceptr);
  CUresult (*cuMemcpyHtoD)(CUdeviceptr, const void *, size_t);
  CUresult (*cuMemcpyDtoH)(void *, CUdeviceptr, size_t);
  CUresult (*cuMemcpyDtoD)(CUdeviceptr, CUdeviceptr, size_t);
  CUresult (*cuMemcpyDtoDAsync)(CUdeviceptr, CUdeviceptr, size_t, CUstream);
  CUresult (*cuMemcpyHtoDAsync)(CUdeviceptr, const void *, size_t, CUstream);
  CUresult (*cuMemcpyDtoHAsync)(void *, CUdeviceptr, size_t, CUstream);
  CUresult (*cuMemsetD32)(CUdeviceptr, unsigned int, size_t);
  CUresult (*cuMemsetD32Async)(CUdeviceptr, unsigned int, size_t, CUstream);
  CUresult (*cuStreamCreate)(CUstream *, unsigned int);
  CUresult (*cuStreamDestroy)(CUstream);
  CUresult (*cuStreamSynchronize)(CUstream);
  CUresult (*cuStreamIsCapturing)(CUstream, CUstreamCaptureStatus *);
  CUresult (*cuStreamBeginCapture)(CUstream, CUstreamCaptureMode);
  CUresult (*cuStreamEndCapture)(CUstream, CUgraph *);
  CUresult (*cuGraphInstantiate)(CUgraphExec *, CUgraph, unsigned long long);
  CUresult (*cuGraphLaunch)(CUgraphExec, CUstream);
  CUresult (*cuGraphExecDestroy)(CUgraphExec);
  CUresult (*cuGraphDestroy)(CUgraph);
  CUresult (*cuEventCreate)(CUevent *, unsigned int);
  CUresult (*cuEventDestroy)(CUevent);
  CUresult (*cuEventRecord)(CUevent, CUstream);
  CUresult (*cuEventSynchronize)(CUevent);
  CUresult (*cuEventElapsedTime)(float *, CUevent, CUevent);
  /* Optional (NULL where the driver lacks it): launches with attributes,
   * for programmatic dependent launch (kda_options.launch_overlap). */
  CUresult (*cuLaunchKernelEx)(const CUlaunchConfig *, CUfunction, void **, void **);
  /* Optional (NULL where the driver lacks it): the calling thread's stream
   * capture mode, relaxed around the library's own allocations and module
   * loads so that they do not break another thread's capture. */
  CUresult (*cuThreadExchangeStreamCaptureMode)(CUstreamCaptureMode *);
  /* Optional (NULL where the driver lacks it): a stream's CUDA context,
   * asked on a cold call's path and after a failed launch, to refuse a
   * stream of another device's context by name. */
  CUresult (*cuStreamGetCtx)(CUstream, CUcontext *);
} kda__driver;

/* Loads libcuda once per process (thread-safe) and calls cuInit(0).
 * The library path is "libcuda.so.1" unless the environment variable
 * KDA_LIBCUDA names another (tests use it to simulate a missing driver).
 * On failure returns KDA_ERROR_NO_DRIVER with dlerror()'s or cuInit's text
 * recorded; the same failure is reported again on every later call. */
kda_status kda__driver_load(const kda__driver **out);

/* Sets the calling thread's stream capture mode to relaxed and returns the
 * mode to restore. In the default (global) mode a thread's allocation,
 * free or module load while any other thread captures in global mode is
 * refused and invalidates that capture: a server capturing a CUDA graph on
 * one thread while another thread's call compiles, loads or tunes a cold
 * specialization. Relaxed, those calls are this thread's business; the
 * library also keeps them off the legacy stream (its own non-blocking
 * streams), so they make no capturing stream wait. No-op on a driver
 * without the call. */
CUstreamCaptureMode kda__driver_relax_capture(const kda__driver *d);
void kda__driver_restore_capture(const kda__driver *d, CUstreamCaptureMode mode);

/* Records "CALL failed: CUDA_ERROR_X (text) at FILE:LINE" and returns the
 * status for r (KDA_OK, KDA_ERROR_OUT_OF_MEMORY, KDA_ERROR_CONTEXT_LOST
 * with a line saying so, or KDA_ERROR_CUDA). */
kda_status kda__cu_status(const kda__driver *drv, CUresult r, const char *call, const char *file,
                          int line);
/* 1 for the errors after which the driver fails every later call of the
 * process on that device (a kernel faulted). */
int kda__cu_context_lost(CUresult r);

/* Calls a driver function through the table and returns on failure. */
#define KDA__CU(drv, fn, ...)                                                        \
  do {                                                                               \
    CUresult kda__r_ = (drv)->fn(__VA_ARGS__);                                       \
    if (kda__r_ != CUDA_SUCCESS)                                                     \
      return kda__cu_status((drv), kda__r_, #fn "(" #__VA_ARGS__ ")", __FILE__, __LINE__); \
  } while (0)

#endif
