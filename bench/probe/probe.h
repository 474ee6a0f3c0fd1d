#pragma once
#include <cuda_runtime.h>
typedef void (*probe_launch)(const void *g, float *out, const float *alog, const float *bias,
                             long long T, long long nchunks, cudaStream_t st);
struct probe_entry {
  int heads, tx, seg;
  probe_launch fn;
};
namespace base { extern probe_entry table_base[]; }
namespace test { extern probe_entry table_test[]; }
