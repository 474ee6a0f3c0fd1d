// Probe: two variants of the gate_cumsum kernel ("base" and "test", chosen
// by the macros in probe_base.cu and probe_test.cu) over block shapes on the
// shapes that decide issue 5, plus the cost of a bare cuLaunchKernel.
// Not part of the library build; bench/probe/run.sh builds it with nvcc.
#include <cuda.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <algorithm>
#include <vector>

#include "probe.h"

#define CK(x)                                                              \
  do {                                                                     \
    cudaError_t e_ = (x);                                                  \
    if (e_ != cudaSuccess) {                                               \
      fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
      exit(1);                                                             \
    }                                                                      \
  } while (0)

static double med(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
static double now_us() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

static unsigned short to_bf16(float f) {
  unsigned u;
  memcpy(&u, &f, 4);
  u += 0x7fff + ((u >> 16) & 1);
  return (unsigned short)(u >> 16);
}
static float from_bf16(unsigned short h) {
  unsigned u = (unsigned)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static unsigned long long rs = 88172645463325252ull;
static double urand() {
  rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17;
  return (rs >> 11) * (1.0 / 9007199254740992.0);
}
static double nrand() { return sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand()); }

__global__ void empty1(int a) { (void)a; }
__global__ void empty13(const void *a, void *b, const float *c, const float *d, float e, float f,
                        const int *g, const int *h, const int *i, long long j, long long k) {}

static double copy_bw() {
  size_t n = 1ull << 30;
  void *a, *b;
  CK(cudaMalloc(&a, n));
  CK(cudaMalloc(&b, n));
  CK(cudaMemset(a, 1, n));
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<double> t;
  for (int i = 0; i < 12; ++i) {
    cudaEventRecord(e0);
    cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice);
    cudaEventRecord(e1);
    cudaEventSynchronize(e1);
    float ms;
    cudaEventElapsedTime(&ms, e0, e1);
    if (i >= 2) t.push_back(ms);
  }
  cudaFree(a);
  cudaFree(b);
  return 2.0 * n / (med(t) * 1e-3) / 1e9;
}

struct shape { long long T; int H, chunk, nseq, even; };  // nseq > 0: varlen; even: equal whole-chunk lengths

int main(int argc, char **argv) {
  const bool ncu_mode = argc > 1 && !strcmp(argv[1], "ncu");
  cudaDeviceProp p;
  CK(cudaGetDeviceProperties(&p, 0));
  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  const double bw = ncu_mode ? 1 : copy_bw();
  printf("device %s, copy %.1f GB/s\n", p.name, bw);

  // Host cost of a bare launch through the driver API, 1 vs 11 params.
  if (!ncu_mode) {
    CUfunction f1, f13;
    CK(cudaGetFuncBySymbol((cudaFunction_t *)&f1, (const void *)empty1));
    CK(cudaGetFuncBySymbol((cudaFunction_t *)&f13, (const void *)empty13));
    int a = 0;
    void *pa[] = {&a};
    void *ptr = nullptr;
    float fl = 0;
    long long ll = 0;
    void *pb[] = {&ptr, &ptr, &ptr, &ptr, &fl, &fl, &ptr, &ptr, &ptr, &ll, &ll};
    // which 2: cuLaunchKernelEx with the programmatic-serialization attribute.
    CUlaunchAttribute at;
    memset(&at, 0, sizeof at);
    at.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    at.value.programmaticStreamSerializationAllowed = 1;
    CUlaunchConfig lc;
    memset(&lc, 0, sizeof lc);
    lc.gridDimX = lc.gridDimY = lc.gridDimZ = 1;
    lc.blockDimX = 32;
    lc.blockDimY = lc.blockDimZ = 1;
    lc.hStream = (CUstream)st;
    lc.attrs = &at;
    lc.numAttrs = 1;
    for (int which = 0; which < 3; ++which) {
      std::vector<double> t;
      for (int i = 0; i < 40000; ++i) {
        if (i % 250 == 0) cudaStreamSynchronize(st);
        double t0 = now_us();
        if (which == 2)
          cuLaunchKernelEx(&lc, f13, pb, nullptr);
        else
          cuLaunchKernel(which ? f13 : f1, 1, 1, 1, 32, 1, 1, 0, (CUstream)st, which ? pb : pa, nullptr);
        t.push_back(now_us() - t0);
      }
      cudaStreamSynchronize(st);
      printf("bare %s, %d params: %.3f us median\n", which == 2 ? "cuLaunchKernelEx+PDL" : "cuLaunchKernel",
             which ? 11 : 1, med(t));
    }
  }

  const shape shapes[] = {{512, 4, 64, 0},    {512, 8, 64, 0},    {512, 16, 64, 0},
                          {512, 32, 64, 0},   {2048, 4, 64, 0},   {2048, 8, 64, 0},
                          {8192, 16, 64, 0},  {8192, 32, 64, 0},  {32768, 4, 64, 0},
                          {32768, 32, 64, 0}, {8192, 16, 64, 8},  {8192, 32, 128, 0},
                          {8192, 16, 64, 8, 1},  {8192, 16, 64, 32}, {8192, 16, 64, 64},
                          {8192, 16, 64, 128}};
  // PROBE_EXTREME=0 skips the accuracy pass on std-12 inputs.
  const int passes = getenv("PROBE_EXTREME") && !strcmp(getenv("PROBE_EXTREME"), "0") ? 1 : 2;
  FILE *js = fopen(getenv("PROBE_JSON") ? getenv("PROBE_JSON") : "probe.json", "w");
  fprintf(js, "{\"gpu\": \"%s\", \"copy_bw_gbps\": %.1f, \"rows\": [\n", p.name, bw);
  bool first = true;
  // PROBE_VARLEN_ONLY=1: the varlen shape alone. PROBE_BASE_DEPENDENT_BOUNDS=1:
  // the base variant loads its sequence bounds after the table row (the
  // kernel's path for batches of 32 sequences or more; v8's only path).
  const bool varlen_only = getenv("PROBE_VARLEN_ONLY") && !strcmp(getenv("PROBE_VARLEN_ONLY"), "1");
  // PROBE_WITH_DENSE=1 (with PROBE_VARLEN_ONLY=1): also dense T=8192 H=16,
  // the varlen rows' dense counterpart (the varlen build has its blocks).
  const bool with_dense = getenv("PROBE_WITH_DENSE") && !strcmp(getenv("PROBE_WITH_DENSE"), "1");
  const bool base_dependent =
      getenv("PROBE_BASE_DEPENDENT_BOUNDS") && !strcmp(getenv("PROBE_BASE_DEPENDENT_BOUNDS"), "1");
  for (const shape &sh : shapes) {
    if (varlen_only && !sh.nseq && !(with_dense && sh.T == 8192 && sh.H == 16 && sh.chunk == 64)) continue;
    // ncu: the small and the large shape, or with PROBE_NCU_VARLEN=1 the
    // dense and the ragged varlen T=8192 H=16 side by side.
    const bool ncu_varlen = getenv("PROBE_NCU_VARLEN") && !strcmp(getenv("PROBE_NCU_VARLEN"), "1");
    if (ncu_mode && !ncu_varlen && !(sh.T == 512 && sh.H == 4) && !(sh.T == 32768 && sh.H == 32)) continue;
    if (ncu_mode && ncu_varlen && !(sh.T == 8192 && sh.H == 16 && sh.chunk == 64 && !sh.even)) continue;
    const int K = 128, H = sh.H;
    const size_t n = (size_t)sh.T * H * K;
    const int BT = sh.chunk;
    // Varlen: the benchmark's ragged lengths (tools/bench_rows.c).
    std::vector<int> cu(1, 0), ci;
    if (sh.nseq) {
      // bench_row_lengths: the 8 weights spread over any count, pairs
      // moving 13 tokens (fewer for short ones) so the offsets cancel.
      static const int w[8] = {3, 17, 5, 11, 1, 13, 7, 7};
      const long long per = 8ll * sh.nseq;
      for (int i = 0; i < sh.nseq; ++i) {
        long long len;
        if (i == sh.nseq - 1) {
          len = sh.T - cu.back();
        } else {
          const long long base = sh.T * w[i % 8] / per;
          const long long even = (i % 2) ? sh.T * w[(i - 1) % 8] / per : base;
          const long long shift = even / 2 < 13 ? even / 2 : 13;
          len = base + ((i % 2) ? shift : -shift);
          if (len < 1) len = 1;
        }
        if (sh.even) len = sh.T / sh.nseq;
        cu.push_back(cu.back() + (int)len);
      }
    } else {
      cu.push_back((int)sh.T);
    }
    for (size_t q = 0; q + 1 < cu.size(); ++q)
      for (int j = 0; j * BT < cu[q + 1] - cu[q]; ++j) { ci.push_back((int)q); ci.push_back(j); }
    // PROBE_TABLE_ORDER=partial-first / partial-last: the table's partial
    // chunks (each sequence's last, when short) moved ahead of / behind the
    // whole ones, each group in its own order (the builders write sequence
    // order).
    if (const char *ord = getenv("PROBE_TABLE_ORDER")) {
      const bool first_ = !strcmp(ord, "partial-first");
      std::vector<int> part, whole;
      for (size_t r = 0; r + 1 < ci.size(); r += 2) {
        const long long t0 = cu[ci[r]] + (long long)ci[r + 1] * BT;
        std::vector<int> &dst = cu[ci[r] + 1] - t0 < BT ? part : whole;
        dst.push_back(ci[r]);
        dst.push_back(ci[r + 1]);
      }
      ci = first_ ? part : whole;
      ci.insert(ci.end(), (first_ ? whole : part).begin(), (first_ ? whole : part).end());
    }
    const long long nchunks = (long long)ci.size() / 2;
    int *d_cu = nullptr, *d_ci = nullptr;
    if (sh.nseq) {
      CK(cudaMalloc(&d_cu, cu.size() * 4));
      CK(cudaMalloc(&d_ci, ci.size() * 4));
      CK(cudaMemcpy(d_cu, cu.data(), cu.size() * 4, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(d_ci, ci.data(), ci.size() * 4, cudaMemcpyHostToDevice));
    }
    const long long aux = sh.nseq ? sh.nseq : nchunks;
    std::vector<unsigned short> gh(n);
    std::vector<float> alog(H), bias(H * K);
    for (int pass = 0; pass < passes; ++pass) {
      // pass 0: timing inputs (std 1); pass 1 (accuracy only): std 12.
      const double sd = pass ? 12.0 : 1.0;
      for (size_t i = 0; i < n; ++i) gh[i] = to_bf16((float)(sd * nrand()));
      for (int h = 0; h < H; ++h) alog[h] = (float)log(1 + 15 * urand());
      for (int i = 0; i < H * K; ++i) bias[i] = (float)nrand();
      // float64 reference
      std::vector<double> ref(n);
      for (long long c = 0; c < nchunks; ++c)
        for (int ch = 0; ch < H * K; ++ch) {
          double acc = 0;
          const long long t0 = cu[ci[2 * c]] + (long long)ci[2 * c + 1] * BT;
          for (long long t = t0; t < std::min((long long)cu[ci[2 * c] + 1], t0 + BT); ++t) {
            double z = (double)from_bf16(gh[t * H * K + ch]) + bias[ch];
            double sp = z > 20 ? z : log1p(exp(z));
            acc += -exp((double)alog[ch / K]) * sp;
            ref[t * H * K + ch] = acc;
          }
        }
      const size_t set_bytes = n * 6;
      int nsets = (int)(2.5 * p.l2CacheSize / set_bytes) + 1;
      if (nsets > 40) nsets = 40;
      if (pass) nsets = 1;
      std::vector<void *> gs(nsets), os(nsets);
      for (int i = 0; i < nsets; ++i) {
        CK(cudaMalloc(&gs[i], n * 2));
        CK(cudaMalloc(&os[i], n * 4));
        CK(cudaMemcpy(gs[i], gh.data(), n * 2, cudaMemcpyHostToDevice));
      }
      float *dal, *dbi;
      CK(cudaMalloc(&dal, H * 4));
      CK(cudaMalloc(&dbi, H * K * 4));
      CK(cudaMemcpy(dal, alog.data(), H * 4, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(dbi, bias.data(), H * K * 4, cudaMemcpyHostToDevice));
      std::vector<float> got(n);
      for (int var = 0; var < 2; ++var) {
        probe_entry *tab = var ? test::table_test : base::table_base;
        const char *vname = var ? "test" : "base";
        const long long vaux = sh.nseq && !var && base_dependent ? (1ll << 40) : aux;
        double best = 1e30;
        int bt = 0, bs = 0;
        double worst_err = 0;
        for (probe_entry *e = tab; e->fn; ++e) {
          if (e->heads != H || e->chunk != BT || e->varlen != (sh.nseq > 0)) continue;
          if (ncu_mode && !((e->tx == 16 && e->seg == 16) || (!ncu_varlen && e->tx == 2 && e->seg == 16))) continue;
          CK(cudaMemsetAsync(os[0], 0xff, n * 4, st));
          e->fn(gs[0], (float *)os[0], dal, dbi, sh.T, nchunks, d_cu, d_ci, vaux, st);
          CK(cudaStreamSynchronize(st));
          CK(cudaGetLastError());
          if (ncu_mode) continue;
          CK(cudaMemcpy(got.data(), os[0], n * 4, cudaMemcpyDeviceToHost));
          double err = 0;
          for (size_t i = 0; i < n; ++i) {
            double d = fabs((double)got[i] - ref[i]) / (1 + fabs(ref[i]));
            if (!(d <= err)) err = d;  // NaN counts as worst
          }
          if (!(err <= worst_err)) worst_err = err;
          if (pass) continue;
          cudaGraph_t gr;
          cudaGraphExec_t ex;
          CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
          for (int i = 0; i < 40; ++i)
            e->fn(gs[i % nsets], (float *)os[i % nsets], dal, dbi, sh.T, nchunks, d_cu, d_ci, vaux, st);
          CK(cudaStreamEndCapture(st, &gr));
          CK(cudaGraphInstantiate(&ex, gr, 0));
          cudaEvent_t e0, e1;
          cudaEventCreate(&e0);
          cudaEventCreate(&e1);
          std::vector<double> t;
          for (int r = 0; r < 17; ++r) {
            cudaEventRecord(e0, st);
            cudaGraphLaunch(ex, st);
            cudaEventRecord(e1, st);
            cudaEventSynchronize(e1);
            float ms;
            cudaEventElapsedTime(&ms, e0, e1);
            if (r >= 2) t.push_back(ms * 1e3 / 40);
          }
          const double us = med(t);
          const double pct = 100.0 * (n * 6.0 / (us * 1e-6) / 1e9) / bw;
          fprintf(js, "%s{\"variant\": \"%s\", \"T\": %lld, \"H\": %d, \"chunk\": %d, \"seqs\": %d, \"even\": %d, \"tx\": %d, \"seg\": %d, \"us\": %.3f, \"pct\": %.1f, \"err\": %.3g}",
                  first ? "" : ",\n", vname, sh.T, H, BT, sh.nseq, sh.even, e->tx, e->seg, us, pct, err);
          first = false;
          if (us < best) { best = us; bt = e->tx; bs = e->seg; }
          cudaGraphExecDestroy(ex);
          cudaGraphDestroy(gr);
          cudaEventDestroy(e0);
          cudaEventDestroy(e1);
        }
        if (ncu_mode) continue;
        if (pass == 0)
          printf("T=%6lld H=%2d C=%3d S=%d%s %-8s best %8.3f us (%5.1f%% of copy) tx=%d seg=%d  max err %.3g\n", sh.T, H,
                 BT, sh.nseq, sh.even ? "e" : "", vname, best, 100.0 * (n * 6.0 / (best * 1e-6) / 1e9) / bw, bt, bs, worst_err);
        else
          printf("T=%6lld H=%2d C=%3d S=%d%s %-8s std-12 inputs: max err %.3g over every config (budget 2e-5)\n", sh.T, H,
                 BT, sh.nseq, sh.even ? "e" : "", vname, worst_err);
      }
      for (int i = 0; i < nsets; ++i) {
        cudaFree(gs[i]);
        cudaFree(os[i]);
      }
      cudaFree(dal);
      cudaFree(dbi);
      if (ncu_mode) break;
    }
    cudaFree(d_cu);
    cudaFree(d_ci);
  }
  fprintf(js, "\n]}\n");
  fclose(js);
  return 0;
}
