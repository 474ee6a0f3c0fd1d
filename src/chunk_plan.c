/* Chunk plans: each chunk's first row and length, short chunks packed
 * several to a slot (src/plan_pack.h), in device memory only the library's
 * builder writes, so gate kernels may read it before they wait for the
 * kernel ahead of them (kda.h, "Chunk plans"). */
#include "chunk_plan.h"

#include <stdlib.h>
#include <string.h>

#include "context_internal.h"
#include "error.h"
#include "gate_args.h"
#include "plan_pack.h"

void kda__chunk_plan_wrap(kda_chunk_plan *plan, kda_context *ctx, CUdeviceptr rows,
                          int64_t slots, int64_t total_tokens, int64_t num_seqs, int32_t chunk) {
  memset(plan, 0, sizeof *plan);
  plan->ctx = ctx;
  plan->rows = rows;
  plan->capacity = slots;
  plan->max_tokens = plan->total_tokens = total_tokens;
  plan->max_seqs = plan->num_seqs = num_seqs;
  plan->chunk = chunk;
  plan->built = 1;
  atomic_init(&plan->plain_next, 0);
  pthread_mutex_init(&plan->lock, NULL);
}

/* Read once per process: this runs on the first launch after every plan
 * build, on a server's threads, and getenv races with a setenv elsewhere
 * in the process (Python's os.environ). */
static int test_overlap;
static pthread_once_t test_overlap_once = PTHREAD_ONCE_INIT;
static void read_test_overlap(void) {
  const char *v = getenv("KDA_TEST_PLAN_ALWAYS_OVERLAP");
  test_overlap = v != NULL && strcmp(v, "1") == 0;
}

int kda__chunk_plan_test_overlap(void) {
  pthread_once(&test_overlap_once, read_test_overlap);
  return test_overlap;
}

kda_status kda__chunk_plan_check(const kda_chunk_plan *plan, const char *fn, int64_t seq_len,
                                 int64_t num_seqs, int32_t chunk) {
  KDA__REQUIRE(plan->built, KDA_ERROR_INVALID_ARGUMENT,
               "%s: chunk_plan has not been built (kda_chunk_plan_build)", fn);
  KDA__REQUIRE(plan->total_tokens == seq_len && plan->num_seqs == num_seqs && plan->chunk == chunk,
               KDA_ERROR_BAD_SHAPE,
               "%s: seq_len=%lld num_seqs=%lld chunk_size=%d differ from the chunk_plan's last "
               "build (total_tokens=%lld num_seqs=%lld chunk_size=%d)", fn, (long long)seq_len,
               (long long)num_seqs, chunk, (long long)plan->total_tokens,
               (long long)plan->num_seqs, plan->chunk);
  return KDA_OK;
}

kda_status kda_chunk_plan_create(kda_context *ctx, int64_t max_total_tokens, int64_t max_num_seqs,
                                 int32_t chunk_size, kda_chunk_plan **out) {
  KDA__REQUIRE(ctx != NULL && out != NULL, KDA_ERROR_NULL_POINTER,
               "kda_chunk_plan_create: ctx and out are required");
  *out = NULL;
  KDA__TRY(kda__check_chunk_size(chunk_size));
  /* Rows travel as int32 in the plan. */
  KDA__REQUIRE(max_total_tokens >= 1 && max_total_tokens <= INT32_MAX && max_num_seqs >= 1 &&
                   max_num_seqs <= INT32_MAX - 1,
               KDA_ERROR_BAD_SHAPE,
               "kda_chunk_plan_create: max_total_tokens=%lld must be in [1, 2^31-1] and "
               "max_num_seqs=%lld in [1, 2^31-2]", (long long)max_total_tokens,
               (long long)max_num_seqs);
  const int64_t cap = kda_chunk_indices_capacity(max_total_tokens, max_num_seqs, chunk_size);
  KDA__REQUIRE(cap > 0 && cap <= INT32_MAX, KDA_ERROR_BAD_SHAPE,
               "kda_chunk_plan_create: %lld chunk slots exceed int32", (long long)cap);
  kda_chunk_plan *p = calloc(1, sizeof *p);
  KDA__REQUIRE(p != NULL, KDA_ERROR_OUT_OF_MEMORY, "kda_chunk_plan_create: out of memory");
  int pushed = 0;
  kda_status st = kda__context_enter(ctx, &pushed);
  if (st != KDA_OK) {
    free(p);
    return st;
  }
  CUdeviceptr rows = 0;
  const CUstreamCaptureMode mode = kda__driver_relax_capture(ctx->drv);
  CUresult r = ctx->drv->cuMemAlloc(&rows, kda__plan_bytes(cap, chunk_size));
  kda__driver_restore_capture(ctx->drv, mode);
  kda__context_leave(ctx, pushed);
  if (r != CUDA_SUCCESS) {
    free(p);
    return kda__cu_status(ctx->drv, r, "cuMemAlloc(chunk plan)", __FILE__, __LINE__);
  }
  kda__chunk_plan_wrap(p, ctx, rows, cap, 0, 0, chunk_size);
  p->max_tokens = max_total_tokens;
  p->max_seqs = max_num_seqs;
  p->built = 0;
  *out = p;
  return KDA_OK;
}

kda_status kda_chunk_plan_build(kda_chunk_plan *plan, const void *cu_seqlens, kda_dtype dt,
                                int64_t num_seqs, int64_t total_tokens, kda_stream stream) {
  KDA__REQUIRE(plan != NULL && cu_seqlens != NULL, KDA_ERROR_NULL_POINTER,
               "kda_chunk_plan_build: plan and cu_seqlens are required");
  KDA__REQUIRE(dt == KDA_DTYPE_I32 || dt == KDA_DTYPE_I64, KDA_ERROR_UNSUPPORTED_DTYPE,
               "kda_chunk_plan_build: cu_seqlens dtype %d is not I32 or I64", (int)dt);
  KDA__REQUIRE(num_seqs >= 1 && num_seqs <= plan->max_seqs && total_tokens >= 1 &&
                   total_tokens <= plan->max_tokens,
               KDA_ERROR_BAD_SHAPE,
               "kda_chunk_plan_build: num_seqs=%lld and total_tokens=%lld must be in [1, %lld] "
               "and [1, %lld] (the plan's maxima)", (long long)num_seqs,
               (long long)total_tokens, (long long)plan->max_seqs, (long long)plan->max_tokens);
  kda_context *ctx = plan->ctx;
  const int64_t slots = kda_chunk_indices_capacity(total_tokens, num_seqs, plan->chunk);

  const kda__spec spec = kda__chunk_builder_spec(dt, plan->chunk, 1);

  int pushed = 0;
  KDA__TRY(kda__context_enter(ctx, &pushed));
  CUfunction fn = NULL;
  kda_status st = kda__context_function(ctx, &spec, (CUstream)stream, &fn);
  if (st == KDA_OK) {
    long long n = num_seqs, t = total_tokens, cap = slots;
    CUdeviceptr rows = plan->rows;
    void *params[] = {&cu_seqlens, &n, &t, &rows, &cap};
    /* Plainly: the build starts after every kernel before it in the stream
     * has completed, so none of them can still be reading the old plan. */
    st = kda__chunk_plan_test_overlap()
             ? kda__context_launch(ctx, fn, 1, (unsigned)spec.cfg.tx, (CUstream)stream, params,
                                   "build_chunk_plan")
             : kda__context_launch_plain(ctx, fn, 1, (unsigned)spec.cfg.tx, (CUstream)stream,
                                         params, "build_chunk_plan");
  }
  kda__context_leave(ctx, pushed);
  KDA__TRY(st);
  pthread_mutex_lock(&plan->lock);
  plan->total_tokens = total_tokens;
  plan->num_seqs = num_seqs;
  plan->built = 1;
  plan->build_stream = (CUstream)stream;
  atomic_store_explicit(&plan->plain_next, 1, memory_order_release);
  pthread_mutex_unlock(&plan->lock);
  return KDA_OK;
}

void kda_chunk_plan_destroy(kda_chunk_plan *plan) {
  if (plan == NULL) return;
  kda_context *ctx = plan->ctx;
  int pushed = 0;
  if (plan->rows != 0 && kda__context_enter(ctx, &pushed) == KDA_OK) {
    const CUstreamCaptureMode mode = kda__driver_relax_capture(ctx->drv);
    ctx->drv->cuMemFree(plan->rows);
    kda__driver_restore_capture(ctx->drv, mode);
    kda__context_leave(ctx, pushed);
  }
  pthread_mutex_destroy(&plan->lock);
  free(plan);
}
