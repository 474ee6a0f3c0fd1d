/* Independent checks of a tuning database for the stress scripts, straight
 * through SQLite (not through the store, so a store bug cannot hide itself):
 *
 *   db_check integrity DB   PRAGMA integrity_check, then every cubin row's
 *                           blob against its stored sha256 and size. Prints
 *                           "integrity ok cubins N results R bad 0", or
 *                           "integrity ok empty ..." for a file with no
 *                           tables at all; exit 1 on any problem (each
 *                           one printed).
 *   db_check keys DB        one line per cubin: arch|spec|config|sha256,
 *                           sorted (for comparing two databases).
 *   db_check results DB     one line per tuning result:
 *                           gpu_key|kernel|spec|bucket|config, sorted, then
 *                           "results N incomplete I duplicate D"; exit 1 if
 *                           a key has two winners or a winner is not whole
 *                           (its trials, its 'ok' trial, its GPU model row
 *                           or its cubin missing).
 *
 * Never creates the file: a missing database is a failure. */
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "kda/kda_db.h"
#include "sha256.h"

static int integrity(sqlite3 *db) {
  int problems = 0;
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL);
  while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    rc = SQLITE_OK;
    const char *t = (const char *)sqlite3_column_text(st, 0);
    if (t == NULL || strcmp(t, "ok") != 0) {
      printf("integrity_check: %s\n", t ? t : "(null)");
      problems++;
    }
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) {
    printf("integrity_check failed: %s\n", sqlite3_errmsg(db));
    return -1;
  }
  /* A process killed between creating the file and committing the schema
   * (one transaction) leaves a sound file with no tables; the next open
   * creates them. Any partial schema is a failure below. */
  long long tables = -1;
  if (sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master", -1, &st, NULL) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    tables = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  if (tables == 0) {
    printf("integrity %s empty (no schema committed yet)\n", problems ? "FAILED" : "ok");
    return problems ? 1 : 0;
  }
  long long cubins = 0, bad = 0, results = -1;
  rc = sqlite3_prepare_v2(db, "SELECT id, blob, sha256, size FROM cubins", -1, &st, NULL);
  while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    rc = SQLITE_OK;
    cubins++;
    const void *blob = sqlite3_column_blob(st, 1);
    int n = sqlite3_column_bytes(st, 1);
    const char *want = (const char *)sqlite3_column_text(st, 2);
    long long size = sqlite3_column_int64(st, 3);
    unsigned char d[32];
    char got[65];
    kda__sha256(blob ? blob : "", (size_t)n, d);
    kda__sha256_hex(d, got);
    if (n <= 0 || size != n || want == NULL || strcmp(want, got) != 0) {
      printf("cubin %lld: %d bytes (size column %lld), sha256 %s, stored %s\n",
             (long long)sqlite3_column_int64(st, 0), n, size, got, want ? want : "(null)");
      bad++;
    }
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) {
    printf("reading cubins failed: %s\n", sqlite3_errmsg(db));
    return -1;
  }
  if (sqlite3_prepare_v2(db, "SELECT count(*) FROM results", -1, &st, NULL) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    results = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  printf("integrity %s cubins %lld results %lld bad %lld\n", problems ? "FAILED" : "ok", cubins,
         results, bad);
  return problems || bad ? 1 : 0;
}

static int keys(sqlite3 *db) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db,
                              "SELECT arch, spec, config, sha256 FROM cubins"
                              " ORDER BY arch, spec, config",
                              -1, &st, NULL);
  while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    rc = SQLITE_OK;
    printf("%d|%s|%s|%s\n", sqlite3_column_int(st, 0), sqlite3_column_text(st, 1),
           sqlite3_column_text(st, 2), sqlite3_column_text(st, 3));
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) {
    fprintf(stderr, "db_check keys: %s\n", sqlite3_errmsg(db));
    return 1;
  }
  return 0;
}

/* First column of the first row of sql as an integer, -1 on error. */
static long long scalar(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st = NULL;
  long long v = -1;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
    v = sqlite3_column_int64(st, 0);
  else
    fprintf(stderr, "db_check results: %s\n", sqlite3_errmsg(db));
  sqlite3_finalize(st);
  return v;
}

static int results(sqlite3 *db) {
  sqlite3_stmt *st = NULL;
  long long n = 0;
  int rc = sqlite3_prepare_v2(db,
                              "SELECT gpu_key, kernel, spec, bucket, config FROM results"
                              " ORDER BY gpu_key, kernel, spec, bucket",
                              -1, &st, NULL);
  while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    rc = SQLITE_OK;
    ++n;
    printf("%s|%s|%s|%d|%s\n", sqlite3_column_text(st, 0), sqlite3_column_text(st, 1),
           sqlite3_column_text(st, 2), sqlite3_column_int(st, 3), sqlite3_column_text(st, 4));
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) {
    fprintf(stderr, "db_check results: %s\n", sqlite3_errmsg(db));
    return 1;
  }
  /* The UNIQUE constraint should make duplicates impossible: checked here
   * independently of it, as everything else in this tool. */
  const long long dup = scalar(db,
      "SELECT count(*) FROM (SELECT 1 FROM results GROUP BY gpu_key, kernel, spec, bucket,"
      " template_hash, space_hash HAVING count(*) > 1)");
  const long long partial = scalar(db,
      "SELECT count(*) FROM results r WHERE r.config = '' OR r.median_us IS NULL"
      " OR r.median_us <= 0"
      " OR r.candidates != (SELECT count(*) FROM trials t WHERE t.result_id = r.id"
      "   AND coalesce(t.reason, '') NOT LIKE '" KDA_DB_TRIAL_LEFT_OUT "%')"
      " OR NOT EXISTS (SELECT 1 FROM trials t WHERE t.result_id = r.id AND t.config = r.config"
      "   AND t.status = 'ok')"
      " OR NOT EXISTS (SELECT 1 FROM gpu_models g WHERE g.gpu_key = r.gpu_key)"
      " OR NOT EXISTS (SELECT 1 FROM cubins c WHERE c.config = r.config"
      "   AND substr(r.spec, 1, length(c.spec)) = c.spec"
      "   AND substr(r.spec, length(c.spec) + 1, 8) = ' veccap=')");
  printf("results %lld incomplete %lld duplicate %lld\n", n, partial, dup);
  return dup != 0 || partial != 0;
}

int main(int argc, char **argv) {
  if (argc != 3 || (strcmp(argv[1], "integrity") != 0 && strcmp(argv[1], "keys") != 0 &&
                    strcmp(argv[1], "results") != 0)) {
    fprintf(stderr, "usage: db_check integrity|keys|results DB\n");
    return 2;
  }
  sqlite3 *db = NULL;
  /* Read-write, no create: opening after a kill -9 runs WAL recovery, as
   * any later user of the file would. */
  int rc = sqlite3_open_v2(argv[2], &db, SQLITE_OPEN_READWRITE, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_busy_timeout(db, 10000);
  if (rc != SQLITE_OK) {
    printf("cannot open %s: %s\n", argv[2], db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close(db);
    return 1;
  }
  int r = strcmp(argv[1], "keys") == 0      ? keys(db)
          : strcmp(argv[1], "results") == 0 ? results(db)
                                            : integrity(db);
  sqlite3_close(db);
  return r < 0 ? 1 : r;
}
