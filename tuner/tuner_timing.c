/* Measuring candidates on the device: scratch outputs the tuner owns (the
 * caller's output is never written while tuning), NaN poisoning before each
 * validation run, a device-side comparison with the reference config, and
 * CUDA-event timing on the context's tuning stream (tuner_kit.c) with
 * rotated buffers when the working set would otherwise stay in L2. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "kernel_launch.h"
#include "tuner.h"

/* At most this many buffer sets. With 8 (until the thirteenth session) a
 * small shape's rotation stayed below the 3x L2 that rotation_for asks
 * for: T=512 H=32 rotated 100 MB through the H100's 50 MB L2, H=4 13 MB,
 * so small shapes were timed partly or wholly from L2. There, in one full
 * search, the tuner timed a block shape (vec=4,tx=4,seg=8) at 4.92 us that
 * an earlier search had timed at 5.87 and kda-bench (rotation over 2.5x
 * L2) at 6.27, slower than the heuristic's 6.16; with 256 sets two searches
 * picked a shape the bench read at 5.49-5.50 (docs/perf-notes.md,
 * "Thirteenth session"). 256 sets reach 3x L2 down to sets of 0.6 MB
 * (H100) or 0.7 MB (H200): T=512 H=2. */
#define KDA__ROT_MAX 256

struct kda__tune_bench {
  const kda__driver *drv;
  atomic_int *overlap; /* the context's launch overlap: time as it launches */
  kda__tune_launch l;
  CUstream stream; /* the kit's: held by the caller for the bench's life */
  CUfunction compare;
  int sm_count;
  int nrot;
  /* Scratch outputs and the reference, all owned, each at l.out_offset
   * into an allocation of out_bytes + 256 bytes. */
  CUdeviceptr out[KDA__ROT_MAX];
  /* in[0] is the caller's input; others are owned copies at l.g_offset
   * into allocations of in_bytes + 256. */
  CUdeviceptr in[KDA__ROT_MAX];
  CUdeviceptr ref, result;
  size_t out_alloc;              /* out_offset + out_bytes, rounded up to whole words */
  CUevent *ev; /* the kit's */
  int nev;
  int overlap_refused; /* this bench's launch turned the context's overlap off */
  int graph_timings; /* kda__bench_time calls timed as a captured graph */
};

#define BENCH_CU(b, call, ...)                                                          \
  do {                                                                                  \
    CUresult r_ = (b)->drv->call(__VA_ARGS__);                                          \
    if (r_ != CUDA_SUCCESS) return kda__cu_status((b)->drv, r_, #call, __FILE__, __LINE__); \
  } while (0)

static uint32_t poison_word(int out_dtype) {
  return out_dtype == KDA_DTYPE_BF16 ? 0x7fc07fc0u : 0x7fc00000u;
}

static size_t out_elems(const kda__tune_launch *l) {
  return l->out_bytes / (l->out_dtype == KDA_DTYPE_BF16 ? 2 : 4);
}

void kda__bench_destroy(kda__tune_bench *b) {
  if (b == NULL) return;
  const kda__driver *d = b->drv;
  if (b->stream) d->cuStreamSynchronize(b->stream);
  for (int i = 0; i < KDA__ROT_MAX; ++i) {
    if (b->out[i]) d->cuMemFree(b->out[i] - b->l.out_offset);
    if (i > 0 && b->in[i]) d->cuMemFree(b->in[i] - b->l.g_offset);
  }
  if (b->ref) d->cuMemFree(b->ref - b->l.out_offset);
  if (b->result) d->cuMemFree(b->result);
  free(b);
}

int kda__bench_rotation(const kda__tune_bench *b) { return b->nrot; }

int kda__bench_overlap_refused(const kda__tune_bench *b) { return b->overlap_refused; }

/* Words of the compare kernel's result (kernel_templates/tune_compare.cuh). */
#define KDA__COMPARE_WORDS 5

/* Rotation count: enough buffer sets that one pass over them is ~3x L2. */
static int rotation_for(const kda__tune_launch *l, int l2_bytes) {
  const double set = (double)l->in_bytes + (double)l->out_bytes;
  if (l2_bytes <= 0 || set <= 0 || set >= 2.0 * l2_bytes) return 1;
  int n = (int)(3.0 * l2_bytes / set) + 1;
  return n > KDA__ROT_MAX ? KDA__ROT_MAX : n;
}

/* An allocation of bytes + 256 at offset into it (0 and NULL on failure). */
static CUresult alloc_at(const kda__driver *d, CUdeviceptr *p, size_t bytes, unsigned offset) {
  CUdeviceptr base = 0;
  const CUresult r = d->cuMemAlloc(&base, bytes + 256);
  *p = r == CUDA_SUCCESS ? base + offset : 0;
  return r;
}

static kda_status bench_init(kda__tune_bench *b, int l2_bytes) {
  const kda__driver *d = b->drv;
  b->out_alloc = (b->l.out_offset + b->l.out_bytes + 3) & ~(size_t)3;
  BENCH_CU(b, cuMemAlloc, &b->result, KDA__COMPARE_WORDS * sizeof(unsigned long long));
  CUresult r = alloc_at(d, &b->ref, b->l.out_bytes, b->l.out_offset);
  if (r == CUDA_SUCCESS) r = alloc_at(d, &b->out[0], b->l.out_bytes, b->l.out_offset);
  if (r != CUDA_SUCCESS) return kda__cu_status(d, r, "cuMemAlloc(tuning outputs)", __FILE__, __LINE__);
  b->in[0] = (CUdeviceptr)(uintptr_t)b->l.g;
  b->nrot = 1;
  const int want = rotation_for(&b->l, l2_bytes);
  /* Extra sets are an accuracy aid: stop quietly at the first failure. */
  for (int i = 1; i < want; ++i) {
    if (alloc_at(d, &b->out[i], b->l.out_bytes, b->l.out_offset) != CUDA_SUCCESS) break;
    if (alloc_at(d, &b->in[i], b->l.in_bytes, b->l.g_offset) != CUDA_SUCCESS) break;
    /* On the kit's stream (the caller's was synchronised before), not the
     * legacy one: that would wait for another thread's capture. */
    if (d->cuMemcpyDtoDAsync(b->in[i], b->in[0], b->l.in_bytes, b->stream) != CUDA_SUCCESS) break;
    b->nrot = i + 1;
  }
  BENCH_CU(b, cuStreamSynchronize, b->stream);
  return KDA_OK;
}

kda_status kda__bench_create(const kda__driver *drv, atomic_int *overlap,
                             const kda__tune_launch *launch, int l2_bytes, int sm_count,
                             CUfunction compare, kda__tune_kit *kit, kda__tune_bench **out) {
  *out = NULL;
  kda__tune_bench *b = calloc(1, sizeof *b);
  KDA__REQUIRE(b != NULL, KDA_ERROR_OUT_OF_MEMORY, "out of memory creating the tuning bench");
  b->drv = drv;
  b->overlap = overlap;
  b->l = *launch;
  b->compare = compare;
  b->stream = kit->stream;
  b->ev = kit->ev;
  b->nev = kit->nev;
  b->sm_count = sm_count > 0 ? sm_count : 1;
  kda_status st = bench_init(b, l2_bytes);
  if (st != KDA_OK) {
    kda__bench_destroy(b);
    return st;
  }
  *out = b;
  return KDA_OK;
}

static CUresult launch(kda__tune_bench *b, CUfunction fn, const kda__spec *spec, int rot,
                       CUdeviceptr out) {
  const kda__tune_launch *l = &b->l;
  const void *g = (const void *)(uintptr_t)b->in[rot];
  void *o = (void *)(uintptr_t)out;
  const void *A_log = l->A_log, *dt_bias = l->dt_bias;
  const void *cu = l->cu_seqlens, *ci = l->chunk_indices, *nd = l->num_chunks_device;
  float scale = l->scale, lower_bound = l->lower_bound;
  long long T = l->T, cps = l->chunks_per_seq;
  void *params[] = {&g,  &o,  &A_log, &dt_bias, &scale, &lower_bound,
                    &cu, &ci, &nd,    &T,       &cps,   (void *)l->rows};
  const uint64_t grid = kda__spec_grid(spec, l->num_chunks);
  int refused = 0;
  const CUresult r = kda__launch_kernel(b->drv, b->overlap, &refused, fn, (unsigned)grid,
                                        (unsigned)kda__config_threads(spec), b->stream, params);
  if (refused) b->overlap_refused = 1;
  return r;
}

/* From the start of p's allocation (word aligned, as the memset needs, where
 * p at a bf16 view's offset may not be) past its last element. */
static kda_status poison(kda__tune_bench *b, CUdeviceptr p) {
  BENCH_CU(b, cuMemsetD32Async, p - b->l.out_offset, poison_word(b->l.out_dtype),
           b->out_alloc / 4, b->stream);
  return KDA_OK;
}

kda_status kda__bench_reference(kda__tune_bench *b, CUfunction fn, const kda__spec *spec) {
  KDA__TRY(poison(b, b->ref));
  CUresult r = launch(b, fn, spec, 0, b->ref);
  if (r != CUDA_SUCCESS) return kda__cu_status(b->drv, r, "cuLaunchKernel(reference)", __FILE__, __LINE__);
  BENCH_CU(b, cuStreamSynchronize, b->stream);
  return KDA_OK;
}

/* Runs the compare kernel of out against the reference; counts on the host.
 * A comparison that did not visit every element (a kernel that did not run,
 * a driver that does not run kernels) is an error, never a pass. */
static kda_status compare(kda__tune_bench *b, CUdeviceptr out,
                          unsigned long long res[KDA__COMPARE_WORDS]) {
  BENCH_CU(b, cuMemsetD32Async, b->result, 0, 2 * KDA__COMPARE_WORDS, b->stream);
  const void *got = (const void *)(uintptr_t)out, *ref = (const void *)(uintptr_t)b->ref;
  long long n = (long long)out_elems(&b->l);
  float tol = b->l.out_dtype == KDA_DTYPE_BF16 ? (float)KDA__TUNE_TOL_BF16 : (float)KDA__TUNE_TOL_F32;
  void *res_p = (void *)(uintptr_t)b->result;
  void *params[] = {&got, &ref, &n, &tol, &res_p};
  long long blocks = (n + 255) / 256;
  if (blocks > (long long)b->sm_count * 8) blocks = (long long)b->sm_count * 8;
  if (blocks < 1) blocks = 1;
  BENCH_CU(b, cuLaunchKernel, b->compare, (unsigned)blocks, 1, 1, 256, 1, 1, 0, b->stream, params,
           NULL);
  BENCH_CU(b, cuMemcpyDtoHAsync, res, b->result, KDA__COMPARE_WORDS * sizeof res[0], b->stream);
  BENCH_CU(b, cuStreamSynchronize, b->stream);
  KDA__REQUIRE(res[3] == (unsigned long long)n, KDA_ERROR_INTERNAL,
               "output validation compared %llu of %lld elements: the compare kernel did not "
               "run; nothing can be validated, so nothing is tuned", res[3], n);
  /* Both NaN means the reference left it unwritten too: legitimate only
   * outside every sequence of a varlen batch. */
  KDA__REQUIRE(b->l.cu_seqlens != NULL || b->l.chunk_indices != NULL || res[4] == 0, KDA_ERROR_INTERNAL,
               "the reference config left %llu of %lld elements unwritten; tuning stopped",
               res[4], n);
  KDA__REQUIRE(res[4] < (unsigned long long)n || n == 0, KDA_ERROR_INTERNAL,
               "the reference config wrote no element; tuning stopped");
  return KDA_OK;
}

/* A launch error that leaves the context usable (bad configuration,
 * resources) rejects the candidate; anything else ends tuning. */
static int launch_error_is_local(CUresult r) {
  return r == CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES || r == CUDA_ERROR_INVALID_VALUE ||
         r == CUDA_ERROR_INVALID_HANDLE || r == CUDA_ERROR_NOT_FOUND;
}

kda_status kda__bench_validate(kda__tune_bench *b, CUfunction fn, const kda__spec *spec,
                               int corrupt, kda__tune_trial *t) {
  KDA__TRY(poison(b, b->out[0]));
  CUresult r = launch(b, fn, spec, 0, b->out[0]);
  if (r != CUDA_SUCCESS) {
    const char *name = "?";
    b->drv->cuGetErrorName(r, &name);
    t->status = KDA__TRIAL_LAUNCH_FAILED;
    snprintf(t->reason, sizeof t->reason, "launch failed: %s", name);
    if (!launch_error_is_local(r))
      return kda__cu_status(b->drv, r, "cuLaunchKernel(candidate)", __FILE__, __LINE__);
    return KDA_OK;
  }
  if (corrupt) {
    /* Test hook: a wrong value in the first elements, as a bug would (1),
     * or those elements left unwritten (2: the poison put back). */
    const uint32_t one = b->l.out_dtype == KDA_DTYPE_BF16 ? 0x3f803f80u : 0x3f800000u;
    const uint32_t word = corrupt == 2 ? poison_word(b->l.out_dtype) : one;
    const size_t left = b->out_alloc / 4 - b->l.out_offset / 4; /* words from out[0]'s */
    BENCH_CU(b, cuMemsetD32Async, b->out[0] & ~(CUdeviceptr)3, word, left < 64 ? left : 64,
             b->stream);
  }
  unsigned long long res[KDA__COMPARE_WORDS] = {0};
  KDA__TRY(compare(b, b->out[0], res));
  uint32_t bits = (uint32_t)(res[2] & 0xffffffffu);
  float err;
  memcpy(&err, &bits, sizeof err);
  t->max_err = err;
  const size_t n = out_elems(&b->l);
  if (res[1] > 0) {
    t->status = KDA__TRIAL_UNWRITTEN;
    snprintf(t->reason, sizeof t->reason, "%llu of %zu elements left unwritten (NaN poison)",
             res[1], n);
  } else if (res[0] > 0) {
    t->status = KDA__TRIAL_WRONG_RESULT;
    snprintf(t->reason, sizeof t->reason,
             "%llu of %zu elements differ from the reference config (max rel err %.3g)", res[0],
             n, (double)err);
  } else {
    t->status = KDA__TRIAL_OK;
    t->reason[0] = '\0';
  }
  return KDA_OK;
}

/* Short kernels are timed as a captured graph of launches, as kda-bench and
 * a server's CUDA graphs run them: a stream of launches that short is paced
 * by the host's launch cost, which hides the differences between candidates
 * (on an H100 every T=512 H=4 candidate read 3.24-3.30 us on the stream
 * while the bench's graph put them at 2.0-3.1 us; docs/perf-notes.md, v15).
 * The graph holds at least one launch per
 * rotation set, so its replays stream the same bytes as the stream would.
 * Returns the launches captured, or 0 where the driver cannot capture (the
 * caller times the stream instead). */
static int capture(kda__tune_bench *b, CUfunction fn, const kda__spec *spec, int inner,
                   CUgraphExec *exec) {
  const kda__driver *d = b->drv;
  const int n = inner < b->nrot ? b->nrot : inner;
  *exec = NULL;
  if (d->cuStreamBeginCapture(b->stream, CU_STREAM_CAPTURE_MODE_RELAXED) != CUDA_SUCCESS) return 0;
  int ok = 1;
  for (int i = 0; i < n && ok; ++i) ok = launch(b, fn, spec, i % b->nrot, b->out[i % b->nrot]) == CUDA_SUCCESS;
  CUgraph g = NULL;
  if (d->cuStreamEndCapture(b->stream, &g) != CUDA_SUCCESS || g == NULL) ok = 0;
  if (ok && d->cuGraphInstantiate(exec, g, 0) != CUDA_SUCCESS) {
    *exec = NULL;
    ok = 0;
  }
  if (g != NULL) d->cuGraphDestroy(g);
  return ok ? n : 0;
}

/* One sample's launches: the graph, or `inner` launches on the stream. */
static CUresult sample(kda__tune_bench *b, CUfunction fn, const kda__spec *spec, CUgraphExec exec,
                       int inner, int *k) {
  if (exec != NULL) return b->drv->cuGraphLaunch(exec, b->stream);
  for (int i = 0; i < inner; ++i, ++*k) {
    const CUresult r = launch(b, fn, spec, *k % b->nrot, b->out[*k % b->nrot]);
    if (r != CUDA_SUCCESS) return r;
  }
  return CUDA_SUCCESS;
}

static kda_status time_samples(kda__tune_bench *b, CUfunction fn, const kda__spec *spec,
                               CUgraphExec exec, int samples, int inner, double *us) {
  int k = 0;
  for (int w = 0; w < KDA__TUNE_WARMUP; ++w) {
    const CUresult r = sample(b, fn, spec, exec, 1, &k);
    if (r != CUDA_SUCCESS) return kda__cu_status(b->drv, r, "cuLaunchKernel(warm-up)", __FILE__, __LINE__);
  }
  /* Back to back: event i opens sample i and closes sample i - 1, so the
   * GPU never idles waiting for the host between samples. */
  BENCH_CU(b, cuEventRecord, b->ev[0], b->stream);
  for (int s = 0; s < samples; ++s) {
    const CUresult r = sample(b, fn, spec, exec, inner, &k);
    if (r != CUDA_SUCCESS) return kda__cu_status(b->drv, r, "cuLaunchKernel(timing)", __FILE__, __LINE__);
    BENCH_CU(b, cuEventRecord, b->ev[s + 1], b->stream);
  }
  BENCH_CU(b, cuEventSynchronize, b->ev[samples]);
  for (int s = 0; s < samples; ++s) {
    float ms = 0;
    BENCH_CU(b, cuEventElapsedTime, &ms, b->ev[s], b->ev[s + 1]);
    us[s] = (double)ms * 1000.0 / inner;
  }
  return KDA_OK;
}

kda_status kda__bench_time(kda__tune_bench *b, CUfunction fn, const kda__spec *spec,
                           int samples, int inner, double *us) {
  if (samples > b->nev - 1) samples = b->nev - 1;
  if (inner < 1) inner = 1;
  CUgraphExec exec = NULL;
  const int captured = inner > 1 ? capture(b, fn, spec, inner, &exec) : 0;
  if (captured > 0) ++b->graph_timings;
  const kda_status st = time_samples(b, fn, spec, exec, samples, captured > 0 ? captured : inner, us);
  if (exec != NULL) b->drv->cuGraphExecDestroy(exec);
  return st;
}

int kda__bench_graph_timings(const kda__tune_bench *b) { return b->graph_timings; }
