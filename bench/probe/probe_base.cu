// Variant "base": the kernel as the library compiles it (plain loads and
// stores), launched with programmatic dependent launch as the library does.
#define PROBE_PDL 1
#define PROBE_NS base
#define PROBE_TABLE table_base
#include "probe_kernels.cuh"
