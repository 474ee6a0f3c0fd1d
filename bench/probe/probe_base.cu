// Variant "base": the kernel as it was before the change under test
// (here: fp32 stores without the lane-pair swap).
#define KDA_NO_PAIR_STORES 1
#define PROBE_NS base
#define PROBE_TABLE table_base
#include "probe_kernels.cuh"
