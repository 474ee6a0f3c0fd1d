/* Public entry points of the tuner: the token bucket, kda_prewarm (tune a
 * shape with inputs the library makes itself, for kda-tune) and
 * kda_compile_offline_store (a heuristic cubin into the database without a
 * GPU). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chunk_plan.h"
#include "context_internal.h"
#include "error.h"
#include "gate_args.h"
#include "nvrtc_compile.h"
#include "plan_pack.h"
#include "store.h"
#include "tuner.h"

int32_t kda_token_bucket(int64_t tokens) { return kda__tune_bucket(tokens); }

void kda_token_bucket_range(int32_t bucket, int64_t *lo, int64_t *hi) {
  int64_t a = 0, b = 0;
  kda__tune_bucket_tokens(bucket, &a, &b);
  if (b >= INT64_MAX / 4) b = -1;
  if (lo != NULL) *lo = a;
  if (hi != NULL) *hi = b;
}

/* splitmix64: deterministic inputs, so prewarm measures the same data. */
static uint64_t next_u64(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static double uniform(uint64_t *s) { return (double)(next_u64(s) >> 11) * 0x1.0p-53; }
static double normal(uint64_t *s) {
  double u = uniform(s), v = uniform(s);
  return sqrt(-2.0 * log(u > 0 ? u : 1e-300)) * cos(6.283185307179586 * v);
}

static uint16_t to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

/* Normal range only (inputs are ~N(0,1)); tiny values flush to zero. */
static uint16_t to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  const int e = (int)((x >> 23) & 0xff) - 127 + 15;
  if (e <= 0) return sign;
  if (e >= 31) return (uint16_t)(sign | 0x7c00u);
  uint32_t m = x & 0x7fffffu;
  uint32_t h = ((uint32_t)e << 10) | (m >> 13);
  const uint32_t rest = m & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return (uint16_t)(sign | h);
}

typedef struct prewarm_bufs {
  CUdeviceptr g, out, alog, bias, cu, table;
  kda_chunk_plan plan; /* wraps table when the shape asks for a chunk plan */
  int plan_set;
  CUstream stream; /* the prewarm's own, non-blocking */
} prewarm_bufs;

static void free_bufs(const kda__driver *d, prewarm_bufs *b) {
  if (b->plan_set) pthread_mutex_destroy(&b->plan.lock);
  if (b->stream) d->cuStreamSynchronize(b->stream);
  CUdeviceptr *p[] = {&b->g, &b->out, &b->alog, &b->bias, &b->cu, &b->table};
  for (size_t i = 0; i < sizeof p / sizeof p[0]; ++i)
    if (*p[i]) d->cuMemFree(*p[i]);
  if (b->stream) d->cuStreamDestroy(b->stream);
}

/* On the prewarm's own non-blocking stream, never the legacy one: a
 * legacy-stream copy would wait for (and so break) a capture another
 * thread runs on a blocking stream. */
static kda_status upload(const kda__driver *d, CUstream stream, CUdeviceptr *dst, const void *src,
                         size_t bytes) {
  KDA__CU(d, cuMemAlloc, dst, bytes ? bytes : 4);
  if (src && bytes) {
    KDA__CU(d, cuMemcpyHtoDAsync, *dst, src, bytes, stream);
    KDA__CU(d, cuStreamSynchronize, stream); /* src is the caller's to reuse */
  }
  return KDA_OK;
}

/* As upload, into an allocation of offset more bytes, at that offset. */
static kda_status upload_at(const kda__driver *d, CUstream stream, CUdeviceptr *dst, size_t offset,
                            const void *src, size_t bytes) {
  KDA__TRY(upload(d, stream, dst, NULL, bytes + offset));
  if (src && bytes) {
    KDA__CU(d, cuMemcpyHtoDAsync, *dst + offset, src, bytes, stream);
    KDA__CU(d, cuStreamSynchronize, stream); /* src is the caller's to reuse */
  }
  return KDA_OK;
}

/* Random inputs of the shape on the device; a points at them. g and out
 * sit at a's offsets within 256 bytes (a view's; 0 for NULL), so that the
 * run times the vector width the calls of such views can use. */
static kda_status make_inputs(const kda__driver *d, kda_gate_args *a, prewarm_bufs *b) {
  uint64_t seed = 0x6b6461ull;
  const uintptr_t g_off = kda__view_offset(a->g), out_off = kda__view_offset(a->out);
  const size_t hk = (size_t)a->num_heads * (size_t)a->head_dim;
  const size_t n = (size_t)a->batch * (size_t)a->seq_len * hk;
  const size_t isz = a->g_dtype == KDA_DTYPE_F32 ? 4 : 2, osz = a->out_dtype == KDA_DTYPE_F32 ? 4 : 2;
  void *host = malloc(n * isz > hk * 4 ? n * isz : hk * 4);
  KDA__REQUIRE(host != NULL, KDA_ERROR_OUT_OF_MEMORY, "kda_prewarm: out of memory (%zu inputs)", n);
  for (size_t i = 0; i < n; ++i) {
    const float v = (float)normal(&seed);
    if (a->g_dtype == KDA_DTYPE_F32) ((float *)host)[i] = v;
    else ((uint16_t *)host)[i] = a->g_dtype == KDA_DTYPE_BF16 ? to_bf16(v) : to_f16(v);
  }
  kda_status st = upload_at(d, b->stream, &b->g, g_off, host, n * isz);
  if (st == KDA_OK) st = upload_at(d, b->stream, &b->out, out_off, NULL, n * osz);
  if (st == KDA_OK && a->A_log) {
    float *h = host;
    for (int i = 0; i < a->num_heads; ++i) h[i] = (float)log(1.0 + 15.0 * uniform(&seed));
    st = upload(d, b->stream, &b->alog, h, (size_t)a->num_heads * 4);
  }
  if (st == KDA_OK && a->dt_bias) {
    float *h = host;
    for (size_t i = 0; i < hk; ++i) h[i] = (float)normal(&seed);
    st = upload(d, b->stream, &b->bias, h, hk * 4);
  }
  free(host);
  KDA__TRY(st);
  a->g = (const void *)(uintptr_t)(b->g + g_off);
  a->out = (void *)(uintptr_t)(b->out + out_off);
  a->A_log = a->A_log ? (const float *)(uintptr_t)b->alog : NULL;
  a->dt_bias = a->dt_bias ? (const float *)(uintptr_t)b->bias : NULL;
  return KDA_OK;
}

/* A chunk plan of equal-length sequences, built on the host as the device
 * builder would (src/plan_pack.h). */
static kda_status make_plan(kda_context *ctx, kda_gate_args *a, prewarm_bufs *b) {
  const int64_t N = a->num_seqs, T = a->seq_len;
  KDA__REQUIRE(N >= 1 && N <= T && T <= INT32_MAX && a->batch == 1, KDA_ERROR_BAD_SHAPE,
               "kda_prewarm: a chunk plan needs batch 1 and 1 <= num_seqs <= seq_len < 2^31");
  const int64_t cap = kda_chunk_indices_capacity(T, N, a->chunk_size);
  KDA__REQUIRE(cap > 0 && cap <= INT32_MAX, KDA_ERROR_BAD_SHAPE, "kda_prewarm: too many chunks");
  const size_t bytes = kda__plan_bytes(cap, a->chunk_size);
  uint32_t *rows = malloc(bytes);
  int64_t *cu = malloc((size_t)(N + 1) * sizeof *cu);
  kda_status st = rows && cu ? KDA_OK : kda__fail(KDA_ERROR_OUT_OF_MEMORY, "kda_prewarm: out of memory");
  if (st == KDA_OK) {
    kda__equal_seqlens(KDA_DTYPE_I64, N, T, cu);
    kda__plan_pack(cu, KDA_DTYPE_I64, N, T, a->chunk_size, KDA__PLAN_GREEDY_RUNS, rows, cap);
    st = upload(ctx->drv, b->stream, &b->table, rows, bytes);
  }
  free(rows);
  free(cu);
  KDA__TRY(st);
  kda__chunk_plan_wrap(&b->plan, ctx, b->table, cap, T, N, a->chunk_size);
  b->plan_set = 1;
  a->cu_seqlens = NULL;
  a->chunk_plan = &b->plan;
  return KDA_OK;
}

/* Equal-length sequences and their host-built chunk table. */
static kda_status make_varlen(const kda__driver *d, kda_gate_args *a, prewarm_bufs *b) {
  const int64_t N = a->num_seqs, T = a->seq_len;
  KDA__REQUIRE(N >= 1 && N <= T && a->batch == 1, KDA_ERROR_BAD_SHAPE,
               "kda_prewarm: varlen needs batch 1 and 1 <= num_seqs <= seq_len");
  const size_t isz = a->cu_seqlens_dtype == KDA_DTYPE_I64 ? 8 : 4;
  void *cu = malloc((size_t)(N + 1) * isz);
  const int64_t cap = kda_chunk_indices_capacity(T, N, a->chunk_size);
  int32_t *table = cap > 0 ? malloc((size_t)cap * 8) : NULL;
  kda_status st = cu && table ? KDA_OK : kda__fail(KDA_ERROR_OUT_OF_MEMORY, "kda_prewarm: out of memory");
  int64_t rows = 0;
  if (st == KDA_OK) {
    kda__equal_seqlens(isz == 8 ? KDA_DTYPE_I64 : KDA_DTYPE_I32, N, T, cu);
    st = kda_chunk_indices_build_host(cu, a->cu_seqlens_dtype, N, a->chunk_size, table, cap, &rows);
  }
  if (st == KDA_OK) st = upload(d, b->stream, &b->cu, cu, (size_t)(N + 1) * isz);
  if (st == KDA_OK) st = upload(d, b->stream, &b->table, table, (size_t)rows * 8);
  free(cu);
  free(table);
  KDA__TRY(st);
  a->cu_seqlens = (const void *)(uintptr_t)b->cu;
  a->chunk_indices = (const int32_t *)(uintptr_t)b->table;
  a->num_chunks = rows;
  a->num_chunks_device = NULL;
  return KDA_OK;
}

static kda_status op_of(kda_kernel kernel, kda__op *op) {
  switch (kernel) {
    case KDA_KERNEL_GATE_CHUNK_CUMSUM: *op = KDA__OP_GATE_CHUNK_CUMSUM; return KDA_OK;
    case KDA_KERNEL_CHUNK_LOCAL_CUMSUM: *op = KDA__OP_CHUNK_LOCAL_CUMSUM; return KDA_OK;
    case KDA_KERNEL_GATE: *op = KDA__OP_GATE; return KDA_OK;
    default:
      return kda__fail(KDA_ERROR_INVALID_ARGUMENT, "kernel %d is not tuned (only the gate kernels are)",
                       (int)kernel);
  }
}

kda_status kda__tune_shape_call(kda_kernel kernel, const kda_gate_args *shape, kda__op *op,
                                kda_gate_args *a, void **host_seqlens) {
  *host_seqlens = NULL;
  KDA__TRY(op_of(kernel, op));
  *a = *shape;
  a->cu_seqlens = NULL;
  a->chunk_indices = NULL;
  a->num_chunks_device = NULL;
  a->num_chunks = 0;
  /* A non-NULL chunk_plan asks for the chunk-plan specialization (varlen
   * mode 3); prewarm builds its own plan of equal-length sequences. */
  if (a->chunk_plan != NULL) a->cu_seqlens_host = NULL;
  /* Non-NULL A_log / dt_bias in a shape mean "present". */
  if (a->gate == KDA_GATE_SOFTPLUS) a->A_log = (const float *)(uintptr_t)1;
  /* A non-NULL cu_seqlens_host asks for the host-rows specialization: the
   * same equal-length sequences as the device batch, on the host. */
  if (*op == KDA__OP_GATE) a->cu_seqlens_host = NULL;
  return kda__shape_host_seqlens(a, host_seqlens);
}

static kda_status prewarm(kda_context *ctx, kda__op op, kda_gate_args *a, int force,
                          kda_prewarm_result *out) {
  if (!force) {
    /* A skip must be cheap: look the slot up before making inputs, with
     * the keys kda_db_lookup computes (tuner_call.c). */
    kda_gate_args f;
    kda__tune_stand_in_args(op, a, &f);
    kda__tune_call *call = malloc(sizeof *call);
    int found = 0;
    if (call != NULL &&
        kda__tune_call_keys(&ctx->info, ctx->arch, &ctx->sources, op, &f, call) == KDA_OK) {
      out->bucket = call->slot.bucket;
      found = kda__tuner_lookup(ctx, call, out);
    }
    free(call);
    if (found) return KDA_OK;
  }
  prewarm_bufs b;
  memset(&b, 0, sizeof b);
  CUresult cr = ctx->drv->cuStreamCreate(&b.stream, CU_STREAM_NON_BLOCKING);
  if (cr != CUDA_SUCCESS)
    return kda__cu_status(ctx->drv, cr, "cuStreamCreate(prewarm)", __FILE__, __LINE__);
  kda_status st = make_inputs(ctx->drv, a, &b);
  if (st == KDA_OK && a->num_seqs > 0 && op != KDA__OP_GATE)
    st = a->chunk_plan != NULL ? make_plan(ctx, a, &b) : make_varlen(ctx->drv, a, &b);
  else a->num_seqs = 0, a->chunk_plan = NULL;
  kda__launch_plan plan;
  if (st == KDA_OK) st = kda__plan_gate_op(op, a, &plan);
  if (st == KDA_OK) {
    /* The same heuristic (reference candidate) as a real call of the shape. */
    plan.spec.cfg = kda__config_fit_grid(&plan.spec, plan.spec.cfg, plan.num_chunks,
                                         ctx->info.sm_count);
    plan.grid = kda__spec_grid(&plan.spec, plan.num_chunks);
    kda__spec slot;
    kda__context_slot(&plan, a, &slot);
    out->bucket = slot.bucket;
    kda__tune_request rq;
    memset(&rq, 0, sizeof rq);
    rq.ctx = ctx;
    rq.args = a;
    rq.plan = &plan;
    rq.stream = b.stream;
    rq.mode = KDA_TUNE_ON;
    rq.force = force;
    rq.report = out;
    CUmodule module = NULL;
    CUfunction fn = NULL;
    kda__config cfg;
    st = kda__tuner_build(&rq, &slot, &module, &fn, &cfg);
    if (st == KDA_OK) {
      if (out->config[0] == '\0') kda__config_text(&cfg, out->config, sizeof out->config);
      ctx->drv->cuModuleUnload(module);
    }
  }
  free_bufs(ctx->drv, &b);
  return st;
}

kda_status kda_prewarm(kda_context *ctx, kda_kernel kernel, const kda_gate_args *shape,
                       int32_t force, kda_prewarm_result *out) {
  KDA__REQUIRE(ctx != NULL && shape != NULL, KDA_ERROR_NULL_POINTER, "kda_prewarm: NULL argument");
  KDA__REQUIRE(shape->struct_size == sizeof *shape, KDA_ERROR_BAD_OPTIONS,
               "kda_prewarm: kda_gate_args.struct_size is %u, expected %zu", shape->struct_size,
               sizeof *shape);
  KDA__REQUIRE(out == NULL || out->struct_size == sizeof *out, KDA_ERROR_BAD_OPTIONS,
               "kda_prewarm: kda_prewarm_result.struct_size is %u, expected %zu",
               out ? out->struct_size : 0, sizeof *out);
  kda_prewarm_result local;
  kda_prewarm_result *r = out ? out : &local;
  memset(r, 0, sizeof *r);
  r->struct_size = sizeof *r;
  r->outcome = KDA_PREWARM_FAILED;
  r->median_us = r->heuristic_us = -1;
  kda__op op = KDA__OP_GATE;
  KDA__TRY(op_of(kernel, &op));
  KDA__REQUIRE(ctx->tune_mode != KDA_TUNE_OFF, KDA_ERROR_INVALID_ARGUMENT,
               "kda_prewarm: tuning is off for this context (option or KDA_TUNE=off)");
  kda_gate_args a;
  void *host_seqlens = NULL;
  KDA__TRY(kda__tune_shape_call(kernel, shape, &op, &a, &host_seqlens));
  /* A varlen shape read through a table or a plan: the server builds it on
   * the device, so its builder's cubin belongs in the database too. */
  const int builder = op != KDA__OP_GATE && a.num_seqs > 0 && a.cu_seqlens_host == NULL;
  /* The shape is checked as a call would check it before anything is
   * sized from it: an impossible one (a zero or a product past the
   * limits) is BAD_SHAPE, never an input buffer of a wrapped size. */
  kda_gate_args f;
  kda__tune_stand_in_args(op, &a, &f);
  kda__launch_plan fp;
  kda_status st = kda__plan_gate_op(op, &f, &fp);
  if (st != KDA_OK) {
    free(host_seqlens);
    return st;
  }
  int pushed = 0;
  st = kda__context_enter(ctx, &pushed);
  if (st == KDA_OK) {
    const CUstreamCaptureMode mode = kda__driver_relax_capture(ctx->drv);
    /* Its messages wait until the run has dropped its lease and stored its
     * row: a log_fn that calls the shape (on any context) finds it. */
    kda__log_hold();
    st = prewarm(ctx, op, &a, force != 0, r);
    kda__log_release();
    if (st == KDA_OK && builder) {
      const kda__spec spec =
          kda__chunk_builder_spec(a.cu_seqlens_dtype, a.chunk_size, a.chunk_plan != NULL);
      CUfunction fn = NULL;
      st = kda__context_function(ctx, &spec, NULL, &fn);
    }
    kda__driver_restore_capture(ctx->drv, mode);
    kda__context_leave(ctx, pushed);
  }
  free(host_seqlens);
  if (st != KDA_OK) r->outcome = KDA_PREWARM_FAILED;
  return st;
}

kda_status kda__offline_cubin_make(kda_kernel kernel, const kda_gate_args *shape, int32_t arch,
                                   kda__offline_cubin *out) {
  memset(out, 0, sizeof *out);
  KDA__TRY(kda__offline_spec(kernel, shape, &out->spec));
  const char *dir = getenv("KDA_KERNEL_DIR");
  KDA__TRY(kda__source_set_load(dir && *dir ? dir : NULL, &out->sources));
  /* No device: the cubin key has no GPU identity in it. */
  kda_device_info info;
  memset(&info, 0, sizeof info);
  kda_status st = kda__tune_keys_make(&info, arch, &out->sources, &out->spec, &out->spec.cfg, 1,
                                      NULL, &out->keys);
  if (st != KDA_OK) {
    kda__offline_cubin_free(out);
    return st;
  }
  kda__config_text(&out->spec.cfg, out->config, sizeof out->config);
  kda__tune_cubin_key(&out->keys, out->config, &out->key);
  return KDA_OK;
}

void kda__offline_cubin_free(kda__offline_cubin *oc) { kda__source_set_free(&oc->sources); }

kda_status kda_compile_offline_store(kda_kernel kernel, const kda_gate_args *shape, int32_t arch,
                                     const char *db_path, double *compile_ms) {
  KDA__REQUIRE(shape != NULL, KDA_ERROR_NULL_POINTER, "kda_compile_offline_store: shape is NULL");
  KDA__REQUIRE(arch >= 50 && arch <= 200, KDA_ERROR_INVALID_ARGUMENT,
               "kda_compile_offline_store: arch %d is not a compute capability x 10", arch);
  /* An in-memory database would take the cubin and drop it on return. */
  KDA__REQUIRE(db_path == NULL || (db_path[0] != '\0' && strcmp(db_path, ":memory:") != 0),
               KDA_ERROR_INVALID_ARGUMENT, "kda_compile_offline_store: \"%s\" is an in-memory "
               "database; nothing would keep the cubin (NULL: the default path)", db_path);
  /* The gate kernels, and the chunk-table and chunk-plan builders that a
   * context also reads from the database (kda__stored_build). */
  kda__op op = KDA__OP_GATE;
  if (kernel != KDA_KERNEL_CHUNK_INDICES) KDA__TRY(op_of(kernel, &op));
  kda__offline_cubin oc;
  KDA__TRY(kda__offline_cubin_make(kernel, shape, arch, &oc));
  kda_status st = KDA_OK;
  char name[KDA__NAME_MAX];
  if (kda__spec_name(&oc.spec, name, sizeof name) <= 0)
    st = kda__fail(KDA_ERROR_INTERNAL, "specialization name too long");
  kda__compiled out;
  memset(&out, 0, sizeof out);
  if (st == KDA_OK) {
    const char *names[1] = {name};
    kda__compile_request req = {&oc.sources, kda__spec_source_name(&oc.spec), arch, names, 1};
    st = kda__nvrtc_compile(&req, &out);
  }
  if (st == KDA_OK && compile_ms) *compile_ms = out.compile_ms;
  void *framed = NULL;
  size_t framed_size = 0;
  if (st == KDA_OK)
    st = kda__cubin_frame(out.cubin, out.cubin_size, out.lowered_names[0], &framed, &framed_size);
  kda__store *store = NULL;
  if (st == KDA_OK) st = kda__store_open(db_path, 0, &store);
  if (st == KDA_OK) {
    st = kda__store_put_cubin(store, &oc.key, framed, framed_size, out.compile_ms);
    if (st == KDA_OK && kda__store_is_read_only(store))
      st = kda__fail(KDA_ERROR_READ_ONLY, "kda_compile_offline_store: the database %s is not "
                     "writable; the cubin was not stored", kda__store_path(store));
  }
  kda__store_close(store);
  free(framed);
  kda__compiled_free(&out);
  kda__offline_cubin_free(&oc);
  return st;
}
