/* Every libkda kernel launch goes through here: plain cuLaunchKernel, or
 * cuLaunchKernelEx with programmatic stream serialization when the
 * context's launch overlap is on (kda_launch_overlap in kda.h). */
#ifndef KDA_SRC_KERNEL_LAUNCH_H
#define KDA_SRC_KERNEL_LAUNCH_H

#include <stdatomic.h>

#include "driver.h"

/* Launches fn on a 1-D grid. With *overlap set the launch carries the
 * programmatic-serialization attribute; a driver that refuses it
 * (CUDA_ERROR_NOT_SUPPORTED or CUDA_ERROR_INVALID_VALUE) gets the plain
 * launch instead, and when that one succeeds *overlap is cleared for good
 * and *refused (if not NULL) set to 1 so the caller can say so once. */
CUresult kda__launch_kernel(const kda__driver *drv, atomic_int *overlap, int *refused,
                            CUfunction fn, unsigned grid, unsigned threads, CUstream stream,
                            void **params);

#endif
