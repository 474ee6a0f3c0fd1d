/* The few CUDA Driver API calls the tools need (memory, streams, events,
 * graphs), loaded at run time so the tools start, and say why, on a machine
 * without a driver. cuda.h is used for its types only. */
#ifndef KDA_TOOLS_CUDA_API_H
#define KDA_TOOLS_CUDA_API_H

#include <cuda.h>

typedef struct cuda_api {
  CUresult (*Init)(unsigned int);
  CUresult (*DeviceGet)(CUdevice *, int);
  CUresult (*PrimaryCtxRetain)(CUcontext *, CUdevice);
  CUresult (*CtxSetCurrent)(CUcontext);
  CUresult (*CtxGetCurrent)(CUcontext *);
  CUresult (*CtxSynchronize)(void);
  CUresult (*MemAlloc)(CUdeviceptr *, size_t);
  CUresult (*MemFree)(CUdeviceptr);
  CUresult (*MemcpyHtoD)(CUdeviceptr, const void *, size_t);
  CUresult (*MemcpyDtoH)(void *, CUdeviceptr, size_t);
  CUresult (*MemcpyDtoDAsync)(CUdeviceptr, CUdeviceptr, size_t, CUstream);
  CUresult (*MemsetD32)(CUdeviceptr, unsigned int, size_t);
  CUresult (*StreamCreate)(CUstream *, unsigned int);
  CUresult (*StreamDestroy)(CUstream);
  CUresult (*StreamSynchronize)(CUstream);
  CUresult (*StreamBeginCapture)(CUstream, CUstreamCaptureMode);
  CUresult (*StreamEndCapture)(CUstream, CUgraph *);
  CUresult (*GraphInstantiate)(CUgraphExec *, CUgraph, unsigned long long);
  CUresult (*GraphLaunch)(CUgraphExec, CUstream);
  CUresult (*GraphExecDestroy)(CUgraphExec);
  CUresult (*GraphDestroy)(CUgraph);
  CUresult (*EventCreate)(CUevent *, unsigned int);
  CUresult (*EventDestroy)(CUevent);
  CUresult (*EventRecord)(CUevent, CUstream);
  CUresult (*EventSynchronize)(CUevent);
  CUresult (*EventElapsedTime)(float *, CUevent, CUevent);
  CUresult (*ModuleLoadData)(CUmodule *, const void *);
  CUresult (*ModuleGetFunction)(CUfunction *, CUmodule, const char *);
  CUresult (*LaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                           unsigned, unsigned, CUstream, void **, void **);
  CUresult (*GetErrorName)(CUresult, const char **);
  /* The device's primary context, current on the loading thread; other
   * threads make it current with CtxSetCurrent. */
  CUcontext ctx;
  /* NULL on a driver without it (before CUDA 12.0). */
  CUresult (*LaunchKernelEx)(const CUlaunchConfig *, CUfunction, void **, void **);
} cuda_api;

/* Loads libcuda.so.1 and makes device `device`'s primary context current on
 * the calling thread. Returns 0, or -1 with the reason in why. */
int cuda_api_load(cuda_api *api, int device, char *why, size_t why_size);

/* Device buffer helpers that exit(1) with a message on failure: tools have
 * nothing sensible to do without their buffers. */
void *cuda_alloc(const cuda_api *api, size_t bytes);
void *cuda_upload(const cuda_api *api, const void *src, size_t bytes);
void cuda_download(const cuda_api *api, void *dst, const void *dev, size_t bytes);
void cuda_check(const cuda_api *api, CUresult r, const char *what);

#endif
