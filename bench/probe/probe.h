#pragma once
#include <cuda_runtime.h>
// cu/ci: the varlen batch's cu_seqlens and chunk table (NULL when dense);
// aux: chunks per sequence (dense) or the sequence count (varlen), as the
// library passes it.
typedef void (*probe_launch)(const void *g, float *out, const float *alog, const float *bias,
                             long long T, long long nchunks, const int *cu, const int *ci,
                             long long aux, cudaStream_t st);
struct probe_entry {
  int heads, chunk, varlen, tx, seg;
  probe_launch fn;
};
namespace base { extern probe_entry table_base[]; }
namespace test { extern probe_entry table_test[]; }
