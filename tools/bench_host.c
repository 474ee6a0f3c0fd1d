/* kda-bench's host cost (bench_host.h). */
#include "bench_host.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_common.h"
#include "bench_nvrtc.h"
#include "cuda_api.h"

/* An empty kernel with gate_cumsum's 12 parameters: a reference for the
 * driver's own cost of a launch on this machine (bare_setup). */
static CUfunction g_bare;
/* The same 88 bytes of parameters as one struct (launch_forms). */
static CUfunction g_bare1;
/* Holds the stream for a given number of ns (queued_gpu_us). */
static CUfunction g_spin;

void bench_host_init(void) {
  const char *src =
      "struct rows1 { unsigned r[1]; };\n"
      "extern \"C\" __global__ void bare(const void *g, void *out, const float *a, const float *b,\n"
      "    float scale, float lb, const int *cu, const int *ci, const int *nd, long long T,\n"
      "    long long cps, rows1 rows) {}\n"
      "struct alignas(8) args88 { char b[88]; };\n"
      "extern \"C\" __global__ void bare1(args88 a) {}\n"
      "extern \"C\" __global__ void spin(unsigned long long ns) {\n"
      "  unsigned long long t0, t;\n"
      "  asm volatile(\"mov.u64 %0, %%globaltimer;\" : \"=l\"(t0));\n"
      "  do { asm volatile(\"mov.u64 %0, %%globaltimer;\" : \"=l\"(t)); } while (t - t0 < ns);\n"
      "}\n";
  CUmodule m;
  char why[4096];
  if (bench_nvrtc_module(&cu, src, "bare.cu", g_info.cc_major, g_info.cc_minor, &m, why,
                         sizeof why) != 0) {
    fprintf(stderr, "%s\n", why);
    exit(1);
  }
  cuda_check(&cu, cu.ModuleGetFunction(&g_bare, m, "bare"), "cuModuleGetFunction(bare)");
  cuda_check(&cu, cu.ModuleGetFunction(&g_bare1, m, "bare1"), "cuModuleGetFunction(bare1)");
  cuda_check(&cu, cu.ModuleGetFunction(&g_spin, m, "spin"), "cuModuleGetFunction(spin)");
}

enum { HOST_CALLS = 100000, HOST_ROUND = 250 };

/* Median times in us of call_a(a) and, when call_b is set, call_b(b), over
 * HOST_CALLS calls each, made in rounds of HOST_ROUND after a
 * synchronisation, so the launch queue never fills and no call waits for
 * the GPU. With two calls the rounds alternate: on the lent H100 VMs the
 * driver's launch cost drifted by up to 0.5 us within a minute
 * (docs/perf-notes.md, seventh session), so a library call and a bare
 * launch measured one after the other differed by the drift as much as by
 * the library's work. */
static void median_calls_us(void (*call_a)(void *), void *a, void (*call_b)(void *), void *b,
                            double *us_a, double *us_b) {
  double *ta = malloc(sizeof(double) * HOST_CALLS);
  double *tb = call_b ? malloc(sizeof(double) * HOST_CALLS) : NULL;
  const int per = call_b ? 2 : 1;
  for (int i = 0; i < HOST_CALLS * per; ++i) {
    if (i % HOST_ROUND == 0) cu.StreamSynchronize(g_stream);
    const int round = i / HOST_ROUND, second = call_b && round % 2;
    const int k = (round / per) * HOST_ROUND + i % HOST_ROUND;
    double t0 = now_ms();
    if (second)
      call_b(b);
    else
      call_a(a);
    (second ? tb : ta)[k] = (now_ms() - t0) * 1e3;
  }
  cu.StreamSynchronize(g_stream);
  *us_a = median(ta, HOST_CALLS);
  if (call_b) *us_b = median(tb, HOST_CALLS);
  free(ta);
  free(tb);
}

typedef struct bare_call {
  CUlaunchConfig lc;
  CUlaunchAttribute attr;
  void *p;
  float scale, lb;
  long long T, cps;
  unsigned rows;
  void *params[12];
} bare_call;

static void call_bare(void *p) {
  bare_call *b = p;
  CUresult r = cu.LaunchKernelEx ? cu.LaunchKernelEx(&b->lc, g_bare, b->params, NULL)
                                 : cu.LaunchKernel(g_bare, b->lc.gridDimX, 1, 1, b->lc.blockDimX,
                                                   1, 1, 0, b->lc.hStream, b->params, NULL);
  if (r != CUDA_SUCCESS) cuda_check(&cu, r, "bare launch");
}

/* The driver's own launch cost on this machine: an empty kernel with the
 * same 12 parameters as host_cost's call, launched like the library
 * launches (cuLaunchKernelEx with programmatic stream serialization where
 * the driver has it). A reference for how fast this VM's driver launches,
 * not an exact floor: the empty kernel leaves the GPU idle between
 * launches. */
static void bare_setup(bare_call *b) {
  memset(b, 0, sizeof *b);
  b->scale = 1;
  b->T = 512;
  b->cps = 8;
  void *params[] = {&b->p, &b->p, &b->p, &b->p, &b->scale, &b->lb,
                    &b->p, &b->p, &b->p, &b->T, &b->cps,   &b->rows};
  memcpy(b->params, params, sizeof params);
  b->attr.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
  b->attr.value.programmaticStreamSerializationAllowed = 1;
  b->lc.gridDimX = 64;
  b->lc.gridDimY = b->lc.gridDimZ = 1;
  b->lc.blockDimX = 128;
  b->lc.blockDimY = b->lc.blockDimZ = 1;
  b->lc.hStream = g_stream;
  b->lc.attrs = &b->attr;
  b->lc.numAttrs = 1;
}

/* How much of the driver's launch cost depends on how a launch passes its
 * parameters and attributes: each form of launching the empty kernel, in
 * rounds alternating with the library's form (call_bare). A lead for host
 * cost (target 3), printed by the benchmark; the library keeps its form
 * unless one of these is clearly cheaper. */
typedef struct launch_form {
  const char *name;
  bare_call *b;
  int form;
  unsigned char buf[88];
  size_t buf_size;
  void *extra[5];
  void *one[1];
} launch_form;

static void call_form(void *p) {
  launch_form *f = p;
  bare_call *b = f->b;
  CUresult r = CUDA_SUCCESS;
  if (f->form == 0) { /* parameters as one buffer (the extra argument) */
    r = cu.LaunchKernelEx(&b->lc, g_bare, NULL, f->extra);
  } else if (f->form == 1) { /* no attribute: no programmatic serialization */
    CUlaunchConfig lc = b->lc;
    lc.numAttrs = 0;
    lc.attrs = NULL;
    r = cu.LaunchKernelEx(&lc, g_bare, b->params, NULL);
  } else if (f->form == 2) { /* cuLaunchKernel */
    r = cu.LaunchKernel(g_bare, b->lc.gridDimX, 1, 1, b->lc.blockDimX, 1, 1, 0, g_stream,
                        b->params, NULL);
  } else { /* one 88-byte struct parameter */
    r = cu.LaunchKernelEx(&b->lc, g_bare1, f->one, NULL);
  }
  if (r != CUDA_SUCCESS) cuda_check(&cu, r, f->name);
}

void launch_forms(void) {
  if (!cu.LaunchKernelEx) return;
  bare_call b;
  bare_setup(&b);
  static const char *names[] = {"parameters as one buffer (extra)", "no launch attribute",
                                "cuLaunchKernel", "one 88-byte struct parameter"};
  printf("  the driver by launch form (empty kernel; each in rounds alternating with "
         "cuLaunchKernelEx + programmatic serialization + 12 parameters):\n");
  for (int form = 0; form < 4; ++form) {
    launch_form f;
    memset(&f, 0, sizeof f);
    f.name = names[form];
    f.b = &b;
    f.form = form;
    /* bare's parameter layout: 4 pointers, 2 floats, 3 pointers, 2 long
     * longs, a 4-byte struct: offsets 0-24, 32, 36, 40-56, 64, 72, 80. */
    memcpy(f.buf + 32, &b.scale, 4);
    memcpy(f.buf + 36, &b.lb, 4);
    memcpy(f.buf + 64, &b.T, 8);
    memcpy(f.buf + 72, &b.cps, 8);
    f.buf_size = 84;
    f.extra[0] = CU_LAUNCH_PARAM_BUFFER_POINTER;
    f.extra[1] = f.buf;
    f.extra[2] = CU_LAUNCH_PARAM_BUFFER_SIZE;
    f.extra[3] = &f.buf_size;
    f.extra[4] = CU_LAUNCH_PARAM_END;
    f.one[0] = f.buf;
    double base = 0, us = 0;
    median_calls_us(call_bare, &b, call_form, &f, &base, &us);
    printf("    %-34s %.2f us (library's form %.2f us in the same rounds)\n", f.name, us, base);
  }
}

typedef struct gate_call {
  kda_context *ctx;
  const kda_gate_args *args;
} gate_call;

static void call_gate(void *p) {
  const gate_call *c = p;
  kda_gate_chunk_cumsum(c->ctx, c->args, (kda_stream)g_stream);
}

/* The T=512 H=4 row every host measurement calls, warm: a call's GPU side
 * (1.7-1.9 us on the H100 and H200, fourteenth session) is under the
 * driver's launch. */
typedef struct host_row {
  void *g, *out, *al;
  kda_gate_args a;
  gate_call c; /* calls ctx on a */
} host_row;

static void host_row_setup(host_row *r, kda_context *ctx) {
  const int H = 4, K = 128;
  const int64_t T = 512;
  const size_t n = (size_t)T * H * K;
  r->g = cuda_alloc(&cu, n * 2);
  r->out = cuda_alloc(&cu, n * 4);
  r->al = cuda_alloc(&cu, 64);
  cu.MemsetD32((CUdeviceptr)(uintptr_t)r->g, 0x3f803f80u, n / 2);
  cu.MemsetD32((CUdeviceptr)(uintptr_t)r->al, 0, 16);
  r->a = softplus_args(r->g, r->out, r->al, T, H, K);
  r->c.ctx = ctx;
  r->c.args = &r->a;
  kda_ok(kda_gate_chunk_cumsum(ctx, &r->a, (kda_stream)g_stream), "warm");
  cu.StreamSynchronize(g_stream);
}

static void host_row_free(host_row *r) {
  cu.StreamSynchronize(g_stream);
  cu.MemFree((CUdeviceptr)(uintptr_t)r->g);
  cu.MemFree((CUdeviceptr)(uintptr_t)r->out);
  cu.MemFree((CUdeviceptr)(uintptr_t)r->al);
}

/* call(arg) HOST_CALLS times without synchronising, then one sync: wall
 * and GPU time per call. */
static void enqueue_calls_us(void (*call)(void *), void *arg, double *wall_us, double *gpu_us) {
  CUevent e0, e1;
  cu.EventCreate(&e0, 0);
  cu.EventCreate(&e1, 0);
  const double t0 = now_ms();
  cu.EventRecord(e0, g_stream);
  for (int i = 0; i < HOST_CALLS; ++i) call(arg);
  cu.EventRecord(e1, g_stream);
  cu.StreamSynchronize(g_stream);
  *wall_us = (now_ms() - t0) * 1e3 / HOST_CALLS;
  *gpu_us = event_ms(e0, e1) * 1e3 / HOST_CALLS;
  cu.EventDestroy(e0);
  cu.EventDestroy(e1);
}

/* Host cost of a warm call. (a) Time inside the API call, median over 100k
 * calls made in rounds of 250 after a synchronisation, so the launch queue
 * never fills and no call waits for the GPU; with bare_us set, in rounds
 * alternating with the bare driver launch, whose median goes there. (b)
 * 100k enqueues without synchronising, then one sync: wall time per call,
 * which is the larger of the host cost and the GPU time (also reported;
 * queued_gpu_cost says which). */
void host_cost(kda_context *ctx, double *inside_us, double *enqueue_us, double *gpu_us,
               double *bare_us) {
  host_row r;
  host_row_setup(&r, ctx);
  bare_call b;
  bare_setup(&b);
  median_calls_us(call_gate, &r.c, bare_us ? call_bare : NULL, &b, inside_us, bare_us);
  enqueue_calls_us(call_gate, &r.c, enqueue_us, gpu_us);
  host_row_free(&r);
}

/* The bare driver launch (bare_setup) over HOST_CALLS enqueues without
 * synchronising, then one sync: the driver's own rate with the queue
 * busy, beside host_cost's (b). */
void bare_enqueue_cost(double *wall_us, double *gpu_us) {
  bare_call b;
  bare_setup(&b);
  call_bare(&b);
  cu.StreamSynchronize(g_stream);
  enqueue_calls_us(call_bare, &b, wall_us, gpu_us);
}

enum { QUEUED_CALLS = 1000 };

/* The GPU's side of QUEUED_CALLS calls of call(arg) alone: the calls are
 * queued behind a kernel that holds the stream for 10 ms, longer than the
 * host takes to enqueue them, and timed from an event after it. Their
 * GPU time per call, and (in *enqueue_ms) how long the host took to
 * queue them all; the figure holds only where that is under 10 ms. A
 * reference for host_cost's 100k enqueues: where their wall per call is
 * above this, the host's side bounds them. */
static double queued_gpu_us(void (*call)(void *), void *arg, double *enqueue_ms) {
  unsigned long long ns = 10000000ull;
  void *params[] = {&ns};
  CUevent e0, e1;
  cu.EventCreate(&e0, 0);
  cu.EventCreate(&e1, 0);
  cu.StreamSynchronize(g_stream);
  cuda_check(&cu, cu.LaunchKernel(g_spin, 1, 1, 1, 32, 1, 1, 0, g_stream, params, NULL), "spin");
  cu.EventRecord(e0, g_stream);
  const double t0 = now_ms();
  for (int i = 0; i < QUEUED_CALLS; ++i) call(arg);
  *enqueue_ms = now_ms() - t0;
  cu.EventRecord(e1, g_stream);
  cu.StreamSynchronize(g_stream);
  const double us = event_ms(e0, e1) * 1e3 / QUEUED_CALLS;
  cu.EventDestroy(e0);
  cu.EventDestroy(e1);
  return us;
}

void queued_gpu_cost(kda_context *ctx) {
  host_row r;
  host_row_setup(&r, ctx);
  bare_call b;
  bare_setup(&b);
  double enq_lib = 0, enq_bare = 0;
  const double lib = queued_gpu_us(call_gate, &r.c, &enq_lib);
  const double bare = queued_gpu_us(call_bare, &b, &enq_bare);
  printf("  the GPU's side alone (%d calls queued behind a 10 ms kernel, then timed): %.2f us "
         "per call (queued in %.1f ms); the empty kernel %.2f us (queued in %.1f ms)\n",
         QUEUED_CALLS, lib, enq_lib, bare, enq_bare);
  CUcontext cur;
  const double t0 = now_ms();
  for (int i = 0; i < 1000000; ++i) cu.CtxGetCurrent(&cur);
  /* 10^6 calls: milliseconds in all are nanoseconds each. */
  printf("  cuCtxGetCurrent (every call makes one): %.1f ns per call\n", now_ms() - t0);
  host_row_free(&r);
}

/* --host-threads N: N threads of one process call into one context at
 * once, each on a stream of its own, as the threads of a server that
 * serves several streams do; each measures host_cost. */
typedef struct host_worker {
  kda_context *ctx;
  pthread_barrier_t *start;
  pthread_t thread;
  double inside, enqueue, gpu;
} host_worker;

static void *host_worker_main(void *p) {
  host_worker *w = p;
  cuda_check(&cu, cu.CtxSetCurrent(cu.ctx), "cuCtxSetCurrent (worker)");
  cuda_check(&cu, cu.StreamCreate(&g_stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate (worker)");
  pthread_barrier_wait(w->start);
  host_cost(w->ctx, &w->inside, &w->enqueue, &w->gpu, NULL);
  cu.StreamDestroy(g_stream);
  return NULL;
}

void host_cost_threads(kda_context *ctx, int n) {
  host_worker *w = calloc((size_t)n, sizeof *w);
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, (unsigned)n);
  for (int i = 0; i < n; ++i) {
    w[i].ctx = ctx;
    w[i].start = &start;
    if (pthread_create(&w[i].thread, NULL, host_worker_main, &w[i]) != 0) {
      fprintf(stderr, "pthread_create failed\n");
      exit(1);
    }
  }
  double lo = 1e30, hi = 0, sum = 0;
  for (int i = 0; i < n; ++i) {
    pthread_join(w[i].thread, NULL);
    lo = w[i].inside < lo ? w[i].inside : lo;
    hi = w[i].inside > hi ? w[i].inside : hi;
    sum += w[i].inside;
  }
  pthread_barrier_destroy(&start);
  printf("%s: host cost per warm call (tuned-slot path), %d threads on one context, a stream "
         "each: %.3f us median inside kda_gate_chunk_cumsum (mean of the threads' medians; "
         "%.3f-%.3f)\n",
         g_info.name, n, sum / n, lo, hi);
  free(w);
}

/* A server's process has streams of its own (a framework's pool, a
 * communication library's), and some small grids run slower once a process
 * has made a few (why is not known): on the lent H200 T=512 H=8 read 2.26 us with at
 * most one extra stream and 2.68-3.12 with 4 to 32, on the H100 2.46 and
 * 2.68-2.79; rows of 4M elements and more moved by 0.3% or less (perf-notes,
 * sixteenth session). Streams made and destroyed one after another count
 * as much as streams kept. */
void bench_extra_streams(int n) {
  bare_call b;
  bare_setup(&b);
  for (int i = 0; i < n; ++i) {
    CUstream st;
    cuda_check(&cu, cu.StreamCreate(&st, CU_STREAM_NON_BLOCKING), "cuStreamCreate (extra)");
    b.lc.hStream = st;
    call_bare(&b);
    cuda_check(&cu, cu.StreamSynchronize(st), "cuStreamSynchronize (extra)");
    /* Kept: the process's streams live as long as a server's would. */
  }
  printf("extra streams: %d created before the rows, one launch each, kept\n", n);
}
