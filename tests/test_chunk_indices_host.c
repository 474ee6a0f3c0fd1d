/* kda_chunk_indices_build_host and kda_chunk_indices_capacity (public API)
 * against hand-computed tables and the naive reference builder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kda/kda.h"
#include "reference.h"
#include "test_util.h"

typedef struct row {
  int32_t seq, chunk;
} row;

/* Builds from int64 offsets (converted to int32 when idx is I32) with the
 * given capacity; the rows land in out. */
static kda_status build(const int64_t *cu, int64_t num_seqs, kda_dtype idx, int32_t chunk,
                        row *out, int64_t capacity, int64_t *count) {
  int32_t cu32[512];
  const void *p = cu;
  if (idx == KDA_DTYPE_I32) {
    assert_true(num_seqs + 1 <= 512);
    for (int64_t i = 0; i <= num_seqs; ++i) cu32[i] = (int32_t)cu[i];
    p = cu32;
  }
  return kda_chunk_indices_build_host(p, idx, num_seqs, chunk, &out[0].seq, capacity, count);
}

/* Checks the table for both index dtypes with a roomy buffer. */
static void expect_table(const int64_t *cu, int64_t num_seqs, int32_t chunk, const row *want,
                         int64_t want_count) {
  const kda_dtype idx[2] = {KDA_DTYPE_I32, KDA_DTYPE_I64};
  for (int d = 0; d < 2; ++d) {
    row out[64];
    memset(out, 0x5a, sizeof out);
    int64_t count = -7;
    assert_int_equal(build(cu, num_seqs, idx[d], chunk, out, 64, &count), KDA_OK);
    assert_int_equal(count, want_count);
    for (int64_t r = 0; r < want_count; ++r) {
      if (out[r].seq != want[r].seq || out[r].chunk != want[r].chunk) {
        fail_msg("idx dtype %d row %lld: got (%d, %d), want (%d, %d)", (int)idx[d], (long long)r,
                 out[r].seq, out[r].chunk, want[r].seq, want[r].chunk);
      }
    }
  }
}

/* ------------------------------------------------------------------------ */
/* Hand-computed tables                                                      */
/* ------------------------------------------------------------------------ */

/* Lengths 0, 5, 0, 0, 20, 0 with chunk 16: empty sequences first, in the
 * middle and last get no row; 5 -> (1,0); 20 -> (4,0) (4,1). */
static void host_builder_empty_sequence_gets_no_chunk(void **state) {
  (void)state;
  const int64_t cu[7] = {0, 0, 5, 5, 5, 25, 25};
  const row want[3] = {{1, 0}, {4, 0}, {4, 1}};
  expect_table(cu, 6, 16, want, 3);
}

/* Every sequence empty: a valid table with no rows. */
static void host_builder_all_empty_sequences_give_zero_rows(void **state) {
  (void)state;
  const int64_t cu[4] = {0, 0, 0, 0};
  expect_table(cu, 3, 64, NULL, 0);
}

static void host_builder_single_token_sequence_gets_one_chunk(void **state) {
  (void)state;
  const int64_t cu[4] = {0, 1, 2, 3};
  const row want[3] = {{0, 0}, {1, 0}, {2, 0}};
  expect_table(cu, 3, 64, want, 3);
  expect_table(cu, 1, 256, want, 1);
}

/* 64 tokens with chunk 64 is exactly one chunk; 63 also one. */
static void host_builder_exact_chunk_length_gets_one_chunk(void **state) {
  (void)state;
  const int64_t cu[3] = {0, 64, 127};
  const row want[2] = {{0, 0}, {1, 0}};
  expect_table(cu, 2, 64, want, 2);
}

/* 65 tokens with chunk 64: a second chunk holding one token. */
static void host_builder_one_token_over_gets_a_second_chunk(void **state) {
  (void)state;
  const int64_t cu[3] = {0, 65, 66};
  const row want[3] = {{0, 0}, {0, 1}, {1, 0}};
  expect_table(cu, 2, 64, want, 3);
}

/* Lengths 1, 17, 64, 65 with chunk 16: 1 -> 1 row, 17 -> 2, 64 -> 4,
 * 65 -> 5; 12 rows in all. */
static void host_builder_lengths_1_17_64_65_with_chunk_16(void **state) {
  (void)state;
  const int64_t cu[5] = {0, 1, 18, 82, 147};
  const row want[12] = {{0, 0}, {1, 0}, {1, 1}, {2, 0}, {2, 1}, {2, 2},
                        {2, 3}, {3, 0}, {3, 1}, {3, 2}, {3, 3}, {3, 4}};
  expect_table(cu, 4, 16, want, 12);
}

/* 300 sequences of 40 tokens with chunk 32: rows (i, 0), (i, 1) in order. */
static void host_builder_many_sequences_in_sequence_order(void **state) {
  (void)state;
  enum { N = 300 };
  int64_t cu[N + 1];
  for (int i = 0; i <= N; ++i) cu[i] = 40 * i;
  const kda_dtype idx[2] = {KDA_DTYPE_I32, KDA_DTYPE_I64};
  for (int d = 0; d < 2; ++d) {
    row *out = calloc(2 * N, sizeof *out);
    assert_non_null(out);
    int64_t count = 0;
    assert_int_equal(build(cu, N, idx[d], 32, out, 2 * N, &count), KDA_OK);
    assert_int_equal(count, 2 * N);
    for (int i = 0; i < N; ++i) {
      assert_int_equal(out[2 * i].seq, i);
      assert_int_equal(out[2 * i].chunk, 0);
      assert_int_equal(out[2 * i + 1].seq, i);
      assert_int_equal(out[2 * i + 1].chunk, 1);
    }
    free(out);
  }
}

/* One long sequence with every chunk size: ceil(1000 / BT) rows (0, j). */
static void host_builder_long_sequence_counts_chunks_for_every_chunk_size(void **state) {
  (void)state;
  const int64_t cu[2] = {0, 1000};
  for (int32_t bt = 16; bt <= 256; bt *= 2) {
    row out[64];
    int64_t count = 0;
    assert_int_equal(build(cu, 1, KDA_DTYPE_I64, bt, out, 64, &count), KDA_OK);
    assert_int_equal(count, (1000 + bt - 1) / bt);
    for (int64_t j = 0; j < count; ++j) {
      assert_int_equal(out[j].seq, 0);
      assert_int_equal(out[j].chunk, j);
    }
  }
}

/* int64 offsets are read as 64 bits: a first sequence of 2^32 + 16 tokens
 * (whose low 32 bits would say 16) needs 2^28 + 1 chunks of 16, far more
 * than the capacity 8, so the build must report BUFFER_TOO_SMALL. */
static void host_builder_reads_int64_seqlens_as_64_bits(void **state) {
  (void)state;
  const int64_t big = INT64_C(1) << 32;
  const int64_t cu[3] = {0, big + 16, big + 32};
  row out[8];
  int64_t count = 0;
  assert_int_equal(kda_chunk_indices_build_host(cu, KDA_DTYPE_I64, 2, 16, &out[0].seq, 8, &count),
                   KDA_ERROR_BUFFER_TOO_SMALL);
  /* The same buffer takes a small int64 table: (1, 0), (1, 1). */
  const int64_t cu_small[3] = {0, 0, 17};
  assert_int_equal(
      kda_chunk_indices_build_host(cu_small, KDA_DTYPE_I64, 2, 16, &out[0].seq, 8, &count),
      KDA_OK);
  assert_int_equal(count, 2);
  assert_int_equal(out[0].seq, 1);
  assert_int_equal(out[1].seq, 1);
  assert_int_equal(out[1].chunk, 1);
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

static void host_builder_capacity_one_short_is_buffer_too_small(void **state) {
  (void)state;
  const int64_t cu[3] = {0, 65, 66}; /* 3 rows */
  row out[4];
  int64_t count = 0;
  assert_int_equal(build(cu, 2, KDA_DTYPE_I32, 64, out, 2, &count), KDA_ERROR_BUFFER_TOO_SMALL);
  assert_true(strlen(kda_last_error()) > 0);
  assert_int_equal(build(cu, 2, KDA_DTYPE_I64, 64, out, 0, &count), KDA_ERROR_BUFFER_TOO_SMALL);
  assert_int_equal(build(cu, 2, KDA_DTYPE_I64, 64, out, 3, &count), KDA_OK);
  assert_int_equal(count, 3);
}

static void host_builder_null_pointers_are_rejected(void **state) {
  (void)state;
  const int32_t cu[2] = {0, 10};
  int32_t out[8];
  int64_t count = 0;
  assert_int_equal(kda_chunk_indices_build_host(NULL, KDA_DTYPE_I32, 1, 64, out, 4, &count),
                   KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_chunk_indices_build_host(cu, KDA_DTYPE_I32, 1, 64, NULL, 4, &count),
                   KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_chunk_indices_build_host(cu, KDA_DTYPE_I32, 1, 64, out, 4, NULL),
                   KDA_ERROR_NULL_POINTER);
  assert_true(strlen(kda_last_error()) > 0);
}

static void host_builder_decreasing_or_nonzero_start_seqlens_are_bad(void **state) {
  (void)state;
  int32_t out[64];
  int64_t count = 0;
  const int32_t decreasing[4] = {0, 10, 9, 20};
  const int64_t decreasing_last[3] = {0, 10, 9};
  const int32_t nonzero_start[3] = {1, 10, 20};
  const int64_t negative_start[3] = {-1, 10, 20};
  assert_int_equal(kda_chunk_indices_build_host(decreasing, KDA_DTYPE_I32, 3, 16, out, 32, &count),
                   KDA_ERROR_BAD_SEQLENS);
  assert_int_equal(
      kda_chunk_indices_build_host(decreasing_last, KDA_DTYPE_I64, 2, 16, out, 32, &count),
      KDA_ERROR_BAD_SEQLENS);
  assert_int_equal(
      kda_chunk_indices_build_host(nonzero_start, KDA_DTYPE_I32, 2, 16, out, 32, &count),
      KDA_ERROR_BAD_SEQLENS);
  assert_int_equal(
      kda_chunk_indices_build_host(negative_start, KDA_DTYPE_I64, 2, 16, out, 32, &count),
      KDA_ERROR_BAD_SEQLENS);
  assert_true(strlen(kda_last_error()) > 0);
}

static void host_builder_chunk_size_must_be_power_of_two_in_16_256(void **state) {
  (void)state;
  const int32_t cu[2] = {0, 100};
  int32_t out[64];
  int64_t count = 0;
  const int32_t bad[] = {0, -64, 1, 8, 48, 100, 512, 1024};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    assert_int_equal(kda_chunk_indices_build_host(cu, KDA_DTYPE_I32, 1, bad[i], out, 32, &count),
                     KDA_ERROR_BAD_CHUNK_SIZE);
  }
  for (int32_t bt = 16; bt <= 256; bt *= 2) {
    assert_int_equal(kda_chunk_indices_build_host(cu, KDA_DTYPE_I32, 1, bt, out, 32, &count),
                     KDA_OK);
  }
}

static void host_builder_needs_at_least_one_sequence(void **state) {
  (void)state;
  const int32_t cu[2] = {0, 100};
  int32_t out[64];
  int64_t count = 0;
  assert_int_equal(kda_chunk_indices_build_host(cu, KDA_DTYPE_I32, 0, 64, out, 32, &count),
                   KDA_ERROR_BAD_SHAPE);
  assert_int_equal(kda_chunk_indices_build_host(cu, KDA_DTYPE_I32, -3, 64, out, 32, &count),
                   KDA_ERROR_BAD_SHAPE);
}

static void host_builder_float_seqlens_dtype_is_unsupported(void **state) {
  (void)state;
  const int32_t cu[2] = {0, 100};
  int32_t out[64];
  int64_t count = 0;
  assert_int_equal(kda_chunk_indices_build_host(cu, KDA_DTYPE_F32, 1, 64, out, 32, &count),
                   KDA_ERROR_UNSUPPORTED_DTYPE);
  assert_int_equal(kda_chunk_indices_build_host(cu, KDA_DTYPE_BF16, 1, 64, out, 32, &count),
                   KDA_ERROR_UNSUPPORTED_DTYPE);
}

/* ------------------------------------------------------------------------ */
/* Capacity                                                                  */
/* ------------------------------------------------------------------------ */

/* ceil(total / chunk) + num_seqs. */
static void capacity_is_ceil_tokens_over_chunk_plus_sequences(void **state) {
  (void)state;
  assert_int_equal(kda_chunk_indices_capacity(0, 1, 64), 1);
  assert_int_equal(kda_chunk_indices_capacity(1, 1, 64), 2);
  assert_int_equal(kda_chunk_indices_capacity(64, 1, 64), 2);
  assert_int_equal(kda_chunk_indices_capacity(65, 1, 64), 3);
  assert_int_equal(kda_chunk_indices_capacity(147, 4, 64), 7);
  assert_int_equal(kda_chunk_indices_capacity(147, 4, 16), 10 + 4);
  assert_int_equal(kda_chunk_indices_capacity(1000, 3, 256), 4 + 3);
  assert_int_equal(kda_chunk_indices_capacity(INT64_C(1) << 40, 1000, 256),
                   (INT64_C(1) << 32) + 1000);
}

static void capacity_of_bad_arguments_is_minus_one(void **state) {
  (void)state;
  assert_int_equal(kda_chunk_indices_capacity(-1, 1, 64), -1);
  assert_int_equal(kda_chunk_indices_capacity(100, 0, 64), -1);
  assert_int_equal(kda_chunk_indices_capacity(100, -5, 64), -1);
  assert_int_equal(kda_chunk_indices_capacity(100, 1, 0), -1);
  assert_int_equal(kda_chunk_indices_capacity(100, 1, -64), -1);
  assert_int_equal(kda_chunk_indices_capacity(INT64_MAX, 1, 16), -1);
  assert_int_equal(kda_chunk_indices_capacity(100, INT64_MAX, 16), -1);
}

/* ------------------------------------------------------------------------ */
/* Random tables against the naive reference                                 */
/* ------------------------------------------------------------------------ */

static void host_builder_matches_reference_on_random_seqlens(void **state) {
  (void)state;
  tu_rng rng;
  tu_rng_seed(&rng, 0x6b646121);
  enum { MAXN = 200 };
  int64_t cu[MAXN + 1];
  int32_t cu32[MAXN + 1];
  for (int trial = 0; trial < 500; ++trial) {
    const int64_t n = tu_uniform_int(&rng, 1, MAXN);
    const int32_t bt = (int32_t)(16 << tu_uniform_int(&rng, 0, 4));
    const int64_t maxlen = tu_uniform_int(&rng, 1, 3) == 1 ? 3 * bt : 40;
    cu[0] = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t len = tu_uniform(&rng) < 0.25 ? 0 : tu_uniform_int(&rng, 0, maxlen);
      cu[i + 1] = cu[i] + len;
    }
    for (int64_t i = 0; i <= n; ++i) cu32[i] = (int32_t)cu[i];
    const kda_dtype idx = (trial & 1) ? KDA_DTYPE_I64 : KDA_DTYPE_I32;
    const void *p = idx == KDA_DTYPE_I64 ? (const void *)cu : (const void *)cu32;

    const int64_t cap = kda_chunk_indices_capacity(cu[n], n, bt);
    assert_true(cap >= 1);
    int32_t *want = malloc((size_t)cap * 2 * sizeof *want);
    int32_t *got = malloc((size_t)cap * 2 * sizeof *got);
    assert_non_null(want);
    assert_non_null(got);
    const int64_t want_n = kda_ref_chunk_indices(cu, n, bt, want, cap);
    assert_true(want_n >= 0 && want_n <= cap); /* the capacity bound holds */

    int64_t got_n = -1;
    assert_int_equal(kda_chunk_indices_build_host(p, idx, n, bt, got, cap, &got_n), KDA_OK);
    assert_int_equal(got_n, want_n);
    assert_memory_equal(got, want, (size_t)want_n * 2 * sizeof *got);

    /* The exact count fits; one row fewer does not. */
    assert_int_equal(kda_chunk_indices_build_host(p, idx, n, bt, got, want_n, &got_n), KDA_OK);
    assert_int_equal(got_n, want_n);
    if (want_n > 0) {
      assert_int_equal(kda_chunk_indices_build_host(p, idx, n, bt, got, want_n - 1, &got_n),
                       KDA_ERROR_BUFFER_TOO_SMALL);
    }
    free(want);
    free(got);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(host_builder_empty_sequence_gets_no_chunk),
      cmocka_unit_test(host_builder_all_empty_sequences_give_zero_rows),
      cmocka_unit_test(host_builder_single_token_sequence_gets_one_chunk),
      cmocka_unit_test(host_builder_exact_chunk_length_gets_one_chunk),
      cmocka_unit_test(host_builder_one_token_over_gets_a_second_chunk),
      cmocka_unit_test(host_builder_lengths_1_17_64_65_with_chunk_16),
      cmocka_unit_test(host_builder_many_sequences_in_sequence_order),
      cmocka_unit_test(host_builder_long_sequence_counts_chunks_for_every_chunk_size),
      cmocka_unit_test(host_builder_reads_int64_seqlens_as_64_bits),
      cmocka_unit_test(host_builder_capacity_one_short_is_buffer_too_small),
      cmocka_unit_test(host_builder_null_pointers_are_rejected),
      cmocka_unit_test(host_builder_decreasing_or_nonzero_start_seqlens_are_bad),
      cmocka_unit_test(host_builder_chunk_size_must_be_power_of_two_in_16_256),
      cmocka_unit_test(host_builder_needs_at_least_one_sequence),
      cmocka_unit_test(host_builder_float_seqlens_dtype_is_unsupported),
      cmocka_unit_test(capacity_is_ceil_tokens_over_chunk_plus_sequences),
      cmocka_unit_test(capacity_of_bad_arguments_is_minus_one),
      cmocka_unit_test(host_builder_matches_reference_on_random_seqlens),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
