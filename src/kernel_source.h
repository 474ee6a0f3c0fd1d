/* The CUDA kernel templates: embedded into the library at build time from
 * kernel_templates/ (see cmake/embed_sources.cmake), or read from a folder
 * for kernel development (kda_options.kernel_dir or KDA_KERNEL_DIR). */
#ifndef KDA_SRC_KERNEL_SOURCE_H
#define KDA_SRC_KERNEL_SOURCE_H

#include <stddef.h>

#include "kda/kda.h"

typedef struct kda__source {
  const char *name; /* file name, e.g. "gate_cumsum.cu" */
  const char *text; /* NUL-terminated */
  size_t size;
} kda__source;

/* Every template file; headers (.cuh) are offered to each NVRTC program. */
typedef struct kda__source_set {
  kda__source *files;
  size_t count;
  int owned; /* texts were read from a folder and must be freed */
  unsigned char sha256[32]; /* hash of all files, names included, in name order */
} kda__source_set;

/* Generated at build time. */
extern const kda__source kda__embedded_sources[];
extern const size_t kda__embedded_source_count;

/* dir == NULL: the embedded set. Otherwise every name of the embedded set is
 * read from dir (a missing file is KDA_ERROR_KERNEL_SOURCE). */
kda_status kda__source_set_load(const char *dir, kda__source_set *out);
void kda__source_set_free(kda__source_set *set);
const kda__source *kda__source_find(const kda__source_set *set, const char *name);

#endif
