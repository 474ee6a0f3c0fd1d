/* Validation of kda_gate_args: everything the host can check before a launch. */
#include "gate_args.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chunk_plan.h"
#include "error.h"

static const char *op_name(kda__op op) {
  switch (op) {
    case KDA__OP_GATE_CHUNK_CUMSUM:
      return "kda_gate_chunk_cumsum";
    case KDA__OP_CHUNK_LOCAL_CUMSUM:
      return "kda_chunk_local_cumsum";
    default:
      return "kda_gate";
  }
}

static int dtype_size(kda_dtype dt) {
  return (dt == KDA_DTYPE_F16 || dt == KDA_DTYPE_BF16) ? 2 : (dt == KDA_DTYPE_I64 ? 8 : 4);
}

kda_status kda__check_chunk_size(int32_t chunk) {
  KDA__REQUIRE(chunk >= KDA_MIN_CHUNK && chunk <= KDA_MAX_CHUNK && (chunk & (chunk - 1)) == 0,
               KDA_ERROR_BAD_CHUNK_SIZE, "chunk_size %d is not a power of two in [%d, %d]", chunk,
               KDA_MIN_CHUNK, KDA_MAX_CHUNK);
  return KDA_OK;
}

static int ranges_overlap(const void *a, size_t an, const void *b, size_t bn) {
  uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
  return x < y + bn && y < x + an;
}

int64_t kda__seqlen_at(const void *cu, kda_dtype dt, int64_t i) {
  return dt == KDA_DTYPE_I64 ? ((const int64_t *)cu)[i] : (int64_t)((const int32_t *)cu)[i];
}

void kda__equal_seqlens(kda_dtype dtype, int64_t num_seqs, int64_t total, void *buf) {
  for (int64_t i = 0; i <= num_seqs; ++i) {
    const int64_t v = i * total / num_seqs;
    if (dtype == KDA_DTYPE_I64) ((int64_t *)buf)[i] = v;
    else ((int32_t *)buf)[i] = (int32_t)v;
  }
}

kda_status kda__shape_host_seqlens(kda_gate_args *a, void **owned) {
  *owned = NULL;
  if (a->cu_seqlens_host == NULL) return KDA_OK;
  /* Beyond the limits the call's checks reject the shape anyway (and
   * i * seq_len in kda__equal_seqlens must not overflow). */
  if (a->num_seqs < 1 || a->num_seqs > 65535 || a->seq_len < 1 || a->seq_len > (INT64_C(1) << 40)) {
    a->cu_seqlens_host = NULL; /* not a varlen shape, or one no call could make */
    return KDA_OK;
  }
  const size_t isz = a->cu_seqlens_dtype == KDA_DTYPE_I64 ? 8 : 4;
  void *buf = malloc((size_t)(a->num_seqs + 1) * isz);
  KDA__REQUIRE(buf != NULL, KDA_ERROR_OUT_OF_MEMORY, "out of memory describing a varlen shape");
  kda__equal_seqlens(a->cu_seqlens_dtype == KDA_DTYPE_I64 ? KDA_DTYPE_I64 : KDA_DTYPE_I32,
                     a->num_seqs, a->seq_len, buf);
  a->cu_seqlens_host = buf;
  *owned = buf;
  return KDA_OK;
}

void kda__plan_table_args(const kda__launch_plan *plan, const kda_gate_args *a, const void **cu,
                          const void **ci, const void **nd) {
  const int v = plan->spec.varlen;
  *cu = v == 1 || v == 2 ? a->cu_seqlens : NULL;
  *ci = v == 1 ? (const void *)a->chunk_indices
        : v == 3 ? (const void *)(uintptr_t)a->chunk_plan->rows
                 : NULL;
  *nd = v == 1 ? (const void *)a->num_chunks_device : NULL;
}

const void *kda__plan_rows_arg(const kda__launch_plan *plan) {
  static const uint32_t none = 0;
  return plan->spec.varlen == 2 ? (const void *)&plan->host : (const void *)&none;
}

/* A chunk in the kernel's parameter: first row << 8 | (rows - 1). */
static uint32_t host_chunk_word(uint32_t row, uint16_t len) { return row << 8 | (uint32_t)(len - 1); }

int64_t kda__pack_host_chunks(const uint32_t *rows, const uint16_t *lens, int64_t n, int32_t chunk,
                              kda__host_plan *hp) {
  enum { MAX_GRANULES = 8 };
  const int G = kda__host_granule(chunk), NG = chunk / G;
  /* Chunks of fewer than NG granules are sorted by granules (counting
   * sort), then packed largest first, each slot topped up with the largest
   * that still fits; the whole chunks follow, one slot each, in order.
   * Packed slots go first: last, they made the kernel's final blocks the
   * scattered ones, and a batch of 32 ragged sequences (T=8192 H=16, H100)
   * took 36.0 us instead of 34.9 (docs/perf-notes.md, sixth session). */
  int count[MAX_GRANULES + 1] = {0};
  uint8_t granules[KDA_MAX_HOST_ROWS], order[KDA_MAX_HOST_ROWS];
  int64_t slots = 0, used = 0;
  for (int64_t i = 0; i < n; ++i) {
    granules[i] = (uint8_t)((lens[i] + G - 1) / G);
    ++count[granules[i]];
  }
  int next[MAX_GRANULES + 1]; /* bucket k holds order[next[k] .. end[k]) */
  int end[MAX_GRANULES + 1];
  for (int k = 1, at = 0; k < NG; ++k) {
    next[k] = at;
    at += count[k];
    end[k] = next[k];
  }
  for (int64_t i = 0; i < n; ++i)
    if (granules[i] < NG) order[end[granules[i]]++] = (uint8_t)i;
  for (int big = NG - 1; big >= 1; --big) {
    while (next[big] < end[big]) {
      uint32_t starts = 0;
      int fill = 0;
      const uint32_t first = (uint32_t)used;
      for (int k = big; k >= 1;) {
        if (next[k] == end[k] || fill + k > NG) {
          --k;
          continue;
        }
        const int i = order[next[k]++];
        starts |= 1u << fill;
        fill += k;
        hp->rows[used++] = host_chunk_word(rows[i], lens[i]);
        if (NG - fill < k) k = NG - fill;
      }
      hp->slots[slots++] = (uint16_t)(first | starts << 8);
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    if (granules[i] == NG) {
      hp->rows[used] = host_chunk_word(rows[i], lens[i]);
      hp->slots[slots++] = (uint16_t)(used++ | 1u << 8);
    }
  }
  return slots;
}

/* Varlen with a host copy of cu_seqlens: checks it (the host can, so a bad
 * one is an error here rather than the device's defined fallback) and, for
 * a batch of at most KDA_MAX_HOST_ROWS chunks, packs the chunks' rows and
 * lengths for the kernel's parameters (*fits = 1). Rows below 2^24 keep
 * each chunk in 32 bits. */
static kda_status plan_host_rows(const char *fn, const kda_gate_args *a, kda__launch_plan *plan,
                                 int *fits) {
  const void *cu = a->cu_seqlens_host;
  const kda_dtype dt = a->cu_seqlens_dtype;
  const int64_t N = a->num_seqs, T = a->seq_len, BT = plan->spec.chunk;
  KDA__REQUIRE(kda__seqlen_at(cu, dt, 0) == 0, KDA_ERROR_BAD_SEQLENS,
               "%s: cu_seqlens_host[0] is %lld, not 0", fn, (long long)kda__seqlen_at(cu, dt, 0));
  /* One pass (this runs on every call): check each bound, count the
   * chunks, and list them while they still fit; a batch that turns out
   * not to fit leaves them unused. */
  uint32_t rows[KDA_MAX_HOST_ROWS];
  uint16_t lens[KDA_MAX_HOST_ROWS];
  int64_t chunks = 0;
  for (int64_t i = 0; i < N; ++i) {
    const int64_t x = kda__seqlen_at(cu, dt, i), y = kda__seqlen_at(cu, dt, i + 1);
    KDA__REQUIRE(y >= x && y <= T, KDA_ERROR_BAD_SEQLENS,
                 "%s: cu_seqlens_host[%lld] = %lld after %lld (must not decrease nor pass "
                 "seq_len = %lld)", fn, (long long)(i + 1), (long long)y, (long long)x, (long long)T);
    const int64_t n = (y - x + BT - 1) / BT;
    for (int64_t j = 0; j < n && chunks + j < KDA_MAX_HOST_ROWS; ++j) {
      const int64_t r = x + j * BT, len = y - r < BT ? y - r : BT;
      rows[chunks + j] = (uint32_t)r;
      lens[chunks + j] = (uint16_t)len;
    }
    chunks += n;
  }
  KDA__REQUIRE(kda__seqlen_at(cu, dt, N) == T, KDA_ERROR_BAD_SEQLENS,
               "%s: cu_seqlens_host[num_seqs] is %lld, not seq_len = %lld", fn,
               (long long)kda__seqlen_at(cu, dt, N), (long long)T);
  *fits = chunks <= KDA_MAX_HOST_ROWS && T < (INT64_C(1) << 24);
  if (*fits) plan->num_chunks = kda__pack_host_chunks(rows, lens, chunks, (int32_t)BT, &plan->host);
  return KDA_OK;
}

/* Varlen with the chunk table: its rows and their count. */
static kda_status plan_table(const char *fn, const kda_gate_args *a, kda__launch_plan *plan) {
  KDA__REQUIRE(a->chunk_indices != NULL, KDA_ERROR_NULL_POINTER,
               "%s: chunk_indices is required with cu_seqlens (build it once per batch with "
               "kda_chunk_indices_build_device, or pass cu_seqlens_host for a batch of at most "
               "%d chunks)", fn, KDA_MAX_HOST_ROWS);
  const int64_t cap = kda_chunk_indices_capacity(a->seq_len, a->num_seqs, a->chunk_size);
  KDA__REQUIRE(a->num_chunks >= 0 && a->num_chunks <= cap, KDA_ERROR_BAD_SHAPE,
               "%s: num_chunks=%lld is not in [0, %lld] (ceil(T/chunk) + num_seqs)", fn,
               (long long)a->num_chunks, (long long)cap);
  plan->num_chunks = a->num_chunks;
  return KDA_OK;
}

kda_status kda__plan_gate_op(kda__op op, const kda_gate_args *a, kda__launch_plan *plan) {
  const char *fn = op_name(op);
  KDA__REQUIRE(a != NULL && plan != NULL, KDA_ERROR_NULL_POINTER, "%s: args is NULL", fn);
  KDA__REQUIRE(a->struct_size == sizeof(kda_gate_args), KDA_ERROR_BAD_OPTIONS,
               "%s: kda_gate_args.struct_size is %u, this library knows %zu (use "
               "kda_gate_args_default())",
               fn, a->struct_size, sizeof(kda_gate_args));
  KDA__REQUIRE(a->g != NULL, KDA_ERROR_NULL_POINTER, "%s: g is NULL", fn);
  KDA__REQUIRE(a->out != NULL, KDA_ERROR_NULL_POINTER, "%s: out is NULL", fn);
  KDA__REQUIRE(a->g_dtype == KDA_DTYPE_F32 || a->g_dtype == KDA_DTYPE_F16 ||
                   a->g_dtype == KDA_DTYPE_BF16,
               KDA_ERROR_UNSUPPORTED_DTYPE, "%s: g_dtype %d is not F32, F16 or BF16", fn,
               (int)a->g_dtype);
  KDA__REQUIRE(a->out_dtype == KDA_DTYPE_F32 || a->out_dtype == KDA_DTYPE_BF16,
               KDA_ERROR_UNSUPPORTED_DTYPE, "%s: out_dtype %d is not F32 or BF16", fn,
               (int)a->out_dtype);
  KDA__REQUIRE(a->batch >= 1 && a->seq_len >= 1, KDA_ERROR_BAD_SHAPE,
               "%s: batch=%lld and seq_len=%lld must be >= 1", fn, (long long)a->batch,
               (long long)a->seq_len);
  KDA__REQUIRE(a->num_heads >= 1 && a->num_heads <= KDA_MAX_HEADS, KDA_ERROR_BAD_SHAPE,
               "%s: num_heads=%d is not in [1, %d]", fn, a->num_heads, KDA_MAX_HEADS);
  KDA__REQUIRE(a->head_dim >= 1, KDA_ERROR_BAD_SHAPE, "%s: head_dim=%d must be >= 1", fn,
               a->head_dim);
  KDA__REQUIRE(a->head_dim <= KDA_MAX_HEAD_DIM, KDA_ERROR_UNSUPPORTED_HEAD_DIM,
               "%s: head_dim=%d exceeds the supported maximum %d", fn, a->head_dim,
               KDA_MAX_HEAD_DIM);
  const int64_t hk = (int64_t)a->num_heads * a->head_dim;
  /* Element offsets are 64-bit on the device; keep them far from overflow
   * and keep the 1-D grid within 2^31 - 1 blocks. */
  KDA__REQUIRE(a->batch <= (INT64_C(1) << 40) / a->seq_len &&
                   a->batch * a->seq_len <= (INT64_C(1) << 56) / hk,
               KDA_ERROR_BAD_SHAPE, "%s: B*T*H*K = %lld*%lld*%lld is too large", fn,
               (long long)a->batch, (long long)a->seq_len, (long long)hk);
  const int64_t elems = a->batch * a->seq_len * hk;

  kda__spec *s = &plan->spec;
  memset(plan, 0, offsetof(kda__launch_plan, host));
  s->kernel = KDA__KERNEL_GATE_CUMSUM;
  s->in_dtype = a->g_dtype;
  s->out_dtype = a->out_dtype;
  s->heads = a->num_heads;
  s->head_dim = a->head_dim;
  s->idx_dtype = KDA_DTYPE_I32;

  KDA__REQUIRE(a->gate == KDA_GATE_NONE || a->gate == KDA_GATE_SOFTPLUS ||
                   a->gate == KDA_GATE_LOWER_BOUND,
               KDA_ERROR_INVALID_ARGUMENT, "%s: gate %d is not a kda_gate_kind", fn, (int)a->gate);
  if (op == KDA__OP_CHUNK_LOCAL_CUMSUM) {
    KDA__REQUIRE(a->gate == KDA_GATE_NONE, KDA_ERROR_INVALID_ARGUMENT,
                 "%s: gate must be KDA_GATE_NONE (use kda_gate_chunk_cumsum for a raw gate)", fn);
  } else {
    KDA__REQUIRE(a->gate != KDA_GATE_NONE, KDA_ERROR_INVALID_ARGUMENT,
                 "%s: gate must be KDA_GATE_SOFTPLUS or KDA_GATE_LOWER_BOUND", fn);
    KDA__REQUIRE(a->gate != KDA_GATE_SOFTPLUS || a->A_log != NULL, KDA_ERROR_NULL_POINTER,
                 "%s: A_log is required by the softplus gate", fn);
    s->gate = a->gate;
    s->has_alog = a->A_log != NULL;
    s->has_bias = a->dt_bias != NULL;
  }

  KDA__REQUIRE(!ranges_overlap(a->g, (size_t)elems * (size_t)dtype_size(a->g_dtype), a->out,
                               (size_t)elems * (size_t)dtype_size(a->out_dtype)),
               KDA_ERROR_INVALID_ARGUMENT, "%s: out overlaps g (in-place is not supported)", fn);
  /* An element at an address its type is not aligned for would fault the
   * kernel, and a misaligned access is sticky: the CUDA context is lost. */
  KDA__REQUIRE((uintptr_t)a->g % (uintptr_t)dtype_size(a->g_dtype) == 0 &&
                   (uintptr_t)a->out % (uintptr_t)dtype_size(a->out_dtype) == 0,
               KDA_ERROR_INVALID_ARGUMENT,
               "%s: g (%p) and out (%p) must be aligned for their element types (%d and %d "
               "bytes); a view into a larger tensor starts at an element", fn, a->g,
               (void *)a->out, dtype_size(a->g_dtype), dtype_size(a->out_dtype));

  if (op == KDA__OP_GATE) {
    /* Elementwise: fold the batch into rows and use one fixed row tiling. */
    s->cumsum = 0;
    s->chunk = 64;
    plan->seq_len = a->batch * a->seq_len;
    plan->chunks_per_seq = (plan->seq_len + s->chunk - 1) / s->chunk;
    plan->num_chunks = plan->chunks_per_seq;
  } else {
    KDA__TRY(kda__check_chunk_size(a->chunk_size));
    s->cumsum = 1;
    s->chunk = a->chunk_size;
    s->has_scale = a->has_scale != 0;
    s->reverse = a->reverse != 0;
    plan->seq_len = a->seq_len;
    if (a->chunk_plan != NULL) {
      /* Varlen mode 3: the plan stands for cu_seqlens and the table. Not
       * dereferenced here (shape descriptions pass any non-NULL value);
       * the call checks it against its batch (kda__chunk_plan_check). */
      KDA__REQUIRE(a->batch == 1, KDA_ERROR_BAD_SHAPE,
                   "%s: batch must be 1 with a chunk_plan (got %lld)", fn, (long long)a->batch);
      KDA__REQUIRE(a->chunk_indices == NULL && a->num_chunks == 0 &&
                       a->num_chunks_device == NULL && a->cu_seqlens_host == NULL,
                   KDA_ERROR_INVALID_ARGUMENT,
                   "%s: chunk_plan replaces chunk_indices, num_chunks, num_chunks_device and "
                   "cu_seqlens_host: leave them NULL / 0", fn);
      KDA__REQUIRE(a->seq_len <= INT32_MAX, KDA_ERROR_BAD_SHAPE,
                   "%s: seq_len=%lld exceeds a chunk plan's 2^31-1 tokens", fn,
                   (long long)a->seq_len);
      KDA__REQUIRE(a->num_seqs >= 1 && a->num_seqs <= INT32_MAX - 1, KDA_ERROR_BAD_SHAPE,
                   "%s: num_seqs=%lld is not in [1, 2^31-2]", fn, (long long)a->num_seqs);
      s->varlen = 3;
      plan->chunks_per_seq = a->num_seqs;
      plan->num_chunks = kda_chunk_indices_capacity(a->seq_len, a->num_seqs, a->chunk_size);
    } else if (a->cu_seqlens != NULL) {
      KDA__REQUIRE(a->batch == 1, KDA_ERROR_BAD_SHAPE,
                   "%s: batch must be 1 when cu_seqlens is given (got %lld)", fn,
                   (long long)a->batch);
      KDA__REQUIRE(a->cu_seqlens_dtype == KDA_DTYPE_I32 || a->cu_seqlens_dtype == KDA_DTYPE_I64,
                   KDA_ERROR_UNSUPPORTED_DTYPE, "%s: cu_seqlens_dtype %d is not I32 or I64", fn,
                   (int)a->cu_seqlens_dtype);
      KDA__REQUIRE(a->num_seqs >= 1 && a->num_seqs <= INT32_MAX - 1, KDA_ERROR_BAD_SHAPE,
                   "%s: num_seqs=%lld is not in [1, 2^31-2]", fn, (long long)a->num_seqs);
      s->idx_dtype = a->cu_seqlens_dtype;
      /* chunks_per_seq carries the sequence count: the kernel bounds-checks
       * table rows by it, and loads every bound at once when the batch has
       * fewer sequences than a warp has lanes. */
      plan->chunks_per_seq = a->num_seqs;
      int fits = 0;
      if (a->cu_seqlens_host != NULL) KDA__TRY(plan_host_rows(fn, a, plan, &fits));
      s->varlen = fits ? 2 : 1;
      if (!fits) KDA__TRY(plan_table(fn, a, plan));
    } else {
      KDA__REQUIRE(a->chunk_indices == NULL && a->num_chunks_device == NULL &&
                       a->cu_seqlens_host == NULL,
                   KDA_ERROR_INVALID_ARGUMENT,
                   "%s: chunk_indices or cu_seqlens_host given without cu_seqlens", fn);
      plan->chunks_per_seq = (a->seq_len + s->chunk - 1) / s->chunk;
      plan->num_chunks = a->batch * plan->chunks_per_seq;
    }
  }

  s->cfg = kda__config_heuristic(s);
  /* The vector width is also bounded by the pointers' alignment. */
  while (s->cfg.vec > 1 &&
         (((uintptr_t)a->g % ((uintptr_t)s->cfg.vec * dtype_size(a->g_dtype))) != 0 ||
          ((uintptr_t)a->out % ((uintptr_t)s->cfg.vec * dtype_size(a->out_dtype))) != 0)) {
    s->cfg.vec >>= 1;
    s->cfg.tx = s->cfg.tx * 2 > 256 ? 256 : s->cfg.tx * 2;
    if (s->cfg.tx * s->cfg.seg > 1024) s->cfg.tx = 1024 / s->cfg.seg;
  }
  plan->grid = kda__spec_grid(s, plan->num_chunks);
  KDA__REQUIRE(plan->grid <= INT32_MAX, KDA_ERROR_BAD_SHAPE,
               "%s: %llu blocks exceed the grid limit", fn, (unsigned long long)plan->grid);
  return KDA_OK;
}
