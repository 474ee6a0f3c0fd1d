/* kda-bench's own kernels (the L2 flush, the empty reference kernels, the
 * convert kernels), compiled with NVRTC for the device's arch and loaded. */
#ifndef KDA_TOOLS_BENCH_NVRTC_H
#define KDA_TOOLS_BENCH_NVRTC_H

#include <stddef.h>

#include "cuda_api.h"

/* src's cubin for sm_<major><minor> (the caller frees it), or NULL with the
 * reason, NVRTC's log included, in why. name names the program in it. */
void *bench_nvrtc_cubin(const char *src, const char *name, int cc_major, int cc_minor,
                        size_t *size, char *why, size_t why_size);

/* src compiled and loaded as a module of the current context. Returns 0, or
 * -1 with the reason in why. */
int bench_nvrtc_module(const cuda_api *cu, const char *src, const char *name, int cc_major,
                       int cc_minor, CUmodule *module, char *why, size_t why_size);

#endif
