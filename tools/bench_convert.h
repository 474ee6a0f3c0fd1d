/* kda-bench's convert reference: what this card reaches when a plain
 * kernel only moves a row's bytes (reads n bf16, writes n fp32, no
 * arithmetic), timed the way the fused kernel is. The 1 GiB cudaMemcpy
 * behind "%copy" runs for a third of a second; a 25 us kernel also pays its
 * launch's ramp and tail, which a faster card (H200) feels more. The
 * reference separates that size effect from the fused kernel's own losses.
 * It is not a bound: a tuned kernel can beat these six, and on most rows of
 * 16M elements or more the fused kernel does, by up to 2.6%. */
#ifndef KDA_TOOLS_BENCH_CONVERT_H
#define KDA_TOOLS_BENCH_CONVERT_H

#include <stddef.h>

#include "cuda_api.h"

/* The convert kernels' cubin for compute capability major.minor (NVRTC; the
 * caller frees it), or NULL with the reason (NVRTC's log) in why. */
void *bench_convert_compile(int cc_major, int cc_minor, size_t *size, char *why, size_t why_size);

/* Kernel k's name (0 <= k), or NULL past the last. */
const char *bench_convert_kernel_name(int k);

/* Compiles and loads the convert kernels for compute capability major.minor with NVRTC.
 * Returns 0, or -1 with the reason in why. */
int bench_convert_init(const cuda_api *cu, int cc_major, int cc_minor, char *why, size_t why_size);

/* The fastest convert kernel over nsets rotating buffer pairs (in[i]: n bf16
 * values, out[i]: n floats; n a multiple of 8), on stream s: `launches`
 * launches with programmatic overlap captured in one graph, replayed
 * `replays` times in rounds that alternate the kernels; microseconds per
 * launch, median. Each kernel's output is checked against the bf16 input
 * (in_host, n values) first, after poisoning out[0]. Returns the time, or
 * a negative value with the reason in why; the winner's name goes to
 * which. */
double bench_convert_us(const cuda_api *cu, CUstream s, void *const *in, void *const *out,
                      int nsets, size_t n, const unsigned short *in_host, int launches,
                      int replays, char *which, size_t which_size, char *why, size_t why_size);

#endif
