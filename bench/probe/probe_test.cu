// Variant "test": the kernel with the macros of PROBE_TEST_FLAGS (run.sh;
// default: none, the kernel as the library compiles it), launched the same way.
#define PROBE_PDL 1
#define PROBE_NS test
#define PROBE_TABLE table_test
#include "probe_kernels.cuh"
