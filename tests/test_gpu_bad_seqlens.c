/* A device cu_seqlens that is not non-decreasing from 0 (a caller bug the
 * device cannot report without a synchronisation) has a defined result,
 * stated in kda.h at kda_chunk_indices_build_device:
 *  - the table: sequence i gets ceil((b - a) / chunk) rows with
 *    a = clamp(cu[i], 0, T) and b = min(cu[i+1], T), none when b <= a; rows
 *    past the capacity are dropped and the count is capped at it;
 *  - the kernels: a row (i, j) covers tokens [a + j*chunk, min(a +
 *    (j+1)*chunk, max(a, b))) and computes them as the cumsum of sequence
 *    [a, b); nothing outside [0, T) of g or out is touched; a token no row
 *    covers is left unwritten; a token two sequences cover gets one of
 *    their values.
 * Each case checks the device table against that model, then runs the fused
 * kernel (and the layer entry point, which builds its own table) on a
 * NaN-poisoned output with poisoned guard rows past T, against float64.
 * Skips (exit 77) without a GPU. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "chunk_plan.h"
#include "gpu_util.h"
#include "kda/kda.h"
#include "reference.h"
#include "test_util.h"

#define TOL_F32 2e-5
#define POISON 0x7fc00000u
#define GUARD_ROWS 64

static kda_context *g_ctx;

enum { H = 4, K = 64, CHUNK = 64 };

typedef struct bad_case {
  const char *name;
  kda_dtype idx;
  int64_t cu[48];
  int nseq;
  int64_t T;
} bad_case;

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

/* The table the model above gives, first cap rows; returns its count. */
static int64_t model_table(const bad_case *c, int32_t *rows, int64_t cap) {
  int64_t n = 0;
  for (int i = 0; i < c->nseq; ++i) {
    const int64_t a = clamp64(c->cu[i], 0, c->T), b = c->cu[i + 1] < c->T ? c->cu[i + 1] : c->T;
    const int64_t nc = b > a ? (b - a + CHUNK - 1) / CHUNK : 0;
    for (int64_t j = 0; j < nc && n < cap; ++j, ++n) {
      rows[2 * n] = i;
      rows[2 * n + 1] = (int32_t)j;
    }
  }
  return n;
}

/* Checks out ([T + GUARD_ROWS, H, K] floats) against the model: per token,
 * the candidate sequences are those of the launched rows covering it.
 * Returns the number of wrong elements (printing the first few). */
static size_t check_output(const bad_case *c, const float *out, const int32_t *rows, int64_t nrows,
                           const double *g_d, const kda_gate_args *h) {
  const size_t hk = (size_t)H * K;
  /* cover[t * nseq + s]: sequence s launched a row covering token t */
  unsigned char *cover = calloc((size_t)c->T * (size_t)c->nseq, 1);
  for (int64_t r = 0; r < nrows; ++r) {
    const int s = rows[2 * r];
    const int64_t a = clamp64(c->cu[s], 0, c->T), b = clamp64(c->cu[s + 1], a, c->T);
    const int64_t t0 = a + (int64_t)rows[2 * r + 1] * CHUNK, t1 = t0 + CHUNK < b ? t0 + CHUNK : b;
    for (int64_t t = t0; t < t1; ++t) cover[t * c->nseq + s] = 1;
  }
  /* The float64 result of each sequence alone, as a dense batch of one. */
  double **ref = calloc((size_t)c->nseq, sizeof *ref);
  for (int s = 0; s < c->nseq; ++s) {
    const int64_t a = clamp64(c->cu[s], 0, c->T), b = clamp64(c->cu[s + 1], a, c->T);
    if (b <= a) continue;
    kda_gate_args d = *h;
    d.batch = 1;
    d.seq_len = b - a;
    d.cu_seqlens = NULL;
    d.num_seqs = 0;
    ref[s] = malloc((size_t)(b - a) * hk * sizeof(double));
    assert_int_equal(kda_ref_gate_chunk_cumsum(&d, g_d + (size_t)a * hk, ref[s]), 0);
  }
  size_t bad = 0;
  int64_t covered = 0, shared = 0;
  for (int64_t t = 0; t < c->T + GUARD_ROWS; ++t) {
    int candidates = 0;
    for (int s = 0; t < c->T && s < c->nseq; ++s) candidates += cover[t * c->nseq + s];
    covered += candidates > 0;
    shared += candidates > 1;
    for (size_t e = 0; e < hk; ++e) {
      const float got = out[(size_t)t * hk + e];
      uint32_t bits;
      memcpy(&bits, &got, 4);
      int ok = 0;
      double want = NAN;
      if (candidates == 0) {
        ok = bits == POISON; /* unwritten: no row covers it, or past T */
      } else {
        for (int s = 0; s < c->nseq && !ok; ++s) {
          if (!cover[t * c->nseq + s]) continue;
          want = ref[s][(size_t)(t - clamp64(c->cu[s], 0, c->T)) * hk + e];
          ok = fabs((double)got - want) <= TOL_F32 * (1.0 + fabs(want));
        }
      }
      if (!ok && bad++ < 5)
        printf("  [%s] token %lld element %zu: got %.9g (bits 0x%08x), %s %.9g\n", c->name,
               (long long)t, e, (double)got, bits,
               candidates ? "a covering sequence gives" : "expected unwritten, poison", want);
    }
  }
  printf("  [%s] %lld of %lld tokens covered (%lld by two sequences), %d guard rows: %zu wrong\n",
         c->name, (long long)covered, (long long)c->T, (long long)shared, GUARD_ROWS, bad);
  for (int s = 0; s < c->nseq; ++s) free(ref[s]);
  free(ref);
  free(cover);
  return bad;
}

/* The gate's parameters: A_log for exp(A_log) in [1, 16], dt_bias normal. */
static void random_gate_params(tu_rng *rng, float A_log[H], float bias[H * K]) {
  for (int h = 0; h < H; ++h) A_log[h] = (float)log(1.0 + 15.0 * tu_uniform(rng));
  for (size_t i = 0; i < (size_t)H * K; ++i) bias[i] = (float)tu_normal(rng);
}

static size_t run_case(const bad_case *c, int through_layer) {
  tu_rng rng;
  tu_rng_seed(&rng, 0xbad5eed + (uint64_t)c->nseq);
  const size_t hk = (size_t)H * K, n = (size_t)c->T * hk, n_alloc = n + GUARD_ROWS * hk;
  uint16_t *g_host = malloc(n * 2);
  double *g_d = malloc(n * sizeof(double));
  tu_fill_random_input(&rng, KDA_DTYPE_BF16, g_host, g_d, n, 1.0);
  float A_log[H], bias[H * K];
  random_gate_params(&rng, A_log, bias);

  kda_gate_args a = kda_gate_args_default();
  a.g_dtype = KDA_DTYPE_BF16;
  a.batch = 1;
  a.seq_len = c->T;
  a.num_heads = H;
  a.head_dim = K;
  a.chunk_size = CHUNK;
  a.num_seqs = c->nseq;
  a.cu_seqlens_dtype = c->idx;
  a.gate = KDA_GATE_SOFTPLUS; /* the fused kernel, through both entries */
  kda_gate_args h = a;
  h.A_log = A_log;
  h.dt_bias = bias;

  int32_t cu32[8];
  for (int i = 0; i <= c->nseq; ++i) cu32[i] = (int32_t)c->cu[i];
  const size_t cu_bytes = ((size_t)c->nseq + 1) * (c->idx == KDA_DTYPE_I32 ? 4 : 8);
  void *d_cu = gu_upload(c->idx == KDA_DTYPE_I32 ? (const void *)cu32 : (const void *)c->cu,
                         cu_bytes);
  /* g gets guard rows too, so a read past T would see finite values and a
   * write past T would show in out's guard rows. */
  uint16_t *g_padded = calloc(n_alloc, 2);
  memcpy(g_padded, g_host, n * 2);
  void *d_g = gu_upload(g_padded, n_alloc * 2);
  void *d_out = gu_alloc(n_alloc * 4);
  void *d_alog = gu_upload(A_log, sizeof A_log);
  void *d_bias = gu_upload(bias, sizeof bias);
  a.g = d_g;
  a.out = d_out;
  a.A_log = d_alog;
  a.dt_bias = d_bias;
  a.cu_seqlens = d_cu;

  const int64_t cap = kda_chunk_indices_capacity(c->T, c->nseq, CHUNK);
  int32_t *want = malloc((size_t)cap * 8), *rows = malloc((size_t)cap * 8 + 4);
  const int64_t want_n = model_table(c, want, cap);
  size_t bad = 0;
  gu_poison(d_out, n_alloc * 4, POISON);
  void *d_table;
  size_t table_bytes;
  if (through_layer) {
    table_bytes = kda_layer_workspace_size(c->T, c->nseq, CHUNK);
    d_table = gu_alloc(table_bytes);
    gu_poison(d_table, table_bytes & ~(size_t)3, POISON);
    GU_CHECK(kda_layer_gate_fwd(g_ctx, &a, d_table, table_bytes, NULL));
  } else {
    table_bytes = (size_t)cap * 8 + 4;
    d_table = gu_alloc(table_bytes);
    gu_poison(d_table, table_bytes, POISON);
    int32_t *count = (int32_t *)d_table + cap * 2;
    GU_CHECK(kda_chunk_indices_build_device(g_ctx, d_cu, c->idx, c->nseq, c->T, CHUNK, d_table,
                                            cap, count, NULL));
    a.chunk_indices = d_table;
    a.num_chunks = cap;
    a.num_chunks_device = count;
    GU_CHECK(kda_gate_chunk_cumsum(g_ctx, &a, NULL));
  }
  gu_sync();
  {
    /* The table itself (the layer's workspace is laid out the same way:
     * cap rows, then the count). */
    gu_download(rows, d_table, (size_t)cap * 8 + 4);
    const int32_t got_n = rows[cap * 2];
    if (got_n != want_n || memcmp(rows, want, (size_t)want_n * 8) != 0) {
      printf("  [%s] device table: %d rows, the model has %lld (or rows differ)\n", c->name, got_n,
             (long long)want_n);
      bad++;
    }
    for (int64_t r = want_n; r < cap; ++r)
      if (rows[2 * r] != -1 || rows[2 * r + 1] != -1) {
        printf("  [%s] row %lld past the count is (%d, %d), not (-1, -1)\n", c->name, (long long)r,
               rows[2 * r], rows[2 * r + 1]);
        bad++;
        break;
      }
  }
  float *out = malloc(n_alloc * 4);
  gu_download(out, d_out, n_alloc * 4);
  bad += check_output(c, out, want, want_n, g_d, &h);
  free(out);
  free(want);
  free(rows);
  gu_free(d_table);
  gu_free(d_cu);
  gu_free(d_g);
  gu_free(d_out);
  gu_free(d_alog);
  gu_free(d_bias);
  free(g_host);
  free(g_padded);
  free(g_d);
  return bad;
}

static const bad_case CASES[] = {
    /* A negative start, a decreasing pair, an overlap (60..99 in sequences
     * 0 and 2), an empty sequence, and a last end short of T (290..319
     * unwritten). */
    {"decreasing i32", KDA_DTYPE_I32, {-5, 100, 60, 260, 250, 250, 290}, 6, 320},
    /* The same with int64 and a last end far past T (clamped to T). */
    {"decreasing i64", KDA_DTYPE_I64, {-5, 100, 60, 260, 250, 250, INT64_C(1) << 40}, 6, 320},
    /* Three copies of the whole batch: 15 chunks for a capacity of 10, so
     * the table keeps the first 10 and the count is capped. */
    {"over capacity", KDA_DTYPE_I32, {0, 300, 0, 300, 0, 300}, 5, 300},
};

/* A caller's own table (built on the host from i * 70 bounds) that the
 * kernel must follow row by row, in one of four forms:
 *  ROWS_BAD: rows naming a sequence that does not exist (past num_seqs,
 *    negative) or a chunk past its sequence replace every third row: the
 *    kernel skips them, reads no cu_seqlens entry past num_seqs and writes
 *    nothing for them (their tokens stay unwritten);
 *  ROWS_REVERSED: every row valid, in the opposite order;
 *  ROWS_PAST_COUNT: every row valid, but a device count (num_chunks_device)
 *    of half of them: the rows at or past it are skipped (kda.h), as the
 *    stale rows of a larger batch would be;
 *  ROWS_HUGE_BOUNDS: int64 cu_seqlens with one more sequence at [2^63 -
 *    11, 2^63 - 1) (the last real one then ends at 2^63 - 11, clamped to
 *    T), whose rows (chunks 0 to 2^20) replace every third row and cover no
 *    token:
 *    the kernel clamps a start to T before adding chunk * chunk_size, which
 *    would otherwise wrap to a negative row and write outside [0, T).
 * 5 sequences take the kernel's path that loads all bounds at once, 40 the
 * one that loads its own pair. */
enum { ROWS_BAD, ROWS_REVERSED, ROWS_PAST_COUNT, ROWS_HUGE_BOUNDS };

static size_t run_rows(int nseq, int form) {
  const int huge = form == ROWS_HUGE_BOUNDS;
  bad_case c = {"bad rows", huge ? KDA_DTYPE_I64 : KDA_DTYPE_I32, {0}, nseq + huge,
                (int64_t)nseq * 70};
  static const char *const NAMES[] = {"bad rows", "reversed rows", "rows past the count",
                                      "huge bounds"};
  c.name = NAMES[form];
  for (int i = 0; i <= nseq; ++i) c.cu[i] = (int64_t)i * 70;
  if (huge) {
    c.cu[nseq] = INT64_MAX - 11;
    c.cu[nseq + 1] = INT64_MAX - 1;
  }
  tu_rng rng;
  tu_rng_seed(&rng, 0xbad0005 + (uint64_t)nseq);
  const size_t hk = (size_t)H * K, n = (size_t)c.T * hk, n_alloc = n + GUARD_ROWS * hk;
  uint16_t *g_host = calloc(n_alloc, 2);
  double *g_d = malloc(n * sizeof(double));
  tu_fill_random_input(&rng, KDA_DTYPE_BF16, g_host, g_d, n, 1.0);
  float A_log[H], bias[H * K];
  random_gate_params(&rng, A_log, bias);
  int32_t cu32[48];
  for (int i = 0; i <= nseq; ++i) cu32[i] = (int32_t)((int64_t)i * 70);

  /* Past chunk (T + 12) / 64, start + chunk * 64 wraps to a row whose
   * distance to T is positive again: 6 and 44 land in the guard rows at T
   * = 350 and 2800, 1000 and 2^20 far past them. */
  static const int32_t HUGE_CHUNKS[] = {1000, 6, 0, 44, 1 << 20};
  const int64_t cap = kda_chunk_indices_capacity(c.T, nseq, CHUNK);
  int32_t *table = malloc((size_t)cap * 8), *valid = malloc((size_t)cap * 8);
  int64_t rows = 0, nvalid = 0;
  GU_CHECK(kda_chunk_indices_build_host(cu32, KDA_DTYPE_I32, nseq, CHUNK, table, cap, &rows));
  static const int32_t BAD[][2] = {{-1, 0}, {0, -1}, {0, 1000}, {1 << 30, 0}};
  if (form == ROWS_REVERSED) {
    for (int64_t r = 0; r < rows / 2; ++r)
      for (int k = 0; k < 2; ++k) {
        const int32_t t = table[2 * r + k];
        table[2 * r + k] = table[2 * (rows - 1 - r) + k];
        table[2 * (rows - 1 - r) + k] = t;
      }
  }
  const int64_t count = form == ROWS_PAST_COUNT ? rows / 2 : rows;
  for (int64_t r = 0; r < rows; ++r) {
    if (form == ROWS_BAD && r % 3 == 1) { /* replaced, so its tokens stay unwritten */
      table[2 * r] = r % 4 == 1 ? nseq : BAD[r % 4][0];
      table[2 * r + 1] = r % 4 == 1 ? 0 : BAD[r % 4][1];
    } else if (huge && r % 3 == 1) { /* the same with the huge sequence's rows */
      table[2 * r] = nseq;
      table[2 * r + 1] = HUGE_CHUNKS[(r / 3) % 5];
    } else if (r < count) {
      valid[2 * nvalid] = table[2 * r];
      valid[2 * nvalid + 1] = table[2 * r + 1];
      ++nvalid;
    }
  }

  kda_gate_args a = kda_gate_args_default();
  a.g_dtype = KDA_DTYPE_BF16;
  a.batch = 1;
  a.seq_len = c.T;
  a.num_heads = H;
  a.head_dim = K;
  a.chunk_size = CHUNK;
  a.num_seqs = c.nseq;
  a.cu_seqlens_dtype = c.idx;
  a.gate = KDA_GATE_SOFTPLUS;
  kda_gate_args h = a;
  h.A_log = A_log;
  h.dt_bias = bias;
  /* cu_seqlens is followed by poison, so a read past num_seqs would give
   * a bound that covers tokens no valid row covers. */
  int32_t cu_padded[48 + 16];
  int64_t cu_padded64[48 + 16];
  for (int i = 0; i < 48 + 16; ++i) {
    cu_padded[i] = i <= nseq ? cu32[i] : (int32_t)(c.T / 2);
    cu_padded64[i] = i <= c.nseq ? c.cu[i] : c.T / 2;
  }
  void *d_cu = huge ? gu_upload(cu_padded64, sizeof cu_padded64) : gu_upload(cu_padded, sizeof cu_padded);
  void *d_g = gu_upload(g_host, n_alloc * 2);
  void *d_out = gu_alloc(n_alloc * 4);
  void *d_alog = gu_upload(A_log, sizeof A_log);
  void *d_bias = gu_upload(bias, sizeof bias);
  void *d_table = gu_upload(table, (size_t)rows * 8);
  const int32_t count32 = (int32_t)count;
  void *d_count = gu_upload(&count32, sizeof count32);
  a.g = d_g;
  a.out = d_out;
  a.A_log = d_alog;
  a.dt_bias = d_bias;
  a.cu_seqlens = d_cu;
  a.chunk_indices = d_table;
  a.num_chunks = rows;
  if (form == ROWS_PAST_COUNT) a.num_chunks_device = d_count;
  gu_poison(d_out, n_alloc * 4, POISON);
  GU_CHECK(kda_gate_chunk_cumsum(g_ctx, &a, NULL));
  gu_sync();
  float *out = malloc(n_alloc * 4);
  gu_download(out, d_out, n_alloc * 4);
  const size_t bad = check_output(&c, out, valid, nvalid, g_d, &h);
  free(out);
  free(table);
  free(valid);
  gu_free(d_table);
  gu_free(d_count);
  gu_free(d_cu);
  gu_free(d_g);
  gu_free(d_out);
  gu_free(d_alog);
  gu_free(d_bias);
  free(g_host);
  free(g_d);
  return bad;
}

static void kernel_skips_table_rows_outside_the_batch(void **state) {
  (void)state;
  assert_int_equal(run_rows(5, ROWS_BAD) + run_rows(40, ROWS_BAD), 0);
}

/* The kernel guesses each block's row from cu_seqlens for small batches
 * (the canonical table) and checks it against the table: a valid table in
 * another order must still be followed row by row. */
static void kernel_follows_a_table_in_any_order(void **state) {
  (void)state;
  assert_int_equal(run_rows(5, ROWS_REVERSED) + run_rows(40, ROWS_REVERSED), 0);
}

static void kernel_skips_table_rows_at_or_past_the_device_count(void **state) {
  (void)state;
  assert_int_equal(run_rows(5, ROWS_PAST_COUNT) + run_rows(40, ROWS_PAST_COUNT), 0);
}

static void kernel_stays_in_bounds_for_sequences_near_int64_max(void **state) {
  (void)state;
  assert_int_equal(run_rows(5, ROWS_HUGE_BOUNDS) + run_rows(40, ROWS_HUGE_BOUNDS), 0);
}

/* Only the library's builder writes a chunk plan (kda.h), but a damaged
 * one (a stray write by another kernel, memory corruption) must still not
 * move the kernel outside [0, T): it clamps every word it reads from a
 * plan. A hand-made plan (kda__chunk_plan_wrap) of hostile entries -- rows
 * running past T, a start past T, a length past the chunk, granule bounds
 * out of order or past the slot, random words -- runs the fused kernel
 * over g and out with PLAN_GUARD poisoned rows before and after: the call
 * and the kernel must succeed and every guard row stay poison. What lands
 * inside [0, T) is unspecified. */
enum { PLAN_GUARD = 256 };

static size_t run_damaged_plan(int chunk, int reverse) {
  const int64_t T = 300, nseq = 6;
  const size_t hk = (size_t)H * K, n_alloc = ((size_t)T + 2 * PLAN_GUARD) * hk;
  const int granule = chunk / 8 > 8 ? chunk / 8 : 8, NG = chunk / granule;
  const int64_t slots = kda_chunk_indices_capacity(T, nseq, chunk);
  uint32_t *words = malloc((size_t)slots * NG * 8);
  tu_rng rng;
  tu_rng_seed(&rng, 0xda3a9ed + (uint64_t)chunk + (uint64_t)reverse);
  for (int64_t e = 0; e < slots * NG; ++e) {
    const uint32_t q = (uint32_t)(e % NG), ng = (uint32_t)NG, bt = (uint32_t)chunk;
    uint32_t row0, word;
    switch (e % 7) {
      case 0: row0 = (uint32_t)T - 1; word = bt | ng << 24; break;           /* past T */
      case 1: row0 = 0xffffffffu; word = bt | ng << 24; break;               /* starts past T */
      case 2: row0 = (uint32_t)T - 5; word = 0xffffu | 200u << 16 | 255u << 24; break;
      case 3: row0 = 0; word = 10u | (ng - 1) << 16 | 1u << 24; break;       /* first granule after q */
      case 4: row0 = 3; word = bt | q << 16 | 0u << 24; break;               /* end before q */
      case 5: row0 = (uint32_t)T - 2; word = 2u | 0u << 16 | 255u << 24; break;
      default:
        row0 = (uint32_t)tu_next_u64(&rng);
        word = (uint32_t)tu_next_u64(&rng);
        break;
    }
    words[2 * e] = row0;
    words[2 * e + 1] = word;
  }
  uint16_t *g_host = malloc(n_alloc * 2);
  double *g_d = malloc(n_alloc * sizeof(double));
  tu_fill_random_input(&rng, KDA_DTYPE_BF16, g_host, g_d, n_alloc, 1.0);
  float A_log[H], bias[H * K];
  random_gate_params(&rng, A_log, bias);

  void *d_rows = gu_upload(words, (size_t)slots * NG * 8);
  void *d_g = gu_upload(g_host, n_alloc * 2);
  void *d_out = gu_alloc(n_alloc * 4);
  void *d_alog = gu_upload(A_log, sizeof A_log);
  void *d_bias = gu_upload(bias, sizeof bias);
  gu_poison(d_out, n_alloc * 4, POISON);
  kda_chunk_plan plan;
  kda__chunk_plan_wrap(&plan, g_ctx, (CUdeviceptr)(uintptr_t)d_rows, slots, T, nseq, chunk);

  kda_gate_args a = kda_gate_args_default();
  a.g = (const uint16_t *)d_g + PLAN_GUARD * hk;
  a.out = (float *)d_out + PLAN_GUARD * hk;
  a.g_dtype = KDA_DTYPE_BF16;
  a.batch = 1;
  a.seq_len = T;
  a.num_heads = H;
  a.head_dim = K;
  a.chunk_size = chunk;
  a.reverse = reverse;
  a.num_seqs = nseq;
  a.chunk_plan = &plan;
  a.gate = KDA_GATE_SOFTPLUS;
  a.A_log = d_alog;
  a.dt_bias = d_bias;
  GU_CHECK(kda_gate_chunk_cumsum(g_ctx, &a, NULL));
  gu_sync();
  uint32_t *out = malloc(n_alloc * 4);
  gu_download(out, d_out, n_alloc * 4);
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < n_alloc; ++i) {
    const int64_t row = (int64_t)(i / hk) - PLAN_GUARD;
    if ((row < 0 || row >= T) && out[i] != POISON && bad++ == 0) first = i;
  }
  printf("  [damaged plan, chunk %d%s] %lld slots of hostile entries: %zu of %d guard rows' "
         "elements written", chunk, reverse ? ", reverse" : "", (long long)slots, bad,
         2 * PLAN_GUARD);
  if (bad) printf(", the first at row %lld", (long long)(first / hk) - PLAN_GUARD);
  printf("\n");
  pthread_mutex_destroy(&plan.lock);
  free(out);
  free(words);
  free(g_host);
  free(g_d);
  gu_free(d_rows);
  gu_free(d_g);
  gu_free(d_out);
  gu_free(d_alog);
  gu_free(d_bias);
  return bad;
}

static void kernel_stays_within_the_batch_on_a_damaged_chunk_plan(void **state) {
  (void)state;
  size_t bad = 0;
  for (int chunk = 64; chunk <= 256; chunk *= 2)
    for (int rev = 0; rev < 2; ++rev) bad += run_damaged_plan(chunk, rev);
  assert_int_equal(bad, 0);
}

static void device_table_follows_the_model_for_bad_seqlens(void **state) {
  (void)state;
  size_t bad = 0;
  for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; ++i) bad += run_case(&CASES[i], 0);
  assert_int_equal(bad, 0);
}

static void layer_entry_follows_the_model_for_bad_seqlens(void **state) {
  (void)state;
  size_t bad = 0;
  for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; ++i) bad += run_case(&CASES[i], 1);
  assert_int_equal(bad, 0);
}

static int setup(void **state) {
  (void)state;
  g_ctx = gu_context();
  return 0;
}

static int teardown(void **state) {
  (void)state;
  kda_context_destroy(g_ctx);
  return 0;
}

int main(void) {
  gu_require_gpu("test_gpu_bad_seqlens");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(kernel_skips_table_rows_outside_the_batch),
      cmocka_unit_test(kernel_follows_a_table_in_any_order),
      cmocka_unit_test(kernel_skips_table_rows_at_or_past_the_device_count),
      cmocka_unit_test(kernel_stays_in_bounds_for_sequences_near_int64_max),
      cmocka_unit_test(kernel_stays_within_the_batch_on_a_damaged_chunk_plan),
      cmocka_unit_test(device_table_follows_the_model_for_bad_seqlens),
      cmocka_unit_test(layer_entry_follows_the_model_for_bad_seqlens),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
