#define KDA_ACCURATE_SOFTPLUS 1
#define PROBE_NS acc
#define PROBE_TABLE table_acc
#include "probe_kernels.cuh"
