// Variant "test": the kernel as the library compiles it, launched with the
// programmatic-serialization attribute as the library launches it.
#define PROBE_PDL 1
#define PROBE_NS test
#define PROBE_TABLE table_test
#include "probe_kernels.cuh"
