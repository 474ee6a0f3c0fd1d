/* See server_streams.h. */
#include <stddef.h>
#include <stdio.h>

#include "cuda_api.h"
#include "server_streams.h"

int server_streams_make(int device, int n, char *why, size_t why_size) {
  static cuda_api cu;
  if (n <= 0) return 0;
  if (cuda_api_load(&cu, device, why, why_size) != 0) return -1;
  CUevent ev = NULL;
  CUresult r = cu.EventCreate(&ev, CU_EVENT_DISABLE_TIMING);
  for (int i = 0; i < n && r == CUDA_SUCCESS; ++i) {
    CUstream st;
    r = cu.StreamCreate(&st, CU_STREAM_NON_BLOCKING);
    /* Used once, as a server's streams are; kept, as a server keeps them. */
    if (r == CUDA_SUCCESS) r = cu.EventRecord(ev, st);
    if (r == CUDA_SUCCESS) r = cu.StreamSynchronize(st);
  }
  if (ev != NULL) cu.EventDestroy(ev);
  if (r != CUDA_SUCCESS) {
    const char *name = "?";
    cu.GetErrorName(r, &name);
    snprintf(why, why_size, "could not make %d streams on device %d: %s", n, device, name);
    return -1;
  }
  return 0;
}
