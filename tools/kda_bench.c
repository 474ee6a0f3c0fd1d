/* kda-bench: the performance claims of libkda, measured in one run on one
 * card and written as a table and a JSON file.
 *
 * Method (docs/PERFORMANCE.md): every output is checked against the float64
 * reference before it is timed; steady state is 64 back-to-back launches
 * captured in a CUDA graph over rotating buffers larger than L2, median of
 * the replays; single-launch latency follows a read-only L2 flush (a memset
 * would leave dirty lines whose write-back is charged to the kernel). */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nvrtc.h>

#include "bench.h"
#include "bench_convert.h"
#include "cuda_api.h"
#include "kda/kda.h"
#include "reference.h"
#include "test_util.h"

extern char **environ;

#define GRAPH_LAUNCHES 64
#define REPLAYS 15
#define SINGLES 15

static cuda_api cu;
/* Per thread: --host-threads gives each worker a stream of its own. */
static _Thread_local CUstream g_stream;
static CUfunction g_flush;
/* An empty kernel with gate_cumsum's 12 parameters: a reference for the
 * driver's own cost of a launch on this machine (bare_setup). */
static CUfunction g_bare;
/* The same 88 bytes of parameters as one struct (launch_forms). */
static CUfunction g_bare1;
static void *g_flush_buf, *g_flush_sink;
static size_t g_flush_bytes;
static kda_device_info g_info;

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void kda_ok(kda_status st, const char *what) {
  if (st == KDA_OK) return;
  fprintf(stderr, "%s: %s\n", what, kda_last_error());
  exit(1);
}

/* A read-only pass over a buffer twice the size of L2 evicts the kernel's
 * data without leaving dirty lines behind. */
static void setup_flush(void) {
  const char *src =
      "extern \"C\" __global__ void flush(const int4 *p, long long n, int *sink) {\n"
      "  int acc = 0;\n"
      "  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;\n"
      "       i += (long long)gridDim.x * blockDim.x) { int4 v = __ldcg(p + i); acc ^= v.x ^ v.w; }\n"
      "  if (acc == 0x7355608) *sink = acc;\n"
      "}\n"
      "struct rows1 { unsigned r[1]; };\n"
      "extern \"C\" __global__ void bare(const void *g, void *out, const float *a, const float *b,\n"
      "    float scale, float lb, const int *cu, const int *ci, const int *nd, long long T,\n"
      "    long long cps, rows1 rows) {}\n"
      "struct alignas(8) args88 { char b[88]; };\n"
      "extern \"C\" __global__ void bare1(args88 a) {}\n";
  nvrtcProgram prog;
  char arch[32];
  snprintf(arch, sizeof arch, "--gpu-architecture=sm_%d%d", g_info.cc_major, g_info.cc_minor);
  const char *opts[] = {arch};
  if (nvrtcCreateProgram(&prog, src, "flush.cu", 0, NULL, NULL) != NVRTC_SUCCESS ||
      nvrtcCompileProgram(prog, 1, opts) != NVRTC_SUCCESS) {
    fprintf(stderr, "compiling the L2 flush kernel failed\n");
    exit(1);
  }
  size_t n = 0;
  nvrtcGetCUBINSize(prog, &n);
  char *cubin = malloc(n);
  nvrtcGetCUBIN(prog, cubin);
  nvrtcDestroyProgram(&prog);
  CUmodule m;
  cuda_check(&cu, cu.ModuleLoadData(&m, cubin), "cuModuleLoadData(flush)");
  cuda_check(&cu, cu.ModuleGetFunction(&g_flush, m, "flush"), "cuModuleGetFunction(flush)");
  cuda_check(&cu, cu.ModuleGetFunction(&g_bare, m, "bare"), "cuModuleGetFunction(bare)");
  cuda_check(&cu, cu.ModuleGetFunction(&g_bare1, m, "bare1"), "cuModuleGetFunction(bare1)");
  free(cubin);
  g_flush_bytes = (size_t)g_info.l2_bytes * 3;
  g_flush_buf = cuda_alloc(&cu, g_flush_bytes);
  g_flush_sink = cuda_alloc(&cu, 16);
  cuda_check(&cu, cu.MemsetD32((CUdeviceptr)(uintptr_t)g_flush_buf, 1, g_flush_bytes / 4), "memset");
}

static void flush_l2(void) {
  long long n = (long long)(g_flush_bytes / 16);
  void *params[] = {&g_flush_buf, &n, &g_flush_sink};
  cuda_check(&cu, cu.LaunchKernel(g_flush, (unsigned)g_info.sm_count * 4, 1, 1, 512, 1, 1, 0,
                                  g_stream, params, NULL), "flush");
}

static double event_ms(CUevent a, CUevent b) {
  float ms = 0;
  cuda_check(&cu, cu.EventSynchronize(b), "cuEventSynchronize");
  cuda_check(&cu, cu.EventElapsedTime(&ms, a, b), "cuEventElapsedTime");
  return ms;
}

/* Device copy bandwidth, counting bytes read plus bytes written. */
static double copy_bandwidth_gbps(void) {
  const size_t bytes = (size_t)1 << 30;
  void *a = cuda_alloc(&cu, bytes), *b = cuda_alloc(&cu, bytes);
  CUevent e0, e1;
  cu.EventCreate(&e0, 0);
  cu.EventCreate(&e1, 0);
  double t[REPLAYS];
  for (int i = -2; i < REPLAYS; ++i) {
    cu.EventRecord(e0, g_stream);
    cuda_check(&cu, cu.MemcpyDtoDAsync((CUdeviceptr)(uintptr_t)b, (CUdeviceptr)(uintptr_t)a, bytes, g_stream), "copy");
    cu.EventRecord(e1, g_stream);
    double ms = event_ms(e0, e1);
    if (i >= 0) t[i] = ms;
  }
  cu.MemFree((CUdeviceptr)(uintptr_t)a);
  cu.MemFree((CUdeviceptr)(uintptr_t)b);
  return 2.0 * (double)bytes / (median(t, REPLAYS) * 1e-3) / 1e9;
}

/* One set of device buffers for a row (inputs, outputs, unfused intermediate). */
typedef struct row_bufs {
  void *g, *out, *mid;
} row_bufs;

typedef struct row_state {
  const bench_row *row;
  kda_gate_args fused, gate, cumsum; /* g/out pointers set per set */
  row_bufs *sets;
  int nsets;
  size_t in_bytes, out_bytes;
} row_state;

typedef enum { RUN_FUSED, RUN_UNFUSED } run_kind;

static kda_status run_once(kda_context *ctx, row_state *s, int set, run_kind kind) {
  if (kind == RUN_FUSED) {
    kda_gate_args a = s->fused;
    a.g = s->sets[set].g;
    a.out = s->sets[set].out;
    return kda_gate_chunk_cumsum(ctx, &a, (kda_stream)g_stream);
  }
  kda_gate_args a = s->gate, b = s->cumsum;
  a.g = s->sets[set].g;
  a.out = s->sets[set].mid;
  b.g = s->sets[set].mid;
  b.out = s->sets[set].out;
  kda_status st = kda_gate(ctx, &a, (kda_stream)g_stream);
  return st != KDA_OK ? st : kda_chunk_local_cumsum(ctx, &b, (kda_stream)g_stream);
}

/* Steady state of n contexts' calls of one kind: per context,
 * GRAPH_LAUNCHES calls captured in one graph, rotating over the sets; the
 * graphs are replayed in turn, REPLAYS rounds of one replay each, so that
 * neither the order of the contexts nor a drift of the card's state over
 * the row favours one of them (measured one after another, the context
 * timed first read 1-4% slower than the same config timed later on some
 * mid-size rows, docs/perf-notes.md). Microseconds per call, median, in
 * us[k] for ctxs[k]. */
#define MAX_INTERLEAVED 3
static void steady_interleaved_us(kda_context **ctxs, int n, row_state *s, run_kind kind,
                                  double *us) {
  CUgraph graph[MAX_INTERLEAVED];
  CUgraphExec exec[MAX_INTERLEAVED];
  for (int k = 0; k < n; ++k) {
    kda_ok(run_once(ctxs[k], s, 0, kind), "warm-up call");
    cuda_check(&cu, cu.StreamBeginCapture(g_stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL),
               "capture");
    for (int i = 0; i < GRAPH_LAUNCHES; ++i)
      kda_ok(run_once(ctxs[k], s, i % s->nsets, kind), "captured call");
    cuda_check(&cu, cu.StreamEndCapture(g_stream, &graph[k]), "end capture");
    cuda_check(&cu, cu.GraphInstantiate(&exec[k], graph[k], 0), "instantiate");
  }
  CUevent e0, e1;
  cu.EventCreate(&e0, 0);
  cu.EventCreate(&e1, 0);
  double t[MAX_INTERLEAVED][REPLAYS];
  for (int i = -2; i < REPLAYS; ++i) {
    for (int k = 0; k < n; ++k) {
      cu.EventRecord(e0, g_stream);
      cuda_check(&cu, cu.GraphLaunch(exec[k], g_stream), "graph launch");
      cu.EventRecord(e1, g_stream);
      const double ms = event_ms(e0, e1);
      if (i >= 0) t[k][i] = ms * 1e3 / GRAPH_LAUNCHES;
    }
  }
  for (int k = 0; k < n; ++k) {
    cu.GraphExecDestroy(exec[k]);
    cu.GraphDestroy(graph[k]);
    us[k] = median(t[k], REPLAYS);
  }
  cu.EventDestroy(e0);
  cu.EventDestroy(e1);
}

static double steady_us(kda_context *ctx, row_state *s, run_kind kind) {
  double us;
  steady_interleaved_us(&ctx, 1, s, kind, &us);
  return us;
}

static double single_us(kda_context *ctx, row_state *s) {
  CUevent e0, e1;
  cu.EventCreate(&e0, 0);
  cu.EventCreate(&e1, 0);
  double t[SINGLES];
  for (int i = 0; i < SINGLES; ++i) {
    flush_l2();
    cu.EventRecord(e0, g_stream);
    kda_ok(run_once(ctx, s, 0, RUN_FUSED), "single call");
    cu.EventRecord(e1, g_stream);
    t[i] = event_ms(e0, e1) * 1e3;
  }
  cu.EventDestroy(e0);
  cu.EventDestroy(e1);
  return median(t, SINGLES);
}

/* Random inputs, one call per kernel path checked against the float64
 * reference; returns the worst relative error of the fused and unfused
 * outputs (budget 2e-5). */
static double verify_row(kda_context *ctx, row_state *s, const double *ref) {
  const size_t n = (size_t)(s->out_bytes / 4);
  float *got = malloc(n * 4);
  double worst = 0;
  for (int kind = 0; kind < 2; ++kind) {
    cuda_check(&cu, cu.MemsetD32((CUdeviceptr)(uintptr_t)s->sets[0].out, 0x7fc00000u, n), "poison");
    kda_ok(run_once(ctx, s, 0, kind == 0 ? RUN_FUSED : RUN_UNFUSED), "verify call");
    cuda_download(&cu, got, s->sets[0].out, n * 4);
    double err = 0;
    size_t bad = tu_check_close(got, ref, n, 2e-5, &err, NULL);
    if (bad) {
      fprintf(stderr, "row %s T=%lld H=%d: %zu elements outside 2e-5 (%s path)\n", s->row->group,
              (long long)s->row->tokens, s->row->heads, bad, kind ? "unfused" : "fused");
      exit(1);
    }
    if (err > worst) worst = err;
  }
  free(got);
  return worst;
}

/* Tunes the row's three kernels in the tuned context (the same call a
 * deployment's `kda-tune prewarm` makes) and keeps the fused winner's config. */
static void prewarm_row(kda_context *ctx, const kda_gate_args *shape, bench_result *res) {
  kda_gate_args s = *shape;
  s.g = NULL;
  s.out = NULL;
  s.cu_seqlens = NULL;
  s.chunk_indices = NULL;
  s.num_chunks = 0;
  kda_prewarm_result pr = {.struct_size = sizeof pr};
  kda_ok(kda_prewarm(ctx, KDA_KERNEL_GATE_CHUNK_CUMSUM, &s, 0, &pr), "prewarm fused");
  snprintf(res->config, sizeof res->config, "%s", pr.config);
  res->tune_ms = pr.tune_ms;
  res->compile_ms = pr.compile_ms;
  res->candidates = pr.candidates;
  res->tuner_us = pr.median_us;
  res->tuner_heuristic_us = pr.heuristic_us;
  kda_gate_args g = s;
  g.num_seqs = 0;
  kda_ok(kda_prewarm(ctx, KDA_KERNEL_GATE, &g, 0, &pr), "prewarm gate");
  kda_gate_args c = s;
  c.g_dtype = KDA_DTYPE_F32;
  c.gate = KDA_GATE_NONE;
  c.A_log = NULL;
  c.dt_bias = NULL;
  kda_ok(kda_prewarm(ctx, KDA_KERNEL_CHUNK_LOCAL_CUMSUM, &c, 0, &pr), "prewarm cumsum");
}

static void run_row(kda_context *ctx, kda_context *heur_ctx, kda_context *plain_ctx,
                    const bench_row *r, bench_result *res) {
  row_state s;
  memset(&s, 0, sizeof s);
  s.row = r;
  const int64_t tokens = r->batch * r->tokens;
  const size_t hk = (size_t)r->heads * r->head_dim, n = (size_t)tokens * hk;
  s.in_bytes = n * 2;
  s.out_bytes = n * 4;
  res->elements = (int64_t)n;

  tu_rng rng;
  tu_rng_seed(&rng, 1234 + (uint64_t)n);
  uint16_t *g_host = malloc(n * 2);
  double *g_d = malloc(n * sizeof *g_d);
  tu_fill_random_input(&rng, KDA_DTYPE_BF16, g_host, g_d, n, 1.0);
  float *A_log = malloc(sizeof(float) * (size_t)r->heads), *bias = malloc(sizeof(float) * hk);
  for (int h = 0; h < r->heads; ++h) A_log[h] = (float)log(1.0 + 15.0 * tu_uniform(&rng));
  for (size_t i = 0; i < hk; ++i) bias[i] = (float)tu_normal(&rng);

  int32_t *cu_h = NULL;
  void *d_cu = NULL, *d_table = NULL;
  kda_chunk_plan *plan = NULL;
  int64_t nchunks = 0;
  if (r->num_seqs) {
    int64_t lens[64];
    bench_row_lengths(r, lens);
    cu_h = calloc((size_t)r->num_seqs + 1, sizeof *cu_h);
    for (int i = 0; i < r->num_seqs; ++i) cu_h[i + 1] = cu_h[i] + (int32_t)lens[i];
    const int64_t cap = kda_chunk_indices_capacity(r->tokens, r->num_seqs, r->chunk);
    int32_t *table = malloc((size_t)cap * 8);
    kda_ok(kda_chunk_indices_build_host(cu_h, KDA_DTYPE_I32, r->num_seqs, r->chunk, table, cap, &nchunks),
           "chunk table");
    d_cu = cuda_upload(&cu, cu_h, ((size_t)r->num_seqs + 1) * 4);
    d_table = cuda_upload(&cu, table, (size_t)nchunks * 8);
    free(table);
  }
  void *d_alog = cuda_upload(&cu, A_log, sizeof(float) * (size_t)r->heads);
  void *d_bias = cuda_upload(&cu, bias, sizeof(float) * hk);

  /* Enough sets that one graph replay streams more than 2.5x L2. */
  const size_t set_bytes = s.in_bytes + s.out_bytes;
  s.nsets = (int)((2.5 * g_info.l2_bytes) / (double)set_bytes) + 1;
  if (s.nsets > GRAPH_LAUNCHES) s.nsets = GRAPH_LAUNCHES;
  s.sets = calloc((size_t)s.nsets, sizeof *s.sets);
  for (int i = 0; i < s.nsets; ++i) {
    s.sets[i].g = cuda_upload(&cu, g_host, s.in_bytes);
    s.sets[i].out = cuda_alloc(&cu, s.out_bytes);
    s.sets[i].mid = cuda_alloc(&cu, s.out_bytes);
  }

  kda_gate_args a = kda_gate_args_default();
  a.g_dtype = KDA_DTYPE_BF16;
  a.batch = r->batch;
  a.seq_len = r->tokens;
  a.num_heads = r->heads;
  a.head_dim = r->head_dim;
  a.chunk_size = r->chunk;
  a.gate = KDA_GATE_SOFTPLUS;
  a.A_log = d_alog;
  a.dt_bias = r->bias ? d_bias : NULL;
  if (r->num_seqs) {
    a.cu_seqlens = d_cu;
    a.cu_seqlens_dtype = KDA_DTYPE_I32;
    a.num_seqs = r->num_seqs;
    a.chunk_indices = d_table;
    a.num_chunks = nchunks;
    if (r->host_rows) {
      a.cu_seqlens_host = cu_h;
      a.chunk_indices = NULL;
      a.num_chunks = 0;
    }
    if (r->chunk_plan) {
      /* Built once, as a server builds it once per batch; read by every
       * launch of every context below (the plan is device memory of the
       * same CUDA context). */
      kda_ok(kda_chunk_plan_create(ctx, r->tokens, r->num_seqs, r->chunk, &plan), "chunk plan");
      kda_ok(kda_chunk_plan_build(plan, d_cu, KDA_DTYPE_I32, r->num_seqs, r->tokens, NULL),
             "chunk plan build");
      a.chunk_plan = plan;
      a.cu_seqlens = NULL;
      a.chunk_indices = NULL;
      a.num_chunks = 0;
    }
  }
  s.fused = a;
  s.gate = a;
  s.gate.cu_seqlens = NULL;
  s.gate.cu_seqlens_host = NULL;
  s.gate.chunk_indices = NULL;
  s.gate.num_chunks = 0;
  s.gate.chunk_plan = NULL;
  s.cumsum = a;
  s.cumsum.g_dtype = KDA_DTYPE_F32;
  s.cumsum.gate = KDA_GATE_NONE;

  prewarm_row(ctx, &a, res);
  double *ref = malloc(n * sizeof *ref);
  kda_gate_args h = a;
  h.A_log = A_log;
  h.dt_bias = r->bias ? bias : NULL;
  h.cu_seqlens = cu_h;
  h.chunk_plan = NULL;
  if (kda_ref_gate_chunk_cumsum(&h, g_d, ref) != 0) {
    fprintf(stderr, "reference rejected the row\n");
    exit(1);
  }
  res->max_err = verify_row(ctx, &s, ref);
  const double heur_err = verify_row(heur_ctx, &s, ref);
  if (heur_err > res->max_err) res->max_err = heur_err;
  const double plain_err = verify_row(plain_ctx, &s, ref);
  if (plain_err > res->max_err) res->max_err = plain_err;
  free(ref);
  /* Tuned, heuristic and plain-launch calls replayed in turn. */
  kda_context *fused_ctxs[3] = {ctx, heur_ctx, plain_ctx};
  double fused[3];
  steady_interleaved_us(fused_ctxs, 3, &s, RUN_FUSED, fused);
  res->fused_us = fused[0];
  res->heuristic_us = fused[1];
  res->plain_us = fused[2];
  res->fused_single_us = single_us(ctx, &s);
  res->unfused_us = steady_us(ctx, &s, RUN_UNFUSED);
  void *ins[GRAPH_LAUNCHES], *outs[GRAPH_LAUNCHES];
  for (int i = 0; i < s.nsets; ++i) {
    ins[i] = s.sets[i].g;
    outs[i] = s.sets[i].out;
  }
  char why[512];
  res->convert_us = bench_convert_us(&cu, g_stream, ins, outs, s.nsets, n, g_host,
                                     GRAPH_LAUNCHES, REPLAYS, res->convert_kernel,
                                     sizeof res->convert_kernel, why, sizeof why);
  if (res->convert_us < 0) {
    fprintf(stderr, "%s\n", why);
    exit(1);
  }

  cu.CtxSynchronize();
  for (int i = 0; i < s.nsets; ++i) {
    cu.MemFree((CUdeviceptr)(uintptr_t)s.sets[i].g);
    cu.MemFree((CUdeviceptr)(uintptr_t)s.sets[i].out);
    cu.MemFree((CUdeviceptr)(uintptr_t)s.sets[i].mid);
  }
  if (d_cu) cu.MemFree((CUdeviceptr)(uintptr_t)d_cu);
  if (d_table) cu.MemFree((CUdeviceptr)(uintptr_t)d_table);
  kda_chunk_plan_destroy(plan);
  cu.MemFree((CUdeviceptr)(uintptr_t)d_alog);
  cu.MemFree((CUdeviceptr)(uintptr_t)d_bias);
  free(s.sets);
  free(g_host);
  free(g_d);
  free(A_log);
  free(bias);
  free(cu_h);
}

/* A dense bf16 -> f32 softplus call of [1, T, H, K] without dt_bias. */
static kda_gate_args softplus_args(void *g, void *out, const void *A_log, int64_t T, int H, int K) {
  kda_gate_args a = kda_gate_args_default();
  a.g = g;
  a.g_dtype = KDA_DTYPE_BF16;
  a.out = out;
  a.batch = 1;
  a.seq_len = T;
  a.num_heads = H;
  a.head_dim = K;
  a.gate = KDA_GATE_SOFTPLUS;
  a.A_log = A_log;
  return a;
}

enum { HOST_CALLS = 100000, HOST_ROUND = 250 };

/* Median times in us of call_a(a) and, when call_b is set, call_b(b), over
 * HOST_CALLS calls each, made in rounds of HOST_ROUND after a
 * synchronisation, so the launch queue never fills and no call waits for
 * the GPU. With two calls the rounds alternate: on the lent H100 VMs the
 * driver's launch cost drifted by up to 0.5 us within a minute
 * (docs/perf-notes.md, seventh session), so a library call and a bare
 * launch measured one after the other differed by the drift as much as by
 * the library's work. */
static void median_calls_us(void (*call_a)(void *), void *a, void (*call_b)(void *), void *b,
                            double *us_a, double *us_b) {
  double *ta = malloc(sizeof(double) * HOST_CALLS);
  double *tb = call_b ? malloc(sizeof(double) * HOST_CALLS) : NULL;
  const int per = call_b ? 2 : 1;
  for (int i = 0; i < HOST_CALLS * per; ++i) {
    if (i % HOST_ROUND == 0) cu.StreamSynchronize(g_stream);
    const int round = i / HOST_ROUND, second = call_b && round % 2;
    const int k = (round / per) * HOST_ROUND + i % HOST_ROUND;
    double t0 = now_ms();
    if (second)
      call_b(b);
    else
      call_a(a);
    (second ? tb : ta)[k] = (now_ms() - t0) * 1e3;
  }
  cu.StreamSynchronize(g_stream);
  *us_a = median(ta, HOST_CALLS);
  if (call_b) *us_b = median(tb, HOST_CALLS);
  free(ta);
  free(tb);
}

typedef struct bare_call {
  CUlaunchConfig lc;
  CUlaunchAttribute attr;
  void *p;
  float scale, lb;
  long long T, cps;
  unsigned rows;
  void *params[12];
} bare_call;

static void call_bare(void *p) {
  bare_call *b = p;
  CUresult r = cu.LaunchKernelEx ? cu.LaunchKernelEx(&b->lc, g_bare, b->params, NULL)
                                 : cu.LaunchKernel(g_bare, b->lc.gridDimX, 1, 1, b->lc.blockDimX,
                                                   1, 1, 0, g_stream, b->params, NULL);
  if (r != CUDA_SUCCESS) cuda_check(&cu, r, "bare launch");
}

/* The driver's own launch cost on this machine: an empty kernel with the
 * same 12 parameters as host_cost's call, launched like the library
 * launches (cuLaunchKernelEx with programmatic stream serialization where
 * the driver has it). A reference for how fast this VM's driver launches,
 * not an exact floor: the empty kernel leaves the GPU idle between
 * launches. */
static void bare_setup(bare_call *b) {
  memset(b, 0, sizeof *b);
  b->scale = 1;
  b->T = 512;
  b->cps = 8;
  void *params[] = {&b->p, &b->p, &b->p, &b->p, &b->scale, &b->lb,
                    &b->p, &b->p, &b->p, &b->T, &b->cps,   &b->rows};
  memcpy(b->params, params, sizeof params);
  b->attr.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
  b->attr.value.programmaticStreamSerializationAllowed = 1;
  b->lc.gridDimX = 64;
  b->lc.gridDimY = b->lc.gridDimZ = 1;
  b->lc.blockDimX = 128;
  b->lc.blockDimY = b->lc.blockDimZ = 1;
  b->lc.hStream = g_stream;
  b->lc.attrs = &b->attr;
  b->lc.numAttrs = 1;
}

/* How much of the driver's launch cost depends on how a launch passes its
 * parameters and attributes: each form of launching the empty kernel, in
 * rounds alternating with the library's form (call_bare). A lead for host
 * cost (target 3), printed by the benchmark; the library keeps its form
 * unless one of these is clearly cheaper. */
typedef struct launch_form {
  const char *name;
  bare_call *b;
  int form;
  unsigned char buf[88];
  size_t buf_size;
  void *extra[5];
  void *one[1];
} launch_form;

static void call_form(void *p) {
  launch_form *f = p;
  bare_call *b = f->b;
  CUresult r = CUDA_SUCCESS;
  if (f->form == 0) { /* parameters as one buffer (the extra argument) */
    r = cu.LaunchKernelEx(&b->lc, g_bare, NULL, f->extra);
  } else if (f->form == 1) { /* no attribute: no programmatic serialization */
    CUlaunchConfig lc = b->lc;
    lc.numAttrs = 0;
    lc.attrs = NULL;
    r = cu.LaunchKernelEx(&lc, g_bare, b->params, NULL);
  } else if (f->form == 2) { /* cuLaunchKernel */
    r = cu.LaunchKernel(g_bare, b->lc.gridDimX, 1, 1, b->lc.blockDimX, 1, 1, 0, g_stream,
                        b->params, NULL);
  } else { /* one 88-byte struct parameter */
    r = cu.LaunchKernelEx(&b->lc, g_bare1, f->one, NULL);
  }
  if (r != CUDA_SUCCESS) cuda_check(&cu, r, f->name);
}

static void launch_forms(void) {
  if (!cu.LaunchKernelEx) return;
  bare_call b;
  bare_setup(&b);
  static const char *names[] = {"parameters as one buffer (extra)", "no launch attribute",
                                "cuLaunchKernel", "one 88-byte struct parameter"};
  printf("  the driver by launch form (empty kernel; each in rounds alternating with "
         "cuLaunchKernelEx + programmatic serialization + 12 parameters):\n");
  for (int form = 0; form < 4; ++form) {
    launch_form f;
    memset(&f, 0, sizeof f);
    f.name = names[form];
    f.b = &b;
    f.form = form;
    /* bare's parameter layout: 4 pointers, 2 floats, 3 pointers, 2 long
     * longs, a 4-byte struct: offsets 0-24, 32, 36, 40-56, 64, 72, 80. */
    memcpy(f.buf + 32, &b.scale, 4);
    memcpy(f.buf + 36, &b.lb, 4);
    memcpy(f.buf + 64, &b.T, 8);
    memcpy(f.buf + 72, &b.cps, 8);
    f.buf_size = 84;
    f.extra[0] = CU_LAUNCH_PARAM_BUFFER_POINTER;
    f.extra[1] = f.buf;
    f.extra[2] = CU_LAUNCH_PARAM_BUFFER_SIZE;
    f.extra[3] = &f.buf_size;
    f.extra[4] = CU_LAUNCH_PARAM_END;
    f.one[0] = f.buf;
    double base = 0, us = 0;
    median_calls_us(call_bare, &b, call_form, &f, &base, &us);
    printf("    %-34s %.2f us (library's form %.2f us in the same rounds)\n", f.name, us, base);
  }
}

typedef struct gate_call {
  kda_context *ctx;
  const kda_gate_args *args;
} gate_call;

static void call_gate(void *p) {
  const gate_call *c = p;
  kda_gate_chunk_cumsum(c->ctx, c->args, (kda_stream)g_stream);
}

/* Host cost of a warm call. (a) Time inside the API call, median over 100k
 * calls made in rounds of 250 after a synchronisation, so the launch queue
 * never fills and no call waits for the GPU; with bare_us set, in rounds
 * alternating with the bare driver launch, whose median goes there. (b)
 * 100k enqueues without synchronising, then one sync: wall time per call,
 * which is the larger of the host cost and the GPU time (also reported). */
static void host_cost(kda_context *ctx, double *inside_us, double *enqueue_us, double *gpu_us,
                      double *bare_us) {
  const int H = 4, K = 128;
  const int64_t T = 512;
  const size_t n = (size_t)T * H * K;
  void *g = cuda_alloc(&cu, n * 2), *out = cuda_alloc(&cu, n * 4), *al = cuda_alloc(&cu, 64);
  cu.MemsetD32((CUdeviceptr)(uintptr_t)g, 0x3f803f80u, n / 2);
  cu.MemsetD32((CUdeviceptr)(uintptr_t)al, 0, 16);
  kda_gate_args a = softplus_args(g, out, al, T, H, K);
  kda_ok(kda_gate_chunk_cumsum(ctx, &a, (kda_stream)g_stream), "warm");
  cu.StreamSynchronize(g_stream);
  gate_call c = {ctx, &a};
  bare_call b;
  bare_setup(&b);
  median_calls_us(call_gate, &c, bare_us ? call_bare : NULL, &b, inside_us, bare_us);
  CUevent e0, e1;
  cu.EventCreate(&e0, 0);
  cu.EventCreate(&e1, 0);
  double t0 = now_ms();
  cu.EventRecord(e0, g_stream);
  for (int i = 0; i < HOST_CALLS; ++i) kda_gate_chunk_cumsum(ctx, &a, (kda_stream)g_stream);
  cu.EventRecord(e1, g_stream);
  cu.StreamSynchronize(g_stream);
  *enqueue_us = (now_ms() - t0) * 1e3 / HOST_CALLS;
  *gpu_us = event_ms(e0, e1) * 1e3 / HOST_CALLS;
  cu.MemFree((CUdeviceptr)(uintptr_t)g);
  cu.MemFree((CUdeviceptr)(uintptr_t)out);
  cu.MemFree((CUdeviceptr)(uintptr_t)al);
}

/* Device chunk-table build for 256 ragged sequences: GPU time per build
 * (steady state in a graph, and single), checked against the host builder. */
static void chunk_table_cost(kda_context *ctx, double *steady, double *single) {
  enum { N = 256, BT = 64 };
  int32_t cu_h[N + 1];
  cu_h[0] = 0;
  tu_rng rng;
  tu_rng_seed(&rng, 99);
  for (int i = 0; i < N; ++i) cu_h[i + 1] = cu_h[i] + (int32_t)tu_uniform_int(&rng, 0, 2000);
  const int64_t T = cu_h[N], cap = kda_chunk_indices_capacity(T, N, BT);
  void *d_cu = cuda_upload(&cu, cu_h, sizeof cu_h);
  int32_t *d_out = cuda_alloc(&cu, (size_t)cap * 8 + 4);
  kda_ok(kda_chunk_indices_build_device(ctx, d_cu, KDA_DTYPE_I32, N, T, BT, d_out, cap, d_out + cap * 2,
                                        (kda_stream)g_stream), "device chunk table");
  int32_t *dev = malloc((size_t)cap * 8 + 4), *host = malloc((size_t)cap * 8);
  int64_t nc = 0;
  kda_ok(kda_chunk_indices_build_host(cu_h, KDA_DTYPE_I32, N, BT, host, cap, &nc), "host table");
  cuda_download(&cu, dev, d_out, (size_t)cap * 8 + 4);
  if (dev[cap * 2] != nc || memcmp(dev, host, (size_t)nc * 8) != 0) {
    fprintf(stderr, "device chunk table differs from the host one\n");
    exit(1);
  }
  CUgraph graph;
  CUgraphExec exec;
  cuda_check(&cu, cu.StreamBeginCapture(g_stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), "capture");
  for (int i = 0; i < GRAPH_LAUNCHES; ++i)
    kda_ok(kda_chunk_indices_build_device(ctx, d_cu, KDA_DTYPE_I32, N, T, BT, d_out, cap,
                                          d_out + cap * 2, (kda_stream)g_stream), "captured build");
  cuda_check(&cu, cu.StreamEndCapture(g_stream, &graph), "end capture");
  cuda_check(&cu, cu.GraphInstantiate(&exec, graph, 0), "instantiate");
  CUevent e0, e1;
  cu.EventCreate(&e0, 0);
  cu.EventCreate(&e1, 0);
  double t[REPLAYS], u[SINGLES];
  for (int i = -2; i < REPLAYS; ++i) {
    cu.EventRecord(e0, g_stream);
    cu.GraphLaunch(exec, g_stream);
    cu.EventRecord(e1, g_stream);
    double ms = event_ms(e0, e1);
    if (i >= 0) t[i] = ms * 1e3 / GRAPH_LAUNCHES;
  }
  for (int i = 0; i < SINGLES; ++i) {
    cu.EventRecord(e0, g_stream);
    kda_chunk_indices_build_device(ctx, d_cu, KDA_DTYPE_I32, N, T, BT, d_out, cap, d_out + cap * 2,
                                   (kda_stream)g_stream);
    cu.EventRecord(e1, g_stream);
    u[i] = event_ms(e0, e1) * 1e3;
  }
  *steady = median(t, REPLAYS);
  *single = median(u, SINGLES);
  cu.GraphExecDestroy(exec);
  cu.GraphDestroy(graph);
  free(dev);
  free(host);
  cu.MemFree((CUdeviceptr)(uintptr_t)d_cu);
  cu.MemFree((CUdeviceptr)(uintptr_t)d_out);
}

/* --host-threads N: N threads of one process call into one context at
 * once, each on a stream of its own, as the threads of a server that
 * serves several streams do; each measures host_cost. */
typedef struct host_worker {
  kda_context *ctx;
  pthread_barrier_t *start;
  pthread_t thread;
  double inside, enqueue, gpu;
} host_worker;

static void *host_worker_main(void *p) {
  host_worker *w = p;
  cuda_check(&cu, cu.CtxSetCurrent(cu.ctx), "cuCtxSetCurrent (worker)");
  cuda_check(&cu, cu.StreamCreate(&g_stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate (worker)");
  pthread_barrier_wait(w->start);
  host_cost(w->ctx, &w->inside, &w->enqueue, &w->gpu, NULL);
  cu.StreamDestroy(g_stream);
  return NULL;
}

static void host_cost_threads(kda_context *ctx, int n) {
  host_worker *w = calloc((size_t)n, sizeof *w);
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, (unsigned)n);
  for (int i = 0; i < n; ++i) {
    w[i].ctx = ctx;
    w[i].start = &start;
    if (pthread_create(&w[i].thread, NULL, host_worker_main, &w[i]) != 0) {
      fprintf(stderr, "pthread_create failed\n");
      exit(1);
    }
  }
  double lo = 1e30, hi = 0, sum = 0;
  for (int i = 0; i < n; ++i) {
    pthread_join(w[i].thread, NULL);
    lo = w[i].inside < lo ? w[i].inside : lo;
    hi = w[i].inside > hi ? w[i].inside : hi;
    sum += w[i].inside;
  }
  pthread_barrier_destroy(&start);
  printf("%s: host cost per warm call (tuned-slot path), %d threads on one context, a stream "
         "each: %.3f us median inside kda_gate_chunk_cumsum (mean of the threads' medians; "
         "%.3f-%.3f)\n",
         g_info.name, n, sum / n, lo, hi);
  free(w);
}

/* --child-start: what a fresh server process pays from context creation
 * (on a CUDA context it already has) to its first finished result. */
static int child_start(void) {
  const int H = 32, K = 128;
  const int64_t T = 8192;
  const size_t n = (size_t)T * H * K;
  void *g = cuda_alloc(&cu, n * 2), *out = cuda_alloc(&cu, n * 4), *al = cuda_alloc(&cu, 128);
  cu.MemsetD32((CUdeviceptr)(uintptr_t)g, 0x3f803f80u, n / 2);
  cu.MemsetD32((CUdeviceptr)(uintptr_t)al, 0, 32);
  cu.CtxSynchronize();
  double t0 = now_ms();
  kda_context *ctx = NULL;
  kda_options o = kda_options_default();
  o.device = -1;
  o.db_path = getenv("KDA_BENCH_DB");
  kda_ok(kda_context_create(&o, &ctx), "kda_context_create");
  double t_ctx = now_ms() - t0;
  kda_gate_args a = softplus_args(g, out, al, T, H, K);
  kda_ok(kda_gate_chunk_cumsum(ctx, &a, NULL), "first call");
  cu.CtxSynchronize();
  double total = now_ms() - t0;
  kda_stats st = {.struct_size = sizeof st};
  kda_context_get_stats(ctx, &st);
  printf("{\"total_ms\": %.3f, \"context_ms\": %.3f, \"nvrtc_compiles\": %llu, \"compile_ms\": %.3f, "
         "\"tuning_runs\": %llu, \"tune_ms\": %.3f, \"db_cubin_hits\": %llu}\n",
         total, t_ctx, (unsigned long long)st.nvrtc_compiles, st.compile_ms_total,
         (unsigned long long)st.tuning_runs, st.tune_ms_total, (unsigned long long)st.db_cubin_hits);
  kda_context_destroy(ctx);
  return 0;
}

static int run_child(char *line, size_t size) {
  char *argv[] = {"kda-bench", "--child-start", NULL};
  int fds[2];
  if (pipe(fds) != 0) return -1;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  pid_t pid;
  char self[4096];
  ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  if (len <= 0) return -1;
  self[len] = 0;
  int rc = posix_spawn(&pid, self, &fa, NULL, argv, environ);
  close(fds[1]);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  FILE *f = fdopen(fds[0], "r");
  line[0] = 0;
  if (!fgets(line, (int)size, f)) line[0] = 0;
  fclose(f);
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* Whether name is one of the comma-separated items of list. */
static int in_list(const char *list, const char *name) {
  const size_t n = strlen(name);
  for (const char *p = list; *p;) {
    const char *e = strchr(p, ',');
    const size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len == n && strncmp(p, name, n) == 0) return 1;
    if (!e) break;
    p = e + 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  const char *json_dir = "bench/results";
  const char *db = NULL;
  double budget_ms = 1000;
  int quick = 0, host_only = 0, host_threads = 0;
  const char *groups = NULL;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--json-dir") && i + 1 < argc) {
      json_dir = argv[++i];
    } else if (!strcmp(argv[i], "--quick")) {
      quick = 1;
    } else if (!strcmp(argv[i], "--groups") && i + 1 < argc) {
      groups = argv[++i];
    } else if (!strcmp(argv[i], "--host-only")) {
      host_only = 1;
    } else if (!strcmp(argv[i], "--host-threads") && i + 1 < argc) {
      host_only = 1;
      host_threads = atoi(argv[++i]);
      if (host_threads < 1 || host_threads > 256) {
        fprintf(stderr, "--host-threads: 1 to 256\n");
        return 2;
      }
    } else if (!strcmp(argv[i], "--db") && i + 1 < argc) {
      db = argv[++i];
    } else if (!strcmp(argv[i], "--budget-ms") && i + 1 < argc) {
      budget_ms = atof(argv[++i]);
    } else if (!strcmp(argv[i], "--child-start")) {
      char why[256];
      if (cuda_api_load(&cu, 0, why, sizeof why) != 0) return 1;
      return child_start();
    } else {
      fprintf(stderr, "usage: kda-bench [--json-dir DIR] [--db PATH] [--budget-ms MS] [--quick]\n"
                      "                 [--groups G,G...]\n"
                      "  --json-dir DIR  where <gpu>-<date>.json goes (default bench/results)\n"
                      "  --db PATH       tuning database (default: a fresh one under /tmp)\n"
                      "  --budget-ms MS  tuning budget per specialization (default 1000, the library default)\n"
                      "  --quick         the first 4 matrix rows only\n"
                      "  --groups LIST   only the rows of these groups (matrix, varlen, varlen-host,\n"
                      "                  varlen-plan, no-bias, K=64, chunk), e.g. --groups chunk,varlen-host;\n"
                      "                  the extra groups more, more-varlen, more-host and more-plan\n"
                      "                  (batches, a partial chunk, 32-128 sequences) run only when named\n"
                      "  --host-only     only the host cost of a warm call (also runs on the\n"
                      "                  tests' stand-in driver: KDA_LIBCUDA=.../libkda_fake_cuda.so)\n"
                      "  --host-threads N  --host-only, then N threads calling at once into one\n"
                      "                  context, a stream each\n");
      return strcmp(argv[i], "--help") ? 2 : 0;
    }
  }
  char why[512];
  if (cuda_api_load(&cu, 0, why, sizeof why) != 0) {
    printf("kda-bench needs a GPU: %s\n", why);
    return 1;
  }
  cuda_check(&cu, cu.StreamCreate(&g_stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
  /* A fresh database unless one is named: the run then shows tuning from
   * scratch, and the cold/warm-start children share it. */
  char tmpdir[] = "/tmp/kda-bench-XXXXXX", dbbuf[600];
  if (!db) {
    if (!mkdtemp(tmpdir)) {
      perror("mkdtemp");
      return 1;
    }
    snprintf(dbbuf, sizeof dbbuf, "%s/tune.db", tmpdir);
    db = dbbuf;
  }
  kda_context *ctx = NULL, *heur = NULL, *plain = NULL;
  kda_options o = kda_options_default();
  o.device = -1;
  o.db_path = db;
  /* Host-only runs may be on the stand-in driver, where nothing can be
   * timed: the tuned-slot path is then taken in cached mode. */
  o.tune_mode = host_only ? KDA_TUNE_CACHED : KDA_TUNE_ON;
  o.tune_budget_ms = budget_ms;
  kda_ok(kda_context_create(&o, &ctx), "kda_context_create (tuned)");
  kda_options oh = kda_options_default();
  oh.device = -1;
  oh.tune_mode = KDA_TUNE_OFF;
  kda_ok(kda_context_create(&oh, &heur), "kda_context_create (heuristic)");
  /* The tuned winners (read from the same database) launched without
   * programmatic dependent launch: the overlap's share of each row. */
  kda_options op = o;
  op.tune_mode = KDA_TUNE_CACHED;
  op.launch_overlap = KDA_LAUNCH_OVERLAP_OFF;
  kda_ok(kda_context_create(&op, &plain), "kda_context_create (plain launch)");
  g_info.struct_size = sizeof g_info;
  kda_context_get_device_info(ctx, &g_info);
  if (host_only) {
    double inside = 0, enq = 0, gpu = 0;
    host_cost(heur, &inside, &enq, &gpu, NULL);
    printf("%s: host cost per warm call (tuning off): %.3f us median inside "
           "kda_gate_chunk_cumsum; %.3f us per call over 100k enqueues\n",
           g_info.name, inside, enq);
    /* --host-only loads no module of its own (it also runs on the tests'
     * stand-in driver), so no bare launch to compare with. */
    host_cost(ctx, &inside, &enq, &gpu, NULL);
    printf("%s: host cost per warm call (tuned-slot path): %.3f us median inside "
           "kda_gate_chunk_cumsum; %.3f us per call over 100k enqueues\n",
           g_info.name, inside, enq);
    host_cost(plain, &inside, &enq, &gpu, NULL);
    printf("%s: host cost per warm call (tuned-slot path, launch overlap off): %.3f us median "
           "inside kda_gate_chunk_cumsum; %.3f us per call over 100k enqueues\n",
           g_info.name, inside, enq);
    if (host_threads > 0) host_cost_threads(ctx, host_threads);
    kda_context_destroy(plain);
    kda_context_destroy(ctx);
    kda_context_destroy(heur);
    return 0;
  }
  setup_flush();
  if (bench_convert_init(&cu, g_info.cc_major, g_info.cc_minor, why, sizeof why) != 0) {
    fprintf(stderr, "%s\n", why);
    return 1;
  }
  const double bw = copy_bandwidth_gbps();
  printf("GPU: %s, driver %d, NVRTC %d.%d, libkda %s\n", g_info.name, g_info.driver_version,
         g_info.nvrtc_major, g_info.nvrtc_minor, kda_version());
  printf("device copy bandwidth: %.0f GB/s (read + write, 1 GiB cudaMemcpy, median of %d)\n", bw,
         REPLAYS);
  printf("convert_us: the fastest of 6 plain kernels that only move the row's bytes (bf16 in,\n"
         "f32 out, no arithmetic), timed like fused_us; %%conv = convert_us / fused_us, over\n"
         "100%% where the fused kernel is the faster of the two\n\n");

  /* The rows to run: all, the first 4 (--quick) or those of --groups. */
  int *sel = calloc((size_t)bench_row_count, sizeof *sel), nrows = 0;
  for (int i = 0; i < bench_row_count && !(quick && nrows == 4); ++i)
    if (groups == NULL ? !bench_rows[i].extra : in_list(groups, bench_rows[i].group))
      sel[nrows++] = i;
  if (nrows == 0) {
    fprintf(stderr, "kda-bench: no row is in the groups '%s'\n", groups);
    free(sel);
    return 2;
  }
  bench_result *res = calloc((size_t)nrows, sizeof *res);
  printf("tuning database: %s (budget %.0f ms per specialization)\n\n", db, budget_ms);
  printf("%-11s %6s %3s %4s %5s %4s %10s %8s %9s %6s %6s %10s %6s %8s %7s %8s %7s %8s %s\n",
         "group", "T", "H", "K", "chunk", "seqs", "elements", "fused_us", "single_us", "GB/s",
         "%copy", "convert_us", "%conv", "unfused",
         "speedup", "heur_us", "tuned/h", "plain_us",
         "config (tune ms: compile ms, candidates; the tuner's own us: winner/heuristic)");
  for (int i = 0; i < nrows; ++i) {
    const bench_row *r = &bench_rows[sel[i]];
    run_row(ctx, heur, plain, r, &res[i]);
    const double bytes = (double)res[i].elements * 6.0;
    const double gbps = bytes / (res[i].fused_us * 1e-6) / 1e9;
    printf("%-11s %6lld %3d %4d %5d %4d %10lld %8.2f %9.2f %6.0f %5.1f%% %10.2f %5.1f%% %8.2f %6.2fx "
           "%8.2f %6.2fx %8.2f %s (%.0f ms: %.0f, %d; %.2f/%.2f)\n",
           r->group, (long long)r->tokens, r->heads, r->head_dim, r->chunk, r->num_seqs,
           (long long)res[i].elements, res[i].fused_us, res[i].fused_single_us, gbps,
           100.0 * gbps / bw, res[i].convert_us, 100.0 * res[i].convert_us / res[i].fused_us,
           res[i].unfused_us, res[i].unfused_us / res[i].fused_us,
           res[i].heuristic_us, res[i].heuristic_us / res[i].fused_us, res[i].plain_us,
           res[i].config, res[i].tune_ms, res[i].compile_ms, res[i].candidates, res[i].tuner_us,
           res[i].tuner_heuristic_us);
    fflush(stdout);
  }

  double inside = 0, enq = 0, gpu = 0, tab_steady = 0, tab_single = 0;
  double plain_inside = 0, plain_enq = 0, plain_gpu = 0;
  /* Whether the tuned and heuristic contexts still launched with the
   * programmatic attribute after the rows (a refusal turns it off). */
  kda_stats st_tuned = {.struct_size = sizeof st_tuned}, st_heur = {.struct_size = sizeof st_heur};
  kda_ok(kda_context_get_stats(ctx, &st_tuned), "stats (tuned)");
  kda_ok(kda_context_get_stats(heur, &st_heur), "stats (heuristic)");
  printf("\nprogrammatic dependent launch still on after the rows: tuned context %s, heuristic "
         "context %s\n", st_tuned.launch_overlap_active ? "yes" : "NO",
         st_heur.launch_overlap_active ? "yes" : "NO");
  double bare = 0;
  host_cost(plain, &plain_inside, &plain_enq, &plain_gpu, NULL);
  host_cost(ctx, &inside, &enq, &gpu, &bare);
  chunk_table_cost(ctx, &tab_steady, &tab_single);
  printf("\nhost cost per warm call (T=512 H=4): %.2f us median inside kda_gate_chunk_cumsum "
         "(queue never full); 100k enqueues then one sync: %.2f us per call wall, %.2f us per "
         "call GPU\n",
         inside, enq, gpu);
  printf("  with launch overlap off (plain cuLaunchKernel): %.2f us median inside; %.2f us per "
         "call wall, %.2f us per call GPU\n",
         plain_inside, plain_enq, plain_gpu);
  printf("  the driver alone on this machine (an empty kernel with the same 12 parameters, %s; "
         "in rounds alternating with the calls above): %.2f us median per launch, so the "
         "library's share is %.2f us\n",
         cu.LaunchKernelEx ? "cuLaunchKernelEx + programmatic serialization" : "cuLaunchKernel",
         bare, inside - bare);
  launch_forms();
  printf("device chunk-table build, 256 sequences (%s): %.2f us steady state, %.2f us single\n",
         "no host sync", tab_steady, tab_single);
  /* Cold and warm start share a database of their own, new for this run. */
  char startdb[700];
  snprintf(startdb, sizeof startdb, "%s.start", db);
  setenv("KDA_BENCH_DB", startdb, 1);
  char cold[512] = "", warm[512] = "";
  int cold_ok = run_child(cold, sizeof cold) == 0, warm_ok = run_child(warm, sizeof warm) == 0;
  printf("fresh process, context creation to first result (T=8192 H=32 K=128, default budget):\n");
  printf("  first process:  %s", cold_ok ? cold : "failed\n");
  printf("  second process: %s", warm_ok ? warm : "failed\n");

  /* JSON */
  mkdir(json_dir, 0755);
  char slug[128] = "", date[32], path[512];
  for (size_t i = 0, j = 0; g_info.name[i] && j + 1 < sizeof slug; ++i) {
    char c = g_info.name[i];
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) slug[j++] = c;
    else if (j && slug[j - 1] != '-') slug[j++] = '-';
    slug[j] = 0;
  }
  time_t tt = time(NULL);
  strftime(date, sizeof date, "%Y-%m-%d", gmtime(&tt));
  snprintf(path, sizeof path, "%s/%s-%s.json", json_dir, slug, date);
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
    return 1;
  }
  fprintf(f, "{\n  \"gpu\": \"%s\",\n  \"driver\": %d,\n  \"nvrtc\": \"%d.%d\",\n  \"libkda\": \"%s\",\n"
             "  \"copy_bw_gbps\": %.1f,\n",
          g_info.name, g_info.driver_version, g_info.nvrtc_major, g_info.nvrtc_minor, kda_version(), bw);
  fprintf(f, "  \"host_us_per_call_inside\": %.3f,\n  \"host_us_per_call_enqueue\": %.3f,\n"
             "  \"gpu_us_per_call_host_row\": %.3f,\n  \"chunk_table_256_us_steady\": %.3f,\n"
             "  \"chunk_table_256_us_single\": %.3f,\n  \"host_us_bare_driver_launch\": %.3f,\n"
             "  \"host_us_library_share\": %.3f,\n",
          inside, enq, gpu, tab_steady, tab_single, bare, inside - bare);
  fprintf(f, "  \"launch_overlap\": \"auto (programmatic dependent launch) in every row but the "
             "plain_launch fields\",\n  \"launch_overlap_active_after_rows\": {\"tuned\": %s, "
             "\"heuristic\": %s},\n  \"host_us_per_call_inside_plain_launch\": %.3f,\n"
             "  \"host_us_per_call_enqueue_plain_launch\": %.3f,\n",
          st_tuned.launch_overlap_active ? "true" : "false",
          st_heur.launch_overlap_active ? "true" : "false", plain_inside, plain_enq);
  fprintf(f, "  \"cold_start\": %s,\n  \"warm_start\": %s,\n", cold_ok ? cold : "null\n",
          warm_ok ? warm : "null\n");
  fprintf(f, "  \"rows\": [\n");
  for (int i = 0; i < nrows; ++i) {
    const bench_row *r = &bench_rows[sel[i]];
    const double gbps = (double)res[i].elements * 6.0 / (res[i].fused_us * 1e-6) / 1e9;
    fprintf(f,
            "    {\"kernel\": \"gate_chunk_cumsum\", \"group\": \"%s\", \"B\": %lld, \"T\": %lld, "
            "\"H\": %d, \"K\": %d, \"chunk\": %d, \"dt_bias\": %s, \"num_seqs\": %d, "
            "\"rows_in_launch\": %s, \"chunk_plan\": %s, \"dtype\": \"bf16\", "
            "\"out_dtype\": \"f32\", \"elements\": %lld, \"us_median\": %.3f, \"us_single\": %.3f, "
            "\"gbps\": %.1f, \"pct_of_copy_bw\": %.2f, \"unfused_us_median\": %.3f, "
            "\"speedup_vs_unfused\": %.3f, \"heuristic_us_median\": %.3f, \"max_rel_err\": %.3g, "
            "\"us_median_plain_launch\": %.3f, \"config\": \"%s\", \"tune_ms\": %.1f, "
            "\"compile_ms\": %.1f, \"candidates\": %d, \"tuner_us\": %.3f, "
            "\"tuner_heuristic_us\": %.3f, \"convert_us\": %.3f, \"pct_of_convert\": %.2f, "
            "\"convert_kernel\": \"%s\"}%s\n",
            r->group, (long long)r->batch, (long long)r->tokens, r->heads, r->head_dim, r->chunk,
            r->bias ? "true" : "false", r->num_seqs, r->host_rows ? "true" : "false",
            r->chunk_plan ? "true" : "false",
            (long long)res[i].elements, res[i].fused_us,
            res[i].fused_single_us, gbps, 100.0 * gbps / bw, res[i].unfused_us,
            res[i].unfused_us / res[i].fused_us, res[i].heuristic_us, res[i].max_err,
            res[i].plain_us, res[i].config, res[i].tune_ms, res[i].compile_ms, res[i].candidates,
            res[i].tuner_us, res[i].tuner_heuristic_us, res[i].convert_us,
            100.0 * res[i].convert_us / res[i].fused_us, res[i].convert_kernel,
            i + 1 < nrows ? "," : "");
  }
  fprintf(f, "  ]\n}\n");
  fclose(f);
  printf("\nwrote %s\n", path);
  kda_context_destroy(ctx);
  kda_context_destroy(heur);
  kda_context_destroy(plain);
  free(res);
  free(sel);
  return 0;
}
