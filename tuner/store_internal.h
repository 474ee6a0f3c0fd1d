/* What the store's files share: the struct behind kda__store and the
 * helpers for transactions, failures and warnings. Not for other modules. */
#ifndef KDA_TUNER_STORE_INTERNAL_H
#define KDA_TUNER_STORE_INTERNAL_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include "store.h"

#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

/* Conditions warned about once per store (bits of kda__store.warned). */
enum {
  KDA__WARN_READ_ONLY = 1u << 0,
  KDA__WARN_NEWER_SCHEMA = 1u << 1,
  KDA__WARN_CORRUPT = 1u << 2,
  KDA__WARN_WRITE_FAILED = 1u << 3,
  KDA__WARN_MEMORY = 1u << 4,
  KDA__WARN_TAMPERED = 1u << 5,
  KDA__WARN_READ_FAILED = 1u << 6
};

#define KDA__STORE_WARN_CAP 4096

struct kda__store {
  sqlite3 *db;  /* the file; NULL in memory mode */
  sqlite3 *mem; /* the overlay; created on first need */
  kda__store_mode mode;
  int degraded;     /* a write to the file failed: puts go to the overlay */
  int file_broken;  /* reads of the file fail as corrupt: skip it */
  int schema_version;
  int64_t cubin_cap;
  unsigned warned;
  int last_rc; /* SQLite code of the last failure recorded by kda__store_fail */
  char path[PATH_MAX];
  char rule[32];
  char pending[KDA__STORE_WARN_CAP];
  char popped[KDA__STORE_WARN_CAP];
};

/* Queues a warning unless the condition bit was queued before. */
void kda__store_warn(kda__store *s, unsigned condition, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records a SQLite failure: s->last_rc = rc and kda__fail(KDA_ERROR_STORE)
 * with what, the connection's message and the path. Returns the status. */
kda_status kda__store_fail(kda__store *s, sqlite3 *db, int rc, const char *what);

/* BEGIN IMMEDIATE, retried on SQLITE_BUSY past the busy timeout (WAL can
 * answer BUSY without waiting, e.g. while another connection recovers). */
int kda__store_begin(sqlite3 *db);
/* BEGIN IMMEDIATE once, without waiting: SQLITE_BUSY at once if another
 * connection holds the write lock (for writes that may be skipped). */
int kda__store_begin_now(sqlite3 *db);
int kda__store_commit(sqlite3 *db);
/* Rolls back if a transaction is open (SQLite may already have). */
void kda__store_rollback(sqlite3 *db);

/* Prepares one statement (persistent = no: statements are cheap next to
 * the measurements they record). */
int kda__store_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **stmt);
/* Binds text, NULL for a NULL pointer. */
int kda__store_bind_text(sqlite3_stmt *stmt, int index, const char *text);
/* Binds a double, NULL when negative (unknown). */
int kda__store_bind_opt(sqlite3_stmt *stmt, int index, double value);

/* The overlay connection, created with the current schema on first use;
 * NULL (and a status message) if it cannot be made. */
sqlite3 *kda__store_overlay(kda__store *s);
/* Where puts go now: the file when it is writable, else the overlay. */
sqlite3 *kda__store_writer(kda__store *s);
/* 1 if the file is readable (present and not found broken). */
int kda__store_file_readable(const kda__store *s);

/* After a failed write to the file (rc from s->last_rc): if rc means the
 * file cannot take writes (full, I/O, read-only, corrupt), switches puts to
 * the overlay and warns once. Returns 1 when it switched (or had already),
 * so the caller retries on the overlay. */
int kda__store_degrade(kda__store *s, int rc);
/* After a failed read of the file: marks it broken on corruption. */
void kda__store_read_failed(kda__store *s, int rc);

/* Runs fn inside BEGIN IMMEDIATE ... COMMIT on db, or (db NULL) on the
 * writer: on a failed write to the file that kda__store_degrade accepts,
 * fn runs again on the overlay and the file's failure is still returned.
 * fn reports SQLite failures through kda__store_fail. */
typedef kda_status (*kda__store_write_fn)(kda__store *s, sqlite3 *db, void *ctx);
kda_status kda__store_write(kda__store *s, sqlite3 *db, const char *what, kda__store_write_fn fn,
                            void *ctx);
/* A write that may be skipped (a cubin's last_used, dropping a tampered
 * row): one BEGIN IMMEDIATE that does not wait; if another connection
 * holds the write lock nothing is written and KDA_OK is returned. A
 * failure inside fn is returned and rolled back, nothing degrades. */
kda_status kda__store_try_write(kda__store *s, sqlite3 *db, const char *what,
                                kda__store_write_fn fn, void *ctx);

/* Unix time in seconds with a fraction (leases) and whole (rows). */
double kda__store_now(void);

/* Schema (store_schema.c): creates or migrates the schema of a writable
 * connection to KDA__STORE_SCHEMA_VERSION; *found_version gets the
 * user_version seen first. A version above ours is not touched and returns
 * SQLITE_OK with *found_version set (the caller reopens read-only). */
int kda__store_schema_apply(sqlite3 *db, int *found_version);
/* Reads PRAGMA user_version. */
int kda__store_schema_version_of(sqlite3 *db, int *version);
/* Adds the provenance columns results lacks (inside the caller's write
 * transaction); a SQLite code. */
int kda__store_add_provenance(sqlite3 *db);
/* Connection settings: busy timeout, foreign keys; for a file also WAL and
 * synchronous=NORMAL (writable only). */
int kda__store_configure(sqlite3 *db, int file_writable);

/* Faults (store_faults.c): 1 if the file looks damaged before SQLite opens
 * it (wrong magic, too short, header page count past the end of file with
 * no WAL to explain it). reason gets a short explanation. */
int kda__store_header_suspect(const char *path, char *reason, size_t reason_size);
/* 1 if rc (primary code) means the file is not a usable database. */
int kda__store_rc_is_corrupt(int rc);
/* Gives path's -wal a second name ("<path>-wal.kept-<pid>", written to
 * kept; "" if there is no -wal or the link fails) before SQLite opens a
 * suspect file, which deletes the -wal when it closes. The caller removes
 * kept when the file is not moved aside. */
void kda__store_keep_wal(const char *path, char *kept, size_t kept_size);
/* Moves path (and its -wal: kept_wal if given, else the one beside it; the
 * -shm is removed) to "<path>.corrupt-<unix time>" (".2", ".3"... within
 * one second) if path still names the inode seen (stat taken before the
 * file was examined). Writes the new name to aside. 0: moved; 1: another
 * process already replaced it; -1: could not move. */
int kda__store_move_aside(const char *path, const struct stat *seen, const char *kept_wal,
                          char *aside, size_t aside_size);

#endif
