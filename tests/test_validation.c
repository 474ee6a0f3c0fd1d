/* Every host-side validation path: each bad argument gets its own status and
 * a message naming the field, before anything touches a device. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gate_args.h"
#include "kda/kda.h"
#include "tuner.h"

/* Fake, well-aligned, non-overlapping device addresses: planning never
 * dereferences them. */
#define FAKE_G ((const void *)(uintptr_t)0x100000000ull)
#define FAKE_OUT ((void *)(uintptr_t)0x900000000ull)
#define FAKE_ALOG ((const float *)(uintptr_t)0x1100000000ull)

static kda_gate_args good(void) {
  kda_gate_args a = kda_gate_args_default();
  a.g = FAKE_G;
  a.g_dtype = KDA_DTYPE_BF16;
  a.out = FAKE_OUT;
  a.batch = 2;
  a.seq_len = 100;
  a.num_heads = 32;
  a.head_dim = 128;
  a.gate = KDA_GATE_SOFTPLUS;
  a.A_log = FAKE_ALOG;
  return a;
}

static kda_status plan(kda__op op, const kda_gate_args *a) {
  kda__launch_plan p;
  return kda__plan_gate_op(op, a, &p);
}

#define EXPECT(op, a, status, text)                                  \
  do {                                                               \
    assert_int_equal(plan((op), &(a)), (status));                    \
    assert_non_null(strstr(kda_last_error(), (text)));               \
  } while (0)

static void valid_arguments_plan_a_launch(void **state) {
  (void)state;
  kda_gate_args a = good();
  kda__launch_plan p;
  assert_int_equal(kda__plan_gate_op(KDA__OP_GATE_CHUNK_CUMSUM, &a, &p), KDA_OK);
  assert_int_equal(p.num_chunks, 4); /* 2 x ceil(100/64) */
  assert_int_equal(p.chunks_per_seq, 2);
  assert_int_equal(p.spec.cumsum, 1);
  assert_int_equal(p.spec.has_alog, 1);
  assert_int_equal(p.spec.has_bias, 0);
  assert_true(p.grid > 0);
}

static void null_pointers_are_rejected(void **state) {
  (void)state;
  kda__launch_plan p;
  assert_int_equal(kda__plan_gate_op(KDA__OP_GATE, NULL, &p), KDA_ERROR_NULL_POINTER);
  kda_gate_args a = good();
  a.g = NULL;
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_NULL_POINTER, "g is NULL");
  a = good();
  a.out = NULL;
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_NULL_POINTER, "out is NULL");
  a = good();
  a.A_log = NULL;
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_NULL_POINTER, "A_log");
}

static void struct_size_must_match(void **state) {
  (void)state;
  kda_gate_args a = good();
  a.struct_size = 8;
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_BAD_OPTIONS, "struct_size");
}

static void unsupported_dtypes_are_rejected(void **state) {
  (void)state;
  kda_gate_args a = good();
  a.g_dtype = KDA_DTYPE_I32;
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_UNSUPPORTED_DTYPE, "g_dtype");
  a = good();
  a.out_dtype = KDA_DTYPE_F16;
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_UNSUPPORTED_DTYPE, "out_dtype");
  a = good();
  a.cu_seqlens = FAKE_ALOG;
  a.batch = 1;
  a.num_seqs = 1;
  a.chunk_indices = (const int32_t *)FAKE_ALOG;
  a.cu_seqlens_dtype = KDA_DTYPE_F32;
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_UNSUPPORTED_DTYPE, "cu_seqlens_dtype");
}

static void bad_shapes_are_rejected(void **state) {
  (void)state;
  kda_gate_args a = good();
  a.batch = 0;
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_BAD_SHAPE, "batch");
  a = good();
  a.seq_len = -5;
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_BAD_SHAPE, "seq_len");
  a = good();
  a.num_heads = 0;
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_BAD_SHAPE, "num_heads");
  a = good();
  a.num_heads = KDA_MAX_HEADS + 1;
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_BAD_SHAPE, "num_heads");
  a.num_heads = KDA_MAX_HEADS; /* the limit itself is a shape */
  assert_int_equal(plan(KDA__OP_GATE_CHUNK_CUMSUM, &a), KDA_OK);
  a = good();
  a.head_dim = 0;
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_BAD_SHAPE, "head_dim");
  a = good();
  a.batch = INT64_C(1) << 40;
  a.seq_len = INT64_C(1) << 30;
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_BAD_SHAPE, "too large");
}

static void head_dim_above_maximum_is_unsupported(void **state) {
  (void)state;
  kda_gate_args a = good();
  a.head_dim = KDA_MAX_HEAD_DIM + 1;
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_UNSUPPORTED_HEAD_DIM, "head_dim=257");
  a.head_dim = KDA_MAX_HEAD_DIM;
  assert_int_equal(plan(KDA__OP_GATE_CHUNK_CUMSUM, &a), KDA_OK);
}

/* A shape within the element limits can still need more than 2^31 - 1
 * blocks: 2^36 tokens of one channel at chunk 16 are 2^32 chunks. */
static void grid_past_the_launch_limit_is_refused(void **state) {
  (void)state;
  kda_gate_args a = good();
  a.batch = 1;
  a.seq_len = INT64_C(1) << 36;
  a.num_heads = 1;
  a.head_dim = 1;
  a.chunk_size = 16;
  a.out = (void *)((uintptr_t)FAKE_G + ((uintptr_t)1 << 37)); /* right after g's 2^37 bytes */
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_BAD_SHAPE, "grid limit");
  a.seq_len = INT64_C(1) << 30; /* 2^26 chunks: fine */
  assert_int_equal(plan(KDA__OP_GATE_CHUNK_CUMSUM, &a), KDA_OK);
}

/* A chunk plan replaces the table: with it, chunk_indices, num_chunks,
 * num_chunks_device and cu_seqlens_host must each be left NULL / 0 (one
 * set alone is refused), and batch must be 1. Planning does not read the
 * plan, so a fake address stands for it. */
static void chunk_plan_excludes_the_table_fields(void **state) {
  (void)state;
  kda_gate_args a = good();
  a.batch = 1;
  a.num_seqs = 3;
  a.chunk_plan = (const kda_chunk_plan *)FAKE_ALOG;
  assert_int_equal(plan(KDA__OP_GATE_CHUNK_CUMSUM, &a), KDA_OK);
  for (int field = 0; field < 4; ++field) {
    kda_gate_args b = a;
    if (field == 0) b.chunk_indices = (const int32_t *)FAKE_ALOG;
    if (field == 1) b.num_chunks = 5;
    if (field == 2) b.num_chunks_device = (const int32_t *)FAKE_ALOG;
    if (field == 3) b.cu_seqlens_host = FAKE_ALOG;
    EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, b, KDA_ERROR_INVALID_ARGUMENT, "chunk_plan replaces");
  }
  a.batch = 2;
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_BAD_SHAPE, "batch must be 1");
}

static void chunk_size_must_be_a_power_of_two_in_range(void **state) {
  (void)state;
  const int32_t bad[] = {0, -64, 8, 48, 100, 512};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    kda_gate_args a = good();
    a.chunk_size = bad[i];
    EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_BAD_CHUNK_SIZE, "chunk_size");
  }
  /* The elementwise gate ignores the chunk size. */
  kda_gate_args a = good();
  a.chunk_size = 48;
  assert_int_equal(plan(KDA__OP_GATE, &a), KDA_OK);
}

static void gate_kind_must_fit_the_kernel(void **state) {
  (void)state;
  kda_gate_args a = good();
  EXPECT(KDA__OP_CHUNK_LOCAL_CUMSUM, a, KDA_ERROR_INVALID_ARGUMENT, "KDA_GATE_NONE");
  a.gate = KDA_GATE_NONE;
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_INVALID_ARGUMENT, "SOFTPLUS");
  EXPECT(KDA__OP_GATE, a, KDA_ERROR_INVALID_ARGUMENT, "SOFTPLUS");
  a.gate = (kda_gate_kind)7;
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_INVALID_ARGUMENT, "kda_gate_kind");
  /* Lower bound without A_log is legal. */
  a = good();
  a.gate = KDA_GATE_LOWER_BOUND;
  a.A_log = NULL;
  assert_int_equal(plan(KDA__OP_GATE_CHUNK_CUMSUM, &a), KDA_OK);
}

/* g holds 2*100*32*128 bf16 (G_BYTES), out as many f32 (OUT_BYTES): the
 * check is exact at both ends, so buffers side by side in one allocation
 * (as a caching allocator hands them out) are accepted. */
static void overlapping_output_is_rejected(void **state) {
  (void)state;
  enum { G_BYTES = 2 * 100 * 32 * 128 * 2, OUT_BYTES = 2 * G_BYTES };
  kda_gate_args a = good();
  a.out = (void *)((uintptr_t)FAKE_G + 64);
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_INVALID_ARGUMENT, "overlaps");
  a.out = (void *)((uintptr_t)FAKE_G + G_BYTES - 16); /* g's last 16 bytes */
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_INVALID_ARGUMENT, "overlaps");
  a.out = (void *)((uintptr_t)FAKE_G - OUT_BYTES + 16); /* out's last 16 bytes are g's first */
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_INVALID_ARGUMENT, "overlaps");
  a.out = (void *)((uintptr_t)FAKE_G + G_BYTES); /* right after g */
  assert_int_equal(plan(KDA__OP_GATE_CHUNK_CUMSUM, &a), KDA_OK);
  a.out = (void *)((uintptr_t)FAKE_G - OUT_BYTES); /* right before g */
  assert_int_equal(plan(KDA__OP_GATE_CHUNK_CUMSUM, &a), KDA_OK);
}

static void varlen_arguments_are_checked(void **state) {
  (void)state;
  kda_gate_args a = good();
  a.cu_seqlens = FAKE_ALOG;
  a.num_seqs = 3;
  a.chunk_indices = (const int32_t *)FAKE_ALOG;
  a.num_chunks = 3;
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_BAD_SHAPE, "batch must be 1");
  a.batch = 1;
  a.chunk_indices = NULL;
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_NULL_POINTER, "chunk_indices");
  a.chunk_indices = (const int32_t *)FAKE_ALOG;
  a.num_seqs = 0;
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_BAD_SHAPE, "num_seqs");
  a.num_seqs = 3;
  a.num_chunks = 1000; /* above ceil(100/64) + 3 */
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_BAD_SHAPE, "num_chunks");
  a.num_chunks = -1;
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_BAD_SHAPE, "num_chunks");
  a.num_chunks = 5;
  assert_int_equal(plan(KDA__OP_GATE_CHUNK_CUMSUM, &a), KDA_OK);
  /* A table without cu_seqlens is a caller bug. */
  a = good();
  a.chunk_indices = (const int32_t *)FAKE_ALOG;
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_INVALID_ARGUMENT, "given without cu_seqlens");
}

/* cu_seqlens_host: checked on the host, and a batch of at most
 * KDA_MAX_HOST_ROWS chunks carries its rows in the launch (varlen mode 2),
 * each chunk as row << 8 | (rows - 1), whole chunks one per slot and short
 * ones packed at granules, with no table needed. */
static void host_seqlens_put_small_batches_rows_in_the_launch(void **state) {
  (void)state;
  kda_gate_args a = good();
  a.batch = 1;
  a.seq_len = 300;
  a.cu_seqlens = FAKE_ALOG;
  a.num_seqs = 4;
  const int32_t cu[5] = {0, 70, 70, 199, 300}; /* 70, empty, 129, 101 tokens */
  a.cu_seqlens_host = cu;
  kda__launch_plan p;
  assert_int_equal(kda__plan_gate_op(KDA__OP_GATE_CHUNK_CUMSUM, &a, &p), KDA_OK);
  assert_int_equal(p.spec.varlen, 2);
  assert_int_equal(p.spec.idx_dtype, KDA_DTYPE_I32);
  /* Chunk 64, granules of 8 rows: one slot takes 37 rows (5 granules), 6
   * rows and 1 row; then the four whole chunks, in order. */
  const uint32_t want[] = {263u << 8 | 36, 64u << 8 | 5,   198u << 8 | 0, 0u << 8 | 63,
                           70u << 8 | 63,  134u << 8 | 63, 199u << 8 | 63};
  const uint16_t want_slots[] = {0 | (1 | 1 << 5 | 1 << 6) << 8, 3 | 1 << 8, 4 | 1 << 8,
                                 5 | 1 << 8, 6 | 1 << 8};
  assert_int_equal(p.num_chunks, 5);
  for (int i = 0; i < 7; ++i) assert_int_equal(p.host.rows[i], want[i]);
  for (int i = 0; i < 5; ++i) assert_int_equal(p.host.slots[i], want_slots[i]);
  assert_true(kda__plan_rows_arg(&p) == (const void *)&p.host);
  /* The same with int64 bounds and chunk 128 (granules of 16 rows). */
  const int64_t cu64[5] = {0, 70, 70, 199, 300};
  a.cu_seqlens_host = cu64;
  a.cu_seqlens_dtype = KDA_DTYPE_I64;
  a.chunk_size = 128;
  assert_int_equal(kda__plan_gate_op(KDA__OP_GATE_CHUNK_CUMSUM, &a, &p), KDA_OK);
  assert_int_equal(p.spec.varlen, 2);
  assert_int_equal(p.num_chunks, 3);
  assert_int_equal(p.host.rows[0], 199u << 8 | 100); /* 7 granules, then 1 */
  assert_int_equal(p.host.rows[1], 198u << 8 | 0);
  assert_int_equal(p.host.rows[2], 0u << 8 | 69);
  assert_int_equal(p.host.rows[3], 70u << 8 | 127);
  assert_int_equal(p.host.slots[0], 0 | (1 | 1 << 7) << 8);
  assert_int_equal(p.host.slots[1], 2 | 1 << 8);
  assert_int_equal(p.host.slots[2], 3 | 1 << 8);
  /* Dense and table calls pass a zero word in that parameter. */
  a = good();
  assert_int_equal(kda__plan_gate_op(KDA__OP_GATE_CHUNK_CUMSUM, &a, &p), KDA_OK);
  assert_int_equal(p.spec.varlen, 0);
  assert_int_equal(*(const uint32_t *)kda__plan_rows_arg(&p), 0u);
}

/* Packing, on random batches of every chunk size: every chunk is in exactly
 * one slot, a slot's chunks start at its granule marks in order and each
 * fits before the next mark, and no two slots could have been one (the
 * packing never leaves two slots whose filled granules sum to at most a
 * slot, which first-fit-decreasing guarantees for all but one slot). */
static void host_chunks_pack_into_slots(void **state) {
  (void)state;
  uint32_t seed = 12345;
  for (int trial = 0; trial < 2000; ++trial) {
    const int32_t chunk = 16 << (trial % 5); /* 16 .. 256 */
    const int G = kda__host_granule(chunk), NG = chunk / G;
    seed = seed * 1664525u + 1013904223u;
    const int64_t n = 1 + (int64_t)(seed >> 8) % KDA_MAX_HOST_ROWS;
    uint32_t rows[KDA_MAX_HOST_ROWS];
    uint16_t lens[KDA_MAX_HOST_ROWS];
    for (int64_t i = 0; i < n; ++i) {
      seed = seed * 1664525u + 1013904223u;
      /* Mostly short chunks, some whole ones. */
      lens[i] = (uint16_t)((seed >> 9) % 4 == 0 ? chunk : 1 + (int)((seed >> 12) % (uint32_t)chunk));
      rows[i] = (uint32_t)(i * 1000 + trial);
    }
    kda__host_plan hp;
    memset(&hp, 0xff, sizeof hp);
    const int64_t slots = kda__pack_host_chunks(rows, lens, n, chunk, &hp);
    assert_true(slots >= 1 && slots <= n);
    int seen[KDA_MAX_HOST_ROWS] = {0};
    int64_t entries = 0;
    int filled[KDA_MAX_HOST_ROWS];
    for (int64_t b = 0; b < slots; ++b) {
      const unsigned first = hp.slots[b] & 255u, starts = hp.slots[b] >> 8;
      assert_int_equal(first, (unsigned)entries); /* slots take consecutive entries */
      assert_true(starts & 1u);
      assert_true(starts < (1u << NG));
      int piece = 0, last_end = 0;
      for (int q = 0; q < NG; ++q) {
        if (!(starts >> q & 1u)) continue;
        int next = q + 1;
        while (next < NG && !(starts >> next & 1u)) ++next;
        const uint32_t e = hp.rows[first + piece];
        const int64_t i = (int64_t)((e >> 8) - (uint32_t)trial) / 1000;
        assert_true(i >= 0 && i < n && rows[i] == e >> 8);
        assert_int_equal((e & 255u) + 1, lens[i]);
        assert_true(lens[i] <= (next - q) * G); /* fits before the next mark */
        assert_int_equal(seen[i], 0);
        seen[i] = 1;
        last_end = q + (lens[i] + G - 1) / G;
        ++piece;
      }
      filled[b] = last_end;
      entries += piece;
    }
    assert_int_equal(entries, n);
    for (int64_t i = 0; i < n; ++i) assert_int_equal(seen[i], 1);
    int loose = 0; /* slots at most half full */
    for (int64_t b = 0; b < slots; ++b) loose += 2 * filled[b] <= NG;
    assert_true(loose <= 1);
  }
}

static void host_seqlens_past_the_row_limit_use_the_table(void **state) {
  (void)state;
  kda_gate_args a = good();
  a.batch = 1;
  a.num_heads = 1;
  a.chunk_size = 16;
  a.cu_seqlens = FAKE_ALOG;
  a.num_seqs = 1;
  int32_t cu[2] = {0, 16 * KDA_MAX_HOST_ROWS};
  a.seq_len = cu[1];
  a.cu_seqlens_host = cu;
  kda__launch_plan p;
  assert_int_equal(kda__plan_gate_op(KDA__OP_GATE_CHUNK_CUMSUM, &a, &p), KDA_OK);
  assert_int_equal(p.spec.varlen, 2); /* exactly the limit */
  assert_int_equal(p.num_chunks, KDA_MAX_HOST_ROWS);
  cu[1] = a.seq_len = 16 * KDA_MAX_HOST_ROWS + 1; /* one more chunk */
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_NULL_POINTER, "cu_seqlens_host for a batch of at most");
  a.chunk_indices = (const int32_t *)FAKE_ALOG;
  a.num_chunks = KDA_MAX_HOST_ROWS + 1;
  assert_int_equal(kda__plan_gate_op(KDA__OP_GATE_CHUNK_CUMSUM, &a, &p), KDA_OK);
  assert_int_equal(p.spec.varlen, 1);
  assert_int_equal(p.num_chunks, KDA_MAX_HOST_ROWS + 1);
  /* Rows at or past 2^24 do not pack: the table again. */
  a.chunk_size = 256;
  cu[1] = a.seq_len = (1 << 24) + 10;
  a.num_chunks = (a.seq_len + 255) / 256 + 1;
  assert_int_equal(kda__plan_gate_op(KDA__OP_GATE_CHUNK_CUMSUM, &a, &p), KDA_OK);
  assert_int_equal(p.spec.varlen, 1);
}

static void bad_host_seqlens_are_rejected(void **state) {
  (void)state;
  kda_gate_args a = good();
  a.batch = 1;
  a.seq_len = 300;
  a.cu_seqlens = FAKE_ALOG;
  a.num_seqs = 3;
  int32_t cu[4] = {1, 70, 199, 300};
  a.cu_seqlens_host = cu;
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_BAD_SEQLENS, "cu_seqlens_host[0] is 1");
  cu[0] = 0;
  cu[2] = 60; /* decreasing */
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_BAD_SEQLENS, "cu_seqlens_host[2] = 60");
  cu[2] = 350; /* past seq_len */
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_BAD_SEQLENS, "cu_seqlens_host[2] = 350");
  cu[2] = 199;
  cu[3] = 299; /* ends short of seq_len */
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_BAD_SEQLENS, "not seq_len = 300");
  /* Checked even when the batch then uses the table. */
  a.chunk_indices = (const int32_t *)FAKE_ALOG;
  a.num_chunks = 5;
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_BAD_SEQLENS, "not seq_len = 300");
  cu[3] = 300;
  assert_int_equal(plan(KDA__OP_GATE_CHUNK_CUMSUM, &a), KDA_OK);
  /* Host bounds without device ones are a caller bug. */
  a = good();
  a.cu_seqlens_host = cu;
  EXPECT(KDA__OP_GATE_CHUNK_CUMSUM, a, KDA_ERROR_INVALID_ARGUMENT, "cu_seqlens_host given without");
}

/* A shape description (kda_prewarm, kda_compile_offline): a non-NULL
 * cu_seqlens_host is a request for the host-rows specialization, not read. */
static void shape_descriptions_ask_for_host_rows(void **state) {
  (void)state;
  kda_gate_args a = good();
  a.g = NULL;
  a.out = NULL;
  a.batch = 1;
  a.seq_len = 8192;
  a.num_seqs = 8;
  a.cu_seqlens_host = (const void *)(uintptr_t)1;
  kda__spec s;
  assert_int_equal(kda__offline_spec(KDA_KERNEL_GATE_CHUNK_CUMSUM, &a, &s), KDA_OK);
  assert_int_equal(s.varlen, 2);
  a.seq_len = 65536; /* 1024 chunks: the table's specialization */
  assert_int_equal(kda__offline_spec(KDA_KERNEL_GATE_CHUNK_CUMSUM, &a, &s), KDA_OK);
  assert_int_equal(s.varlen, 1);
  a.seq_len = 8192;
  a.cu_seqlens_host = NULL;
  assert_int_equal(kda__offline_spec(KDA_KERNEL_GATE_CHUNK_CUMSUM, &a, &s), KDA_OK);
  assert_int_equal(s.varlen, 1);
}

static void vector_width_follows_pointer_alignment(void **state) {
  (void)state;
  kda_gate_args a = good();
  a.g = (const void *)((uintptr_t)FAKE_G + 4); /* 4-byte aligned bf16 */
  kda__launch_plan p;
  assert_int_equal(kda__plan_gate_op(KDA__OP_GATE_CHUNK_CUMSUM, &a, &p), KDA_OK);
  assert_int_equal(p.spec.cfg.vec, 2);
  assert_int_equal(kda__config_check(&p.spec), KDA_OK);
  /* out bounds it too: f32 at 8 bytes past an aligned address takes
   * 8-byte stores, two floats. */
  a = good();
  a.out = (void *)((uintptr_t)FAKE_OUT + 8);
  assert_int_equal(kda__plan_gate_op(KDA__OP_GATE_CHUNK_CUMSUM, &a, &p), KDA_OK);
  assert_int_equal(p.spec.cfg.vec, 2);
  a.out = (void *)((uintptr_t)FAKE_OUT + 4);
  assert_int_equal(kda__plan_gate_op(KDA__OP_GATE_CHUNK_CUMSUM, &a, &p), KDA_OK);
  assert_int_equal(p.spec.cfg.vec, 1);
  assert_int_equal(kda__config_check(&p.spec), KDA_OK);
}

/* An element at an address its type is not aligned for (a bf16 g one byte
 * in, an f32 out two) would fault the kernel and lose the CUDA context:
 * every entry that plans a call refuses it, offline compilation and
 * kda_db_lookup included (the shape descriptions of prewarm read g and out
 * as such addresses). */
static void elements_misaligned_for_their_type_are_refused(void **state) {
  (void)state;
  kda__launch_plan p;
  kda_gate_args a = good();
  a.g = (const void *)((uintptr_t)FAKE_G + 1); /* bf16 */
  assert_int_equal(kda__plan_gate_op(KDA__OP_GATE_CHUNK_CUMSUM, &a, &p), KDA_ERROR_INVALID_ARGUMENT);
  assert_non_null(strstr(kda_last_error(), "aligned for their element types (2 and 4 bytes)"));
  a = good();
  a.out = (void *)((uintptr_t)FAKE_OUT + 2); /* f32 */
  assert_int_equal(kda__plan_gate_op(KDA__OP_GATE, &a, &p), KDA_ERROR_INVALID_ARGUMENT);
  a.out_dtype = KDA_DTYPE_BF16; /* 2 bytes in is a bf16 element */
  assert_int_equal(kda__plan_gate_op(KDA__OP_GATE, &a, &p), KDA_OK);
  a = good();
  a.g = (const void *)(uintptr_t)3; /* a shape's view offset, as prewarm reads it */
  a.out = NULL;
  assert_int_equal(kda_compile_offline(KDA_KERNEL_GATE_CHUNK_CUMSUM, &a, 90, NULL),
                   KDA_ERROR_INVALID_ARGUMENT);
}

static void public_calls_reject_null_context(void **state) {
  (void)state;
  kda_gate_args a = good();
  assert_int_equal(kda_gate_chunk_cumsum(NULL, &a, NULL), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_chunk_local_cumsum(NULL, &a, NULL), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_gate(NULL, &a, NULL), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_layer_gate_fwd(NULL, &a, NULL, 0, NULL), KDA_ERROR_NULL_POINTER);
  int32_t buf[4];
  assert_int_equal(kda_chunk_indices_build_device(NULL, FAKE_G, KDA_DTYPE_I32, 1, 10, 64, buf, 2,
                                                  buf, NULL),
                   KDA_ERROR_NULL_POINTER);
  kda_stats s = {.struct_size = sizeof s};
  assert_int_equal(kda_context_get_stats(NULL, &s), KDA_ERROR_NULL_POINTER);
  kda_device_info d = {.struct_size = sizeof d};
  assert_int_equal(kda_context_get_device_info(NULL, &d), KDA_ERROR_NULL_POINTER);
}

static void context_options_are_checked_before_the_driver(void **state) {
  (void)state;
  kda_context *ctx = (kda_context *)&ctx;
  assert_int_equal(kda_context_create(NULL, NULL), KDA_ERROR_NULL_POINTER);
  kda_options o = kda_options_default();
  o.struct_size = 3;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_ERROR_BAD_OPTIONS);
  assert_null(ctx);
  o = kda_options_default();
  o.device = -7;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_ERROR_NO_DEVICE);
  assert_null(ctx);
  /* A budget that would make leases and waits never end. */
  const double budgets[] = {INFINITY, NAN, 3600001.0, 1e300};
  for (size_t i = 0; i < sizeof budgets / sizeof budgets[0]; i++) {
    o = kda_options_default();
    o.tune_budget_ms = budgets[i];
    assert_int_equal(kda_context_create(&o, &ctx), KDA_ERROR_BAD_OPTIONS);
    assert_non_null(strstr(kda_last_error(), "tune_budget_ms"));
    assert_null(ctx);
  }
  o = kda_options_default();
  o.tune_budget_ms = 3600000.0;
  const kda_status st = kda_context_create(&o, &ctx);
  assert_int_not_equal(st, KDA_ERROR_BAD_OPTIONS);
  kda_context_destroy(st == KDA_OK ? ctx : NULL);
  kda_context_destroy(NULL);
}

static void layer_workspace_size_counts_table_and_count(void **state) {
  (void)state;
  assert_int_equal(kda_layer_workspace_size(100, 3, 64), (2 + 3) * 2 * 4 + 4);
  assert_int_equal(kda_layer_workspace_size(-1, 3, 64), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(valid_arguments_plan_a_launch),
      cmocka_unit_test(null_pointers_are_rejected),
      cmocka_unit_test(struct_size_must_match),
      cmocka_unit_test(unsupported_dtypes_are_rejected),
      cmocka_unit_test(bad_shapes_are_rejected),
      cmocka_unit_test(head_dim_above_maximum_is_unsupported),
      cmocka_unit_test(chunk_size_must_be_a_power_of_two_in_range),
      cmocka_unit_test(gate_kind_must_fit_the_kernel),
      cmocka_unit_test(overlapping_output_is_rejected),
      cmocka_unit_test(chunk_plan_excludes_the_table_fields),
      cmocka_unit_test(grid_past_the_launch_limit_is_refused),
      cmocka_unit_test(varlen_arguments_are_checked),
      cmocka_unit_test(host_seqlens_put_small_batches_rows_in_the_launch),
      cmocka_unit_test(host_chunks_pack_into_slots),
      cmocka_unit_test(host_seqlens_past_the_row_limit_use_the_table),
      cmocka_unit_test(bad_host_seqlens_are_rejected),
      cmocka_unit_test(shape_descriptions_ask_for_host_rows),
      cmocka_unit_test(vector_width_follows_pointer_alignment),
      cmocka_unit_test(elements_misaligned_for_their_type_are_refused),
      cmocka_unit_test(public_calls_reject_null_context),
      cmocka_unit_test(context_options_are_checked_before_the_driver),
      cmocka_unit_test(layer_workspace_size_counts_table_and_count),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
