/* Every kernel against the float64 CPU reference on a real GPU: random
 * inputs (never zeros), outputs poisoned with NaN before each run, dense and
 * ragged varlen batches, every option. Skips (exit 77) without a GPU. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "context_internal.h"
#include "gate_args.h"
#include "gpu_case.h"
#include "gpu_util.h"
#include "kda/kda.h"
#include "nvrtc_compile.h"
#include "chunk_plan.h"
#include "plan_pack.h"
#include "reference.h"
#include "test_util.h"

static void fused_matches_reference_for_every_head_count_and_dim(void **state) {
  (void)state;
  const int Hs[] = {1, 3, 4, 16, 32}, Ks[] = {16, 64, 100, 128, 256};
  size_t bad = 0;
  for (int i = 0; i < 5; ++i)
    for (int j = 0; j < 5; ++j) {
      gcase c = base_case();
      c.H = Hs[i];
      c.K = Ks[j];
      c.T = 130; /* not a multiple of the chunk */
      bad += run_case(&c);
    }
  assert_int_equal(bad, 0);
}

static void fused_matches_reference_for_every_option(void **state) {
  (void)state;
  const kda_dtype ins[] = {KDA_DTYPE_BF16, KDA_DTYPE_F16, KDA_DTYPE_F32};
  const kda_dtype outs[] = {KDA_DTYPE_F32, KDA_DTYPE_BF16};
  const int chunks[] = {16, 32, 64, 128, 256};
  size_t bad = 0;
  /* A mixed-radix walk: each option cycles at its own period so that 60
   * cases cover every value of every option and most pairs. */
  for (int i = 0; i < 60; ++i) {
    gcase c = base_case();
    c.in = ins[i % 3];
    c.out = outs[(i / 3) % 2];
    c.chunk = chunks[i % 5];
    const int g = (i / 2) % 3;
    c.gate = g == 0 ? KDA_GATE_SOFTPLUS : KDA_GATE_LOWER_BOUND;
    c.alog = g != 2;
    c.bias = (i / 6) % 2;
    c.scale = (i / 4) % 2;
    c.reverse = (i / 7) % 2;
    c.T = 300 + i;
    if (i % 4 == 3) {
      c.lens = RAGGED;
      c.nseq = 7;
      c.idx = (i / 8) % 2 ? KDA_DTYPE_I64 : KDA_DTYPE_I32;
      c.device_table = (i / 5) % 2;
      c.H = 2;
    }
    bad += run_case(&c);
  }
  assert_int_equal(bad, 0);
}

/* Inputs far out in both tails exercise every branch of the fast softplus
 * and sigmoid (z > 20, the series for e^-|z| < 1/16, the log path), over
 * the longest chunk, where rounding accumulates most. */
static void fused_is_accurate_for_extreme_inputs(void **state) {
  (void)state;
  size_t bad = 0;
  for (int i = 0; i < 6; ++i) {
    gcase c = base_case();
    c.stddev = i < 3 ? 12.0 : 4.0;
    c.chunk = 256;
    c.T = 700;
    c.in = KDA_DTYPE_F32;
    c.gate = i % 3 == 0 ? KDA_GATE_SOFTPLUS : KDA_GATE_LOWER_BOUND;
    c.alog = i % 3 != 2;
    c.reverse = i % 2;
    bad += run_case(&c);
  }
  assert_int_equal(bad, 0);
}

static void varlen_ragged_batches_match_reference(void **state) {
  (void)state;
  const int chunks[] = {16, 32, 64, 128, 256};
  gcase cases[20];
  case_data data[10]; /* per chunk and direction: the table's kind does not change it */
  memset(data, 0, sizeof data);
  size_t n = 0;
  for (int i = 0; i < 5; ++i)
    for (int rev = 0; rev < 2; ++rev)
      for (int dev = 0; dev < 2; ++dev) {
        gcase c = base_case();
        c.H = 32;
        c.K = 128;
        c.chunk = chunks[i];
        c.reverse = rev;
        c.lens = RAGGED;
        c.nseq = 7;
        c.idx = dev ? KDA_DTYPE_I64 : KDA_DTYPE_I32;
        c.device_table = dev;
        c.reuse = &data[i * 2 + rev];
        cases[n++] = c;
      }
  const size_t bad = run_cases(cases, n);
  for (int i = 0; i < 10; ++i) case_data_release(&data[i]);
  assert_int_equal(bad, 0);
}

/* The kernel loads every sequence bound at once (one lane each) when the
 * batch has fewer sequences than a warp has lanes, and loads its own pair
 * after the table row otherwise: 31 sequences is the last of the first
 * path, 32 the first of the second; 45 includes empty sequences. */
static void varlen_many_sequences_match_reference(void **state) {
  (void)state;
  static int64_t lens[45];
  const int counts[] = {31, 32, 45};
  size_t bad = 0;
  for (int i = 0; i < 3; ++i)
    for (int rev = 0; rev < 2; ++rev) {
      for (int s = 0; s < counts[i]; ++s) lens[s] = (s * 37 + 11) % 150 - (i == 2 && s % 9 == 4 ? 200 : 0);
      for (int s = 0; s < counts[i]; ++s) lens[s] = lens[s] < 0 ? 0 : lens[s];
      gcase c = base_case();
      c.H = 4;
      c.K = 128;
      c.chunk = rev ? 32 : 64;
      c.reverse = rev;
      c.lens = lens;
      c.nseq = counts[i];
      c.idx = rev ? KDA_DTYPE_I64 : KDA_DTYPE_I32;
      c.device_table = i != 1;
      bad += run_case(&c);
    }
  assert_int_equal(bad, 0);
}

/* cu_seqlens_host: each chunk's rows in the launch, no table read. Every
 * chunk size (chunk 16 with the short batch, to stay within
 * KDA_MAX_HOST_ROWS), both directions and index types, empty sequences,
 * bf16 output, the plain cumsum, the layer entry without a workspace, a
 * table passed as well (ignored), and a batch past the limit (the table). */
static void varlen_host_rows_match_reference(void **state) {
  (void)state;
  static const int64_t with_empty[] = {0, 17, 0, 64, 65, 1, 200, 0, 129};
  const int chunks[] = {16, 32, 64, 128, 256};
  gcase cases[26];
  case_data data[10]; /* per chunk and direction: the index type does not change it */
  memset(data, 0, sizeof data);
  size_t n = 0;
  for (int i = 0; i < 5; ++i)
    for (int rev = 0; rev < 2; ++rev)
      for (int wide = 0; wide < 2; ++wide) {
        gcase c = base_case();
        c.H = 32;
        c.K = 128;
        c.chunk = chunks[i];
        c.reverse = rev;
        c.lens = chunks[i] == 16 ? RAGGED_SHORT : RAGGED;
        c.nseq = 7;
        c.idx = wide ? KDA_DTYPE_I64 : KDA_DTYPE_I32;
        c.host_rows = 1;
        c.expect_varlen = 2;
        c.reuse = &data[i * 2 + rev];
        cases[n++] = c;
      }
  for (int v = 0; v < 6; ++v) {
    gcase c = base_case();
    c.H = 8;
    c.K = 128;
    c.lens = with_empty;
    c.nseq = 9;
    c.host_rows = 1;
    c.expect_varlen = 2;
    if (v == 1) c.out = KDA_DTYPE_BF16;
    if (v == 2) {
      c.op = KDA__OP_CHUNK_LOCAL_CUMSUM;
      c.gate = KDA_GATE_NONE;
      c.bias = c.alog = 0;
      c.scale = 1;
    }
    if (v == 3) c.layer = 1;
    if (v == 4) c.host_rows = 2; /* a table as well: the rows in the launch win */
    if (v == 5) {
      c.gate = KDA_GATE_LOWER_BOUND;
      c.device_table = 1;
      c.host_rows = 2;
      c.lens = RAGGED;
      c.nseq = 7;
      c.chunk = 16; /* 336 chunks: past KDA_MAX_HOST_ROWS, the table is used */
      c.expect_varlen = 1;
    }
    cases[n++] = c;
  }
  const size_t bad = run_cases(cases, n);
  for (int i = 0; i < 10; ++i) case_data_release(&data[i]);
  assert_int_equal(bad, 0);
}

/* Many short sequences with their rows in the launch: the host packs the
 * short chunks (each sequence's last, and the sequences shorter than a
 * chunk) several to a block, at granules. Every chunk size, both
 * directions, block shapes from one row per segment to a granule per
 * segment, empty sequences among them. */
static void varlen_host_rows_packed_match_reference(void **state) {
  (void)state;
  static int64_t lens_of[5][60];
  const int chunks[] = {16, 32, 64, 128, 256};
  static gcase cases[60];
  static kda__config cfgs_of[5][6];
  case_data data[10]; /* per chunk and direction, shared by the block shapes */
  memset(data, 0, sizeof data);
  size_t n = 0;
  for (int i = 0; i < 5; ++i) {
    int64_t *lens = lens_of[i];
    kda__config *cfgs = cfgs_of[i];
    const int chunk = chunks[i];
    const int nseq = chunk == 16 ? 60 : 48;
    for (int s = 0; s < nseq; ++s) /* 1 .. 20 tokens at chunk 16, else 0 .. 2.2 chunks */
      lens[s] = chunk == 16 ? 1 + (s * 29 + 7) % 20
                            : (s % 11 == 5 ? 0 : 1 + (s * 37 + 11) % (chunk * 2 + chunk / 4));
    const int granule = kda__host_granule(chunk);
    const kda__config tries[] = {
        {8, 16, chunk / 4},        /* the heuristic's 4 rows per segment */
        {8, 16, chunk / granule},  /* a granule per segment */
        {4, 8, chunk},             /* one row per segment */
        {8, 8, chunk / 8},
        {2, 32, chunk / 2},
        {4, 16, chunk / 8},
    };
    int ncfg = 0;
    for (int k = 0; k < 6; ++k) {
      kda__spec sp;
      memset(&sp, 0, sizeof sp);
      sp.kernel = KDA__KERNEL_GATE_CUMSUM;
      sp.heads = 16;
      sp.head_dim = 128;
      sp.chunk = chunk;
      sp.varlen = 2;
      sp.cfg = tries[k];
      if (kda__config_check(&sp) == KDA_OK) cfgs[ncfg++] = tries[k];
    }
    assert_true(ncfg >= 3);
    for (int rev = 0; rev < 2; ++rev)
      for (int k = 0; k < ncfg; ++k) {
        gcase c = base_case();
        c.H = 16;
        c.K = 128;
        c.chunk = chunk;
        c.reverse = rev;
        c.lens = lens;
        c.nseq = nseq;
        c.idx = rev ? KDA_DTYPE_I64 : KDA_DTYPE_I32;
        c.host_rows = 1;
        c.expect_varlen = 2;
        c.cfg = &cfgs[k];
        c.seed = 77 + (uint64_t)(i * 8 + rev);
        c.reuse = &data[i * 2 + rev];
        cases[n++] = c;
      }
  }
  const size_t bad = run_cases(cases, n);
  for (int i = 0; i < 10; ++i) case_data_release(&data[i]);
  assert_int_equal(bad, 0);
}

static void chunk_local_cumsum_vector_and_scalar_match_reference(void **state) {
  (void)state;
  const kda_dtype ins[] = {KDA_DTYPE_BF16, KDA_DTYPE_F16, KDA_DTYPE_F32};
  size_t bad = 0;
  for (int i = 0; i < 24; ++i) {
    gcase c = base_case();
    c.op = KDA__OP_CHUNK_LOCAL_CUMSUM;
    c.gate = KDA_GATE_NONE;
    c.in = ins[i % 3];
    c.out = (i / 3) % 2 ? KDA_DTYPE_BF16 : KDA_DTYPE_F32;
    c.K = (i / 6) % 2 ? 1 : 128; /* K=1: the scalar [B,T,H] form */
    c.H = c.K == 1 ? 16 : 8;
    c.reverse = (i / 12) % 2;
    c.scale = i % 2;
    c.chunk = (i % 4 == 0) ? 32 : 64;
    c.T = 257;
    if (i % 3 == 1) {
      c.lens = RAGGED;
      c.nseq = 7;
      c.device_table = i % 2;
    }
    bad += run_case(&c);
  }
  assert_int_equal(bad, 0);
}

/* The plain cumsum of inputs of either sign and standard deviation 8: its
 * partial sums reach hundreds while results sit near 0.1, which fp32 sums
 * missed by up to 3x the budget (test_gpu_random, seed 2726616978824557482:
 * chunk 256, bf16 in, scale). It sums in double: every chunk size, both
 * directions, with and without scale, dense and varlen, every block shape
 * form (chunk 16's 2 rows per thread to chunk 256's 64 segments). */
static void chunk_local_cumsum_is_accurate_for_inputs_of_either_sign(void **state) {
  (void)state;
  const int chunks[] = {16, 32, 64, 128, 256};
  const kda_dtype ins[] = {KDA_DTYPE_BF16, KDA_DTYPE_F32};
  size_t bad = 0;
  for (int i = 0; i < 20; ++i) {
    gcase c = base_case();
    c.op = KDA__OP_CHUNK_LOCAL_CUMSUM;
    c.gate = KDA_GATE_NONE;
    c.bias = c.alog = 0;
    c.in = ins[i % 2];
    c.chunk = chunks[i % 5];
    c.reverse = (i / 5) % 2;
    c.scale = (i / 10) % 2 == 0;
    c.stddev = 8.0;
    c.H = 4;
    c.K = 128;
    c.T = 1000;
    if (i % 4 == 3) {
      c.lens = RAGGED;
      c.nseq = 7;
      c.device_table = i % 8 == 3;
    }
    bad += run_case(&c);
  }
  assert_int_equal(bad, 0);
}

static void standalone_gate_matches_reference(void **state) {
  (void)state;
  const kda_dtype ins[] = {KDA_DTYPE_BF16, KDA_DTYPE_F16, KDA_DTYPE_F32};
  size_t bad = 0;
  for (int i = 0; i < 12; ++i) {
    gcase c = base_case();
    c.op = KDA__OP_GATE;
    c.in = ins[i % 3];
    c.out = (i / 3) % 2 ? KDA_DTYPE_BF16 : KDA_DTYPE_F32;
    c.gate = (i / 6) % 2 ? KDA_GATE_LOWER_BOUND : KDA_GATE_SOFTPLUS;
    c.bias = i % 2;
    c.H = 3;
    c.K = 100;
    c.T = 77;
    bad += run_case(&c);
  }
  assert_int_equal(bad, 0);
}

static void layer_entry_builds_table_once_and_dispatches(void **state) {
  (void)state;
  size_t bad = 0;
  for (int i = 0; i < 4; ++i) {
    gcase c = base_case();
    c.H = 16;
    c.K = 128;
    c.lens = RAGGED;
    c.nseq = 7;
    c.layer = 1;
    c.idx = i % 2 ? KDA_DTYPE_I64 : KDA_DTYPE_I32;
    if (i >= 2) {
      c.op = KDA__OP_CHUNK_LOCAL_CUMSUM;
      c.gate = KDA_GATE_NONE;
    }
    bad += run_case(&c);
  }
  /* Dense through the layer entry as well. */
  gcase d = base_case();
  d.layer = 1;
  bad += run_case(&d);
  assert_int_equal(bad, 0);
}

/* A chunk plan (varlen mode 3) in place of cu_seqlens and the table: every
 * chunk size, both directions and index types, bf16 output, the plain
 * cumsum, batches of 31 to 45 sequences with empty ones. */
static void varlen_chunk_plan_matches_reference(void **state) {
  (void)state;
  const int chunks[] = {16, 32, 64, 128, 256};
  gcase cases[12];
  size_t n = 0;
  for (int i = 0; i < 5; ++i)
    for (int rev = 0; rev < 2; ++rev) {
      gcase c = base_case();
      c.H = 16;
      c.K = 128;
      c.chunk = chunks[i];
      c.reverse = rev;
      c.lens = RAGGED;
      c.nseq = 7;
      c.chunk_plan = 1;
      c.idx = (i + rev) % 2 ? KDA_DTYPE_I64 : KDA_DTYPE_I32;
      c.out = i == 2 && rev ? KDA_DTYPE_BF16 : KDA_DTYPE_F32;
      if (i == 3) {
        c.op = KDA__OP_CHUNK_LOCAL_CUMSUM;
        c.gate = KDA_GATE_NONE;
        c.in = KDA_DTYPE_F32;
      }
      cases[n++] = c;
    }
  static int64_t lens_of[2][45];
  for (int k = 0; k < 2; ++k) {
    const int count = k ? 45 : 31;
    int64_t *lens = lens_of[k];
    for (int s = 0; s < count; ++s) lens[s] = (s * 37 + 11) % 150 - (k && s % 9 == 4 ? 200 : 0);
    for (int s = 0; s < count; ++s) lens[s] = lens[s] < 0 ? 0 : lens[s];
    gcase c = base_case();
    c.H = 4;
    c.K = 128;
    c.lens = lens;
    c.nseq = count;
    c.chunk_plan = 1;
    c.reverse = k;
    cases[n++] = c;
  }
  assert_int_equal(run_cases(cases, n), 0);
}

/* The hazard a plan's launch rules exist for: a plan rebuilt for a new batch
 * and read at once, on one stream, by kernels that read it before their
 * griddepcontrol.wait. The builder and the first gate kernel after a build
 * go plainly; were they to overlap, the gate kernel's blocks could read the
 * last batch's rows (the batches have the same token and sequence counts
 * and different lengths). 1500 sequences make the one-block builder slow,
 * so an overlapping kernel's blocks start before it has written the plan:
 * tools/gpu_check.sh runs this test with both launches overlapped
 * (KDA_TEST_PLAN_ALWAYS_OVERLAP=1) and expects it to fail. Three layers per
 * batch, the plan rebuilt five times, each batch checked. */
static int cmp_i32(const void *x, const void *y) {
  const int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
  return (a > b) - (a < b);
}

/* Five batches of N ragged sequences in one set of buffers, each described
 * on the device (a chunk plan, or a chunk table and its count written by
 * kda_chunk_indices_build_device into the caller's buffers) and read by 3
 * gate calls. The kernels read a plan's row before their wait and a
 * table's after it: a kernel that read the previous batch's rows computes
 * the wrong rows here. tools/gpu_check.sh slows the builders down so that
 * this race is certain where it exists, and shows that the test sees it
 * (for a table: with the wait removed). */
static void rebuilt_batches_are_read_fresh(int use_plan, int N, int64_t T, uint64_t seed) {
  const int H = 4, K = 64, chunk = 64, layers = 3;
  const size_t n = (size_t)T * H * K;
  tu_rng rng;
  tu_rng_seed(&rng, seed);
  uint16_t *g = malloc(n * 2);
  double *gd = malloc(n * sizeof(double)), *ref = malloc(n * sizeof(double));
  float *got = malloc(n * 4);
  tu_fill_random_input(&rng, KDA_DTYPE_BF16, g, gd, n, 1.0);
  float A_log[16], *bias = malloc((size_t)H * K * sizeof(float));
  for (int h = 0; h < H; ++h) A_log[h] = (float)log(1.0 + 15.0 * tu_uniform(&rng));
  for (int i = 0; i < H * K; ++i) bias[i] = (float)tu_normal(&rng);
  void *d_g = gu_upload(g, n * 2), *d_a = gu_upload(A_log, sizeof A_log);
  void *d_b = gu_upload(bias, (size_t)H * K * sizeof(float));
  void *d_out[3] = {gu_alloc(n * 4), gu_alloc(n * 4), gu_alloc(n * 4)};
  void *d_cu = gu_alloc((N + 1) * sizeof(int32_t));
  int32_t *cu = malloc(((size_t)N + 1) * sizeof *cu);
  const int64_t cap = kda_chunk_indices_capacity(T, N, chunk);
  int32_t *d_table = use_plan ? NULL : gu_alloc((size_t)cap * 8 + 4); /* rows, then the count */
  CUstream st;
  assert_int_equal(g_drv->cuStreamCreate(&st, CU_STREAM_NON_BLOCKING), CUDA_SUCCESS);
  kda_chunk_plan *plan = NULL;
  if (use_plan) GU_CHECK(kda_chunk_plan_create(g_ctx, T, N, chunk, &plan));
  size_t bad = 0;
  for (int batch = 0; batch < 5; ++batch) {
    /* Sorted random cut points, different per batch; the last sequence
     * takes the rest. */
    cu[0] = 0;
    for (int i = 1; i < N; ++i) cu[i] = (int32_t)tu_uniform_int(&rng, 0, T);
    qsort(cu + 1, (size_t)N - 1, sizeof *cu, cmp_i32);
    cu[N] = (int32_t)T;
    /* Written on the stream, so the build reads it in order. */
    assert_int_equal(g_drv->cuMemcpyHtoDAsync((CUdeviceptr)(uintptr_t)d_cu, cu,
                                              ((size_t)N + 1) * sizeof *cu, st),
                     CUDA_SUCCESS);
    for (int l = 0; l < layers; ++l)
      assert_int_equal(g_drv->cuMemsetD32Async((CUdeviceptr)(uintptr_t)d_out[l], 0x7fc00000u, n, st),
                       CUDA_SUCCESS);
    kda_gate_args a = kda_gate_args_default();
    a.g = d_g;
    a.g_dtype = KDA_DTYPE_BF16;
    a.batch = 1;
    a.seq_len = T;
    a.num_heads = H;
    a.head_dim = K;
    a.gate = KDA_GATE_SOFTPLUS;
    a.A_log = d_a;
    a.dt_bias = d_b;
    a.num_seqs = N;
    if (use_plan) {
      GU_CHECK(kda_chunk_plan_build(plan, d_cu, KDA_DTYPE_I32, N, T, (kda_stream)st));
      a.chunk_plan = plan;
    } else {
      GU_CHECK(kda_chunk_indices_build_device(g_ctx, d_cu, KDA_DTYPE_I32, N, T, chunk, d_table, cap,
                                              d_table + 2 * cap, (kda_stream)st));
      a.cu_seqlens = d_cu;
      a.cu_seqlens_dtype = KDA_DTYPE_I32;
      a.chunk_indices = d_table;
      a.num_chunks = cap;
      a.num_chunks_device = d_table + 2 * cap;
    }
    for (int l = 0; l < layers; ++l) {
      a.out = d_out[l];
      GU_CHECK(kda_gate_chunk_cumsum(g_ctx, &a, (kda_stream)st));
    }
    kda_gate_args h = kda_gate_args_default();
    h.batch = 1;
    h.seq_len = T;
    h.num_heads = H;
    h.head_dim = K;
    h.gate = KDA_GATE_SOFTPLUS;
    h.A_log = A_log;
    h.dt_bias = bias;
    h.num_seqs = N;
    h.cu_seqlens = cu;
    h.cu_seqlens_dtype = KDA_DTYPE_I32;
    assert_int_equal(kda_ref_gate_chunk_cumsum(&h, gd, ref), 0);
    assert_int_equal(g_drv->cuStreamSynchronize(st), CUDA_SUCCESS);
    for (int l = 0; l < layers; ++l) {
      gu_download(got, d_out[l], n * 4);
      double max_err = 0;
      size_t first = 0;
      const size_t b = tu_check_close(got, ref, n, TOL_F32, &max_err, &first);
      if (b)
        fprintf(stderr, "%s, %d sequences, batch %d layer %d: %zu elements out of budget\n",
                use_plan ? "plan" : "table", N, batch, l, b);
      bad += b;
    }
  }
  if (plan) kda_chunk_plan_destroy(plan);
  g_drv->cuStreamDestroy(st);
  for (int l = 0; l < 3; ++l) gu_free(d_out[l]);
  gu_free(d_g);
  gu_free(d_a);
  gu_free(d_b);
  gu_free(d_cu);
  gu_free(d_table);
  free(g);
  free(gd);
  free(ref);
  free(got);
  free(bias);
  free(cu);
  assert_int_equal(bad, 0);
}

static void chunk_plan_rebuilt_between_batches_is_read_fresh(void **state) {
  (void)state;
  rebuilt_batches_are_read_fresh(1, 1500, 30000, 0x9a11);
}

/* Both of the table's lookups: many sequences (the bounds loaded after the
 * row) and fewer than a warp has lanes (every bound loaded with the row). */
static void chunk_table_rebuilt_between_batches_is_read_fresh(void **state) {
  (void)state;
  rebuilt_batches_are_read_fresh(0, 1500, 30000, 0x7ab1e);
}

static void chunk_table_rebuilt_few_sequences_is_read_fresh(void **state) {
  (void)state;
  rebuilt_batches_are_read_fresh(0, 20, 30000, 0x7ab1f);
}

/* Every configuration of the tuner's space computes the same function, on
 * shapes [first, end): 0-3 below, 4 the chunk plan's (its own test, so that
 * it can run alone: KDA_TEST_FILTER=every_plan_config). */
static void every_config_of_shapes(int first, int end) {
  size_t bad = 0, tried = 0;
  const double t0 = seconds_now();
  g_ahead_s = 0;
  for (int shape = first; shape < end; ++shape) {
    gcase c = base_case();
    if (shape == 4) {
      /* Shape 0 through a chunk plan (varlen mode 3): its short chunks
       * (1, 17, 1, 2 and 1 rows) share one packed block. */
      c.H = 32;
      c.K = 128;
      c.lens = RAGGED_SHORT;
      c.nseq = 7;
      c.chunk_plan = 1;
    } else if (shape == 3) {
      /* Shape 0 with its rows in the launch. */
      c.H = 32;
      c.K = 128;
      c.lens = RAGGED_SHORT;
      c.nseq = 7;
      c.host_rows = 1;
      c.expect_varlen = 2;
    } else if (shape == 2) {
      /* Chunk 128 reversed: the block shapes of 16 channel threads, where
       * 32 or more segments take the shuffle form of the segment offsets
       * (form 3 in gate_cumsum.cu) and fewer take the shared ones. */
      c.H = 4;
      c.K = 128;
      c.chunk = 128;
      c.reverse = 1;
      c.T = 700;
    } else if (shape == 0) {
      c.H = 32;
      c.K = 128;
      c.lens = RAGGED_SHORT;
      c.nseq = 7;
    } else {
      c.op = KDA__OP_CHUNK_LOCAL_CUMSUM;
      c.gate = KDA_GATE_NONE;
      c.in = KDA_DTYPE_F32;
      c.H = 3;
      c.K = 100;
      c.chunk = 32;
      c.reverse = 1;
      c.T = 100;
    }
    kda__spec spec;
    memset(&spec, 0, sizeof spec);
    spec.kernel = KDA__KERNEL_GATE_CUMSUM;
    spec.heads = c.H;
    spec.head_dim = c.K;
    spec.chunk = c.chunk;
    /* Modes 2 and 3 keep a segment within a granule. */
    spec.varlen = c.host_rows ? 2 : c.chunk_plan ? 3 : 0;
    kda__config cfgs[1024];
    size_t n = kda__config_space(&spec, cfgs, 1024);
    assert_true(n > 0 && n <= 1024);
    /* Under compute-sanitizer (100x slower) every 7th config still covers
     * each knob value; the plain run checks them all. */
    const size_t stride = getenv("KDA_TEST_SANITIZER") && shape != 2 ? 7 : 1;
    static kda__config run[1024];
    size_t nrun = 0;
    for (size_t i = 0; i < n; i += stride)
      if (shape != 2 || cfgs[i].tx == 16) run[nrun++] = cfgs[i];
    /* The first runs alone and hands back its specialization, which the
     * rest share but for the config. */
    kda__spec base;
    case_data shared;
    memset(&shared, 0, sizeof shared);
    c.reuse = &shared;
    for (size_t i = 0; i < nrun; ++i) {
      c.cfg = &run[i];
      c.spec_out = i == 0 ? &base : NULL;
      size_t b = run_case(&c);
      if (i == 0) precompile_configs(&base, run + 1, nrun - 1);
      if (b) fprintf(stderr, "  config vec=%d tx=%d seg=%d\n", run[i].vec, run[i].tx, run[i].seg);
      bad += b;
      ++tried;
    }
    case_data_release(&shared);
  }
  printf("checked %zu configurations in %.1f s (%.1f s of it compiling ahead)\n", tried,
         seconds_now() - t0, g_ahead_s);
  assert_int_equal(bad, 0);
}

static void every_config_in_the_space_matches_reference(void **state) {
  (void)state;
  every_config_of_shapes(0, 4);
}

static void every_plan_config_matches_reference(void **state) {
  (void)state;
  every_config_of_shapes(4, 5);
}

static void device_chunk_table_equals_host_table(void **state) {
  (void)state;
  tu_rng rng;
  tu_rng_seed(&rng, 42);
  const int Ns[] = {1, 2, 7, 256, 1000, 3000};
  const int chunks[] = {16, 64, 256};
  for (int ni = 0; ni < 6; ++ni)
    for (int ci = 0; ci < 3; ++ci)
      for (int idx = 0; idx < 2; ++idx) {
        const int N = Ns[ni], chunk = chunks[ci];
        int64_t *cu = calloc((size_t)N + 1, sizeof *cu);
        int32_t *cu32 = calloc((size_t)N + 1, sizeof *cu32);
        for (int i = 0; i < N; ++i) {
          int64_t len = tu_uniform(&rng) < 0.15 ? 0 : tu_uniform_int(&rng, 1, 700);
          cu[i + 1] = cu[i] + len;
          cu32[i + 1] = (int32_t)cu[i + 1];
        }
        const int64_t T = cu[N] > 0 ? cu[N] : 1;
        const int64_t cap = kda_chunk_indices_capacity(T, N, chunk);
        int32_t *host = malloc((size_t)cap * 8), *dev = malloc((size_t)cap * 8 + 4);
        int64_t nc = 0;
        const kda_dtype dt = idx ? KDA_DTYPE_I64 : KDA_DTYPE_I32;
        const void *cu_h = idx ? (const void *)cu : (const void *)cu32;
        GU_CHECK(kda_chunk_indices_build_host(cu_h, dt, N, chunk, host, cap, &nc));
        void *d_cu = gu_upload(cu_h, ((size_t)N + 1) * (idx ? 8 : 4));
        void *d_out = gu_alloc((size_t)cap * 8 + 4);
        gu_poison(d_out, (size_t)cap * 8 + 4, 0x7fc00000u);
        GU_CHECK(kda_chunk_indices_build_device(g_ctx, d_cu, dt, N, T, chunk, d_out, cap,
                                                (int32_t *)d_out + cap * 2, NULL));
        gu_download(dev, d_out, (size_t)cap * 8 + 4);
        assert_int_equal(dev[cap * 2], nc);
        assert_memory_equal(dev, host, (size_t)nc * 8);
        for (int64_t r = nc; r < cap; ++r) {
          assert_int_equal(dev[2 * r], -1);
          assert_int_equal(dev[2 * r + 1], -1);
        }
        gu_free(d_cu);
        gu_free(d_out);
        free(cu);
        free(cu32);
        free(host);
        free(dev);
      }
}

/* kda_chunk_plan_build's device builder writes, word for word, the packed
 * layout the host computes (src/plan_pack.c, itself checked against a plain
 * first-fit-decreasing packer in test_plan_pack): ragged batches with empty
 * sequences, 3000 sequences (three tiles of the one-block builder), every
 * chunk size, both index types, and cu_seqlens that decrease, start below
 * 0, end past T or overflow the capacity. */
static void device_chunk_plan_equals_host_packing(void **state) {
  (void)state;
  tu_rng rng;
  tu_rng_seed(&rng, 4242);
  const int Ns[] = {1, 7, 8, 128, 1000, 3000};
  const int chunks[] = {16, 32, 64, 128, 256};
  for (int ni = 0; ni < 7; ++ni)
    for (int ci = 0; ci < 5; ++ci)
      for (int idx = 0; idx < 2; ++idx) {
        const int bad = ni == 6, N = bad ? 40 : Ns[ni], chunk = chunks[ci];
        int64_t *cu = calloc((size_t)N + 1, sizeof *cu);
        int32_t *cu32 = calloc((size_t)N + 1, sizeof *cu32);
        int64_t T;
        if (bad) { /* overlapping, decreasing, negative, past the end */
          T = 50 + chunk;
          for (int i = 0; i <= N; ++i) cu[i] = i % 2 ? T + 9 : 3 * (i % 7) - 5;
        } else {
          const int max_len = ni % 2 ? 70 : 700;
          for (int i = 0; i < N; ++i) {
            int64_t len = tu_uniform(&rng) < 0.15 ? 0 : tu_uniform_int(&rng, 1, max_len);
            cu[i + 1] = cu[i] + len;
          }
          T = cu[N] > 0 ? cu[N] : 1;
          cu[N] = T;
        }
        for (int i = 0; i <= N; ++i) cu32[i] = (int32_t)cu[i];
        const kda_dtype dt = idx ? KDA_DTYPE_I64 : KDA_DTYPE_I32;
        const void *cu_h = idx ? (const void *)cu : (const void *)cu32;
        const int64_t cap = kda_chunk_indices_capacity(T, N, chunk);
        const size_t bytes = kda__plan_bytes(cap, chunk);
        uint32_t *host = malloc(bytes), *dev = malloc(bytes);
        kda__plan_pack(cu_h, dt, N, T, chunk, KDA__PLAN_GREEDY_RUNS, host, cap);
        kda_chunk_plan *plan = NULL;
        GU_CHECK(kda_chunk_plan_create(g_ctx, T, N, chunk, &plan));
        gu_poison((void *)(uintptr_t)plan->rows, bytes, 0x7fc00000u);
        void *d_cu = gu_upload(cu_h, ((size_t)N + 1) * (idx ? 8 : 4));
        GU_CHECK(kda_chunk_plan_build(plan, d_cu, dt, N, T, NULL));
        gu_download(dev, (void *)(uintptr_t)plan->rows, bytes);
        for (size_t w = 0; w < bytes / 4; ++w)
          if (dev[w] != host[w])
            fail_msg("N=%d T=%lld chunk=%d idx=%d%s: word %zu (slot %zu) is %08x, the host's %08x",
                     N, (long long)T, chunk, idx, bad ? " (malformed)" : "", w,
                     w / 2 / (size_t)kda__plan_granules(chunk), dev[w], host[w]);
        kda_chunk_plan_destroy(plan);
        gu_free(d_cu);
        free(cu);
        free(cu32);
        free(host);
        free(dev);
      }
}

/* A warm specialization records into a graph and replays correctly; a cold
 * one is refused inside capture without compiling. */
static void capture_records_warm_and_refuses_cold(void **state) {
  (void)state;
  const int H = 8, K = 64;
  const int64_t T = 128;
  const size_t n = (size_t)T * H * K;
  tu_rng rng;
  tu_rng_seed(&rng, 7);
  uint16_t *g = malloc(n * 2);
  double *gd = malloc(n * sizeof(double)), *ref = malloc(n * sizeof(double));
  tu_fill_random_input(&rng, KDA_DTYPE_BF16, g, gd, n, 1.0);
  float A_log[8];
  for (int h = 0; h < H; ++h) A_log[h] = (float)log(1.0 + 15.0 * tu_uniform(&rng));
  void *d_g = gu_upload(g, n * 2), *d_out = gu_alloc(n * 4), *d_a = gu_upload(A_log, sizeof A_log);
  kda_gate_args a = kda_gate_args_default();
  a.g = d_g;
  a.g_dtype = KDA_DTYPE_BF16;
  a.out = d_out;
  a.batch = 1;
  a.seq_len = T;
  a.num_heads = H;
  a.head_dim = K;
  a.gate = KDA_GATE_SOFTPLUS;
  a.A_log = d_a;
  GU_CHECK(kda_gate_chunk_cumsum(g_ctx, &a, NULL)); /* warm */

  CUstream s;
  assert_int_equal(g_drv->cuStreamCreate(&s, CU_STREAM_NON_BLOCKING), CUDA_SUCCESS);
  kda_stats before = {.struct_size = sizeof before}, after = {.struct_size = sizeof after};
  GU_CHECK(kda_context_get_stats(g_ctx, &before));
  assert_int_equal(g_drv->cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL), CUDA_SUCCESS);
  kda_status warm = kda_gate_chunk_cumsum(g_ctx, &a, (kda_stream)s);
  kda_gate_args cold = a;
  cold.reverse = 1; /* a specialization never compiled */
  kda_status cold_st = kda_gate_chunk_cumsum(g_ctx, &cold, (kda_stream)s);
  CUgraph graph;
  assert_int_equal(g_drv->cuStreamEndCapture(s, &graph), CUDA_SUCCESS);
  assert_int_equal(warm, KDA_OK);
  assert_int_equal(cold_st, KDA_ERROR_CAPTURE_COLD);
  GU_CHECK(kda_context_get_stats(g_ctx, &after));
  assert_int_equal(after.nvrtc_compiles, before.nvrtc_compiles);

  CUgraphExec exec;
  assert_int_equal(g_drv->cuGraphInstantiate(&exec, graph, 0), CUDA_SUCCESS);
  gu_poison(d_out, n * 4, 0x7fc00000u);
  gu_sync(); /* the memset is on the NULL stream; s is non-blocking */
  assert_int_equal(g_drv->cuGraphLaunch(exec, s), CUDA_SUCCESS);
  assert_int_equal(g_drv->cuStreamSynchronize(s), CUDA_SUCCESS);
  float *got = malloc(n * 4);
  gu_download(got, d_out, n * 4);
  kda_gate_args h = a;
  h.A_log = A_log;
  assert_int_equal(kda_ref_gate_chunk_cumsum(&h, gd, ref), 0);
  assert_int_equal(tu_check_close(got, ref, n, TOL_F32, NULL, NULL), 0);
  g_drv->cuGraphExecDestroy(exec);
  g_drv->cuGraphDestroy(graph);
  g_drv->cuStreamDestroy(s);
  gu_free(d_g);
  gu_free(d_out);
  gu_free(d_a);
  free(g);
  free(gd);
  free(ref);
  free(got);
}

typedef struct race_arg {
  kda_gate_args args;
  kda_status st;
} race_arg;

static void *race_call(void *p) {
  race_arg *r = p;
  r->st = kda_gate_chunk_cumsum(g_ctx, &r->args, NULL);
  return NULL;
}

static void concurrent_first_calls_compile_once(void **state) {
  (void)state;
  const int H = 5, K = 48;
  const size_t n = (size_t)2 * 96 * H * K;
  void *d_g = gu_alloc(n * 4), *d_out = gu_alloc(n * 4), *d_a = gu_alloc(64);
  gu_poison(d_g, n * 4, 0x3f800000u); /* 1.0f */
  gu_poison(d_a, 64, 0);
  kda_stats before = {.struct_size = sizeof before}, after = {.struct_size = sizeof after};
  GU_CHECK(kda_context_get_stats(g_ctx, &before));
  race_arg args[8];
  pthread_t th[8];
  for (int i = 0; i < 8; ++i) {
    args[i].args = kda_gate_args_default();
    args[i].args.g = d_g;
    args[i].args.out = d_out;
    args[i].args.batch = 2;
    args[i].args.seq_len = 96;
    args[i].args.num_heads = H;
    args[i].args.head_dim = K;
    args[i].args.chunk_size = 32;
    args[i].args.gate = KDA_GATE_LOWER_BOUND;
    args[i].args.A_log = d_a;
    pthread_create(&th[i], NULL, race_call, &args[i]);
  }
  for (int i = 0; i < 8; ++i) {
    pthread_join(th[i], NULL);
    assert_int_equal(args[i].st, KDA_OK);
  }
  gu_sync();
  GU_CHECK(kda_context_get_stats(g_ctx, &after));
  assert_int_equal(after.nvrtc_compiles - before.nvrtc_compiles, 1);
  gu_free(d_g);
  gu_free(d_out);
  gu_free(d_a);
}

/* Each test's wall time, so a slow binary says which test is slow. */
static double g_test_t0;
static int test_clock_start(void **state) {
  (void)state;
  g_test_t0 = seconds_now();
  return 0;
}
static int test_clock_stop(void **state) {
  (void)state;
  printf("  (%.1f s)\n", seconds_now() - g_test_t0);
  return 0;
}

int main(void) {
  g_drv = gu_require_gpu("test_gpu_kernels");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(fused_matches_reference_for_every_head_count_and_dim),
      cmocka_unit_test(fused_matches_reference_for_every_option),
      cmocka_unit_test(fused_is_accurate_for_extreme_inputs),
      cmocka_unit_test(varlen_ragged_batches_match_reference),
      cmocka_unit_test(varlen_many_sequences_match_reference),
      cmocka_unit_test(varlen_host_rows_match_reference),
      cmocka_unit_test(varlen_host_rows_packed_match_reference),
      cmocka_unit_test(varlen_chunk_plan_matches_reference),
      cmocka_unit_test(chunk_plan_rebuilt_between_batches_is_read_fresh),
      cmocka_unit_test(chunk_table_rebuilt_between_batches_is_read_fresh),
      cmocka_unit_test(chunk_table_rebuilt_few_sequences_is_read_fresh),
      cmocka_unit_test(chunk_local_cumsum_vector_and_scalar_match_reference),
      cmocka_unit_test(chunk_local_cumsum_is_accurate_for_inputs_of_either_sign),
      cmocka_unit_test(standalone_gate_matches_reference),
      cmocka_unit_test(layer_entry_builds_table_once_and_dispatches),
      cmocka_unit_test(device_chunk_table_equals_host_table),
      cmocka_unit_test(device_chunk_plan_equals_host_packing),
      cmocka_unit_test(capture_records_warm_and_refuses_cold),
      cmocka_unit_test(concurrent_first_calls_compile_once),
      cmocka_unit_test(every_plan_config_matches_reference),
      cmocka_unit_test(every_config_in_the_space_matches_reference),
  };
  /* KDA_TEST_FILTER: comma-separated substrings of test names to run (e.g.
   * for a quick compute-sanitizer pass); unset or empty runs them all. */
  const char *filter = getenv("KDA_TEST_FILTER");
  struct CMUnitTest chosen[sizeof tests / sizeof tests[0]];
  size_t n = 0;
  for (size_t i = 0; i < sizeof tests / sizeof tests[0]; ++i) {
    int keep = filter == NULL || *filter == '\0';
    for (const char *p = filter; !keep && p && *p;) {
      const char *comma = strchr(p, ',');
      const size_t len = comma ? (size_t)(comma - p) : strlen(p);
      char tok[128];
      snprintf(tok, sizeof tok, "%.*s", (int)(len < sizeof tok ? len : sizeof tok - 1), p);
      if (len && strstr(tests[i].name, tok)) keep = 1;
      p = comma ? comma + 1 : NULL;
    }
    if (keep) {
      chosen[n] = tests[i];
      chosen[n].setup_func = test_clock_start;
      chosen[n++].teardown_func = test_clock_stop;
    }
  }
  printf("running %zu of %zu tests%s%s\n", n, sizeof tests / sizeof tests[0],
         filter && *filter ? " matching " : "", filter && *filter ? filter : "");
  return _cmocka_run_group_tests("test_gpu_kernels", chosen, n, gpu_case_setup,
                                 gpu_case_teardown);
}
