// Instantiations of the gate_cumsum template for the probe, wrapped in a
// namespace so two arithmetic variants can live in one binary.
#include "probe.h"
namespace PROBE_NS {
// <>: run.sh puts kernel_templates on the include path after the variant's
// flags, so "-I<dir>" in PROBE_BASE_FLAGS compiles the base from another tree.
#include <gate_cumsum.cu>

template <int H, int BT, int VARLEN, int TX, int SEG>
static void launch(const void *g, float *out, const float *alog, const float *bias, long long T,
                   long long nchunks, const int *cu, const int *ci, long long aux, cudaStream_t st) {
  constexpr int VEC = 8, K = 128, HK = H * K, NCB = (HK + TX * VEC - 1) / (TX * VEC);
  cudaLaunchConfig_t cfg = {};
  // Varlen mode 1 blocks of several table rows (bench/probe/items_kt, the
  // kernel's KDA_TABLE_ITEMS): fewer blocks, and the row count in
  // host_rows.r[0] (unused otherwise).
#ifdef KDA_TABLE_ITEMS
  constexpr int ITEMS = VARLEN == 1 ? KDA_TABLE_ITEMS : 1;
#else
  constexpr int ITEMS = 1;
#endif
  cfg.gridDim = dim3((unsigned)((nchunks + ITEMS - 1) / ITEMS * NCB));
  cfg.blockDim = dim3(TX * SEG);
  cfg.stream = st;
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = PROBE_PDL ? 1 : 0;
  const unsigned short *gp = (const unsigned short *)g;
  const int *none = nullptr;
  auto kernel = kda::gate_cumsum<2, 0, H, K, BT, 1, 1, 1, 1, 0, 0, VARLEN, 3, VEC, TX, SEG>;
#ifdef PROBE_CAP_BLOCKS
  // At most PROBE_CAP_BLOCKS resident blocks per SM: each block takes a
  // share of the SM's shared memory (1 KB of it reserved per block).
  static int dyn = -1;
  if (dyn < 0) {
    int dev = 0, smem_sm = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&smem_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev);
    cudaFuncAttributes fa;
    cudaFuncGetAttributes(&fa, kernel);
    dyn = smem_sm / PROBE_CAP_BLOCKS - 1024 - (int)fa.sharedSizeBytes;
    if (dyn < 0) dyn = 0;
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, dyn);
  }
  cfg.dynamicSmemBytes = (size_t)dyn;
#endif
  cudaLaunchKernelEx(&cfg, kernel, gp, out, alog, bias, 1.0f, 0.0f, cu, ci, none, T, aux,
                     kda::host_plan<1>{{(unsigned)nchunks}});
}

#define PROBE_TS(H)                                                                            \
  {H, 64, 0, 2, 8, launch<H, 64, 0, 2, 8>}, {H, 64, 0, 2, 16, launch<H, 64, 0, 2, 16>},          \
  {H, 64, 0, 2, 32, launch<H, 64, 0, 2, 32>}, {H, 64, 0, 4, 8, launch<H, 64, 0, 4, 8>},          \
  {H, 64, 0, 4, 16, launch<H, 64, 0, 4, 16>}, {H, 64, 0, 4, 32, launch<H, 64, 0, 4, 32>},        \
  {H, 64, 0, 8, 8, launch<H, 64, 0, 8, 8>}, {H, 64, 0, 8, 16, launch<H, 64, 0, 8, 16>},          \
  {H, 64, 0, 8, 32, launch<H, 64, 0, 8, 32>}, {H, 64, 0, 16, 8, launch<H, 64, 0, 16, 8>},        \
  {H, 64, 0, 16, 16, launch<H, 64, 0, 16, 16>}, {H, 64, 0, 16, 32, launch<H, 64, 0, 16, 32>},    \
  {H, 64, 0, 32, 8, launch<H, 64, 0, 32, 8>}, {H, 64, 0, 32, 16, launch<H, 64, 0, 32, 16>}
// The shapes of the benchmark's rows that sit below 95%: varlen and chunk 128.
#define PROBE_SOME(H, BT, V)                                                                   \
  {H, BT, V, 8, 8, launch<H, BT, V, 8, 8>}, {H, BT, V, 8, 16, launch<H, BT, V, 8, 16>},          \
  {H, BT, V, 8, 32, launch<H, BT, V, 8, 32>}, {H, BT, V, 16, 8, launch<H, BT, V, 16, 8>},        \
  {H, BT, V, 16, 16, launch<H, BT, V, 16, 16>}, {H, BT, V, 16, 32, launch<H, BT, V, 16, 32>}

#ifdef PROBE_VARLEN_BUILD  // the varlen block shapes alone: a quick build for PROBE_VARLEN_ONLY=1
probe_entry PROBE_TABLE[] = {PROBE_SOME(16, 64, 1), PROBE_SOME(16, 64, 0), {0, 0, 0, 0, 0, nullptr}};
#else
probe_entry PROBE_TABLE[] = {PROBE_TS(4),           PROBE_TS(8),           PROBE_TS(16),
                             PROBE_TS(32),          PROBE_SOME(16, 64, 1), PROBE_SOME(32, 128, 0),
                             {0, 0, 0, 0, 0, nullptr}};
#endif
}  // namespace PROBE_NS
