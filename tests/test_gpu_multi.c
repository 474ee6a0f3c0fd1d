/* Every GPU of the machine in one process, as a tensor-parallel server
 * drives them: each context computes on its own device whatever CUDA
 * context the calling thread has current (and leaves that one current),
 * device -1 follows the current context, a stream of another device is
 * refused by name, the GPUs of one model meeting one cold key tune it once
 * between them, GPUs tuning different keys at once do not take turns (the
 * timing lock is per device), and threads capturing graphs of kda calls on
 * every device at once each get a whole graph (a cold call refused inside
 * each capture). Every output is poisoned with NaN first and checked
 * against the float64 reference. Skips (exit 77), saying why, on a machine
 * with fewer than two GPUs. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "gpu_util.h"
#include "kda/kda.h"
#include "kda/kda_db.h"
#include "reference.h"
#include "test_util.h"
#include "tuner.h" /* kda__tune_kit_acquire: hold one GPU's timing section */

#define TOL 2e-5
#define POISON 0x7fc00000u /* float NaN */
#define MAX_GPUS 8         /* the most one host has; more are left out, saying so */

static const kda__driver *g_drv;
static int g_n;                  /* the GPUs the cases use: every visible one, up to MAX_GPUS */
static CUcontext g_cu[MAX_GPUS]; /* each device's primary context */

static void cu_ok(CUresult r, const char *what) {
  if (r != CUDA_SUCCESS) {
    const char *name = "?";
    g_drv->cuGetErrorName(r, &name);
    fail_msg("%s: %s", what, name);
  }
}

static CUcontext current(void) {
  CUcontext c = NULL;
  cu_ok(g_drv->cuCtxGetCurrent(&c), "cuCtxGetCurrent");
  return c;
}

static void make_current(int d) { cu_ok(g_drv->cuCtxSetCurrent(g_cu[d]), "cuCtxSetCurrent"); }

/* Device d's context current until leave(); what was current before is
 * current again after. */
static void enter(int d) { cu_ok(g_drv->cuCtxPushCurrent(g_cu[d]), "cuCtxPushCurrent"); }

static void leave(void) {
  CUcontext popped;
  cu_ok(g_drv->cuCtxPopCurrent(&popped), "cuCtxPopCurrent");
}

static int next_device(int d) { return (d + 1) % g_n; }

static kda_context *context_on(int device, int mode, const char *db) {
  kda_options o = kda_options_default();
  o.device = device;
  o.tune_mode = mode;
  o.db_path = db;
  o.tune_budget_ms = 500.0;
  kda_context *ctx = NULL;
  GU_CHECK(kda_context_create(&o, &ctx));
  return ctx;
}

static kda_stats stats_of(kda_context *ctx) {
  kda_stats s = {.struct_size = sizeof s};
  GU_CHECK(kda_context_get_stats(ctx, &s));
  return s;
}

static long long sql_int(const char *db, const char *sql) {
  sqlite3 *h = NULL;
  long long v = -1;
  assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_busy_timeout(h, 5000);
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK)
    fail_msg("%s: %s", sql, sqlite3_errmsg(h));
  if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(h);
  return v;
}

static void temp_db(char *path, size_t n) {
  char dir[] = "/tmp/kda_gpu_multi_XXXXXX";
  assert_non_null(mkdtemp(dir));
  snprintf(path, n, "%s/tune.db", dir);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* ------------------------------------------------------------------------ */
/* A batch on one device: inputs, the reference, and device buffers made in  */
/* that device's context (the thread's current context is left as it was).   */
/* ------------------------------------------------------------------------ */

typedef struct batch {
  int device;
  kda_gate_args a; /* device pointers on `device` */
  size_t n;
  double *ref;
  CUdeviceptr buf[5]; /* g, out, A_log, dt_bias, cu_seqlens */
  int32_t cu_host[64];  /* cu_seqlens on the host (varlen) */
} batch;

static CUdeviceptr upload_on(int d, const void *src, size_t bytes) {
  CUdeviceptr p = 0;
  enter(d);
  cu_ok(g_drv->cuMemAlloc(&p, bytes), "cuMemAlloc");
  if (src) cu_ok(g_drv->cuMemcpyHtoD(p, src, bytes), "cuMemcpyHtoD");
  leave();
  return p;
}

static void free_on(int d, CUdeviceptr p) {
  enter(d);
  if (p) g_drv->cuMemFree(p);
  leave();
}

/* bf16 raw gate [1, T, H, K] (varlen: lens, else dense), softplus with
 * A_log and dt_bias, chunk 64, on device d. */
static void batch_make(int d, int H, int K, int64_t T, const int32_t *lens, int nseq,
                       uint64_t seed, batch *b) {
  memset(b, 0, sizeof *b);
  b->device = d;
  tu_rng rng;
  tu_rng_seed(&rng, seed);
  int32_t *cu = b->cu_host;
  if (lens) {
    for (int i = 0; i < nseq; ++i) cu[i + 1] = cu[i] + lens[i];
    T = cu[nseq];
  }
  const size_t hk = (size_t)H * (size_t)K;
  b->n = (size_t)T * hk;
  uint16_t *g = malloc(b->n * 2);
  double *gd = malloc(b->n * sizeof(double));
  b->ref = malloc(b->n * sizeof(double));
  float alog[64], *bias = malloc(hk * sizeof(float));
  assert_true(g && gd && b->ref && bias && H <= 64);
  tu_fill_random_input(&rng, KDA_DTYPE_BF16, g, gd, b->n, 1.0);
  for (int h = 0; h < H; ++h) alog[h] = (float)log(1.0 + 15.0 * tu_uniform(&rng));
  for (size_t i = 0; i < hk; ++i) bias[i] = (float)tu_normal(&rng);

  kda_gate_args a = kda_gate_args_default();
  a.g_dtype = KDA_DTYPE_BF16;
  a.batch = 1;
  a.seq_len = T;
  a.num_heads = H;
  a.head_dim = K;
  a.chunk_size = 64;
  a.gate = KDA_GATE_SOFTPLUS;
  kda_gate_args h = a;
  h.A_log = alog;
  h.dt_bias = bias;
  if (lens) {
    h.cu_seqlens = cu;
    h.cu_seqlens_dtype = KDA_DTYPE_I32;
    h.num_seqs = nseq;
  }
  assert_int_equal(kda_ref_gate_chunk_cumsum(&h, gd, b->ref), 0);

  b->buf[0] = upload_on(d, g, b->n * 2);
  b->buf[1] = upload_on(d, NULL, b->n * sizeof(float));
  b->buf[2] = upload_on(d, alog, (size_t)H * sizeof(float));
  b->buf[3] = upload_on(d, bias, hk * sizeof(float));
  a.g = (const void *)(uintptr_t)b->buf[0];
  a.out = (void *)(uintptr_t)b->buf[1];
  a.A_log = (const float *)(uintptr_t)b->buf[2];
  a.dt_bias = (const float *)(uintptr_t)b->buf[3];
  if (lens) {
    b->buf[4] = upload_on(d, cu, ((size_t)nseq + 1) * sizeof(int32_t));
    a.cu_seqlens = (const void *)(uintptr_t)b->buf[4];
    a.cu_seqlens_dtype = KDA_DTYPE_I32;
    a.num_seqs = nseq;
  }
  b->a = a;
  free(g);
  free(gd);
  free(bias);
}

/* Also takes a batch left all zeros (a device a case made none for). */
static void batch_free(batch *b) {
  for (int i = 0; i < 5; ++i) free_on(b->device, b->buf[i]);
  free(b->ref);
}

/* Poisons device d's n floats at p, in stream order on s of that device. */
static void poison_at(int d, CUdeviceptr p, size_t n, CUstream s) {
  enter(d);
  cu_ok(g_drv->cuMemsetD32Async(p, POISON, n, s), "cuMemsetD32Async");
  leave();
}

/* Poisons the output before the calls the caller makes on stream s of the
 * batch's device; download_bad reads it back after them. */
static void poison_on(const batch *b, CUstream s) { poison_at(b->device, b->buf[1], b->n, s); }

static void sync_on(int d, CUstream s) {
  enter(d);
  cu_ok(g_drv->cuStreamSynchronize(s), "cuStreamSynchronize (kernel error?)");
  leave();
}

/* Elements out of budget (after synchronising s in the batch's context). */
static size_t download_bad(const batch *b, CUstream s) {
  float *host = malloc(b->n * sizeof(float));
  assert_non_null(host);
  sync_on(b->device, s);
  enter(b->device);
  cu_ok(g_drv->cuMemcpyDtoH(host, b->buf[1], b->n * sizeof(float)), "cuMemcpyDtoH");
  leave();
  double max_err = 0;
  size_t first = 0;
  const size_t bad = tu_check_close(host, b->ref, b->n, TOL, &max_err, &first);
  if (bad) fprintf(stderr, "device %d: %zu bad elements, first at %zu\n", b->device, bad, first);
  free(host);
  return bad;
}

/* Of device d's n floats at p, those still holding the poison's very bits
 * (after synchronising s): what nothing wrote. */
static size_t still_poisoned(int d, CUdeviceptr p, size_t n, CUstream s) {
  uint32_t *host = malloc(n * sizeof *host);
  assert_non_null(host);
  sync_on(d, s);
  enter(d);
  cu_ok(g_drv->cuMemcpyDtoH(host, p, n * sizeof *host), "cuMemcpyDtoH");
  leave();
  size_t left = 0;
  for (size_t i = 0; i < n; ++i) left += host[i] == POISON;
  free(host);
  return left;
}

static CUstream stream_on(int d) {
  CUstream s = NULL;
  enter(d);
  cu_ok(g_drv->cuStreamCreate(&s, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
  leave();
  return s;
}

static void stream_free(int d, CUstream s) {
  enter(d);
  g_drv->cuStreamDestroy(s);
  leave();
}

static const int32_t LENS[] = {1, 63, 64, 65, 200, 7, 129, 500};
#define NLENS ((int)(sizeof LENS / sizeof LENS[0]))

/* One context, one stream and one batch per device, as the cases that run
 * a thread per device set them up. */
typedef void batch_maker(int d, batch *b);

typedef struct rig {
  char db[256]; /* the contexts' database ("" for none) */
  kda_context *ctx[MAX_GPUS];
  CUstream s[MAX_GPUS];
  batch b[MAX_GPUS]; /* all zeros where the maker made none */
} rig;

static void rig_open(rig *r, int mode, const char *db, batch_maker *make) {
  memset(r, 0, sizeof *r);
  if (db) snprintf(r->db, sizeof r->db, "%s", db);
  for (int d = 0; d < g_n; ++d) {
    r->ctx[d] = context_on(d, mode, db ? r->db : NULL);
    r->s[d] = stream_on(d);
    make(d, &r->b[d]);
  }
}

/* Tuning on, over a fresh database of the rig's own. */
static void rig_open_tuning(rig *r, batch_maker *make) {
  char db[256];
  temp_db(db, sizeof db);
  rig_open(r, KDA_TUNE_ON, db, make);
}

static void rig_close(rig *r) {
  for (int d = 0; d < g_n; ++d) {
    kda_context_destroy(r->ctx[d]);
    batch_free(&r->b[d]);
    stream_free(d, r->s[d]);
  }
}

/* ------------------------------------------------------------------------ */
/* 1. Each context computes on its own device                               */
/* ------------------------------------------------------------------------ */

/* Every varlen path of one batch on device d's context: the fused kernel
 * dense, through a device table kda_layer_gate_fwd builds in its
 * workspace, with the rows in the launch (cu_seqlens_host), and through a
 * chunk plan; the calls on a stream of d, the thread's current context
 * another device's throughout (and still that one after each call). */
static void every_path_on(kda_context *ctx, int d) {
  const CUcontext other = current();
  assert_ptr_not_equal(other, g_cu[d]);
  CUstream s = stream_on(d);
  batch dense, var;
  batch_make(d, 8, 128, 1000, NULL, 0, 0x31 + (uint64_t)d, &dense);
  batch_make(d, 8, 128, 0, LENS, NLENS, 0x41 + (uint64_t)d, &var);

  poison_on(&dense, s);
  GU_CHECK(kda_gate_chunk_cumsum(ctx, &dense.a, (kda_stream)s));
  assert_ptr_equal(current(), other);
  assert_int_equal(download_bad(&dense, s), 0);

  const size_t ws_bytes = kda_layer_workspace_size(var.a.seq_len, NLENS, 64);
  const CUdeviceptr ws = upload_on(d, NULL, ws_bytes);
  poison_on(&var, s);
  GU_CHECK(kda_layer_gate_fwd(ctx, &var.a, (void *)(uintptr_t)ws, ws_bytes, (kda_stream)s));
  assert_ptr_equal(current(), other);
  assert_int_equal(download_bad(&var, s), 0);

  int32_t cu_host[NLENS + 1] = {0};
  for (int i = 0; i < NLENS; ++i) cu_host[i + 1] = cu_host[i] + LENS[i];
  kda_gate_args rows = var.a;
  rows.cu_seqlens_host = cu_host;
  poison_on(&var, s);
  GU_CHECK(kda_gate_chunk_cumsum(ctx, &rows, (kda_stream)s));
  assert_int_equal(download_bad(&var, s), 0);

  kda_chunk_plan *plan = NULL;
  GU_CHECK(kda_chunk_plan_create(ctx, var.a.seq_len, NLENS, 64, &plan));
  assert_ptr_equal(current(), other);
  GU_CHECK(kda_chunk_plan_build(plan, var.a.cu_seqlens, KDA_DTYPE_I32, NLENS, var.a.seq_len,
                                (kda_stream)s));
  assert_ptr_equal(current(), other);
  kda_gate_args pa = var.a;
  pa.cu_seqlens = NULL;
  pa.chunk_plan = plan;
  poison_on(&var, s);
  GU_CHECK(kda_gate_chunk_cumsum(ctx, &pa, (kda_stream)s));
  assert_int_equal(download_bad(&var, s), 0);
  kda_chunk_plan_destroy(plan);
  assert_ptr_equal(current(), other);

  free_on(d, ws);
  batch_free(&dense);
  batch_free(&var);
  stream_free(d, s);
}

static void each_context_computes_on_its_own_device(void **state) {
  (void)state;
  make_current(0);
  kda_context *ctx[MAX_GPUS];
  for (int d = 0; d < g_n; ++d) {
    ctx[d] = context_on(d, KDA_TUNE_OFF, NULL);
    assert_ptr_equal(current(), g_cu[0]);
    kda_device_info info = {.struct_size = sizeof info};
    GU_CHECK(kda_context_get_device_info(ctx[d], &info));
    assert_int_equal(info.ordinal, d);
    char bus[64] = "?";
    CUdevice dev;
    if (g_drv->cuDeviceGet(&dev, d) == CUDA_SUCCESS)
      g_drv->cuDeviceGetPCIBusId(bus, (int)sizeof bus, dev);
    printf("device %d: %s, PCI bus %s\n", d, info.name, bus);
  }
  /* Highest ordinal first, each with the next device's context current:
   * devices 1 and up compute before their own context was ever current on
   * this thread. */
  for (int d = g_n - 1; d >= 0; --d) {
    make_current(next_device(d));
    every_path_on(ctx[d], d);
  }
  for (int d = 0; d < g_n; ++d) {
    const kda_stats s = stats_of(ctx[d]);
    printf("device %d: %llu launches, %llu NVRTC compiles\n", d, (unsigned long long)s.launches,
           (unsigned long long)s.nvrtc_compiles);
    assert_true(s.launches >= 4);
  }
  const CUcontext last = current();
  for (int d = 0; d < g_n; ++d) kda_context_destroy(ctx[d]);
  assert_ptr_equal(current(), last);
}

/* ------------------------------------------------------------------------ */
/* 2. device -1 follows the thread's current context                        */
/* ------------------------------------------------------------------------ */

/* Created with device d's context current, called with the next device's
 * current: it still runs on d. */
static void minus_one_binds_device(int d) {
  make_current(d);
  kda_context *ctx = context_on(-1, KDA_TUNE_OFF, NULL);
  kda_device_info info = {.struct_size = sizeof info};
  GU_CHECK(kda_context_get_device_info(ctx, &info));
  assert_int_equal(info.ordinal, d);
  const int other = next_device(d);
  make_current(other);
  CUstream s = stream_on(d);
  batch b;
  batch_make(d, 4, 64, 777, NULL, 0, 0x51 + (uint64_t)d, &b);
  poison_on(&b, s);
  GU_CHECK(kda_gate_chunk_cumsum(ctx, &b.a, (kda_stream)s));
  assert_ptr_equal(current(), g_cu[other]);
  assert_int_equal(download_bad(&b, s), 0);
  batch_free(&b);
  stream_free(d, s);
  kda_context_destroy(ctx);
}

static void device_minus_one_binds_the_current_contexts_device(void **state) {
  (void)state;
  for (int d = 0; d < g_n; ++d) minus_one_binds_device(d);
}

/* Device `foreign`'s stream passed to device `owner`'s context (a server
 * that mixed up its devices), with the foreign device's context current,
 * so that the current context agrees with the stream: the driver refuses
 * the launch, and the status says what the caller passed; nothing ran, and
 * both devices go on working. */
static void foreign_stream_is_refused(int owner, int foreign) {
  make_current(foreign);
  kda_context *ctx = context_on(owner, KDA_TUNE_OFF, NULL);
  CUstream mine = stream_on(owner), theirs = stream_on(foreign);
  batch b;
  batch_make(owner, 4, 128, 640, NULL, 0, 0x55 + (uint64_t)owner, &b);
  poison_on(&b, mine);
  GU_CHECK(kda_gate_chunk_cumsum(ctx, &b.a, (kda_stream)mine)); /* warm */
  assert_int_equal(download_bad(&b, mine), 0);
  poison_on(&b, mine);
  sync_on(owner, mine);
  const kda_status st = kda_gate_chunk_cumsum(ctx, &b.a, (kda_stream)theirs);
  printf("device %d's context, device %d's stream: %s\n", owner, foreign,
         st == KDA_OK ? "KDA_OK" : kda_last_error()); /* the message starts with the name */
  assert_int_equal(st, KDA_ERROR_INVALID_ARGUMENT);
  assert_non_null(strstr(kda_last_error(), "the stream belongs to another CUDA context"));
  /* Whatever a launch on the foreign stream did has finished (or faulted,
   * failing here) before the output is read: every element is still the
   * poison. */
  sync_on(foreign, theirs);
  assert_int_equal(still_poisoned(owner, b.buf[1], b.n, mine), b.n);
  poison_on(&b, mine);
  GU_CHECK(kda_gate_chunk_cumsum(ctx, &b.a, (kda_stream)mine));
  assert_int_equal(download_bad(&b, mine), 0);
  assert_ptr_equal(current(), g_cu[foreign]);
  batch_free(&b);
  stream_free(owner, mine);
  stream_free(foreign, theirs);
  kda_context_destroy(ctx);
}

static void a_stream_of_the_other_device_is_named(void **state) {
  (void)state;
  for (int d = 0; d < g_n; ++d) foreign_stream_is_refused(next_device(d), d);
}

/* ------------------------------------------------------------------------ */
/* 3. Every GPU tuning at once                                              */
/* ------------------------------------------------------------------------ */

typedef struct crew crew;

typedef struct tuner_thread {
  kda_context *ctx;
  batch *b;
  CUstream s;
  crew *team;
  kda_status st;
  double ms;
  char err[512];
} tuner_thread;

/* Threads, one per device, whose cold calls start together. */
struct crew {
  int n;
  pthread_barrier_t start;
  pthread_t th[MAX_GPUS];
  tuner_thread t[MAX_GPUS];
  atomic_int done; /* threads whose call has returned */
};

/* The worker's thread has no current CUDA context at all. */
static void *tuner_run(void *arg) {
  tuner_thread *t = arg;
  pthread_barrier_wait(&t->team->start);
  const double t0 = now_ms();
  t->st = kda_gate_chunk_cumsum(t->ctx, &t->b->a, (kda_stream)t->s);
  t->ms = now_ms() - t0;
  if (t->st != KDA_OK) snprintf(t->err, sizeof t->err, "%s", kda_last_error());
  atomic_fetch_add(&t->team->done, 1);
  return NULL;
}

/* Starts one thread per listed device of the rig on its batch, the outputs
 * poisoned first; crew_finish joins them and checks the outputs. */
static void crew_start(crew *c, rig *r, const int *devs, int n) {
  c->n = n;
  atomic_init(&c->done, 0);
  for (int i = 0; i < n; ++i) {
    poison_on(&r->b[devs[i]], r->s[devs[i]]);
    sync_on(devs[i], r->s[devs[i]]);
  }
  assert_int_equal(pthread_barrier_init(&c->start, NULL, (unsigned)n), 0);
  for (int i = 0; i < n; ++i) {
    const int d = devs[i];
    c->t[i] = (tuner_thread){.ctx = r->ctx[d], .b = &r->b[d], .s = r->s[d], .team = c};
    assert_int_equal(pthread_create(&c->th[i], NULL, tuner_run, &c->t[i]), 0);
  }
}

static void crew_finish(crew *c, rig *r) {
  for (int i = 0; i < c->n; ++i) pthread_join(c->th[i], NULL);
  pthread_barrier_destroy(&c->start);
  for (int i = 0; i < c->n; ++i) {
    const tuner_thread *t = &c->t[i];
    if (t->st != KDA_OK)
      fail_msg("device %d: %s: %s", t->b->device, kda_status_name(t->st), t->err);
    assert_int_equal(download_bad(t->b, r->s[t->b->device]), 0);
  }
}

/* The devices of the GPU model most of them are (by the database's GPU
 * key: what rows are shared under), lowest ordinal first; returns how
 * many. */
static int largest_model_group(const rig *r, int devs[MAX_GPUS]) {
  char key[MAX_GPUS][128];
  for (int d = 0; d < g_n; ++d) {
    kda_device_info info = {.struct_size = sizeof info};
    GU_CHECK(kda_context_get_device_info(r->ctx[d], &info));
    assert_true(kda_db_gpu_key(&info, key[d], sizeof key[d]) > 0);
    printf("device %d: GPU key %s\n", d, key[d]);
  }
  int best = 0, best_size = 0;
  for (int d = 0; d < g_n; ++d) {
    int size = 0;
    for (int e = 0; e < g_n; ++e) size += strcmp(key[d], key[e]) == 0;
    if (size > best_size) {
      best = d;
      best_size = size;
    }
  }
  int n = 0;
  for (int e = 0; e < g_n; ++e)
    if (strcmp(key[best], key[e]) == 0) devs[n++] = e;
  return n;
}

static void cold_key_batch(int d, batch *b) {
  batch_make(d, 16, 128, 3000, NULL, 0, 0x61 + (uint64_t)d, b);
}

static void every_gpu_of_one_model_tunes_one_cold_key_once(void **state) {
  (void)state;
  rig r;
  rig_open_tuning(&r, cold_key_batch);
  int devs[MAX_GPUS];
  const int n = largest_model_group(&r, devs);
  if (n < 2) {
    /* Not a failure of the library: every GPU of the machine is another
     * model, whose rows are its own (test_gpu_server covers that). */
    printf("SKIPPED part: no two of the %d devices are one model (keys above)\n", g_n);
    rig_close(&r); /* skip() leaves the test: nothing may outlive it */
    skip();
  }
  printf("%d of %d devices are one model: they meet one cold key at once\n", n, g_n);
  crew c;
  crew_start(&c, &r, devs, n);
  crew_finish(&c, &r);
  unsigned long long runs = 0, hits = 0;
  for (int i = 0; i < n; ++i) {
    const kda_stats st = stats_of(r.ctx[devs[i]]);
    printf("device %d: first call %.0f ms, tuning_runs=%llu db_result_hits=%llu "
           "nvrtc=%llu\n", devs[i], c.t[i].ms, (unsigned long long)st.tuning_runs,
           (unsigned long long)st.db_result_hits, (unsigned long long)st.nvrtc_compiles);
    /* Each met the key once: it tuned it or read the row, not both. */
    assert_int_equal(st.tuning_runs + st.db_result_hits, 1);
    runs += st.tuning_runs;
    hits += st.db_result_hits;
  }
  /* One model, one key: one of them tunes it, every other reads its row. */
  assert_int_equal(runs, 1);
  assert_int_equal(hits, n - 1);
  assert_int_equal(sql_int(r.db, "SELECT count(*) FROM results"), 1);
  assert_int_equal(sql_int(r.db, "SELECT count(*) FROM leases WHERE expires_at > 0"), 0);
  rig_close(&r);
}

/* Head counts of one key a device in the cases below: all different. */
static const int HEADS[MAX_GPUS] = {32, 4, 16, 8, 24, 2, 48, 12};

/* Even devices a dense batch, odd ones a varlen batch with its rows in the
 * launch (no table to build). */
static void own_key_batch(int d, batch *b) {
  if (d % 2 == 0) {
    batch_make(d, HEADS[d], 128, 2500, NULL, 0, 0x71 + (uint64_t)d, b);
    return;
  }
  batch_make(d, HEADS[d], 128, 0, LENS, NLENS, 0x71 + (uint64_t)d, b);
  b->a.cu_seqlens_host = b->cu_host;
}

static void every_gpu_tunes_its_own_key_without_taking_turns(void **state) {
  (void)state;
  rig r;
  rig_open_tuning(&r, own_key_batch);
  int all[MAX_GPUS];
  for (int d = 0; d < g_n; ++d) all[d] = d;
  crew c;
  crew_start(&c, &r, all, g_n);
  crew_finish(&c, &r);
  for (int d = 0; d < g_n; ++d) {
    const kda_stats st = stats_of(r.ctx[d]);
    printf("device %d: first call %.0f ms, tuning_runs=%llu timing_waits=%llu (%.1f ms)\n", d,
           c.t[d].ms, (unsigned long long)st.tuning_runs,
           (unsigned long long)st.tuning_timing_waits, st.tuning_timing_wait_ms_total);
    assert_int_equal(st.tuning_runs, 1);
    /* Each GPU's timing lock is its own: none waited for another. */
    assert_int_equal(st.tuning_timing_waits, 0);
  }
  assert_int_equal(sql_int(r.db, "SELECT count(*) FROM results"), g_n);
  rig_close(&r);
}

/* The test above shows no wait where the runs' timing sections did not
 * overlap (a lock for the whole process would pass it too). Here device
 * 0's timing section is held, as a run of device 0 holds it, for the whole
 * of every other device's cold call: each tunes without waiting. With one
 * lock for every GPU their runs wait until the hold ends (120 s at most),
 * and the test fails. Each device d >= 1 has a key of its own (8 d heads),
 * so that each tunes rather than reads another's row. */
static void held_key_batch(int d, batch *b) {
  if (d > 0) batch_make(d, 8 * d, 128, 1500, NULL, 0, 0x80 + (uint64_t)d, b);
}

static void one_gpus_timing_holds_up_no_other_gpu(void **state) {
  (void)state;
  rig r;
  rig_open_tuning(&r, held_key_batch);
  int others[MAX_GPUS];
  for (int d = 1; d < g_n; ++d) others[d - 1] = d;

  enter(0);
  kda__tune_kit *kit = NULL;
  double waited = 0;
  GU_CHECK(kda__tune_kit_acquire(r.ctx[0], &kit, &waited));
  leave();
  crew c;
  crew_start(&c, &r, others, g_n - 1);
  const double t0 = now_ms();
  while (atomic_load(&c.done) < g_n - 1 && now_ms() - t0 < 120000.0) usleep(10000);
  const int finished_while_held = atomic_load(&c.done);
  enter(0);
  kda__tune_kit_release(r.ctx[0]);
  leave();
  crew_finish(&c, &r);
  for (int i = 0; i < g_n - 1; ++i) {
    const kda_stats st = stats_of(r.ctx[others[i]]);
    printf("device %d tuned in %.0f ms with device 0's timing held: tuning_runs=%llu "
           "timing_waits=%llu\n", others[i], c.t[i].ms, (unsigned long long)st.tuning_runs,
           (unsigned long long)st.tuning_timing_waits);
    assert_int_equal(st.tuning_runs, 1);
    assert_int_equal(st.tuning_timing_waits, 0);
  }
  assert_int_equal(finished_while_held, g_n - 1);
  rig_close(&r);
}

/* ------------------------------------------------------------------------ */
/* 4. Every GPU captures a graph at once                                    */
/* ------------------------------------------------------------------------ */

/* One device's capture, recorded by a thread of its own: warm calls (the
 * rig's dense batch, then a varlen batch through the device table
 * kda_layer_gate_fwd builds in its workspace) around a cold one. The
 * thread makes no cmocka call (a failed assertion jumps, and not across
 * threads): it keeps what it saw for the main thread to check. */
typedef struct capturer {
  int device;
  kda_context *ctx;
  CUstream s;
  const batch *dense, *var;
  kda_gate_args cold; /* the dense batch reversed (a key never warmed), into cold_out */
  CUdeviceptr cold_out, ws;
  size_t ws_bytes;
  pthread_barrier_t *step;
  CUresult set, begin, query, end, after;
  CUstreamCaptureStatus cap, cap_after;
  kda_status dense_st, cold_st, var_st;
  char err[512], cold_err[512];
  double begun_ms, calls_from_ms, calls_to_ms, ending_ms;
  CUgraph graph;
} capturer;

static void graph_dense_batch(int d, batch *b) {
  batch_make(d, 8, 128, 1000, NULL, 0, 0x91 + (uint64_t)d, b);
}

static void keep_error(kda_status st, char *err, size_t n) {
  if (st != KDA_OK) snprintf(err, n, "%s", kda_last_error());
}

/* Three barriers: every thread starts together, every capture has begun
 * before any thread records, and no capture ends before every thread has
 * recorded; so each call below is made while every device captures. The
 * captures are in the default global mode, where a call that is not
 * capture-safe, on any thread, is refused and invalidates them all. */
static void *capture_run(void *arg) {
  capturer *c = arg;
  const kda_stream s = (kda_stream)c->s;
  c->set = g_drv->cuCtxSetCurrent(g_cu[c->device]); /* as a server's thread of that GPU */
  pthread_barrier_wait(c->step);
  c->begin = g_drv->cuStreamBeginCapture(c->s, CU_STREAM_CAPTURE_MODE_GLOBAL);
  c->begun_ms = now_ms();
  pthread_barrier_wait(c->step);
  c->calls_from_ms = now_ms();
  if (c->begin == CUDA_SUCCESS) {
    c->dense_st = kda_gate_chunk_cumsum(c->ctx, &c->dense->a, s);
    keep_error(c->dense_st, c->err, sizeof c->err);
    c->cold_st = kda_gate_chunk_cumsum(c->ctx, &c->cold, s);
    keep_error(c->cold_st, c->cold_err, sizeof c->cold_err);
    c->var_st = kda_layer_gate_fwd(c->ctx, &c->var->a, (void *)(uintptr_t)c->ws, c->ws_bytes, s);
    keep_error(c->var_st, c->err, sizeof c->err);
    c->query = g_drv->cuStreamIsCapturing(c->s, &c->cap);
  }
  c->calls_to_ms = now_ms();
  pthread_barrier_wait(c->step);
  c->ending_ms = now_ms();
  if (c->begin == CUDA_SUCCESS) c->end = g_drv->cuStreamEndCapture(c->s, &c->graph);
  c->after = g_drv->cuStreamIsCapturing(c->s, &c->cap_after);
  return NULL;
}

/* Device d's capturer over the rig's context, stream and dense batch and
 * the varlen batch var, every specialization it records warmed (and
 * checked) outside capture first. Fields the thread sets start as
 * failures, so that a step it skipped fails the checks. */
static void capturer_make(capturer *c, rig *r, int d, const batch *var, pthread_barrier_t *step) {
  memset(c, 0, sizeof *c);
  c->device = d;
  c->ctx = r->ctx[d];
  c->s = r->s[d];
  c->dense = &r->b[d];
  c->var = var;
  c->step = step;
  c->cold = c->dense->a;
  c->cold.reverse = 1;
  c->cold_out = upload_on(d, NULL, c->dense->n * sizeof(float));
  c->cold.out = (void *)(uintptr_t)c->cold_out;
  c->ws_bytes = kda_layer_workspace_size(var->a.seq_len, var->a.num_seqs, 64);
  c->ws = upload_on(d, NULL, c->ws_bytes);
  c->set = c->begin = c->query = c->end = c->after = CUDA_ERROR_UNKNOWN;
  c->cap = c->cap_after = CU_STREAM_CAPTURE_STATUS_INVALIDATED;
  c->dense_st = c->cold_st = c->var_st = KDA_ERROR_INTERNAL;

  poison_on(c->dense, c->s);
  GU_CHECK(kda_gate_chunk_cumsum(c->ctx, &c->dense->a, (kda_stream)c->s));
  assert_int_equal(download_bad(c->dense, c->s), 0);
  poison_on(var, c->s);
  GU_CHECK(kda_layer_gate_fwd(c->ctx, &var->a, (void *)(uintptr_t)c->ws, c->ws_bytes,
                              (kda_stream)c->s));
  assert_int_equal(download_bad(var, c->s), 0);
}

static void capturer_free(capturer *c) {
  free_on(c->device, c->cold_out);
  free_on(c->device, c->ws);
  enter(c->device);
  if (c->graph) g_drv->cuGraphDestroy(c->graph);
  leave();
}

/* What device d's thread saw: its capture began, held every call (the
 * cold one refused without ending it), and ended into a graph. */
static void capture_went_whole(const capturer *c, const kda_stats *warm) {
  const int d = c->device;
  printf("device %d: captured %s; cold call %s: %s\n", d,
         c->cap == CU_STREAM_CAPTURE_STATUS_ACTIVE ? "to the end" : "NOT to the end",
         kda_status_name(c->cold_st), c->cold_err);
  assert_int_equal(c->set, CUDA_SUCCESS);
  assert_int_equal(c->begin, CUDA_SUCCESS);
  if (c->dense_st != KDA_OK || c->var_st != KDA_OK)
    fail_msg("device %d: dense %s, varlen %s: %s", d, kda_status_name(c->dense_st),
             kda_status_name(c->var_st), c->err);
  assert_int_equal(c->cold_st, KDA_ERROR_CAPTURE_COLD);
  assert_int_equal(c->query, CUDA_SUCCESS);
  assert_int_equal(c->cap, CU_STREAM_CAPTURE_STATUS_ACTIVE);
  assert_int_equal(c->end, CUDA_SUCCESS);
  assert_non_null(c->graph);
  assert_int_equal(c->after, CUDA_SUCCESS);
  assert_int_equal(c->cap_after, CU_STREAM_CAPTURE_STATUS_NONE);
  /* The cold call compiled nothing: it was refused before NVRTC. */
  const kda_stats now = stats_of(c->ctx);
  assert_int_equal(now.nvrtc_compiles, warm->nvrtc_compiles);
}

/* The threads' timestamps: every capture had begun before the first call
 * of any thread and ended after the last, so all of them were open at
 * once through every thread's calls. */
static void captures_overlapped(const capturer c[], int n) {
  double last_begun = -INFINITY, first_call = INFINITY, last_call = -INFINITY,
         first_end = INFINITY;
  for (int d = 0; d < n; ++d) {
    last_begun = fmax(last_begun, c[d].begun_ms);
    first_call = fmin(first_call, c[d].calls_from_ms);
    last_call = fmax(last_call, c[d].calls_to_ms);
    first_end = fmin(first_end, c[d].ending_ms);
  }
  printf("%d captures open together for %.2f ms, every thread's calls within\n", n,
         first_end - last_begun);
  assert_true(last_begun <= first_call);
  assert_true(last_call <= first_end);
}

/* Replays device d's graph onto poisoned outputs and a zeroed workspace
 * (a table build missing from the graph would leave the varlen output
 * unwritten) and returns the elements out of budget; the cold call's
 * output is never written. */
static size_t replay_bad(const capturer *c, CUgraphExec exec) {
  const int d = c->device;
  poison_on(c->dense, c->s);
  poison_on(c->var, c->s);
  poison_at(d, c->cold_out, c->dense->n, c->s);
  enter(d);
  cu_ok(g_drv->cuMemsetD32Async(c->ws, 0, c->ws_bytes / 4, c->s), "cuMemsetD32Async");
  cu_ok(g_drv->cuGraphLaunch(exec, c->s), "cuGraphLaunch");
  leave();
  const size_t bad = download_bad(c->dense, c->s) + download_bad(c->var, c->s);
  assert_int_equal(still_poisoned(d, c->cold_out, c->dense->n, c->s), c->dense->n);
  return bad;
}

static void every_gpu_captures_a_graph_at_once_and_replays_it(void **state) {
  (void)state;
  make_current(0);
  rig r;
  rig_open(&r, KDA_TUNE_OFF, NULL, graph_dense_batch);
  batch var[MAX_GPUS];
  capturer c[MAX_GPUS];
  kda_stats warm[MAX_GPUS];
  pthread_barrier_t step;
  for (int d = 0; d < g_n; ++d) {
    batch_make(d, 8, 128, 0, LENS, NLENS, 0xa1 + (uint64_t)d, &var[d]);
    capturer_make(&c[d], &r, d, &var[d], &step);
    warm[d] = stats_of(r.ctx[d]);
  }
  assert_int_equal(pthread_barrier_init(&step, NULL, (unsigned)g_n), 0);
  pthread_t th[MAX_GPUS];
  for (int d = 0; d < g_n; ++d)
    assert_int_equal(pthread_create(&th[d], NULL, capture_run, &c[d]), 0);
  for (int d = 0; d < g_n; ++d) pthread_join(th[d], NULL);
  pthread_barrier_destroy(&step);

  for (int d = 0; d < g_n; ++d) capture_went_whole(&c[d], &warm[d]);
  captures_overlapped(c, g_n);
  for (int d = 0; d < g_n; ++d) {
    CUgraphExec exec = NULL;
    enter(d);
    cu_ok(g_drv->cuGraphInstantiate(&exec, c[d].graph, 0), "cuGraphInstantiate");
    leave();
    size_t bad = 0;
    for (int replay = 0; replay < 2; ++replay) bad += replay_bad(&c[d], exec);
    printf("device %d: 2 replays, %zu elements out of budget\n", d, bad);
    assert_int_equal(bad, 0);
    enter(d);
    g_drv->cuGraphExecDestroy(exec);
    leave();
  }
  for (int d = 0; d < g_n; ++d) {
    capturer_free(&c[d]);
    batch_free(&var[d]);
  }
  rig_close(&r);
}

int main(void) {
  g_drv = gu_require_gpu("test_gpu_multi");
  int count = 0;
  if (g_drv->cuDeviceGetCount(&count) != CUDA_SUCCESS) return 1;
  if (count < 2) {
    printf("SKIPPED: test_gpu_multi needs two GPUs; the driver reports %d\n", count);
    return GU_SKIP_EXIT;
  }
  g_n = count < MAX_GPUS ? count : MAX_GPUS;
  printf("test_gpu_multi: the driver reports %d GPUs; the cases use %d\n", count, g_n);
  for (int d = 0; d < g_n; ++d) {
    CUdevice dev;
    if (g_drv->cuDeviceGet(&dev, d) != CUDA_SUCCESS ||
        g_drv->cuDevicePrimaryCtxRetain(&g_cu[d], dev) != CUDA_SUCCESS)
      return 1;
  }
  /* The tests set the mode themselves; no other tool's lock directory. */
  unsetenv("KDA_TUNE");
  unsetenv("KDA_TEST_GPU_IDENTITY");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(each_context_computes_on_its_own_device),
      cmocka_unit_test(device_minus_one_binds_the_current_contexts_device),
      cmocka_unit_test(a_stream_of_the_other_device_is_named),
      cmocka_unit_test(every_gpu_of_one_model_tunes_one_cold_key_once),
      cmocka_unit_test(every_gpu_tunes_its_own_key_without_taking_turns),
      cmocka_unit_test(one_gpus_timing_holds_up_no_other_gpu),
      cmocka_unit_test(every_gpu_captures_a_graph_at_once_and_replays_it),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
