/* kda-bench: how one row is run (bench_run.h). */
#include "bench_run.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "bench_convert.h"
#include "bench_nvrtc.h"
#include "cuda_api.h"
#include "reference.h"
#include "test_util.h"

static CUfunction g_flush;
static void *g_flush_buf, *g_flush_sink;
static size_t g_flush_bytes;

/* A read-only pass over a buffer three times the size of L2 evicts the kernel's
 * data without leaving dirty lines behind. */
void bench_run_init(void) {
  const char *src =
      "extern \"C\" __global__ void flush(const int4 *p, long long n, int *sink) {\n"
      "  int acc = 0;\n"
      "  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;\n"
      "       i += (long long)gridDim.x * blockDim.x) { int4 v = __ldcg(p + i); acc ^= v.x ^ v.w; }\n"
      "  if (acc == 0x7355608) *sink = acc;\n"
      "}\n";
  CUmodule m;
  char why[4096];
  if (bench_nvrtc_module(&cu, src, "flush.cu", g_info.cc_major, g_info.cc_minor, &m, why,
                         sizeof why) != 0) {
    fprintf(stderr, "%s\n", why);
    exit(1);
  }
  cuda_check(&cu, cu.ModuleGetFunction(&g_flush, m, "flush"), "cuModuleGetFunction(flush)");
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

/* Tunes the row's fused kernel in the tuned context (the same call a
 * deployment's `kda-tune prewarm` makes) and keeps its winner's config; the
 * unfused path's two kernels in unf_ctx, whose database the tuned context
 * shares. */
static void prewarm_row(kda_context *ctx, kda_context *unf_ctx, const kda_gate_args *shape,
                        bench_result *res) {
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
  kda_ok(kda_prewarm(unf_ctx, KDA_KERNEL_GATE, &g, 0, &pr), "prewarm gate");
  kda_gate_args c = s;
  c.g_dtype = KDA_DTYPE_F32;
  c.gate = KDA_GATE_NONE;
  c.A_log = NULL;
  c.dt_bias = NULL;
  kda_ok(kda_prewarm(unf_ctx, KDA_KERNEL_CHUNK_LOCAL_CUMSUM, &c, 0, &pr), "prewarm cumsum");
}

/* The row's sets (input uploaded, outputs allocated) in s->sets; the
 * unfused path's intermediate (mid) only where with_mid is set. */
static void alloc_sets(row_state *s, const uint16_t *g_host, int with_mid) {
  s->sets = calloc((size_t)s->nsets, sizeof *s->sets);
  for (int i = 0; i < s->nsets; ++i) {
    s->sets[i].g = cuda_upload(&cu, g_host, s->in_bytes);
    s->sets[i].out = cuda_alloc(&cu, s->out_bytes);
    if (with_mid) s->sets[i].mid = cuda_alloc(&cu, s->out_bytes);
  }
}

static void free_sets(row_state *s) {
  cu.CtxSynchronize();
  for (int i = 0; i < s->nsets; ++i) {
    cu.MemFree((CUdeviceptr)(uintptr_t)s->sets[i].g);
    cu.MemFree((CUdeviceptr)(uintptr_t)s->sets[i].out);
    if (s->sets[i].mid) cu.MemFree((CUdeviceptr)(uintptr_t)s->sets[i].mid);
  }
  free(s->sets);
  s->sets = NULL;
}

static double convert_on_sets(const row_state *s, size_t n, const uint16_t *g_host, char *kname,
                              size_t kname_size) {
  void *ins[GRAPH_LAUNCHES], *outs[GRAPH_LAUNCHES];
  for (int i = 0; i < s->nsets; ++i) {
    ins[i] = s->sets[i].g;
    outs[i] = s->sets[i].out;
  }
  char why[512];
  const double us = bench_convert_us(&cu, g_stream, ins, outs, s->nsets, n, g_host,
                                     GRAPH_LAUNCHES, REPLAYS, kname, kname_size, why, sizeof why);
  if (us < 0) {
    fprintf(stderr, "%s\n", why);
    exit(1);
  }
  return us;
}

/* The tuned, heuristic and convert timings again at the end of the row, on
 * a second allocation of its buffers (the first still held). Some rows'
 * times depend on what the GPU ran before them: on the H200, T=512 H=32
 * with its tuned narrow block (vec=4,tx=4,seg=8) read 4.19-4.22 us as the
 * first timing of a process that loaded the winner, 4.53-4.62 in every
 * later timing of that process on either allocation, and 5.12-5.39 in a
 * process that tuned; the heuristic's wider block 5.62-5.73 throughout
 * (docs/perf-notes.md, fifteenth session). The repeat shows which rows
 * move; being on other buffers, it would also show a row that depends on
 * where its buffers land (none did in that session's probes). */
static void repeat_row(kda_context **fused_ctxs, row_state *s, size_t n, const uint16_t *g_host,
                       bench_result *res) {
  row_bufs *first = s->sets;
  alloc_sets(s, g_host, 0); /* fused and convert only: no intermediate */
  double us[2];
  steady_interleaved_us(fused_ctxs, 2, s, RUN_FUSED, us);
  res->fused_us_repeat = us[0];
  res->heuristic_us_repeat = us[1];
  char kname[16];
  res->convert_us_repeat = convert_on_sets(s, n, g_host, kname, sizeof kname);
  free_sets(s);
  s->sets = first;
}

void run_row(kda_context *ctx, kda_context *unf_ctx, kda_context *heur_ctx,
             kda_context *plain_ctx, const bench_row *r, bench_result *res) {
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
    /* Sized by the row: the more-* rows have 128 sequences (a fixed array
     * of 64 was overrun by them until 2026-11-28). */
    int64_t *lens = malloc((size_t)r->num_seqs * sizeof *lens);
    cu_h = calloc((size_t)r->num_seqs + 1, sizeof *cu_h);
    if (lens == NULL || cu_h == NULL) {
      fprintf(stderr, "kda-bench: out of memory\n");
      exit(1);
    }
    bench_row_lengths(r, lens);
    for (int i = 0; i < r->num_seqs; ++i) cu_h[i + 1] = cu_h[i] + (int32_t)lens[i];
    free(lens);
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
  alloc_sets(&s, g_host, 1);

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

  prewarm_row(ctx, unf_ctx, &a, res);
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
  res->convert_us =
      convert_on_sets(&s, n, g_host, res->convert_kernel, sizeof res->convert_kernel);
  repeat_row(fused_ctxs, &s, n, g_host, res);

  free_sets(&s);
  if (d_cu) cu.MemFree((CUdeviceptr)(uintptr_t)d_cu);
  if (d_table) cu.MemFree((CUdeviceptr)(uintptr_t)d_table);
  kda_chunk_plan_destroy(plan);
  cu.MemFree((CUdeviceptr)(uintptr_t)d_alog);
  cu.MemFree((CUdeviceptr)(uintptr_t)d_bias);
  free(g_host);
  free(g_d);
  free(A_log);
  free(bias);
  free(cu_h);
}
