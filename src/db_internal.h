/* What the files behind the public kda_db API (include/kda/kda_db.h) share:
 * the handle, row conversion from the store's records and filtering. */
#ifndef KDA_SRC_DB_INTERNAL_H
#define KDA_SRC_DB_INTERNAL_H

#include <string.h>

#include "kda/kda_db.h"
#include "store.h"
#include "store_admin.h"

struct kda_db {
  kda__store *store;
  int memory_requested; /* ":memory:" */
  int have_current;
  kda_db_versions current; /* computed on first need */
  char warning[8192];
};

/* The running library's versions (computed once per handle). */
const kda_db_versions *kda__db_current(kda_db *db);

/* The store's row of r (its provenance columns), by key; *found 0 when no
 * row has that key (db_provenance.c). */
kda_status kda__db_provenance(kda_db *db, const kda_db_record *r, kda__store_record *rec,
                              int *found);

/* Store row -> public record (GPU name looked up, spec parsed, staleness
 * against the running library). */
void kda__db_record_from(kda_db *db, const kda__store_key *key, const kda__store_record *rec,
                         kda_db_record *out);

/* 1 if r passes f (NULL passes everything); now is unix seconds. */
int kda__db_match(const kda_db_filter *f, const kda_db_record *r, int64_t now);

/* Validated copy of a caller's filter (defaults when f is NULL). */
kda_status kda__db_filter_copy(const kda_db_filter *f, kda_db_filter *out);

/* Store cubin row -> public cubin (staleness against the running library). */
void kda__db_cubin_from(kda_db *db, const kda__store_cubin_row *row, kda_db_cubin *out);

/* Iterates matching records into a malloc'd array (*out, *n); the caller
 * frees it. Needed where the callback would otherwise touch the store
 * while a statement is still open. */
kda_status kda__db_collect(kda_db *db, const kda_db_filter *f, kda_db_record **out, size_t *n);

/* Copies src (NULL: "") into dst, truncating to size - 1 bytes. */
static inline void kda__db_copy(char *dst, size_t size, const char *src) {
  size_t n = 0;
  if (src != NULL)
    while (n + 1 < size && src[n] != '\0') n++;
  if (n > 0) memcpy(dst, src, n);
  dst[n] = '\0';
}

/* Unix seconds now. */
int64_t kda__db_now(void);

#endif
