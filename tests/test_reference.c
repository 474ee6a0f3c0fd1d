/* The float64 CPU reference (tests/reference.c) against values computed by
 * hand: closed forms noted next to each case. Every other numerical test
 * trusts this reference, so it is checked here on its own. */
#include <math.h>
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

/* kda_gate_args as kda_gate_args_default() documents it (F32 -> F32, chunk
 * 64, gate NONE, no scale, forward, dense), built without the library. */
static kda_gate_args args_for(int64_t B, int64_t T, int32_t H, int32_t K, int32_t chunk) {
  kda_gate_args a;
  memset(&a, 0, sizeof a);
  a.struct_size = (uint32_t)sizeof a;
  a.g_dtype = KDA_DTYPE_F32;
  a.out_dtype = KDA_DTYPE_F32;
  a.batch = B;
  a.seq_len = T;
  a.num_heads = H;
  a.head_dim = K;
  a.chunk_size = chunk;
  a.gate = KDA_GATE_NONE;
  a.cu_seqlens_dtype = KDA_DTYPE_I32;
  return a;
}

static double *alloc_doubles(size_t n) {
  double *p = calloc(n ? n : 1, sizeof *p);
  assert_non_null(p);
  return p;
}

static size_t elems(const kda_gate_args *a) {
  return (size_t)a->batch * (size_t)a->seq_len * (size_t)a->num_heads * (size_t)a->head_dim;
}

/* |got - want| <= tol * (1 + |want|), with a message naming the element. */
static void expect_close_at(double got, double want, double tol, size_t index) {
  if (!(fabs(got - want) <= tol * (1.0 + fabs(want)))) {
    fail_msg("element %zu: got %.17g, want %.17g (tol %.3g)", index, got, want, tol);
  }
}

/* ------------------------------------------------------------------------ */
/* Chunk-local cumsum (gate NONE)                                            */
/* ------------------------------------------------------------------------ */

/* g = c_k constant per channel: o[b, t, k] = c_k * ((t mod BT) + 1), and the
 * ramp restarts at every batch row (chunks start at the sequence start, not
 * at the global row index: T = 40 is not a multiple of 16). */
static void constant_input_gives_linear_ramp_per_chunk(void **state) {
  (void)state;
  kda_gate_args a = args_for(2, 40, 1, 2, 16);
  const size_t n = elems(&a);
  double *g = alloc_doubles(n), *o = alloc_doubles(n);
  const double c[2] = {1.0, -0.25};
  for (size_t e = 0; e < n; ++e) g[e] = c[e % 2];
  assert_int_equal(kda_ref_chunk_local_cumsum(&a, g, o), 0);
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 40; ++t)
      for (int k = 0; k < 2; ++k) {
        const size_t e = (size_t)((b * 40 + t) * 2 + k);
        expect_close_at(o[e], c[k] * (double)(t % 16 + 1), 0.0, e);
      }
  free(g);
  free(o);
}

/* Reverse: o[t] = c * (chunk_end - t) with chunk ends 16, 32 and 40 (the
 * last chunk clipped to the sequence end). */
static void reverse_constant_input_counts_down_to_clipped_chunk_end(void **state) {
  (void)state;
  kda_gate_args a = args_for(1, 40, 1, 1, 16);
  a.reverse = 1;
  const size_t n = elems(&a);
  double *g = alloc_doubles(n), *o = alloc_doubles(n);
  for (size_t e = 0; e < n; ++e) g[e] = 2.0;
  assert_int_equal(kda_ref_chunk_local_cumsum(&a, g, o), 0);
  for (int64_t t = 0; t < 40; ++t) {
    const int64_t end = t < 16 ? 16 : (t < 32 ? 32 : 40);
    expect_close_at(o[t], 2.0 * (double)(end - t), 0.0, (size_t)t);
  }
  free(g);
  free(o);
}

/* g[t] = t + 1: o[t] = sum_{s=c0}^{t} (s + 1) = (t+1)(t+2)/2 - c0(c0+1)/2
 * with c0 the chunk start; reverse: sum_{s=t}^{c1-1} (s + 1) =
 * c1(c1+1)/2 - t(t+1)/2 with c1 the chunk end. */
static void ramp_input_gives_triangular_numbers_forward_and_reverse(void **state) {
  (void)state;
  kda_gate_args a = args_for(1, 100, 1, 1, 32);
  double *g = alloc_doubles(100), *o = alloc_doubles(100);
  for (int t = 0; t < 100; ++t) g[t] = (double)(t + 1);
  assert_int_equal(kda_ref_chunk_local_cumsum(&a, g, o), 0);
  for (int64_t t = 0; t < 100; ++t) {
    const int64_t c0 = t / 32 * 32;
    expect_close_at(o[t], (double)((t + 1) * (t + 2) / 2 - c0 * (c0 + 1) / 2), 0.0, (size_t)t);
  }
  a.reverse = 1;
  assert_int_equal(kda_ref_chunk_local_cumsum(&a, g, o), 0);
  for (int64_t t = 0; t < 100; ++t) {
    const int64_t c1 = t / 32 * 32 + 32 < 100 ? t / 32 * 32 + 32 : 100;
    expect_close_at(o[t], (double)(c1 * (c1 + 1) / 2 - t * (t + 1) / 2), 0.0, (size_t)t);
  }
  free(g);
  free(o);
}

/* has_scale: o = scale * cumsum; 0.5 * 3 * (t mod 16 + 1). Without has_scale
 * the scale field is ignored. */
static void scale_multiplies_the_cumsum_only_when_has_scale_is_set(void **state) {
  (void)state;
  kda_gate_args a = args_for(1, 20, 1, 1, 16);
  a.scale = 3.0f;
  double g[20], o[20];
  for (int t = 0; t < 20; ++t) g[t] = 0.5;
  assert_int_equal(kda_ref_chunk_local_cumsum(&a, g, o), 0);
  for (int t = 0; t < 20; ++t) expect_close_at(o[t], 0.5 * (t % 16 + 1), 0.0, (size_t)t);
  a.has_scale = 1;
  assert_int_equal(kda_ref_chunk_local_cumsum(&a, g, o), 0);
  for (int t = 0; t < 20; ++t) expect_close_at(o[t], 1.5 * (t % 16 + 1), 0.0, (size_t)t);
}

/* Scalar form [B, T, H] (head_dim 1): each head is its own channel.
 * g[t, h] = h + 1 -> o[t, h] = (h + 1) * (t mod 16 + 1). */
static void scalar_form_sums_each_head_separately(void **state) {
  (void)state;
  kda_gate_args a = args_for(1, 33, 3, 1, 16);
  const size_t n = elems(&a);
  double *g = alloc_doubles(n), *o = alloc_doubles(n);
  for (int t = 0; t < 33; ++t)
    for (int h = 0; h < 3; ++h) g[t * 3 + h] = (double)(h + 1);
  assert_int_equal(kda_ref_chunk_local_cumsum(&a, g, o), 0);
  for (int t = 0; t < 33; ++t)
    for (int h = 0; h < 3; ++h)
      expect_close_at(o[t * 3 + h], (double)((h + 1) * (t % 16 + 1)), 0.0, (size_t)(t * 3 + h));
  free(g);
  free(o);
}

/* Varlen with lengths 1, 17, 64, 65 and chunk 64: cu = {0, 1, 18, 82, 147}.
 * Constant 1 gives ramps restarting at every sequence start and at token 64
 * of the last sequence: forward o = (t - bos) mod 64 + 1; reverse
 * o = min(bos + 64*(j+1), eos) - t for the chunk j holding t. */
static void check_varlen_1_17_64_65(kda_dtype idx_dtype, int reverse) {
  const int64_t cu64[5] = {0, 1, 18, 82, 147};
  const int32_t cu32[5] = {0, 1, 18, 82, 147};
  kda_gate_args a = args_for(1, 147, 2, 1, 64);
  a.cu_seqlens = idx_dtype == KDA_DTYPE_I32 ? (const void *)cu32 : (const void *)cu64;
  a.cu_seqlens_dtype = idx_dtype;
  a.num_seqs = 4;
  a.reverse = reverse;
  const size_t n = elems(&a);
  double *g = alloc_doubles(n), *o = alloc_doubles(n);
  for (size_t e = 0; e < n; ++e) g[e] = 1.0;
  assert_int_equal(kda_ref_chunk_local_cumsum(&a, g, o), 0);
  for (int s = 0; s < 4; ++s) {
    for (int64_t t = cu64[s]; t < cu64[s + 1]; ++t) {
      const int64_t j = (t - cu64[s]) / 64;
      const int64_t c1 = cu64[s] + 64 * (j + 1) < cu64[s + 1] ? cu64[s] + 64 * (j + 1) : cu64[s + 1];
      const double want = reverse ? (double)(c1 - t) : (double)((t - cu64[s]) % 64 + 1);
      for (int h = 0; h < 2; ++h) expect_close_at(o[t * 2 + h], want, 0.0, (size_t)(t * 2 + h));
    }
  }
  /* Spot values of the closed form. */
  assert_true(o[0] == 1.0);                              /* length-1 sequence */
  assert_true(o[17 * 2] == (reverse ? 1.0 : 17.0));      /* last token of length 17 */
  assert_true(o[82 * 2] == (reverse ? 64.0 : 1.0));      /* first token of length 65 */
  assert_true(o[146 * 2] == 1.0);                        /* token 65 opens chunk 1 */
  assert_true(o[145 * 2] == (reverse ? 1.0 : 64.0));     /* token 64 closes chunk 0 */
  free(g);
  free(o);
}

static void varlen_lengths_1_17_64_65_restart_ramps_with_int32_seqlens(void **state) {
  (void)state;
  check_varlen_1_17_64_65(KDA_DTYPE_I32, 0);
  check_varlen_1_17_64_65(KDA_DTYPE_I32, 1);
}

static void varlen_lengths_1_17_64_65_restart_ramps_with_int64_seqlens(void **state) {
  (void)state;
  check_varlen_1_17_64_65(KDA_DTYPE_I64, 0);
  check_varlen_1_17_64_65(KDA_DTYPE_I64, 1);
}

/* Empty sequences contribute nothing and tokens past cu_seqlens[N] belong to
 * no sequence: cu = {0, 0, 3, 3, 5} over T = 7 -> ramps 1,2,3 | 1,2 | 0,0. */
static void varlen_empty_sequences_and_tokens_past_the_end(void **state) {
  (void)state;
  const int32_t cu[5] = {0, 0, 3, 3, 5};
  kda_gate_args a = args_for(1, 7, 1, 1, 16);
  a.cu_seqlens = cu;
  a.num_seqs = 4;
  double g[7], o[7];
  for (int t = 0; t < 7; ++t) g[t] = 1.0;
  assert_int_equal(kda_ref_chunk_local_cumsum(&a, g, o), 0);
  const double want[7] = {1, 2, 3, 1, 2, 0, 0};
  for (int t = 0; t < 7; ++t) expect_close_at(o[t], want[t], 0.0, (size_t)t);
}

/* chunk_local_cumsum ignores the gate fields: gate SOFTPLUS with A_log and
 * dt_bias set still sums the raw input. */
static void chunk_local_cumsum_ignores_gate_fields(void **state) {
  (void)state;
  const float A_log[1] = {5.0f}, dt_bias[1] = {7.0f};
  kda_gate_args a = args_for(1, 4, 1, 1, 16);
  a.gate = KDA_GATE_SOFTPLUS;
  a.A_log = A_log;
  a.dt_bias = dt_bias;
  double g[4] = {1, 2, 3, 4}, o[4];
  assert_int_equal(kda_ref_chunk_local_cumsum(&a, g, o), 0);
  const double want[4] = {1, 3, 6, 10};
  for (int t = 0; t < 4; ++t) expect_close_at(o[t], want[t], 0.0, (size_t)t);
}

/* ------------------------------------------------------------------------ */
/* Activations                                                               */
/* ------------------------------------------------------------------------ */

/* softplus(z) = z for z > 20 only: at z = 20 exactly it is log(1 + e^20)
 * = 20 + log1p(e^-20) = 20.000000002061153622...; at 20.0001 it is 20.0001.
 * With A_log = 0 (a = 1) the gate is -softplus. */
static void softplus_threshold_is_strictly_above_20(void **state) {
  (void)state;
  const float A_log[1] = {0.0f};
  kda_gate_args a = args_for(1, 3, 1, 1, 64);
  a.gate = KDA_GATE_SOFTPLUS;
  a.A_log = A_log;
  double g[3] = {20.0, 20.0001, 19.9999}, o[3];
  assert_int_equal(kda_ref_gate(&a, g, o), 0);
  expect_close_at(o[0], -20.000000002061153622, 1e-15, 0);
  assert_true(o[0] < -20.0 - 1e-9); /* the log1p branch, not the identity */
  assert_true(o[1] == -20.0001);     /* exactly the identity */
  /* 19.9999: 19.9999 + log1p(e^-19.9999) = 19.9999 + 2.0613597...e-9 */
  expect_close_at(o[2], -(19.9999 + 2.0613597e-9), 1e-15, 2);
}

/* Softplus at small z: softplus(0) = ln 2, softplus(ln 3) = ln 4.
 * A_log = ln 2 (as float) -> a = 2 (to 2e-9): gate(0) = -2 ln 2. dt_bias
 * shifts z: x = 0 with dt_bias = ln 3 (float) -> -2 ln 4. */
static void softplus_gate_scales_by_exp_alog_and_adds_bias(void **state) {
  (void)state;
  const float A_log[1] = {0.69314718f};
  const float dt_bias[2] = {0.0f, 1.09861229f};
  kda_gate_args a = args_for(1, 1, 1, 2, 64);
  a.gate = KDA_GATE_SOFTPLUS;
  a.A_log = A_log;
  a.dt_bias = dt_bias;
  double g[2] = {0.0, 0.0}, o[2];
  assert_int_equal(kda_ref_gate(&a, g, o), 0);
  expect_close_at(o[0], -2.0 * log(2.0), 1e-7, 0);
  expect_close_at(o[1], -2.0 * log(4.0), 1e-7, 1);
}

/* Per-head A_log and per-(h, k) dt_bias indexing, in the identity range of
 * softplus: x = 30, dt_bias[h*K+k] = k + 10h, A_log = {0, ln 2}:
 * out[h, k] = -a_h (30 + k + 10h), e.g. h = 1, k = 2: -2 * 42 = -84. */
static void softplus_indexes_alog_by_head_and_bias_by_channel(void **state) {
  (void)state;
  const float A_log[2] = {0.0f, 0.69314718f};
  const float dt_bias[6] = {0, 1, 2, 10, 11, 12};
  kda_gate_args a = args_for(1, 2, 2, 3, 64);
  a.gate = KDA_GATE_SOFTPLUS;
  a.A_log = A_log;
  a.dt_bias = dt_bias;
  double g[12], o[12];
  for (int e = 0; e < 12; ++e) g[e] = 30.0;
  assert_int_equal(kda_ref_gate(&a, g, o), 0);
  const double want[6] = {-30, -31, -32, -80, -82, -84};
  for (int e = 0; e < 12; ++e) expect_close_at(o[e], want[e % 6], 1e-7, (size_t)e);
}

/* Lower bound without A_log: lb * sigmoid(x + dt_bias).
 * sigmoid(0) = 1/2, sigmoid(1) = 0.73105857863000487925,
 * sigmoid(-2) = 0.11920292202211755594. lb = -5. */
static void lower_bound_without_alog_is_lb_times_sigmoid_of_biased_input(void **state) {
  (void)state;
  const float dt_bias[3] = {1.0f, 0.0f, -1.0f};
  kda_gate_args a = args_for(1, 1, 1, 3, 64);
  a.gate = KDA_GATE_LOWER_BOUND;
  a.lower_bound = -5.0f;
  a.dt_bias = dt_bias;
  double g[3] = {-1.0, 1.0, -1.0}, o[3];
  assert_int_equal(kda_ref_gate(&a, g, o), 0);
  expect_close_at(o[0], -2.5, 1e-15, 0);
  expect_close_at(o[1], -5.0 * 0.73105857863000487925, 1e-15, 1);
  expect_close_at(o[2], -5.0 * 0.11920292202211755594, 1e-15, 2);
}

/* Lower bound with A_log = ln 2: lb * sigmoid(2 (x + b)).
 * x = 1: sigmoid(2) = 0.88079707797788244406 (vs 0.731... without A_log);
 * x = 0: sigmoid(0) = 1/2 whatever a is. */
static void lower_bound_with_alog_scales_the_sigmoid_argument(void **state) {
  (void)state;
  const float A_log[1] = {0.69314718f};
  kda_gate_args a = args_for(1, 1, 1, 2, 64);
  a.gate = KDA_GATE_LOWER_BOUND;
  a.lower_bound = -5.0f;
  a.A_log = A_log;
  double g[2] = {1.0, 0.0}, o[2];
  assert_int_equal(kda_ref_gate(&a, g, o), 0);
  expect_close_at(o[0], -5.0 * 0.88079707797788244406, 1e-7, 0);
  expect_close_at(o[1], -2.5, 1e-15, 1);
}

/* kda_gate ignores chunk_size, reverse, scale and the varlen fields:
 * gate(x = 0, no A_log, lb = -4) = -2 everywhere. */
static void gate_only_is_elementwise_and_ignores_cumsum_fields(void **state) {
  (void)state;
  const int32_t cu[2] = {0, 9}; /* past T = 5: rejected by a cumsum, ignored here */
  kda_gate_args a = args_for(1, 5, 1, 1, 16);
  a.gate = KDA_GATE_LOWER_BOUND;
  a.lower_bound = -4.0f;
  a.reverse = 1;
  a.has_scale = 1;
  a.scale = 100.0f;
  a.cu_seqlens = cu;
  a.num_seqs = 1;
  double g[5] = {0, 0, 0, 0, 0}, o[5];
  assert_int_equal(kda_ref_gate(&a, g, o), 0);
  for (int t = 0; t < 5; ++t) expect_close_at(o[t], -2.0, 0.0, (size_t)t);
}

/* ------------------------------------------------------------------------ */
/* Fused activation + cumsum                                                 */
/* ------------------------------------------------------------------------ */

/* Softplus of 0 with A_log = 0 is -ln 2 per token: forward ramp
 * -ln2 * (t mod 16 + 1); reverse -ln2 * (chunk_end - t); with scale 0.5
 * after the sum. T = 20 -> chunk ends 16 and 20. */
static void fused_softplus_constant_input_gives_scaled_ramps(void **state) {
  (void)state;
  const float A_log[1] = {0.0f};
  kda_gate_args a = args_for(1, 20, 1, 1, 16);
  a.gate = KDA_GATE_SOFTPLUS;
  a.A_log = A_log;
  double g[20], o[20];
  for (int t = 0; t < 20; ++t) g[t] = 0.0;
  assert_int_equal(kda_ref_gate_chunk_cumsum(&a, g, o), 0);
  for (int t = 0; t < 20; ++t) expect_close_at(o[t], -log(2.0) * (t % 16 + 1), 1e-14, (size_t)t);
  a.reverse = 1;
  a.has_scale = 1;
  a.scale = 0.5f;
  assert_int_equal(kda_ref_gate_chunk_cumsum(&a, g, o), 0);
  for (int t = 0; t < 20; ++t) {
    const int end = t < 16 ? 16 : 20;
    expect_close_at(o[t], -0.5 * log(2.0) * (end - t), 1e-14, (size_t)t);
  }
}

/* Lower bound, varlen {0, 3, 5}: x = 0 -> lb/2 = -1 per token (lb = -2):
 * ramps -1, -2, -3 | -1, -2. */
static void fused_lower_bound_varlen_restarts_at_sequence_start(void **state) {
  (void)state;
  const int64_t cu[3] = {0, 3, 5};
  kda_gate_args a = args_for(1, 5, 1, 1, 16);
  a.gate = KDA_GATE_LOWER_BOUND;
  a.lower_bound = -2.0f;
  a.cu_seqlens = cu;
  a.cu_seqlens_dtype = KDA_DTYPE_I64;
  a.num_seqs = 2;
  double g[5] = {0, 0, 0, 0, 0}, o[5];
  assert_int_equal(kda_ref_gate_chunk_cumsum(&a, g, o), 0);
  const double want[5] = {-1, -2, -3, -1, -2};
  for (int t = 0; t < 5; ++t) expect_close_at(o[t], want[t], 0.0, (size_t)t);
}

/* ------------------------------------------------------------------------ */
/* Bad arguments                                                             */
/* ------------------------------------------------------------------------ */

static void reference_rejects_bad_arguments(void **state) {
  (void)state;
  double g[8] = {0}, o[8];
  kda_gate_args a = args_for(1, 8, 1, 1, 16);
  assert_int_equal(kda_ref_chunk_local_cumsum(NULL, g, o), -1);
  assert_int_equal(kda_ref_chunk_local_cumsum(&a, NULL, o), -1);
  assert_int_equal(kda_ref_chunk_local_cumsum(&a, g, NULL), -1);
  assert_int_equal(kda_ref_gate(&a, NULL, o), -1);
  assert_int_equal(kda_ref_gate_chunk_cumsum(&a, g, NULL), -1);

  kda_gate_args b = a;
  b.chunk_size = 0;
  assert_int_equal(kda_ref_chunk_local_cumsum(&b, g, o), -1);
  b = a;
  b.seq_len = 0;
  assert_int_equal(kda_ref_chunk_local_cumsum(&b, g, o), -1);
  assert_int_equal(kda_ref_gate(&b, g, o), -1);
  b = a;
  b.num_heads = 0;
  assert_int_equal(kda_ref_gate_chunk_cumsum(&b, g, o), -1);
  b = a;
  b.gate = (kda_gate_kind)7;
  assert_int_equal(kda_ref_gate(&b, g, o), -1);

  const int32_t decreasing[3] = {0, 5, 4};
  const int32_t not_from_zero[3] = {1, 4, 8};
  const int32_t past_end[3] = {0, 4, 9};
  const int32_t fine[3] = {0, 4, 8};
  b = a;
  b.num_seqs = 2;
  b.cu_seqlens = decreasing;
  assert_int_equal(kda_ref_chunk_local_cumsum(&b, g, o), -1);
  b.cu_seqlens = not_from_zero;
  assert_int_equal(kda_ref_chunk_local_cumsum(&b, g, o), -1);
  b.cu_seqlens = past_end;
  assert_int_equal(kda_ref_chunk_local_cumsum(&b, g, o), -1);
  b.cu_seqlens = fine;
  assert_int_equal(kda_ref_chunk_local_cumsum(&b, g, o), 0);
  b.num_seqs = 0;
  assert_int_equal(kda_ref_chunk_local_cumsum(&b, g, o), -1);
  b.num_seqs = 2;
  b.cu_seqlens_dtype = KDA_DTYPE_F32;
  assert_int_equal(kda_ref_chunk_local_cumsum(&b, g, o), -1);
  b.cu_seqlens_dtype = KDA_DTYPE_I32;
  b.batch = 2; /* varlen needs batch 1 */
  assert_int_equal(kda_ref_chunk_local_cumsum(&b, g, o), -1);
}

/* ------------------------------------------------------------------------ */
/* Chunk table                                                               */
/* ------------------------------------------------------------------------ */

/* Lengths 0, 1, 64, 65, 0 with chunk 64: (1,0) (2,0) (3,0) (3,1). */
static void reference_chunk_table_skips_empty_sequences(void **state) {
  (void)state;
  const int64_t cu[6] = {0, 0, 1, 65, 130, 130};
  int32_t out[8][2];
  memset(out, 0x7f, sizeof out);
  assert_int_equal(kda_ref_chunk_indices(cu, 5, 64, &out[0][0], 8), 4);
  const int32_t want[4][2] = {{1, 0}, {2, 0}, {3, 0}, {3, 1}};
  for (int r = 0; r < 4; ++r) {
    assert_int_equal(out[r][0], want[r][0]);
    assert_int_equal(out[r][1], want[r][1]);
  }
  assert_int_equal(out[4][0], 0x7f7f7f7f); /* nothing past the count */
}

/* A small cap: the full count comes back, only cap rows are written. */
static void reference_chunk_table_returns_full_count_past_capacity(void **state) {
  (void)state;
  const int64_t cu[3] = {0, 40, 50};
  int32_t out[4][2];
  memset(out, 0x7f, sizeof out);
  assert_int_equal(kda_ref_chunk_indices(cu, 2, 16, &out[0][0], 2), 4); /* 3 + 1 chunks */
  assert_int_equal(out[0][0], 0);
  assert_int_equal(out[0][1], 0);
  assert_int_equal(out[1][0], 0);
  assert_int_equal(out[1][1], 1);
  assert_int_equal(out[2][0], 0x7f7f7f7f);
  assert_int_equal(kda_ref_chunk_indices(cu, 2, 16, NULL, 0), 4);
  assert_int_equal(kda_ref_chunk_indices(NULL, 2, 16, NULL, 0), -1);
  assert_int_equal(kda_ref_chunk_indices(cu, 2, 0, NULL, 0), -1);
  assert_int_equal(kda_ref_chunk_indices(cu, -1, 16, NULL, 0), -1);
  assert_int_equal(kda_ref_chunk_indices(cu, 2, 16, NULL, 3), -1);
}

/* ------------------------------------------------------------------------ */
/* test_util: the dtype conversions the reference's inputs go through        */
/* ------------------------------------------------------------------------ */

static void bf16_conversion_rounds_to_nearest_even_and_keeps_nan(void **state) {
  (void)state;
  assert_int_equal(tu_f32_to_bf16(1.0f), 0x3f80);
  /* 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1.0). */
  assert_int_equal(tu_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);
  /* 1 + 3*2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties to even. */
  assert_int_equal(tu_f32_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);
  assert_int_equal(tu_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
  assert_int_equal(tu_f32_to_bf16(-2.0f), 0xc000);
  assert_true(isnan(tu_bf16_to_f32(tu_f32_to_bf16(NAN))));
  assert_true(isinf(tu_bf16_to_f32(tu_f32_to_bf16(INFINITY))));
  assert_true(tu_bf16_to_f32(0x3f81) == 1.0f + 0x1p-7f);
}

static void f16_conversion_rounds_to_nearest_even_with_subnormals(void **state) {
  (void)state;
  assert_int_equal(tu_f32_to_f16(1.0f), 0x3c00);
  assert_int_equal(tu_f32_to_f16(-2.0f), 0xc000);
  assert_int_equal(tu_f32_to_f16(65504.0f), 0x7bff);
  assert_int_equal(tu_f32_to_f16(65520.0f), 0x7c00); /* halfway to 2^16: rounds to inf */
  assert_int_equal(tu_f32_to_f16(0x1p-24f), 0x0001); /* smallest subnormal */
  assert_int_equal(tu_f32_to_f16(0x1p-25f), 0x0000); /* half of it: ties to even */
  assert_int_equal(tu_f32_to_f16(0x1.8p-24f), 0x0002);
  assert_int_equal(tu_f32_to_f16(1.0f + 0x1p-11f), 0x3c00); /* tie to even */
  assert_int_equal(tu_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
  assert_true(isnan(tu_f16_to_f32(tu_f32_to_f16(NAN))));
  assert_true(tu_f16_to_f32(0x0001) == 0x1p-24f);
  assert_true(tu_f16_to_f32(0x3555) == 0x1.554p-2f);
  /* Every finite half survives a round trip through float. */
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    if ((h & 0x7c00u) == 0x7c00u) continue;
    assert_int_equal(tu_f32_to_f16(tu_f16_to_f32((uint16_t)h)), h);
  }
}

static void check_close_counts_nan_and_out_of_tolerance(void **state) {
  (void)state;
  const float got[4] = {1.0f, 2.5f, NAN, 100.0f};
  const double ref[4] = {1.0, 2.0, 0.0, 100.0001};
  double max_err = 0;
  size_t first = 0;
  assert_int_equal(tu_check_close(got, ref, 4, 1e-5, &max_err, &first), 2);
  assert_int_equal(first, 1);
  assert_true(isinf(max_err));
  assert_int_equal(tu_check_close(got, ref, 1, 1e-5, &max_err, &first), 0);
  assert_int_equal(first, 1);
  /* bf16: 1.0 and 1.0078125 are neighbours, 1.0068 rounds to the second,
   * 1.999 up to 2.0; the last element is 1.0068 rounded toward zero, a
   * full ulp minus 0.001 off, past half an ulp and the fp32 budget. */
  const uint16_t gb[5] = {0x3f80, 0x3f81, 0x4000, 0x4000, 0x3f80};
  const double rb[5] = {1.001, 1.0068, 1.999, 2.0, 1.0068};
  assert_int_equal(tu_check_rounded_bf16(gb, rb, 4, 2e-5, &max_err, &first), 0);
  assert_int_equal(first, 4);
  assert_true(max_err == 0.0);
  assert_int_equal(tu_check_rounded_bf16(gb, rb, 5, 2e-5, &max_err, &first), 1);
  assert_int_equal(first, 4);
  assert_true(max_err > 1e-3); /* (0.0068 - 2^-8) / 2.0068 */
}

static void random_input_is_deterministic_and_exactly_representable(void **state) {
  (void)state;
  tu_rng r1, r2;
  tu_rng_seed(&r1, 42);
  tu_rng_seed(&r2, 42);
  uint16_t h1[256], h2[256];
  double d1[256];
  tu_fill_random_input(&r1, KDA_DTYPE_BF16, h1, d1, 256, 2.0);
  tu_fill_random_input(&r2, KDA_DTYPE_BF16, h2, NULL, 256, 2.0);
  assert_memory_equal(h1, h2, sizeof h1);
  double sum = 0, sq = 0;
  for (int i = 0; i < 256; ++i) {
    assert_true(d1[i] == (double)tu_bf16_to_f32(h1[i]));
    sum += d1[i];
    sq += d1[i] * d1[i];
  }
  assert_true(fabs(sum / 256) < 0.5);              /* mean 0 */
  assert_true(fabs(sqrt(sq / 256) - 2.0) < 0.4);   /* stddev 2 */
  uint16_t f16[64];
  double df[64];
  tu_fill_random_input(&r1, KDA_DTYPE_F16, f16, df, 64, 1.0);
  for (int i = 0; i < 64; ++i) assert_true(df[i] == (double)tu_f16_to_f32(f16[i]));
  for (int i = 0; i < 1000; ++i) {
    const double u = tu_uniform(&r1);
    assert_true(u >= 0.0 && u < 1.0);
    const int64_t k = tu_uniform_int(&r1, -3, 3);
    assert_true(k >= -3 && k <= 3);
  }
}

/* tu_parallel_for covers every item exactly once, in more than one part
 * when asked for threads. */
static int g_parts;
static void mark_items(void *ctx, size_t lo, size_t hi) {
  unsigned char *marks = ctx;
  for (size_t i = lo; i < hi; ++i) marks[i]++;
  __atomic_fetch_add(&g_parts, 1, __ATOMIC_RELAXED);
}

static void parallel_for_covers_each_item_once(void **state) {
  (void)state;
  static unsigned char marks[1000];
  const char *counts[] = {"1", "5", "16"};
  const int parts[] = {1, 5, 16};
  for (int c = 0; c < 3; ++c) {
    setenv("KDA_TEST_THREADS", counts[c], 1);
    memset(marks, 0, sizeof marks);
    g_parts = 0;
    tu_parallel_for(1000, 10, mark_items, marks);
    for (int i = 0; i < 1000; ++i) assert_int_equal(marks[i], 1);
    assert_int_equal(g_parts, parts[c]);
  }
  g_parts = 0;
  tu_parallel_for(30, 10, mark_items, marks); /* at least 10 items a part */
  assert_int_equal(g_parts, 3);
  unsetenv("KDA_TEST_THREADS");
}

/* The reference and the random fill give the same bits on one thread and
 * on seven: a ragged varlen batch (every reference function) and a dense
 * one, both large enough to be split. */
static void reference_and_fill_do_not_depend_on_the_thread_count(void **state) {
  (void)state;
  const int64_t cu[] = {0, 1, 700, 763, 2300, 2301, 4000};
  const int H = 4, K = 64;
  const size_t n = 4000 * (size_t)(H * K);
  float A_log[4] = {0.1f, 0.7f, -0.3f, 1.2f}, bias[256];
  for (int i = 0; i < H * K; ++i) bias[i] = (float)(i % 17) * 0.1f - 0.8f;
  uint16_t *h[2];
  double *g[2], *o[2][3];
  for (int run = 0; run < 2; ++run) {
    setenv("KDA_TEST_THREADS", run ? "7" : "1", 1);
    h[run] = malloc(n * sizeof **h);
    g[run] = malloc(n * sizeof **g);
    tu_rng rng;
    tu_rng_seed(&rng, 9);
    tu_fill_random_input(&rng, KDA_DTYPE_BF16, h[run], g[run], n, 3.0);
    kda_gate_args a = kda_gate_args_default();
    a.batch = 1;
    a.seq_len = 4000;
    a.num_heads = H;
    a.head_dim = K;
    a.chunk_size = 64;
    a.gate = KDA_GATE_SOFTPLUS;
    a.A_log = A_log;
    a.dt_bias = bias;
    a.reverse = 1;
    a.cu_seqlens = cu;
    a.cu_seqlens_dtype = KDA_DTYPE_I64;
    a.num_seqs = 6;
    for (int f = 0; f < 3; ++f) o[run][f] = malloc(n * sizeof(double));
    assert_int_equal(kda_ref_gate_chunk_cumsum(&a, g[run], o[run][0]), 0);
    assert_int_equal(kda_ref_chunk_local_cumsum(&a, g[run], o[run][1]), 0);
    a.cu_seqlens = NULL;
    a.batch = 2;
    a.seq_len = 2000;
    a.reverse = 0;
    a.gate = KDA_GATE_LOWER_BOUND;
    assert_int_equal(kda_ref_gate_chunk_cumsum(&a, g[run], o[run][2]), 0);
  }
  unsetenv("KDA_TEST_THREADS");
  assert_memory_equal(h[0], h[1], n * sizeof **h);
  assert_memory_equal(g[0], g[1], n * sizeof **g);
  for (int f = 0; f < 3; ++f) assert_memory_equal(o[0][f], o[1][f], n * sizeof(double));
  /* Not a constant: the fill's blocks draw from different streams. */
  assert_true(memcmp(h[0], h[0] + 65536, 1024) != 0);
  for (int run = 0; run < 2; ++run) {
    free(h[run]);
    free(g[run]);
    for (int f = 0; f < 3; ++f) free(o[run][f]);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(constant_input_gives_linear_ramp_per_chunk),
      cmocka_unit_test(reverse_constant_input_counts_down_to_clipped_chunk_end),
      cmocka_unit_test(ramp_input_gives_triangular_numbers_forward_and_reverse),
      cmocka_unit_test(scale_multiplies_the_cumsum_only_when_has_scale_is_set),
      cmocka_unit_test(scalar_form_sums_each_head_separately),
      cmocka_unit_test(varlen_lengths_1_17_64_65_restart_ramps_with_int32_seqlens),
      cmocka_unit_test(varlen_lengths_1_17_64_65_restart_ramps_with_int64_seqlens),
      cmocka_unit_test(varlen_empty_sequences_and_tokens_past_the_end),
      cmocka_unit_test(chunk_local_cumsum_ignores_gate_fields),
      cmocka_unit_test(softplus_threshold_is_strictly_above_20),
      cmocka_unit_test(softplus_gate_scales_by_exp_alog_and_adds_bias),
      cmocka_unit_test(softplus_indexes_alog_by_head_and_bias_by_channel),
      cmocka_unit_test(lower_bound_without_alog_is_lb_times_sigmoid_of_biased_input),
      cmocka_unit_test(lower_bound_with_alog_scales_the_sigmoid_argument),
      cmocka_unit_test(gate_only_is_elementwise_and_ignores_cumsum_fields),
      cmocka_unit_test(fused_softplus_constant_input_gives_scaled_ramps),
      cmocka_unit_test(fused_lower_bound_varlen_restarts_at_sequence_start),
      cmocka_unit_test(reference_rejects_bad_arguments),
      cmocka_unit_test(reference_chunk_table_skips_empty_sequences),
      cmocka_unit_test(reference_chunk_table_returns_full_count_past_capacity),
      cmocka_unit_test(bf16_conversion_rounds_to_nearest_even_and_keeps_nan),
      cmocka_unit_test(f16_conversion_rounds_to_nearest_even_with_subnormals),
      cmocka_unit_test(check_close_counts_nan_and_out_of_tolerance),
      cmocka_unit_test(random_input_is_deterministic_and_exactly_representable),
      cmocka_unit_test(parallel_for_covers_each_item_once),
      cmocka_unit_test(reference_and_fill_do_not_depend_on_the_thread_count),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
