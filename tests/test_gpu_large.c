/* Tensors of more than 2^32 elements: a 1M-token prefill at H=32, K=128
 * (4.3G elements, 8.6 GB of bf16 in and 17 GB of fp32 out), dense, packed
 * varlen through a device-built table, and the plain cumsum of fp32 input
 * of either sign. Element offsets cross 2^31 and 2^32 inside the tensor.
 *
 * The input repeats a random pattern whose period is no multiple of a row,
 * so every chunk sees other values; the output is poisoned first and then
 * downloaded whole to prove every element written, and chunks at the
 * start, around element 2^31 and 2^32, at the end and at random are
 * checked against the float64 reference (a chunk depends on its own rows
 * only). Skips (exit 77) without a GPU, and when a test's buffers do not
 * fit in the device's memory (it says the size it needed). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gpu_case.h"
#include "gpu_util.h"
#include "kda/kda.h"
#include "reference.h"
#include "test_util.h"

#define H 32
#define K 128
#define HK ((int64_t)H * K)
#define CHUNK 64
/* Pattern period in elements: not a multiple of a row (4096) or a chunk. */
#define PERIOD ((size_t)(16u << 20) + 7u)

static int g_skipped; /* tests without room on the device */

typedef struct pattern {
  void *host;  /* PERIOD elements of the input dtype */
  double *exact;
} pattern;

static void pattern_make(pattern *p, kda_dtype dt, double stddev, uint64_t seed) {
  tu_rng rng;
  tu_rng_seed(&rng, seed);
  p->host = malloc(PERIOD * tu_dtype_size(dt));
  p->exact = malloc(PERIOD * sizeof(double));
  assert_non_null(p->host);
  assert_non_null(p->exact);
  tu_fill_random_input(&rng, dt, p->host, p->exact, PERIOD, stddev);
}

static void pattern_free(pattern *p) {
  free(p->host);
  free(p->exact);
}

/* A device buffer of bytes, or NULL when the device has no room for it. */
static void *try_alloc(size_t bytes) {
  CUdeviceptr d = 0;
  return g_drv->cuMemAlloc(&d, bytes) == CUDA_SUCCESS ? (void *)(uintptr_t)d : NULL;
}

/* n elements of the periodic input on the device. */
static void upload_periodic(void *dev, const pattern *p, size_t n, size_t elem) {
  for (size_t off = 0; off < n; off += PERIOD) {
    const size_t m = n - off < PERIOD ? n - off : PERIOD;
    gu_copy_to((char *)dev + off * elem, p->host, m * elem);
  }
}

/* Downloads the whole fp32 output in pieces: the count of elements still
 * holding the poison (NaN), which no computed value is. */
static size_t count_unwritten(const void *dev, size_t n) {
  const size_t piece = (size_t)64 << 20;
  uint32_t *buf = malloc(piece * 4);
  assert_non_null(buf);
  size_t bad = 0;
  for (size_t off = 0; off < n; off += piece) {
    const size_t m = n - off < piece ? n - off : piece;
    gu_download(buf, (const char *)dev + off * 4, m * 4);
    for (size_t i = 0; i < m; ++i) bad += buf[i] == 0x7fc00000u;
  }
  free(buf);
  return bad;
}

/* Rows [row0, row0 + len) form one chunk (len <= CHUNK): its output
 * against the float64 reference computed from those rows alone. */
static size_t check_chunk(const kda_gate_args *a, const float *A_log, const float *bias,
                          const pattern *p, const void *d_out, int64_t row0, int len) {
  const size_t n = (size_t)len * (size_t)HK;
  double *in = malloc(n * sizeof(double)), *ref = malloc(n * sizeof(double));
  float *got = malloc(n * sizeof(float));
  for (size_t i = 0; i < n; ++i) in[i] = p->exact[((size_t)row0 * (size_t)HK + i) % PERIOD];
  kda_gate_args h = *a;
  h.batch = 1;
  h.seq_len = len;
  h.cu_seqlens = NULL;
  h.num_seqs = 0;
  h.chunk_indices = NULL;
  h.num_chunks = 0;
  h.num_chunks_device = NULL;
  h.A_log = a->A_log ? A_log : NULL;
  h.dt_bias = a->dt_bias ? bias : NULL;
  const int rc = a->gate == KDA_GATE_NONE ? kda_ref_chunk_local_cumsum(&h, in, ref)
                                          : kda_ref_gate_chunk_cumsum(&h, in, ref);
  assert_int_equal(rc, 0);
  gu_download(got, (const char *)d_out + (size_t)row0 * (size_t)HK * 4, n * 4);
  double max_err = 0;
  const size_t bad = tu_check_close(got, ref, n, TOL_F32, &max_err, NULL);
  if (bad)
    fprintf(stderr, "chunk at row %lld (%d rows, element %lld): %zu bad, max err %.3g\n",
            (long long)row0, len, (long long)(row0 * HK), bad, max_err);
  free(in);
  free(ref);
  free(got);
  return bad;
}

/* The chunks to check: their first rows, within [0, T) and starting at a
 * chunk boundary of the sequence holding them (bos). */
typedef struct pick {
  int64_t row0;
  int len;
} pick;

static size_t chunks_around(int64_t bos, int64_t eos, const int64_t *rows, size_t nrows,
                            pick *out, size_t cap) {
  size_t n = 0;
  for (size_t i = 0; i < nrows && n < cap; ++i) {
    if (rows[i] < bos || rows[i] >= eos) continue;
    const int64_t r0 = bos + (rows[i] - bos) / CHUNK * CHUNK;
    const int64_t left = eos - r0;
    out[n].row0 = r0;
    out[n].len = left < CHUNK ? (int)left : CHUNK;
    ++n;
  }
  return n;
}

typedef struct large_case {
  const char *name;
  kda_dtype in;
  kda_gate_kind gate;
  double stddev;
  const int64_t *lens; /* NULL: dense B=1 */
  int nseq;
} large_case;

static void run_large(const large_case *lc, int64_t T) {
  const size_t n = (size_t)T * (size_t)HK, in_sz = tu_dtype_size(lc->in);
  const size_t need = n * in_sz + n * 4;
  void *d_g = try_alloc(n * in_sz), *d_out = d_g ? try_alloc(n * 4 + 64) : NULL;
  if (d_out == NULL) {
    gu_free(d_g);
    printf("%s: the device has no room for %.1f GB of buffers\n", lc->name, (double)need / 1e9);
    ++g_skipped;
    skip();
  }
  pattern p;
  pattern_make(&p, lc->in, lc->stddev, 0x1a79e + (uint64_t)lc->gate);
  upload_periodic(d_g, &p, n, in_sz);
  float A_log[H], bias[HK];
  tu_rng rng;
  tu_rng_seed(&rng, 99);
  for (int h = 0; h < H; ++h) A_log[h] = (float)log(1.0 + 15.0 * tu_uniform(&rng));
  for (int64_t i = 0; i < HK; ++i) bias[i] = (float)tu_normal(&rng);
  void *d_alog = gu_upload(A_log, sizeof A_log), *d_bias = gu_upload(bias, sizeof bias);

  kda_gate_args a = kda_gate_args_default();
  a.g = d_g;
  a.g_dtype = lc->in;
  a.out = d_out;
  a.batch = 1;
  a.seq_len = T;
  a.num_heads = H;
  a.head_dim = K;
  a.chunk_size = CHUNK;
  a.gate = lc->gate;
  a.lower_bound = -5.0f;
  if (lc->gate != KDA_GATE_NONE) {
    a.A_log = d_alog;
    a.dt_bias = d_bias;
  }
  int64_t *cu = NULL;
  void *d_cu = NULL, *d_table = NULL;
  if (lc->lens) {
    cu = calloc((size_t)lc->nseq + 1, sizeof *cu);
    for (int i = 0; i < lc->nseq; ++i) cu[i + 1] = cu[i] + lc->lens[i];
    assert_int_equal(cu[lc->nseq], T);
    int32_t cu32[16];
    for (int i = 0; i <= lc->nseq; ++i) cu32[i] = (int32_t)cu[i];
    d_cu = gu_upload(cu32, ((size_t)lc->nseq + 1) * 4);
    const int64_t cap = kda_chunk_indices_capacity(T, lc->nseq, CHUNK);
    d_table = gu_alloc((size_t)cap * 8 + 4);
    int32_t *count = (int32_t *)d_table + cap * 2;
    GU_CHECK(kda_chunk_indices_build_device(g_ctx, d_cu, KDA_DTYPE_I32, lc->nseq, T, CHUNK,
                                            d_table, cap, count, NULL));
    a.cu_seqlens = d_cu;
    a.cu_seqlens_dtype = KDA_DTYPE_I32;
    a.num_seqs = lc->nseq;
    a.chunk_indices = d_table;
    a.num_chunks = cap;
    a.num_chunks_device = count;
  }
  gu_poison(d_out, n * 4 + 64, 0x7fc00000u);
  const kda_status st = lc->gate == KDA_GATE_NONE ? kda_chunk_local_cumsum(g_ctx, &a, NULL)
                                                  : kda_gate_chunk_cumsum(g_ctx, &a, NULL);
  if (st != KDA_OK) fprintf(stderr, "%s: %s\n", lc->name, kda_last_error());
  assert_int_equal(st, KDA_OK);

  const size_t unwritten = count_unwritten(d_out, n);
  uint32_t guard[16];
  gu_download(guard, (const char *)d_out + n * 4, sizeof guard);
  size_t strays = 0;
  for (int i = 0; i < 16; ++i) strays += guard[i] != 0x7fc00000u;

  /* Rows holding elements 2^31 and 2^32 (and their neighbours), the ends,
   * and 8 at random; in every sequence, at its start and end too. */
  int64_t rows[32];
  size_t nrows = 0;
  const int64_t e31 = (INT64_C(1) << 31) / HK, e32 = (INT64_C(1) << 32) / HK;
  const int64_t fixed[] = {0, e31 - 1, e31, e32 - 1, e32, T - 1};
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; ++i)
    if (fixed[i] >= 0 && fixed[i] < T) rows[nrows++] = fixed[i];
  for (int i = 0; i < 8; ++i) rows[nrows++] = tu_uniform_int(&rng, 0, T - 1);
  pick picks[128];
  size_t npick = 0;
  const int nseq = lc->lens ? lc->nseq : 1;
  for (int s = 0; s < nseq; ++s) {
    const int64_t bos = lc->lens ? cu[s] : 0, eos = lc->lens ? cu[s + 1] : T;
    if (eos <= bos) continue;
    int64_t ends[2] = {bos, eos - 1};
    npick += chunks_around(bos, eos, rows, nrows, picks + npick, 128 - npick);
    npick += chunks_around(bos, eos, ends, 2, picks + npick, 128 - npick);
  }
  size_t bad = 0;
  for (size_t i = 0; i < npick; ++i)
    bad += check_chunk(&a, A_log, bias, &p, d_out, picks[i].row0, picks[i].len);
  printf("%s: T=%lld, %.2fG elements (%.1f GB of buffers): %zu chunks checked against float64, "
         "%zu bad elements; %zu elements unwritten; %zu guard words touched\n",
         lc->name, (long long)T, (double)n / 1e9, (double)need / 1e9, npick, bad, unwritten,
         strays);
  gu_free(d_g);
  gu_free(d_out);
  gu_free(d_alog);
  gu_free(d_bias);
  gu_free(d_cu);
  gu_free(d_table);
  free(cu);
  pattern_free(&p);
  assert_int_equal(bad, 0);
  assert_int_equal(unwritten, 0);
  assert_int_equal(strays, 0);
}

/* 2^20 + 100 tokens: past element 2^32 (row 2^20), with a partial last chunk. */
#define T_LARGE ((INT64_C(1) << 20) + 100)

static void dense_prefill_past_2_32_elements(void **state) {
  (void)state;
  const large_case c = {"dense, bf16 -> f32, softplus", KDA_DTYPE_BF16, KDA_GATE_SOFTPLUS, 1.0,
                        NULL, 0};
  run_large(&c, T_LARGE);
}

static void varlen_prefill_past_2_32_elements(void **state) {
  (void)state;
  /* A sequence ends just past element 2^31 and another starts mid-chunk. */
  static const int64_t lens[] = {(INT64_C(1) << 19) + 5, 17, 0, 300000,
                                 T_LARGE - ((INT64_C(1) << 19) + 5) - 17 - 300000};
  const large_case c = {"varlen (5 sequences, device table), bf16 -> f32, lower bound",
                        KDA_DTYPE_BF16, KDA_GATE_LOWER_BOUND, 1.0, lens, 5};
  run_large(&c, T_LARGE);
}

static void plain_cumsum_past_2_32_elements(void **state) {
  (void)state;
  const large_case c = {"plain cumsum, f32 of either sign (stddev 8)", KDA_DTYPE_F32,
                        KDA_GATE_NONE, 8.0, NULL, 0};
  run_large(&c, T_LARGE);
}

int main(void) {
  g_drv = gu_require_gpu("test_gpu_large");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(dense_prefill_past_2_32_elements),
      cmocka_unit_test(varlen_prefill_past_2_32_elements),
      cmocka_unit_test(plain_cumsum_past_2_32_elements),
  };
  const int failed = cmocka_run_group_tests(tests, gpu_case_setup, gpu_case_teardown);
  /* A test that did not run is not a pass: ctest reports the whole as skipped. */
  if (failed == 0 && g_skipped > 0) {
    printf("SKIPPED: %d of %zu tests need more device memory than this GPU has free\n", g_skipped,
           sizeof tests / sizeof tests[0]);
    return GU_SKIP_EXIT;
  }
  return failed;
}
