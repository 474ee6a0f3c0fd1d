/* Per-context map from specialization to loaded kernel, with single-flight
 * builds: the first caller of a spec builds it (outside the lock); callers
 * of the same spec wait for that build; callers of other specs do not. */
#ifndef KDA_SRC_MODULE_CACHE_H
#define KDA_SRC_MODULE_CACHE_H

#include <cuda.h>

#include "kda/kda.h"
#include "spec.h"

typedef struct kda__module_cache kda__module_cache;

/* Builds spec: compiles and loads it, returning its module and function.
 * Called without any cache lock held. On failure it returns a status with
 * the thread's error message set. */
typedef kda_status (*kda__build_fn)(void *user, const kda__spec *spec, CUmodule *module,
                                    CUfunction *function);
/* Build step that also chooses the block config (a tuned slot's winner).
 * *config is returned to every caller of the spec with its function. */
typedef kda_status (*kda__build_cfg_fn)(void *user, const kda__spec *spec, CUmodule *module,
                                        CUfunction *function, kda__config *config);
/* Unloads a module built by a kda__build_fn (called by destroy). */
typedef void (*kda__unload_fn)(void *user, CUmodule module);

kda_status kda__cache_create(kda__module_cache **out);
/* Unloads every module through unload. NULL cache is a no-op. */
void kda__cache_destroy(kda__module_cache *cache, kda__unload_fn unload, void *user);

/* Returns the function for spec, building it once if needed.
 * *hit is set to 1 when it was already loaded (no wait), else 0.
 * A failed build is reported to its caller and to every caller that was
 * waiting for it (same status, message prefixed); the next call retries. */
kda_status kda__cache_get(kda__module_cache *cache, const kda__spec *spec, kda__build_fn build,
                          void *user, CUfunction *function, int *hit);

/* Same with a config-choosing build; *config (may be NULL) receives the
 * config the build chose (for a plain build: spec->cfg). */
kda_status kda__cache_get_cfg(kda__module_cache *cache, const kda__spec *spec,
                              kda__build_cfg_fn build, void *user, CUfunction *function,
                              kda__config *config, int *hit);

/* Lookup only: 1 and *function if spec is loaded, else 0. Never waits. */
int kda__cache_peek(kda__module_cache *cache, const kda__spec *spec, CUfunction *function);
/* Same, also returning the entry's config (config may be NULL). */
int kda__cache_peek_cfg(kda__module_cache *cache, const kda__spec *spec, CUfunction *function,
                        kda__config *config);

/* Number of callers waiting for spec's build in flight. Lets a test hold a
 * build until every concurrent caller is waiting for it, instead of
 * guessing with a sleep. */
int kda__cache_waiters(kda__module_cache *cache, const kda__spec *spec);

/* Number of loaded entries. */
size_t kda__cache_size(kda__module_cache *cache);

#endif
