// Variant "base": the kernel as it was before the change under test
// (here: without programmatic dependent launch, launched plainly).
#define KDA_NO_PDL 1
#define PROBE_PDL 0
#define PROBE_NS base
#define PROBE_TABLE table_base
#include "probe_kernels.cuh"
