// Instantiations of the gate_cumsum template for the probe, wrapped in a
// namespace so two arithmetic variants can live in one binary.
#include "probe.h"
namespace PROBE_NS {
#include "../../kernel_templates/gate_cumsum.cu"

template <int H, int TX, int SEG>
static void launch(const void *g, float *out, const float *alog, const float *bias, long long T,
                   long long nchunks, cudaStream_t st) {
  constexpr int VEC = 8, K = 128, HK = H * K, NCB = (HK + TX * VEC - 1) / (TX * VEC);
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3((unsigned)(nchunks * NCB));
  cfg.blockDim = dim3(TX * SEG);
  cfg.stream = st;
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = &attr;
  cfg.numAttrs = PROBE_PDL ? 1 : 0;
  const unsigned short *gp = (const unsigned short *)g;
  const int *none = nullptr;
  cudaLaunchKernelEx(&cfg, kda::gate_cumsum<2, 0, H, K, 64, 1, 1, 1, 1, 0, 0, 0, 3, VEC, TX, SEG>,
                     gp, out, alog, bias, 1.0f, 0.0f, none, none, none, T, nchunks);
}

#define PROBE_TS(H)                                                                         \
  {H, 2, 8, launch<H, 2, 8>}, {H, 2, 16, launch<H, 2, 16>}, {H, 2, 32, launch<H, 2, 32>},         \
  {H, 4, 8, launch<H, 4, 8>}, {H, 4, 16, launch<H, 4, 16>}, {H, 4, 32, launch<H, 4, 32>},         \
  {H, 8, 8, launch<H, 8, 8>}, {H, 8, 16, launch<H, 8, 16>}, {H, 8, 32, launch<H, 8, 32>},         \
  {H, 16, 8, launch<H, 16, 8>}, {H, 16, 16, launch<H, 16, 16>}, {H, 16, 32, launch<H, 16, 32>},   \
  {H, 32, 8, launch<H, 32, 8>}, {H, 32, 16, launch<H, 32, 16>}

probe_entry PROBE_TABLE[] = {PROBE_TS(4), PROBE_TS(8), PROBE_TS(16), PROBE_TS(32), {0, 0, 0, nullptr}};
}  // namespace PROBE_NS
