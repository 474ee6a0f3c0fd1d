/* Tuned results, their trials and the GPU rows they hang from. Lookups read
 * the overlay first (its rows are this process's newest), then the file. */
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "store_internal.h"

static const char *const kda__trial_names[] = {"ok", "rejected", "compile_failed",
                                               "launch_failed", "wrong_result", "unwritten"};
#define KDA__TRIAL_NAMES (sizeof kda__trial_names / sizeof kda__trial_names[0])

const char *kda__trial_status_name(kda__trial_status status) {
  return (unsigned)status < KDA__TRIAL_NAMES ? kda__trial_names[status] : NULL;
}

static kda__trial_status trial_status_from(const char *name) {
  for (unsigned i = 0; name != NULL && i < KDA__TRIAL_NAMES; i++) {
    if (strcmp(name, kda__trial_names[i]) == 0) return (kda__trial_status)i;
  }
  return KDA__TRIAL_REJECTED; /* unknown text from a newer writer */
}

static void copy_text(char *dst, size_t size, const unsigned char *text) {
  kda__store_copy_utf8(dst, size, text != NULL ? (const char *)text : "");
}

void kda__store_copy_utf8(char *dst, size_t size, const char *text) {
  if (size == 0) return;
  size_t n = strlen(text);
  if (n >= size) {
    n = size - 1;
    /* Not in the middle of a character: back over continuation bytes and
     * the lead byte of the one cut short. */
    size_t k = n;
    while (k > 0 && ((unsigned char)text[k] & 0xC0) == 0x80) --k;
    if (k < n || ((unsigned char)text[n] & 0xC0) == 0x80) n = k;
  }
  memcpy(dst, text, n);
  dst[n] = '\0';
}

/* A file of before the provenance columns: SQLite says "no such column"
 * to a SELECT, "table results has no column named" to an INSERT. Any
 * other failure is one. */
static int no_such_column(sqlite3 *db, int rc) {
  const char *m = sqlite3_errmsg(db);
  return rc == SQLITE_ERROR &&
         (strstr(m, "no such column") != NULL || strstr(m, "has no column named") != NULL);
}

static double column_opt(sqlite3_stmt *st, int col) {
  return sqlite3_column_type(st, col) == SQLITE_NULL ? -1.0 : sqlite3_column_double(st, col);
}

/* ------------------------------------------------------------------- gpus */

typedef struct gpu_put {
  const char *gpu_key, *name;
  double copy_bw_gbps;
} gpu_put;

static kda_status put_gpu_in(kda__store *s, sqlite3 *db, void *ctx) {
  const gpu_put *g = ctx;
  sqlite3_stmt *st = NULL;
  int rc = kda__store_prepare(db,
                              "INSERT INTO gpu_models(gpu_key, name, copy_bw_gbps) VALUES(?1, ?2, ?3)"
                              " ON CONFLICT(gpu_key) DO UPDATE SET"
                              " name = coalesce(excluded.name, name),"
                              " copy_bw_gbps = coalesce(excluded.copy_bw_gbps, copy_bw_gbps)",
                              &st);
  if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 1, g->gpu_key);
  if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 2, g->name);
  if (rc == SQLITE_OK) rc = kda__store_bind_opt(st, 3, g->copy_bw_gbps);
  if (rc == SQLITE_OK) rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
  kda_status status = rc == SQLITE_OK ? KDA_OK : kda__store_fail(s, db, rc, "writing a GPU");
  sqlite3_finalize(st);
  return status;
}

kda_status kda__store_put_gpu(kda__store *s, const char *gpu_key, const char *name,
                              double copy_bw_gbps) {
  KDA__REQUIRE(s != NULL && gpu_key != NULL, KDA_ERROR_NULL_POINTER, "kda__store_put_gpu: NULL");
  gpu_put g = {gpu_key, name, copy_bw_gbps};
  return kda__store_write(s, NULL, "writing a GPU", put_gpu_in, &g);
}

static int lookup_gpu_in(sqlite3 *db, const char *gpu_key, int *found, char *name,
                         size_t name_size, double *bw) {
  sqlite3_stmt *st = NULL;
  int rc = kda__store_prepare(db, "SELECT name, copy_bw_gbps FROM gpu_models WHERE gpu_key = ?1",
                              &st);
  if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 1, gpu_key);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      *found = 1;
      if (name != NULL && name_size > 0) copy_text(name, name_size, sqlite3_column_text(st, 0));
      if (bw != NULL) *bw = column_opt(st, 1);
    }
    rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
  }
  sqlite3_finalize(st);
  return rc;
}

kda_status kda__store_lookup_gpu(kda__store *s, const char *gpu_key, int *found, char *name,
                                 size_t name_size, double *copy_bw_gbps) {
  KDA__REQUIRE(s != NULL && gpu_key != NULL && found != NULL, KDA_ERROR_NULL_POINTER,
               "kda__store_lookup_gpu: NULL");
  *found = 0;
  if (s->mem != NULL) {
    int rc = lookup_gpu_in(s->mem, gpu_key, found, name, name_size, copy_bw_gbps);
    if (rc != SQLITE_OK) return kda__store_fail(s, s->mem, rc, "reading a GPU");
    if (*found) return KDA_OK;
  }
  if (!kda__store_file_readable(s)) return KDA_OK;
  int rc = lookup_gpu_in(s->db, gpu_key, found, name, name_size, copy_bw_gbps);
  if (rc == SQLITE_OK) return KDA_OK;
  kda__store_read_failed(s, rc);
  return kda__store_fail(s, s->db, rc, "reading a GPU");
}

/* ---------------------------------------------------------------- results */

#define KDA__KEY_WHERE                                                              \
  " WHERE gpu_key = ?1 AND kernel = ?2 AND spec = ?3 AND bucket = ?4"              \
  " AND template_hash = ?5 AND space_hash = ?6"
#define KDA__RESULT_COLUMNS                                                         \
  "id, gpu_key, kernel, spec, bucket, template_hash, space_hash, config, config_id," \
  " median_us, gbps, max_err, candidates, rejected, heuristic_us, tune_ms, compile_ms," \
  " created_at, lib_version, nvrtc_version"
/* Provenance columns (store_schema.c: added outside the schema version). A
 * file without them (read-only, or busy when they were added) is read with
 * NULLs in their place, and written without them. */
#define KDA__PROVENANCE_COLUMNS ", host, driver, source"
#define KDA__NO_PROVENANCE ", NULL, NULL, NULL"

/* SELECT KDA__RESULT_COLUMNS and the provenance FROM results, then rest. */
static int prepare_select(sqlite3 *db, const char *rest, sqlite3_stmt **st) {
  char sql[1024];
  snprintf(sql, sizeof sql, "SELECT " KDA__RESULT_COLUMNS KDA__PROVENANCE_COLUMNS " FROM results%s",
           rest);
  int rc = kda__store_prepare(db, sql, st);
  if (!no_such_column(db, rc)) return rc;
  snprintf(sql, sizeof sql, "SELECT " KDA__RESULT_COLUMNS KDA__NO_PROVENANCE " FROM results%s",
           rest);
  return kda__store_prepare(db, sql, st);
}

static int bind_key(sqlite3_stmt *st, const kda__store_key *k) {
  int rc = kda__store_bind_text(st, 1, k->gpu_key);
  if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 2, k->kernel);
  if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 3, k->spec);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 4, k->bucket);
  if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 5, k->template_hash);
  if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 6, k->space_hash);
  return rc;
}

/* Reads a row selected with KDA__RESULT_COLUMNS. */
static void read_row(sqlite3_stmt *st, int in_overlay, kda__store_key *k, kda__store_record *r) {
  memset(r, 0, sizeof *r);
  r->id = sqlite3_column_int64(st, 0);
  if (k != NULL) {
    k->gpu_key = (const char *)sqlite3_column_text(st, 1);
    k->kernel = (const char *)sqlite3_column_text(st, 2);
    k->spec = (const char *)sqlite3_column_text(st, 3);
    k->bucket = sqlite3_column_int64(st, 4);
    k->template_hash = (const char *)sqlite3_column_text(st, 5);
    k->space_hash = (const char *)sqlite3_column_text(st, 6);
  }
  copy_text(r->config, sizeof r->config, sqlite3_column_text(st, 7));
  r->config_id = sqlite3_column_int64(st, 8);
  r->median_us = column_opt(st, 9);
  r->gbps = column_opt(st, 10);
  r->max_err = column_opt(st, 11);
  r->candidates = sqlite3_column_int64(st, 12);
  r->rejected = sqlite3_column_int64(st, 13);
  r->heuristic_us = column_opt(st, 14);
  r->tune_ms = column_opt(st, 15);
  r->compile_ms = column_opt(st, 16);
  r->created_at = sqlite3_column_int64(st, 17);
  copy_text(r->lib_version, sizeof r->lib_version, sqlite3_column_text(st, 18));
  copy_text(r->nvrtc_version, sizeof r->nvrtc_version, sqlite3_column_text(st, 19));
  copy_text(r->host, sizeof r->host, sqlite3_column_text(st, 20));
  copy_text(r->driver, sizeof r->driver, sqlite3_column_text(st, 21));
  copy_text(r->source, sizeof r->source, sqlite3_column_text(st, 22));
  r->in_overlay = in_overlay;
}

static int lookup_in(sqlite3 *db, int in_overlay, const kda__store_key *k, int *found,
                     kda__store_record *out) {
  sqlite3_stmt *st = NULL;
  int rc = prepare_select(db, KDA__KEY_WHERE, &st);
  if (rc == SQLITE_OK) rc = bind_key(st, k);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      *found = 1;
      read_row(st, in_overlay, NULL, out);
    }
    rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
  }
  sqlite3_finalize(st);
  return rc;
}

static int key_ok(const kda__store_key *k) {
  return k != NULL && k->gpu_key != NULL && k->kernel != NULL && k->spec != NULL &&
         k->template_hash != NULL && k->space_hash != NULL;
}

/* A file written by a newer library may have renamed what we query: its
 * rows are then invisible to us, which is a miss, not an error. */
static int newer_schema_mismatch(const kda__store *s, int rc) {
  return s->schema_version > KDA__STORE_SCHEMA_VERSION && rc == SQLITE_ERROR;
}

kda_status kda__store_lookup_result(kda__store *s, const kda__store_key *key, int *found,
                                    kda__store_record *out) {
  KDA__REQUIRE(s != NULL && found != NULL && out != NULL && key_ok(key), KDA_ERROR_NULL_POINTER,
               "kda__store_lookup_result: NULL argument or key field");
  *found = 0;
  if (s->mem != NULL) {
    int rc = lookup_in(s->mem, 1, key, found, out);
    if (rc != SQLITE_OK) return kda__store_fail(s, s->mem, rc, "reading a result");
    if (*found) return KDA_OK;
  }
  if (!kda__store_file_readable(s)) return KDA_OK;
  int rc = lookup_in(s->db, 0, key, found, out);
  if (rc == SQLITE_OK || newer_schema_mismatch(s, rc)) return KDA_OK;
  kda__store_read_failed(s, rc);
  return kda__store_fail(s, s->db, rc, "reading a result");
}

typedef struct result_put {
  const kda__store_key *key;
  const kda__store_record *rec;
  const kda__store_trial *trials;
  size_t num_trials;
  kda__put_mode mode;
  int stored;
} result_put;

static int insert_trials(sqlite3 *db, int64_t result_id, const kda__store_trial *t, size_t n) {
  sqlite3_stmt *st = NULL;
  int rc = kda__store_prepare(db,
                              "INSERT INTO trials(result_id, config, config_id, median_us, p10_us,"
                              " p90_us, status, reason) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                              &st);
  for (size_t i = 0; rc == SQLITE_OK && i < n; i++) {
    sqlite3_reset(st);
    rc = sqlite3_bind_int64(st, 1, result_id);
    if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 2, t[i].config);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 3, t[i].config_id);
    if (rc == SQLITE_OK) rc = kda__store_bind_opt(st, 4, t[i].median_us);
    if (rc == SQLITE_OK) rc = kda__store_bind_opt(st, 5, t[i].p10_us);
    if (rc == SQLITE_OK) rc = kda__store_bind_opt(st, 6, t[i].p90_us);
    if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 7, kda__trial_status_name(t[i].status));
    if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 8, t[i].reason);
    if (rc == SQLITE_OK) rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
  }
  sqlite3_finalize(st);
  return rc;
}

static int insert_result(sqlite3 *db, const kda__store_key *k, const kda__store_record *r,
                         int64_t *id) {
  sqlite3_stmt *st = NULL;
#define KDA__INSERT_RESULT                                                                      \
  "INSERT INTO results(gpu_key, kernel, spec, bucket, template_hash, space_hash, config,"        \
  " config_id, median_us, gbps, max_err, candidates, rejected, heuristic_us, tune_ms,"          \
  " compile_ms, created_at, lib_version, nvrtc_version"
#define KDA__INSERT_VALUES \
  " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19"
#define KDA__INSERT_WITH_PROVENANCE \
  KDA__INSERT_RESULT KDA__PROVENANCE_COLUMNS ")" KDA__INSERT_VALUES ", ?20, ?21, ?22)"
  int rc = kda__store_prepare(db, KDA__INSERT_WITH_PROVENANCE, &st);
  /* A file of before the columns, busy when it was opened: add them now,
   * inside this put's write transaction, so no row goes without them. */
  if (no_such_column(db, rc) && kda__store_add_provenance(db) == SQLITE_OK)
    rc = kda__store_prepare(db, KDA__INSERT_WITH_PROVENANCE, &st);
  const int with_provenance = rc == SQLITE_OK;
  if (no_such_column(db, rc)) /* could not add them: the row without */
    rc = kda__store_prepare(db, KDA__INSERT_RESULT ")" KDA__INSERT_VALUES ")", &st);
  if (rc == SQLITE_OK) rc = bind_key(st, k);
  if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 7, r->config);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 8, r->config_id);
  if (rc == SQLITE_OK) rc = kda__store_bind_opt(st, 9, r->median_us);
  if (rc == SQLITE_OK) rc = kda__store_bind_opt(st, 10, r->gbps);
  if (rc == SQLITE_OK) rc = kda__store_bind_opt(st, 11, r->max_err);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 12, r->candidates);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 13, r->rejected);
  if (rc == SQLITE_OK) rc = kda__store_bind_opt(st, 14, r->heuristic_us);
  if (rc == SQLITE_OK) rc = kda__store_bind_opt(st, 15, r->tune_ms);
  if (rc == SQLITE_OK) rc = kda__store_bind_opt(st, 16, r->compile_ms);
  if (rc == SQLITE_OK) {
    rc = sqlite3_bind_int64(st, 17, r->created_at > 0 ? r->created_at : (int64_t)kda__store_now());
  }
  if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 18, r->lib_version);
  if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 19, r->nvrtc_version);
  if (rc == SQLITE_OK && with_provenance) {
    rc = kda__store_bind_text(st, 20, r->host[0] ? r->host : NULL);
    if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 21, r->driver[0] ? r->driver : NULL);
    if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 22, r->source[0] ? r->source : NULL);
  }
  if (rc == SQLITE_OK) rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
  *id = sqlite3_last_insert_rowid(db);
  sqlite3_finalize(st);
  return rc;
}

/* 1 if an existing median beats (or equals) the new one, so FASTER keeps it. */
static int existing_wins(int found, const kda__store_record *old, const kda__store_record *rec) {
  return found && old->median_us >= 0 && !(rec->median_us >= 0 && rec->median_us < old->median_us);
}

static kda_status put_result_in(kda__store *s, sqlite3 *db, void *ctx) {
  result_put *p = ctx;
  p->stored = 0;
  kda__store_record old;
  int found = 0;
  int rc = lookup_in(db, 0, p->key, &found, &old);
  if (rc == SQLITE_OK && p->mode == KDA__PUT_FASTER && existing_wins(found, &old, p->rec)) {
    return KDA_OK;
  }
  sqlite3_stmt *st = NULL;
  if (rc == SQLITE_OK && found) {
    /* Trials go with it (ON DELETE CASCADE). */
    rc = kda__store_prepare(db, "DELETE FROM results WHERE id = ?1", &st);
    if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 1, old.id);
    if (rc == SQLITE_OK) rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
    sqlite3_finalize(st);
  }
  if (rc == SQLITE_OK) {
    rc = kda__store_prepare(db, "INSERT OR IGNORE INTO gpu_models(gpu_key) VALUES(?1)", &st);
    if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 1, p->key->gpu_key);
    if (rc == SQLITE_OK) rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
    sqlite3_finalize(st);
  }
  int64_t id = 0;
  if (rc == SQLITE_OK) rc = insert_result(db, p->key, p->rec, &id);
  if (rc == SQLITE_OK) rc = insert_trials(db, id, p->trials, p->num_trials);
  if (rc != SQLITE_OK) return kda__store_fail(s, db, rc, "writing a result");
  p->stored = 1;
  return KDA_OK;
}

kda_status kda__store_put_result(kda__store *s, const kda__store_key *key,
                                 const kda__store_record *record, const kda__store_trial *trials,
                                 size_t num_trials, kda__put_mode mode, int *stored) {
  if (stored != NULL) *stored = 0;
  KDA__REQUIRE(s != NULL && record != NULL && key_ok(key) && (trials != NULL || num_trials == 0),
               KDA_ERROR_NULL_POINTER, "kda__store_put_result: NULL argument or key field");
  KDA__REQUIRE(mode == KDA__PUT_REPLACE || mode == KDA__PUT_FASTER, KDA_ERROR_INVALID_ARGUMENT,
               "kda__store_put_result: unknown put mode %d", (int)mode);
  KDA__REQUIRE(memchr(record->config, '\0', sizeof record->config) != NULL &&
                   memchr(record->lib_version, '\0', sizeof record->lib_version) != NULL &&
                   memchr(record->nvrtc_version, '\0', sizeof record->nvrtc_version) != NULL,
               KDA_ERROR_INVALID_ARGUMENT, "kda__store_put_result: unterminated text in record");
  for (size_t i = 0; i < num_trials; i++) {
    KDA__REQUIRE(trials[i].config != NULL && kda__trial_status_name(trials[i].status) != NULL,
                 KDA_ERROR_INVALID_ARGUMENT,
                 "kda__store_put_result: trial %zu has no config or an unknown status %d", i,
                 (int)trials[i].status);
  }
  /* In an overlay mode FASTER must also beat the row the file shows. */
  if (mode == KDA__PUT_FASTER && kda__store_is_read_only(s) && kda__store_file_readable(s)) {
    kda__store_record old;
    int found = 0;
    if (lookup_in(s->db, 0, key, &found, &old) == SQLITE_OK && existing_wins(found, &old, record)) {
      return KDA_OK;
    }
  }
  result_put p = {key, record, trials, num_trials, mode, 0};
  kda_status st = kda__store_write(s, NULL, "writing a result", put_result_in, &p);
  if (stored != NULL) *stored = p.stored;
  return st;
}

/* ---------------------------------------------------------------- listing */

static int shadowed(sqlite3 *mem, const kda__store_key *k) {
  if (mem == NULL) return 0;
  sqlite3_stmt *st = NULL;
  int hit = 0;
  if (kda__store_prepare(mem, "SELECT 1 FROM results" KDA__KEY_WHERE, &st) == SQLITE_OK &&
      bind_key(st, k) == SQLITE_OK) {
    hit = sqlite3_step(st) == SQLITE_ROW;
  }
  sqlite3_finalize(st);
  return hit;
}

/* Lists one connection's rows; *stop set when fn asked to stop. */
static int list_in(sqlite3 *db, sqlite3 *shadow, int in_overlay, const char *gpu_key,
                   const char *kernel, kda__store_result_fn fn, void *user, int *stop) {
  sqlite3_stmt *st = NULL;
  int rc = prepare_select(db,
                          " WHERE (?1 IS NULL OR gpu_key = ?1) AND (?2 IS NULL OR kernel = ?2)"
                          " ORDER BY gpu_key, kernel, spec, bucket, id",
                          &st);
  if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 1, gpu_key);
  if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 2, kernel);
  while (rc == SQLITE_OK && !*stop) {
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) break;
    rc = SQLITE_OK;
    kda__store_key k;
    kda__store_record r;
    read_row(st, in_overlay, &k, &r);
    if (shadowed(shadow, &k)) continue;
    *stop = fn(user, &k, &r) != 0;
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

kda_status kda__store_list_results(kda__store *s, const char *gpu_key, const char *kernel,
                                   kda__store_result_fn fn, void *user) {
  KDA__REQUIRE(s != NULL && fn != NULL, KDA_ERROR_NULL_POINTER, "kda__store_list_results: NULL");
  int stop = 0;
  if (s->mem != NULL) {
    int rc = list_in(s->mem, NULL, 1, gpu_key, kernel, fn, user, &stop);
    if (rc != SQLITE_OK) return kda__store_fail(s, s->mem, rc, "listing results");
  }
  if (stop || !kda__store_file_readable(s)) return KDA_OK;
  int rc = list_in(s->db, s->mem, 0, gpu_key, kernel, fn, user, &stop);
  if (rc == SQLITE_OK || newer_schema_mismatch(s, rc)) return KDA_OK;
  kda__store_read_failed(s, rc);
  return kda__store_fail(s, s->db, rc, "listing results");
}

kda_status kda__store_list_trials(kda__store *s, const kda__store_record *record,
                                  kda__store_trial_fn fn, void *user) {
  KDA__REQUIRE(s != NULL && record != NULL && fn != NULL, KDA_ERROR_NULL_POINTER,
               "kda__store_list_trials: NULL");
  sqlite3 *db = record->in_overlay ? s->mem : (kda__store_file_readable(s) ? s->db : NULL);
  if (db == NULL) return KDA_OK;
  sqlite3_stmt *st = NULL;
  int rc = kda__store_prepare(db,
                              "SELECT config, config_id, median_us, p10_us, p90_us, status, reason"
                              " FROM trials WHERE result_id = ?1 ORDER BY id",
                              &st);
  if (rc == SQLITE_OK) rc = sqlite3_bind_int64(st, 1, record->id);
  while (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) break;
    rc = SQLITE_OK;
    kda__store_trial t = {
        .config = (const char *)sqlite3_column_text(st, 0),
        .config_id = sqlite3_column_int64(st, 1),
        .median_us = column_opt(st, 2),
        .p10_us = column_opt(st, 3),
        .p90_us = column_opt(st, 4),
        .status = trial_status_from((const char *)sqlite3_column_text(st, 5)),
        .reason = (const char *)sqlite3_column_text(st, 6),
    };
    if (fn(user, &t) != 0) break;
  }
  sqlite3_finalize(st);
  if (rc == SQLITE_OK || rc == SQLITE_DONE || rc == SQLITE_ROW) return KDA_OK;
  return kda__store_fail(s, db, rc, "listing trials");
}
