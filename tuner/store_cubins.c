/* Compiled cubins, checked against their sha256 on every read (a cubin is
 * code the process will load and run: a row that does not match what was
 * written is never returned), with least-recently-used eviction. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "sha256.h"
#include "store_internal.h"

/* last_used is refreshed at most this often, so a warm start that reads
 * many cubins does not take the write lock for each. */
#define KDA__TOUCH_EVERY_S 60

#define KDA__CUBIN_WHERE                                                  \
  " WHERE arch = ?1 AND nvrtc_version = ?2 AND options = ?3 AND source_hash = ?4" \
  " AND spec = ?5 AND config = ?6"

/* The same cubin compiled by another NVRTC build of the same major version
 * ("13." of "13.0 build-id=..."): the same release (major.minor) first,
 * then the most recently used. The key's text is "<major>.<minor> <build>"
 * (tuner_keys.c). No index serves this; it runs only where the exact
 * lookup missed, in place of a compile. */
#define KDA__CUBIN_OTHER_BUILD_WHERE                                                   \
  " WHERE arch = ?1 AND nvrtc_version != ?2 AND instr(?2, '.') > 0"                    \
  " AND substr(nvrtc_version, 1, instr(?2, '.')) = substr(?2, 1, instr(?2, '.'))"    \
  " AND options = ?3 AND source_hash = ?4 AND spec = ?5 AND config = ?6"              \
  " ORDER BY substr(nvrtc_version, 1, instr(?2, ' ')) = substr(?2, 1, instr(?2, ' '))" \
  " DESC, last_used DESC, id DESC LIMIT 1"

static int cubin_key_ok(const kda__cubin_key *k) {
  return k != NULL && k->nvrtc_version != NULL && k->options != NULL && k->source_hash != NULL &&
         k->spec != NULL && k->config != NULL;
}

static int bind_cubin_key(sqlite3_stmt *st, const kda__cubin_key *k) {
  int rc = sqlite3_bind_int(st, 1, k->arch);
  if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 2, k->nvrtc_version);
  if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 3, k->options);
  if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 4, k->source_hash);
  if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 5, k->spec);
  if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 6, k->config);
  return rc;
}

static void sha256_hex_of(const void *data, size_t size, char hex[65]) {
  unsigned char digest[32];
  kda__sha256(data, size, digest);
  kda__sha256_hex(digest, hex);
}

/* ------------------------------------------------------------ small writes */

typedef struct row_write {
  const char *sql;
  int64_t id;
  int64_t value;
  const char *text;
} row_write;

/* Runs sql with ?1 = id, ?2 = value, ?3 = text. */
static kda_status row_write_in(kda__store *s, sqlite3 *db, void *ctx) {
  const row_write *w = ctx;
  sqlite3_stmt *st = NULL;
  int rc = kda__store_prepare(db, w->sql, &st);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 1, w->id);
  if (rc == SQLITE_OK && sqlite3_bind_parameter_count(st) >= 2) rc = sqlite3_bind_int64(st, 2, w->value);
  if (rc == SQLITE_OK && sqlite3_bind_parameter_count(st) >= 3) rc = kda__store_bind_text(st, 3, w->text);
  if (rc == SQLITE_OK) rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
  sqlite3_finalize(st);
  return rc == SQLITE_OK ? KDA_OK : kda__store_fail(s, db, rc, "updating a cubin");
}

/* db can take maintenance writes (deleting a bad row, touching): the
 * overlay always, the file only in READ_WRITE mode and not degraded. */
static int maintainable(const kda__store *s, sqlite3 *db) {
  return db == s->mem || (db == s->db && !kda__store_is_read_only(s));
}

/* ----------------------------------------------------------------- lookup */

/* Where a lookup looks, and what it tells of the row it found. */
typedef struct cubin_query {
  int other_build;  /* KDA__CUBIN_OTHER_BUILD_WHERE instead of the exact key */
  char *built_by;   /* receives the row's nvrtc_version (other_build only) */
  size_t built_by_size;
} cubin_query;

/* 1 hit, 0 miss (or tampered), or -(SQLite code) on an error. */
static int lookup_cubin_in(kda__store *s, sqlite3 *db, const kda__cubin_key *key,
                           const cubin_query *q, void **blob, size_t *size, int *tampered) {
  sqlite3_stmt *st = NULL;
  int rc = kda__store_prepare(
      db,
      q->other_build
          ? "SELECT id, blob, sha256, size, last_used, nvrtc_version FROM cubins" KDA__CUBIN_OTHER_BUILD_WHERE
          : "SELECT id, blob, sha256, size, last_used, nvrtc_version FROM cubins" KDA__CUBIN_WHERE,
      &st);
  if (rc == SQLITE_OK) rc = bind_cubin_key(st, key);
  if (rc == SQLITE_OK) rc = sqlite3_step(st);
  if (rc != SQLITE_ROW) {
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -rc;
  }
  int64_t id = sqlite3_column_int64(st, 0);
  const void *bytes = sqlite3_column_blob(st, 1);
  size_t n = (size_t)sqlite3_column_bytes(st, 1);
  const char *want = (const char *)sqlite3_column_text(st, 2);
  char stored_sha[65];
  snprintf(stored_sha, sizeof stored_sha, "%s", want != NULL ? want : "");
  int64_t stored_size = sqlite3_column_int64(st, 3);
  int64_t last_used = sqlite3_column_int64(st, 4);
  if (q->built_by != NULL && q->built_by_size > 0) {
    const char *by = (const char *)sqlite3_column_text(st, 5);
    snprintf(q->built_by, q->built_by_size, "%s", by != NULL ? by : "");
  }
  char got[65];
  sha256_hex_of(bytes != NULL ? bytes : "", n, got);
  int good = strcmp(got, stored_sha) == 0 && stored_size == (int64_t)n && n > 0;
  void *copy = good ? malloc(n) : NULL;
  if (copy != NULL) memcpy(copy, bytes, n);
  sqlite3_finalize(st);
  if (!good) {
    *tampered = 1;
    kda__store_warn(s, KDA__WARN_TAMPERED,
                    "kda: a cubin in the tuning database %s did not match its sha256; it was "
                    "ignored%s and will be compiled again",
                    s->path, maintainable(s, db) ? " and deleted" : "");
    if (maintainable(s, db)) {
      /* Only the row we judged (same id and stored hash): another process
       * may have replaced it with a good one meanwhile. */
      row_write w = {"DELETE FROM cubins WHERE id = ?1 AND sha256 = ?3", id, 0, stored_sha};
      kda__store_try_write(s, db, "deleting a tampered cubin", row_write_in, &w);
    }
    return 0;
  }
  if (copy == NULL) return -SQLITE_NOMEM;
  int64_t now = (int64_t)kda__store_now();
  if (now - last_used >= KDA__TOUCH_EVERY_S && maintainable(s, db)) {
    row_write w = {"UPDATE cubins SET last_used = ?2 WHERE id = ?1", id, now, NULL};
    /* Best effort, and never a wait: this is a warm call's first load. */
    kda__store_try_write(s, db, "touching a cubin", row_write_in, &w);
  }
  *blob = copy;
  *size = n;
  return 1;
}

static kda_status lookup_cubin(kda__store *s, const kda__cubin_key *key, const cubin_query *q,
                               int *found, void **blob, size_t *size, int *tampered) {
  KDA__REQUIRE(s != NULL && found != NULL && blob != NULL && size != NULL && cubin_key_ok(key),
               KDA_ERROR_NULL_POINTER, "kda__store_lookup_cubin: NULL argument or key field");
  int ignored = 0;
  if (tampered == NULL) tampered = &ignored;
  *found = 0;
  *tampered = 0;
  *blob = NULL;
  *size = 0;
  if (s->mem != NULL) {
    int r = lookup_cubin_in(s, s->mem, key, q, blob, size, tampered);
    if (r < 0) {
      if (-r == SQLITE_NOMEM) return kda__fail(KDA_ERROR_OUT_OF_MEMORY, "cubin copy: out of memory");
      return kda__store_fail(s, s->mem, -r, "reading a cubin");
    }
    if (r == 1 || *tampered) {
      *found = r == 1;
      return KDA_OK;
    }
  }
  if (!kda__store_file_readable(s)) return KDA_OK;
  int r = lookup_cubin_in(s, s->db, key, q, blob, size, tampered);
  if (r >= 0) {
    *found = r == 1;
    return KDA_OK;
  }
  if (-r == SQLITE_NOMEM) return kda__fail(KDA_ERROR_OUT_OF_MEMORY, "cubin copy: out of memory");
  if (s->schema_version > KDA__STORE_SCHEMA_VERSION && -r == SQLITE_ERROR) return KDA_OK;
  kda__store_read_failed(s, -r);
  return kda__store_fail(s, s->db, -r, "reading a cubin");
}

kda_status kda__store_lookup_cubin(kda__store *s, const kda__cubin_key *key, int *found,
                                   void **blob, size_t *size, int *tampered) {
  const cubin_query q = {0, NULL, 0};
  return lookup_cubin(s, key, &q, found, blob, size, tampered);
}

kda_status kda__store_lookup_cubin_other_build(kda__store *s, const kda__cubin_key *key,
                                               int *found, void **blob, size_t *size,
                                               int *tampered, char *built_by,
                                               size_t built_by_size) {
  if (built_by != NULL && built_by_size > 0) built_by[0] = '\0';
  const cubin_query q = {1, built_by, built_by_size};
  return lookup_cubin(s, key, &q, found, blob, size, tampered);
}

/* -------------------------------------------------------------- put/evict */

/* Deletes least recently used cubins past max_bytes, never keep_id.
 * Newest first: the running total says which rows no longer fit. */
static int evict_in(sqlite3 *db, int64_t max_bytes, int64_t keep_id, int64_t *evicted) {
  sqlite3_stmt *st = NULL;
  int rc = kda__store_prepare(db,
                              "DELETE FROM cubins WHERE id IN (SELECT id FROM (SELECT id,"
                              " sum(size) OVER (ORDER BY id = ?2 DESC, last_used DESC, id DESC)"
                              " AS total FROM cubins) WHERE total > ?1 AND id != ?2)",
                              &st);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 1, max_bytes);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 2, keep_id);
  if (rc == SQLITE_OK) rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
  if (rc == SQLITE_OK && evicted != NULL) *evicted = sqlite3_changes(db);
  sqlite3_finalize(st);
  return rc;
}

typedef struct cubin_put {
  const kda__cubin_key *key;
  const void *blob;
  size_t size;
  double compile_ms;
  const char *sha;
  int64_t cap;
} cubin_put;

static kda_status put_cubin_in(kda__store *s, sqlite3 *db, void *ctx) {
  const cubin_put *p = ctx;
  int64_t now = (int64_t)kda__store_now();
  sqlite3_stmt *st = NULL;
  int rc = kda__store_prepare(
      db,
      "INSERT INTO cubins(arch, nvrtc_version, options, source_hash, spec, config, blob, sha256,"
      " size, compile_ms, created_at, last_used) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,"
      " ?11, ?11) ON CONFLICT(arch, nvrtc_version, options, source_hash, spec, config) DO UPDATE"
      " SET blob = excluded.blob, sha256 = excluded.sha256, size = excluded.size,"
      " compile_ms = excluded.compile_ms, created_at = excluded.created_at,"
      " last_used = excluded.last_used",
      &st);
  if (rc == SQLITE_OK) rc = bind_cubin_key(st, p->key);
  if (rc == SQLITE_OK) rc = sqlite3_bind_blob64(st, 7, p->blob, p->size, SQLITE_STATIC);
  if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 8, p->sha);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 9, (int64_t)p->size);
  if (rc == SQLITE_OK) rc = kda__store_bind_opt(st, 10, p->compile_ms);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 11, now);
  if (rc == SQLITE_OK) rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
  sqlite3_finalize(st);
  st = NULL;
  if (rc == SQLITE_OK && p->cap > 0) {
    int64_t id = -1;
    rc = kda__store_prepare(db, "SELECT id FROM cubins" KDA__CUBIN_WHERE, &st);
    if (rc == SQLITE_OK) rc = bind_cubin_key(st, p->key);
    if (rc == SQLITE_OK) {
      rc = sqlite3_step(st);
      if (rc == SQLITE_ROW) id = sqlite3_column_int64(st, 0);
      rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_OK) rc = evict_in(db, p->cap, id, NULL);
  }
  return rc == SQLITE_OK ? KDA_OK : kda__store_fail(s, db, rc, "writing a cubin");
}

kda_status kda__store_put_cubin(kda__store *s, const kda__cubin_key *key, const void *blob,
                                size_t size, double compile_ms) {
  KDA__REQUIRE(s != NULL && blob != NULL && cubin_key_ok(key), KDA_ERROR_NULL_POINTER,
               "kda__store_put_cubin: NULL argument or key field");
  KDA__REQUIRE(size > 0 && size <= (size_t)0x7fffffff, KDA_ERROR_INVALID_ARGUMENT,
               "kda__store_put_cubin: size %zu out of range", size);
  char sha[65];
  sha256_hex_of(blob, size, sha);
  cubin_put p = {key, blob, size, compile_ms, sha, s->cubin_cap};
  return kda__store_write(s, NULL, "writing a cubin", put_cubin_in, &p);
}

kda_status kda__store_touch_cubin(kda__store *s, const kda__cubin_key *key) {
  KDA__REQUIRE(s != NULL && cubin_key_ok(key), KDA_ERROR_NULL_POINTER, "kda__store_touch_cubin: NULL");
  sqlite3 *db = kda__store_writer(s);
  if (db == NULL) return KDA_ERROR_STORE;
  sqlite3_stmt *st = NULL;
  int rc = kda__store_prepare(db, "UPDATE cubins SET last_used = ?7" KDA__CUBIN_WHERE, &st);
  if (rc == SQLITE_OK) rc = bind_cubin_key(st, key);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 7, (int64_t)kda__store_now());
  if (rc == SQLITE_OK) rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
  sqlite3_finalize(st);
  /* One autocommit statement: busy_timeout covers its lock. */
  return rc == SQLITE_OK ? KDA_OK : kda__store_fail(s, db, rc, "touching a cubin");
}

void kda__store_set_cubin_cap(kda__store *s, int64_t bytes) {
  if (s != NULL) s->cubin_cap = bytes > 0 ? bytes : 0;
}

typedef struct evict_ctx {
  int64_t max_bytes, evicted;
} evict_ctx;

static kda_status evict_cb(kda__store *s, sqlite3 *db, void *ctx) {
  evict_ctx *e = ctx;
  int rc = evict_in(db, e->max_bytes, -1, &e->evicted);
  return rc == SQLITE_OK ? KDA_OK : kda__store_fail(s, db, rc, "evicting cubins");
}

kda_status kda__store_evict_cubins(kda__store *s, int64_t max_bytes, int64_t *evicted) {
  KDA__REQUIRE(s != NULL, KDA_ERROR_NULL_POINTER, "kda__store_evict_cubins: NULL store");
  if (evicted != NULL) *evicted = 0;
  evict_ctx e = {max_bytes < 0 ? 0 : max_bytes, 0};
  kda_status st = kda__store_write(s, kda__store_writer(s), "evicting cubins", evict_cb, &e);
  if (evicted != NULL) *evicted = e.evicted;
  return st;
}
