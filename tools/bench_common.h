/* What kda-bench's parts share: the driver entry points, the stream each
 * thread times on, the device, the timing constants and small helpers. */
#ifndef KDA_TOOLS_BENCH_COMMON_H
#define KDA_TOOLS_BENCH_COMMON_H

#include <stdint.h>

#include "cuda_api.h"
#include "kda/kda.h"

#define GRAPH_LAUNCHES 64
#define REPLAYS 15
#define SINGLES 15

extern cuda_api cu;
/* Per thread: --host-threads gives each worker a stream of its own. */
extern _Thread_local CUstream g_stream;
extern kda_device_info g_info;

double now_ms(void);
/* Sorts v. */
double median(double *v, int n);
/* Exits with the library's message unless st is KDA_OK. */
void kda_ok(kda_status st, const char *what);
/* Milliseconds from a to b, after waiting for b. */
double event_ms(CUevent a, CUevent b);
/* A dense bf16 -> f32 softplus call of [1, T, H, K] without dt_bias. */
kda_gate_args softplus_args(void *g, void *out, const void *A_log, int64_t T, int H, int K);

#endif
