/* kda-bench's own kernels through NVRTC (bench_nvrtc.h). */
#include "bench_nvrtc.h"

#include <nvrtc.h>
#include <stdio.h>
#include <stdlib.h>

void *bench_nvrtc_cubin(const char *src, const char *name, int cc_major, int cc_minor,
                        size_t *size, char *why, size_t why_size) {
  nvrtcProgram prog;
  char arch[40];
  snprintf(arch, sizeof arch, "--gpu-architecture=sm_%d%d", cc_major, cc_minor);
  const char *opts[] = {arch};
  if (nvrtcCreateProgram(&prog, src, name, 0, NULL, NULL) != NVRTC_SUCCESS) {
    snprintf(why, why_size, "%s: nvrtcCreateProgram failed", name);
    return NULL;
  }
  if (nvrtcCompileProgram(prog, 1, opts) != NVRTC_SUCCESS) {
    size_t n = 0;
    nvrtcGetProgramLogSize(prog, &n);
    char *log = calloc(n + 1, 1);
    if (log) nvrtcGetProgramLog(prog, log);
    snprintf(why, why_size, "compiling %s for %s failed: %s", name, arch, log ? log : "");
    free(log);
    nvrtcDestroyProgram(&prog);
    return NULL;
  }
  *size = 0;
  nvrtcGetCUBINSize(prog, size);
  char *cubin = malloc(*size);
  if (!cubin || nvrtcGetCUBIN(prog, cubin) != NVRTC_SUCCESS) {
    snprintf(why, why_size, "%s: nvrtcGetCUBIN failed", name);
    free(cubin);
    cubin = NULL;
  }
  nvrtcDestroyProgram(&prog);
  return cubin;
}

int bench_nvrtc_module(const cuda_api *cu, const char *src, const char *name, int cc_major,
                       int cc_minor, CUmodule *module, char *why, size_t why_size) {
  size_t size;
  void *cubin = bench_nvrtc_cubin(src, name, cc_major, cc_minor, &size, why, why_size);
  if (!cubin) return -1;
  const CUresult r = cu->ModuleLoadData(module, cubin);
  free(cubin);
  if (r != CUDA_SUCCESS) {
    const char *e = NULL;
    if (cu->GetErrorName) cu->GetErrorName(r, &e);
    snprintf(why, why_size, "%s: cuModuleLoadData failed (%s)", name, e ? e : "?");
    return -1;
  }
  return 0;
}
