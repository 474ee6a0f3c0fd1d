// Variant "test": the kernel as the library compiles it.
#define PROBE_NS test
#define PROBE_TABLE table_test
#include "probe_kernels.cuh"
