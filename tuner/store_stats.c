/* Counts for the CLI's `kda-tune stats`: sizes and rows of the file and of
 * the in-memory overlay. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "store_internal.h"

static int64_t file_size(const char *path, const char *suffix) {
  char name[PATH_MAX + 8];
  snprintf(name, sizeof name, "%s%s", path, suffix);
  struct stat st;
  return stat(name, &st) == 0 ? (int64_t)st.st_size : 0;
}

/* Fills out[0..n) from one row of integer columns. */
static int counts_in(sqlite3 *db, const char *sql, int64_t *out[], int n) {
  sqlite3_stmt *st = NULL;
  int rc = kda__store_prepare(db, sql, &st);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      for (int i = 0; i < n; i++) *out[i] = sqlite3_column_int64(st, i);
      rc = SQLITE_OK;
    }
  }
  sqlite3_finalize(st);
  return rc;
}

kda_status kda__store_get_stats(kda__store *s, kda__store_stats *out) {
  KDA__REQUIRE(s != NULL && out != NULL, KDA_ERROR_NULL_POINTER, "kda__store_get_stats: NULL");
  memset(out, 0, sizeof *out);
  out->schema_version = s->schema_version;
  out->mode = s->mode;
  if (s->path[0] != '\0' && s->db != NULL) {
    out->file_bytes = file_size(s->path, "") + file_size(s->path, "-wal");
  }
  if (s->mem != NULL) {
    int64_t *o[] = {&out->overlay_results, &out->overlay_cubins};
    int rc = counts_in(s->mem, "SELECT (SELECT count(*) FROM results), (SELECT count(*) FROM cubins)", o, 2);
    if (rc != SQLITE_OK) return kda__store_fail(s, s->mem, rc, "counting rows");
  }
  if (!kda__store_file_readable(s)) return KDA_OK;
  int64_t *f[] = {&out->gpus, &out->results, &out->trials, &out->cubins, &out->cubin_bytes, &out->leases};
  int rc = counts_in(s->db,
                     "SELECT (SELECT count(*) FROM gpu_models), (SELECT count(*) FROM results),"
                     " (SELECT count(*) FROM trials), (SELECT count(*) FROM cubins),"
                     " (SELECT coalesce(sum(size), 0) FROM cubins), (SELECT count(*) FROM leases)",
                     f, 6);
  if (rc == SQLITE_OK) return KDA_OK;
  kda__store_read_failed(s, rc);
  return kda__store_fail(s, s->db, rc, "counting rows");
}

static int counts_by_kernel(sqlite3 *db, int in_overlay, kda__store_count_fn fn, void *user,
                            int *stop) {
  sqlite3_stmt *st = NULL;
  int rc = kda__store_prepare(db,
                              "SELECT gpu_key, kernel, count(*) FROM results"
                              " GROUP BY gpu_key, kernel ORDER BY gpu_key, kernel",
                              &st);
  while (rc == SQLITE_OK && !*stop) {
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) break;
    rc = SQLITE_OK;
    *stop = fn(user, (const char *)sqlite3_column_text(st, 0),
               (const char *)sqlite3_column_text(st, 1), sqlite3_column_int64(st, 2),
               in_overlay) != 0;
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

kda_status kda__store_result_counts(kda__store *s, kda__store_count_fn fn, void *user) {
  KDA__REQUIRE(s != NULL && fn != NULL, KDA_ERROR_NULL_POINTER, "kda__store_result_counts: NULL");
  int stop = 0;
  if (kda__store_file_readable(s)) {
    int rc = counts_by_kernel(s->db, 0, fn, user, &stop);
    if (rc != SQLITE_OK) {
      kda__store_read_failed(s, rc);
      return kda__store_fail(s, s->db, rc, "counting results");
    }
  }
  if (s->mem != NULL && !stop) {
    int rc = counts_by_kernel(s->mem, 1, fn, user, &stop);
    if (rc != SQLITE_OK) return kda__store_fail(s, s->mem, rc, "counting results");
  }
  return KDA_OK;
}
