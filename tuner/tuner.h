/* The autotuner: picks the block config of a tuned slot (a specialization
 * in a token bucket) on the real card, validates every candidate against
 * the heuristic config's output, and persists the winner (config + cubin)
 * through the store (tuner/store.h).
 *
 * Split by job:
 *  tuner_select.c  pure: statistics, finalists, winner, budget pruning
 *  tuner_keys.c    pure: key texts and hashes, candidate space, cubin framing
 *  tuner_timing.c  GPU: scratch buffers, validation, CUDA-event timing
 *  tuner.c         the slot build: database, lease, compile, bench, persist
 *  tuner_run.c     one tuning run: prune, compile, validate, time, pick
 *  tuner_compile.c the candidates as NVRTC programs on parallel threads,
 *                  and the process-wide pool of compile threads
 *  tuner_api.c     kda_prewarm, kda_compile_offline_store, kda_token_bucket */
#ifndef KDA_TUNER_TUNER_H
#define KDA_TUNER_TUNER_H

#include <cuda.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "driver.h"
#include "gate_args.h"
#include "kda/kda.h"
#include "kda/kda_db.h"
#include "kernel_source.h"
#include "spec.h"
#include "store.h"

/* ------------------------------------------------------------------------ */
/* Constants of the method                                                   */
/* ------------------------------------------------------------------------ */

#define KDA__TUNE_SPACE_MAX 512     /* configs of one slot, heuristic included */
#define KDA__TUNE_BUDGET_MAX_MS 3600000.0 /* kda_options.tune_budget_ms: one hour */
#define KDA__TUNE_SAMPLES 15        /* timed samples per candidate (and per re-measure) */
#define KDA__TUNE_WARMUP 2          /* untimed launches before the samples */
#define KDA__TUNE_INNER_MAX 32      /* launches per sample for very short kernels */
/* A sample spans at least this much GPU time. The event recorded between
 * samples ends the programmatic-launch overlap of back-to-back kernels (a
 * layer's graph has no such break), so longer samples time what a layer
 * sees; 20 us (before v10) put a break every 3 launches at T=8192 H=4. */
#define KDA__TUNE_SAMPLE_US 100.0
/* Finalists are re-timed in rounds, each round timing every finalist, so
 * drift over the run hits them alike; SAMPLES / ROUNDS samples a round. */
#define KDA__TUNE_FINALIST_ROUNDS 3
#define KDA__TUNE_FINALIST_FRAC 0.05 /* re-measure those within 5% of the best */
/* Winner: the lowest config id within 0.5% of the best (stable across
 * processes for configs that time alike). It was 2%, which gave away up to
 * 2%: the H100 bench of 2026-11-26 had tuned picks 1.5-2.5% slower than the
 * heuristic at T=8192 H=32 and T=32768 H=32 varlen. */
#define KDA__TUNE_BAND 0.005
#define KDA__TUNE_TOL_F32 2e-5      /* |x - ref| <= tol * (1 + |ref|) */
#define KDA__TUNE_TOL_BF16 1e-2
/* NVRTC wall-time model: a compile of P programs at once takes about
 * parse + inst(P) * largest, largest being the biggest program's
 * instantiations. inst(P) is learned per level of P (1, 2, 3-4, 5-8, 9+)
 * from every tuning run's wall time (kda__tune_calibrate). Before the first
 * measurement the defaults come from the H100 machine (16 cores, NVRTC
 * 13.0): one instantiation alone ~197 ms and one program of ~4 ~500 ms
 * (parse ~100 ms, ~100 ms each); the first, cold, compile of a process pays
 * more (a cold tuning run compiling one program of 3 took ~600 ms in all:
 * ~150 ms each is assumed). Parallel programs scaled badly there: 8
 * programs of ~4 took ~1.7 s wall where one such program alone took ~0.5 s
 * (8 x 4 instantiations ~3.3 s serially: a speedup of ~2), so until
 * measured P programs are assumed to run at most 2x faster than one:
 * inst(P) = 150 ms * max(1, P / 2). The first run on 16 cores (8 threads)
 * then compiles 7 candidates and the compare kernel as 8 programs of one,
 * estimated at 700 ms. */
#define KDA__TUNE_COMPILE_PARSE_MS 100.0
#define KDA__TUNE_COMPILE_INST_MS 150.0
#define KDA__TUNE_COMPILE_SPEEDUP_MAX 2.0
#define KDA__TUNE_COMPILE_LEVELS 5 /* programs at once: 1, 2, 3-4, 5-8, 9+ */
#define KDA__TUNE_COMPILE_EMA 0.5  /* weight of a new observation */
/* One model per class of kernel (kda__tune_compile_class): a gate-only or
 * cumsum-only instantiation compiles faster than a fused one, and a chunk of
 * 128 slower; one shared model let the cheap ones teach the fused runs a
 * cost they then overshot (H100 bench of 2026-11-26: 23-31 candidates,
 * 1.1-1.8 s of NVRTC in a 1 s budget). */
#define KDA__TUNE_COMPILE_CLASSES 8
/* Timing a candidate costs milliseconds, compiling it hundreds: most of
 * the budget goes to compiling, but the model is linear in a program's
 * instantiations and NVRTC is not once the cores are busy: on the 16-core
 * H100 machine 8 programs of 2 fused instantiations took 520-870 ms and 8
 * programs of 3 took 1100-1340 ms (the model, calibrated on the former,
 * predicted ~850). Estimating against 75% of the budget keeps such runs
 * near it; it was 90% (at 60% a slow outlier left runs with the heuristic
 * alone, hence also kda__tune_fit's floor). */
#define KDA__TUNE_COMPILE_SHARE 0.75
#define KDA__TUNE_CANDIDATE_OVERHEAD_MS 0.5 /* poison, compare, syncs per candidate */
#define KDA__TUNE_ASSUMED_GBPS 2000.0 /* launch-time estimate before measuring */

/* Token buckets: 0: < 1024, 1: < 4096, 2: < 16384, 3: < 65536, 4: >= 65536. */
#define KDA__TUNE_BUCKETS 5
int32_t kda__tune_bucket(int64_t tokens);

/* The token counts (batch x seq_len) of a bucket: [*lo, *hi]. */
void kda__tune_bucket_tokens(int32_t bucket, int64_t *lo, int64_t *hi);

/* ------------------------------------------------------------------------ */
/* Selection (tuner_select.c): pure functions over measured trials           */
/* ------------------------------------------------------------------------ */

typedef struct kda__tune_trial {
  kda__config cfg;
  int32_t config_id;        /* index in the slot's candidate space */
  kda__trial_status status; /* only KDA__TRIAL_OK may win */
  char reason[160];         /* why it was rejected ("" when ok) */
  double median_us, p10_us, p90_us; /* < 0: not measured */
  double max_err;           /* against the reference; < 0 unknown */
  int measured;             /* timed (not skipped for budget) */
} kda__tune_trial;

/* Median, 10th and 90th percentile (nearest rank on a sorted copy) of n
 * samples; all -1 when n == 0. Any output may be NULL. */
void kda__tune_summarize(const double *samples, size_t n, double *median, double *p10,
                         double *p90);

/* Indices (ascending) of the OK trials whose median is within frac of the
 * best OK median. Returns how many (writes at most cap). */
size_t kda__tune_finalists(const kda__tune_trial *trials, size_t n, double frac, size_t *idx,
                           size_t cap);

/* The winner: among OK trials with median <= best * (1 + band), the one
 * with the lowest config_id (stable across processes). -1 if none is OK. */
long kda__tune_pick(const kda__tune_trial *trials, size_t n, double band);

/* kda__tune_pick, except that trial ref (the heuristic config, trial 0 of a
 * tuning run) wins whenever it is OK and within the band: a tie within the
 * noise never replaces the heuristic by a config that may be slower in
 * steady state (the band is +-0.5%; on the H100 such a swap cost chunk 128
 * 1.2% in kda-bench, docs/perf-notes.md). */
long kda__tune_pick_keep(const kda__tune_trial *trials, size_t n, double band, size_t ref);

/* The chunk columns (chunks x heads x head_dim) where
 * kda__tune_unsafe_in_servers leaves vec=2,tx=8,seg=16 out: [MIN, END). */
#define KDA__TUNE_SERVER_SLOW_MIN_COLUMNS 12288
#define KDA__TUNE_SERVER_SLOW_END_COLUMNS 24576

/* 1 for a block shape the tuner must not time although its own timing may
 * rank it first, for a slot whose launches span [lo_columns, hi_columns]
 * chunk columns (the winner serves the whole token bucket); wider: the
 * space has shapes of vec >= 2 and the head dim is 64 or more. On an H100, in a PyTorch process after its
 * fourth CUDA graph capture (which a graph-capturing server makes at start)
 * and in some plain C processes, one-channel-per-thread shapes (vec=1) ran
 * up to 37% slower than before at grids of 512 to 2048 blocks (T=512 H=8:
 * vec=1,tx=16,seg=16 2.44 -> 3.33 us, H=16: vec=1,tx=16,seg=8 3.55 ->
 * 4.85), and vec=2,tx=8,seg=16 11-20% slower at T=512 H=16 (128 chunk-heads
 * of K=128); no vec >= 4 shape measured moved, and before the state the
 * best of them was at most 0.05 us slower than the best vec=1 shape at
 * T=512 H=4 to 16.
 * The tuner's own timing never saw the slowdown, even inside such a
 * process, so these shapes are left out instead (docs/perf-notes.md,
 * nineteenth session). The heuristic config is timed whatever it is. */
int kda__tune_unsafe_in_servers(kda__config c, int wider, int64_t lo_columns,
                                int64_t hi_columns);

/* What a result stores for a shape kda__tune_unsafe_in_servers left out:
 * a "rejected" trial, never timed, whose reason says why (kda_db.h). */
#define KDA__TUNE_LEFT_OUT_REASON                                                   \
  KDA_DB_TRIAL_LEFT_OUT ": PyTorch servers run this shape slower than the tuner " \
                        "measures it (docs/perf-notes.md, nineteenth session)"
void kda__tune_left_out_trial(kda__config c, int32_t config_id, kda__tune_trial *t);

/* What the process has learned of NVRTC's wall time, per level of programs
 * compiled at once (kda__tune_level); inst_ms[l] == 0: level not seen. */
typedef struct kda__compile_model {
  double parse_ms;
  double inst_ms[KDA__TUNE_COMPILE_LEVELS];  /* EMA of (wall - parse) / largest */
  double programs[KDA__TUNE_COMPILE_LEVELS]; /* EMA of the programs at once it was seen at */
} kda__compile_model;

/* Level of `programs` compiled at once: 0 for 1, 1 for 2, 2 for 3-4, 3 for
 * 5-8, 4 for 9 and more. */
int kda__tune_level(size_t programs);
/* The defaults above, nothing seen. */
kda__compile_model kda__compile_model_default(void);
/* Learns one compile: wall_ms for `programs` programs at once whose largest
 * held `largest` instantiations. Ignores empty or non-positive input. */
void kda__compile_model_observe(kda__compile_model *m, double wall_ms, size_t programs,
                                size_t largest);
/* Estimated wall time per instantiation of the largest program when
 * `programs` compile at once. Nothing seen: the default (speedup at most
 * KDA__TUNE_COMPILE_SPEEDUP_MAX). A level not seen is derived from the
 * nearest seen one assuming no more speedup than it showed: more programs
 * keep its throughput (inst grows with P), fewer keep its time per
 * instantiation (fewer neighbours should make each faster, but under
 * contention from other runs, when a run gets fewer threads, it may not). */
double kda__compile_model_inst_ms(const kda__compile_model *m, size_t programs);

/* The budget model of one tuning run. */
typedef struct kda__tune_budget {
  double budget_ms;
  kda__compile_model compile; /* a snapshot of the process's */
  double compile_share;     /* of budget_ms */
  double launch_us;         /* estimated duration of one launch */
  int launches_per_candidate;
  double overhead_ms;       /* fixed cost per candidate */
  int threads;              /* compile threads the run holds (kda__compile_pool_reserve) */
} kda__tune_budget;

/* The class of a slot's compile model: 0 chunk_indices; gate_cumsum 1 +
 * cumsum + 2 * gated + 3 * (chunk > 64). */
int kda__tune_compile_class(const kda__spec *slot);
/* The process's compile model of class cls (defaults until calibrated) for
 * a launch estimated at launch_us, one compile thread. */
kda__tune_budget kda__tune_budget_default(double budget_ms, double launch_us, int cls);

/* Records a compile into the process-wide model (thread-safe): it took
 * wall_ms with `programs` programs at once, the largest of `largest`
 * instantiations. Later budgets in this process use it. */
void kda__tune_calibrate(int cls, double wall_ms, size_t programs, size_t largest);
/* Records what a run spent per candidate besides compiling and the launches
 * the budget model counts (module loads, validation, syncs; thread-safe).
 * Later budgets in this process use it where it exceeds the default
 * KDA__TUNE_CANDIDATE_OVERHEAD_MS: on the 16-core H100 machine warm runs of
 * 31 candidates took 1.1-1.9 s of a 1 s budget with the default alone. */
void kda__tune_calibrate_overhead(double per_candidate_ms);
/* Estimated wall time of compiling n candidates and the compare kernel in
 * min(threads, n + 1) programs at once. */
double kda__tune_compile_ms(const kda__tune_budget *b, size_t n);
/* Estimated wall time of a run with n candidates (compile + timing). */
double kda__tune_estimate_ms(const kda__tune_budget *b, size_t n);
/* Most candidates whose compile fits compile_share of the budget and whose
 * whole estimate fits the budget; at least 1 (the heuristic), and at least
 * what the default compile model admits with the same budget. */
size_t kda__tune_fit(const kda__tune_budget *b);

/* Ranks the space by closeness to the heuristic (log2 distance of each
 * knob plus penalties for tiny or huge blocks and for grids that leave SMs
 * idle) and writes the first `keep` indices to out, the heuristic's index
 * first; with keep >= 4 each other vector width's best-ranked config comes
 * next (nearest width first), then the rest by rank. Ties go to the lower
 * index. Returns the count written. */
size_t kda__tune_prune(const kda__spec *slot, const kda__config *space, size_t n,
                       size_t heuristic_id, int64_t num_chunks, int sm_count, size_t keep,
                       size_t *out);

/* ------------------------------------------------------------------------ */
/* Keys (tuner_keys.c)                                                       */
/* ------------------------------------------------------------------------ */

/* "vec=4,tx=32,seg=8"; the length or -1. */
int kda__config_text(const kda__config *c, char *buf, size_t size);
/* Parses kda__config_text's format; 0 on success, -1 otherwise. */
int kda__config_parse(const char *text, kda__config *c);

/* Canonical spec text without config, bucket and vector cap, e.g.
 * "gate_cumsum in=f32 out=f32 H=32 K=128 chunk=64 cumsum=1 gate=1 bias=1
 * alog=1 scale=0 reverse=0 varlen=0 idx=i32". Length or -1. */
int kda__tune_spec_text(const kda__spec *slot, char *buf, size_t size);

/* The slot's candidate space: kda__config_space() without vector widths
 * above slot->vec_cap, then heuristic appended if it is not there.
 * *heuristic_id gets its index. Returns the count (at most cap). */
size_t kda__tune_space(const kda__spec *slot, kda__config heuristic, kda__config *out,
                       size_t cap, size_t *heuristic_id);
/* sha256 hex of the space's text (one config per line, in order). */
void kda__tune_space_hash(const kda__config *space, size_t n, char hex[65]);

/* sha256 hex of a template and every header it includes (recursively,
 * `#include "x"` lines resolved in set), each framed as name, NUL, size,
 * bytes; the main file first, headers in name order. Editing one kernel
 * leaves the others' hashes alone. KDA_ERROR_KERNEL_SOURCE if missing. */
kda_status kda__template_hash(const kda__source_set *set, const char *source_name,
                              char hex[65]);

/* NVRTC version with its build: "13.0 build-id=65be0db3..." (the loaded
 * library's GNU build ID, the same for every copy of one build), or
 * "13.0 libnvrtc.so.13.0.88" (its real file name) where it has none.
 * Computed once. */
const char *kda__nvrtc_build_version(void);

/* Test hook KDA_TEST_GPU_IDENTITY (docs/GUARANTEES.md): lets one card pose
 * as another GPU model, so tests on a one-GPU machine can check that two
 * models in one database keep separate rows. text is ';'-separated
 * key=value fields, e.g. "name=Fake GPU X;pci=0xfffe;sms=100": name (the
 * marketing name), pci (PCI device id), sms (SM count), l2 (L2 bytes);
 * numbers decimal or 0x-hex, positive. The compute capability is not
 * overridable: the cubins must still run on the real card. Overwrites those
 * fields of *info and returns 0, or returns -1 and leaves *info alone. */
int kda__gpu_identity_override(const char *text, kda_device_info *info);

/* Room for an NVRTC build's text ("13.0 build-id=<40 hex>" or a file name). */
#define KDA__NVRTC_TEXT_MAX 160

typedef struct kda__tune_keys {
  char gpu[128];
  char kernel[32];
  char spec[320];       /* result key: spec text + " veccap=N" */
  char cubin_spec[300]; /* cubin key: spec text */
  int64_t bucket;
  char template_hash[65];
  char space_hash[65];
  int32_t arch;
  char nvrtc[KDA__NVRTC_TEXT_MAX];
  char options[128];
  char lease[1024]; /* every result-key field joined, for the lease table */
} kda__tune_keys;

/* Fills every key of a slot. nvrtc may be NULL (kda__nvrtc_build_version). */
kda_status kda__tune_keys_make(const kda_device_info *info, int arch,
                               const kda__source_set *sources, const kda__spec *slot,
                               const kda__config *space, size_t n, const char *nvrtc,
                               kda__tune_keys *out);
/* Views of the keys for the store (borrowing k's strings). */
void kda__tune_result_key(const kda__tune_keys *k, kda__store_key *out);
void kda__tune_cubin_key(const kda__tune_keys *k, const char *config_text, kda__cubin_key *out);

/* A stored cubin carries the lowered name of its kernel (needed by
 * cuModuleGetFunction without NVRTC): "KDACUBN1", u32 name length, name,
 * padding to 16 bytes, the cubin. frame mallocs *blob. */
kda_status kda__cubin_frame(const void *cubin, size_t size, const char *lowered, void **blob,
                            size_t *blob_size);
/* 0 and pointers into blob (name not NUL-terminated: use *name_len), or -1
 * if blob is not a framed cubin. */
int kda__cubin_unframe(const void *blob, size_t size, const char **name, size_t *name_len,
                       const void **cubin, size_t *cubin_size);

/* ------------------------------------------------------------------------ */
/* Timing (tuner_timing.c)                                                   */
/* ------------------------------------------------------------------------ */

/* What a gate_cumsum launch needs besides its config and output. */
typedef struct kda__tune_launch {
  const void *g, *A_log, *dt_bias, *cu_seqlens, *chunk_indices, *num_chunks_device;
  const void *rows; /* the kernel's last argument: kda__plan_rows_arg of the call's plan */
  float scale, lower_bound;
  long long T, chunks_per_seq;
  int64_t num_chunks;
  size_t in_bytes, out_bytes;
  int out_dtype;
  /* The call's g and out offsets within 256 bytes (a view's): the bench's
   * own buffers sit at them, so candidates are timed on the alignment the
   * calls have. */
  unsigned g_offset, out_offset;
} kda__tune_launch;

typedef struct kda__tune_bench kda__tune_bench;

/* A context's tuning stream and its events (tuner_kit.c). */
#define KDA__KIT_EVENTS (KDA__TUNE_SAMPLES * 2 + 2)
typedef struct kda__tune_kit {
  CUstream stream;
  CUevent ev[KDA__KIT_EVENTS];
  int nev;
  int lock_fd;         /* the GPU's timing lock file across processes, or -1 */
  int flocked;         /* lock_fd is locked by the run holding the kit */
  char lock_path[512];
} kda__tune_kit;

/* Takes ctx's device timing lock, waiting while another tuning run of this
 * process, then of another process, times on that GPU (counted in ctx's
 * stats, *waited_ms; another process's wait is bounded, then the run times
 * anyway with a warning), and returns ctx's kit, made on first use. Hold it
 * from the first launch of a run's bench to its last; on error nothing is
 * held. */
kda_status kda__tune_kit_acquire(kda_context *ctx, kda__tune_kit **kit, double *waited_ms);
/* Synchronizes the kit's stream and releases the lock. */
void kda__tune_kit_release(kda_context *ctx);
/* The device's copy bandwidth in GB/s (read + write) in *gbps, timed on
 * the kit's stream by its caller holding the kit (tuner_copy_bw.c); -1 if
 * it could not be measured. KDA_ERROR_CONTEXT_LOST where a call of it met
 * a lost context (the run must then store nothing), else KDA_OK. */
kda_status kda__tune_copy_bw(const kda__driver *d, const kda__tune_kit *kit, double *gbps);
/* At context destroy, ctx current: frees the kit (no run may hold it). */
void kda__tune_kit_destroy(kda_context *ctx);
/* At context destroy when the CUDA context cannot be entered (destroyed
 * by its owner, or the driver shut down): its streams and events went with
 * it; frees what the host holds (memory, the timing lock's descriptor). */
void kda__tune_kit_abandon(kda_context *ctx);
/* The most tuning runs of this process ever inside the timing section at
 * once (1 with the lock; tests). */
int kda__tune_kit_inside_max(void);

/* Scratch outputs (and, when input + output fit in L2 a few times, rotated
 * copies of the input and several outputs, so samples do not hit a warm
 * L2), on the stream and events of kit (held by the caller until
 * kda__bench_destroy). compare is tune_compare<OUT_DT>. */
/* Candidates launch as the context launches (overlap: its launch_overlap
 * flag, or NULL for plain launches), so back-to-back samples time what a
 * stream of calls sees. */
kda_status kda__bench_create(const kda__driver *drv, atomic_int *overlap,
                             const kda__tune_launch *launch, int l2_bytes, int sm_count,
                             CUfunction compare, kda__tune_kit *kit, kda__tune_bench **out);
void kda__bench_destroy(kda__tune_bench *b);
/* How many input/output buffer sets are rotated (1: no rotation). */
int kda__bench_rotation(const kda__tune_bench *b);
/* 1 if one of this bench's launches was refused the programmatic attribute
 * (and so turned the context's launch overlap off). */
int kda__bench_overlap_refused(const kda__tune_bench *b);

/* Runs the reference config into the reference buffer (poisoned first). */
kda_status kda__bench_reference(kda__tune_bench *b, CUfunction fn, const kda__spec *spec);
/* Poisons the scratch output, runs fn once, optionally corrupts it (test
 * hook: 1 wrong values, 2 unwritten elements), compares with the reference
 * and fills t->status / reason / max_err. Returns non-OK only for failures that end tuning (a sticky
 * device error); a rejected candidate is KDA_OK with t->status set. */
kda_status kda__bench_validate(kda__tune_bench *b, CUfunction fn, const kda__spec *spec,
                               int corrupt, kda__tune_trial *t);
/* Times fn: warm-up, then `samples` samples of `inner` launches each (one
 * event pair per sample, back to back); us[i] = per-launch microseconds.
 * With inner > 1 a sample is one replay of a captured graph of at least
 * `inner` launches (one per rotation set at least), where the driver can
 * capture; otherwise the launches go to the stream one by one. */
kda_status kda__bench_time(kda__tune_bench *b, CUfunction fn, const kda__spec *spec,
                           int samples, int inner, double *us);
/* How many kda__bench_time calls of b were timed as a captured graph (the
 * rest ran on the stream: inner == 1, or the driver could not capture). */
int kda__bench_graph_timings(const kda__tune_bench *b);

/* ------------------------------------------------------------------------ */
/* The slot build (tuner.c)                                                  */
/* ------------------------------------------------------------------------ */

struct kda_context;
struct kda__launch_plan;

typedef struct kda__tune_request {
  struct kda_context *ctx;
  const kda_gate_args *args;          /* the call (device pointers, read-only) */
  const struct kda__launch_plan *plan; /* heuristic config in plan->spec.cfg */
  CUstream stream;                    /* the caller's: synchronised before tuning */
  int mode;                           /* kda_tune_mode in effect */
  int force;                          /* tune even on a database hit (prewarm) */
  kda_prewarm_result *report;         /* optional outcome */
} kda__tune_request;

/* Specialization of kernel for a shape (device pointers may be NULL:
 * stand-ins are used), heuristic config; implemented in src/offline.c. */
kda_status kda__offline_spec(kda_kernel kernel, const kda_gate_args *shape, kda__spec *spec);

/* What kda_compile_offline_store compiles and the key it stores the cubin
 * under, computed in one place so that the writer and kda_db's checker
 * (kda_db_has_offline_cubin) agree. key points into keys and config:
 * do not copy the struct. Free with kda__offline_cubin_free. */
typedef struct kda__offline_cubin {
  kda__spec spec;
  kda__source_set sources;
  kda__tune_keys keys;
  char config[64];
  kda__cubin_key key;
} kda__offline_cubin;

kda_status kda__offline_cubin_make(kda_kernel kernel, const kda_gate_args *shape, int32_t arch,
                                   kda__offline_cubin *out);
void kda__offline_cubin_free(kda__offline_cubin *oc);

/* A shape as kda_prewarm takes it (kda.h) made into the call it stands
 * for: flags made pointers (A_log of a softplus gate), device pointers
 * cleared, *host_seqlens (free it) the equal-length cu_seqlens_host of a
 * host-rows shape. INVALID_ARGUMENT for a kernel that is not tuned. */
kda_status kda__tune_shape_call(kda_kernel kernel, const kda_gate_args *shape, kda__op *op,
                                kda_gate_args *a, void **host_seqlens);
/* a with stand-in device pointers: enough to plan the call, so that the
 * shape is checked, and its keys found, before any input is made. g and out
 * keep a's offsets within 256 bytes (a view's, which cap the vector width
 * and so are part of the key); NULL ones are 256-byte aligned, as
 * cudaMalloc's are. */
void kda__tune_stand_in_args(kda__op op, const kda_gate_args *a, kda_gate_args *f);

/* What a call looks up (tuner_call.c). */
typedef struct kda__tune_call {
  kda__spec slot;
  kda__config heuristic; /* the plan's, fitted to the GPU's SMs */
  kda__config space[KDA__TUNE_SPACE_MAX];
  size_t n;
  kda__tune_keys keys;
} kda__tune_call;

/* The candidate space and keys of slot, for a call planned as plan (its
 * heuristic fitted to the SMs), on a GPU of identity info (arch: compute
 * capability x 10). */
kda_status kda__tune_call_of(const kda_device_info *info, int arch, const kda__source_set *sources,
                             const struct kda__launch_plan *plan, const kda__spec *slot,
                             kda__tune_call *out);
/* The same from the call's arguments f (stand-in pointers): planned,
 * fitted and slotted as a context does. */
kda_status kda__tune_call_keys(const kda_device_info *info, int arch,
                               const kda__source_set *sources, kda__op op,
                               const kda_gate_args *f, kda__tune_call *out);
/* The heuristic as kda_compile_offline_store (kda-tune prewarm
 * --compile-only) stores it for slot: before kda__config_fit_grid fitted it
 * (to fitted) for the device's SM count, which a machine without the GPU
 * cannot know; a KDA_TUNE=cached call runs its stored cubin. 0 when it is
 * fitted itself or the slot's pointers do not allow its vector width. */
int kda__tune_offline_heuristic(const kda__spec *slot, kda__config fitted, kda__config *out);
/* 1 if c is in the call's candidate space (a stored winner outside it is
 * ignored). */
int kda__tune_call_has(const kda__tune_call *call, const kda__config *c);

/* Fills rec's host, driver and source for a result this process tuned
 * (tuner_provenance.c); by_prewarm: kda_prewarm ran it, else a call. */
void kda__tune_provenance(const struct kda_context *ctx, int by_prewarm, kda__store_record *rec);
/* The driver release ("580.159.04") in /proc/driver/nvidia/version's first
 * line; 0, or -1 and "" when it names none. */
int kda__driver_release_of(const char *line, char *out, size_t size);

/* 1 if the database holds a winner in call's space under its keys (a
 * lookup only: nothing is compiled, loaded or allocated); fills report as
 * a skipped prewarm. */
int kda__tuner_lookup(struct kda_context *ctx, const kda__tune_call *call,
                      kda_prewarm_result *report);

/* kda__build_fn for a specialization that is not tuned (the chunk-table
 * and chunk-plan builders); user is the kda_context. Loads the cubin the
 * database holds under the key kda_compile_offline_store and kda_prewarm
 * write, else compiles it and stores it there, so that a prewarmed server
 * does not compile its builders either. Never fails for a database reason. */
kda_status kda__stored_build(void *user, const kda__spec *spec, CUmodule *module,
                             CUfunction *function);

/* kda__build_cfg_fn for a tuned slot; user is a kda__tune_request. */
kda_status kda__tuner_build(void *user, const kda__spec *slot, CUmodule *module,
                            CUfunction *function, kda__config *config);

#endif
