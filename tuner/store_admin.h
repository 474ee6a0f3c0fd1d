/* Maintenance of the tuning database for the public kda_db API (and so for
 * kda-tune): listing cubins, deleting rows by id. Same rules as store.h: a
 * kda__store is used by one thread at a time. */
#ifndef KDA_TUNER_STORE_ADMIN_H
#define KDA_TUNER_STORE_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

typedef struct kda__store_cubin_row {
  int64_t id;
  int32_t arch;
  const char *nvrtc_version, *options, *source_hash, *spec, *config, *sha256;
  int64_t size; /* the size column (bytes of the blob as written) */
  double compile_ms; /* < 0: unknown */
  int64_t created_at, last_used;
  const void *blob; /* only when listed with_blob; else NULL */
  size_t blob_size;
  int in_overlay;
} kda__store_cubin_row;

typedef int (*kda__store_cubin_fn)(void *user, const kda__store_cubin_row *row);

/* Calls fn for each cubin, the file's then the overlay's, ordered by arch,
 * spec, config, id. with_blob: also read each blob (one at a time). fn
 * returns nonzero to stop. Pointers are valid during the call only. */
kda_status kda__store_list_cubins(kda__store *store, int with_blob, kda__store_cubin_fn fn,
                                  void *user);

/* Deletes results (their trials cascade) / cubins of the file by id, in one
 * transaction. KDA_ERROR_READ_ONLY when the file is not written (a read-only
 * or overlay mode, or after a failed write). *deleted (may be NULL) gets
 * the rows removed. */
kda_status kda__store_delete_results(kda__store *store, const int64_t *ids, size_t n,
                                     int64_t *deleted);
kda_status kda__store_delete_cubins(kda__store *store, const int64_t *ids, size_t n,
                                    int64_t *deleted);

#endif
