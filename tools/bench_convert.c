/* kda-bench's convert reference (bench_convert.h): six plain kernels that
 * only move a row's bytes, and the graph timing that measures them like the
 * fused kernel. */
#include "bench_convert.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "bench_nvrtc.h"

/* Each thread converts V groups of 4 (narrow: an 8-byte load, a 16-byte
 * store, both coalesced) or of 8 (wide: a 16-byte load and two 16-byte
 * stores, as the fused kernel's), with every load issued before the first
 * store; with or without the streaming cache hint (.cs) that the fused
 * kernel uses. Like the fused kernel, each waits for the kernel before it
 * (griddepcontrol.wait) and lets the next one launch early. */
static const char convert_src[] =
    "__device__ __forceinline__ float bf(unsigned h) { return __uint_as_float(h << 16); }\n"
    "template <bool CS> __device__ __forceinline__ uint2 ld2(const uint2 *p) { uint2 v;\n"
    "  if (CS) asm volatile(\"ld.global.cs.v2.u32 {%0, %1}, [%2];\" : \"=r\"(v.x), \"=r\"(v.y) : \"l\"(p));\n"
    "  else asm volatile(\"ld.global.v2.u32 {%0, %1}, [%2];\" : \"=r\"(v.x), \"=r\"(v.y) : \"l\"(p));\n"
    "  return v; }\n"
    "template <bool CS> __device__ __forceinline__ uint4 ld4(const uint4 *p) { uint4 v;\n"
    "  if (CS) asm volatile(\"ld.global.cs.v4.u32 {%0, %1, %2, %3}, [%4];\"\n"
    "      : \"=r\"(v.x), \"=r\"(v.y), \"=r\"(v.z), \"=r\"(v.w) : \"l\"(p));\n"
    "  else asm volatile(\"ld.global.v4.u32 {%0, %1, %2, %3}, [%4];\"\n"
    "      : \"=r\"(v.x), \"=r\"(v.y), \"=r\"(v.z), \"=r\"(v.w) : \"l\"(p));\n"
    "  return v; }\n"
    "template <bool CS> __device__ __forceinline__ void st4(float4 *p, float4 f) {\n"
    "  if (CS) asm volatile(\"st.global.cs.v4.f32 [%0], {%1, %2, %3, %4};\"\n"
    "      :: \"l\"(p), \"f\"(f.x), \"f\"(f.y), \"f\"(f.z), \"f\"(f.w) : \"memory\");\n"
    "  else asm volatile(\"st.global.v4.f32 [%0], {%1, %2, %3, %4};\"\n"
    "      :: \"l\"(p), \"f\"(f.x), \"f\"(f.y), \"f\"(f.z), \"f\"(f.w) : \"memory\");\n"
    "}\n"
    "__device__ __forceinline__ void pdl() {\n"
    "#if __CUDA_ARCH__ >= 900\n"
    "  asm volatile(\"griddepcontrol.wait;\" ::: \"memory\");\n"
    "  asm volatile(\"griddepcontrol.launch_dependents;\" :::);\n"
    "#endif\n"
    "}\n"
    "template <int V, bool CS> __device__ void narrow(const uint2 *in, float4 *out, long long nq) {\n"
    "  pdl();\n"
    "  const long long base = (long long)blockIdx.x * blockDim.x * V + threadIdx.x;\n"
    "  uint2 v[V];\n"
    "#pragma unroll\n"
    "  for (int i = 0; i < V; ++i) { long long q = base + (long long)i * blockDim.x;\n"
    "    if (q < nq) v[i] = ld2<CS>(in + q); }\n"
    "#pragma unroll\n"
    "  for (int i = 0; i < V; ++i) { long long q = base + (long long)i * blockDim.x;\n"
    "    if (q < nq) st4<CS>(out + q, make_float4(bf(v[i].x & 0xffffu), bf(v[i].x >> 16),\n"
    "                                          bf(v[i].y & 0xffffu), bf(v[i].y >> 16))); }\n"
    "}\n"
    "template <int V, bool CS> __device__ void wide(const uint4 *in, float4 *out, long long no) {\n"
    "  pdl();\n"
    "  const long long base = (long long)blockIdx.x * blockDim.x * V + threadIdx.x;\n"
    "  uint4 v[V];\n"
    "#pragma unroll\n"
    "  for (int i = 0; i < V; ++i) { long long q = base + (long long)i * blockDim.x;\n"
    "    if (q < no) v[i] = ld4<CS>(in + q); }\n"
    "#pragma unroll\n"
    "  for (int i = 0; i < V; ++i) { long long q = base + (long long)i * blockDim.x;\n"
    "    if (q < no) {\n"
    "      st4<CS>(out + 2 * q, make_float4(bf(v[i].x & 0xffffu), bf(v[i].x >> 16),\n"
    "                                       bf(v[i].y & 0xffffu), bf(v[i].y >> 16)));\n"
    "      st4<CS>(out + 2 * q + 1, make_float4(bf(v[i].z & 0xffffu), bf(v[i].z >> 16),\n"
    "                                           bf(v[i].w & 0xffffu), bf(v[i].w >> 16))); } }\n"
    "}\n"
    "#define NARROW(name, V, CS) extern \"C\" __global__ void __launch_bounds__(256)\\\n"
    "  name(const uint2 *in, float4 *out, long long nq) { narrow<V, CS>(in, out, nq); }\n"
    "#define WIDE(name, V, CS) extern \"C\" __global__ void __launch_bounds__(256)\\\n"
    "  name(const uint4 *in, float4 *out, long long no) { wide<V, CS>(in, out, no); }\n"
    "NARROW(narrow4, 4, false) NARROW(narrow8, 8, false) NARROW(narrow8_cs, 8, true)\n"
    "WIDE(wide2, 2, false) WIDE(wide4, 4, false) WIDE(wide4_cs, 4, true)\n";

typedef struct convert_kernel {
  const char *name;
  int group;    /* elements per group: 4 (narrow) or 8 (wide) */
  int per_thread; /* groups per thread */
  CUfunction fn;
} convert_kernel;

#define NKERNELS 6
static convert_kernel kernels[NKERNELS] = {
    {"narrow4", 4, 4, NULL}, {"narrow8", 4, 8, NULL}, {"narrow8_cs", 4, 8, NULL},
    {"wide2", 8, 2, NULL},   {"wide4", 8, 4, NULL},   {"wide4_cs", 8, 4, NULL},
};

#define THREADS 256

void *bench_convert_compile(int cc_major, int cc_minor, size_t *size, char *why, size_t why_size) {
  return bench_nvrtc_cubin(convert_src, "convert.cu", cc_major, cc_minor, size, why, why_size);
}

const char *bench_convert_kernel_name(int k) { return k >= 0 && k < NKERNELS ? kernels[k].name : NULL; }

int bench_convert_init(const cuda_api *cu, int cc_major, int cc_minor, char *why, size_t why_size) {
  CUmodule m;
  if (bench_nvrtc_module(cu, convert_src, "convert.cu", cc_major, cc_minor, &m, why, why_size))
    return -1;
  for (int k = 0; k < NKERNELS; ++k)
    if (cu->ModuleGetFunction(&kernels[k].fn, m, kernels[k].name) != CUDA_SUCCESS) {
      snprintf(why, why_size, "convert kernel %s not found in its module", kernels[k].name);
      return -1;
    }
  return 0;
}

static CUresult launch(const cuda_api *cu, CUstream s, const convert_kernel *k, void *in, void *out,
                       size_t n) {
  long long groups = (long long)(n / (size_t)k->group);
  const long long per_block = (long long)THREADS * k->per_thread;
  void *params[] = {&in, &out, &groups};
  CUlaunchAttribute attr;
  memset(&attr, 0, sizeof attr);
  attr.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
  attr.value.programmaticStreamSerializationAllowed = 1;
  CUlaunchConfig lc;
  memset(&lc, 0, sizeof lc);
  lc.gridDimX = (unsigned)((groups + per_block - 1) / per_block);
  lc.gridDimY = lc.gridDimZ = 1;
  lc.blockDimX = THREADS;
  lc.blockDimY = lc.blockDimZ = 1;
  lc.hStream = s;
  lc.attrs = &attr;
  lc.numAttrs = 1;
  if (cu->LaunchKernelEx) return cu->LaunchKernelEx(&lc, k->fn, params, NULL);
  return cu->LaunchKernel(k->fn, lc.gridDimX, 1, 1, THREADS, 1, 1, 0, s, params, NULL);
}

/* out[0] after one launch of k, poisoned first: every element must be its
 * bf16 input widened. */
static int check(const cuda_api *cu, CUstream s, const convert_kernel *k, void *in, void *out,
                 size_t n, const unsigned short *in_host, char *why, size_t why_size) {
  float *got = malloc(n * sizeof *got);
  if (!got) {
    snprintf(why, why_size, "out of host memory");
    return -1;
  }
  /* The memset runs on the legacy stream, which s does not wait for. */
  int rc = cu->MemsetD32((CUdeviceptr)(uintptr_t)out, 0x7fc00000u, n) == CUDA_SUCCESS &&
                   cu->CtxSynchronize() == CUDA_SUCCESS && launch(cu, s, k, in, out, n) == CUDA_SUCCESS &&
                   cu->StreamSynchronize(s) == CUDA_SUCCESS &&
                   cu->MemcpyDtoH(got, (CUdeviceptr)(uintptr_t)out, n * sizeof *got) == CUDA_SUCCESS
               ? 0
               : -1;
  if (rc) snprintf(why, why_size, "convert kernel %s: a launch or copy failed", k->name);
  for (size_t i = 0; rc == 0 && i < n; ++i) {
    unsigned bits = (unsigned)in_host[i] << 16;
    float want;
    memcpy(&want, &bits, sizeof want);
    if (!(got[i] == want)) {
      snprintf(why, why_size, "convert kernel %s: element %zu is %g, not %g", k->name, i,
               (double)got[i], (double)want);
      rc = -1;
    }
  }
  free(got);
  return rc;
}

double bench_convert_us(const cuda_api *cu, CUstream s, void *const *in, void *const *out,
                      int nsets, size_t n, const unsigned short *in_host, int launches,
                      int replays, char *which, size_t which_size, char *why, size_t why_size) {
  if (n % 8 || nsets < 1 || launches < 1 || replays < 1) {
    snprintf(why, why_size, "convert: n must be a multiple of 8");
    return -1;
  }
  for (int k = 0; k < NKERNELS; ++k)
    if (check(cu, s, &kernels[k], in[0], out[0], n, in_host, why, why_size)) return -1;
  CUgraphExec exec[NKERNELS];
  for (int k = 0; k < NKERNELS; ++k) {
    CUgraph g;
    if (cu->StreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL) != CUDA_SUCCESS) {
      snprintf(why, why_size, "convert: capture failed");
      return -1;
    }
    CUresult lr = CUDA_SUCCESS;
    for (int i = 0; i < launches && lr == CUDA_SUCCESS; ++i)
      lr = launch(cu, s, &kernels[k], in[i % nsets], out[i % nsets], n);
    if (cu->StreamEndCapture(s, &g) != CUDA_SUCCESS || lr != CUDA_SUCCESS ||
        cu->GraphInstantiate(&exec[k], g, 0) != CUDA_SUCCESS) {
      snprintf(why, why_size, "convert: capture or instantiation failed");
      return -1;
    }
    cu->GraphDestroy(g);
  }
  CUevent e0, e1;
  cu->EventCreate(&e0, 0);
  cu->EventCreate(&e1, 0);
  double *t = calloc((size_t)NKERNELS * (size_t)replays, sizeof *t);
  for (int r = -2; r < replays; ++r)
    for (int k = 0; k < NKERNELS; ++k) {
      float ms = 0;
      cu->EventRecord(e0, s);
      cu->GraphLaunch(exec[k], s);
      cu->EventRecord(e1, s);
      cu->EventSynchronize(e1);
      cu->EventElapsedTime(&ms, e0, e1);
      if (r >= 0) t[k * replays + r] = ms * 1e3 / launches;
    }
  double best = INFINITY;
  for (int k = 0; k < NKERNELS; ++k) {
    const double med = median(t + k * replays, replays);
    if (med < best) {
      best = med;
      snprintf(which, which_size, "%s", kernels[k].name);
    }
    cu->GraphExecDestroy(exec[k]);
  }
  free(t);
  cu->EventDestroy(e0);
  cu->EventDestroy(e1);
  return best;
}
