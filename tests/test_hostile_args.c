/* Every public entry point of kda.h and kda_db.h called with NULL, zero,
 * negative, huge and inconsistent arguments returns a status (or its
 * documented sentinel) and touches nothing: no crash, no launch, no file
 * outside a scratch folder. Kernel arguments are checked in depth through
 * kda__plan_gate_op (the validation every launch goes through) and through
 * the public calls with a NULL context. Runs without a GPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "gate_args.h"
#include "kda/kda.h"
#include "kda/kda_db.h"

#define FAKE_G ((const void *)(uintptr_t)0x100000000ull)
#define FAKE_OUT ((void *)(uintptr_t)0x900000000ull)
#define FAKE_ALOG ((const float *)(uintptr_t)0x1100000000ull)
#define FAKE_CU ((const void *)(uintptr_t)0x1200000000ull)
#define FAKE_IDX ((const int32_t *)(uintptr_t)0x1300000000ull)

static char g_dir[256];

static int setup(void **state) {
  (void)state;
  snprintf(g_dir, sizeof g_dir, "/tmp/kda_hostile.XXXXXX");
  if (mkdtemp(g_dir) == NULL) return -1;
  /* Nothing here may reach the user's cache. */
  char cache[300];
  snprintf(cache, sizeof cache, "%s/cache", g_dir);
  setenv("KDA_CACHE_DIR", cache, 1);
  unsetenv("KDA_KERNEL_DIR");
  return 0;
}

static int teardown(void **state) {
  (void)state;
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  return system(cmd) == 0 ? 0 : -1;
}

static kda_gate_args dense(void) {
  kda_gate_args a = kda_gate_args_default();
  a.g = FAKE_G;
  a.g_dtype = KDA_DTYPE_BF16;
  a.out = FAKE_OUT;
  a.batch = 2;
  a.seq_len = 100;
  a.num_heads = 8;
  a.head_dim = 64;
  a.gate = KDA_GATE_SOFTPLUS;
  a.A_log = FAKE_ALOG;
  return a;
}

static kda_gate_args varlen(void) {
  kda_gate_args a = dense();
  a.batch = 1;
  a.cu_seqlens = FAKE_CU;
  a.cu_seqlens_dtype = KDA_DTYPE_I32;
  a.num_seqs = 3;
  a.chunk_indices = FAKE_IDX;
  a.num_chunks = 4;
  return a;
}

/* The gate of an op: NONE for the plain cumsum, SOFTPLUS for the others. */
static kda_gate_args for_op(kda_gate_args a, kda__op op) {
  if (op == KDA__OP_CHUNK_LOCAL_CUMSUM) {
    a.gate = KDA_GATE_NONE;
    a.A_log = NULL;
  }
  return a;
}

typedef void (*mutate_fn)(kda_gate_args *a);

#define MUT(name, body) \
  static void name(kda_gate_args *a) { body; }
MUT(m_struct_zero, a->struct_size = 0)
MUT(m_struct_huge, a->struct_size = UINT32_MAX)
MUT(m_struct_small, a->struct_size = sizeof *a - 4)
MUT(m_g_null, a->g = NULL)
MUT(m_out_null, a->out = NULL)
MUT(m_in_place, a->out = (void *)a->g)
MUT(m_overlap, a->out = (void *)((const char *)a->g + 64))
MUT(m_g_dtype_neg, a->g_dtype = (kda_dtype)-1)
MUT(m_g_dtype_huge, a->g_dtype = (kda_dtype)INT32_MAX)
MUT(m_g_dtype_int, a->g_dtype = KDA_DTYPE_I32)
MUT(m_out_dtype_f16, a->out_dtype = KDA_DTYPE_F16)
MUT(m_out_dtype_i64, a->out_dtype = KDA_DTYPE_I64)
MUT(m_out_dtype_huge, a->out_dtype = (kda_dtype)12345)
MUT(m_batch_zero, a->batch = 0)
MUT(m_batch_neg, a->batch = -1)
MUT(m_batch_min, a->batch = INT64_MIN)
MUT(m_batch_huge, a->batch = INT64_MAX)
MUT(m_seq_zero, a->seq_len = 0)
MUT(m_seq_neg, a->seq_len = -5)
MUT(m_seq_huge, a->seq_len = INT64_MAX)
MUT(m_product_huge, { a->batch = INT64_C(1) << 20; a->seq_len = INT64_C(1) << 20; })
MUT(m_product_wraps, { a->batch = INT64_C(3) << 61 >> 1; a->seq_len = 4; })
MUT(m_heads_zero, a->num_heads = 0)
MUT(m_heads_neg, a->num_heads = -1)
MUT(m_heads_over, a->num_heads = KDA_MAX_HEADS + 1)
MUT(m_heads_huge, a->num_heads = INT32_MAX)
MUT(m_heads_min, a->num_heads = INT32_MIN)
MUT(m_dim_zero, a->head_dim = 0)
MUT(m_dim_neg, a->head_dim = -64)
MUT(m_dim_over, a->head_dim = KDA_MAX_HEAD_DIM + 1)
MUT(m_dim_huge, a->head_dim = INT32_MAX)
MUT(m_gate_neg, a->gate = (kda_gate_kind)-1)
MUT(m_gate_huge, a->gate = (kda_gate_kind)INT32_MAX)

/* Rejected by every op. */
static const mutate_fn any_op[] = {
    m_struct_zero, m_struct_huge, m_struct_small, m_g_null,       m_out_null,      m_in_place,
    m_overlap,     m_g_dtype_neg, m_g_dtype_huge, m_g_dtype_int,  m_out_dtype_f16, m_out_dtype_i64,
    m_out_dtype_huge, m_batch_zero, m_batch_neg,  m_batch_min,    m_batch_huge,    m_seq_zero,
    m_seq_neg,     m_seq_huge,    m_product_huge, m_product_wraps, m_heads_zero,   m_heads_neg,
    m_heads_over,  m_heads_huge,  m_heads_min,    m_dim_zero,     m_dim_neg,       m_dim_over,
    m_dim_huge,    m_gate_neg,    m_gate_huge};

MUT(m_chunk_zero, a->chunk_size = 0)
MUT(m_chunk_neg, a->chunk_size = -64)
MUT(m_chunk_small, a->chunk_size = 8)
MUT(m_chunk_odd, a->chunk_size = 48)
MUT(m_chunk_big, a->chunk_size = 512)
MUT(m_chunk_huge, a->chunk_size = INT32_MAX)
MUT(m_chunk_min, a->chunk_size = INT32_MIN)
MUT(m_idx_without_cu, a->chunk_indices = FAKE_IDX)
MUT(m_count_without_cu, a->num_chunks_device = FAKE_IDX)

/* Rejected by the cumsum ops (kda_gate ignores chunk and varlen fields). */
static const mutate_fn cumsum_ops[] = {m_chunk_zero,  m_chunk_neg,  m_chunk_small,
                                       m_chunk_odd,   m_chunk_big,  m_chunk_huge,
                                       m_chunk_min,   m_idx_without_cu, m_count_without_cu};

MUT(v_batch_two, a->batch = 2)
MUT(v_dtype_f32, a->cu_seqlens_dtype = KDA_DTYPE_F32)
MUT(v_dtype_huge, a->cu_seqlens_dtype = (kda_dtype)INT32_MAX)
MUT(v_seqs_zero, a->num_seqs = 0)
MUT(v_seqs_neg, a->num_seqs = -1)
MUT(v_seqs_huge, a->num_seqs = INT64_MAX)
MUT(v_seqs_int32, a->num_seqs = INT32_MAX)
MUT(v_no_table, a->chunk_indices = NULL)
MUT(v_chunks_neg, a->num_chunks = -1)
MUT(v_chunks_huge, a->num_chunks = INT64_MAX)
MUT(v_chunks_over_capacity, a->num_chunks = (100 + 63) / 64 + 3 + 1)

/* Varlen batches given inconsistently (cumsum ops). */
static const mutate_fn varlen_ops[] = {v_batch_two,  v_dtype_f32, v_dtype_huge, v_seqs_zero,
                                       v_seqs_neg,   v_seqs_huge, v_seqs_int32, v_no_table,
                                       v_chunks_neg, v_chunks_huge, v_chunks_over_capacity};

static const kda__op ops[] = {KDA__OP_GATE_CHUNK_CUMSUM, KDA__OP_CHUNK_LOCAL_CUMSUM, KDA__OP_GATE};

/* The public call of op with a NULL context and the same arguments. */
static kda_status public_call(kda__op op, const kda_gate_args *a) {
  switch (op) {
    case KDA__OP_GATE_CHUNK_CUMSUM:
      return kda_gate_chunk_cumsum(NULL, a, NULL);
    case KDA__OP_CHUNK_LOCAL_CUMSUM:
      return kda_chunk_local_cumsum(NULL, a, NULL);
    default:
      return kda_gate(NULL, a, NULL);
  }
}

static void expect_rejected(kda__op op, kda_gate_args a, size_t i, const char *table) {
  kda__launch_plan plan;
  kda_status st = kda__plan_gate_op(op, &a, &plan);
  if (st == KDA_OK)
    fail_msg("op %d: mutation %zu of %s was accepted", (int)op, i, table);
  assert_true(kda_last_error()[0] != '\0');
  /* Nothing launches: without a context the public call stops first. */
  assert_int_equal(public_call(op, &a), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_layer_gate_fwd(NULL, &a, NULL, 0, NULL), KDA_ERROR_NULL_POINTER);
  /* Offline compilation validates the same way before any NVRTC work
   * (it gives NULL pointers and a missing chunk table stand-ins, so those
   * cases are not errors there). */
  if (a.g != NULL && a.out != NULL && a.struct_size == sizeof a) {
    kda_kernel k = op == KDA__OP_GATE_CHUNK_CUMSUM    ? KDA_KERNEL_GATE_CHUNK_CUMSUM
                   : op == KDA__OP_CHUNK_LOCAL_CUMSUM ? KDA_KERNEL_CHUNK_LOCAL_CUMSUM
                                                      : KDA_KERNEL_GATE;
    double ms = -1;
    if (!(a.cu_seqlens != NULL && a.chunk_indices == NULL))
      assert_int_not_equal(kda_compile_offline(k, &a, 90, &ms), KDA_OK);
  }
}

static void every_bad_gate_argument_is_rejected_before_launch(void **state) {
  (void)state;
  for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
    kda__launch_plan plan;
    kda_gate_args base = for_op(dense(), ops[o]);
    assert_int_equal(kda__plan_gate_op(ops[o], &base, &plan), KDA_OK);
    for (size_t i = 0; i < sizeof any_op / sizeof any_op[0]; i++) {
      kda_gate_args a = base;
      any_op[i](&a);
      expect_rejected(ops[o], a, i, "any_op");
    }
    if (ops[o] == KDA__OP_GATE) continue;
    for (size_t i = 0; i < sizeof cumsum_ops / sizeof cumsum_ops[0]; i++) {
      kda_gate_args a = base;
      cumsum_ops[i](&a);
      expect_rejected(ops[o], a, i, "cumsum_ops");
    }
    kda_gate_args v = for_op(varlen(), ops[o]);
    assert_int_equal(kda__plan_gate_op(ops[o], &v, &plan), KDA_OK);
    for (size_t i = 0; i < sizeof varlen_ops / sizeof varlen_ops[0]; i++) {
      kda_gate_args a = v;
      varlen_ops[i](&a);
      expect_rejected(ops[o], a, i, "varlen_ops");
    }
  }
}

static void gate_op_rejects_the_wrong_activation(void **state) {
  (void)state;
  kda__launch_plan plan;
  kda_gate_args a = dense();
  a.A_log = NULL; /* softplus needs it */
  assert_int_equal(kda__plan_gate_op(KDA__OP_GATE_CHUNK_CUMSUM, &a, &plan), KDA_ERROR_NULL_POINTER);
  a = dense();
  a.gate = KDA_GATE_NONE; /* fused op needs an activation */
  assert_int_equal(kda__plan_gate_op(KDA__OP_GATE_CHUNK_CUMSUM, &a, &plan),
                   KDA_ERROR_INVALID_ARGUMENT);
  a = dense(); /* plain cumsum takes an activated gate */
  assert_int_equal(kda__plan_gate_op(KDA__OP_CHUNK_LOCAL_CUMSUM, &a, &plan),
                   KDA_ERROR_INVALID_ARGUMENT);
  assert_int_equal(kda__plan_gate_op(KDA__OP_GATE, NULL, &plan), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda__plan_gate_op(KDA__OP_GATE, &a, NULL), KDA_ERROR_NULL_POINTER);
}

static void kernel_calls_with_null_everything_return_a_status(void **state) {
  (void)state;
  kda_gate_args a = dense();
  assert_int_equal(kda_gate_chunk_cumsum(NULL, NULL, NULL), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_chunk_local_cumsum(NULL, NULL, NULL), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_gate(NULL, NULL, NULL), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_gate_chunk_cumsum(NULL, &a, NULL), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_layer_gate_fwd(NULL, NULL, NULL, 0, NULL), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_layer_gate_fwd(NULL, &a, (void *)FAKE_OUT, SIZE_MAX, NULL),
                   KDA_ERROR_NULL_POINTER);
  int32_t *out = (int32_t *)(uintptr_t)FAKE_IDX, *count = out + 64;
  assert_int_equal(kda_chunk_indices_build_device(NULL, FAKE_CU, KDA_DTYPE_I32, 2, 100, 64, out,
                                                  8, count, NULL),
                   KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_chunk_indices_build_device(NULL, NULL, (kda_dtype)-1, -1, -1, -1, NULL,
                                                  -1, NULL, NULL),
                   KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_prewarm(NULL, KDA_KERNEL_GATE, &a, 0, NULL), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_prewarm(NULL, (kda_kernel)-1, NULL, -1, NULL), KDA_ERROR_NULL_POINTER);
}

static void context_calls_reject_null_and_bad_options(void **state) {
  (void)state;
  kda_context_destroy(NULL);
  kda_device_info info;
  kda_stats stats;
  assert_int_equal(kda_context_get_device_info(NULL, &info), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_context_get_device_info(NULL, NULL), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_context_get_stats(NULL, &stats), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_context_get_stats(NULL, NULL), KDA_ERROR_NULL_POINTER);
  assert_string_equal(kda_context_db_path(NULL), "");

  /* NULL options are the defaults: a context on a machine with a GPU, a
   * clean refusal on one without (this test runs on both). */
  kda_context *ctx = (kda_context *)(uintptr_t)1;
  kda_status st = kda_context_create(NULL, &ctx);
  if (st == KDA_OK) {
    assert_non_null(ctx);
    kda_context_destroy(ctx);
  } else {
    assert_true(st == KDA_ERROR_NO_DRIVER || st == KDA_ERROR_NO_DEVICE);
    assert_null(ctx);
  }
  kda_options o = kda_options_default();
  assert_int_not_equal(kda_context_create(&o, NULL), KDA_OK);
  const uint32_t sizes[] = {0, 1, UINT32_MAX};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    o = kda_options_default();
    o.struct_size = sizes[i];
    ctx = (kda_context *)(uintptr_t)1;
    assert_int_equal(kda_context_create(&o, &ctx), KDA_ERROR_BAD_OPTIONS);
    assert_null(ctx);
  }
  /* Out-of-range fields: a status whatever the machine has (no driver,
   * no such device, or bad options); never a context. */
  const int32_t devices[] = {-2, -1000, INT32_MIN, INT32_MAX};
  for (size_t i = 0; i < sizeof devices / sizeof devices[0]; i++) {
    o = kda_options_default();
    o.device = devices[i];
    ctx = (kda_context *)(uintptr_t)1;
    assert_int_not_equal(kda_context_create(&o, &ctx), KDA_OK);
    assert_null(ctx);
  }
  o = kda_options_default();
  o.device = INT32_MAX;
  o.tune_mode = INT32_MIN;
  o.log_level = INT32_MAX;
  o.tune_budget_ms = -1e300;
  o.db_path = "";
  o.kernel_dir = "/nonexistent/kda/kernels";
  ctx = (kda_context *)(uintptr_t)1;
  assert_int_not_equal(kda_context_create(&o, &ctx), KDA_OK);
  assert_null(ctx);
}

static void status_and_version_calls_take_any_value(void **state) {
  (void)state;
  const int values[] = {-1, INT32_MIN, INT32_MAX, 1000};
  for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
    assert_string_equal(kda_status_string((kda_status)values[i]), "unknown status");
    assert_non_null(kda_status_name((kda_status)values[i]));
  }
  assert_non_null(kda_version());
  assert_int_equal(kda_version_number(), KDA_VERSION_NUMBER);
  assert_non_null(kda_last_error());
  const int64_t tokens[] = {INT64_MIN, -1, 0, 1, INT64_MAX};
  for (size_t i = 0; i < sizeof tokens / sizeof tokens[0]; i++) {
    int32_t b = kda_token_bucket(tokens[i]);
    assert_true(b >= 0 && b <= 4);
  }
}

static void chunk_capacity_rejects_out_of_range(void **state) {
  (void)state;
  assert_int_equal(kda_chunk_indices_capacity(-1, 1, 64), -1);
  assert_int_equal(kda_chunk_indices_capacity(INT64_MIN, 1, 64), -1);
  assert_int_equal(kda_chunk_indices_capacity(INT64_MAX, 1, 64), -1);
  assert_int_equal(kda_chunk_indices_capacity(100, 0, 64), -1);
  assert_int_equal(kda_chunk_indices_capacity(100, -1, 64), -1);
  assert_int_equal(kda_chunk_indices_capacity(100, INT64_MAX, 64), -1);
  const int32_t chunks[] = {0, -64, 8, 48, 512, INT32_MAX, INT32_MIN};
  for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
    assert_int_equal(kda_chunk_indices_capacity(100, 1, chunks[i]), -1);
    assert_int_equal(kda_layer_workspace_size(100, 1, chunks[i]), 0);
  }
  assert_int_equal(kda_layer_workspace_size(-1, 1, 64), 0);
  assert_int_equal(kda_layer_workspace_size(INT64_MAX, INT64_MAX, 64), 0);
  assert_int_equal(kda_chunk_indices_capacity(0, 1, 64), 1);
}

static void host_chunk_builder_rejects_bad_seqlens(void **state) {
  (void)state;
  int32_t out[64];
  int64_t n = -7;
  const int32_t ok32[] = {0, 10, 100};
  assert_int_equal(kda_chunk_indices_build_host(ok32, KDA_DTYPE_I32, 2, 64, out, 32, &n), KDA_OK);
  assert_int_equal(n, 3);
  /* NULLs */
  assert_int_equal(kda_chunk_indices_build_host(NULL, KDA_DTYPE_I32, 2, 64, out, 32, &n),
                   KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_chunk_indices_build_host(ok32, KDA_DTYPE_I32, 2, 64, NULL, 32, &n),
                   KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_chunk_indices_build_host(ok32, KDA_DTYPE_I32, 2, 64, out, 32, NULL),
                   KDA_ERROR_NULL_POINTER);
  /* dtypes */
  const kda_dtype dts[] = {KDA_DTYPE_F32, KDA_DTYPE_BF16, (kda_dtype)-1, (kda_dtype)INT32_MAX};
  for (size_t i = 0; i < sizeof dts / sizeof dts[0]; i++)
    assert_int_equal(kda_chunk_indices_build_host(ok32, dts[i], 2, 64, out, 32, &n),
                     KDA_ERROR_UNSUPPORTED_DTYPE);
  /* sequence counts (never read past the array: rejected before) */
  const int64_t seqs[] = {0, -1, INT64_MIN, INT64_MAX, INT32_MAX};
  for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; i++)
    assert_int_equal(kda_chunk_indices_build_host(ok32, KDA_DTYPE_I32, seqs[i], 64, out, 32, &n),
                     KDA_ERROR_BAD_SHAPE);
  /* chunk sizes */
  const int32_t chunks[] = {0, -64, 8, 48, 512, INT32_MAX, INT32_MIN};
  for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++)
    assert_int_equal(kda_chunk_indices_build_host(ok32, KDA_DTYPE_I32, 2, chunks[i], out, 32, &n),
                     KDA_ERROR_BAD_CHUNK_SIZE);
  /* cu_seqlens not starting at 0, or decreasing: I32 and I64 */
  const int32_t start32[] = {5, 10, 100}, dec32[] = {0, 100, 10}, neg32[] = {0, -1, 10};
  const int32_t drop32[] = {0, INT32_MAX, INT32_MIN};
  assert_int_equal(kda_chunk_indices_build_host(start32, KDA_DTYPE_I32, 2, 64, out, 32, &n),
                   KDA_ERROR_BAD_SEQLENS);
  assert_int_equal(kda_chunk_indices_build_host(dec32, KDA_DTYPE_I32, 2, 64, out, 32, &n),
                   KDA_ERROR_BAD_SEQLENS);
  assert_int_equal(kda_chunk_indices_build_host(neg32, KDA_DTYPE_I32, 2, 64, out, 32, &n),
                   KDA_ERROR_BAD_SEQLENS);
  assert_int_equal(kda_chunk_indices_build_host(drop32, KDA_DTYPE_I32, 2, 16, out, 32, &n),
                   KDA_ERROR_BUFFER_TOO_SMALL); /* the huge first sequence does not fit */
  const int64_t dec64[] = {0, 64, 63, 200}, start64[] = {-1, 10};
  const int64_t drop64[] = {0, INT64_MAX, INT64_MIN};
  assert_int_equal(kda_chunk_indices_build_host(dec64, KDA_DTYPE_I64, 3, 64, out, 32, &n),
                   KDA_ERROR_BAD_SEQLENS);
  assert_int_equal(kda_chunk_indices_build_host(start64, KDA_DTYPE_I64, 1, 64, out, 32, &n),
                   KDA_ERROR_BAD_SEQLENS);
  assert_int_equal(kda_chunk_indices_build_host(drop64 + 1, KDA_DTYPE_I64, 1, 64, out, 32, &n),
                   KDA_ERROR_BAD_SEQLENS);
  /* Regression: a length near INT64_MAX overflowed the round-up. */
  assert_int_equal(kda_chunk_indices_build_host(drop64, KDA_DTYPE_I64, 2, 16, out, 32, &n),
                   KDA_ERROR_BUFFER_TOO_SMALL);
  const int64_t huge64[] = {0, INT64_MAX};
  assert_int_equal(kda_chunk_indices_build_host(huge64, KDA_DTYPE_I64, 1, 256, out, 32, &n),
                   KDA_ERROR_BUFFER_TOO_SMALL);
  /* capacity zero, negative, too small */
  const int64_t caps[] = {0, -1, INT64_MIN, 2};
  for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++)
    assert_int_equal(kda_chunk_indices_build_host(ok32, KDA_DTYPE_I32, 2, 64, out, caps[i], &n),
                     KDA_ERROR_BUFFER_TOO_SMALL);
  /* Only empty sequences: no rows, even with capacity 0. */
  const int32_t empty32[] = {0, 0, 0};
  assert_int_equal(kda_chunk_indices_build_host(empty32, KDA_DTYPE_I32, 2, 64, out, 0, &n), KDA_OK);
  assert_int_equal(n, 0);
}

static void offline_compilation_rejects_bad_shapes_without_compiling(void **state) {
  (void)state;
  char db[300];
  snprintf(db, sizeof db, "%s/offline.db", g_dir);
  kda_gate_args a = dense();
  double ms = -1;
  assert_int_equal(kda_compile_offline(KDA_KERNEL_GATE, NULL, 90, &ms), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_compile_offline_store(KDA_KERNEL_GATE, NULL, 90, db, &ms),
                   KDA_ERROR_NULL_POINTER);
  /* An in-memory database would drop the cubin on return: refused. */
  ms = -1;
  assert_int_equal(kda_compile_offline_store(KDA_KERNEL_GATE, &a, 90, ":memory:", &ms),
                   KDA_ERROR_INVALID_ARGUMENT);
  assert_non_null(strstr(kda_last_error(), "in-memory"));
  assert_int_equal(kda_compile_offline_store(KDA_KERNEL_GATE, &a, 90, "", &ms),
                   KDA_ERROR_INVALID_ARGUMENT);
  assert_true(ms == -1); /* refused before compiling */
  const int32_t archs[] = {0, -1, 49, 201, INT32_MAX, INT32_MIN};
  for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++) {
    assert_int_equal(kda_compile_offline(KDA_KERNEL_GATE, &a, archs[i], &ms),
                     KDA_ERROR_INVALID_ARGUMENT);
    assert_int_not_equal(kda_compile_offline_store(KDA_KERNEL_GATE, &a, archs[i], db, NULL), KDA_OK);
  }
  const int kernels[] = {-1, 4, 99, INT32_MAX};
  for (size_t i = 0; i < sizeof kernels / sizeof kernels[0]; i++) {
    assert_int_equal(kda_compile_offline((kda_kernel)kernels[i], &a, 90, &ms),
                     KDA_ERROR_INVALID_ARGUMENT);
    assert_int_not_equal(kda_compile_offline_store((kda_kernel)kernels[i], &a, 90, db, &ms), KDA_OK);
  }
  /* Shapes: every "any op" mutation that keeps the pointers set. */
  for (size_t i = 0; i < sizeof any_op / sizeof any_op[0]; i++) {
    kda_gate_args b = dense();
    any_op[i](&b);
    if (b.g == NULL || b.out == NULL) continue; /* offline gives them stand-ins */
    assert_int_not_equal(kda_compile_offline(KDA_KERNEL_GATE_CHUNK_CUMSUM, &b, 90, &ms), KDA_OK);
    assert_int_not_equal(kda_compile_offline_store(KDA_KERNEL_GATE_CHUNK_CUMSUM, &b, 90, db, &ms),
                         KDA_OK);
    assert_int_not_equal(kda_compile_offline_store(KDA_KERNEL_GATE, &b, 90, NULL, NULL), KDA_OK);
  }
  /* Chunk indices: only chunk_size and cu_seqlens_dtype are read. */
  kda_gate_args c = kda_gate_args_default();
  c.chunk_size = 48;
  assert_int_equal(kda_compile_offline(KDA_KERNEL_CHUNK_INDICES, &c, 90, &ms),
                   KDA_ERROR_BAD_CHUNK_SIZE);
  c.chunk_size = 64;
  c.cu_seqlens_dtype = KDA_DTYPE_F32;
  assert_int_equal(kda_compile_offline(KDA_KERNEL_CHUNK_INDICES, &c, 90, &ms),
                   KDA_ERROR_UNSUPPORTED_DTYPE);
  /* Nothing was compiled, so nothing was stored. */
  assert_int_not_equal(access(db, F_OK), 0);
}

/* ------------------------------------------------------------- kda_db */

static int count_record(void *user, const kda_db_record *r) {
  (void)r;
  ++*(int *)user;
  return 0;
}

static void db_calls_reject_null_handles(void **state) {
  (void)state;
  kda_db_record r;
  kda_db_stats s;
  kda_db_filter f = kda_db_filter_default();
  int64_t a = -1, b = -1, c = -1;
  int32_t present = -1;
  kda_gate_args shape = dense();
  kda_db *db = (kda_db *)(uintptr_t)1;
  assert_int_equal(kda_db_open(NULL, 0, NULL), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_db_open(":memory:", UINT32_MAX, &db), KDA_ERROR_INVALID_ARGUMENT);
  assert_null(db);
  assert_int_equal(kda_db_open(":memory:", 1u << 7, &db), KDA_ERROR_INVALID_ARGUMENT);
  kda_db_close(NULL);
  assert_string_equal(kda_db_path(NULL), "");
  assert_string_equal(kda_db_path_rule(NULL), "");
  assert_string_equal(kda_db_mode(NULL), "memory");
  assert_int_equal(kda_db_file_unusable(NULL), 0);
  assert_null(kda_db_pop_warning(NULL));
  assert_int_equal(kda_db_current(NULL), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_db_list(NULL, NULL, count_record, NULL), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_db_list(NULL, &f, NULL, NULL), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_db_show(NULL, "1", &r, NULL, NULL), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_db_stats_get(NULL, &s, NULL, NULL), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_db_export(NULL, NULL, KDA_DB_FORMAT_JSON, stdout), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_db_import(NULL, "x.json", &a, &b, &c), KDA_ERROR_NULL_POINTER);
  assert_true(a == 0 && b == 0 && c == 0);
  a = b = -1;
  assert_int_equal(kda_db_purge(NULL, NULL, KDA_DB_PURGE_RESULTS, 0, NULL, NULL, &a, &b),
                   KDA_ERROR_NULL_POINTER);
  assert_true(a == 0 && b == 0);
  assert_int_equal(kda_db_check_cubins(NULL, 0, NULL, NULL, &a, &b), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_db_load_cubins(NULL, NULL, NULL, NULL, &a, &b), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_db_has_offline_cubin(NULL, KDA_KERNEL_GATE, &shape, 90, &present),
                   KDA_ERROR_NULL_POINTER);
  kda_kernel k;
  assert_int_equal(kda_db_record_shape(NULL, &k, &shape, &a), KDA_ERROR_NULL_POINTER);
  char buf[128];
  assert_int_equal(kda_db_gpu_key(NULL, buf, sizeof buf), -1);
  kda_device_info info;
  memset(&info, 0, sizeof info);
  info.cc_major = INT32_MIN;
  info.sm_count = INT32_MAX;
  info.pci_device_id = -1;
  assert_int_equal(kda_db_gpu_key(&info, NULL, 64), -1);
  assert_int_equal(kda_db_gpu_key(&info, buf, 0), -1);
  assert_int_equal(kda_db_gpu_key(&info, buf, 1), -1);
  assert_true(kda_db_gpu_key(&info, buf, sizeof buf) > 0);
}

static void db_calls_reject_garbage_arguments(void **state) {
  (void)state;
  char path[300];
  snprintf(path, sizeof path, "%s/garbage.db", g_dir);
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(path, 0, &db), KDA_OK);
  assert_string_equal(kda_db_mode(db), "read-write");
  kda_db_record r;
  kda_db_stats s;
  int n = 0;
  int64_t a = -1, b = -1, c = -1;
  int32_t present = -1;

  /* Filters with a struct_size this library does not know. */
  const uint32_t sizes[] = {0, 4, sizeof(kda_db_filter) + 8, UINT32_MAX};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    kda_db_filter f = kda_db_filter_default();
    f.struct_size = sizes[i];
    assert_int_equal(kda_db_list(db, &f, count_record, &n), KDA_ERROR_BAD_OPTIONS);
    assert_int_equal(kda_db_export(db, &f, KDA_DB_FORMAT_CSV, stdout), KDA_ERROR_BAD_OPTIONS);
    assert_int_equal(kda_db_purge(db, &f, KDA_DB_PURGE_RESULTS, 1, NULL, NULL, &a, &b),
                     KDA_ERROR_BAD_OPTIONS);
  }
  /* Filters with extreme values: valid, match nothing here. */
  kda_db_filter f = kda_db_filter_default();
  f.heads = INT32_MIN;
  f.head_dim = INT32_MAX;
  f.chunk = -1;
  f.bucket = INT32_MAX;
  f.older_than_s = INT64_MAX;
  f.gpu = "";
  f.kernel = "";
  assert_int_equal(kda_db_list(db, &f, count_record, &n), KDA_OK);
  f.older_than_s = INT64_MIN;
  assert_int_equal(kda_db_list(db, &f, count_record, &n), KDA_OK);
  assert_int_equal(n, 0);
  assert_int_equal(kda_db_list(db, NULL, NULL, NULL), KDA_ERROR_NULL_POINTER);

  /* show: empty, prefix too short, not a key, huge ids */
  const char *keys[] = {"", "#", "0", "-1", "abc", "zzzzzzzz", "99999999999999999999999999",
                        "#18446744073709551616", "0123456789abcdef0123", "\xff\xfe"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
    assert_int_equal(kda_db_show(db, keys[i], &r, NULL, NULL), KDA_ERROR_INVALID_ARGUMENT);
  assert_int_equal(kda_db_show(db, NULL, &r, NULL, NULL), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_db_show(db, "1", NULL, NULL, NULL), KDA_ERROR_NULL_POINTER);

  assert_int_equal(kda_db_stats_get(db, NULL, NULL, NULL), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_db_stats_get(db, &s, NULL, NULL), KDA_OK);

  const int formats[] = {-1, 2, INT32_MAX};
  for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
    assert_int_equal(kda_db_export(db, NULL, (kda_db_format)formats[i], stdout),
                     KDA_ERROR_INVALID_ARGUMENT);
  assert_int_equal(kda_db_export(db, NULL, KDA_DB_FORMAT_JSON, NULL), KDA_ERROR_NULL_POINTER);

  /* import: missing file, a folder, an empty file, not JSON, NUL bytes */
  assert_int_equal(kda_db_import(db, NULL, &a, &b, &c), KDA_ERROR_NULL_POINTER);
  char file[320];
  snprintf(file, sizeof file, "%s/nope.json", g_dir);
  assert_int_equal(kda_db_import(db, file, &a, &b, &c), KDA_ERROR_INVALID_ARGUMENT);
  assert_int_equal(kda_db_import(db, g_dir, &a, &b, &c), KDA_ERROR_INVALID_ARGUMENT);
  assert_int_equal(kda_db_import(db, "", NULL, NULL, NULL), KDA_ERROR_INVALID_ARGUMENT);
  static const char *bodies[] = {"", "{", "[]", "null", "{\"format\": 1}", "\"kda-tune-export\"",
                                 "{\"format\": \"kda-tune-export\", \"version\": 1}",
                                 "{\"format\": \"kda-tune-export\", \"version\": 1, \"results\": [1]}"};
  for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
    FILE *out = fopen(file, "w");
    assert_non_null(out);
    fputs(bodies[i], out);
    fclose(out);
    assert_int_equal(kda_db_import(db, file, &a, &b, &c), KDA_ERROR_INVALID_ARGUMENT);
    assert_true(a == 0 && b == 0 && c == 0);
  }
  /* Regression: a file with NUL bytes leaked its text. */
  FILE *out = fopen(file, "wb");
  assert_non_null(out);
  fwrite("{\"format\"\0\0", 1, 11, out);
  fclose(out);
  assert_int_equal(kda_db_import(db, file, &a, &b, &c), KDA_ERROR_INVALID_ARGUMENT);
  /* Regression: integers far outside int64 (undefined conversions before). */
  out = fopen(file, "w");
  assert_non_null(out);
  fputs("{\"format\": \"kda-tune-export\", \"version\": 1, \"results\": [{\"gpu_key\": \"g\", "
        "\"kernel\": \"gate_cumsum\", \"spec\": \"s\", \"bucket\": 1e300, \"template_hash\": "
        "\"t\", \"space_hash\": \"h\", \"config\": \"c\", \"median_us\": 2, \"config_id\": "
        "-1e300, \"candidates\": -nan, \"created_at\": 1e19}]}",
        out);
  fclose(out);
  assert_int_equal(kda_db_import(db, file, &a, &b, &c), KDA_ERROR_INVALID_ARGUMENT);

  /* Regression: a key longer than kda_db_record holds exported truncated,
   * under another key. */
  out = fopen(file, "w");
  assert_non_null(out);
  fprintf(out,
          "{\"format\": \"kda-tune-export\", \"version\": 1, \"results\": [{\"gpu_key\": "
          "\"g\", \"kernel\": \"gate_cumsum\", \"spec\": \"s\", \"bucket\": 1, "
          "\"template_hash\": \"t\", \"space_hash\": \"%0100d\", \"config\": \"c\", "
          "\"median_us\": 2}]}",
          7);
  fclose(out);
  assert_int_equal(kda_db_import(db, file, &a, &b, &c), KDA_ERROR_INVALID_ARGUMENT);
  assert_non_null(strstr(kda_last_error(), "longer than a record holds"));
  assert_int_equal(a, 0);

  /* purge: unknown bits */
  const uint32_t whats[] = {1u << 2, UINT32_MAX};
  for (size_t i = 0; i < sizeof whats / sizeof whats[0]; i++)
    assert_int_equal(kda_db_purge(db, NULL, whats[i], 0, NULL, NULL, &a, &b),
                     KDA_ERROR_INVALID_ARGUMENT);
  assert_int_equal(kda_db_purge(db, NULL, 0, INT32_MIN, NULL, NULL, NULL, NULL), KDA_OK);

  assert_int_equal(kda_db_check_cubins(db, INT32_MAX, NULL, NULL, NULL, NULL), KDA_OK);
  assert_int_equal(kda_db_load_cubins(db, NULL, NULL, NULL, &a, &b), KDA_ERROR_NULL_POINTER);

  /* has_offline_cubin: NULLs, unknown kernel, bad shape */
  kda_gate_args shape = dense();
  assert_int_equal(kda_db_has_offline_cubin(db, KDA_KERNEL_GATE, NULL, 90, &present),
                   KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_db_has_offline_cubin(db, KDA_KERNEL_GATE, &shape, 90, NULL),
                   KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_db_has_offline_cubin(db, (kda_kernel)77, &shape, 90, &present),
                   KDA_ERROR_INVALID_ARGUMENT);
  shape.head_dim = INT32_MAX;
  assert_int_not_equal(kda_db_has_offline_cubin(db, KDA_KERNEL_GATE, &shape, 90, &present), KDA_OK);
  assert_int_equal(present, 0);

  /* record_shape: a record of garbage (no NUL anywhere), or a spec that is
   * not one this library writes. */
  kda_kernel k;
  int64_t tokens;
  memset(&r, 'A', sizeof r);
  assert_int_equal(kda_db_record_shape(&r, &k, &shape, &tokens), KDA_ERROR_INVALID_ARGUMENT);
  memset(&r, 0, sizeof r);
  const char *specs[] = {"", "gate_cumsum ", "gate_cumsum in=bf16 out=f32 idx=i32 H=-1 K=1 chunk=64",
                         "gate_cumsum in=x out=f32 idx=i32 H=1 K=1 chunk=64 cumsum=1 gate=1 bias=0 "
                         "alog=0 scale=0 reverse=0 varlen=0",
                         "gate_cumsum in=bf16 out=f32 idx=i32 H=1 K=1 chunk=64 cumsum=1 gate=9 "
                         "bias=0 alog=0 scale=0 reverse=0 varlen=0"};
  for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
    snprintf(r.spec, sizeof r.spec, "%s", specs[i]);
    r.bucket = INT64_MIN;
    assert_int_equal(kda_db_record_shape(&r, &k, &shape, &tokens), KDA_ERROR_INVALID_ARGUMENT);
  }
  assert_int_equal(kda_db_record_shape(&r, NULL, &shape, &tokens), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_db_record_shape(&r, &k, NULL, &tokens), KDA_ERROR_NULL_POINTER);
  kda_db_close(db);

  /* A read-only handle refuses writes with a status. */
  assert_int_equal(kda_db_open(path, KDA_DB_READ_ONLY, &db), KDA_OK);
  snprintf(file, sizeof file, "%s/empty.json", g_dir);
  out = fopen(file, "w");
  assert_non_null(out);
  fputs("{\"format\": \"kda-tune-export\", \"version\": 1, \"results\": []}", out);
  fclose(out);
  assert_int_equal(kda_db_import(db, file, &a, &b, &c), KDA_ERROR_READ_ONLY);
  assert_int_equal(kda_db_purge(db, NULL, KDA_DB_PURGE_RESULTS, 0, NULL, NULL, &a, &b),
                   KDA_ERROR_READ_ONLY);
  assert_int_equal(kda_db_check_cubins(db, 1, NULL, NULL, &a, &b), KDA_ERROR_READ_ONLY);
  kda_db_close(db);
}

static void db_open_survives_hostile_paths(void **state) {
  (void)state;
  char long_path[5000];
  memset(long_path, 'x', sizeof long_path - 1);
  long_path[0] = '/';
  long_path[sizeof long_path - 1] = '\0';
  char sub[300];
  snprintf(sub, sizeof sub, "%s/no/such/folder/t.db", g_dir);
  const char *paths[] = {NULL, "", ":memory:", long_path, g_dir, sub};
  const uint32_t flags[] = {0, KDA_DB_READ_ONLY, KDA_DB_VERIFY, KDA_DB_READ_ONLY | KDA_DB_VERIFY};
  for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
    for (size_t f = 0; f < sizeof flags / sizeof flags[0]; f++) {
      kda_db *db = NULL;
      assert_int_equal(kda_db_open(paths[p], flags[f], &db), KDA_OK);
      assert_non_null(db);
      int n = 0;
      kda_db_stats s;
      assert_int_equal(kda_db_list(db, NULL, count_record, &n), KDA_OK);
      assert_int_equal(kda_db_stats_get(db, &s, NULL, NULL), KDA_OK);
      kda_db_pop_warning(db);
      kda_db_close(db);
    }
  }
}

/* Regression: a file whose user_version is negative indexed before the
 * migration table; it is now treated as damaged (moved aside when the
 * handle may write, not read otherwise). */
static void db_with_negative_schema_version_is_damaged(void **state) {
  (void)state;
  char path[300];
  snprintf(path, sizeof path, "%s/negative.db", g_dir);
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(path, 0, &db), KDA_OK);
  kda_db_close(db);
  char cmd[400];
  snprintf(cmd, sizeof cmd, "sqlite3 '%s' 'PRAGMA user_version=-3' 2>/dev/null", path);
  if (system(cmd) != 0) {
    /* No sqlite3 shell: write the header field (offset 60, big-endian). */
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    static const unsigned char v[4] = {0xff, 0xff, 0xff, 0xfd};
    assert_int_equal(fseek(f, 60, SEEK_SET), 0);
    assert_int_equal(fwrite(v, 1, 4, f), 4);
    fclose(f);
  }
  assert_int_equal(kda_db_open(path, KDA_DB_READ_ONLY, &db), KDA_OK);
  kda_db_stats s;
  assert_int_equal(kda_db_stats_get(db, &s, NULL, NULL), KDA_OK);
  assert_true(s.schema_version <= 0);
  kda_db_close(db);
  assert_int_equal(kda_db_open(path, 0, &db), KDA_OK);
  assert_string_equal(kda_db_mode(db), "read-write");
  const char *w = kda_db_pop_warning(db);
  assert_non_null(w);
  assert_non_null(strstr(w, "damaged"));
  assert_int_equal(kda_db_stats_get(db, &s, NULL, NULL), KDA_OK);
  kda_db_versions v;
  assert_int_equal(kda_db_current(&v), KDA_OK);
  assert_int_equal(s.schema_version, v.schema_version);
  kda_db_close(db);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(every_bad_gate_argument_is_rejected_before_launch),
      cmocka_unit_test(gate_op_rejects_the_wrong_activation),
      cmocka_unit_test(kernel_calls_with_null_everything_return_a_status),
      cmocka_unit_test(context_calls_reject_null_and_bad_options),
      cmocka_unit_test(status_and_version_calls_take_any_value),
      cmocka_unit_test(chunk_capacity_rejects_out_of_range),
      cmocka_unit_test(host_chunk_builder_rejects_bad_seqlens),
      cmocka_unit_test(offline_compilation_rejects_bad_shapes_without_compiling),
      cmocka_unit_test(db_calls_reject_null_handles),
      cmocka_unit_test(db_calls_reject_garbage_arguments),
      cmocka_unit_test(db_open_survives_hostile_paths),
      cmocka_unit_test(db_with_negative_schema_version_is_damaged),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
