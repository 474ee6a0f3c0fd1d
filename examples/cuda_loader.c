#include "cuda_loader.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOAD(field, symbol)                                          \
  do {                                                               \
    *(void **)(&cu->field) = dlsym(cu->lib, symbol);                 \
    if (!cu->field) {                                                \
      snprintf(why, why_size, "libcuda.so.1 lacks %s", symbol);      \
      dlclose(cu->lib);                                              \
      cu->lib = NULL;                                                \
      return -1;                                                     \
    }                                                                \
  } while (0)

int ex_cuda_load(ex_cuda *cu, int ordinal, char *why, size_t why_size) {
  memset(cu, 0, sizeof *cu);
  /* The driver libkda uses: KDA_LIBCUDA when set (a test's stand-in). */
  const char *path = getenv("KDA_LIBCUDA");
  if (!path || !*path) path = "libcuda.so.1";
  cu->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!cu->lib) {
    const char *e = dlerror();
    snprintf(why, why_size, "%s", e ? e : "the CUDA driver could not be loaded");
    return -1;
  }
  LOAD(Init, "cuInit");
  LOAD(DeviceGet, "cuDeviceGet");
  LOAD(PrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
  LOAD(PrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2");
  LOAD(CtxSetCurrent, "cuCtxSetCurrent");
  LOAD(MemAlloc, "cuMemAlloc_v2");
  LOAD(MemFree, "cuMemFree_v2");
  LOAD(MemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2");
  LOAD(MemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2");
  LOAD(StreamCreate, "cuStreamCreate");
  LOAD(StreamDestroy, "cuStreamDestroy_v2");
  LOAD(StreamSynchronize, "cuStreamSynchronize");
  LOAD(GetErrorName, "cuGetErrorName");
  const char *step = "cuInit";
  ex_cu_result r = cu->Init(0);
  if (r == 0) {
    step = "cuDeviceGet";
    r = cu->DeviceGet(&cu->device, ordinal);
  }
  if (r == 0) {
    step = "cuDevicePrimaryCtxRetain";
    r = cu->PrimaryCtxRetain(&cu->primary, cu->device);
  }
  if (r == 0) {
    step = "cuCtxSetCurrent";
    r = cu->CtxSetCurrent(cu->primary);
    if (r != 0) cu->PrimaryCtxRelease(cu->device);
  }
  if (r != 0) {
    snprintf(why, why_size, "CUDA device %d unusable: %s failed with %s", ordinal, step,
             ex_cuda_error_name(cu, r));
    dlclose(cu->lib);
    cu->lib = NULL;
    return -1;
  }
  return 0;
}

void ex_cuda_unload(ex_cuda *cu) {
  if (!cu->lib) return;
  cu->CtxSetCurrent(NULL);
  cu->PrimaryCtxRelease(cu->device);
  dlclose(cu->lib); /* libkda holds its own reference while it needs one */
  cu->lib = NULL;
}

const char *ex_cuda_error_name(const ex_cuda *cu, ex_cu_result r) {
  const char *name = NULL;
  if (cu->GetErrorName) cu->GetErrorName(r, &name);
  return name ? name : "unknown CUDA error";
}
