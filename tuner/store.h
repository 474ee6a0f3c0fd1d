/* The tuning database: one SQLite file holding tuned configs (results and
 * their trials), compiled cubins, GPU identities and tuning leases, shared by
 * every process of a machine (WAL journal, busy timeout, retried BEGIN
 * IMMEDIATE; one transaction per result).
 *
 * Faults never stop the library: a file it cannot write is used read-only
 * with an in-memory overlay taking new rows; a corrupt file is moved aside
 * and replaced; a failed write switches the store to the overlay. Each such
 * event queues one warning (kda__store_pop_warning) for the library to log.
 *
 * Not thread-safe: a kda__store is used by one thread at a time (the caller
 * holds a mutex). Strings in keys are borrowed for the call only. */
#ifndef KDA_TUNER_STORE_H
#define KDA_TUNER_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "kda/kda.h"

typedef struct kda__store kda__store;
struct sqlite3;

/* Schema version this library writes (PRAGMA user_version). */
#define KDA__STORE_SCHEMA_VERSION 1
/* Busy timeout of every connection; BEGIN IMMEDIATE is retried past it. */
#define KDA__STORE_BUSY_MS 5000
/* The most a write waits for another writer in all (BEGIN IMMEDIATE's
 * retries past the busy timeout); then it fails with KDA_ERROR_STORE. */
#define KDA__STORE_WRITE_WAIT_MS 10000
/* Room for text columns copied into records (config, versions). */
#define KDA__STORE_TEXT_MAX 512

/* ------------------------------------------------------------------------ */
/* Opening                                                                   */
/* ------------------------------------------------------------------------ */

enum {
  /* Never write the file: open it read-only, new rows go to the overlay. */
  KDA__STORE_READ_ONLY = 1u << 0,
  /* The file is a shipped, immutable database (opened with immutable=1, no
   * locks, no WAL): lookups see it and the overlay, puts go to the overlay. */
  KDA__STORE_OVERLAY = 1u << 1,
  /* Run PRAGMA quick_check at open and treat a failure as corruption
   * (costs a read of the whole file: for the CLI, not for every process). */
  KDA__STORE_VERIFY = 1u << 2,
  /* Behave as if access(W_OK) failed on the file and its folder. Tests run
   * as root, where chmod does not stop writes; this reaches the same path. */
  KDA__STORE_ASSUME_UNWRITABLE = 1u << 3
};

/* How the file is used; chosen once at open (and changed to the overlay by
 * a failed write). */
typedef enum kda__store_mode {
  KDA__STORE_MODE_READ_WRITE = 0, /* file read and written */
  KDA__STORE_MODE_READ_ONLY = 1,  /* file read (locks, WAL honoured), overlay written */
  KDA__STORE_MODE_IMMUTABLE = 2,  /* file read as immutable, overlay written */
  KDA__STORE_MODE_MEMORY = 3      /* no file at all: overlay only */
} kda__store_mode;

/* What open learned about the path before choosing a mode. */
typedef struct kda__store_probe {
  int exists;       /* the file exists */
  int file_writable; /* access(path, W_OK) == 0 */
  int dir_writable; /* access(folder, W_OK) == 0 (WAL needs -wal and -shm beside it) */
} kda__store_probe;

/* Pure decision from a probe and the open flags (testable without chmod):
 *  OVERLAY: IMMUTABLE if the file exists, else MEMORY.
 *  READ_ONLY: READ_ONLY if the file exists, else MEMORY.
 *  exists, file and folder writable: READ_WRITE.
 *  exists, file or folder not writable: READ_ONLY.
 *  missing, folder writable: READ_WRITE (created); folder not writable: MEMORY.
 * ASSUME_UNWRITABLE clears both writable bits first. */
kda__store_mode kda__store_choose_mode(const kda__store_probe *probe, unsigned flags);

/* Fills probe for path (access(2) on the file and its folder). */
void kda__store_probe_path(const char *path, kda__store_probe *probe);

/* Default database path: $KDA_CACHE_DIR/tune.db, else
 * $XDG_CACHE_HOME/kda/tune.db, else ~/.cache/kda/tune.db ($HOME, else the
 * passwd entry). Creates the folder (mkdir -p). *rule (may be NULL) gets the
 * static string "KDA_CACHE_DIR", "XDG_CACHE_HOME" or "default".
 * KDA_ERROR_BUFFER_TOO_SMALL if the path does not fit; KDA_ERROR_STORE if
 * the folder cannot be created (the path is still written, so a caller may
 * open it and end up in memory mode). */
kda_status kda__store_default_path(char *buf, size_t size, const char **rule);

/* Opens (creating, migrating and repairing as needed) the database at path,
 * or at kda__store_default_path() when path is NULL (rule "option" when a
 * path is given). Never fails because of the file itself: an unusable file
 * gives a working store in READ_ONLY or MEMORY mode plus a warning. Fails
 * only for out of memory (KDA_ERROR_OUT_OF_MEMORY) or a NULL out. *out is
 * NULL on failure. */
kda_status kda__store_open(const char *path, unsigned flags, kda__store **out);

/* Closes both connections (the last closer checkpoints the WAL). NULL ok. */
void kda__store_close(kda__store *store);

/* 1 when puts go to the in-memory overlay rather than the file (mode other
 * than READ_WRITE, or a write failed). */
int kda__store_is_read_only(const kda__store *store);
kda__store_mode kda__store_get_mode(const kda__store *store);
/* Path of the file ("" in memory mode without a path) and the rule that
 * chose it ("KDA_CACHE_DIR", "XDG_CACHE_HOME", "default", "option"). */
const char *kda__store_path(const kda__store *store);
const char *kda__store_path_rule(const kda__store *store);
/* user_version of the file after open: KDA__STORE_SCHEMA_VERSION once a
 * writable file is created or migrated; what was found for a read-only one
 * (above KDA__STORE_SCHEMA_VERSION: opened read-only; below 1: its rows
 * are not read); 0 in memory mode. */
int kda__store_schema_version(const kda__store *store);

/* Warnings queued since the last call, one line each (every condition is
 * queued once per store); NULL when there is none. The text stays valid
 * until the next call on the store. */
const char *kda__store_pop_warning(kda__store *store);

/* The file's connection (NULL in memory mode) and the overlay's (NULL until
 * used): for tests and the CLI's maintenance commands only. */
struct sqlite3 *kda__store_handle(kda__store *store);
struct sqlite3 *kda__store_overlay_handle(kda__store *store);

/* ------------------------------------------------------------------------ */
/* GPU models                                                                */
/* ------------------------------------------------------------------------ */

/* Canonical GPU identity "sm90-pci2330-sms132-l2_52428800" (compute
 * capability, PCI device id in hex, SM count, L2 bytes): the name is for
 * people, two boards with one name can differ. Returns the length or -1. */
int kda__store_gpu_key(const kda_device_info *info, char *buf, size_t size);
/* The identity fields of a GPU key (compute capability, PCI device id, SM
 * count, L2 size) into *info (other fields zero). 0, or -1 when key is not
 * the canonical text kda__store_gpu_key writes. */
int kda__store_gpu_key_parse(const char *key, kda_device_info *info);

/* Copies text into dst (size bytes with the NUL), cut short, if it must
 * be, at a character boundary: a stored name stays valid UTF-8. */
void kda__store_copy_utf8(char *dst, size_t size, const char *text);

/* Inserts or updates a GPU. name may be NULL (kept); copy_bw_gbps < 0 keeps
 * the stored bandwidth. put_result inserts a bare row itself if needed. */
kda_status kda__store_put_gpu(kda__store *store, const char *gpu_key, const char *name,
                              double copy_bw_gbps);
/* *found = 0 on a miss. name may be NULL; *copy_bw_gbps is -1 when unknown. */
kda_status kda__store_lookup_gpu(kda__store *store, const char *gpu_key, int *found,
                                 char *name, size_t name_size, double *copy_bw_gbps);

/* ------------------------------------------------------------------------ */
/* Results and trials                                                        */
/* ------------------------------------------------------------------------ */

/* Identity of a tuned result. template_hash and space_hash make a row stale
 * by construction when the kernel source or the search space changes. */
typedef struct kda__store_key {
  const char *gpu_key;       /* kda__store_gpu_key() */
  const char *kernel;        /* e.g. "gate_cumsum" */
  const char *spec;          /* canonical spec text without its config */
  int64_t bucket;            /* token-count bucket */
  const char *template_hash; /* sha256 hex of the kernel sources */
  const char *space_hash;    /* hash of the config space */
} kda__store_key;

/* Real-valued fields: negative means unknown (stored as NULL, read back
 * as -1). */
typedef struct kda__store_record {
  char config[KDA__STORE_TEXT_MAX]; /* winning config, canonical text */
  int64_t config_id;                /* index in the config space */
  double median_us, gbps, max_err;
  int64_t candidates, rejected;
  double heuristic_us;              /* the built-in heuristic's median */
  double tune_ms, compile_ms;
  int64_t created_at;               /* unix seconds; 0 in a put: now */
  char lib_version[64];
  char nvrtc_version[64];
  /* Provenance ("" unknown: a row written by a library of before them). */
  char host[64];                    /* the machine that tuned it */
  char driver[64];                  /* "580.159.04 (CUDA 13.0)" */
  char source[128];                 /* "kda_prewarm", "a kernel call", "import of FILE: ..." */
  /* Set by lookups and listings, ignored by puts: */
  int64_t id;                       /* row id, for kda__store_list_trials */
  int in_overlay;                   /* the row lives in the in-memory overlay */
} kda__store_record;

typedef enum kda__trial_status {
  KDA__TRIAL_OK = 0,
  KDA__TRIAL_REJECTED = 1,
  KDA__TRIAL_COMPILE_FAILED = 2,
  KDA__TRIAL_LAUNCH_FAILED = 3,
  KDA__TRIAL_WRONG_RESULT = 4,
  KDA__TRIAL_UNWRITTEN = 5 /* a candidate whose output was never written */
} kda__trial_status;

/* Text stored in trials.status ("ok", "rejected", ...); NULL if out of range. */
const char *kda__trial_status_name(kda__trial_status status);

typedef struct kda__store_trial {
  const char *config;
  int64_t config_id;
  double median_us, p10_us, p90_us; /* < 0: unknown (stored NULL) */
  kda__trial_status status;
  const char *reason;               /* may be NULL */
} kda__store_trial;

typedef enum kda__put_mode {
  /* The new row replaces any row with the same key (the tuner: its fresh
   * measurement is the truth on this machine now). */
  KDA__PUT_REPLACE = 0,
  /* The new row replaces an existing one only if its median_us is lower
   * (or the existing median is unknown); otherwise nothing is written. For
   * imports: the caller passes only verified results, so "faster verified
   * wins". */
  KDA__PUT_FASTER = 1
} kda__put_mode;

/* Writes a result and its trials in one transaction (BEGIN IMMEDIATE),
 * deleting an older row with the same key and its trials. *stored (may be
 * NULL) is 1 if the row was written, 0 if KDA__PUT_FASTER kept the old one.
 * In an overlay mode the row goes to memory and KDA_OK is returned. A
 * failing file write (disk full, I/O error, corrupt, read-only) returns
 * KDA_ERROR_STORE with the SQLite message, but the row is still kept in the
 * overlay and every later put goes there (and returns KDA_OK). */
kda_status kda__store_put_result(kda__store *store, const kda__store_key *key,
                                 const kda__store_record *record, const kda__store_trial *trials,
                                 size_t num_trials, kda__put_mode mode, int *stored);

/* Looks a key up, overlay first then the file. *found = 0 on a miss (out is
 * then untouched). KDA_ERROR_STORE on a database error (treat as a miss). */
kda_status kda__store_lookup_result(kda__store *store, const kda__store_key *key, int *found,
                                    kda__store_record *out);

/* Visitor of rows: return 0 to go on, nonzero to stop. Pointers are valid
 * during the call only. */
typedef int (*kda__store_result_fn)(void *user, const kda__store_key *key,
                                    const kda__store_record *record);
/* Calls fn for each result, overlay rows first, then file rows not shadowed
 * by an overlay row; gpu_key / kernel filter when not NULL. Ordered by gpu,
 * kernel, spec, bucket within each part. */
kda_status kda__store_list_results(kda__store *store, const char *gpu_key, const char *kernel,
                                   kda__store_result_fn fn, void *user);

typedef int (*kda__store_trial_fn)(void *user, const kda__store_trial *trial);
/* Calls fn for the trials of a row found by a lookup or listing (its id and
 * in_overlay), in insertion order. */
kda_status kda__store_list_trials(kda__store *store, const kda__store_record *record,
                                  kda__store_trial_fn fn, void *user);

/* ------------------------------------------------------------------------ */
/* Cubins                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct kda__cubin_key {
  int32_t arch;              /* e.g. 90 */
  const char *nvrtc_version; /* with the build number */
  const char *options;       /* NVRTC options, canonical order */
  const char *source_hash;   /* sha256 hex of the sources */
  const char *spec;          /* canonical spec text */
  const char *config;        /* canonical config text */
} kda__cubin_key;

/* Looks a cubin up (overlay first). On a hit *blob is malloc'd (the caller
 * frees it) and *size set. The stored sha256 is checked: a mismatch is a
 * miss with *tampered = 1 (may be NULL), and the row is deleted when the
 * file is writable. A hit refreshes last_used (at most once a minute per
 * row, so warm starts do not all take the write lock). */
kda_status kda__store_lookup_cubin(kda__store *store, const kda__cubin_key *key, int *found,
                                   void **blob, size_t *size, int *tampered);

/* As kda__store_lookup_cubin, for the same cubin compiled by another NVRTC
 * build of key's major version (key->nvrtc_version "13.0 build-id=..."
 * finds "13.0 ..." rows first, then "13.x ..."). built_by (may be NULL)
 * receives the row's nvrtc_version on a hit. */
kda_status kda__store_lookup_cubin_other_build(kda__store *store, const kda__cubin_key *key,
                                               int *found, void **blob, size_t *size,
                                               int *tampered, char *built_by,
                                               size_t built_by_size);

/* Inserts or replaces a cubin (sha256 computed here), then evicts the least
 * recently used cubins past the size cap, in the same transaction. Write
 * failures behave as in put_result. */
kda_status kda__store_put_cubin(kda__store *store, const kda__cubin_key *key, const void *blob,
                                size_t size, double compile_ms);

/* Sets last_used of a cubin to now (no-op on a miss). */
kda_status kda__store_touch_cubin(kda__store *store, const kda__cubin_key *key);

/* Cap on the total bytes of cubins (0, the default: no cap). put_cubin
 * evicts the least recently used others until the total fits. */
void kda__store_set_cubin_cap(kda__store *store, int64_t bytes);

/* Evicts least recently used cubins until at most max_bytes remain.
 * *evicted (may be NULL) gets the number of rows deleted. */
kda_status kda__store_evict_cubins(kda__store *store, int64_t max_bytes, int64_t *evicted);

/* ------------------------------------------------------------------------ */
/* Leases: one process tunes a key while the others wait or use heuristics.  */
/* ------------------------------------------------------------------------ */

typedef struct kda__lease {
  int acquired;        /* 1: the caller holds the lease now */
  int taken_over;      /* 1: an expired lease of another holder was replaced */
  char holder[256];    /* the holder after the call */
  double expires_at;   /* unix seconds (fractional) */
} kda__lease;

/* "pid@hostname" of this process. */
void kda__store_default_holder(char *buf, size_t size);

/* Acquires or renews key for ttl_s seconds (holder NULL: the default). A
 * lease of another holder that has not expired is not taken: out->acquired
 * = 0 and out->holder / expires_at describe it. Expiry is what frees the
 * lease of a crashed holder. In an overlay mode leases live in memory (no
 * other process can be coordinated with a file we do not write). A
 * KDA_ERROR_STORE from a failed file write leaves out as decided in memory
 * (see put_result): the caller may tune, uncoordinated. */
kda_status kda__store_lease_acquire(kda__store *store, const char *key, const char *holder,
                                    double ttl_s, kda__lease *out);

/* Releases key if holder (NULL: the default) holds it; else a no-op.
 * *released (may be NULL) tells which. */
kda_status kda__store_lease_release(kda__store *store, const char *key, const char *holder,
                                    int *released);

/* ------------------------------------------------------------------------ */
/* Statistics                                                                */
/* ------------------------------------------------------------------------ */

typedef struct kda__store_stats {
  int schema_version;   /* of the file (see kda__store_schema_version) */
  kda__store_mode mode;
  int64_t file_bytes;   /* database file plus its -wal */
  int64_t gpus, results, trials, cubins, cubin_bytes, leases; /* in the file */
  int64_t overlay_results, overlay_cubins;                    /* in memory */
} kda__store_stats;

kda_status kda__store_get_stats(kda__store *store, kda__store_stats *out);

typedef int (*kda__store_count_fn)(void *user, const char *gpu_key, const char *kernel,
                                   int64_t count, int in_overlay);
/* Result counts per (gpu, kernel): the file's, then the overlay's. */
kda_status kda__store_result_counts(kda__store *store, kda__store_count_fn fn, void *user);

#endif
