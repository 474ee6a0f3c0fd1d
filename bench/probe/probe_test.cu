// Variant "test": the same kernel with streaming (evict-first) loads and
// stores (KDA_CACHE_HINTS), launched the same way.
#define KDA_CACHE_HINTS 1
#define PROBE_PDL 1
#define PROBE_NS test
#define PROBE_TABLE table_test
#include "probe_kernels.cuh"
