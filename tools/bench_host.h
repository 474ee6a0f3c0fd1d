/* kda-bench's host cost: what a warm call costs the calling thread, beside
 * the driver's own cost of a launch (an empty kernel with the same
 * parameters, in alternating rounds), the driver's cost by launch form,
 * and several threads calling into one context at once. */
#ifndef KDA_TOOLS_BENCH_HOST_H
#define KDA_TOOLS_BENCH_HOST_H

#include "kda/kda.h"

/* Compiles the empty reference kernels; needed for bare_us and
 * launch_forms, not on the tests' stand-in driver (--host-only). */
void bench_host_init(void);

/* Host cost of a warm call of a small dense shape through ctx (see
 * bench_host.c); bare_us, when not NULL, gets the bare driver launch's
 * median from the same rounds (needs bench_host_init). */
void host_cost(kda_context *ctx, double *inside_us, double *enqueue_us, double *gpu_us,
               double *bare_us);

/* Prints the driver's cost of each launch form (needs bench_host_init). */
void launch_forms(void);

/* The bare driver launch over 100k enqueues, then one sync: wall and GPU
 * time per call (needs bench_host_init). */
void bare_enqueue_cost(double *wall_us, double *gpu_us);

/* Prints the GPU's side of a warm call alone (calls queued behind a
 * kernel that holds the stream) beside the empty kernel's, and the cost of
 * cuCtxGetCurrent (needs bench_host_init). */
void queued_gpu_cost(kda_context *ctx);

/* Creates n streams in the current context, one launch of the empty kernel
 * on each, kept until the process ends, and says so (needs
 * bench_host_init). */
void bench_extra_streams(int n);

/* Prints host_cost of n threads calling into ctx at once, a stream each. */
void host_cost_threads(kda_context *ctx, int n);

#endif
