/*
 * libkda: run-time compiled KDA (Kimi Delta Attention) gate kernels.
 *
 * The library specializes CUDA kernel templates for the exact shape and flags
 * of a call, compiles them with NVRTC for the device it finds, loads them with
 * the CUDA Driver API (itself loaded at run time, so this library loads on a
 * machine with no NVIDIA driver and reports KDA_ERROR_NO_DRIVER), and keeps
 * the compiled modules in a per-context cache.
 *
 * Thread safety
 * -------------
 * Nothing is thread-safe except where stated. Stated:
 *  - kda_version*, kda_status_string, kda_status_name, kda_last_error,
 *    kda_options_default, kda_gate_args_default, kda_chunk_indices_capacity,
 *    kda_chunk_indices_build_host and kda_layer_workspace_size may be called
 *    from any thread at any time.
 *  - kda_gate_chunk_cumsum, kda_chunk_local_cumsum, kda_gate,
 *    kda_chunk_indices_build_device, kda_layer_gate_fwd, kda_context_get_stats,
 *    kda_context_get_device_info and kda_chunk_plan_create may be called
 *    concurrently from any number of threads on the same context (gate
 *    calls that read one chunk plan too; kda_chunk_plan_build and
 *    kda_chunk_plan_destroy of a plan must not race with any call that uses
 *    that plan). Concurrent first calls of one
 *    specialization compile it once; calls of other specializations do not
 *    wait on the library's locks for that compilation (NVRTC compiles
 *    distinct programs of one process at once, so two cold
 *    specializations met at once compile side by side). Tuning runs time
 *    their candidates on a GPU one at a time, whatever their context or
 *    process (each would otherwise time the other's kernels too): a run
 *    that meets another's timing waits for it (kda_stats.tuning_timing_waits).
 *    Across processes the lock is an flock on
 *    $KDA_TIMING_LOCK_DIR/kda-timing-<PCI bus id>.lock (default directory
 *    /tmp; "off": within the process only); a run waits for another
 *    process at most 2 * tune_budget_ms + 3 s (at least 10 s), then times
 *    anyway with a warning.
 *  - kda_context_create may be called concurrently (each call makes its own
 *    context). kda_context_destroy must not race with any other call on the
 *    same context.
 *
 * Errors
 * ------
 * Every call returns a kda_status. On failure, kda_last_error() returns a
 * message for the calling thread (the NVRTC log when compilation failed, the
 * driver's error name and the failing call otherwise). Nothing in the library
 * aborts the process.
 *
 * A kernel that faults (this library's, given a bad pointer, or any other
 * library's in the process) loses its CUDA context for good: the driver
 * fails every later call on that device with the same error (and, with
 * current drivers, on every other device of the process: 580.159.04 on
 * two H200s did). A call that
 * meets such an error returns KDA_ERROR_CONTEXT_LOST, whichever call of
 * the library met it first; the server should restart the process. A
 * tuning run it interrupts stores nothing (no winner, no lease left
 * behind), so the restarted process tunes the key afresh, and
 * kda_context_destroy still returns promptly.
 *
 * Stream capture
 * --------------
 * A specialization already compiled in the context launches normally inside
 * CUDA stream capture. A specialization that would need compiling while the
 * stream is capturing is not compiled: the call returns
 * KDA_ERROR_CAPTURE_COLD and records nothing into the graph. Warm the
 * specialization with one call outside capture first. With tuning on, a
 * specialization is warm per token bucket (see kda_token_bucket): warm one
 * call of each bucket a captured graph will meet, or run `kda-tune prewarm`.
 */
#ifndef KDA_KDA_H
#define KDA_KDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define KDA_API
#else
#define KDA_API __attribute__((visibility("default")))
#endif

/* ------------------------------------------------------------------------ */
/* Version                                                                   */
/* ------------------------------------------------------------------------ */

#define KDA_VERSION_MAJOR 0
#define KDA_VERSION_MINOR 1
#define KDA_VERSION_PATCH 0
#define KDA_VERSION_NUMBER \
  (KDA_VERSION_MAJOR * 10000 + KDA_VERSION_MINOR * 100 + KDA_VERSION_PATCH)

/** "MAJOR.MINOR.PATCH" of the library actually loaded. */
KDA_API const char *kda_version(void);
/** KDA_VERSION_NUMBER of the library actually loaded; compare with the
 *  header's macro to detect a header/library mismatch. */
KDA_API uint32_t kda_version_number(void);

/* ------------------------------------------------------------------------ */
/* Status codes: appended only, never renumbered.                            */
/* ------------------------------------------------------------------------ */

#define KDA_STATUS_MAP(X)                                                      \
  X(KDA_OK, 0, "success")                                                      \
  X(KDA_ERROR_INVALID_ARGUMENT, 1, "invalid argument")                         \
  X(KDA_ERROR_NULL_POINTER, 2, "a required pointer is NULL")                   \
  X(KDA_ERROR_BAD_SHAPE, 3, "a shape is zero, negative, too large or inconsistent") \
  X(KDA_ERROR_BAD_CHUNK_SIZE, 4, "chunk size is not a power of two in [16, 256]") \
  X(KDA_ERROR_UNSUPPORTED_HEAD_DIM, 5, "head dimension K is above the supported maximum (256)") \
  X(KDA_ERROR_UNSUPPORTED_DTYPE, 6, "a dtype is not supported by this kernel") \
  X(KDA_ERROR_BAD_OPTIONS, 7, "options or argument struct has an unknown struct_size") \
  X(KDA_ERROR_NO_DRIVER, 8, "the CUDA driver (libcuda.so.1) could not be loaded or initialised") \
  X(KDA_ERROR_NO_DEVICE, 9, "no such CUDA device, or no current CUDA context") \
  X(KDA_ERROR_CUDA, 10, "a CUDA driver call failed")                           \
  X(KDA_ERROR_COMPILE, 11, "NVRTC compilation failed")                         \
  X(KDA_ERROR_OUT_OF_MEMORY, 12, "out of memory")                              \
  X(KDA_ERROR_CAPTURE_COLD, 13, "a cold specialization was met during stream capture") \
  X(KDA_ERROR_BUFFER_TOO_SMALL, 14, "an output buffer is too small")           \
  X(KDA_ERROR_BAD_SEQLENS, 15, "cu_seqlens is not non-decreasing from 0 to the token count") \
  X(KDA_ERROR_KERNEL_SOURCE, 16, "a kernel template could not be read")        \
  X(KDA_ERROR_INTERNAL, 17, "internal error")                                  \
  X(KDA_ERROR_STORE, 18, "tuning database error")                              \
  X(KDA_ERROR_READ_ONLY, 19, "the tuning database is read-only")                \
  X(KDA_ERROR_CONTEXT_LOST, 20, "the CUDA context is lost (a kernel faulted); restart the process")

typedef enum kda_status {
#define KDA__STATUS_ENUM(name, value, message) name = value,
  KDA_STATUS_MAP(KDA__STATUS_ENUM)
#undef KDA__STATUS_ENUM
} kda_status;

/** Fixed message for a status ("unknown status" for values outside the table). */
KDA_API const char *kda_status_string(kda_status status);
/** Symbolic name of a status, e.g. "KDA_ERROR_BAD_SHAPE". */
KDA_API const char *kda_status_name(kda_status status);
/** Message of the last failed call made by the calling thread (empty string
 *  if none). The library owns the memory; it stays valid until the thread's
 *  next failing call. Includes the NVRTC log when a compilation failed.
 *  Read it after a call that returned a failure: a call that returns KDA_OK
 *  may have recovered from an inner failure (a tuning candidate that failed,
 *  a database write that fell back to memory) and left that message here. */
KDA_API const char *kda_last_error(void);

/* ------------------------------------------------------------------------ */
/* Types                                                                     */
/* ------------------------------------------------------------------------ */

/** Same object as a CUstream / cudaStream_t; NULL is the legacy default
 *  stream (of the context's device). A stream passed to a context's calls
 *  must belong to that context's CUDA context: one of another device's (a
 *  process driving several GPUs, a kda_context per device) makes the call
 *  fail with KDA_ERROR_INVALID_ARGUMENT, nothing launched. Device pointers
 *  must be the context's device's too; those the library cannot check
 *  without a cost on every call (with peer access off, the kernel faults). */
typedef struct CUstream_st *kda_stream;
/** Same object as a CUcontext. */
typedef struct CUctx_st *kda_cu_context;

typedef enum kda_dtype {
  KDA_DTYPE_F32 = 0,
  KDA_DTYPE_F16 = 1,
  KDA_DTYPE_BF16 = 2,
  KDA_DTYPE_I32 = 3,
  KDA_DTYPE_I64 = 4
} kda_dtype;

/** Activation applied to the raw gate. */
typedef enum kda_gate_kind {
  /** Input is already activated (plain chunk cumsum). */
  KDA_GATE_NONE = 0,
  /** g = -exp(A_log[h]) * softplus(x + dt_bias[h*K+k]); softplus(z) = z for z > 20. */
  KDA_GATE_SOFTPLUS = 1,
  /** g = lower_bound * sigmoid(exp(A_log[h]) * (x + dt_bias[h*K+k]));
   *  A_log may be NULL, then g = lower_bound * sigmoid(x + dt_bias). */
  KDA_GATE_LOWER_BOUND = 2
} kda_gate_kind;

/** Limits checked on the host before any launch. */
#define KDA_MAX_HEAD_DIM 256
#define KDA_MAX_HEADS 4096
#define KDA_MIN_CHUNK 16
#define KDA_MAX_CHUNK 256
/** Most chunks a varlen batch may have for its rows to travel in the launch
 *  itself (kda_gate_args.cu_seqlens_host). */
#define KDA_MAX_HOST_ROWS 256

/* ------------------------------------------------------------------------ */
/* Context                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct kda_context kda_context;
/** A library-owned chunk plan for packed varlen batches (kda_chunk_plan_*). */
typedef struct kda_chunk_plan kda_chunk_plan;

/** Tuning modes (kda_options.tune_mode, environment KDA_TUNE). */
typedef enum kda_tune_mode {
  /** Tune a specialization on its first use in a token bucket when the
   *  database has no winner for it; persist the winner (config + cubin). */
  KDA_TUNE_ON = 0,
  /** The built-in heuristic config; no benchmarking, no database access. */
  KDA_TUNE_OFF = 1,
  /** The database's winner when it has one, else the heuristic; never tunes
   *  in the calling thread. */
  KDA_TUNE_CACHED = 2,
  /** A cold specialization runs at once with the heuristic config while a
   *  worker thread of the context tunes it (on inputs it allocates itself,
   *  of the call's shape and token bucket) and persists the winner; later
   *  calls switch to the winner. The worker's buffers sit at the call's
   *  g/out offsets within 256 bytes, so a call on a view (g or out not
   *  16-byte aligned, a narrower vector) is tuned under its own key, as
   *  kda_prewarm tunes one. Nothing is queued while the stream captures.
   *  kda_context_destroy drops the queued runs and waits for the one in
   *  progress: its compile and timing (about tune_budget_ms) and its
   *  database writes (at most 10 s each against a writer that never lets
   *  go); a wait for another process (its lease on the key, the GPU's
   *  timing lock) is cut short. Environment: KDA_TUNE=background. */
  KDA_TUNE_BACKGROUND = 3
} kda_tune_mode;

/** How a kernel launch may overlap the kernel before it in the stream
 *  (kda_options.launch_overlap).
 *
 *  With KDA_LAUNCH_OVERLAP_AUTO, on devices of compute capability 9.0 and
 *  later whose driver has cuLaunchKernelEx, every libkda kernel is launched
 *  with programmatic stream serialization (CUDA's programmatic dependent
 *  launch): it may be scheduled while the previous kernel in the stream is
 *  still running, and each of its threads waits (griddepcontrol.wait) for
 *  that kernel to finish and its writes to become visible before its first
 *  global memory access. Stream order is unchanged for memory: the saving
 *  is the launch and block-scheduling latency between back-to-back kernels
 *  (0.5-0.6 us per launch on an H100). libkda kernels also signal
 *  launch_dependents at their start, so a kernel the caller launches next
 *  with that same attribute may be scheduled early; such a kernel must wait
 *  (cudaGridDependencySynchronize) before reading libkda's output, as the
 *  attribute's contract already requires. Kernels launched without the
 *  attribute start after libkda's kernel ends, as always. Works inside
 *  stream capture (the graph gets programmatic edges). If the driver
 *  refuses the attribute the launch is retried plainly and the context stops
 *  using it, with one warning. */
typedef enum kda_launch_overlap {
  KDA_LAUNCH_OVERLAP_AUTO = 0, /**< programmatic launch where supported */
  KDA_LAUNCH_OVERLAP_OFF = 1   /**< plain cuLaunchKernel */
} kda_launch_overlap;

/** Log levels (kda_options.log_level, environment KDA_LOG). */
typedef enum kda_log_level {
  KDA_LOG_ERROR = 0,
  KDA_LOG_WARN = 1,  /**< default: store faults, fallbacks */
  KDA_LOG_INFO = 2,  /**< tuning decisions, compile and tune times */
  KDA_LOG_DEBUG = 3  /**< every candidate's timing */
} kda_log_level;

/** Receives one message (no trailing newline). */
typedef void (*kda_log_fn)(void *user, kda_log_level level, const char *message);

typedef struct kda_options {
  /** sizeof(kda_options) as the caller compiled it; set by kda_options_default().
   *  The sizes of earlier versions (the fields up to kernel_dir, up to
   *  reserved0, or up to reserved1) are accepted: the later fields then keep
   *  their defaults. */
  uint32_t struct_size;
  /** CUDA device ordinal; the context retains that device's primary context.
   *  -1: bind to the CUcontext current on the calling thread at creation. */
  int32_t device;
  /** Folder of kernel template sources overriding the embedded ones (for
   *  kernel development). NULL: the environment variable KDA_KERNEL_DIR if
   *  set, else the sources embedded at build time. */
  const char *kernel_dir;
  /* Fields below were added with autotuning (see "Autotuning and logging"). */
  /** KDA_TUNE_ON (default), KDA_TUNE_OFF, KDA_TUNE_CACHED or
   *  KDA_TUNE_BACKGROUND. The environment variable
   *  KDA_TUNE=on|off|cached|background overrides it. */
  int32_t tune_mode;
  /** Tuning database file. NULL: $KDA_CACHE_DIR/tune.db, else
   *  $XDG_CACHE_HOME/kda/tune.db, else ~/.cache/kda/tune.db. The string
   *  ":memory:" (or "") keeps results in memory only (nothing shared or
   *  persisted). */
  const char *db_path;
  /** Wall-time budget of one tuning run in milliseconds, NVRTC compile
   *  included (default 1000; 0 or less: the default; above one hour,
   *  infinite or NaN: KDA_ERROR_BAD_OPTIONS, since leases and waits other
   *  processes rely on are sized from it). Candidates are pruned to fit it; `kda-tune
   *  prewarm` passes 15000, the whole candidate space. A tuning run
   *  also allocates device scratch for its duration: two outputs of the
   *  call's size (one for the reference config) and, for a shape whose
   *  input and output together are under twice the L2, copies of both
   *  rotated so that the timed launches stream about 3x the L2: at most
   *  about 5x the L2's bytes (some 250 MB on an H100, 300 MB on an H200).
   *  A failed allocation of a copy only shortens the rotation; of the
   *  outputs it makes the run keep the heuristic config, with a warning. */
  double tune_budget_ms;
  /** Log callback (NULL: messages go to stderr prefixed "libkda: "). Called
   *  from whichever thread logs; must be thread-safe. It is never called
   *  with a library lock held, so it may call back into the library (e.g.
   *  kda_context_db_path or kda_context_get_stats to annotate the line);
   *  only kda_context_destroy of the same context is forbidden there. */
  kda_log_fn log_fn;
  void *log_user;       /**< passed to log_fn */
  /** Most verbose level logged (default KDA_LOG_WARN); the environment
   *  variable KDA_LOG=error|warn|info|debug overrides it. Below
   *  KDA_LOG_ERROR (e.g. -1) nothing is logged, errors included; above
   *  KDA_LOG_DEBUG everything is. */
  int32_t log_level;
  /** Ignored; 0 from kda_options_default(). It fills what was the end
   *  padding, so that the size before compile_threads (the fields up to
   *  here) differs from the current one. */
  int32_t reserved0;
  /* Fields below were added with parallel tuning compiles. */
  /** Threads one tuning run compiles its candidates on, each an NVRTC
   *  program of a share of them (a run of the same budget tries more
   *  candidates, by as much as NVRTC scales on the machine: about 3.5x at
   *  most on a 16-core H100 host). Concurrent tuning runs of a process draw
   *  these threads from one pool of the online CPUs, so a run may get fewer.
   *  0 (default): the online CPUs, at most 8; 1: one program, on the tuning
   *  thread. The environment variable
   *  KDA_COMPILE_THREADS=N overrides it. Used only while tuning; the
   *  threads are the library's own and end before the tuning call (or the
   *  background job) returns. Negative: KDA_ERROR_BAD_OPTIONS. */
  int32_t compile_threads;
  /** Ignored; 0 from kda_options_default(). It fills what was the end
   *  padding, so that the size before launch_overlap differs from the
   *  current one. */
  int32_t reserved1;
  /* Fields below were added with programmatic dependent launch. */
  /** kda_launch_overlap (default KDA_LAUNCH_OVERLAP_AUTO). The environment
   *  variable KDA_LAUNCH_OVERLAP=auto|off overrides it. Other values:
   *  KDA_ERROR_BAD_OPTIONS. */
  int32_t launch_overlap;
} kda_options;

/** Defaults: device 0, embedded kernel sources, tuning on with a 1000 ms
 *  budget, the default database path, warnings to stderr. */
KDA_API kda_options kda_options_default(void);

/** Creates a context bound to a device (options NULL: kda_options_default()).
 *  Fails with KDA_ERROR_NO_DRIVER on a machine without a usable driver,
 *  KDA_ERROR_NO_DEVICE for a bad ordinal, for a driver that sees no GPU
 *  (CUDA_VISIBLE_DEVICES="", a container without devices) or when
 *  device == -1 and no CUDA context is current, KDA_ERROR_BAD_OPTIONS for
 *  an options field out of its range (checked before the driver is
 *  loaded where it can be). *out is NULL on failure. */
KDA_API kda_status kda_context_create(const kda_options *options, kda_context **out);
/** Unloads every module and releases the device. NULL is a no-op. */
KDA_API void kda_context_destroy(kda_context *ctx);

typedef struct kda_device_info {
  uint32_t struct_size;
  char name[256];         /**< marketing name, e.g. "NVIDIA H100 80GB HBM3" */
  int32_t ordinal;        /**< device ordinal */
  int32_t cc_major, cc_minor; /**< compute capability */
  int32_t sm_count;       /**< multiprocessors */
  int32_t l2_bytes;       /**< L2 cache size */
  int32_t pci_device_id;  /**< PCI device id (from the bus id) */
  int32_t driver_version; /**< e.g. 13000 */
  int32_t nvrtc_major, nvrtc_minor;
} kda_device_info;

KDA_API kda_status kda_context_get_device_info(kda_context *ctx, kda_device_info *info);

/** Counters since context creation; read atomically one by one. A caller
 *  built against an earlier header sets struct_size to the size it knows and
 *  gets those fields (nothing is written past them). */
typedef struct kda_stats {
  uint32_t struct_size;
  /** NVRTC compiles: one per specialization built, one per tuning run
   *  (whose candidates may be split over programs compiled at once) */
  uint64_t nvrtc_compiles;
  uint64_t modules_loaded;   /**< cuModuleLoadData calls that succeeded */
  uint64_t cache_hits;       /**< launches served by an already loaded module */
  uint64_t cache_misses;     /**< launches that had to compile or wait for a compile */
  uint64_t launches;         /**< kernels launched */
  double compile_ms_total;   /**< wall time spent waiting for NVRTC */
  /* Fields below were added with autotuning. */
  uint64_t tuning_runs;      /**< specializations benchmarked by this context */
  uint64_t db_result_hits;   /**< tuned configs read from the database */
  uint64_t db_cubin_hits;    /**< modules loaded from a stored cubin (no NVRTC) */
  uint64_t memory_hits;      /**< same as cache_hits: served from memory */
  uint64_t persist_failures; /**< database writes that failed (the call still ran) */
  uint64_t rejected_candidates; /**< tuning candidates rejected (wrong, unwritten, failed) */
  double tune_ms_total;      /**< wall time of tuning runs, compile included (a run's wait
                                  for another's timing is not: tuning_timing_wait_ms_total) */
  /* Fields below were added with background tuning. */
  uint64_t background_jobs;  /**< KDA_TUNE_BACKGROUND jobs finished (tuned or found stored) */
  /* Fields below were added with launch overlap. */
  /** 1 while this context launches with programmatic dependent launch; 0
   *  with KDA_LAUNCH_OVERLAP_OFF, or once the driver refused the attribute
   *  (in a call or in a tuning run: the context then launches plainly). */
  int32_t launch_overlap_active;
  /* Fields below were added with the tuning timing lock. */
  /** Tuning runs of this context that waited to time while another tuning
   *  run of this process timed on the same GPU (two runs timing at once
   *  would each time the other's kernels too). Only the timing waits: the
   *  compiles of concurrent runs overlap. */
  uint64_t tuning_timing_waits;
  double tuning_timing_wait_ms_total; /**< their waiting, not in tune_ms_total */
  /* Fields below were added with cubins of other NVRTC builds. */
  /** Of db_cubin_hits, the cubins another NVRTC build of this process's
   *  major version compiled (see "Stored cubins and the NVRTC build"). */
  uint64_t db_cubin_other_nvrtc_hits;
} kda_stats;

KDA_API kda_status kda_context_get_stats(kda_context *ctx, kda_stats *stats);

/* ------------------------------------------------------------------------ */
/* Kernels                                                                   */
/* ------------------------------------------------------------------------ */

/**
 * Arguments of every gate kernel. All pointers are device pointers.
 * Dense layout: g and out are [batch, seq_len, num_heads, head_dim], row major.
 * Varlen layout: batch == 1, seq_len is the total token count, sequence i
 * spans tokens [cu_seqlens[i], cu_seqlens[i+1]).
 * The scalar cumsum form ([B, T, H]) is head_dim == 1.
 */
typedef struct kda_gate_args {
  uint32_t struct_size;       /**< sizeof(kda_gate_args); set by kda_gate_args_default() */
  const void *g;              /**< input, raw or activated gate */
  kda_dtype g_dtype;          /**< F32, F16 or BF16 */
  void *out;                  /**< output, same shape as g; must not overlap g */
  kda_dtype out_dtype;        /**< F32 (default) or BF16 */
  int64_t batch;              /**< B >= 1 */
  int64_t seq_len;            /**< T >= 1 (total tokens when varlen) */
  int32_t num_heads;          /**< H in [1, KDA_MAX_HEADS] */
  int32_t head_dim;           /**< K in [1, KDA_MAX_HEAD_DIM] */
  int32_t chunk_size;         /**< power of two in [16, 256]; default 64 */
  kda_gate_kind gate;         /**< activation; must be NONE for kda_chunk_local_cumsum */
  const float *A_log;         /**< [H] fp32; required for SOFTPLUS, optional for LOWER_BOUND */
  const float *dt_bias;       /**< [H*K] fp32 or NULL */
  float lower_bound;          /**< used by KDA_GATE_LOWER_BOUND */
  float scale;                /**< multiplies the cumsum; has_scale must be set */
  int32_t has_scale;          /**< nonzero: out = scale * cumsum */
  int32_t reverse;            /**< nonzero: suffix sum within each chunk */
  const void *cu_seqlens;     /**< [num_seqs + 1], I32 or I64; NULL: dense */
  kda_dtype cu_seqlens_dtype; /**< I32 or I64 */
  int64_t num_seqs;           /**< N, sequences in cu_seqlens */
  /** [num_chunks, 2] int32 (sequence id, chunk within sequence); required
   *  when cu_seqlens is set (build it once per batch and reuse it). A row
   *  whose sequence id is negative or not below num_seqs, or whose chunk is
   *  negative or past its sequence, is skipped (nothing read or written). */
  const int32_t *chunk_indices;
  /** Rows of chunk_indices to launch for (exact count, or the capacity
   *  kda_chunk_indices_capacity() when num_chunks_device is set). */
  int64_t num_chunks;
  /** Optional device int32 holding the real chunk count written by
   *  kda_chunk_indices_build_device(); rows at or past it are skipped. */
  const int32_t *num_chunks_device;
  /** Optional host copy of cu_seqlens (same dtype and values, num_seqs + 1
   *  entries), read during the call only. When given, it must run from 0
   *  to seq_len without decreasing (else KDA_ERROR_BAD_SEQLENS), and a batch
   *  of at most KDA_MAX_HOST_ROWS chunks with seq_len < 2^24 passes every
   *  chunk's rows in the launch itself: no chunk table is read (chunk_indices,
   *  num_chunks and num_chunks_device are ignored and may be NULL / 0) and
   *  every chunk of every sequence is computed. The kernel then skips the
   *  table lookup that otherwise precedes each block's loads (about 2-3% of
   *  the time at 16M elements on the H100, docs/PERFORMANCE.md), and the
   *  short chunks (each sequence's last, short sequences) are packed
   *  several to a block instead of one mostly idle block each (with 128
   *  sequences in 8192 tokens: 94.4-95.0% of copy bandwidth, against
   *  89.2-89.7% through the table). The host spends O(num_seqs + chunks) on it per call. A
   *  larger batch uses chunk_indices as if this field were NULL. */
  const void *cu_seqlens_host;
  /** Optional chunk plan built by kda_chunk_plan_build() for this batch
   *  (same seq_len, num_seqs and chunk_size; batch 1). It replaces the
   *  chunk table: cu_seqlens is not read (may be NULL), and chunk_indices,
   *  num_chunks, num_chunks_device and cu_seqlens_host must be NULL / 0.
   *  The kernel reads its block's row from the plan while it still waits
   *  for the kernel before it, which a caller's table cannot allow (the
   *  kernel before may be writing it): see kda_chunk_plan_build. In
   *  kda_prewarm and kda_compile_offline any non-NULL value only asks for
   *  this specialization and is not read. */
  const kda_chunk_plan *chunk_plan;
} kda_gate_args;

/** Defaults: F32 -> F32, chunk 64, gate NONE, no scale, forward, dense. */
KDA_API kda_gate_args kda_gate_args_default(void);

/* Accuracy, against the same function computed in float64 from the same
 * inputs: an fp32 output is within 2e-5 * (1 + |exact|) of it; a bf16
 * output is that fp32 result rounded to nearest, so within half a bf16 ulp
 * more (bf16 keeps 8 significant bits: at most 2^-8 * |exact|). The fused
 * kernel sums in fp32: a gate's values all have one sign, so its partial
 * sums never exceed its result. kda_chunk_local_cumsum takes values of any
 * sign, whose partial sums can be far larger than the result (digits
 * cancel): it sums in double and rounds once, so the bound holds there
 * too. g and out need only their element type's alignment (views into
 * larger tensors are fine): the kernel's vector width follows their
 * addresses. An address not aligned for its element type (which would
 * fault the kernel and lose the CUDA context) is KDA_ERROR_INVALID_ARGUMENT,
 * nothing launched. */

/** Fused activation + chunk-local cumsum (gate must be SOFTPLUS or LOWER_BOUND). */
KDA_API kda_status kda_gate_chunk_cumsum(kda_context *ctx, const kda_gate_args *args,
                                         kda_stream stream);
/** Chunk-local cumsum of an already activated gate (gate must be NONE).
 *  Sums in double (see Accuracy above). */
KDA_API kda_status kda_chunk_local_cumsum(kda_context *ctx, const kda_gate_args *args,
                                          kda_stream stream);
/** Elementwise activation only (the first kernel of the unfused path):
 *  out = gate(g). chunk_size, reverse, scale and varlen fields are ignored. */
KDA_API kda_status kda_gate(kda_context *ctx, const kda_gate_args *args, kda_stream stream);

/* ------------------------------------------------------------------------ */
/* Chunk indices for packed variable-length batches                          */
/* ------------------------------------------------------------------------ */

/** Upper bound on the chunk count: ceil(total_tokens / chunk_size) + num_seqs.
 *  Returns -1 for arguments out of range. */
KDA_API int64_t kda_chunk_indices_capacity(int64_t total_tokens, int64_t num_seqs,
                                           int32_t chunk_size);

/** Host builder. cu_seqlens is a host array of num_seqs + 1 entries (I32 or
 *  I64), non-decreasing from 0. Writes (sequence, chunk) pairs to out
 *  ([capacity, 2] int32) and their count to *num_chunks. Empty sequences get
 *  no chunk. On failure the content of out is unspecified. */
KDA_API kda_status kda_chunk_indices_build_host(const void *cu_seqlens, kda_dtype cu_seqlens_dtype,
                                                int64_t num_seqs, int32_t chunk_size,
                                                int32_t *out, int64_t capacity,
                                                int64_t *num_chunks);

/** Device builder: no host synchronisation, legal inside stream capture once
 *  warm. out is a device [capacity, 2] int32 buffer with capacity >=
 *  kda_chunk_indices_capacity(total_tokens, num_seqs, chunk_size); rows past
 *  the real count are filled with -1. The real count goes to the device int32
 *  *num_chunks_device. A cu_seqlens that is not non-decreasing from 0 to
 *  total_tokens is a caller bug the device cannot report without a
 *  synchronisation; its result is defined: sequence i spans [a, b) with
 *  a = clamp(cu_seqlens[i], 0, total_tokens), b = min(cu_seqlens[i+1],
 *  total_tokens), and gets no rows when b <= a (a decreasing entry is an
 *  empty sequence); rows past capacity are dropped and the count capped at
 *  it. The kernels then touch nothing outside [0, total_tokens), leave a
 *  token no row covers unwritten, and give a token two overlapping
 *  sequences cover the value of one of them. */
KDA_API kda_status kda_chunk_indices_build_device(kda_context *ctx, const void *cu_seqlens,
                                                  kda_dtype cu_seqlens_dtype, int64_t num_seqs,
                                                  int64_t total_tokens, int32_t chunk_size,
                                                  int32_t *out, int64_t capacity,
                                                  int32_t *num_chunks_device, kda_stream stream);

/* ------------------------------------------------------------------------ */
/* Chunk plans: a device-built varlen batch description the library owns    */
/* ------------------------------------------------------------------------ */

/**
 * A plan holds, in device memory the library allocates and only its own
 * builder kernel writes, each chunk's first row and length for one batch,
 * with the short chunks (each sequence's last, short sequences) packed
 * several to a block as cu_seqlens_host packs them (first fit, largest
 * first, at granules of chunk_size / 8 rows, at least 8), so that a batch of
 * many short sequences does not launch a mostly idle block per chunk.
 * Built once per batch on the device (no host synchronisation, legal in
 * stream capture once warm) and passed to every gate kernel of the batch
 * through kda_gate_args.chunk_plan. Block shapes whose segments are longer
 * than a granule (chunk_size / seg rows) are not used with a plan.
 *
 * Why it is faster than a chunk table: a kernel launched with programmatic
 * dependent launch may start before the kernel ahead of it in the stream
 * has finished, so it must wait before reading anything that kernel could
 * write, including a caller's chunk table; every block then pays the
 * table's round trip after the wait. Nothing but kda_chunk_plan_build
 * writes a plan, and the first gate kernel that reads a plan on its build
 * stream after a build is launched without programmatic overlap (it starts
 * only when everything before it in the stream, the build included, has
 * completed). Every later kernel starts after that one, so it can read the
 * plan before its wait.
 *
 * Rules: do not rebuild or destroy a plan while a kernel that reads it may
 * still run (on another stream: order the streams); use it on other
 * streams only after an event or synchronisation that follows the build.
 * kda_chunk_plan_build and kda_chunk_plan_destroy of one plan must not race
 * with any call that uses it; different plans are independent. Gate calls
 * that read one plan may run concurrently.
 */

/** Creates a plan for batches of at most max_total_tokens tokens (< 2^31)
 *  and max_num_seqs sequences at chunk_size. Allocates 8 bytes per granule
 *  of each chunk slot (64 bytes a slot at chunk sizes of 64 and more;
 *  kda_chunk_indices_capacity of the maxima slots) in ctx's CUDA context.
 *  Gate calls read it on any context of that CUDA context; on a context of
 *  another one they return KDA_ERROR_INVALID_ARGUMENT and launch nothing. */
KDA_API kda_status kda_chunk_plan_create(kda_context *ctx, int64_t max_total_tokens,
                                         int64_t max_num_seqs, int32_t chunk_size,
                                         kda_chunk_plan **out);

/** Builds the plan for one batch on stream: cu_seqlens is a device array of
 *  num_seqs + 1 entries (I32 or I64). A cu_seqlens that is not
 *  non-decreasing from 0 to total_tokens gets the device table's defined
 *  sequences (kda_chunk_indices_build_device); slots past the capacity
 *  are dropped (the packed short chunks come first, so the last sequences'
 *  whole chunks go). Later gate calls must pass the same total_tokens
 *  (seq_len), num_seqs and chunk size. */
KDA_API kda_status kda_chunk_plan_build(kda_chunk_plan *plan, const void *cu_seqlens,
                                        kda_dtype cu_seqlens_dtype, int64_t num_seqs,
                                        int64_t total_tokens, kda_stream stream);

/** Frees the plan's device memory. NULL is a no-op. Destroy every plan of
 *  a context before kda_context_destroy of that context: the plan uses the
 *  context to free its memory. */
KDA_API void kda_chunk_plan_destroy(kda_chunk_plan *plan);

/* ------------------------------------------------------------------------ */
/* Layer entry point (mirrors the gate stage of upstream chunk_kda_fwd)      */
/* ------------------------------------------------------------------------ */

/** Bytes of device workspace kda_layer_gate_fwd needs to build the chunk
 *  table itself: capacity * 2 int32 for the table plus one int32 count. */
KDA_API size_t kda_layer_workspace_size(int64_t total_tokens, int64_t num_seqs,
                                        int32_t chunk_size);

/**
 * Gate stage of a KDA layer. With args->gate SOFTPLUS or LOWER_BOUND (a raw
 * gate and its activation) it runs the fused kernel; with KDA_GATE_NONE (an
 * already activated gate) it runs the plain chunk cumsum. For a varlen batch
 * without args->chunk_indices it first builds the table on the device into
 * workspace (layout: capacity x 2 int32 rows, then the int32 count) with no
 * host synchronisation; the table stays there for the layer's other kernels.
 * A batch whose rows travel in the launch (args->cu_seqlens_host, at most
 * KDA_MAX_HOST_ROWS chunks) builds no table. workspace may be NULL when it
 * is not needed.
 */
KDA_API kda_status kda_layer_gate_fwd(kda_context *ctx, const kda_gate_args *args,
                                      void *workspace, size_t workspace_bytes,
                                      kda_stream stream);

/* ------------------------------------------------------------------------ */
/* Offline compilation (no device needed)                                    */
/* ------------------------------------------------------------------------ */

typedef enum kda_kernel {
  KDA_KERNEL_GATE_CHUNK_CUMSUM = 0,
  KDA_KERNEL_CHUNK_LOCAL_CUMSUM = 1,
  KDA_KERNEL_GATE = 2,
  KDA_KERNEL_CHUNK_INDICES = 3
} kda_kernel;

/**
 * Compiles with NVRTC, for compute capability arch (e.g. 90 for sm_90), the
 * specialization a call of kernel with args would use, without a driver or
 * a device: for build boxes and CI. Only the shape, dtype and flag fields of
 * args are read; its device pointers may be NULL (then the widest vector
 * width is assumed). A non-NULL cu_seqlens_host is not read either: as in
 * kda_prewarm, it asks for the specialization of calls that pass one (for
 * num_seqs equal sequences); so does a non-NULL chunk_plan (a chunk-plan
 * call). For KDA_KERNEL_CHUNK_INDICES only chunk_size, cu_seqlens_dtype and
 * chunk_plan (non-NULL: the plan's builder instead of the table's) are
 * read. compile_ms (optional) receives NVRTC's time.
 * Thread-safe.
 */
KDA_API kda_status kda_compile_offline(kda_kernel kernel, const kda_gate_args *args, int32_t arch,
                                       double *compile_ms);

/* ------------------------------------------------------------------------ */
/* Autotuning and logging                                                    */
/* ------------------------------------------------------------------------ */
/*
 * In KDA_TUNE_ON mode the first call of a specialization (shape, dtypes,
 * flags) in a token bucket looks in the tuning database for the winner on
 * this GPU model; on a miss it benchmarks a pruned set of block configs
 * (split over up to compile_threads NVRTC programs compiled at once),
 * validates every candidate's output
 * against the heuristic config's, stores the winner (config and cubin) and
 * launches it. Later calls, later contexts and later processes with the
 * same database load the stored cubin without NVRTC or timing.
 *
 * Token buckets (tokens = batch * seq_len; for varlen, the total tokens):
 *   0: < 1024   1: < 4096   2: < 16384   3: < 65536   4: >= 65536
 *
 * Several processes sharing one database tune a cold key once: one holds a
 * lease in the database and tunes, the others wait for its row (at most
 * about 2 * tune_budget_ms + 3 s) and otherwise run the heuristic config.
 * Database faults (read-only, corrupt, full disk) never fail a kernel call:
 * they are logged once at KDA_LOG_WARN and counted in persist_failures.
 * Tuning never happens inside stream capture (see "Stream capture").
 *
 * Stored cubins and the NVRTC build: a cubin is stored under the NVRTC
 * build that compiled it ("13.0 build-id=<GNU build ID>"). A process whose
 * NVRTC is another build of the same major version (a PyTorch wheel's
 * libnvrtc where `kda-tune prewarm` ran with the toolkit's) finds no cubin
 * of its own build; it then loads the one the other build compiled (the
 * same release first, e.g. another 13.0, then the most recently used 13.x)
 * rather than compile, logs which at KDA_LOG_INFO and counts it in
 * db_cubin_other_nvrtc_hits. That cubin is the very code the database's
 * winner was timed with. A driver that refuses it (a cubin of a newer
 * release than the driver) makes the call compile, as on a miss. The
 * environment variable KDA_CUBIN_NVRTC=exact restricts loads to this
 * process's own build (same-major, the default, allows the above).
 */

/** Token bucket of a call with this many tokens (see the table above). */
KDA_API int32_t kda_token_bucket(int64_t tokens);

/** The token counts of a bucket: [*lo, *hi], *hi = -1 for the last
 *  (unbounded) one; a bucket out of range is clamped. Either pointer may be
 *  NULL. Thread-safe. */
KDA_API void kda_token_bucket_range(int32_t bucket, int64_t *lo, int64_t *hi);

typedef enum kda_prewarm_outcome {
  KDA_PREWARM_TUNED = 0,   /**< benchmarked now and persisted */
  KDA_PREWARM_SKIPPED = 1, /**< the database already held a winner (force = 0) */
  KDA_PREWARM_FAILED = 2   /**< tuning failed; the status says why */
} kda_prewarm_outcome;

typedef struct kda_prewarm_result {
  uint32_t struct_size;      /**< sizeof(kda_prewarm_result), set by the caller */
  int32_t outcome;           /**< kda_prewarm_outcome */
  char config[64];           /**< winner, e.g. "vec=4,tx=32,seg=8" */
  double median_us;          /**< winner's median time */
  double heuristic_us;       /**< the heuristic config's median time */
  double compile_ms;         /**< NVRTC time of the tuning run */
  double tune_ms;            /**< whole tuning run, compile included */
  int32_t candidates;        /**< configs benchmarked (or compiled) */
  int32_t rejected;          /**< of which rejected */
  int32_t bucket;            /**< token bucket tuned */
} kda_prewarm_result;

/**
 * Tunes (and persists) the specialization kernel would use for shape, on
 * ctx's device, with inputs the library allocates and fills itself (raw
 * gate ~ normal(0,1); A_log = log(uniform(1,16)); dt_bias ~ normal(0,1)).
 * Only shape's dtype, size and flag fields are read; its pointers may be
 * NULL (A_log and dt_bias non-NULL mean "use them", i.e. has_alog /
 * has_bias), with one addition: non-NULL g and out are read as addresses
 * (never dereferenced) for their offset within 256 bytes, as a view into a
 * larger tensor has it (NULL: 256-byte aligned, as cudaMalloc's). Such a
 * view caps the kernel's vector width, so its calls have keys of their
 * own; prewarm places its inputs at those offsets and tunes that key
 * (kda_db_lookup reads g and out the same way). An offset that is not a
 * multiple of the element size (no tensor of the dtype starts there) is
 * KDA_ERROR_INVALID_ARGUMENT, as such a call is. A varlen shape is described by num_seqs > 0 (equal-length
 * sequences of seq_len / num_seqs tokens); a non-NULL cu_seqlens_host
 * (not read) asks for the specialization of calls that pass one, which a
 * batch of at most KDA_MAX_HOST_ROWS chunks uses. With force = 0 a specialization
 * already in the database is skipped; force = 1 tunes again and replaces
 * the row. KDA_KERNEL_CHUNK_INDICES is not tuned (KDA_ERROR_INVALID_ARGUMENT).
 * A varlen shape without cu_seqlens_host (a table, or a chunk plan) also
 * stores the cubin of its device builder (chunk table or plan), loaded or
 * compiled here, so that a server's first batch compiles nothing either.
 * out may be NULL. Works in KDA_TUNE_ON, KDA_TUNE_CACHED and KDA_TUNE_BACKGROUND contexts
 * (KDA_ERROR_INVALID_ARGUMENT with KDA_TUNE_OFF, which forbids database
 * access). Same thread-safety as the kernel calls. The search has the
 * context's tune_budget_ms; `kda-tune prewarm` makes its context with 15000,
 * where the whole candidate space fits (at 1000 the run times 7-15
 * candidates pruned around the heuristic, and on an H100 missed block shapes
 * 9-13% faster at T=512 H=8 and 16).
 */
KDA_API kda_status kda_prewarm(kda_context *ctx, kda_kernel kernel, const kda_gate_args *shape,
                               int32_t force, kda_prewarm_result *out);

/**
 * Compiles the heuristic config of the specialization kernel would use for
 * shape, for architecture arch (e.g. 90), without a GPU, and stores the
 * cubin in the database at db_path (NULL: the default path) under the cubin
 * key a context would look up. A context on an sm_<arch> device then loads
 * it without NVRTC when it uses the heuristic (KDA_TUNE_OFF is not enough:
 * OFF never reads the database; CACHED and ON do). The heuristic stored is
 * the one before its fit to a device's SM count; a KDA_TUNE_CACHED context
 * whose device would fit it otherwise (narrower blocks for a small grid,
 * 8 rows per thread for a large one) runs the stored one rather than
 * compile. kernel may also be
 * KDA_KERNEL_CHUNK_INDICES: the device chunk-table builder of
 * shape->cu_seqlens_dtype and chunk_size (the chunk-plan builder when
 * shape->chunk_plan is non-NULL), which a context reads from the database
 * the same way (kda_prewarm stores it for the varlen shapes that need it).
 * compile_ms (optional) receives NVRTC's time. db_path ":memory:" or ""
 * (nothing would keep the cubin) is KDA_ERROR_INVALID_ARGUMENT. Thread-safe.
 */
KDA_API kda_status kda_compile_offline_store(kda_kernel kernel, const kda_gate_args *shape,
                                             int32_t arch, const char *db_path,
                                             double *compile_ms);

/** Path of the database ctx uses ("" before its first use, with
 *  KDA_TUNE_OFF, or in memory). Valid while ctx lives. May be called from
 *  any thread, concurrently with the kernel calls: it answers "" or the
 *  path, never a partly set value. NULL ctx: "". */
KDA_API const char *kda_context_db_path(kda_context *ctx);

#ifdef __cplusplus
}
#endif

#endif /* KDA_KDA_H */
