/* Schema of the tuning database and its forward migrations.
 *
 * PRAGMA user_version is the schema version. migrations[v] turns version v
 * into v + 1; opening a writable file runs the missing steps in one
 * BEGIN IMMEDIATE transaction (re-reading the version inside it, since
 * several processes may open an old file at once). A version above
 * KDA__STORE_SCHEMA_VERSION is left alone (store.c opens it read-only).
 *
 * Version 0 is either an empty file or the pre-release layout, which had
 * one table:
 *   results(gpu TEXT, kernel TEXT, spec TEXT, bucket INTEGER, config TEXT,
 *           median_us REAL, created_at INTEGER,
 *           PRIMARY KEY(gpu, kernel, spec, bucket))
 * Its rows are kept with empty template and space hashes: the tuner never
 * matches them (its hashes are never empty), the CLI can still show them. */
#include <stdio.h>

#include "store_internal.h"

static const char kda__schema_v1[] =
    "CREATE TABLE gpu_models("
    " gpu_key TEXT PRIMARY KEY," /* sm90-pci2330-sms132-l2_52428800 */
    " name TEXT,"
    " copy_bw_gbps REAL);"
    "CREATE TABLE results("
    " id INTEGER PRIMARY KEY,"
    " gpu_key TEXT NOT NULL REFERENCES gpu_models(gpu_key),"
    " kernel TEXT NOT NULL,"
    " spec TEXT NOT NULL,"
    " bucket INTEGER NOT NULL,"
    " template_hash TEXT NOT NULL,"
    " space_hash TEXT NOT NULL,"
    " config TEXT NOT NULL,"
    " config_id INTEGER,"
    " median_us REAL, gbps REAL, max_err REAL,"
    " candidates INTEGER, rejected INTEGER,"
    " heuristic_us REAL, tune_ms REAL, compile_ms REAL,"
    " created_at INTEGER NOT NULL,"
    " lib_version TEXT, nvrtc_version TEXT,"
    " UNIQUE(gpu_key, kernel, spec, bucket, template_hash, space_hash));"
    "CREATE INDEX results_by_kernel ON results(kernel, gpu_key);"
    "CREATE TABLE trials("
    " id INTEGER PRIMARY KEY,"
    " result_id INTEGER NOT NULL REFERENCES results(id) ON DELETE CASCADE,"
    " config TEXT NOT NULL,"
    " config_id INTEGER,"
    " median_us REAL, p10_us REAL, p90_us REAL,"
    " status TEXT NOT NULL CHECK(status IN ('ok','rejected','compile_failed',"
    "   'launch_failed','wrong_result','unwritten')),"
    " reason TEXT);"
    "CREATE INDEX trials_by_result ON trials(result_id);"
    "CREATE TABLE cubins("
    " id INTEGER PRIMARY KEY,"
    " arch INTEGER NOT NULL,"
    " nvrtc_version TEXT NOT NULL,"
    " options TEXT NOT NULL,"
    " source_hash TEXT NOT NULL,"
    " spec TEXT NOT NULL,"
    " config TEXT NOT NULL,"
    " blob BLOB NOT NULL,"
    " sha256 TEXT NOT NULL,"
    " size INTEGER NOT NULL,"
    " compile_ms REAL,"
    " created_at INTEGER NOT NULL,"
    " last_used INTEGER NOT NULL,"
    " UNIQUE(arch, nvrtc_version, options, source_hash, spec, config));"
    "CREATE INDEX cubins_by_last_used ON cubins(last_used);"
    "CREATE TABLE leases("
    " key TEXT PRIMARY KEY,"
    " holder TEXT NOT NULL," /* pid@hostname */
    " expires_at REAL NOT NULL);";

static int table_exists(sqlite3 *db, const char *name, int *exists) {
  sqlite3_stmt *st = NULL;
  int rc = kda__store_prepare(db, "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?1",
                              &st);
  if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 1, name);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    *exists = rc == SQLITE_ROW;
    rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
  }
  sqlite3_finalize(st);
  return rc;
}

static int migrate_0_to_1(sqlite3 *db) {
  int old = 0;
  int rc = table_exists(db, "results", &old);
  if (rc == SQLITE_OK && old) rc = sqlite3_exec(db, "ALTER TABLE results RENAME TO results_v0", NULL, NULL, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_exec(db, kda__schema_v1, NULL, NULL, NULL);
  if (rc == SQLITE_OK && old) {
    rc = sqlite3_exec(db,
                      "INSERT OR IGNORE INTO gpu_models(gpu_key) SELECT DISTINCT gpu FROM results_v0;"
                      "INSERT OR REPLACE INTO results(gpu_key, kernel, spec, bucket, template_hash,"
                      " space_hash, config, median_us, created_at)"
                      " SELECT gpu, kernel, spec, bucket, '', '', config, median_us,"
                      " coalesce(created_at, 0) FROM results_v0;"
                      "DROP TABLE results_v0;",
                      NULL, NULL, NULL);
  }
  return rc;
}

static int schema_apply(sqlite3 *db, int *found_version);

typedef int (*kda__migration)(sqlite3 *db);
/* migrations[v]: version v -> v + 1. Append a step with each new version. */
static const kda__migration kda__migrations[KDA__STORE_SCHEMA_VERSION] = {migrate_0_to_1};

int kda__store_schema_version_of(sqlite3 *db, int *version) {
  sqlite3_stmt *st = NULL;
  int rc = kda__store_prepare(db, "PRAGMA user_version", &st);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      *version = sqlite3_column_int(st, 0);
      rc = SQLITE_OK;
    }
  }
  sqlite3_finalize(st);
  return rc;
}

/* For whoever opens the file with sqlite3 while triaging: one readable
 * line per result (the GPU's name, the entry point, the bucket's token
 * range, % of copy, margin over the heuristic, the time in UTC). Not part
 * of the schema version: a library that does not know it ignores it, and
 * it is made (once) by any library that does, on a writable open. The
 * token ranges are kda__tune_bucket's (test_store checks them). */
static const char kda__results_readable[] =
    "CREATE VIEW IF NOT EXISTS results_readable AS SELECT r.id,"
    " coalesce(g.name, r.gpu_key) AS gpu,"
    " CASE WHEN r.kernel <> 'gate_cumsum' THEN r.kernel"
    "  WHEN r.spec LIKE '% cumsum=0 %' THEN 'gate'"
    "  WHEN r.spec LIKE '% gate=0 %' THEN 'chunk_local_cumsum'"
    "  ELSE 'gate_chunk_cumsum' END AS entry,"
    " CASE r.bucket WHEN 0 THEN '1-1023' WHEN 1 THEN '1024-4095' WHEN 2 THEN '4096-16383'"
    "  WHEN 3 THEN '16384-65535' ELSE '>=65536' END AS tokens,"
    " r.config, r.median_us, r.heuristic_us,"
    " round(r.heuristic_us / r.median_us, 3) AS vs_heuristic,"
    " r.gbps, round(100.0 * r.gbps / g.copy_bw_gbps, 1) AS pct_of_copy,"
    " r.candidates, r.rejected,"
    " (SELECT count(*) FROM trials t WHERE t.result_id = r.id) AS trials,"
    " r.tune_ms, r.compile_ms, datetime(r.created_at, 'unixepoch') AS tuned_utc,"
    " r.lib_version, r.nvrtc_version, r.spec, r.bucket, r.gpu_key, r.kernel,"
    " r.host AS tuned_on, r.driver, r.source"
    " FROM results r LEFT JOIN gpu_models g ON g.gpu_key = r.gpu_key";

/* Where each result comes from, added outside the schema version: a library
 * of before ignores the columns (its INSERTs name theirs; a row it writes
 * has NULLs: "unknown"), so adding them keeps the file version 1 and every
 * library reading and writing it. */
static const char *const kda__provenance_columns[] = {"host", "driver", "source"};

static int has_column(sqlite3 *db, const char *name) {
  sqlite3_stmt *st = NULL;
  int have = 0;
  if (kda__store_prepare(db, "SELECT 1 FROM pragma_table_info('results') WHERE name = ?1", &st) ==
          SQLITE_OK &&
      kda__store_bind_text(st, 1, name) == SQLITE_OK)
    have = sqlite3_step(st) == SQLITE_ROW;
  sqlite3_finalize(st);
  return have;
}

static int has_provenance(sqlite3 *db) {
  for (size_t i = 0; i < sizeof kda__provenance_columns / sizeof kda__provenance_columns[0]; i++)
    if (!has_column(db, kda__provenance_columns[i])) return 0;
  return 1;
}

int kda__store_add_provenance(sqlite3 *db) {
  int rc = SQLITE_OK;
  /* One by one: a file with some of them (another tool) gets the rest. */
  for (size_t i = 0; rc == SQLITE_OK && i < sizeof kda__provenance_columns /
                                                sizeof kda__provenance_columns[0]; i++) {
    if (has_column(db, kda__provenance_columns[i])) continue;
    char sql[96];
    snprintf(sql, sizeof sql, "ALTER TABLE results ADD COLUMN %s TEXT", kda__provenance_columns[i]);
    rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
  }
  return rc;
}

/* Best effort, like the view: a file busy now gets them at its first put
 * (store_results.c adds them inside the put's write transaction). */
static void ensure_provenance(sqlite3 *db) {
  if (has_provenance(db)) return;
  if (kda__store_begin_now(db) != SQLITE_OK) return;
  if (kda__store_add_provenance(db) != SQLITE_OK) {
    kda__store_rollback(db);
    return;
  }
  kda__store_commit(db);
  kda__store_rollback(db); /* a failed commit: undone */
}

/* Makes the view where it is missing; best effort (a busy file skips it
 * until the next open). */
static void ensure_views(sqlite3 *db) {
  sqlite3_stmt *st = NULL;
  int have = 0, current = 0;
  if (kda__store_prepare(db, "SELECT sql LIKE '%r.source%' FROM sqlite_master WHERE"
                             " type = 'view' AND name = 'results_readable'", &st) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW) {
    have = 1;
    current = sqlite3_column_int(st, 0);
  }
  sqlite3_finalize(st);
  /* A view of before the provenance columns is made again with them. */
  if (current || !has_provenance(db)) return;
  if (kda__store_begin_now(db) != SQLITE_OK) return;
  if ((!have || sqlite3_exec(db, "DROP VIEW results_readable", NULL, NULL, NULL) == SQLITE_OK) &&
      sqlite3_exec(db, kda__results_readable, NULL, NULL, NULL) == SQLITE_OK)
    kda__store_commit(db);
  kda__store_rollback(db);
}

int kda__store_schema_apply(sqlite3 *db, int *found_version) {
  const int rc = schema_apply(db, found_version);
  if (rc == SQLITE_OK && *found_version <= KDA__STORE_SCHEMA_VERSION) {
    ensure_provenance(db);
    ensure_views(db);
  }
  return rc;
}

static int schema_apply(sqlite3 *db, int *found_version) {
  int version = 0;
  int rc = kda__store_schema_version_of(db, &version);
  *found_version = version;
  /* user_version is signed: no library writes a negative one, and it would
   * index before migrations[]. Such a file is damaged (or not ours). */
  if (rc == SQLITE_OK && version < 0) return SQLITE_NOTADB;
  /* The common case takes no write lock, so opening never queues behind a
   * long writer. */
  if (rc != SQLITE_OK || version >= KDA__STORE_SCHEMA_VERSION) return rc;
  rc = kda__store_begin(db);
  if (rc != SQLITE_OK) return rc;
  rc = kda__store_schema_version_of(db, &version);
  *found_version = version;
  if (rc == SQLITE_OK && version < 0) rc = SQLITE_NOTADB;
  while (rc == SQLITE_OK && version < KDA__STORE_SCHEMA_VERSION) {
    rc = kda__migrations[version](db);
    version++;
  }
  if (rc == SQLITE_OK && *found_version < KDA__STORE_SCHEMA_VERSION) {
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", KDA__STORE_SCHEMA_VERSION);
    rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
  }
  if (rc == SQLITE_OK) rc = kda__store_commit(db);
  if (rc != SQLITE_OK) kda__store_rollback(db);
  return rc;
}

int kda__store_configure(sqlite3 *db, int file_writable) {
  int rc = sqlite3_busy_timeout(db, KDA__STORE_BUSY_MS);
  if (rc == SQLITE_OK) rc = sqlite3_exec(db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL);
  if (rc != SQLITE_OK || !file_writable) return rc;
  /* Switching to WAL needs an exclusive lock for a moment; when several
   * processes create the file at once it can answer BUSY without waiting.
   * At most 50 tries of 100 ms each (5 s in all): a reader of a
   * rollback-journal file holds the switch off as long as it reads (the
   * open then waits no longer than a write does, store.c). */
  rc = sqlite3_busy_timeout(db, 100);
  for (int attempt = 0; rc == SQLITE_OK && attempt < 50; attempt++) {
    rc = sqlite3_exec(db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL);
    if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED) break;
    if (attempt < 49) rc = SQLITE_OK; /* try again */
    else break;
  }
  if (rc == SQLITE_OK) rc = sqlite3_busy_timeout(db, KDA__STORE_BUSY_MS);
  /* NORMAL in WAL mode: a power cut may lose the last commits, never
   * corrupt the file; results can be measured again. */
  if (rc == SQLITE_OK) rc = sqlite3_exec(db, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL);
  return rc;
}
