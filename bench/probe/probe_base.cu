// Variant "base": the kernel with the macros of PROBE_BASE_FLAGS (run.sh;
// default: plain loads and stores, the form before v8), launched with
// programmatic dependent launch as the library does.
#define PROBE_PDL 1
#define PROBE_NS base
#define PROBE_TABLE table_base
#include "probe_kernels.cuh"
