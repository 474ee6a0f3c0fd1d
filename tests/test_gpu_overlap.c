/* Programmatic dependent launch (kda_options.launch_overlap, on by default
 * on sm_90+) must never let a kernel read what the kernel before it is
 * still writing. Each round poisons the intermediate with NaN (a memset),
 * then runs kda_gate (g -> mid) and kda_chunk_local_cumsum (mid -> out)
 * back to back on one stream, and a fused call on a second input after
 * them: a consumer that started reading before its producer finished would
 * see NaN or a stale round's values. Every round has its own input, checked
 * against float64 within 2e-5 * (1 + |ref|); the same chain is captured
 * into a graph (programmatic edges) and replayed. Run with overlap on and
 * off; on the default stream and a created one. Skips (exit 77) without a
 * GPU. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gpu_util.h"
#include "kda/kda.h"
#include "reference.h"
#include "test_util.h"

#define TOL_F32 2e-5
#define POISON 0x7fc00000u
#define ROUNDS 6 /* distinct inputs, reused round-robin */
#define CHAINS 48

enum { T = 4096, H = 8, K = 128, CHUNK = 64 };

static const kda__driver *g_drv;

typedef struct inputs {
  void *g[ROUNDS];
  double *ref[ROUNDS]; /* float64 fused result of g[i] */
  void *alog, *bias;
} inputs;

static kda_gate_args base_args(const inputs *in) {
  kda_gate_args a = kda_gate_args_default();
  a.g_dtype = KDA_DTYPE_BF16;
  a.batch = 1;
  a.seq_len = T;
  a.num_heads = H;
  a.head_dim = K;
  a.chunk_size = CHUNK;
  a.gate = KDA_GATE_SOFTPLUS;
  a.A_log = in->alog;
  a.dt_bias = in->bias;
  return a;
}

static void inputs_init(inputs *in) {
  const size_t n = (size_t)T * H * K;
  tu_rng rng;
  tu_rng_seed(&rng, 0x0ef1a9);
  float A_log[H], bias[H * K];
  for (int h = 0; h < H; ++h) A_log[h] = (float)log(1.0 + 15.0 * tu_uniform(&rng));
  for (int i = 0; i < H * K; ++i) bias[i] = (float)tu_normal(&rng);
  in->alog = gu_upload(A_log, sizeof A_log);
  in->bias = gu_upload(bias, sizeof bias);
  uint16_t *gh = malloc(n * 2);
  double *gd = malloc(n * sizeof *gd);
  for (int r = 0; r < ROUNDS; ++r) {
    tu_fill_random_input(&rng, KDA_DTYPE_BF16, gh, gd, n, 1.0 + r);
    in->g[r] = gu_upload(gh, n * 2);
    kda_gate_args h = base_args(in);
    h.A_log = A_log;
    h.dt_bias = bias;
    in->ref[r] = malloc(n * sizeof(double));
    assert_int_equal(kda_ref_gate_chunk_cumsum(&h, gd, in->ref[r]), 0);
  }
  free(gh);
  free(gd);
}

static void inputs_free(inputs *in) {
  for (int r = 0; r < ROUNDS; ++r) {
    gu_free(in->g[r]);
    free(in->ref[r]);
  }
  gu_free(in->alog);
  gu_free(in->bias);
}

/* Elements of out (floats) not within budget of ref; prints the first. */
static size_t wrong(const float *out, const double *ref, const char *what, int chain) {
  const size_t n = (size_t)T * H * K;
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = fabs((double)out[i] - ref[i]);
    if (!(d <= TOL_F32 * (1.0 + fabs(ref[i]))) && bad++ == 0)
      printf("  %s, chain %d: element %zu got %.9g, float64 %.9g\n", what, chain, i,
             (double)out[i], ref[i]);
  }
  return bad;
}

/* One chain on stream: poison mid and both outputs, gate, cumsum, fused. */
static void enqueue_chain(kda_context *ctx, const inputs *in, int chain, void *mid, void *out,
                          void *out2, CUstream st) {
  const size_t n = (size_t)T * H * K;
  assert_int_equal(g_drv->cuMemsetD32Async((CUdeviceptr)(uintptr_t)mid, POISON, n, st), 0);
  assert_int_equal(g_drv->cuMemsetD32Async((CUdeviceptr)(uintptr_t)out, POISON, n, st), 0);
  assert_int_equal(g_drv->cuMemsetD32Async((CUdeviceptr)(uintptr_t)out2, POISON, n, st), 0);
  kda_gate_args gate = base_args(in), cum = base_args(in), fused = base_args(in);
  gate.g = in->g[chain % ROUNDS];
  gate.out = mid;
  cum.g = mid;
  cum.g_dtype = KDA_DTYPE_F32;
  cum.gate = KDA_GATE_NONE;
  cum.A_log = NULL;
  cum.dt_bias = NULL;
  cum.out = out;
  /* The fused call reads the cumsum's output region's neighbour input
   * (another round) and writes out2 right after the cumsum. */
  fused.g = in->g[(chain + 1) % ROUNDS];
  fused.out = out2;
  GU_CHECK(kda_gate(ctx, &gate, (kda_stream)st));
  GU_CHECK(kda_chunk_local_cumsum(ctx, &cum, (kda_stream)st));
  GU_CHECK(kda_gate_chunk_cumsum(ctx, &fused, (kda_stream)st));
}

static size_t run_chains(kda_launch_overlap mode, int use_stream, int use_graph) {
  kda_options o = kda_options_default();
  o.tune_mode = KDA_TUNE_OFF;
  o.launch_overlap = mode;
  kda_context *ctx = NULL;
  GU_CHECK(kda_context_create(&o, &ctx));
  inputs in;
  inputs_init(&in);
  const size_t n = (size_t)T * H * K;
  void *mid = gu_alloc(n * 4), *out = gu_alloc(n * 4), *out2 = gu_alloc(n * 4);
  float *host = malloc(n * 4);
  CUstream st = NULL;
  if (use_stream) assert_int_equal(g_drv->cuStreamCreate(&st, CU_STREAM_NON_BLOCKING), 0);
  const char *what = use_graph ? "graph" : use_stream ? "stream" : "default stream";
  size_t bad = 0;
  /* Warm every specialization outside any capture. */
  enqueue_chain(ctx, &in, 0, mid, out, out2, st);
  gu_sync();
  for (int c = 0; c < CHAINS; ++c) {
    if (use_graph) {
      CUgraph graph;
      CUgraphExec exec;
      assert_int_equal(g_drv->cuStreamBeginCapture(st, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), 0);
      enqueue_chain(ctx, &in, c, mid, out, out2, st);
      assert_int_equal(g_drv->cuStreamEndCapture(st, &graph), 0);
      assert_int_equal(g_drv->cuGraphInstantiate(&exec, graph, 0), 0);
      assert_int_equal(g_drv->cuGraphLaunch(exec, st), 0);
      assert_int_equal(g_drv->cuStreamSynchronize(st), 0);
      g_drv->cuGraphExecDestroy(exec);
      g_drv->cuGraphDestroy(graph);
    } else {
      enqueue_chain(ctx, &in, c, mid, out, out2, st);
    }
    gu_sync();
    gu_download(host, out, n * 4);
    bad += wrong(host, in.ref[c % ROUNDS], what, c);
    gu_download(host, out2, n * 4);
    bad += wrong(host, in.ref[(c + 1) % ROUNDS], what, c);
  }
  printf("  overlap %s, %s: %d chains (gate -> cumsum -> fused), %zu elements out of budget\n",
         mode == KDA_LAUNCH_OVERLAP_AUTO ? "auto" : "off", what, CHAINS, bad);
  if (st) g_drv->cuStreamDestroy(st);
  free(host);
  gu_free(mid);
  gu_free(out);
  gu_free(out2);
  inputs_free(&in);
  kda_context_destroy(ctx);
  return bad;
}

static void overlapped_chains_read_only_finished_writes(void **state) {
  (void)state;
  size_t bad = 0;
  bad += run_chains(KDA_LAUNCH_OVERLAP_AUTO, 0, 0);
  bad += run_chains(KDA_LAUNCH_OVERLAP_AUTO, 1, 0);
  bad += run_chains(KDA_LAUNCH_OVERLAP_AUTO, 1, 1);
  assert_int_equal(bad, 0);
}

static void plain_chains_read_only_finished_writes(void **state) {
  (void)state;
  size_t bad = 0;
  bad += run_chains(KDA_LAUNCH_OVERLAP_OFF, 1, 0);
  bad += run_chains(KDA_LAUNCH_OVERLAP_OFF, 1, 1);
  assert_int_equal(bad, 0);
}

int main(void) {
  g_drv = gu_require_gpu("test_gpu_overlap");
  unsetenv("KDA_LAUNCH_OVERLAP");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(overlapped_chains_read_only_finished_writes),
      cmocka_unit_test(plain_chains_read_only_finished_writes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
