#include "cuda_api.h"

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define LOAD(field, symbol)                                               \
  do {                                                                    \
    *(void **)(&api->field) = dlsym(h, symbol);                           \
    if (!api->field) {                                                    \
      snprintf(why, why_size, "libcuda.so.1 lacks %s", symbol);           \
      return -1;                                                          \
    }                                                                     \
  } while (0)

int cuda_api_load(cuda_api *api, int device, char *why, size_t why_size) {
  /* KDA_LIBCUDA names another driver library, as it does for libkda (the
   * tests' stand-in driver, for host-only measurements without a GPU). */
  const char *path = getenv("KDA_LIBCUDA");
  void *h = dlopen(path && *path ? path : "libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    snprintf(why, why_size, "%s", dlerror());
    return -1;
  }
  LOAD(Init, "cuInit");
  LOAD(DeviceGet, "cuDeviceGet");
  LOAD(PrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
  LOAD(CtxSetCurrent, "cuCtxSetCurrent");
  LOAD(CtxGetCurrent, "cuCtxGetCurrent");
  LOAD(CtxSynchronize, "cuCtxSynchronize");
  LOAD(MemAlloc, "cuMemAlloc_v2");
  LOAD(MemFree, "cuMemFree_v2");
  LOAD(MemcpyHtoD, "cuMemcpyHtoD_v2");
  LOAD(MemcpyDtoH, "cuMemcpyDtoH_v2");
  LOAD(MemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2");
  LOAD(MemsetD32, "cuMemsetD32_v2");
  LOAD(StreamCreate, "cuStreamCreate");
  LOAD(StreamDestroy, "cuStreamDestroy_v2");
  LOAD(StreamSynchronize, "cuStreamSynchronize");
  LOAD(StreamBeginCapture, "cuStreamBeginCapture_v2");
  LOAD(StreamEndCapture, "cuStreamEndCapture");
  LOAD(GraphInstantiate, "cuGraphInstantiateWithFlags");
  LOAD(GraphLaunch, "cuGraphLaunch");
  LOAD(GraphExecDestroy, "cuGraphExecDestroy");
  LOAD(GraphDestroy, "cuGraphDestroy");
  LOAD(EventCreate, "cuEventCreate");
  LOAD(EventDestroy, "cuEventDestroy_v2");
  LOAD(EventRecord, "cuEventRecord");
  LOAD(EventSynchronize, "cuEventSynchronize");
  LOAD(EventElapsedTime, "cuEventElapsedTime_v2");
  LOAD(ModuleLoadData, "cuModuleLoadData");
  LOAD(ModuleGetFunction, "cuModuleGetFunction");
  LOAD(LaunchKernel, "cuLaunchKernel");
  LOAD(GetErrorName, "cuGetErrorName");
  *(void **)(&api->LaunchKernelEx) = dlsym(h, "cuLaunchKernelEx");
  CUdevice dev;
  CUcontext ctx;
  CUresult r = api->Init(0);
  if (r == CUDA_SUCCESS) r = api->DeviceGet(&dev, device);
  if (r == CUDA_SUCCESS) r = api->PrimaryCtxRetain(&ctx, dev);
  if (r == CUDA_SUCCESS) r = api->CtxSetCurrent(ctx);
  if (r == CUDA_SUCCESS) api->ctx = ctx;
  if (r != CUDA_SUCCESS) {
    const char *name = "?";
    api->GetErrorName(r, &name);
    snprintf(why, why_size, "CUDA device %d unusable: %s", device, name);
    return -1;
  }
  return 0;
}

void cuda_check(const cuda_api *api, CUresult r, const char *what) {
  if (r == CUDA_SUCCESS) return;
  const char *name = "?";
  api->GetErrorName(r, &name);
  fprintf(stderr, "%s failed: %s\n", what, name);
  exit(1);
}

void *cuda_alloc(const cuda_api *api, size_t bytes) {
  CUdeviceptr p = 0;
  cuda_check(api, api->MemAlloc(&p, bytes ? bytes : 16), "cuMemAlloc");
  return (void *)(uintptr_t)p;
}

void *cuda_upload(const cuda_api *api, const void *src, size_t bytes) {
  void *d = cuda_alloc(api, bytes);
  cuda_check(api, api->MemcpyHtoD((CUdeviceptr)(uintptr_t)d, src, bytes), "cuMemcpyHtoD");
  return d;
}

void cuda_download(const cuda_api *api, void *dst, const void *dev, size_t bytes) {
  cuda_check(api, api->CtxSynchronize(), "cuCtxSynchronize");
  cuda_check(api, api->MemcpyDtoH(dst, (CUdeviceptr)(uintptr_t)dev, bytes), "cuMemcpyDtoH");
}
