/* The kernel entry points: validate on the host, find (or tune, or
 * compile) the specialization, launch on the caller's stream. */
#include <string.h>

#include "chunk_plan.h"
#include "context_internal.h"
#include "error.h"
#include "gate_args.h"

kda_gate_args kda_gate_args_default(void) {
  kda_gate_args a;
  memset(&a, 0, sizeof a);
  a.struct_size = sizeof a;
  a.g_dtype = KDA_DTYPE_F32;
  a.out_dtype = KDA_DTYPE_F32;
  a.chunk_size = 64;
  a.gate = KDA_GATE_NONE;
  a.scale = 1.0f;
  a.cu_seqlens_dtype = KDA_DTYPE_I32;
  return a;
}

/* Launches a gate kernel that reads chunk plan p. The first such launch on
 * the plan's build stream after a build goes plainly, so that it starts
 * after the build has completed; every later one may overlap the kernel
 * before it, since it starts after that first one (kda.h, "Chunk plans").
 * The flag is cleared only once the plain launch is enqueued, under the
 * plan's lock, so a concurrent caller on the same stream cannot slip an
 * overlapping launch in ahead of it. */
static kda_status launch_reading_plan(kda_context *ctx, kda_chunk_plan *p, CUfunction fn,
                                      unsigned grid, unsigned threads, CUstream stream,
                                      void **params) {
  if (atomic_load_explicit(&p->plain_next, memory_order_acquire) && stream == p->build_stream &&
      !kda__chunk_plan_test_overlap()) {
    pthread_mutex_lock(&p->lock);
    if (atomic_load_explicit(&p->plain_next, memory_order_relaxed)) {
      kda_status st =
          kda__context_launch_plain(ctx, fn, grid, threads, stream, params, "gate_cumsum");
      if (st == KDA_OK) atomic_store_explicit(&p->plain_next, 0, memory_order_release);
      pthread_mutex_unlock(&p->lock);
      return st;
    }
    pthread_mutex_unlock(&p->lock);
  }
  return kda__context_launch(ctx, fn, grid, threads, stream, params, "gate_cumsum");
}

static kda_status launch_plan(kda_context *ctx, const kda__launch_plan *plan,
                              const kda_gate_args *a, kda_stream stream) {
  if (plan->num_chunks == 0) return KDA_OK; /* an empty varlen batch */
  kda_chunk_plan *cp = plan->spec.varlen == 3 ? (kda_chunk_plan *)a->chunk_plan : NULL;
  if (cp != NULL) {
    KDA__TRY(kda__chunk_plan_check(cp, "gate call", a->seq_len, a->num_seqs,
                                   a->chunk_size));
    /* Its rows live in the CUdeviceptr space of the CUDA context that
     * made it: another one would read them as garbage or fault. */
    KDA__REQUIRE(cp->ctx->cu == ctx->cu, KDA_ERROR_INVALID_ARGUMENT,
                 "gate call: the chunk_plan was made by a context of another CUDA context "
                 "(device %d); use a plan made by a context of this call's (device %d)",
                 (int)cp->ctx->device, (int)ctx->device);
  }
  int pushed = 0;
  KDA__TRY(kda__context_enter(ctx, &pushed));
  CUfunction fn = NULL;
  kda__config cfg;
  kda_status st = kda__context_resolve(ctx, plan, a, (CUstream)stream, &fn, &cfg);
  if (st == KDA_OK) {
    /* Threads and grid follow the config the tuner chose. */
    kda__spec spec = plan->spec;
    spec.cfg = cfg;
    const uint64_t grid = kda__spec_grid(&spec, plan->num_chunks);
    long long T = plan->seq_len, cps = plan->chunks_per_seq;
    float scale = a->scale, lower_bound = a->lower_bound;
    const void *g = a->g;
    void *out = a->out;
    const void *A_log = a->A_log, *dt_bias = a->dt_bias;
    const void *cu = NULL, *ci = NULL, *nd = NULL;
    kda__plan_table_args(plan, a, &cu, &ci, &nd);
    void *params[] = {&g,  &out, &A_log, &dt_bias, &scale, &lower_bound,
                      &cu, &ci,  &nd,    &T,       &cps,   (void *)kda__plan_rows_arg(plan)};
    const unsigned threads = (unsigned)kda__config_threads(&spec);
    st = cp != NULL ? launch_reading_plan(ctx, cp, fn, (unsigned)grid, threads, (CUstream)stream,
                                          params)
                    : kda__context_launch(ctx, fn, (unsigned)grid, threads, (CUstream)stream,
                                          params, "gate_cumsum");
  }
  kda__context_leave(ctx, pushed);
  return st;
}

/* Launches a validated plan of args. */
static kda_status run_plan(kda_context *ctx, kda__launch_plan *plan, const kda_gate_args *args,
                           kda_stream stream) {
  /* The heuristic (and the tuner's reference candidate) knows the device:
   * a small batch gets narrower blocks so every SM has work. */
  plan->spec.cfg = kda__config_fit_grid(&plan->spec, plan->spec.cfg, plan->num_chunks,
                                        ctx->info.sm_count);
  plan->grid = kda__spec_grid(&plan->spec, plan->num_chunks);
  return launch_plan(ctx, plan, args, stream);
}

static kda_status run_op(kda__op op, kda_context *ctx, const kda_gate_args *args,
                         kda_stream stream) {
  KDA__REQUIRE(ctx != NULL, KDA_ERROR_NULL_POINTER, "context is NULL");
  kda__launch_plan plan;
  KDA__TRY(kda__plan_gate_op(op, args, &plan));
  return run_plan(ctx, &plan, args, stream);
}

kda_status kda_gate_chunk_cumsum(kda_context *ctx, const kda_gate_args *args, kda_stream stream) {
  return run_op(KDA__OP_GATE_CHUNK_CUMSUM, ctx, args, stream);
}

kda_status kda_chunk_local_cumsum(kda_context *ctx, const kda_gate_args *args,
                                  kda_stream stream) {
  return run_op(KDA__OP_CHUNK_LOCAL_CUMSUM, ctx, args, stream);
}

kda_status kda_gate(kda_context *ctx, const kda_gate_args *args, kda_stream stream) {
  return run_op(KDA__OP_GATE, ctx, args, stream);
}

size_t kda_layer_workspace_size(int64_t total_tokens, int64_t num_seqs, int32_t chunk_size) {
  const int64_t cap = kda_chunk_indices_capacity(total_tokens, num_seqs, chunk_size);
  if (cap < 0) return 0;
  return (size_t)cap * 2 * sizeof(int32_t) + sizeof(int32_t);
}

kda_status kda_layer_gate_fwd(kda_context *ctx, const kda_gate_args *args, void *workspace,
                              size_t workspace_bytes, kda_stream stream) {
  KDA__REQUIRE(ctx != NULL && args != NULL, KDA_ERROR_NULL_POINTER,
               "kda_layer_gate_fwd: NULL context or args");
  const kda__op op =
      args->gate == KDA_GATE_NONE ? KDA__OP_CHUNK_LOCAL_CUMSUM : KDA__OP_GATE_CHUNK_CUMSUM;
  kda_gate_args a = *args;
  /* A chunk plan replaces the table (kda.h: cu_seqlens is then not read). */
  if (a.struct_size == sizeof a && a.cu_seqlens != NULL && a.chunk_indices == NULL &&
      a.chunk_plan == NULL) {
    /* Every argument but the table is checked first (a stand-in row pointer
     * for the table to come), so a call that fails launches nothing. */
    static const int32_t stand_in[2];
    kda_gate_args check = a;
    check.chunk_indices = stand_in;
    check.num_chunks = 0;
    check.num_chunks_device = NULL;
    kda__launch_plan checked;
    KDA__TRY(kda__plan_gate_op(op, &check, &checked));
    /* A batch whose rows travel in the launch (cu_seqlens_host) needs no
     * table, and its plan (which never reads the table) is the call's. */
    if (checked.spec.varlen == 2) return run_plan(ctx, &checked, &a, stream);
    /* Build the table once, on the device, for this and every later kernel. */
    const int64_t cap = kda_chunk_indices_capacity(a.seq_len, a.num_seqs, a.chunk_size);
    KDA__REQUIRE(cap > 0, KDA_ERROR_BAD_SHAPE,
                 "kda_layer_gate_fwd: seq_len=%lld num_seqs=%lld chunk_size=%d give no table",
                 (long long)a.seq_len, (long long)a.num_seqs, a.chunk_size);
    const size_t need = kda_layer_workspace_size(a.seq_len, a.num_seqs, a.chunk_size);
    KDA__REQUIRE(workspace != NULL, KDA_ERROR_NULL_POINTER,
                 "kda_layer_gate_fwd: a varlen batch without chunk_indices needs a workspace of "
                 "%zu bytes", need);
    KDA__REQUIRE(workspace_bytes >= need, KDA_ERROR_BUFFER_TOO_SMALL,
                 "kda_layer_gate_fwd: workspace has %zu bytes, needs %zu", workspace_bytes, need);
    int32_t *table = workspace;
    int32_t *count = table + cap * 2;
    KDA__TRY(kda_chunk_indices_build_device(ctx, a.cu_seqlens, a.cu_seqlens_dtype, a.num_seqs,
                                            a.seq_len, a.chunk_size, table, cap, count, stream));
    a.chunk_indices = table;
    a.num_chunks = cap;
    a.num_chunks_device = count;
  }
  return run_op(op, ctx, &a, stream);
}
