/* The database keys of a kernel call, computed without a context or a
 * device from the GPU's identity alone: what kda_prewarm's skip and
 * kda_db_lookup ask the database, and the same keys a context on that GPU
 * computes for the call (tests/test_db_lookup.c checks that they agree). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "context_internal.h"
#include "error.h"
#include "tuner.h"
#include "tuner_job.h" /* kda__job_concrete */

void kda__tune_stand_in_args(kda__op op, const kda_gate_args *a, kda_gate_args *f) {
  *f = *a;
  f->g = (const void *)(uintptr_t)((UINT64_C(1) << 40) + kda__view_offset(a->g));
  f->out = (void *)(uintptr_t)((UINT64_C(1) << 44) + kda__view_offset(a->out));
  if (f->dt_bias) f->dt_bias = (const float *)(uintptr_t)(UINT64_C(1) << 46);
  if (f->num_seqs > 0 && op != KDA__OP_GATE) {
    f->cu_seqlens = (const void *)(uintptr_t)(UINT64_C(1) << 45);
    f->num_chunks = 0;
    if (f->chunk_plan == NULL) {
      f->chunk_indices = (const int32_t *)(uintptr_t)(UINT64_C(1) << 47);
      /* A call through a table passes its rows (kda_layer_gate_fwd: the
       * capacity), and the heuristic is fitted to them: 0 would narrow it. */
      f->num_chunks = kda_chunk_indices_capacity(f->seq_len, f->num_seqs, f->chunk_size);
    }
  } else {
    f->num_seqs = 0;
    f->chunk_plan = NULL;
  }
}

kda_status kda__tune_call_of(const kda_device_info *info, int arch, const kda__source_set *sources,
                             const kda__launch_plan *plan, const kda__spec *slot,
                             kda__tune_call *out) {
  memset(out, 0, sizeof *out);
  out->slot = *slot;
  out->heuristic = plan->spec.cfg;
  out->n = kda__tune_space(slot, out->heuristic, out->space, KDA__TUNE_SPACE_MAX, NULL);
  return kda__tune_keys_make(info, arch, sources, slot, out->space, out->n, NULL, &out->keys);
}

kda_status kda__tune_call_keys(const kda_device_info *info, int arch,
                               const kda__source_set *sources, kda__op op,
                               const kda_gate_args *f, kda__tune_call *out) {
  kda__launch_plan plan;
  KDA__TRY(kda__plan_gate_op(op, f, &plan));
  /* As a call does: the heuristic fitted to the SMs, then the slot. */
  plan.spec.cfg = kda__config_fit_grid(&plan.spec, plan.spec.cfg, plan.num_chunks, info->sm_count);
  kda__spec slot;
  kda__context_slot(&plan, f, &slot);
  return kda__tune_call_of(info, arch, sources, &plan, &slot, out);
}

int kda__tune_call_has(const kda__tune_call *call, const kda__config *c) {
  for (size_t i = 0; i < call->n; ++i)
    if (same_config(&call->space[i], c)) return 1;
  return 0;
}

int kda__tune_offline_heuristic(const kda__spec *slot, kda__config fitted, kda__config *out) {
  kda__spec s = kda__job_concrete(slot, fitted);
  const kda__config c = kda__config_heuristic(&s);
  if (c.vec > slot->vec_cap || same_config(&c, &fitted)) return 0;
  s.cfg = c;
  if (kda__config_check(&s) != KDA_OK) return 0;
  *out = c;
  return 1;
}
