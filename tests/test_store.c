/* The tuning database: round trips, schema versions, faults (read-only,
 * corrupt, truncated, tampered, disk full), leases, several processes
 * writing one file at once, and where the file lives by default. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "kda/kda.h"
#include "store.h"
#include "store_internal.h"

/* ------------------------------------------------------------ fixtures */

typedef struct fixture {
  char dir[256];
  char db[300];
} fixture;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (f == NULL) return -1;
  snprintf(f->dir, sizeof f->dir, "/tmp/kda_store_test_XXXXXX");
  if (mkdtemp(f->dir) == NULL) return -1;
  snprintf(f->db, sizeof f->db, "%s/tune.db", f->dir);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  free(f);
  return 0;
}

static kda__store_key make_key(const char *spec, int64_t bucket) {
  kda__store_key k = {"sm90-pci2330-sms132-l2_52428800", "gate_cumsum", spec, bucket,
                      "templatehash", "spacehash"};
  return k;
}

static kda__store_record make_record(const char *config, double median_us) {
  kda__store_record r;
  memset(&r, 0, sizeof r);
  snprintf(r.config, sizeof r.config, "%s", config);
  r.config_id = 7;
  r.median_us = median_us;
  r.gbps = 1234.5;
  r.max_err = 1e-6;
  r.candidates = 40;
  r.rejected = 3;
  r.heuristic_us = median_us * 1.5;
  r.tune_ms = 900;
  r.compile_ms = 400;
  snprintf(r.lib_version, sizeof r.lib_version, "0.1.0");
  snprintf(r.nvrtc_version, sizeof r.nvrtc_version, "12.8.93");
  return r;
}

static const kda__store_trial kTrials[3] = {
    {"vec=4,tx=32,seg=2", 7, 10.0, 9.5, 11.0, KDA__TRIAL_OK, NULL},
    {"vec=8,tx=64,seg=1", 9, -1, -1, -1, KDA__TRIAL_COMPILE_FAILED, "too many registers"},
    {"vec=1,tx=256,seg=4", 2, 30.0, 29.0, 31.0, KDA__TRIAL_WRONG_RESULT, "max_err 0.5"},
};

static kda__store *open_ok(const char *path, unsigned flags) {
  kda__store *s = NULL;
  assert_int_equal(kda__store_open(path, flags, &s), KDA_OK);
  assert_non_null(s);
  return s;
}

static void put_ok(kda__store *s, const char *spec, int64_t bucket, const char *config,
                   double median) {
  kda__store_key k = make_key(spec, bucket);
  kda__store_record r = make_record(config, median);
  int stored = 0;
  assert_int_equal(kda__store_put_result(s, &k, &r, kTrials, 3, KDA__PUT_REPLACE, &stored), KDA_OK);
  assert_int_equal(stored, 1);
}

static int lookup(kda__store *s, const char *spec, int64_t bucket, kda__store_record *out) {
  kda__store_key k = make_key(spec, bucket);
  int found = -1;
  assert_int_equal(kda__store_lookup_result(s, &k, &found, out), KDA_OK);
  return found;
}

static int64_t scalar(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  int64_t v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}

/* Opens the file with plain SQLite, as another tool would. */
static int64_t file_scalar(const char *path, const char *sql) {
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  int64_t v = scalar(db, sql);
  sqlite3_close(db);
  return v;
}

static void file_exec(const char *path, const char *sql) {
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  char *err = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
  if (rc != SQLITE_OK) fail_msg("%s: %s", sql, err ? err : "?");
  sqlite3_close(db);
}

static void write_file(const char *path, const void *data, size_t n) {
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  assert_int_equal(fwrite(data, 1, n, fp), n);
  fclose(fp);
}

static int count_trials_fn(void *user, const kda__store_trial *t) {
  (void)t;
  ++*(int *)user;
  return 0;
}

static int count_rows_fn(void *user, const kda__store_key *k, const kda__store_record *r) {
  (void)k, (void)r;
  ++*(int *)user;
  return 0;
}

/* --------------------------------------------------------------- tests */

static void test_mode_decision_follows_writability_and_flags(void **state) {
  (void)state;
  kda__store_probe rw = {1, 1, 1}, ro_file = {1, 0, 1}, ro_dir = {1, 1, 0};
  kda__store_probe missing = {0, 0, 1}, missing_ro = {0, 0, 0};
  assert_int_equal(kda__store_choose_mode(&rw, 0), KDA__STORE_MODE_READ_WRITE);
  assert_int_equal(kda__store_choose_mode(&ro_file, 0), KDA__STORE_MODE_READ_ONLY);
  assert_int_equal(kda__store_choose_mode(&ro_dir, 0), KDA__STORE_MODE_READ_ONLY);
  assert_int_equal(kda__store_choose_mode(&missing, 0), KDA__STORE_MODE_READ_WRITE);
  assert_int_equal(kda__store_choose_mode(&missing_ro, 0), KDA__STORE_MODE_MEMORY);
  assert_int_equal(kda__store_choose_mode(&rw, KDA__STORE_ASSUME_UNWRITABLE), KDA__STORE_MODE_READ_ONLY);
  assert_int_equal(kda__store_choose_mode(&missing, KDA__STORE_ASSUME_UNWRITABLE), KDA__STORE_MODE_MEMORY);
  assert_int_equal(kda__store_choose_mode(&rw, KDA__STORE_READ_ONLY), KDA__STORE_MODE_READ_ONLY);
  assert_int_equal(kda__store_choose_mode(&rw, KDA__STORE_OVERLAY), KDA__STORE_MODE_IMMUTABLE);
  assert_int_equal(kda__store_choose_mode(&missing, KDA__STORE_OVERLAY), KDA__STORE_MODE_MEMORY);
}

static void test_round_trip_with_trials(void **state) {
  fixture *f = *state;
  kda__store *s = open_ok(f->db, 0);
  assert_int_equal(kda__store_get_mode(s), KDA__STORE_MODE_READ_WRITE);
  assert_false(kda__store_is_read_only(s));
  assert_string_equal(kda__store_path(s), f->db);
  assert_string_equal(kda__store_path_rule(s), "option");
  assert_int_equal(kda__store_schema_version(s), KDA__STORE_SCHEMA_VERSION);
  assert_null(kda__store_pop_warning(s));
  assert_int_equal(scalar(kda__store_handle(s), "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode = 'wal'"), 1);

  assert_int_equal(kda__store_put_gpu(s, "sm90-pci2330-sms132-l2_52428800", "NVIDIA H100", 2900.0), KDA_OK);
  put_ok(s, "H=32,K=128,BT=64,f32->f32", 3, "vec=4,tx=32,seg=2", 10.0);

  kda__store_record r;
  assert_int_equal(lookup(s, "H=32,K=128,BT=64,f32->f32", 3, &r), 1);
  assert_string_equal(r.config, "vec=4,tx=32,seg=2");
  assert_int_equal(r.config_id, 7);
  assert_true(r.median_us == 10.0 && r.heuristic_us == 15.0 && r.gbps == 1234.5);
  assert_int_equal(r.candidates, 40);
  assert_int_equal(r.rejected, 3);
  assert_string_equal(r.nvrtc_version, "12.8.93");
  assert_true(r.created_at > 1600000000);
  assert_false(r.in_overlay);
  assert_int_equal(lookup(s, "H=32,K=128,BT=64,f32->f32", 4, &r), 0); /* other bucket */

  int trials = 0;
  assert_int_equal(kda__store_list_trials(s, &r, count_trials_fn, &trials), KDA_OK);
  assert_int_equal(trials, 3);

  char name[64];
  double bw = 0;
  int found = 0;
  assert_int_equal(kda__store_lookup_gpu(s, "sm90-pci2330-sms132-l2_52428800", &found, name, sizeof name, &bw), KDA_OK);
  assert_int_equal(found, 1);
  assert_string_equal(name, "NVIDIA H100");
  assert_true(bw == 2900.0);

  int rows = 0;
  assert_int_equal(kda__store_list_results(s, "sm90-pci2330-sms132-l2_52428800", "gate_cumsum", count_rows_fn, &rows), KDA_OK);
  assert_int_equal(rows, 1);
  rows = 0;
  assert_int_equal(kda__store_list_results(s, NULL, "other_kernel", count_rows_fn, &rows), KDA_OK);
  assert_int_equal(rows, 0);

  kda__store_stats st;
  assert_int_equal(kda__store_get_stats(s, &st), KDA_OK);
  assert_int_equal(st.results, 1);
  assert_int_equal(st.trials, 3);
  assert_int_equal(st.gpus, 1);
  assert_true(st.file_bytes > 0);
  kda__store_close(s);

  assert_int_equal(file_scalar(f->db, "PRAGMA user_version"), KDA__STORE_SCHEMA_VERSION);
  kda__store_close(NULL);

  s = open_ok(f->db, KDA__STORE_VERIFY); /* quick_check of a healthy file passes */
  assert_int_equal(kda__store_get_mode(s), KDA__STORE_MODE_READ_WRITE);
  assert_null(kda__store_pop_warning(s));
  kda__store_close(s);
}

static void test_same_key_put_twice_keeps_last_and_faster_mode_keeps_faster(void **state) {
  fixture *f = *state;
  kda__store *s = open_ok(f->db, 0);
  put_ok(s, "spec", 1, "first", 10.0);
  put_ok(s, "spec", 1, "second", 20.0); /* REPLACE: last wins even if slower */
  kda__store_record r;
  assert_int_equal(lookup(s, "spec", 1, &r), 1);
  assert_string_equal(r.config, "second");
  /* The old row's trials went with it. */
  assert_int_equal(scalar(kda__store_handle(s), "SELECT count(*) FROM trials"), 3);
  assert_int_equal(scalar(kda__store_handle(s), "SELECT count(*) FROM results"), 1);

  kda__store_key k = make_key("spec", 1);
  kda__store_record slower = make_record("slower", 25.0), faster = make_record("faster", 5.0);
  int stored = -1;
  assert_int_equal(kda__store_put_result(s, &k, &slower, NULL, 0, KDA__PUT_FASTER, &stored), KDA_OK);
  assert_int_equal(stored, 0);
  assert_int_equal(lookup(s, "spec", 1, &r), 1);
  assert_string_equal(r.config, "second");
  assert_int_equal(kda__store_put_result(s, &k, &faster, kTrials, 1, KDA__PUT_FASTER, &stored), KDA_OK);
  assert_int_equal(stored, 1);
  assert_int_equal(lookup(s, "spec", 1, &r), 1);
  assert_string_equal(r.config, "faster");
  assert_int_equal(scalar(kda__store_handle(s), "SELECT count(*) FROM trials"), 1);

  kda__store_trial bad = kTrials[0];
  bad.status = (kda__trial_status)42;
  assert_int_equal(kda__store_put_result(s, &k, &faster, &bad, 1, KDA__PUT_REPLACE, NULL),
                   KDA_ERROR_INVALID_ARGUMENT);
  kda__store_close(s);
}

static void test_upgrade_v0_schema_keeps_rows(void **state) {
  fixture *f = *state;
  file_exec(f->db,
            "CREATE TABLE results(gpu TEXT, kernel TEXT, spec TEXT, bucket INTEGER, config TEXT,"
            " median_us REAL, created_at INTEGER, PRIMARY KEY(gpu, kernel, spec, bucket));"
            "INSERT INTO results VALUES('sm80-pci20b0-sms108-l2_41943040', 'gate_cumsum', 'a', 1,"
            " 'vec=2', 3.5, 1700000000);"
            "INSERT INTO results VALUES('sm80-pci20b0-sms108-l2_41943040', 'gate_cumsum', 'b', 2,"
            " 'vec=4', 4.5, 1700000001);");
  assert_int_equal(file_scalar(f->db, "PRAGMA user_version"), 0);

  kda__store *s = open_ok(f->db, 0);
  assert_int_equal(kda__store_get_mode(s), KDA__STORE_MODE_READ_WRITE);
  assert_int_equal(kda__store_schema_version(s), KDA__STORE_SCHEMA_VERSION);
  int rows = 0;
  assert_int_equal(kda__store_list_results(s, "sm80-pci20b0-sms108-l2_41943040", NULL, count_rows_fn, &rows), KDA_OK);
  assert_int_equal(rows, 2);
  kda__store_key k = {"sm80-pci20b0-sms108-l2_41943040", "gate_cumsum", "a", 1, "", ""};
  kda__store_record r;
  int found = 0;
  assert_int_equal(kda__store_lookup_result(s, &k, &found, &r), KDA_OK);
  assert_int_equal(found, 1);
  assert_string_equal(r.config, "vec=2");
  assert_int_equal(r.created_at, 1700000000);
  put_ok(s, "new", 1, "vec=8", 1.0); /* the new tables work */
  kda__store_close(s);
  assert_int_equal(file_scalar(f->db, "PRAGMA user_version"), KDA__STORE_SCHEMA_VERSION);
  assert_int_equal(file_scalar(f->db, "SELECT count(*) FROM sqlite_master WHERE name='results_v0'"), 0);
  assert_int_equal(file_scalar(f->db, "SELECT count(*) FROM gpu_models"), 2);
}

/* Provenance (host, driver, source) lives in columns added outside the
 * schema version: a file of before them (a library of before wrote it) is
 * read read-only with them empty, written without them, and given them by
 * the next writable open; its old rows then read as unknown. */
static void test_provenance_columns_come_and_files_without_them_still_work(void **state) {
  fixture *f = *state;
  kda__store *s = open_ok(f->db, 0);
  kda__store_key k = make_key("with", 1);
  kda__store_record r = make_record("vec=4", 2.0), got;
  snprintf(r.host, sizeof r.host, "node-7");
  snprintf(r.driver, sizeof r.driver, "580.159.04 (CUDA 13.0)");
  snprintf(r.source, sizeof r.source, "kda_prewarm");
  assert_int_equal(kda__store_put_result(s, &k, &r, NULL, 0, KDA__PUT_REPLACE, NULL), KDA_OK);
  assert_int_equal(lookup(s, "with", 1, &got), 1);
  assert_string_equal(got.host, "node-7");
  assert_string_equal(got.driver, "580.159.04 (CUDA 13.0)");
  assert_string_equal(got.source, "kda_prewarm");
  kda__store_close(s);
  assert_int_equal(file_scalar(f->db, "SELECT count(*) FROM results_readable WHERE tuned_on ="
                                      " 'node-7' AND source = 'kda_prewarm'"), 1);

  /* The file as a library of before left it. */
  file_exec(f->db, "DROP VIEW results_readable; ALTER TABLE results DROP COLUMN host;"
                   " ALTER TABLE results DROP COLUMN driver; ALTER TABLE results DROP COLUMN source;");
  s = open_ok(f->db, KDA__STORE_READ_ONLY);
  assert_int_equal(lookup(s, "with", 1, &got), 1);
  assert_string_equal(got.config, "vec=4");
  assert_string_equal(got.host, "");
  assert_string_equal(got.source, "");
  put_ok(s, "overlay", 1, "vec=2", 1.0); /* the overlay has them */
  kda__store_close(s);
  assert_int_equal(file_scalar(f->db, "SELECT count(*) FROM pragma_table_info('results') WHERE"
                                      " name = 'source'"), 0);

  /* A writable open adds them back; the old row is unknown, a new one not. */
  s = open_ok(f->db, 0);
  assert_int_equal(lookup(s, "with", 1, &got), 1);
  assert_string_equal(got.host, "");
  k = make_key("after", 1);
  assert_int_equal(kda__store_put_result(s, &k, &r, NULL, 0, KDA__PUT_REPLACE, NULL), KDA_OK);
  assert_int_equal(lookup(s, "after", 1, &got), 1);
  assert_string_equal(got.host, "node-7");
  kda__store_close(s);
  assert_int_equal(file_scalar(f->db, "SELECT count(*) FROM results_readable WHERE source IS NULL"),
                   1);

  /* Opened while another writer held the file (a kda-tune import beside a
   * server): the columns could not be added then; the first put adds them
   * in its own write transaction, so its row keeps where it was tuned. */
  file_exec(f->db, "DROP VIEW results_readable; ALTER TABLE results DROP COLUMN host;"
                   " ALTER TABLE results DROP COLUMN driver; ALTER TABLE results DROP COLUMN source;");
  sqlite3 *other = NULL;
  assert_int_equal(sqlite3_open(f->db, &other), SQLITE_OK);
  assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
  s = open_ok(f->db, 0);
  assert_int_equal(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(other);
  assert_int_equal(file_scalar(f->db, "SELECT count(*) FROM pragma_table_info('results') WHERE"
                                      " name = 'source'"), 0);
  k = make_key("busy", 1);
  if (kda__store_put_result(s, &k, &r, NULL, 0, KDA__PUT_REPLACE, NULL) != KDA_OK)
    fail_msg("%s", kda_last_error());
  assert_int_equal(lookup(s, "busy", 1, &got), 1);
  assert_string_equal(got.source, "kda_prewarm");
  kda__store_close(s);
  assert_int_equal(file_scalar(f->db, "SELECT count(*) FROM results WHERE source = 'kda_prewarm'"),
                   1);

  /* Names are cut at a character boundary, never inside one. */
  char cut[4];
  kda__store_copy_utf8(cut, sizeof cut, "ab\xc3\xa9"); /* "abé": 4 bytes into 3 */
  assert_string_equal(cut, "ab");
  kda__store_copy_utf8(cut, sizeof cut, "a\xc3\xa9z");
  assert_string_equal(cut, "a\xc3\xa9");
  kda__store_copy_utf8(cut, sizeof cut, "\xe2\x82\xac!"); /* "€!" */
  assert_string_equal(cut, "\xe2\x82\xac");
  kda__store_copy_utf8(cut, sizeof cut, "x\xe2\x82\xac");
  assert_string_equal(cut, "x");
}

/* A rollback-journal file (another tool switched it back, or it was never
 * switched) held by a reader inside a transaction: the switch to WAL
 * needs the reader gone, and it held the open, a server's first kernel
 * call, for minutes. The open now waits as a write does, then reads the
 * file read-only, says why, and keeps new results in memory. */
static void test_a_reader_holding_a_journal_file_costs_the_open_a_write_wait(void **state) {
  fixture *f = *state;
  kda__store *s = open_ok(f->db, 0);
  put_ok(s, "held", 1, "vec=4", 2.0);
  kda__store_close(s);
  sqlite3 *reader = NULL;
  assert_int_equal(sqlite3_open(f->db, &reader), SQLITE_OK);
  assert_int_equal(sqlite3_exec(reader, "PRAGMA journal_mode = DELETE", NULL, NULL, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_exec(reader, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(reader, "SELECT * FROM results", -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW); /* holds the file's shared lock */
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  s = open_ok(f->db, 0);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  const double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  print_message("open beside a reader of a journal file: %.1f s\n", took);
  assert_true(took < KDA__STORE_WRITE_WAIT_MS / 1000.0 + 10.0);
  assert_int_equal(kda__store_get_mode(s), KDA__STORE_MODE_READ_ONLY);
  const char *w = kda__store_pop_warning(s);
  assert_non_null(w);
  assert_non_null(strstr(w, "stayed locked"));
  kda__store_record got;
  assert_int_equal(lookup(s, "held", 1, &got), 1); /* the file is read */
  put_ok(s, "new", 1, "vec=2", 1.0);               /* kept in memory */
  assert_int_equal(lookup(s, "new", 1, &got), 1);
  kda__store_close(s);
  sqlite3_finalize(st);
  sqlite3_close(reader);
  /* The reader gone, the file is written again. */
  s = open_ok(f->db, 0);
  assert_int_equal(kda__store_get_mode(s), KDA__STORE_MODE_READ_WRITE);
  kda__store_close(s);
}

/* A writer killed while it created the file (rollback-journal mode, before
 * the switch to WAL) leaves a hot journal that only a connection allowed
 * to write may roll back. A read-only open, as `kda-tune stats` and
 * `verify` make, rolls it back where the file is writable and reads what
 * was committed: here nothing. The kill stress test met this once in 50
 * kills (a prewarm killed 8 ms in: "attempt to write a readonly database"). */
static void test_hot_journal_of_a_killed_creator_is_rolled_back_for_readers(void **state) {
  fixture *f = *state;
  const pid_t pid = fork();
  if (pid == 0) {
    sqlite3 *db = NULL;
    if (sqlite3_open(f->db, &db) != SQLITE_OK) _exit(2);
    /* A one-page cache spills the uncommitted pages into the file. */
    sqlite3_exec(db, "PRAGMA cache_size = 1; BEGIN; CREATE TABLE big(b)", NULL, NULL, NULL);
    for (int i = 0; i < 64; ++i) sqlite3_exec(db, "INSERT INTO big VALUES (zeroblob(4000))", NULL, NULL, NULL);
    raise(SIGKILL);
    _exit(3);
  }
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFSIGNALED(status));
  char journal[320];
  snprintf(journal, sizeof journal, "%s-journal", f->db);
  assert_int_equal(access(journal, F_OK), 0); /* the hot journal the kill left */

  kda__store *s = open_ok(f->db, KDA__STORE_READ_ONLY);
  assert_int_equal(kda__store_get_mode(s), KDA__STORE_MODE_READ_ONLY);
  assert_null(kda__store_pop_warning(s));
  kda__store_stats st;
  assert_int_equal(kda__store_get_stats(s, &st), KDA_OK);
  assert_int_equal(st.results, 0);
  kda__store_close(s);
  assert_int_equal(access(journal, F_OK), -1); /* rolled back */

  /* A writer then creates the schema as on a new file. */
  s = open_ok(f->db, 0);
  assert_int_equal(kda__store_get_mode(s), KDA__STORE_MODE_READ_WRITE);
  assert_null(kda__store_pop_warning(s));
  put_ok(s, "spec", 1, "vec=4,tx=32,seg=2", 10.0);
  kda__store_close(s);
  assert_int_equal(file_scalar(f->db, "SELECT count(*) FROM results"), 1);
}

static void test_newer_schema_opened_read_only_with_warning(void **state) {
  fixture *f = *state;
  kda__store *s = open_ok(f->db, 0);
  put_ok(s, "spec", 1, "old", 10.0);
  kda__store_close(s);
  file_exec(f->db, "PRAGMA user_version = 99");

  s = open_ok(f->db, 0);
  assert_int_equal(kda__store_get_mode(s), KDA__STORE_MODE_READ_ONLY);
  assert_true(kda__store_is_read_only(s));
  assert_int_equal(kda__store_schema_version(s), 99);
  const char *w = kda__store_pop_warning(s);
  assert_non_null(w);
  assert_non_null(strstr(w, "newer"));
  assert_null(kda__store_pop_warning(s)); /* once */
  kda__store_record r;
  assert_int_equal(lookup(s, "spec", 1, &r), 1); /* still read */
  put_ok(s, "spec", 2, "new", 5.0);               /* goes to memory */
  assert_int_equal(lookup(s, "spec", 2, &r), 1);
  assert_true(r.in_overlay);
  kda__store_close(s);
  assert_int_equal(file_scalar(f->db, "SELECT count(*) FROM results"), 1);
  assert_int_equal(file_scalar(f->db, "PRAGMA user_version"), 99);
}

static void test_unwritable_file_uses_overlay_and_warns_once(void **state) {
  fixture *f = *state;
  kda__store *s = open_ok(f->db, 0);
  put_ok(s, "spec", 1, "on-disk", 10.0);
  kda__store_close(s);

  s = open_ok(f->db, KDA__STORE_ASSUME_UNWRITABLE);
  assert_int_equal(kda__store_get_mode(s), KDA__STORE_MODE_READ_ONLY);
  assert_true(kda__store_is_read_only(s));
  const char *w = kda__store_pop_warning(s);
  assert_non_null(w);
  assert_non_null(strstr(w, "not writable"));
  put_ok(s, "spec", 2, "in-memory", 5.0);
  put_ok(s, "spec", 3, "in-memory", 5.0);
  assert_null(kda__store_pop_warning(s));
  kda__store_record r;
  assert_int_equal(lookup(s, "spec", 1, &r), 1);
  assert_false(r.in_overlay);
  assert_int_equal(lookup(s, "spec", 2, &r), 1);
  assert_true(r.in_overlay);
  int rows = 0;
  assert_int_equal(kda__store_list_results(s, NULL, NULL, count_rows_fn, &rows), KDA_OK);
  assert_int_equal(rows, 3);
  kda__lease lease;
  assert_int_equal(kda__store_lease_acquire(s, "k", "me", 10, &lease), KDA_OK);
  assert_true(lease.acquired);
  kda__store_close(s);
  assert_int_equal(file_scalar(f->db, "SELECT count(*) FROM results"), 1);
  assert_int_equal(file_scalar(f->db, "SELECT count(*) FROM leases"), 0);

  /* No file and no way to create one: memory only, still working. */
  char missing[400];
  snprintf(missing, sizeof missing, "%s/sub/tune.db", f->dir);
  s = open_ok(missing, KDA__STORE_ASSUME_UNWRITABLE);
  assert_int_equal(kda__store_get_mode(s), KDA__STORE_MODE_MEMORY);
  assert_non_null(kda__store_pop_warning(s));
  put_ok(s, "spec", 1, "mem", 1.0);
  assert_int_equal(lookup(s, "spec", 1, &r), 1);
  kda__store_close(s);
  assert_int_equal(access(missing, F_OK), -1);
}

/* The child of test_another_users_database_is_read: opens path as a user
 * that may write neither the file nor (unless folder_writable) its folder,
 * the way a server reads a database baked into its container image.
 * Returns 0 or a code that says what went wrong; 77 if it cannot drop root. */
static int child_reads_as_other_user(const char *path, kda__store_mode want) {
  if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) return 77;
  kda__store *s = NULL;
  if (kda__store_open(path, 0, &s) != KDA_OK) return 10;
  if (kda__store_get_mode(s) != want) {
    const char *w = kda__store_pop_warning(s);
    fprintf(stderr, "mode %d, want %d: %s\n", (int)kda__store_get_mode(s), (int)want,
            w != NULL ? w : "(no warning)");
    return 11;
  }
  const char *w = kda__store_pop_warning(s);
  if (w == NULL || strstr(w, "not writable") == NULL) return 12;
  kda__store_key k = make_key("spec", 1);
  kda__store_record r;
  int found = 0;
  if (kda__store_lookup_result(s, &k, &found, &r) != KDA_OK || !found) return 13;
  if (strcmp(r.config, "on-disk") != 0 || r.in_overlay) return 14;
  kda__store_key k2 = make_key("spec", 2);
  kda__store_record r2 = make_record("in-memory", 5.0);
  if (kda__store_put_result(s, &k2, &r2, kTrials, 3, KDA__PUT_REPLACE, NULL) != KDA_OK) return 15;
  if (kda__store_lookup_result(s, &k2, &found, &r) != KDA_OK || !found || !r.in_overlay) return 16;
  kda__store_close(s);
  return 0;
}

static void expect_child_reads(const char *path, kda__store_mode want, const char *what) {
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) _exit(child_reads_as_other_user(path, want));
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  if (WEXITSTATUS(status) == 77) skip(); /* root that may not become nobody (user namespace) */
  if (WEXITSTATUS(status) != 0) fail_msg("%s: the reader exited %d", what, WEXITSTATUS(status));
}

/* Really unwritable, not KDA__STORE_ASSUME_UNWRITABLE: a WAL database owned
 * by another user in a folder the reader may not write has no -shm the
 * reader can create, and SQLite refuses a plain read-only open of it. That
 * reader (a server in a container) must still get the tuned rows. As root
 * the reader is a forked child that becomes nobody; as anyone else the
 * modes take the writes away. */
static void test_another_users_database_is_read(void **state) {
  fixture *f = *state;
  kda__store *s = open_ok(f->db, 0);
  put_ok(s, "spec", 1, "on-disk", 10.0);
  kda__store_close(s); /* the last connection: -wal and -shm are removed */
  assert_int_equal(access(f->db, F_OK), 0);
  char shm[400];
  snprintf(shm, sizeof shm, "%s-shm", f->db);
  assert_int_equal(access(shm, F_OK), -1);
  int root = geteuid() == 0;
  assert_int_equal(chmod(f->db, 0444), 0);

  /* The folder is not writable: no -shm can exist, the file is read immutable. */
  assert_int_equal(chmod(f->dir, root ? 0755 : 0555), 0);
  expect_child_reads(f->db, KDA__STORE_MODE_IMMUTABLE, "unwritable folder");

  /* The owner has it open meanwhile (a prewarm still running): its -shm
   * exists and the reader shares it read-only, honouring the WAL. */
  sqlite3 *owner = NULL;
  assert_int_equal(chmod(f->dir, 0755), 0);
  assert_int_equal(chmod(f->db, 0644), 0);
  assert_int_equal(sqlite3_open(f->db, &owner), SQLITE_OK);
  assert_int_equal(scalar(owner, "SELECT count(*) FROM results"), 1);
  assert_int_equal(access(shm, F_OK), 0);
  if (!root) {
    assert_int_equal(chmod(f->db, 0444), 0);
    assert_int_equal(chmod(shm, 0444), 0);
    assert_int_equal(chmod(f->dir, 0555), 0);
  }
  expect_child_reads(f->db, KDA__STORE_MODE_READ_ONLY, "owner connected");
  sqlite3_close(owner);
  assert_int_equal(chmod(f->dir, 0700), 0);
  assert_int_equal(chmod(f->db, 0644), 0);
  assert_int_equal(file_scalar(f->db, "SELECT count(*) FROM results"), 1); /* the reader wrote nothing */
}

static void text_of(const char *path, const char *sql, char *out, size_t n) {
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  snprintf(out, n, "%s", (const char *)sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
  sqlite3_close(db);
}

/* The results_readable view, for triage with the sqlite3 shell: made on a
 * writable open (again if dropped), its token ranges those of the tuner's
 * buckets, its entry point from the spec; a read-only open of a file
 * without it still works. */
static void test_results_readable_view_matches_the_buckets(void **state) {
  fixture *f = *state;
  kda__store *s = open_ok(f->db, 0);
  for (int b = 0; b < 5; ++b) put_ok(s, "gate_cumsum in=bf16 out=f32 H=32 K=128 chunk=64 cumsum=1 gate=1", b, "c", 1.0 + b);
  put_ok(s, "gate_cumsum in=f32 out=f32 H=8 K=64 chunk=64 cumsum=1 gate=0 bias=0", 0, "c", 1.0);
  kda__store_close(s);
  for (int b = 0; b < 5; ++b) {
    int64_t lo = 0, hi = 0;
    kda_token_bucket_range(b, &lo, &hi);
    char want[64], got[64], sql[160];
    if (hi < 0) snprintf(want, sizeof want, ">=%lld", (long long)lo);
    else snprintf(want, sizeof want, "%lld-%lld", (long long)lo, (long long)hi);
    snprintf(sql, sizeof sql, "SELECT tokens FROM results_readable WHERE bucket = %d AND spec LIKE '%%gate=1'", b);
    text_of(f->db, sql, got, sizeof got);
    assert_string_equal(got, want);
  }
  char got[64];
  text_of(f->db, "SELECT entry FROM results_readable WHERE spec LIKE '%gate=0%'", got, sizeof got);
  assert_string_equal(got, "chunk_local_cumsum");
  text_of(f->db, "SELECT vs_heuristic FROM results_readable WHERE bucket = 0 AND spec LIKE '%gate=1'", got, sizeof got);
  assert_string_equal(got, "1.5"); /* make_record's heuristic is 1.5 x the median */

  file_exec(f->db, "DROP VIEW results_readable");
  s = open_ok(f->db, KDA__STORE_READ_ONLY); /* read-only: works, makes nothing */
  kda__store_record r;
  assert_int_equal(lookup(s, "gate_cumsum in=bf16 out=f32 H=32 K=128 chunk=64 cumsum=1 gate=1", 2, &r), 1);
  kda__store_close(s);
  assert_int_equal(file_scalar(f->db, "SELECT count(*) FROM sqlite_master WHERE type = 'view'"), 0);
  s = open_ok(f->db, 0);
  kda__store_close(s);
  assert_int_equal(file_scalar(f->db, "SELECT count(*) FROM results_readable"), 6);
}

static void test_shipped_immutable_db_under_overlay(void **state) {
  fixture *f = *state;
  kda__store *s = open_ok(f->db, 0);
  put_ok(s, "shipped", 1, "from-vendor", 10.0);
  kda__store_close(s);

  s = open_ok(f->db, KDA__STORE_OVERLAY);
  assert_int_equal(kda__store_get_mode(s), KDA__STORE_MODE_IMMUTABLE);
  assert_null(kda__store_pop_warning(s)); /* asked for: nothing to warn about */
  put_ok(s, "local", 1, "tuned-here", 4.0);
  put_ok(s, "shipped", 1, "better-here", 4.0); /* shadows the shipped row */
  kda__store_record r;
  assert_int_equal(lookup(s, "local", 1, &r), 1);
  assert_int_equal(lookup(s, "shipped", 1, &r), 1);
  assert_string_equal(r.config, "better-here");
  int rows = 0;
  assert_int_equal(kda__store_list_results(s, NULL, NULL, count_rows_fn, &rows), KDA_OK);
  assert_int_equal(rows, 2);
  kda__store_stats st;
  assert_int_equal(kda__store_get_stats(s, &st), KDA_OK);
  assert_int_equal(st.results, 1);
  assert_int_equal(st.overlay_results, 2);
  kda__store_close(s);
  assert_int_equal(file_scalar(f->db, "SELECT count(*) FROM results"), 1);
}

static int count_aside(const char *dir) {
  char cmd[400];
  snprintf(cmd, sizeof cmd, "ls %s | grep -c '^tune.db.corrupt-[0-9]*$'", dir);
  FILE *p = popen(cmd, "r");
  int n = 0;
  if (p != NULL) {
    if (fscanf(p, "%d", &n) != 1) n = 0;
    pclose(p);
  }
  return n;
}

/* reason: what the warning must say the header check found. */
static void check_fresh_store_after_damage(fixture *f, const char *reason) {
  kda__store *s = open_ok(f->db, 0);
  assert_int_equal(kda__store_get_mode(s), KDA__STORE_MODE_READ_WRITE);
  const char *w = kda__store_pop_warning(s);
  assert_non_null(w);
  assert_non_null(strstr(w, "moved it to"));
  if (strstr(w, reason) == NULL) fail_msg("the warning does not say '%s': %s", reason, w);
  assert_int_equal(count_aside(f->dir), 1);
  put_ok(s, "spec", 1, "fresh", 1.0);
  kda__store_record r;
  assert_int_equal(lookup(s, "spec", 1, &r), 1);
  kda__store_close(s);
  s = open_ok(f->db, 0); /* and reopens cleanly */
  assert_null(kda__store_pop_warning(s));
  assert_int_equal(lookup(s, "spec", 1, &r), 1);
  kda__store_close(s);
}

static void test_random_bytes_file_moved_aside_and_new_one_works(void **state) {
  fixture *f = *state;
  unsigned char junk[8192];
  srand(1234);
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)rand();
  write_file(f->db, junk, sizeof junk);
  check_fresh_store_after_damage(f, "not an SQLite file");
}

static void test_text_file_moved_aside_and_new_one_works(void **state) {
  fixture *f = *state;
  const char text[] = "this is not a database\n";
  write_file(f->db, text, sizeof text - 1);
  check_fresh_store_after_damage(f, "shorter than a header");
}

static void test_truncated_file_moved_aside_and_new_one_works(void **state) {
  fixture *f = *state;
  kda__store *s = open_ok(f->db, 0);
  char spec[64];
  for (int i = 0; i < 200; i++) {
    snprintf(spec, sizeof spec, "spec-%d-with-some-padding-to-take-room", i);
    put_ok(s, spec, i, "vec=4,tx=32,seg=2", i + 1.0);
  }
  kda__store_close(s); /* last close checkpoints: everything is in the file */
  struct stat st;
  assert_int_equal(stat(f->db, &st), 0);
  assert_true(st.st_size > 8 * 4096);
  FILE *fp = fopen(f->db, "rb");
  assert_non_null(fp);
  size_t half = (size_t)st.st_size / 2;
  unsigned char *buf = malloc(half);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, half, fp), half);
  fclose(fp);
  write_file(f->db, buf, half);
  free(buf);
  check_fresh_store_after_damage(f, "header says");
}

/* The name the warning gives a damaged file moved aside. */
static void aside_of(const char *warning, char *out, size_t size) {
  const char *p = strstr(warning, "moved it to ");
  assert_non_null(p);
  p += strlen("moved it to ");
  size_t n = strcspn(p, " ");
  assert_true(n < size);
  memcpy(out, p, n);
  out[n] = '\0';
}

static void read_whole(const char *path, char *buf, size_t size, size_t *n) {
  FILE *fp = fopen(path, "rb");
  assert_non_null(fp);
  *n = fread(buf, 1, size, fp);
  fclose(fp);
}

/* Two damaged files found in the same second both stay for whoever looks
 * into them: the second is not renamed over the first. */
static void test_damaged_files_of_one_second_are_all_kept(void **state) {
  fixture *f = *state;
  for (int attempt = 0; attempt < 20; attempt++) {
    char first[400], second[400];
    write_file(f->db, "damaged file one\n", 17);
    kda__store *s = open_ok(f->db, 0);
    aside_of(kda__store_pop_warning(s), first, sizeof first);
    kda__store_close(s);
    remove(f->db);
    char wal[320];
    snprintf(wal, sizeof wal, "%s-wal", f->db);
    remove(wal);
    write_file(f->db, "damaged file two\n", 17);
    s = open_ok(f->db, 0);
    aside_of(kda__store_pop_warning(s), second, sizeof second);
    kda__store_close(s);
    assert_string_not_equal(first, second);
    char buf[64];
    size_t n = 0;
    read_whole(first, buf, sizeof buf, &n);
    assert_memory_equal(buf, "damaged file one\n", 17);
    read_whole(second, buf, sizeof buf, &n);
    assert_memory_equal(buf, "damaged file two\n", 17);
    size_t len = strlen(first);
    if (strncmp(second, first, len) == 0 && strcmp(second + len, ".2") == 0) return;
    /* The second crossed into the next second: the same-second rule was
     * not reached. Start again from an empty folder. */
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    assert_int_equal(mkdir(f->dir, 0700), 0);
  }
  fail_msg("20 attempts never moved two files aside within one second");
}

/* The damaged file's -wal goes with it: it must not be replayed into the
 * new database, and it may hold what whoever investigates needs. */
static void test_damaged_file_keeps_its_wal_beside_it(void **state) {
  fixture *f = *state;
  write_file(f->db, "not a database at all\n", 22);
  char wal[320];
  snprintf(wal, sizeof wal, "%s-wal", f->db);
  write_file(wal, "the old write-ahead log", 23);
  kda__store *s = open_ok(f->db, 0);
  char aside[400], aside_wal[420];
  aside_of(kda__store_pop_warning(s), aside, sizeof aside);
  put_ok(s, "spec", 1, "fresh", 1.0);
  kda__store_close(s);
  snprintf(aside_wal, sizeof aside_wal, "%s-wal", aside);
  char buf[64];
  size_t n = 0;
  read_whole(aside_wal, buf, sizeof buf, &n);
  assert_int_equal(n, 23);
  assert_memory_equal(buf, "the old write-ahead log", 23);
}

/* Two processes may find one damaged file: the one that comes second finds
 * the path naming a new database (another inode) and leaves it alone. */
static void test_move_aside_leaves_a_replaced_file_alone(void **state) {
  fixture *f = *state;
  write_file(f->db, "damaged", 7);
  struct stat seen;
  assert_int_equal(stat(f->db, &seen), 0);
  char other[320], aside[400];
  snprintf(other, sizeof other, "%s.new", f->db);
  write_file(other, "the new database", 16);
  assert_int_equal(rename(other, f->db), 0); /* another process replaced it */
  assert_int_equal(kda__store_move_aside(f->db, &seen, NULL, aside, sizeof aside), 1);
  char buf[32];
  size_t n = 0;
  read_whole(f->db, buf, sizeof buf, &n);
  assert_int_equal(n, 16); /* still the new one, in place */
  assert_int_equal(count_aside(f->dir), 0);
  struct stat now;
  assert_int_equal(stat(f->db, &now), 0);
  assert_int_equal(kda__store_move_aside(f->db, &now, NULL, aside, sizeof aside), 0);
  assert_int_equal(count_aside(f->dir), 1);
}

/* A file that stops taking writes (here: query_only, as a remount read-only
 * would) fails that one put with a message, then keeps results in memory. */
static void test_database_turned_read_only_keeps_results_in_memory(void **state) {
  fixture *f = *state;
  kda__store *s = open_ok(f->db, 0);
  put_ok(s, "before", 1, "kept", 3.0);
  assert_int_equal(sqlite3_exec(kda__store_handle(s), "PRAGMA query_only = 1", NULL, NULL, NULL),
                   SQLITE_OK);
  kda__store_key k = make_key("during", 1);
  kda__store_record r = make_record("memory", 2.0);
  int stored = 0;
  assert_int_equal(kda__store_put_result(s, &k, &r, kTrials, 3, KDA__PUT_REPLACE, &stored),
                   KDA_ERROR_STORE);
  assert_non_null(strstr(kda_last_error(), "kept in memory"));
  assert_true(kda__store_is_read_only(s));
  assert_int_equal(lookup(s, "during", 1, &r), 1);
  assert_true(r.in_overlay);
  put_ok(s, "after", 1, "memory", 2.0); /* later puts: memory, no error */
  assert_int_equal(lookup(s, "before", 1, &r), 1);
  assert_false(r.in_overlay);
  kda__store_close(s);
  assert_int_equal(file_scalar(f->db, "SELECT count(*) FROM results"), 1);
}

/* Another writer holding the file (busy) fails a put, but is not a reason
 * to give the file up: once it lets go, puts go to the file again. */
static void test_busy_database_is_used_again_once_free(void **state) {
  fixture *f = *state;
  kda__store *s = open_ok(f->db, 0);
  put_ok(s, "before", 1, "kept", 3.0);
  /* The store waits 5 s per try and tries 20 times; a 1 ms wait keeps the
   * test short and changes nothing else. */
  assert_int_equal(sqlite3_busy_timeout(kda__store_handle(s), 1), SQLITE_OK);
  sqlite3 *other = NULL;
  assert_int_equal(sqlite3_open(f->db, &other), SQLITE_OK);
  assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
  kda__store_key k = make_key("during", 1);
  kda__store_record r = make_record("lost", 2.0);
  int stored = 0;
  assert_int_equal(kda__store_put_result(s, &k, &r, kTrials, 3, KDA__PUT_REPLACE, &stored),
                   KDA_ERROR_STORE);
  assert_non_null(strstr(kda_last_error(), "locked"));
  assert_int_equal(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(other);
  assert_false(kda__store_is_read_only(s));
  assert_null(kda__store_pop_warning(s));
  put_ok(s, "after", 1, "file", 2.0);
  assert_int_equal(lookup(s, "after", 1, &r), 1);
  assert_false(r.in_overlay);
  kda__store_close(s);
  assert_int_equal(file_scalar(f->db, "SELECT count(*) FROM results"), 2);
}

static kda__cubin_key make_cubin_key(const char *config) {
  kda__cubin_key k = {90, "12.8.93 (build 35583870)", "-arch=sm_90 -O3", "srchash", "spec", config};
  return k;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* A warm call's first load of a cubin refreshes its last_used: a write the
 * store may skip, and does rather than wait, when another connection holds
 * the write lock (a kda-tune import, a stopped process). Then a put that
 * must write waits KDA__STORE_WRITE_WAIT_MS in all, not 20 busy timeouts
 * (100 s, which a kernel call waited before). */
static void test_writer_that_never_lets_go_costs_a_touch_nothing_and_a_put_10_s(void **state) {
  fixture *f = *state;
  kda__store *s = open_ok(f->db, 0);
  unsigned char cubin[256];
  memset(cubin, 0x5a, sizeof cubin);
  kda__cubin_key k = make_cubin_key("vec=4");
  assert_int_equal(kda__store_put_cubin(s, &k, cubin, sizeof cubin, 1.0), KDA_OK);
  file_exec(f->db, "UPDATE cubins SET last_used = 7");
  sqlite3 *other = NULL;
  assert_int_equal(sqlite3_open(f->db, &other), SQLITE_OK);
  assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);

  double t0 = now_s();
  void *blob = NULL;
  size_t size = 0;
  int found = 0;
  assert_int_equal(kda__store_lookup_cubin(s, &k, &found, &blob, &size, NULL), KDA_OK);
  const double touch_s = now_s() - t0;
  assert_int_equal(found, 1);
  assert_int_equal(size, sizeof cubin);
  free(blob);
  if (touch_s > 1.0) fail_msg("the lookup waited %.1f s for the write lock", touch_s);

  t0 = now_s();
  kda__store_key key = make_key("during", 1);
  kda__store_record r = make_record("late", 2.0);
  assert_int_equal(kda__store_put_result(s, &key, &r, kTrials, 3, KDA__PUT_REPLACE, NULL),
                   KDA_ERROR_STORE);
  const double put_s = now_s() - t0;
  assert_non_null(strstr(kda_last_error(), "locked"));
  if (put_s < KDA__STORE_WRITE_WAIT_MS / 1e3 - 0.5 || put_s > KDA__STORE_WRITE_WAIT_MS / 1e3 + 6.0)
    fail_msg("the put gave up after %.1f s", put_s);
  printf("[          ] with the write lock held: lookup %.3f s (touch skipped), put %.1f s\n",
         touch_s, put_s);
  assert_int_equal(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(other);
  assert_int_equal(file_scalar(f->db, "SELECT last_used FROM cubins"), 7); /* skipped, not queued */
  assert_false(kda__store_is_read_only(s));
  kda__store_close(s);
}

static void test_tampered_cubin_row_is_miss_and_gets_dropped(void **state) {
  fixture *f = *state;
  kda__store *s = open_ok(f->db, 0);
  unsigned char cubin[3000];
  for (size_t i = 0; i < sizeof cubin; i++) cubin[i] = (unsigned char)(i * 7);
  kda__cubin_key k = make_cubin_key("vec=4");
  assert_int_equal(kda__store_put_cubin(s, &k, cubin, sizeof cubin, 12.5), KDA_OK);
  void *blob = NULL;
  size_t size = 0;
  int found = 0, tampered = -1;
  assert_int_equal(kda__store_lookup_cubin(s, &k, &found, &blob, &size, &tampered), KDA_OK);
  assert_int_equal(found, 1);
  assert_int_equal(tampered, 0);
  assert_int_equal(size, sizeof cubin);
  assert_memory_equal(blob, cubin, sizeof cubin);
  free(blob);

  sqlite3 *db = kda__store_handle(s);
  assert_int_equal(sqlite3_exec(db, "UPDATE cubins SET blob = zeroblob(3000)", NULL, NULL, NULL), SQLITE_OK);
  blob = NULL;
  assert_int_equal(kda__store_lookup_cubin(s, &k, &found, &blob, &size, &tampered), KDA_OK);
  assert_int_equal(found, 0);
  assert_int_equal(tampered, 1);
  assert_null(blob);
  assert_int_equal(scalar(db, "SELECT count(*) FROM cubins"), 0);
  const char *w = kda__store_pop_warning(s);
  assert_non_null(w);
  assert_non_null(strstr(w, "sha256"));
  kda__store_close(s);
}

/* The cubin of one spec and config, stored by the NVRTC build `nvrtc`,
 * its bytes filled with `fill`. */
static void put_build(kda__store *s, const char *nvrtc, unsigned char fill) {
  unsigned char cubin[500];
  memset(cubin, fill, sizeof cubin);
  kda__cubin_key k = make_cubin_key("vec=4");
  k.nvrtc_version = nvrtc;
  assert_int_equal(kda__store_put_cubin(s, &k, cubin, sizeof cubin, 1.0), KDA_OK);
}

/* What a process of NVRTC build `mine` loads when its own cubin is
 * missing: the fill byte of the cubin found (0: none) and its builder. */
static int other_build_of(kda__store *s, const char *mine, char *by, size_t by_size) {
  kda__cubin_key k = make_cubin_key("vec=4");
  k.nvrtc_version = mine;
  void *blob = NULL;
  size_t size = 0;
  int found = -1, tampered = -1;
  assert_int_equal(kda__store_lookup_cubin_other_build(s, &k, &found, &blob, &size, &tampered,
                                                       by, by_size),
                   KDA_OK);
  assert_int_equal(tampered, 0);
  if (!found) {
    assert_null(blob);
    assert_string_equal(by, "");
    return 0;
  }
  assert_int_equal(size, 500);
  const int fill = ((unsigned char *)blob)[0];
  free(blob);
  return fill;
}

/* Another NVRTC build's cubin of the same major version is found, the same
 * release first, then the most recently used; never another major version,
 * never the process's own build (an exact lookup's business). */
static void test_other_build_lookup_prefers_the_same_release(void **state) {
  fixture *f = *state;
  kda__store *s = open_ok(f->db, 0);
  char by[160];
  put_build(s, "13.0 build-id=aaaa", 0xa0);
  put_build(s, "12.8 build-id=cccc", 0xc8);
  put_build(s, "130.0 build-id=dddd", 0xd0); /* "13." is not its prefix */
  assert_int_equal(other_build_of(s, "13.0 build-id=bbbb", by, sizeof by), 0xa0);
  assert_string_equal(by, "13.0 build-id=aaaa");
  assert_int_equal(other_build_of(s, "13.0 build-id=aaaa", by, sizeof by), 0); /* its own */
  assert_int_equal(other_build_of(s, "12.4 libnvrtc.so.12.4.99", by, sizeof by), 0xc8);
  assert_int_equal(other_build_of(s, "11.8 build-id=eeee", by, sizeof by), 0);
  assert_int_equal(other_build_of(s, "nodots", by, sizeof by), 0);

  /* A 13.2 cubin used more recently: a 13.1 process takes it, the most
   * recently used; a 13.0 process still takes the 13.0 one (whose hit then
   * refreshes its last_used, so it goes second). */
  put_build(s, "13.2 build-id=ffff", 0xf2);
  sqlite3 *db = kda__store_handle(s);
  assert_int_equal(sqlite3_exec(db,
                                "UPDATE cubins SET last_used = 100 WHERE nvrtc_version LIKE '13.0 %';"
                                "UPDATE cubins SET last_used = 200 WHERE nvrtc_version LIKE '13.2 %';",
                                NULL, NULL, NULL),
                   SQLITE_OK);
  assert_int_equal(other_build_of(s, "13.1 build-id=9999", by, sizeof by), 0xf2);
  assert_string_equal(by, "13.2 build-id=ffff");
  assert_int_equal(other_build_of(s, "13.0 build-id=bbbb", by, sizeof by), 0xa0);

  /* A tampered row is a miss, reported and deleted, as in the exact lookup. */
  assert_int_equal(sqlite3_exec(db,
                                "UPDATE cubins SET blob = zeroblob(500) WHERE nvrtc_version LIKE '13.0 %'",
                                NULL, NULL, NULL),
                   SQLITE_OK);
  kda__cubin_key k = make_cubin_key("vec=4");
  k.nvrtc_version = "13.0 build-id=bbbb";
  void *blob = NULL;
  size_t size = 0;
  int found = -1, tampered = -1;
  assert_int_equal(kda__store_lookup_cubin_other_build(s, &k, &found, &blob, &size, &tampered,
                                                       by, sizeof by),
                   KDA_OK);
  assert_int_equal(found, 0);
  assert_int_equal(tampered, 1);
  assert_int_equal(scalar(db, "SELECT count(*) FROM cubins WHERE nvrtc_version LIKE '13.0 %'"), 0);
  assert_non_null(kda__store_pop_warning(s));
  /* The next lookup finds the 13.2 build's. */
  assert_int_equal(other_build_of(s, "13.0 build-id=bbbb", by, sizeof by), 0xf2);
  kda__store_close(s);
}

static void test_cubin_cap_evicts_least_recently_used(void **state) {
  fixture *f = *state;
  kda__store *s = open_ok(f->db, 0);
  unsigned char cubin[1000];
  memset(cubin, 0x5a, sizeof cubin);
  const char *names[3] = {"a", "b", "c"};
  for (int i = 0; i < 3; i++) {
    kda__cubin_key k = make_cubin_key(names[i]);
    assert_int_equal(kda__store_put_cubin(s, &k, cubin, sizeof cubin, 1.0), KDA_OK);
  }
  sqlite3 *db = kda__store_handle(s);
  /* "b" used long ago, "a" recently, "c" in between. */
  sqlite3_exec(db, "UPDATE cubins SET last_used = 100 WHERE config = 'b';"
                   "UPDATE cubins SET last_used = 300 WHERE config = 'a';"
                   "UPDATE cubins SET last_used = 200 WHERE config = 'c';",
               NULL, NULL, NULL);
  kda__store_set_cubin_cap(s, 2500);
  kda__cubin_key d = make_cubin_key("d");
  assert_int_equal(kda__store_put_cubin(s, &d, cubin, sizeof cubin, 1.0), KDA_OK);
  /* d (new) + a kept; c and b evicted to fit 2500 bytes. */
  assert_int_equal(scalar(db, "SELECT count(*) FROM cubins"), 2);
  assert_int_equal(scalar(db, "SELECT count(*) FROM cubins WHERE config IN ('a', 'd')"), 2);
  int64_t evicted = -1;
  assert_int_equal(kda__store_evict_cubins(s, 1000, &evicted), KDA_OK);
  assert_int_equal(evicted, 1);
  kda__store_stats st;
  assert_int_equal(kda__store_get_stats(s, &st), KDA_OK);
  assert_int_equal(st.cubins, 1);
  assert_int_equal(st.cubin_bytes, 1000);
  kda__store_close(s);
}

static void test_lease_acquire_expire_takeover_release(void **state) {
  fixture *f = *state;
  kda__store *a = open_ok(f->db, 0);
  kda__store *b = open_ok(f->db, 0);
  kda__lease l;
  assert_int_equal(kda__store_lease_acquire(a, "gate_cumsum/spec/3", "1@host-a", 0.3, &l), KDA_OK);
  assert_true(l.acquired);
  assert_false(l.taken_over);
  assert_int_equal(kda__store_lease_acquire(b, "gate_cumsum/spec/3", "2@host-b", 0.3, &l), KDA_OK);
  assert_false(l.acquired);
  assert_string_equal(l.holder, "1@host-a");
  assert_true(l.expires_at > 0);
  assert_int_equal(kda__store_lease_acquire(a, "gate_cumsum/spec/3", "1@host-a", 0.3, &l), KDA_OK);
  assert_true(l.acquired); /* renewal by the holder */
  assert_int_equal(kda__store_lease_acquire(b, "other", "2@host-b", 10, &l), KDA_OK);
  assert_true(l.acquired); /* other keys are independent */

  struct timespec nap = {0, 400000000L}; /* holder "crashed": lease expires */
  nanosleep(&nap, NULL);
  assert_int_equal(kda__store_lease_acquire(b, "gate_cumsum/spec/3", "2@host-b", 10, &l), KDA_OK);
  assert_true(l.acquired);
  assert_true(l.taken_over);
  int released = -1;
  assert_int_equal(kda__store_lease_release(a, "gate_cumsum/spec/3", "1@host-a", &released), KDA_OK);
  assert_int_equal(released, 0); /* not a's any more */
  assert_int_equal(kda__store_lease_release(b, "gate_cumsum/spec/3", "2@host-b", &released), KDA_OK);
  assert_int_equal(released, 1);
  assert_int_equal(kda__store_lease_acquire(a, "gate_cumsum/spec/3", NULL, 5, &l), KDA_OK);
  assert_true(l.acquired);
  char self[256];
  kda__store_default_holder(self, sizeof self);
  assert_string_equal(l.holder, self);
  assert_non_null(strchr(self, '@'));
  assert_int_equal(kda__store_lease_release(a, "gate_cumsum/spec/3", NULL, &released), KDA_OK);
  assert_int_equal(released, 1);
  kda__store_close(a);
  kda__store_close(b);
}

#ifndef KDA_TEST_PROCS /* overridable for stress runs */
#define KDA_TEST_PROCS 8
#define KDA_TEST_DISTINCT 40
#define KDA_TEST_SHARED 20
#endif

/* A child: its own store (nothing shared across fork), distinct keys and
 * keys every child writes. Any failure is the exit code. */
static int child_writer(const char *path, int id) {
  kda__store *s = NULL;
  if (kda__store_open(path, 0, &s) != KDA_OK) return 10;
  if (kda__store_is_read_only(s)) {
    const char *w = kda__store_pop_warning(s);
    fprintf(stderr, "child %d: read-only at open: %s\n", id, w != NULL ? w : "");
    return 11;
  }
  char spec[64];
  for (int i = 0; i < KDA_TEST_DISTINCT + KDA_TEST_SHARED; i++) {
    int shared = i >= KDA_TEST_DISTINCT;
    if (shared) snprintf(spec, sizeof spec, "shared-%d", i - KDA_TEST_DISTINCT);
    else snprintf(spec, sizeof spec, "proc-%d-key-%d", id, i);
    kda__store_key k = make_key(spec, i);
    kda__store_record r = make_record(shared ? "shared" : "own", 1.0 + id);
    if (kda__store_put_result(s, &k, &r, kTrials, 3, KDA__PUT_REPLACE, NULL) != KDA_OK) {
      fprintf(stderr, "child %d: %s\n", id, kda_last_error());
      return 12;
    }
    if (kda__store_is_read_only(s)) return 13;
    kda__store_record back;
    int found = 0;
    if (kda__store_lookup_result(s, &k, &found, &back) != KDA_OK || !found) return 14;
  }
  kda__lease l;
  if (kda__store_lease_acquire(s, "shared-lease", NULL, 60, &l) != KDA_OK) return 15;
  kda__store_close(s);
  return 0;
}

static void test_forked_processes_write_without_lock_errors_or_lost_rows(void **state) {
  fixture *f = *state;
  /* Children create the file themselves, all at once. */
  pid_t pids[KDA_TEST_PROCS];
  for (int p = 0; p < KDA_TEST_PROCS; p++) {
    pids[p] = fork();
    assert_true(pids[p] >= 0);
    if (pids[p] == 0) _exit(child_writer(f->db, p));
  }
  for (int p = 0; p < KDA_TEST_PROCS; p++) {
    int status = 0;
    assert_int_equal(waitpid(pids[p], &status, 0), pids[p]);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) != 0) fail_msg("child %d exited %d", p, WEXITSTATUS(status));
  }
  const int64_t rows = KDA_TEST_PROCS * KDA_TEST_DISTINCT + KDA_TEST_SHARED;
  assert_int_equal(file_scalar(f->db, "SELECT count(*) FROM results"), rows);
  assert_int_equal(file_scalar(f->db, "SELECT count(*) FROM trials"), rows * 3);
  assert_int_equal(file_scalar(f->db, "SELECT count(*) FROM results WHERE config = 'shared'"), KDA_TEST_SHARED);
  assert_int_equal(file_scalar(f->db, "SELECT count(*) FROM trials WHERE result_id NOT IN (SELECT id FROM results)"), 0);
  assert_int_equal(file_scalar(f->db, "SELECT count(*) FROM leases"), 1);
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open_v2(f->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
  sqlite3_finalize(st);
  sqlite3_close(db);
  printf("[          ] %d processes wrote %lld rows (%d shared keys), integrity ok\n",
         KDA_TEST_PROCS, (long long)rows, KDA_TEST_SHARED);
}

static void test_disk_full_gives_store_error_and_lookups_keep_working(void **state) {
  fixture *f = *state;
  kda__store *s = open_ok(f->db, 0);
  put_ok(s, "before", 1, "kept", 3.0);
  sqlite3 *db = kda__store_handle(s);
  char sql[64];
  snprintf(sql, sizeof sql, "PRAGMA max_page_count = %lld", (long long)scalar(db, "PRAGMA page_count"));
  assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);

  static unsigned char big[256 * 1024];
  memset(big, 0x11, sizeof big);
  kda__cubin_key k = make_cubin_key("big");
  assert_int_equal(kda__store_put_cubin(s, &k, big, sizeof big, 1.0), KDA_ERROR_STORE);
  assert_non_null(strstr(kda_last_error(), "full"));
  assert_non_null(strstr(kda_last_error(), "kept in memory"));
  assert_true(kda__store_is_read_only(s));
  const char *w = kda__store_pop_warning(s);
  assert_non_null(w);
  assert_non_null(strstr(w, "kept in memory"));

  kda__store_record r;
  assert_int_equal(lookup(s, "before", 1, &r), 1); /* the file still answers */
  assert_false(r.in_overlay);
  void *blob = NULL;
  size_t size = 0;
  int found = 0;
  assert_int_equal(kda__store_lookup_cubin(s, &k, &found, &blob, &size, NULL), KDA_OK);
  assert_int_equal(found, 1); /* the failed put was kept in memory */
  free(blob);
  put_ok(s, "after", 1, "memory", 2.0); /* later puts: memory, no error */
  assert_int_equal(lookup(s, "after", 1, &r), 1);
  assert_true(r.in_overlay);
  assert_null(kda__store_pop_warning(s)); /* reported once */
  kda__store_close(s);
  assert_int_equal(file_scalar(f->db, "SELECT count(*) FROM results"), 1);
}

static void check_default(const char *expect_path, const char *expect_rule) {
  char path[1024];
  const char *rule = NULL;
  assert_int_equal(kda__store_default_path(path, sizeof path, &rule), KDA_OK);
  assert_string_equal(path, expect_path);
  assert_string_equal(rule, expect_rule);
  char dir[1024];
  snprintf(dir, sizeof dir, "%s", path);
  *strrchr(dir, '/') = '\0';
  struct stat st;
  assert_int_equal(stat(dir, &st), 0); /* the folder was created */
  assert_true(S_ISDIR(st.st_mode));
}

static void test_default_path_follows_each_environment_variable(void **state) {
  fixture *f = *state;
  char *saved[3];
  const char *names[3] = {"KDA_CACHE_DIR", "XDG_CACHE_HOME", "HOME"};
  for (int i = 0; i < 3; i++) saved[i] = getenv(names[i]) ? strdup(getenv(names[i])) : NULL;
  char a[512], b[512], h[512], want[600];
  snprintf(a, sizeof a, "%s/kda-dir/nested", f->dir);
  snprintf(b, sizeof b, "%s/xdg", f->dir);
  snprintf(h, sizeof h, "%s/home", f->dir);
  setenv("HOME", h, 1);
  setenv("XDG_CACHE_HOME", b, 1);
  setenv("KDA_CACHE_DIR", a, 1);
  snprintf(want, sizeof want, "%s/tune.db", a);
  check_default(want, "KDA_CACHE_DIR");
  unsetenv("KDA_CACHE_DIR");
  snprintf(want, sizeof want, "%s/kda/tune.db", b);
  check_default(want, "XDG_CACHE_HOME");
  setenv("XDG_CACHE_HOME", "relative/ignored", 1); /* invalid per the XDG spec */
  snprintf(want, sizeof want, "%s/.cache/kda/tune.db", h);
  check_default(want, "default");
  unsetenv("XDG_CACHE_HOME");
  check_default(want, "default");

  kda__store *s = open_ok(NULL, 0);
  assert_string_equal(kda__store_path(s), want);
  assert_string_equal(kda__store_path_rule(s), "default");
  assert_int_equal(kda__store_get_mode(s), KDA__STORE_MODE_READ_WRITE);
  kda__store_close(s);
  assert_int_equal(access(want, F_OK), 0);

  for (int i = 0; i < 3; i++) {
    if (saved[i] != NULL) setenv(names[i], saved[i], 1);
    else unsetenv(names[i]);
    free(saved[i]);
  }
}

static void test_gpu_key_is_canonical(void **state) {
  (void)state;
  kda_device_info info;
  memset(&info, 0, sizeof info);
  info.cc_major = 9;
  info.cc_minor = 0;
  info.pci_device_id = 0x2330;
  info.sm_count = 132;
  info.l2_bytes = 52428800;
  char key[64];
  assert_true(kda__store_gpu_key(&info, key, sizeof key) > 0);
  assert_string_equal(key, "sm90-pci2330-sms132-l2_52428800");
  assert_int_equal(kda__store_gpu_key(&info, key, 8), -1);
  assert_string_equal(kda__trial_status_name(KDA__TRIAL_UNWRITTEN), "unwritten");
  assert_null(kda__trial_status_name((kda__trial_status)99));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mode_decision_follows_writability_and_flags),
      cmocka_unit_test(test_gpu_key_is_canonical),
      cmocka_unit_test_setup_teardown(test_round_trip_with_trials, setup, teardown),
      cmocka_unit_test_setup_teardown(test_same_key_put_twice_keeps_last_and_faster_mode_keeps_faster, setup, teardown),
      cmocka_unit_test_setup_teardown(test_upgrade_v0_schema_keeps_rows, setup, teardown),
      cmocka_unit_test_setup_teardown(test_provenance_columns_come_and_files_without_them_still_work,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_a_reader_holding_a_journal_file_costs_the_open_a_write_wait,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_hot_journal_of_a_killed_creator_is_rolled_back_for_readers, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_newer_schema_opened_read_only_with_warning, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unwritable_file_uses_overlay_and_warns_once, setup, teardown),
      cmocka_unit_test_setup_teardown(test_another_users_database_is_read, setup, teardown),
      cmocka_unit_test_setup_teardown(test_results_readable_view_matches_the_buckets, setup, teardown),
      cmocka_unit_test_setup_teardown(test_shipped_immutable_db_under_overlay, setup, teardown),
      cmocka_unit_test_setup_teardown(test_random_bytes_file_moved_aside_and_new_one_works, setup, teardown),
      cmocka_unit_test_setup_teardown(test_text_file_moved_aside_and_new_one_works, setup, teardown),
      cmocka_unit_test_setup_teardown(test_truncated_file_moved_aside_and_new_one_works, setup, teardown),
      cmocka_unit_test_setup_teardown(test_damaged_files_of_one_second_are_all_kept, setup, teardown),
      cmocka_unit_test_setup_teardown(test_damaged_file_keeps_its_wal_beside_it, setup, teardown),
      cmocka_unit_test_setup_teardown(test_move_aside_leaves_a_replaced_file_alone, setup, teardown),
      cmocka_unit_test_setup_teardown(test_database_turned_read_only_keeps_results_in_memory, setup, teardown),
      cmocka_unit_test_setup_teardown(test_busy_database_is_used_again_once_free, setup, teardown),
      cmocka_unit_test_setup_teardown(test_writer_that_never_lets_go_costs_a_touch_nothing_and_a_put_10_s, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tampered_cubin_row_is_miss_and_gets_dropped, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cubin_cap_evicts_least_recently_used, setup, teardown),
      cmocka_unit_test_setup_teardown(test_other_build_lookup_prefers_the_same_release, setup, teardown),
      cmocka_unit_test_setup_teardown(test_lease_acquire_expire_takeover_release, setup, teardown),
      cmocka_unit_test_setup_teardown(test_forked_processes_write_without_lock_errors_or_lost_rows, setup, teardown),
      cmocka_unit_test_setup_teardown(test_disk_full_gives_store_error_and_lookups_keep_working, setup, teardown),
      cmocka_unit_test_setup_teardown(test_default_path_follows_each_environment_variable, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
