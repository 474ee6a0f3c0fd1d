/* The context object, shared by the files that implement the public calls. */
#ifndef KDA_SRC_CONTEXT_INTERNAL_H
#define KDA_SRC_CONTEXT_INTERNAL_H

#include <stdatomic.h>

#include "driver.h"
#include "kda/kda.h"
#include "kernel_source.h"
#include "module_cache.h"
#include "spec.h"

struct kda_context {
  const kda__driver *drv;
  CUdevice device;
  CUcontext cu;
  int retained_primary; /* release the primary context on destroy */
  int arch;             /* cc_major * 10 + cc_minor */
  kda_device_info info;
  kda__source_set sources;
  kda__module_cache *cache;
  atomic_uint_fast64_t nvrtc_compiles, modules_loaded, cache_hits, cache_misses, launches;
  atomic_uint_fast64_t compile_ns;
};

/* Makes ctx's CUcontext current on this thread if it is not; *pushed says
 * whether kda__context_leave must pop it. */
kda_status kda__context_enter(kda_context *ctx, int *pushed);
void kda__context_leave(kda_context *ctx, int pushed);

/* Returns the loaded function for spec, compiling it on first use. Refuses
 * to compile while stream is capturing (KDA_ERROR_CAPTURE_COLD). */
kda_status kda__context_function(kda_context *ctx, const kda__spec *spec, CUstream stream,
                                 CUfunction *fn);

#endif
