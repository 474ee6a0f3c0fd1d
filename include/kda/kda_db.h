/*
 * libkda tuning database: inspection and maintenance (what `kda-tune` is
 * built on), without knowledge of the file's schema.
 *
 * The database is the SQLite file the library's autotuner writes (see
 * "Autotuning and logging" in kda.h): one tuning result per (GPU model,
 * kernel, specialization, token bucket, template hash, config-space hash),
 * each with its trials, plus compiled cubins keyed by architecture.
 *
 * Thread safety
 * -------------
 * A kda_db is used by one thread at a time (the caller serialises calls on
 * one handle). Different handles, even on one file, may be used from
 * different threads and processes at once: the file is shared the same way
 * contexts share it (WAL, busy timeouts). kda_db_filter_default,
 * kda_db_current, kda_db_gpu_key and kda_db_record_shape may be called from any thread.
 *
 * Callbacks receive pointers that are valid during the call only, and may
 * not call back into the same kda_db. A callback returning nonzero stops
 * the iteration and the call still returns KDA_OK: kda_db_list and
 * kda_db_show make no more calls (show's record is still whole);
 * kda_db_stats_get makes no more calls (its totals still count every row);
 * kda_db_check_cubins and kda_db_load_cubins check no more cubins (the
 * counts cover those checked, drop deletes only failures found so far);
 * kda_db_purge stops reporting but still purges (or, in a dry run,
 * counts) every row chosen.
 *
 * Errors: every call returns a kda_status; kda_last_error() has the detail.
 */
#ifndef KDA_KDA_DB_H
#define KDA_KDA_DB_H

#include <stdint.h>
#include <stdio.h>

#include "kda/kda.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kda_db kda_db;

/** kda_db_open flags. */
enum {
  /** Never write the file (list, show, stats, export). A missing file is
   *  then an empty in-memory database. */
  KDA_DB_READ_ONLY = 1u << 0,
  /** Run an integrity check at open (reads the whole file) and treat a
   *  failure as corruption: a writable corrupt file is moved aside to
   *  "<path>.corrupt-<time>" and replaced (a warning says so); a read-only
   *  one is not used (kda_db_mode says "memory"). */
  KDA_DB_VERIFY = 1u << 1
};

/**
 * Opens the tuning database at path, or where a context would find it when
 * path is NULL ($KDA_CACHE_DIR/tune.db, else $XDG_CACHE_HOME/kda/tune.db,
 * else ~/.cache/kda/tune.db). ":memory:" opens an empty in-memory database.
 * Like a context, it never fails because of the file itself: an unusable
 * file leaves a working handle in a degraded mode (kda_db_mode) with a
 * warning (kda_db_pop_warning). Fails only for out of memory
 * (KDA_ERROR_OUT_OF_MEMORY), NULL out (KDA_ERROR_NULL_POINTER) or unknown
 * flags (KDA_ERROR_INVALID_ARGUMENT);
 * *out is NULL on failure.
 */
KDA_API kda_status kda_db_open(const char *path, uint32_t flags, kda_db **out);
/** Closes the handle. NULL is a no-op. */
KDA_API void kda_db_close(kda_db *db);

/** The file in use ("" in memory). Valid while db lives. */
KDA_API const char *kda_db_path(const kda_db *db);
/** Why this path: "option" (a path was given: kda-tune's --db),
 *  "KDA_CACHE_DIR", "XDG_CACHE_HOME" or "default" (~/.cache). */
KDA_API const char *kda_db_path_rule(const kda_db *db);
/** How the file is used: "read-write", "read-only", "immutable" or
 *  "memory" (no file: missing with KDA_DB_READ_ONLY, unusable, or
 *  ":memory:"). */
KDA_API const char *kda_db_mode(const kda_db *db);
/** 1 if the path names an existing file that is not being read (found
 *  damaged, unreadable or not a database): callers should say so. */
KDA_API int kda_db_file_unusable(const kda_db *db);
/** Warnings queued since the last call (corrupt file moved aside, file
 *  read-only, ...), one per line, or NULL. Valid until the next call. */
KDA_API const char *kda_db_pop_warning(kda_db *db);

/* ------------------------------------------------------------------------ */
/* What "current" means: the running library                                */
/* ------------------------------------------------------------------------ */

typedef struct kda_db_versions {
  uint32_t struct_size;      /**< set by kda_db_current */
  char lib_version[32];      /**< kda_version() */
  char nvrtc_version[160];   /**< NVRTC version with its build, as keys store it */
  int32_t schema_version;    /**< database schema this library writes */
  char gate_cumsum_hash[65]; /**< template hash of the gate/cumsum kernels */
  char chunk_indices_hash[65]; /**< template hash of the chunk-index kernel */
} kda_db_versions;

/** Versions and template hashes of the running library (the embedded
 *  kernel sources, or $KDA_KERNEL_DIR's). Rows that differ are stale. */
KDA_API kda_status kda_db_current(kda_db_versions *out);

/** The GPU key results of this device are stored under (compute
 *  capability, PCI device id, SM count, L2 size), e.g.
 *  "sm90-pci2330-sms132-l2_52428800". Returns its length, or -1 if size is
 *  too small. Thread-safe. */
KDA_API int kda_db_gpu_key(const kda_device_info *info, char *buf, size_t size);

/* ------------------------------------------------------------------------ */
/* Results                                                                   */
/* ------------------------------------------------------------------------ */

/** Why a row is stale (kda_db_record.stale bits). */
enum {
  /** written by another library version: used by this one only where its
   *  candidate space for the shape is the same (the space hash is part of
   *  the lookup key) */
  KDA_DB_STALE_LIB = 1u << 0,
  KDA_DB_STALE_TEMPLATE = 1u << 1, /**< the kernel template changed since */
  /** (cubins only) written with another NVRTC build than the one this
   *  process loaded. A cubin so marked is still loaded by a process of
   *  another build of the same major version that misses its own (kda.h,
   *  "Stored cubins and the NVRTC build"): purge it only where no such
   *  process reads the file. A result never has this bit: its config is
   *  used whatever NVRTC build compiles it. */
  KDA_DB_STALE_NVRTC = 1u << 2
};

typedef struct kda_db_filter {
  uint32_t struct_size;  /**< sizeof(kda_db_filter); set by kda_db_filter_default() */
  /** GPU: the exact GPU key ("sm90-pci2330-sms132-l2_52428800"), a prefix
   *  of it ("sm90"), or a case-insensitive part of the GPU's name ("H100").
   *  NULL: any. */
  const char *gpu;
  /** The kernel template ("gate_cumsum", "chunk_indices") or the entry
   *  point a row serves ("gate_chunk_cumsum", "chunk_local_cumsum", "gate";
   *  kda_db_record_entry); NULL: any. */
  const char *kernel;
  int32_t heads;         /**< H; 0: any */
  int32_t head_dim;      /**< K; 0: any */
  int32_t chunk;         /**< chunk size; 0: any */
  int32_t bucket;        /**< token bucket; -1: any */
  int32_t stale_only;    /**< nonzero: only stale rows (any KDA_DB_STALE_* bit) */
  /** Only rows created more than this many seconds before now; 0: any. */
  int64_t older_than_s;
} kda_db_filter;

/** Matches everything. */
KDA_API kda_db_filter kda_db_filter_default(void);

/** One tuning result. Real-valued fields are -1 when unknown. */
typedef struct kda_db_record {
  uint32_t struct_size;   /**< sizeof(kda_db_record) as the library has it */
  int64_t id;             /**< row id in this file (changes on import) */
  char key[17];           /**< stable short key: hex of a hash of the identity */
  char gpu_key[128];      /**< canonical GPU identity */
  char gpu_name[256];     /**< marketing name ("" unknown) */
  double copy_bw_gbps;    /**< the card's measured copy bandwidth */
  char kernel[32];        /**< "gate_cumsum" */
  char spec[512];         /**< canonical specialization text */
  int64_t bucket;         /**< token bucket */
  int32_t heads, head_dim, chunk; /**< parsed from spec; -1 unknown */
  char config[128];       /**< winning config, e.g. "vec=4,tx=32,seg=8" */
  int64_t config_id;
  double median_us, gbps, max_err;
  int64_t candidates, rejected;
  double heuristic_us;    /**< the built-in heuristic config's median */
  double tune_ms, compile_ms;
  int64_t created_at;     /**< unix seconds */
  char lib_version[64], nvrtc_version[64];
  char template_hash[65], space_hash[65];
  uint32_t stale;         /**< KDA_DB_STALE_* bits; 0: current */
  int32_t in_memory;      /**< the row lives in the in-memory overlay */
} kda_db_record;

typedef int (*kda_db_record_fn)(void *user, const kda_db_record *record);

/** Calls fn for every result matching f (NULL: all), ordered by GPU,
 *  kernel, spec, bucket. */
KDA_API kda_status kda_db_list(kda_db *db, const kda_db_filter *f, kda_db_record_fn fn,
                               void *user);

typedef struct kda_db_trial {
  uint32_t struct_size;
  char config[128];
  int64_t config_id;
  double median_us, p10_us, p90_us; /**< -1: not measured */
  /** "ok", "rejected", "compile_failed", "launch_failed", "wrong_result",
   *  "unwritten" */
  const char *status;
  char reason[256];     /**< why it was rejected ("" when ok) */
} kda_db_trial;

/** The reason of a "rejected" trial that was never compiled nor timed:
 *  the tuner left its block shape out of the run because servers run that
 *  shape slower than the tuner can measure (docs/perf-notes.md,
 *  nineteenth session). Such trials are not counted in candidates or
 *  rejected. */
#define KDA_DB_TRIAL_LEFT_OUT "left out before timing"

typedef int (*kda_db_trial_fn)(void *user, const kda_db_trial *trial);

/**
 * Finds one result by key_or_id: its decimal row id, or its key (or a
 * prefix of at least 4 hex digits matching one row). Writes it to *out and
 * calls fn (may be NULL) for each of its trials sorted by median time,
 * fastest first, unmeasured ones last in the order they were tried.
 * KDA_ERROR_INVALID_ARGUMENT when nothing (or more than one row) matches.
 */
KDA_API kda_status kda_db_show(kda_db *db, const char *key_or_id, kda_db_record *out,
                               kda_db_trial_fn fn, void *user);

/** Where a result comes from. Rows written by a library of before these
 *  fields (or imported from its exports) have them empty: unknown. */
typedef struct kda_db_provenance {
  uint32_t struct_size; /**< sizeof(kda_db_provenance); set by the caller */
  char host[64];        /**< the machine whose tuning run wrote it */
  char driver[64];      /**< its GPU driver, "580.159.04 (CUDA 13.0)" */
  /** what ran the tuning: "kda_prewarm" (kda-tune prewarm, background
   *  tuning), "a kernel call", or "import of FILE: " and the source the
   *  row had where it was exported */
  char source[128];
} kda_db_provenance;

/** Fills out for record (a row kda_db_list or kda_db_show gave). Rows are
 *  looked up by their key, so a record of another handle works too;
 *  KDA_ERROR_INVALID_ARGUMENT when no row has that key any more. */
KDA_API kda_status kda_db_provenance_get(kda_db *db, const kda_db_record *record,
                                         kda_db_provenance *out);

/** The shape a result was tuned for, as kda_prewarm / kda_compile_offline
 *  take it (pointers NULL except A_log / dt_bias set to a non-NULL stand-in
 *  when the spec has them; varlen as num_seqs = 1, and varlen=2 with a
 *  non-NULL stand-in cu_seqlens_host), plus a token count in
 *  its bucket. KDA_ERROR_INVALID_ARGUMENT if the spec text is not one this
 *  library writes. */
KDA_API kda_status kda_db_record_shape(const kda_db_record *record, kda_kernel *kernel,
                                       kda_gate_args *shape, int64_t *tokens);

/** The public entry point a result serves: "gate_chunk_cumsum",
 *  "chunk_local_cumsum" or "gate" for the gate_cumsum template (from its
 *  spec), else the kernel's own name. Static storage; "" for NULL. */
KDA_API const char *kda_db_record_entry(const kda_db_record *record);

/* ------------------------------------------------------------------------ */
/* Statistics                                                                */
/* ------------------------------------------------------------------------ */

typedef struct kda_db_stats {
  uint32_t struct_size;
  int32_t schema_version;     /**< of the file (0: none / in memory) */
  int64_t file_bytes;         /**< file plus its -wal */
  int64_t gpus, results, trials, cubins, cubin_bytes, leases;
  int64_t stale_results;      /**< results with any KDA_DB_STALE_* bit */
  int64_t stale_cubins;       /**< cubins of another NVRTC build or template */
  int64_t memory_results;     /**< rows only in the in-memory overlay */
} kda_db_stats;

/** Results per (GPU, kernel); stale of them stale. */
typedef int (*kda_db_count_fn)(void *user, const char *gpu_key, const char *gpu_name,
                               const char *kernel, int64_t results, int64_t stale);

/** Fills out and calls fn (may be NULL) once per (GPU, kernel). */
KDA_API kda_status kda_db_stats_get(kda_db *db, kda_db_stats *out, kda_db_count_fn fn,
                                    void *user);

/* ------------------------------------------------------------------------ */
/* Export, import, purge                                                     */
/* ------------------------------------------------------------------------ */

typedef enum kda_db_format {
  KDA_DB_FORMAT_JSON = 0, /**< every field and every trial; what import reads */
  KDA_DB_FORMAT_CSV = 1   /**< one line per result, no trials */
} kda_db_format;

/** Writes the results matching f (NULL: all) to out. The output holds no
 *  row ids, paths or export times, so exporting the same rows twice gives
 *  the same bytes. */
KDA_API kda_status kda_db_export(kda_db *db, const kda_db_filter *f, kda_db_format format,
                                 FILE *out);

/**
 * Merges a JSON file written by kda_db_export into db, one transaction per
 * result. A result is imported when it is verified (a known median, a
 * config, and when trials are given, an "ok" trial of that config) and
 * either its key is new here or it is faster than the row here; otherwise
 * the row here is kept. Importing a file twice changes nothing the second
 * time. Counts (each may be NULL): imported, kept (the row here was as
 * fast or faster), skipped (not verified). KDA_ERROR_INVALID_ARGUMENT for
 * a file that is not such an export (the message names the problem and
 * where); KDA_ERROR_READ_ONLY when db does not write its file.
 */
KDA_API kda_status kda_db_import(kda_db *db, const char *path, int64_t *imported, int64_t *kept,
                                 int64_t *skipped);

/** A compiled cubin. */
typedef struct kda_db_cubin {
  uint32_t struct_size;
  int64_t id;
  int32_t arch;          /**< e.g. 90 */
  char nvrtc_version[160];
  char spec[512];
  char config[128];
  char sha256[65];
  int64_t size;
  double compile_ms;
  int64_t created_at, last_used;
  uint32_t stale;        /**< KDA_DB_STALE_TEMPLATE / KDA_DB_STALE_NVRTC bits */
} kda_db_cubin;

/** What kda_db_purge removes. */
enum {
  KDA_DB_PURGE_RESULTS = 1u << 0, /**< results matching the filter */
  /** Cubins: with filter stale_only those of another NVRTC build or
   *  template; with older_than_s those unused for that long (last_used);
   *  with neither, every cubin. Other filter fields do not apply. */
  KDA_DB_PURGE_CUBINS = 1u << 1
};

/** Called once per row purged (or, in a dry run, that would be): exactly
 *  one of result and cubin is non-NULL. */
typedef int (*kda_db_purge_fn)(void *user, const kda_db_record *result,
                               const kda_db_cubin *cubin);

/**
 * Deletes the rows chosen by what and f in one transaction per table.
 * dry_run: deletes nothing, only reports. fn may be NULL. *results_deleted
 * and *cubins_deleted (may be NULL) get the counts (would-be counts in a
 * dry run). KDA_ERROR_READ_ONLY when not dry_run and db does not write its
 * file.
 */
KDA_API kda_status kda_db_purge(kda_db *db, const kda_db_filter *f, uint32_t what,
                                int32_t dry_run, kda_db_purge_fn fn, void *user,
                                int64_t *results_deleted, int64_t *cubins_deleted);

/* ------------------------------------------------------------------------ */
/* Cubin integrity                                                           */
/* ------------------------------------------------------------------------ */

/** Called per cubin checked: ok nonzero when its SHA-256 matches and the
 *  blob is a well-formed stored cubin; else problem says what is wrong. */
typedef int (*kda_db_cubin_check_fn)(void *user, const kda_db_cubin *cubin, int32_t ok,
                                     const char *problem);

/**
 * Checks every cubin's stored SHA-256 against its bytes and its framing
 * (no GPU needed). drop: delete the failures (KDA_ERROR_READ_ONLY if db does
 * not write its file). *checked / *bad (may be NULL) get the counts.
 */
KDA_API kda_status kda_db_check_cubins(kda_db *db, int32_t drop, kda_db_cubin_check_fn fn,
                                       void *user, int64_t *checked, int64_t *bad);

/**
 * Loads every cubin whose arch matches ctx's device into ctx's CUDA
 * context (cuModuleLoadData + looking its kernel up), then unloads it.
 * fn gets each cubin tried with ok and the driver's error. *tried / *bad
 * (may be NULL) get counts; cubins for other architectures are not tried.
 * A load that meets a lost CUDA context (a kernel faulted: no cubin can
 * load, and none is to blame) stops the check and returns
 * KDA_ERROR_CONTEXT_LOST; that cubin is neither reported nor counted.
 */
KDA_API kda_status kda_db_load_cubins(kda_db *db, kda_context *ctx, kda_db_cubin_check_fn fn,
                                      void *user, int64_t *tried, int64_t *bad);

/**
 * *present = 1 when db holds the cubin kda_compile_offline_store(kernel,
 * shape, arch, ...) would store (same spec, heuristic config, NVRTC build,
 * options and template hash), else 0: lets a build box skip what it already
 * compiled. Needs no GPU.
 */
KDA_API kda_status kda_db_has_offline_cubin(kda_db *db, kda_kernel kernel,
                                            const kda_gate_args *shape, int32_t arch,
                                            int32_t *present);

/* ------------------------------------------------------------------------ */
/* Lookup: what a call takes from the database                              */
/* ------------------------------------------------------------------------ */

/** What a kernel call finds in the database (kda_db_lookup). */
typedef struct kda_db_lookup_result {
  uint32_t struct_size;   /**< sizeof(kda_db_lookup_result); set by the caller */
  /** 1: a stored result serves the call; it runs record.config, tunes nothing. */
  int32_t found;
  /** 1: the call's key has a row, but its config is not in the call's
   *  candidate space (a hand-edited or imported row): the call ignores it
   *  as if there were none. */
  int32_t ignored;
  kda_db_record record;   /**< the key's row (found or ignored) */
  int32_t bucket;         /**< the call's token bucket */
  int64_t tokens_lo, tokens_hi; /**< the bucket's token counts (hi -1: no bound) */
  /** Widest vector width the call's g and out pointers allow (8 for
   *  256-byte aligned ones): part of the key, so a view at an odd offset
   *  has keys of its own. */
  int32_t vec_cap;
  char spec[512];         /**< the key's spec text (a row's kda_db_record.spec) */
  char template_hash[65], space_hash[65];
  /** The config the call runs without a stored result: the built-in
   *  heuristic, fitted to the GPU's SM count. */
  char heuristic[128];
  /** The config the call runs: record.config when found, else heuristic. */
  char config[128];
  /** 1: config's cubin is stored for the GPU's architecture and this
   *  process's NVRTC build (and matches its hash): the call compiles
   *  nothing. 2: only another NVRTC build's of the same major version is
   *  (cubin_nvrtc), which a context loads unless its options turn that
   *  off. 0: the call compiles config with NVRTC. */
  int32_t cubin_stored;
  char cubin_nvrtc[160];  /**< the NVRTC build of the stored cubin ("" when 0) */
  /** Without a row, and with config's cubin not stored, a KDA_TUNE=cached
   *  context runs the heuristic as `kda-tune prewarm --compile-only` stores
   *  it (before its fit to the SM count) where that one's cubin is stored:
   *  that config ("" when it is config itself or the pointers forbid it),
   *  and 1/2/0 as cubin_stored says for it. */
  char offline_config[128];
  int32_t offline_cubin_stored;
} kda_db_lookup_result;

/**
 * Answers "what does this call take from the database" without a GPU: the
 * key a context on a GPU of identity gpu_key ("sm90-pci2330-sms132-l2_52428800",
 * kda_db_gpu_key) computes for a call of kernel with shape, the row stored
 * under it, and whether the cubin of the config the call would run is
 * stored. shape is read as kda_prewarm reads it (sizes and flags; A_log and
 * dt_bias non-NULL mean present; varlen as num_seqs > 0, with
 * cu_seqlens_host or chunk_plan non-NULL for those specializations), with
 * one addition: non-NULL g and out are read as addresses (never
 * dereferenced) for their alignment, as a view at an offset has it; NULL
 * means 256-byte aligned, as cudaMalloc's. The token count is batch *
 * seq_len. A host-rows shape is looked up as prewarm tunes it, as equal
 * sequences: a ragged batch near KDA_MAX_HOST_ROWS chunks may fall on the
 * other side of that limit (and read a table: another key) where the
 * equal split does not. Fails with KDA_ERROR_INVALID_ARGUMENT for a gpu_key not in the
 * canonical form or a kernel that is not tuned (KDA_KERNEL_CHUNK_INDICES),
 * and with a call's own status for a shape no call could make
 * (KDA_ERROR_BAD_SHAPE, ...). It reads as a context's lookup reads: on a
 * handle that writes its file a cubin hit refreshes the cubin's last_used
 * and a cubin whose hash does not match is deleted (a KDA_DB_READ_ONLY
 * handle writes nothing). Needs no GPU and compiles nothing.
 */
KDA_API kda_status kda_db_lookup(kda_db *db, const char *gpu_key, kda_kernel kernel,
                                 const kda_gate_args *shape, kda_db_lookup_result *out);

#ifdef __cplusplus
}
#endif

#endif /* KDA_KDA_DB_H */
