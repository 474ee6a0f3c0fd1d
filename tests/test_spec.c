/* Specializations: names, hashing, the heuristic and the tuning space. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "spec.h"

static kda__spec gate_spec(int in, int H, int K, int chunk) {
  kda__spec s;
  memset(&s, 0, sizeof s);
  s.kernel = KDA__KERNEL_GATE_CUMSUM;
  s.in_dtype = in;
  s.heads = H;
  s.head_dim = K;
  s.chunk = chunk;
  s.cumsum = 1;
  s.gate = 1;
  s.idx_dtype = KDA_DTYPE_I32;
  return s;
}

static void heuristic_is_legal_for_every_shape(void **state) {
  (void)state;
  const int ins[] = {KDA_DTYPE_F32, KDA_DTYPE_F16, KDA_DTYPE_BF16};
  for (int gate = 0; gate < 2; ++gate) /* the plain cumsum, then the fused kernel */
    for (int i = 0; i < 3; ++i)
      for (int H = 1; H <= 64; H += (H < 8 ? 1 : 7))
        for (int K = 1; K <= 256; K += (K < 20 ? 1 : 13))
          for (int chunk = 16; chunk <= 256; chunk <<= 1) {
            kda__spec s = gate_spec(ins[i], H, K, chunk);
            s.gate = gate;
            s.cfg = kda__config_heuristic(&s);
            if (kda__config_check(&s) != KDA_OK) {
              fprintf(stderr, "gate=%d H=%d K=%d chunk=%d in=%d: %s\n", gate, H, K, chunk,
                      ins[i], kda_last_error());
              fail();
            }
          }
}

/* The plain cumsum sums in double (gate_cumsum.cu): its segment totals take
 * 8 bytes each in shared memory, so its blocks hold at most 4096 of them
 * (32 KB), where the fused kernel's fp32 totals allow 8192. */
static void plain_cumsum_blocks_fit_their_double_totals(void **state) {
  (void)state;
  kda__spec fused = gate_spec(KDA_DTYPE_BF16, 32, 128, 256), plain = fused;
  plain.gate = KDA_GATE_NONE;
  assert_true(kda__spec_sums_in_double(&plain));
  assert_false(kda__spec_sums_in_double(&fused));
  fused.cfg = plain.cfg = (kda__config){8, 16, 64}; /* 8192 totals */
  assert_int_equal(kda__config_check(&fused), KDA_OK);
  assert_int_equal(kda__config_check(&plain), KDA_ERROR_INVALID_ARGUMENT);
  assert_non_null(strstr(kda_last_error(), "double totals"));
  plain.cfg = (kda__config){8, 8, 64}; /* 4096 */
  assert_int_equal(kda__config_check(&plain), KDA_OK);
  /* The heuristic narrows the block, and the space holds no larger one. */
  const kda__config h = kda__config_heuristic(&plain);
  assert_true(h.tx * h.seg * h.vec <= KDA__MAX_WIDE_TOTALS);
  assert_int_equal(h.vec, 8);
  kda__config cfgs[2048];
  const size_t n = kda__config_space(&plain, cfgs, 2048);
  assert_true(n > 0 && n <= 2048);
  for (size_t k = 0; k < n; ++k)
    assert_true(cfgs[k].seg == 1 || cfgs[k].tx * cfgs[k].seg * cfgs[k].vec <= KDA__MAX_WIDE_TOTALS);
  /* The activation alone (cumsum 0) sums nothing. */
  plain.cumsum = 0;
  assert_false(kda__spec_sums_in_double(&plain));
}

static void heuristic_uses_16_byte_accesses_for_typical_shapes(void **state) {
  (void)state;
  kda__spec s = gate_spec(KDA_DTYPE_BF16, 32, 128, 64);
  kda__config c = kda__config_heuristic(&s);
  assert_int_equal(c.vec, 8); /* 8 x bf16 = 16 bytes */
  s = gate_spec(KDA_DTYPE_F32, 32, 128, 64);
  c = kda__config_heuristic(&s);
  assert_int_equal(c.vec, 4); /* 4 x f32 = 16 bytes */
  s = gate_spec(KDA_DTYPE_BF16, 3, 100, 64); /* H*K = 300: 4 divides, 8 does not */
  c = kda__config_heuristic(&s);
  assert_int_equal(c.vec, 4);
}

static void space_holds_only_legal_configs_and_the_heuristic(void **state) {
  (void)state;
  const int Hs[] = {1, 4, 32}, Ks[] = {16, 100, 128, 256};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) {
      kda__spec s = gate_spec(KDA_DTYPE_BF16, Hs[i], Ks[j], 64);
      kda__config cfgs[2048];
      size_t n = kda__config_space(&s, cfgs, 2048);
      assert_true(n > 0 && n <= 2048);
      kda__config h = kda__config_heuristic(&s);
      int found = 0;
      for (size_t k = 0; k < n; ++k) {
        s.cfg = cfgs[k];
        assert_int_equal(kda__config_check(&s), KDA_OK);
        if (memcmp(&cfgs[k], &h, sizeof h) == 0) found = 1;
      }
      assert_true(found);
    }
}

static void space_is_stable_and_counts_beyond_capacity(void **state) {
  (void)state;
  kda__spec s = gate_spec(KDA_DTYPE_BF16, 32, 128, 64);
  kda__config a[2048], b[4];
  size_t n = kda__config_space(&s, a, 2048);
  size_t m = kda__config_space(&s, b, 4);
  assert_int_equal(n, m);
  assert_memory_equal(a, b, sizeof b);
}

static void illegal_configs_are_rejected_with_a_reason(void **state) {
  (void)state;
  kda__spec s = gate_spec(KDA_DTYPE_BF16, 3, 100, 64);
  s.cfg = (kda__config){8, 32, 8}; /* 8 does not divide 300 */
  assert_int_equal(kda__config_check(&s), KDA_ERROR_INVALID_ARGUMENT);
  assert_non_null(strstr(kda_last_error(), "vec=8"));
  s.cfg = (kda__config){4, 64, 32}; /* 2048 threads */
  assert_int_equal(kda__config_check(&s), KDA_ERROR_INVALID_ARGUMENT);
  s.cfg = (kda__config){4, 1, 128}; /* seg above the chunk (128 threads) */
  assert_int_equal(kda__config_check(&s), KDA_ERROR_INVALID_ARGUMENT);
  assert_non_null(strstr(kda_last_error(), "seg=128"));
  s.cfg = (kda__config){8, 3, 4}; /* tx not a power of two */
  assert_int_equal(kda__config_check(&s), KDA_ERROR_INVALID_ARGUMENT);
  s = gate_spec(KDA_DTYPE_BF16, 32, 128, 256);
  s.cfg = (kda__config){8, 32, 4}; /* 64 rows x 8 channels per thread */
  assert_int_equal(kda__config_check(&s), KDA_ERROR_INVALID_ARGUMENT);
  s.cfg = (kda__config){2, 32, 4}; /* 128 values per thread: one over twice the limit */
  assert_int_equal(kda__config_check(&s), KDA_ERROR_INVALID_ARGUMENT);
  assert_non_null(strstr(kda_last_error(), "values per thread"));
  s.cfg = (kda__config){1, 32, 4}; /* 64 values: the limit itself */
  assert_int_equal(kda__config_check(&s), KDA_OK);
  /* Packed varlen launches (modes 2 and 3) keep a segment within a
   * granule: 8 rows at chunk 64. */
  for (int mode = 2; mode <= 3; ++mode) {
    s = gate_spec(KDA_DTYPE_BF16, 16, 128, 64);
    s.varlen = mode;
    s.cfg = (kda__config){4, 16, 4}; /* 16 rows a segment */
    assert_int_equal(kda__config_check(&s), KDA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(kda_last_error(), "granule"));
    s.cfg = (kda__config){4, 16, 8}; /* 8 rows */
    assert_int_equal(kda__config_check(&s), KDA_OK);
    s.varlen = 1; /* through a table, 16 rows are fine */
    s.cfg = (kda__config){4, 16, 4};
    assert_int_equal(kda__config_check(&s), KDA_OK);
  }
}

static void names_follow_the_template_parameter_order(void **state) {
  (void)state;
  kda__spec s = gate_spec(KDA_DTYPE_BF16, 32, 128, 64);
  s.has_bias = 1;
  s.has_alog = 1;
  s.cfg = (kda__config){8, 32, 16};
  char buf[KDA__NAME_MAX];
  assert_true(kda__spec_name(&s, buf, sizeof buf) > 0);
  assert_string_equal(buf, "kda::gate_cumsum<2,0,32,128,64,1,1,1,1,0,0,0,3,8,32,16>");
  assert_int_equal(kda__spec_name(&s, buf, 10), -1);
  memset(&s, 0, sizeof s);
  s.kernel = KDA__KERNEL_CHUNK_INDICES;
  s.idx_dtype = KDA_DTYPE_I64;
  s.chunk = 64;
  s.cfg = kda__config_heuristic(&s);
  assert_true(kda__spec_name(&s, buf, sizeof buf) > 0);
  assert_string_equal(buf, "kda::build_chunk_indices<4,64,1024>");
  assert_string_equal(kda__spec_source_name(&s), "chunk_indices.cu");
}

static void hash_changes_with_any_field(void **state) {
  (void)state;
  kda__spec a = gate_spec(KDA_DTYPE_BF16, 32, 128, 64), b = a;
  assert_true(kda__spec_hash(&a) == kda__spec_hash(&b));
  b.reverse = 1;
  assert_true(kda__spec_hash(&a) != kda__spec_hash(&b));
  b = a;
  b.cfg.seg = 8;
  assert_true(kda__spec_hash(&a) != kda__spec_hash(&b));
}

static void grid_covers_every_channel_block_of_every_chunk(void **state) {
  (void)state;
  kda__spec s = gate_spec(KDA_DTYPE_BF16, 3, 100, 64);
  s.cfg = (kda__config){4, 32, 16}; /* 128 channels per block, 300 channels */
  assert_int_equal(kda__spec_grid(&s, 10), 30);
}

static void small_grids_get_narrower_blocks(void **state) {
  (void)state;
  kda__spec s = gate_spec(KDA_DTYPE_BF16, 4, 128, 64); /* T=512: 8 chunks */
  kda__config h = kda__config_heuristic(&s);
  s.cfg = h;
  assert_true(kda__spec_grid(&s, 8) * 4 < 132); /* 32 blocks of 16x16 */
  kda__config c = kda__config_fit_grid(&s, h, 8, 132);
  s.cfg = c;
  assert_int_equal(kda__config_check(&s), KDA_OK);
  assert_true(kda__spec_grid(&s, 8) * 4 >= 132);
  assert_int_equal(kda__spec_grid(&s, 8), 64); /* 8x16: the H100 probe's fastest */
  assert_true(c.tx < h.tx);
  assert_true(c.tx * c.seg >= 32); /* never below one warp */
  /* 256 blocks of 16x16 (T=512 H=32) are kept: narrowing them was slower. */
  kda__spec wide = gate_spec(KDA_DTYPE_BF16, 32, 128, 64);
  kda__config hw = kda__config_heuristic(&wide);
  kda__config cw = kda__config_fit_grid(&wide, hw, 8, 132);
  assert_memory_equal(&cw, &hw, sizeof hw);
  /* A mid-size grid (400 blocks, 3 per SM) keeps the heuristic. */
  kda__config mid = kda__config_fit_grid(&s, h, 100, 132);
  assert_memory_equal(&mid, &h, sizeof h);
  /* A large one (6 or more blocks per SM) takes 8 rows per thread at chunk
   * 64, the same channels per block; other chunk sizes keep theirs. */
  kda__config big = kda__config_fit_grid(&s, h, 4096, 132);
  assert_int_equal(big.vec, h.vec);
  assert_int_equal(big.tx, h.tx);
  assert_int_equal(h.seg, 16);
  assert_int_equal(big.seg, 8);
  s.cfg = big;
  assert_int_equal(kda__config_check(&s), KDA_OK);
  kda__spec c128 = gate_spec(KDA_DTYPE_BF16, 4, 128, 128);
  kda__config h128 = kda__config_heuristic(&c128);
  kda__config big128 = kda__config_fit_grid(&c128, h128, 4096, 132);
  assert_memory_equal(&big128, &h128, sizeof h128);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(heuristic_is_legal_for_every_shape),
      cmocka_unit_test(heuristic_uses_16_byte_accesses_for_typical_shapes),
      cmocka_unit_test(plain_cumsum_blocks_fit_their_double_totals),
      cmocka_unit_test(space_holds_only_legal_configs_and_the_heuristic),
      cmocka_unit_test(space_is_stable_and_counts_beyond_capacity),
      cmocka_unit_test(illegal_configs_are_rejected_with_a_reason),
      cmocka_unit_test(names_follow_the_template_parameter_order),
      cmocka_unit_test(hash_changes_with_any_field),
      cmocka_unit_test(grid_covers_every_channel_block_of_every_chunk),
      cmocka_unit_test(small_grids_get_narrower_blocks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
