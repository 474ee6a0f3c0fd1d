/* One NVRTC program: a template source, several instantiations (name
 * expressions), one cubin for one exact architecture. */
#ifndef KDA_SRC_NVRTC_COMPILE_H
#define KDA_SRC_NVRTC_COMPILE_H

#include <stddef.h>

#include "kda/kda.h"
#include "kernel_source.h"

typedef struct kda__compile_request {
  const kda__source_set *sources; /* headers (.cuh) come from here */
  const char *source_name;        /* the .cu to compile, e.g. "gate_cumsum.cu" */
  int arch;                       /* compute capability * 10, e.g. 90 for sm_90 */
  const char *const *names;       /* name expressions, e.g. "kda::gate_cumsum<...>" */
  size_t num_names;
} kda__compile_request;

typedef struct kda__compiled {
  void *cubin;
  size_t cubin_size;
  char **lowered_names; /* num_names mangled names, for cuModuleGetFunction */
  size_t num_names;
  char *log;            /* NVRTC's log when non-empty (warnings), else NULL */
  double compile_ms;    /* wall time of nvrtcCompileProgram */
} kda__compiled;

/* Compiles with -std=c++17 --gpu-architecture=sm_<arch>. On failure returns
 * KDA_ERROR_COMPILE with the NVRTC log in the thread's error message.
 * A successful compile whose log is non-empty keeps the log in out->log. */
kda_status kda__nvrtc_compile(const kda__compile_request *req, kda__compiled *out);
void kda__compiled_free(kda__compiled *c);

/* NVRTC version as a string "MAJOR.MINOR" and numbers. */
void kda__nvrtc_version(int *major, int *minor);

/* Options passed to NVRTC for arch, one string (for cache keys and logs). */
const char *kda__nvrtc_options_string(void);

#endif
