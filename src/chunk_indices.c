/* The varlen chunk table: (sequence id, chunk index within the sequence) per
 * chunk, built on the host or on the device (no synchronisation). */
#include <string.h>

#include "chunk_plan.h"
#include "context_internal.h"
#include "error.h"
#include "gate_args.h"

int64_t kda_chunk_indices_capacity(int64_t total_tokens, int64_t num_seqs, int32_t chunk_size) {
  if (total_tokens < 0 || num_seqs < 1) return -1;
  if (chunk_size < KDA_MIN_CHUNK || chunk_size > KDA_MAX_CHUNK || (chunk_size & (chunk_size - 1)))
    return -1;
  if (total_tokens > (INT64_C(1) << 50) || num_seqs > (INT64_C(1) << 40)) return -1;
  return (total_tokens + chunk_size - 1) / chunk_size + num_seqs;
}

kda_status kda_chunk_indices_build_host(const void *cu_seqlens, kda_dtype dt, int64_t num_seqs,
                                        int32_t chunk_size, int32_t *out, int64_t capacity,
                                        int64_t *num_chunks) {
  KDA__REQUIRE(cu_seqlens && out && num_chunks, KDA_ERROR_NULL_POINTER,
               "kda_chunk_indices_build_host: cu_seqlens, out and num_chunks are required");
  KDA__REQUIRE(dt == KDA_DTYPE_I32 || dt == KDA_DTYPE_I64, KDA_ERROR_UNSUPPORTED_DTYPE,
               "kda_chunk_indices_build_host: cu_seqlens dtype %d is not I32 or I64", (int)dt);
  KDA__REQUIRE(num_seqs >= 1 && num_seqs <= INT32_MAX - 1, KDA_ERROR_BAD_SHAPE,
               "kda_chunk_indices_build_host: num_seqs=%lld is not in [1, 2^31-2]",
               (long long)num_seqs);
  KDA__TRY(kda__check_chunk_size(chunk_size));
  KDA__REQUIRE(kda__seqlen_at(cu_seqlens, dt, 0) == 0, KDA_ERROR_BAD_SEQLENS,
               "kda_chunk_indices_build_host: cu_seqlens[0] is %lld, must be 0",
               (long long)kda__seqlen_at(cu_seqlens, dt, 0));
  int64_t n = 0;
  for (int64_t i = 0; i < num_seqs; ++i) {
    const int64_t a = kda__seqlen_at(cu_seqlens, dt, i), b = kda__seqlen_at(cu_seqlens, dt, i + 1);
    KDA__REQUIRE(b >= a, KDA_ERROR_BAD_SEQLENS,
                 "kda_chunk_indices_build_host: cu_seqlens decreases at %lld (%lld -> %lld)",
                 (long long)i, (long long)a, (long long)b);
    /* b - a may be near INT64_MAX: round up without overflowing. */
    const int64_t chunks = (b - a) / chunk_size + ((b - a) % chunk_size != 0);
    KDA__REQUIRE(chunks <= capacity - n, KDA_ERROR_BUFFER_TOO_SMALL,
                 "kda_chunk_indices_build_host: %lld rows do not fit capacity %lld",
                 (long long)(n + chunks), (long long)capacity);
    for (int64_t c = 0; c < chunks; ++c, ++n) {
      out[2 * n] = (int32_t)i;
      out[2 * n + 1] = (int32_t)c;
    }
  }
  *num_chunks = n;
  return KDA_OK;
}

kda__spec kda__chunk_builder_spec(kda_dtype dt, int32_t chunk, int plan) {
  kda__spec spec;
  memset(&spec, 0, sizeof spec);
  spec.kernel = KDA__KERNEL_CHUNK_INDICES;
  spec.varlen = plan ? 3 : 0; /* 3: the chunk plan's builder (spec.c names it) */
  spec.idx_dtype = dt;
  spec.chunk = chunk;
  spec.cfg = kda__config_heuristic(&spec);
  return spec;
}

kda_status kda_chunk_indices_build_device(kda_context *ctx, const void *cu_seqlens, kda_dtype dt,
                                          int64_t num_seqs, int64_t total_tokens,
                                          int32_t chunk_size, int32_t *out, int64_t capacity,
                                          int32_t *num_chunks_device, kda_stream stream) {
  KDA__REQUIRE(ctx && cu_seqlens && out && num_chunks_device, KDA_ERROR_NULL_POINTER,
               "kda_chunk_indices_build_device: ctx, cu_seqlens, out and num_chunks_device are "
               "required");
  KDA__REQUIRE(dt == KDA_DTYPE_I32 || dt == KDA_DTYPE_I64, KDA_ERROR_UNSUPPORTED_DTYPE,
               "kda_chunk_indices_build_device: cu_seqlens dtype %d is not I32 or I64", (int)dt);
  KDA__REQUIRE(num_seqs >= 1 && num_seqs <= INT32_MAX - 1 && total_tokens >= 1,
               KDA_ERROR_BAD_SHAPE,
               "kda_chunk_indices_build_device: num_seqs=%lld, total_tokens=%lld out of range",
               (long long)num_seqs, (long long)total_tokens);
  KDA__TRY(kda__check_chunk_size(chunk_size));
  const int64_t need = kda_chunk_indices_capacity(total_tokens, num_seqs, chunk_size);
  KDA__REQUIRE(need > 0 && need <= INT32_MAX, KDA_ERROR_BAD_SHAPE,
               "kda_chunk_indices_build_device: %lld chunk rows exceed int32",
               (long long)need);
  KDA__REQUIRE(capacity >= need, KDA_ERROR_BUFFER_TOO_SMALL,
               "kda_chunk_indices_build_device: capacity %lld < ceil(T/chunk) + N = %lld",
               (long long)capacity, (long long)need);

  const kda__spec spec = kda__chunk_builder_spec(dt, chunk_size, 0);

  int pushed = 0;
  KDA__TRY(kda__context_enter(ctx, &pushed));
  CUfunction fn = NULL;
  kda_status st = kda__context_function(ctx, &spec, (CUstream)stream, &fn);
  if (st == KDA_OK) {
    long long n = num_seqs, t = total_tokens, cap = capacity;
    void *params[] = {&cu_seqlens, &n, &t, &out, &cap, &num_chunks_device};
    st = kda__context_launch(ctx, fn, 1, (unsigned)spec.cfg.tx, (CUstream)stream, params,
                             "build_chunk_indices");
  }
  kda__context_leave(ctx, pushed);
  return st;
}
