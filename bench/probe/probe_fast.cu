// Variant "test": the kernel as the library compiles it.
#define PROBE_NS fast
#define PROBE_TABLE table_fast
#include "probe_kernels.cuh"
