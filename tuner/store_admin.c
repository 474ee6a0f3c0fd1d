/* Listing cubins and deleting rows by id: what `kda-tune stats`, `verify`
 * and `purge` need beyond the tuner's own lookups and puts. */
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "store_admin.h"
#include "store_internal.h"

static double column_opt(sqlite3_stmt *st, int col) {
  return sqlite3_column_type(st, col) == SQLITE_NULL ? -1.0 : sqlite3_column_double(st, col);
}

static int list_cubins_in(sqlite3 *db, int in_overlay, int with_blob, kda__store_cubin_fn fn,
                          void *user, int *stop) {
  sqlite3_stmt *st = NULL;
  int rc = kda__store_prepare(db,
                              with_blob
                                  ? "SELECT id, arch, nvrtc_version, options, source_hash, spec,"
                                    " config, sha256, size, compile_ms, created_at, last_used, blob"
                                    " FROM cubins ORDER BY arch, spec, config, id"
                                  : "SELECT id, arch, nvrtc_version, options, source_hash, spec,"
                                    " config, sha256, size, compile_ms, created_at, last_used"
                                    " FROM cubins ORDER BY arch, spec, config, id",
                              &st);
  while (rc == SQLITE_OK && !*stop) {
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) break;
    rc = SQLITE_OK;
    kda__store_cubin_row r;
    memset(&r, 0, sizeof r);
    r.id = sqlite3_column_int64(st, 0);
    r.arch = sqlite3_column_int(st, 1);
    r.nvrtc_version = (const char *)sqlite3_column_text(st, 2);
    r.options = (const char *)sqlite3_column_text(st, 3);
    r.source_hash = (const char *)sqlite3_column_text(st, 4);
    r.spec = (const char *)sqlite3_column_text(st, 5);
    r.config = (const char *)sqlite3_column_text(st, 6);
    r.sha256 = (const char *)sqlite3_column_text(st, 7);
    r.size = sqlite3_column_int64(st, 8);
    r.compile_ms = column_opt(st, 9);
    r.created_at = sqlite3_column_int64(st, 10);
    r.last_used = sqlite3_column_int64(st, 11);
    if (with_blob) {
      r.blob = sqlite3_column_blob(st, 12);
      r.blob_size = (size_t)sqlite3_column_bytes(st, 12);
    }
    r.in_overlay = in_overlay;
    *stop = fn(user, &r) != 0;
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

kda_status kda__store_list_cubins(kda__store *s, int with_blob, kda__store_cubin_fn fn,
                                  void *user) {
  KDA__REQUIRE(s != NULL && fn != NULL, KDA_ERROR_NULL_POINTER, "kda__store_list_cubins: NULL");
  int stop = 0;
  if (kda__store_file_readable(s)) {
    int rc = list_cubins_in(s->db, 0, with_blob, fn, user, &stop);
    if (rc != SQLITE_OK) {
      kda__store_read_failed(s, rc);
      return kda__store_fail(s, s->db, rc, "listing cubins");
    }
  }
  if (s->mem != NULL && !stop) {
    int rc = list_cubins_in(s->mem, 1, with_blob, fn, user, &stop);
    if (rc != SQLITE_OK) return kda__store_fail(s, s->mem, rc, "listing cubins");
  }
  return KDA_OK;
}

typedef struct delete_job {
  const char *sql;
  const int64_t *ids;
  size_t n;
  int64_t deleted;
} delete_job;

static kda_status delete_in(kda__store *s, sqlite3 *db, void *ctx) {
  delete_job *j = ctx;
  sqlite3_stmt *st = NULL;
  int rc = kda__store_prepare(db, j->sql, &st);
  for (size_t i = 0; rc == SQLITE_OK && i < j->n; i++) {
    sqlite3_reset(st);
    rc = sqlite3_bind_int64(st, 1, j->ids[i]);
    if (rc == SQLITE_OK) rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
    if (rc == SQLITE_OK) j->deleted += sqlite3_changes(db);
  }
  sqlite3_finalize(st);
  return rc == SQLITE_OK ? KDA_OK : kda__store_fail(s, db, rc, "deleting rows");
}

static kda_status delete_ids(kda__store *s, const char *sql, const int64_t *ids, size_t n,
                             int64_t *deleted) {
  if (deleted != NULL) *deleted = 0;
  KDA__REQUIRE(s != NULL && (ids != NULL || n == 0), KDA_ERROR_NULL_POINTER,
               "kda__store_delete: NULL");
  KDA__REQUIRE(!kda__store_is_read_only(s) && s->db != NULL, KDA_ERROR_READ_ONLY,
               "the tuning database %s is open read-only; nothing was deleted",
               s->path[0] ? s->path : "(in memory)");
  if (n == 0) return KDA_OK;
  delete_job j = {sql, ids, n, 0};
  /* db given: a failed delete must not be retried on the overlay. */
  kda_status st = kda__store_write(s, s->db, "deleting rows", delete_in, &j);
  if (st == KDA_OK && deleted != NULL) *deleted = j.deleted;
  return st;
}

kda_status kda__store_delete_results(kda__store *s, const int64_t *ids, size_t n,
                                     int64_t *deleted) {
  return delete_ids(s, "DELETE FROM results WHERE id = ?1", ids, n, deleted);
}

kda_status kda__store_delete_cubins(kda__store *s, const int64_t *ids, size_t n,
                                    int64_t *deleted) {
  return delete_ids(s, "DELETE FROM cubins WHERE id = ?1", ids, n, deleted);
}
