/* Tuning-database rows for tests on the stand-in driver (tuner_rows.h). */
#include "tuner_rows.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kda/kda.h"
#include "store.h"

void tr_slot_keys(kda_context *ctx, kda__op op, const kda_gate_args *shape, kda__tune_keys *keys,
                  kda__config *other, int *bucket) {
  kda_gate_args f = *shape;
  if (f.gate == KDA_GATE_SOFTPLUS) f.A_log = (const float *)(uintptr_t)1;
  f.g = (const void *)(uintptr_t)(UINT64_C(1) << 40);
  f.out = (void *)(uintptr_t)(UINT64_C(1) << 44);
  if (f.dt_bias) f.dt_bias = (const float *)(uintptr_t)(UINT64_C(1) << 46);
  f.cu_seqlens = NULL;
  f.chunk_indices = NULL;
  f.num_seqs = 0;
  kda__launch_plan plan;
  assert_int_equal(kda__plan_gate_op(op, &f, &plan), KDA_OK);
  plan.spec.cfg = kda__config_fit_grid(&plan.spec, plan.spec.cfg, plan.num_chunks,
                                       ctx->info.sm_count);
  kda__spec slot;
  kda__context_slot(&plan, &f, &slot);
  kda__config *space = calloc(KDA__TUNE_SPACE_MAX, sizeof *space);
  assert_non_null(space);
  size_t hid = 0;
  const size_t n = kda__tune_space(&slot, plan.spec.cfg, space, KDA__TUNE_SPACE_MAX, &hid);
  assert_true(n >= 2);
  assert_int_equal(kda__tune_keys_make(&ctx->info, ctx->arch, &ctx->sources, &slot, space, n,
                                       NULL, keys), KDA_OK);
  if (other) *other = space[(hid + 1) % n];
  if (bucket) *bucket = slot.bucket;
  free(space);
}

void tr_put_winner(kda_context *ctx, const kda__tune_keys *keys, const kda__config *cfg,
                   double median_us) {
  kda__store_key key;
  kda__tune_result_key(keys, &key);
  kda__store_record r;
  memset(&r, 0, sizeof r);
  kda__config_text(cfg, r.config, sizeof r.config);
  r.config_id = 1;
  r.median_us = median_us;
  r.gbps = 1000.0;
  r.max_err = 0;
  r.candidates = 4;
  r.rejected = 1;
  r.heuristic_us = median_us * 1.5;
  r.tune_ms = 800.0;
  r.compile_ms = 400.0;
  snprintf(r.lib_version, sizeof r.lib_version, "%s", kda_version());
  snprintf(r.nvrtc_version, sizeof r.nvrtc_version, "%.63s", kda__nvrtc_build_version());
  kda__store *store = kda__context_store_lock(ctx);
  assert_non_null(store);
  const kda_status st = kda__store_put_result(store, &key, &r, NULL, 0, KDA__PUT_REPLACE, NULL);
  kda__context_store_unlock(ctx);
  assert_int_equal(st, KDA_OK);
}

kda_stats tr_stats(kda_context *ctx) {
  kda_stats s;
  memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  assert_int_equal(kda_context_get_stats(ctx, &s), KDA_OK);
  return s;
}
