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
  kda_gate_args a = *shape, f;
  if (a.gate == KDA_GATE_SOFTPLUS) a.A_log = (const float *)(uintptr_t)1;
  a.num_seqs = 0; /* dense */
  kda__tune_stand_in_args(op, &a, &f);
  kda__tune_call *call = malloc(sizeof *call);
  assert_non_null(call);
  assert_int_equal(kda__tune_call_keys(&ctx->info, ctx->arch, &ctx->sources, op, &f, call), KDA_OK);
  assert_true(call->n >= 2);
  *keys = call->keys;
  size_t hid = 0;
  while (hid < call->n && !(call->space[hid].vec == call->heuristic.vec &&
                            call->space[hid].tx == call->heuristic.tx &&
                            call->space[hid].seg == call->heuristic.seg))
    ++hid;
  if (other) *other = call->space[(hid + 1) % call->n];
  if (bucket) *bucket = call->slot.bucket;
  free(call);
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
