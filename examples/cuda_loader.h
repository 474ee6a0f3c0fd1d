/* The few CUDA Driver API calls the example needs for its own buffers and
 * streams, loaded with dlopen at run time (as libkda itself and its tools
 * do), so the program builds against the installed libkda alone (no CUDA
 * headers, no libcuda at link time) and, on a machine without a driver,
 * starts and says why.
 *
 * The types below are the driver's own ABI (cuda.h): CUresult is an enum
 * (int), CUdeviceptr an unsigned 64-bit integer on 64-bit hosts, contexts
 * and streams opaque pointers. kda_stream is the same object as CUstream. */
#ifndef KDA_EXAMPLE_CUDA_LOADER_H
#define KDA_EXAMPLE_CUDA_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include <kda/kda.h>

typedef int ex_cu_result;             /* CUresult; 0 is CUDA_SUCCESS */
typedef int ex_cu_device;             /* CUdevice */
typedef unsigned long long ex_cu_ptr; /* CUdeviceptr */
typedef kda_cu_context ex_cu_context; /* CUcontext */
typedef kda_stream ex_cu_stream;      /* CUstream */

typedef struct ex_cuda {
  void *lib;
  ex_cu_device device;
  ex_cu_context primary;
  ex_cu_result (*Init)(unsigned int);
  ex_cu_result (*DeviceGet)(ex_cu_device *, int);
  ex_cu_result (*PrimaryCtxRetain)(ex_cu_context *, ex_cu_device);
  ex_cu_result (*PrimaryCtxRelease)(ex_cu_device);
  ex_cu_result (*CtxSetCurrent)(ex_cu_context);
  ex_cu_result (*MemAlloc)(ex_cu_ptr *, size_t);
  ex_cu_result (*MemFree)(ex_cu_ptr);
  ex_cu_result (*MemcpyHtoDAsync)(ex_cu_ptr, const void *, size_t, ex_cu_stream);
  ex_cu_result (*MemcpyDtoHAsync)(void *, ex_cu_ptr, size_t, ex_cu_stream);
  ex_cu_result (*StreamCreate)(ex_cu_stream *, unsigned int);
  ex_cu_result (*StreamDestroy)(ex_cu_stream);
  ex_cu_result (*StreamSynchronize)(ex_cu_stream);
  ex_cu_result (*GetErrorName)(ex_cu_result, const char **);
} ex_cuda;

/* Loads libcuda.so.1 ($KDA_LIBCUDA when set, as libkda does), retains device `ordinal`'s primary context and makes
 * it current on the calling thread. Returns 0, or -1 with the reason in why
 * (and nothing held). */
int ex_cuda_load(ex_cuda *cu, int ordinal, char *why, size_t why_size);
/* Releases the primary context and the library. */
void ex_cuda_unload(ex_cuda *cu);
/* The driver's name of a result ("CUDA_ERROR_OUT_OF_MEMORY"). */
const char *ex_cuda_error_name(const ex_cuda *cu, ex_cu_result r);

#endif
