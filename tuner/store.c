/* Opening and closing the tuning database: choosing a mode from what the
 * process may write, repairing a damaged file, and the small helpers the
 * other store files share (transactions, failures, warnings, overlay). */
#include "store_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "error.h"

/* ---------------------------------------------------------------- helpers */

double kda__store_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Jitter for retries, so processes that collided do not collide again in
 * step (rand() would give every forked child the same sequence). */
static int jitter_ms(int range) {
  static _Thread_local uint32_t x;
  if (x == 0) x = ((uint32_t)getpid() * 2654435761u) ^ (uint32_t)clock() ^ 1u;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return (int)(x % (uint32_t)range);
}

void kda__store_warn(kda__store *s, unsigned condition, const char *fmt, ...) {
  if (s->warned & condition) return;
  s->warned |= condition;
  size_t used = strlen(s->pending);
  if (used + 2 >= sizeof s->pending) return;
  if (used > 0) s->pending[used++] = '\n';
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->pending + used, sizeof s->pending - used, fmt, ap);
  va_end(ap);
}

const char *kda__store_pop_warning(kda__store *s) {
  if (s == NULL || s->pending[0] == '\0') return NULL;
  memcpy(s->popped, s->pending, sizeof s->popped);
  s->pending[0] = '\0';
  return s->popped;
}

kda_status kda__store_fail(kda__store *s, sqlite3 *db, int rc, const char *what) {
  s->last_rc = rc;
  const char *msg = db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  return kda__fail(KDA_ERROR_STORE, "tuning database %s: %s: %s (SQLite code %d)",
                   db == s->mem ? "(in-memory overlay)" : s->path, what, msg, rc);
}

static double monotonic_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

int kda__store_begin(sqlite3 *db) {
  /* busy_timeout already waited KDA__STORE_BUSY_MS; WAL still answers BUSY
   * at once in a few cases (recovery, a checkpoint racing the open), and a
   * writer that waited its full timeout under heavy load deserves another
   * go rather than a lost result, but no more than KDA__STORE_WRITE_WAIT_MS
   * in all: the library writes from a kernel call, and a writer that never
   * lets go (a stopped process) must not hold that call for minutes. */
  const double start = monotonic_ms();
  int rc = SQLITE_BUSY;
  for (int attempt = 0; attempt < 20; attempt++) {
    rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED) return rc;
    if (monotonic_ms() - start >= KDA__STORE_WRITE_WAIT_MS) break;
    struct timespec nap = {0, (long)(5 + jitter_ms(45)) * 1000000L};
    nanosleep(&nap, NULL);
  }
  return rc;
}

int kda__store_begin_now(sqlite3 *db) {
  sqlite3_busy_timeout(db, 0);
  const int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  sqlite3_busy_timeout(db, KDA__STORE_BUSY_MS);
  return rc;
}

kda_status kda__store_try_write(kda__store *s, sqlite3 *db, const char *what,
                                kda__store_write_fn fn, void *ctx) {
  if (kda__store_begin_now(db) != SQLITE_OK) return KDA_OK; /* taken: skipped, as promised */
  kda_status st = fn(s, db, ctx);
  if (st == KDA_OK && kda__store_commit(db) != SQLITE_OK) st = kda__store_fail(s, db, sqlite3_errcode(db), what);
  if (st != KDA_OK) kda__store_rollback(db);
  return st;
}

int kda__store_commit(sqlite3 *db) {
  int rc = SQLITE_BUSY;
  for (int attempt = 0; attempt < 20; attempt++) {
    rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if ((rc & 0xff) != SQLITE_BUSY) return rc;
    struct timespec nap = {0, 10000000L};
    nanosleep(&nap, NULL);
  }
  return rc;
}

void kda__store_rollback(sqlite3 *db) {
  if (db != NULL && !sqlite3_get_autocommit(db)) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
}

int kda__store_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **stmt) {
  return sqlite3_prepare_v2(db, sql, -1, stmt, NULL);
}

int kda__store_bind_text(sqlite3_stmt *stmt, int index, const char *text) {
  if (text == NULL) return sqlite3_bind_null(stmt, index);
  return sqlite3_bind_text(stmt, index, text, -1, SQLITE_TRANSIENT);
}

int kda__store_bind_opt(sqlite3_stmt *stmt, int index, double value) {
  if (value < 0) return sqlite3_bind_null(stmt, index);
  return sqlite3_bind_double(stmt, index, value);
}

sqlite3 *kda__store_overlay(kda__store *s) {
  if (s->mem != NULL) return s->mem;
  sqlite3 *mem = NULL;
  int rc = sqlite3_open_v2(":memory:", &mem,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  int version = 0;
  if (rc == SQLITE_OK) rc = kda__store_configure(mem, 0);
  if (rc == SQLITE_OK) rc = kda__store_schema_apply(mem, &version);
  if (rc != SQLITE_OK) {
    kda__store_fail(s, mem, rc, "creating the in-memory overlay");
    sqlite3_close(mem);
    return NULL;
  }
  s->mem = mem;
  return mem;
}

sqlite3 *kda__store_writer(kda__store *s) {
  if (s->mode == KDA__STORE_MODE_READ_WRITE && !s->degraded && s->db != NULL) return s->db;
  return kda__store_overlay(s);
}

int kda__store_file_readable(const kda__store *s) {
  /* A file below schema v1 (read-only, so not migrated) has none of the
   * tables the queries name: reading it would only produce errors. */
  return s->db != NULL && !s->file_broken && s->schema_version >= 1;
}

int kda__store_degrade(kda__store *s, int rc) {
  if (s->degraded) return 1;
  switch (rc & 0xff) {
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_READONLY:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
      break;
    default:
      return 0; /* busy, constraint, misuse: not a property of the file */
  }
  s->degraded = 1;
  if (kda__store_rc_is_corrupt(rc)) s->file_broken = 1;
  kda__store_warn(s, KDA__WARN_WRITE_FAILED,
                  "kda: writing the tuning database %s failed (%s); new tuning results are "
                  "kept in memory for the rest of this process",
                  s->path, sqlite3_errstr(rc));
  return 1;
}

void kda__store_read_failed(kda__store *s, int rc) {
  if (!kda__store_rc_is_corrupt(rc)) return;
  s->file_broken = 1;
  s->degraded = 1;
  kda__store_warn(s, KDA__WARN_READ_FAILED,
                  "kda: the tuning database %s is corrupt (%s); it is ignored for the rest of "
                  "this process and will be moved aside by the next kda-tune check",
                  s->path, sqlite3_errstr(rc));
}

/* ------------------------------------------------------------------ modes */

kda__store_mode kda__store_choose_mode(const kda__store_probe *probe, unsigned flags) {
  kda__store_probe p = *probe;
  if (flags & KDA__STORE_ASSUME_UNWRITABLE) p.file_writable = p.dir_writable = 0;
  if (flags & KDA__STORE_OVERLAY) return p.exists ? KDA__STORE_MODE_IMMUTABLE : KDA__STORE_MODE_MEMORY;
  if (flags & KDA__STORE_READ_ONLY) return p.exists ? KDA__STORE_MODE_READ_ONLY : KDA__STORE_MODE_MEMORY;
  if (p.exists) {
    return p.file_writable && p.dir_writable ? KDA__STORE_MODE_READ_WRITE : KDA__STORE_MODE_READ_ONLY;
  }
  return p.dir_writable ? KDA__STORE_MODE_READ_WRITE : KDA__STORE_MODE_MEMORY;
}

void kda__store_probe_path(const char *path, kda__store_probe *probe) {
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash == NULL) snprintf(dir, sizeof dir, ".");
  else if (slash == dir) dir[1] = '\0';
  else *slash = '\0';
  probe->exists = access(path, F_OK) == 0;
  probe->file_writable = probe->exists && access(path, W_OK) == 0;
  probe->dir_writable = access(dir, W_OK) == 0;
}

/* Percent-encodes path into a "file:" URI with immutable=1 (a shipped file
 * on read-only media has no -shm to share and never changes). */
static int immutable_uri(const char *path, char *buf, size_t size) {
  static const char hex[] = "0123456789ABCDEF";
  size_t n = (size_t)snprintf(buf, size, "file:");
  for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
    int plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                *p == '/' || *p == '.' || *p == '-' || *p == '_' || *p == '~';
    if (n + 4 >= size) return -1;
    if (plain) {
      buf[n++] = (char)*p;
    } else {
      buf[n++] = '%';
      buf[n++] = hex[*p >> 4];
      buf[n++] = hex[*p & 15];
    }
  }
  int m = snprintf(buf + n, size - n, "?immutable=1");
  return m < 0 || (size_t)m >= size - n ? -1 : 0;
}

static int open_connection(const char *path, kda__store_mode mode, sqlite3 **db) {
  *db = NULL;
  if (mode == KDA__STORE_MODE_IMMUTABLE) {
    char uri[PATH_MAX * 3 + 32];
    if (immutable_uri(path, uri, sizeof uri) != 0) return SQLITE_CANTOPEN;
    return sqlite3_open_v2(uri, db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX,
                           NULL);
  }
  int flags = mode == KDA__STORE_MODE_READ_WRITE
                  ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
                  : SQLITE_OPEN_READONLY;
  int rc = sqlite3_open_v2(path, db, flags | SQLITE_OPEN_NOMUTEX, NULL);
  /* Before the first read: another process may be creating the file. */
  if (rc == SQLITE_OK) rc = sqlite3_busy_timeout(*db, KDA__STORE_BUSY_MS);
  return rc;
}

/* Reads the schema table: the first read is what reveals a non-database. */
static int read_probe(sqlite3 *db, int verify) {
  sqlite3_stmt *st = NULL;
  int rc = kda__store_prepare(db, "SELECT count(*) FROM sqlite_master", &st);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    rc = rc == SQLITE_ROW ? SQLITE_OK : rc;
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_OK || !verify) return rc;
  rc = kda__store_prepare(db, "PRAGMA quick_check(1)", &st);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      const unsigned char *text = sqlite3_column_text(st, 0);
      rc = text != NULL && strcmp((const char *)text, "ok") == 0 ? SQLITE_OK : SQLITE_CORRUPT;
    }
  }
  sqlite3_finalize(st);
  return rc;
}

/* Opens the file in mode; sets *version. Returns a SQLite code. */
static int open_file_once(kda__store *s, kda__store_mode mode, int verify, sqlite3 **out,
                          int *version) {
  sqlite3 *db = NULL;
  *version = 0;
  int rc = open_connection(s->path, mode, &db);
  if (rc == SQLITE_OK) rc = read_probe(db, verify);
  if (rc == SQLITE_OK) rc = kda__store_configure(db, mode == KDA__STORE_MODE_READ_WRITE);
  if (rc == SQLITE_OK) {
    rc = mode == KDA__STORE_MODE_READ_WRITE ? kda__store_schema_apply(db, version)
                                            : kda__store_schema_version_of(db, version);
  }
  if (rc != SQLITE_OK) {
    /* The extended code says why a read-only open failed (needs_immutable). */
    int extended = db != NULL ? sqlite3_extended_errcode(db) : rc;
    if ((extended & 0xff) == (rc & 0xff)) rc = extended;
    sqlite3_close(db);
    return rc;
  }
  *out = db;
  return SQLITE_OK;
}

/* A process killed while it wrote the file in rollback-journal mode (while
 * creating it, before the switch to WAL) leaves a hot journal that only a
 * connection allowed to write may roll back: a read-only open then fails
 * with SQLITE_READONLY (ROLLBACK). Where the file is writable, a read-write
 * connection's first read performs SQLite's own rollback (the committed
 * content is unchanged) and the read-only open can be tried again. The
 * kill stress test met it: `kda-tune stats` after a prewarm killed 8 ms in. */
static int roll_back_hot_journal(const char *path) {
  sqlite3 *db = NULL;
  int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_busy_timeout(db, KDA__STORE_BUSY_MS);
  if (rc == SQLITE_OK) rc = read_probe(db, 0);
  sqlite3_close(db);
  return rc;
}

static int open_file_in_mode(kda__store *s, kda__store_mode mode, int verify, sqlite3 **out,
                             int *version) {
  /* While several processes create the file at once, the switch to WAL and
   * its recovery can answer BUSY without waiting: tried again. But for a
   * bounded time, as a write waits (KDA__STORE_WRITE_WAIT_MS): a reader
   * holding a rollback-journal file open (a sqlite3 shell inside a
   * transaction) blocks the switch for as long as it likes, and the open
   * is a server's first kernel call. */
  const double start = monotonic_ms();
  int rc = SQLITE_BUSY;
  for (;;) {
    rc = open_file_once(s, mode, verify, out, version);
    if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED) return rc;
    if (monotonic_ms() - start >= KDA__STORE_WRITE_WAIT_MS) return rc;
    sqlite3_sleep(10 + jitter_ms(40));
  }
}

/* A reader that may not write the file or its folder cannot open a WAL
 * database read-only when the -shm is missing or unusable: SQLite answers
 * CANTOPEN or READONLY_CANTINIT/DIRECTORY (the usual case of a file baked
 * into a container image, read by a server that runs as another user), or
 * READONLY_RECOVERY when a -wal is left that it may not recover. Reading
 * the file as immutable then sees its committed content (without a left
 * -wal's last commits, which only costs tuning them again). A hot rollback
 * journal (READONLY_ROLLBACK) is not among them: the file may be torn. */
static int needs_immutable(int rc) {
  return (rc & 0xff) == SQLITE_CANTOPEN || rc == SQLITE_READONLY_CANTINIT ||
         rc == SQLITE_READONLY_DIRECTORY || rc == SQLITE_READONLY_RECOVERY;
}

static void open_file(kda__store *s, unsigned flags) {
  for (int attempt = 0; attempt < 3; attempt++) {
    kda__store_probe probe;
    kda__store_probe_path(s->path, &probe);
    kda__store_mode mode = kda__store_choose_mode(&probe, flags);
    int requested = (flags & (KDA__STORE_READ_ONLY | KDA__STORE_OVERLAY)) != 0;
    if (mode == KDA__STORE_MODE_MEMORY) {
      s->mode = mode;
      if (!requested || !probe.exists) {
        kda__store_warn(s, KDA__WARN_MEMORY,
                        "kda: cannot create the tuning database %s (folder not writable); "
                        "tuning results are kept in memory for this process",
                        s->path);
      }
      return;
    }
    char reason[128] = "";
    struct stat seen;
    memset(&seen, 0, sizeof seen);
    if (probe.exists && stat(s->path, &seen) != 0) continue; /* vanished: probe again */
    int suspect = probe.exists && kda__store_header_suspect(s->path, reason, sizeof reason);
    int verify = suspect || (flags & KDA__STORE_VERIFY);
    char kept[PATH_MAX + 32] = "";
    if (suspect) kda__store_keep_wal(s->path, kept, sizeof kept);
    sqlite3 *db = NULL;
    int version = 0;
    int rc = open_file_in_mode(s, mode, verify, &db, &version);
    if (rc == SQLITE_OK && mode == KDA__STORE_MODE_READ_WRITE && version > KDA__STORE_SCHEMA_VERSION) {
      /* Written by a newer library: its rows may mean things we do not
       * know, so we read them but never write or migrate the file. */
      sqlite3_close(db);
      db = NULL;
      mode = KDA__STORE_MODE_READ_ONLY;
      rc = open_file_in_mode(s, mode, 0, &db, &version);
    }
    if ((rc & 0xff) == SQLITE_READONLY && mode == KDA__STORE_MODE_READ_ONLY &&
        probe.file_writable && probe.dir_writable && !(flags & KDA__STORE_ASSUME_UNWRITABLE) &&
        roll_back_hot_journal(s->path) == SQLITE_OK) {
      rc = open_file_in_mode(s, mode, verify, &db, &version);
    }
    if (needs_immutable(rc) && mode == KDA__STORE_MODE_READ_ONLY) {
      mode = KDA__STORE_MODE_IMMUTABLE;
      rc = open_file_in_mode(s, mode, verify, &db, &version);
    }
    if (((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) &&
        mode == KDA__STORE_MODE_READ_WRITE) {
      /* Still held after the wait: read it as it is (readers do not block
       * readers), new results in memory, and say why. */
      mode = KDA__STORE_MODE_READ_ONLY;
      rc = open_file_in_mode(s, mode, 0, &db, &version);
      if (rc == SQLITE_OK)
        kda__store_warn(s, KDA__WARN_READ_ONLY,
                        "kda: the tuning database %s stayed locked by another connection for "
                        "%d s (a reader inside a transaction of a rollback-journal file?); it is "
                        "used read-only and new results are kept in memory",
                        s->path, KDA__STORE_WRITE_WAIT_MS / 1000);
    }
    int moved = -1;
    char aside[PATH_MAX + 64];
    if (kda__store_rc_is_corrupt(rc) && mode == KDA__STORE_MODE_READ_WRITE)
      moved = kda__store_move_aside(s->path, &seen, kept, aside, sizeof aside);
    if (kept[0] != '\0') unlink(kept); /* gone with the damaged file, or not needed */
    if (kda__store_rc_is_corrupt(rc)) {
      if (moved == 0) {
        kda__store_warn(s, KDA__WARN_CORRUPT,
                        "kda: the tuning database %s was damaged (%s%s%s); moved it to %s "
                        "and started a new one",
                        s->path, sqlite3_errstr(rc), reason[0] ? ", " : "", reason, aside);
      }
      if (moved >= 0) continue; /* moved (by us or by another process): open afresh */
      s->mode = KDA__STORE_MODE_MEMORY;
      kda__store_warn(s, KDA__WARN_CORRUPT,
                      "kda: the tuning database %s is damaged (%s) and cannot be moved aside; "
                      "tuning results are kept in memory for this process",
                      s->path, sqlite3_errstr(rc));
      return;
    }
    if (rc != SQLITE_OK) {
      s->mode = KDA__STORE_MODE_MEMORY;
      kda__store_warn(s, KDA__WARN_MEMORY,
                      "kda: cannot open the tuning database %s (%s); tuning results are kept "
                      "in memory for this process",
                      s->path, sqlite3_errstr(rc));
      return;
    }
    s->db = db;
    s->mode = mode;
    s->schema_version = version < KDA__STORE_SCHEMA_VERSION && mode == KDA__STORE_MODE_READ_WRITE
                            ? KDA__STORE_SCHEMA_VERSION
                            : version;
    if (version > KDA__STORE_SCHEMA_VERSION) {
      kda__store_warn(s, KDA__WARN_NEWER_SCHEMA,
                      "kda: the tuning database %s has schema version %d, newer than this "
                      "library's %d; it is used read-only and new results are kept in memory",
                      s->path, version, KDA__STORE_SCHEMA_VERSION);
    } else if (mode != KDA__STORE_MODE_READ_WRITE && !requested) {
      kda__store_warn(s, KDA__WARN_READ_ONLY,
                      "kda: the tuning database %s is not writable; it is used read-only and "
                      "new results are kept in memory",
                      s->path);
    }
    return;
  }
  s->mode = KDA__STORE_MODE_MEMORY;
  kda__store_warn(s, KDA__WARN_MEMORY,
                  "kda: the tuning database %s stays unusable after repair; tuning results "
                  "are kept in memory for this process",
                  s->path);
}

kda_status kda__store_open(const char *path, unsigned flags, kda__store **out) {
  KDA__REQUIRE(out != NULL, KDA_ERROR_NULL_POINTER, "kda__store_open: out is NULL");
  *out = NULL;
  kda__store *s = calloc(1, sizeof *s);
  if (s == NULL) return kda__fail(KDA_ERROR_OUT_OF_MEMORY, "kda__store_open: out of memory");
  if (path != NULL) {
    if ((size_t)snprintf(s->path, sizeof s->path, "%s", path) >= sizeof s->path) s->path[0] = '\0';
    snprintf(s->rule, sizeof s->rule, "option");
  } else {
    const char *rule = "default";
    if (kda__store_default_path(s->path, sizeof s->path, &rule) == KDA_ERROR_BUFFER_TOO_SMALL) {
      s->path[0] = '\0';
    }
    snprintf(s->rule, sizeof s->rule, "%s", rule);
  }
  if (s->path[0] == '\0') {
    s->mode = KDA__STORE_MODE_MEMORY;
    kda__store_warn(s, KDA__WARN_MEMORY,
                    "kda: no usable tuning database path; tuning results are kept in memory");
  } else {
    open_file(s, flags);
  }
  *out = s;
  return KDA_OK;
}

void kda__store_close(kda__store *s) {
  if (s == NULL) return;
  sqlite3_close(s->db);
  sqlite3_close(s->mem);
  free(s);
}

int kda__store_is_read_only(const kda__store *s) {
  return s == NULL || s->mode != KDA__STORE_MODE_READ_WRITE || s->degraded;
}

kda__store_mode kda__store_get_mode(const kda__store *s) { return s->mode; }
const char *kda__store_path(const kda__store *s) { return s->path; }
const char *kda__store_path_rule(const kda__store *s) { return s->rule; }
int kda__store_schema_version(const kda__store *s) { return s->schema_version; }
struct sqlite3 *kda__store_handle(kda__store *s) { return s->db; }
struct sqlite3 *kda__store_overlay_handle(kda__store *s) { return s->mem; }

kda_status kda__store_write(kda__store *s, sqlite3 *db, const char *what, kda__store_write_fn fn,
                            void *ctx) {
  sqlite3 *w = db != NULL ? db : kda__store_writer(s);
  if (w == NULL) return KDA_ERROR_STORE; /* message set by the overlay's creation */
  int rc = kda__store_begin(w);
  kda_status st = rc == SQLITE_OK ? fn(s, w, ctx) : kda__store_fail(s, w, rc, what);
  if (st == KDA_OK) {
    rc = kda__store_commit(w);
    if (rc != SQLITE_OK) st = kda__store_fail(s, w, rc, what);
  }
  if (st == KDA_OK) return KDA_OK;
  kda__store_rollback(w);
  /* A file that stopped taking writes (disk full, I/O error, ...) must not
   * lose this result: keep it in memory, report the failure this once. */
  if (db == NULL && w == s->db && st == KDA_ERROR_STORE && kda__store_degrade(s, s->last_rc)) {
    sqlite3 *mem = kda__store_overlay(s);
    if (mem != NULL && kda__store_begin(mem) == SQLITE_OK) {
      if (fn(s, mem, ctx) == KDA_OK && kda__store_commit(mem) == SQLITE_OK) {
        kda__append_error(" (the row was kept in memory)");
      } else {
        kda__store_rollback(mem);
      }
    }
  }
  return st;
}
