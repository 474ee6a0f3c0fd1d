/* kda_db_provenance_get: where a result comes from (host, driver, what ran
 * the tuning), kept in columns of its row that the public record leaves
 * out (kda_db_record's layout is fixed: callers copy it by value). */
#include <string.h>

#include "db_internal.h"
#include "error.h"

kda_status kda__db_provenance(kda_db *db, const kda_db_record *r, kda__store_record *rec,
                              int *found) {
  kda__store_key key = {r->gpu_key, r->kernel, r->spec, r->bucket, r->template_hash,
                        r->space_hash};
  memset(rec, 0, sizeof *rec);
  *found = 0;
  return kda__store_lookup_result(db->store, &key, found, rec);
}

kda_status kda_db_provenance_get(kda_db *db, const kda_db_record *record,
                                 kda_db_provenance *out) {
  KDA__REQUIRE(db != NULL && record != NULL && out != NULL, KDA_ERROR_NULL_POINTER,
               "kda_db_provenance_get: NULL argument");
  KDA__REQUIRE(out->struct_size == sizeof *out, KDA_ERROR_BAD_OPTIONS,
               "kda_db_provenance_get: kda_db_provenance.struct_size is %u, expected %zu",
               out->struct_size, sizeof *out);
  memset(out, 0, sizeof *out);
  out->struct_size = sizeof *out;
  kda__store_record rec;
  int found = 0;
  KDA__TRY(kda__db_provenance(db, record, &rec, &found));
  KDA__REQUIRE(found, KDA_ERROR_INVALID_ARGUMENT,
               "kda_db_provenance_get: no result has the key of record %.16s any more",
               record->key);
  kda__db_copy(out->host, sizeof out->host, rec.host);
  kda__db_copy(out->driver, sizeof out->driver, rec.driver);
  kda__db_copy(out->source, sizeof out->source, rec.source);
  return KDA_OK;
}
