/* A stand-in for libcuda.so.1 on machines without a GPU: every driver call
 * the library and the tools make succeeds with plausible answers (one
 * sm_90 device, 132 SMs, 50 MiB L2), "device" memory is host memory, and a
 * kernel launch does nothing but count. Loaded through KDA_LIBCUDA, it lets
 * CPU tests drive the host side of the real launch path (context binding,
 * the module cache, NVRTC, argument packing) and measure its cost without
 * the driver's. Outputs are never written: nothing here checks kernels.
 * Including cuda.h makes each definition carry the versioned symbol name
 * (cuMemAlloc -> cuMemAlloc_v2) and the exact signature the library uses. */
#include <cuda.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FAKE_API __attribute__((visibility("default")))

static struct CUctx_st {
  int dummy;
} primary;
static _Thread_local CUcontext stack[16];
static _Thread_local int depth;
static atomic_long launches, live_allocs, modules;
/* Launches through cuLaunchKernelEx with programmatic stream serialization;
 * FAKE_CUDA_REFUSE_LAUNCH_EX=1 makes that call refuse the attribute
 * (CUDA_ERROR_NOT_SUPPORTED), as a driver without it would. */
static atomic_long overlap_launches, refused_launches;

/* Modules, streams and events live on one list, as a driver keeps them
 * with their context: one the library lets go of without destroying (its
 * CUDA context is gone, test_fake_driver's driver-shutdown case) is freed
 * with it by a real driver, so here it stays reachable rather than being
 * reported as the library's leak by LeakSanitizer. */
typedef union fake_obj {
  struct {
    union fake_obj *prev, *next;
  } link;
  max_align_t align;
} fake_obj;
static fake_obj fake_objs = {{&fake_objs, &fake_objs}};
static pthread_mutex_t fake_objs_lock = PTHREAD_MUTEX_INITIALIZER;

static void *obj_new(size_t n) {
  fake_obj *o = calloc(1, sizeof *o + n);
  if (o == NULL) return NULL;
  pthread_mutex_lock(&fake_objs_lock);
  o->link.next = fake_objs.link.next;
  o->link.prev = &fake_objs;
  fake_objs.link.next->link.prev = o;
  fake_objs.link.next = o;
  pthread_mutex_unlock(&fake_objs_lock);
  return o + 1;
}

static void obj_free(void *p) {
  if (p == NULL) return;
  fake_obj *o = (fake_obj *)p - 1;
  pthread_mutex_lock(&fake_objs_lock);
  o->link.prev->link.next = o->link.next;
  o->link.next->link.prev = o->link.prev;
  pthread_mutex_unlock(&fake_objs_lock);
  free(o);
}

/* A stream the test says is capturing in global mode (a blocking stream,
 * as a server's may be): cuStreamIsCapturing reports it active. Meanwhile
 * an allocation, free or module load from a thread whose capture mode is
 * not relaxed is an unsafe call (counted and refused, as the real driver
 * refuses it, invalidating the capture), and any work on or wait for the
 * legacy stream (synchronous copies, cuCtxSynchronize, stream NULL) is a
 * legacy call: it would make the capture wait, which breaks it. */
static _Atomic(CUstream) capturing;
static atomic_long unsafe_calls, legacy_calls;
static _Thread_local CUstreamCaptureMode thread_mode = CU_STREAM_CAPTURE_MODE_GLOBAL;

static int unsafe_now(void) {
  if (atomic_load(&capturing) == NULL || thread_mode == CU_STREAM_CAPTURE_MODE_RELAXED) return 0;
  atomic_fetch_add(&unsafe_calls, 1);
  return 1;
}
static void legacy_use(CUstream s) {
  if (s == NULL && atomic_load(&capturing) != NULL) atomic_fetch_add(&legacy_calls, 1);
}
/* fake_cuda_fail_allocs_after(n): only n more cuMemAlloc calls succeed,
 * the rest fail with CUDA_ERROR_OUT_OF_MEMORY; -1 (the default) lifts it. */
static atomic_long allocs_left = -1;
FAKE_API void fake_cuda_fail_allocs_after(long n) { atomic_store(&allocs_left, n); }

/* fake_cuda_refuse_module_loads(n): the next n cuModuleLoadData calls fail
 * with CUDA_ERROR_UNSUPPORTED_PTX_VERSION, as a driver older than the
 * compiler of the image does. */
static atomic_long refuse_loads;
FAKE_API void fake_cuda_refuse_module_loads(long n) { atomic_store(&refuse_loads, n); }

/* Streams made (ever) and alive now: the tuner makes one per context. */
static atomic_long streams_made, streams_live;
FAKE_API long fake_cuda_streams_made(void) { return atomic_load(&streams_made); }
FAKE_API long fake_cuda_streams_live(void) { return atomic_load(&streams_live); }

/* FAKE_CUDA_STATS_FILE=PATH: at exit, the stream counts go to PATH, for a
 * test that drives another process (kda-tune prewarm --streams). */
__attribute__((destructor)) static void write_stats_file(void) {
  const char *path = getenv("FAKE_CUDA_STATS_FILE");
  if (path == NULL || *path == '\0') return;
  FILE *f = fopen(path, "w");
  if (f == NULL) return;
  fprintf(f, "streams_made %ld\nstreams_live %ld\n", atomic_load(&streams_made),
          atomic_load(&streams_live));
  fclose(f);
}

FAKE_API void fake_cuda_capture(CUstream s) { atomic_store(&capturing, s); }
FAKE_API long fake_cuda_unsafe_calls(void) { return atomic_load(&unsafe_calls); }
FAKE_API long fake_cuda_legacy_calls(void) { return atomic_load(&legacy_calls); }
FAKE_API CUresult cuThreadExchangeStreamCaptureMode(CUstreamCaptureMode *mode) {
  const CUstreamCaptureMode old = thread_mode;
  thread_mode = *mode;
  *mode = old;
  return CUDA_SUCCESS;
}
/* fake_cuda_lose_context(r): from now on the driver behaves as after a
 * kernel faulted (r: CUDA_ERROR_ILLEGAL_ADDRESS and the like): every call
 * that does work on the device, waits for it or allocates returns r;
 * frees, unloads and destroys release what they hold and return r too.
 * Contexts can still be made current, as with a real driver. 0 undoes it. */
static atomic_int lost, lose_code;
/* fake_cuda_lose_context_after's, _after_loads' and _at_alloc's */
static atomic_long lose_countdown = -1, lose_load_countdown = -1;
static atomic_size_t lose_alloc_bytes;
FAKE_API void fake_cuda_lose_context(int r) {
  atomic_store(&lost, r);
  if (r == 0)
    atomic_store(&lose_countdown, -1), atomic_store(&lose_load_countdown, -1),
        atomic_store(&lose_alloc_bytes, 0);
}
#define RETURN_IF_LOST()                        \
  do {                                          \
    const int lost_ = atomic_load(&lost);       \
    if (lost_ != 0) return (CUresult)lost_;     \
  } while (0)
FAKE_API int fake_cuda_lost(void) { return atomic_load(&lost); }
/* fake_cuda_lose_context_after(n, r): n more launches run, and the next
 * one faults: it and everything after it return r (a fault in the middle
 * of a tuning run, say). */
FAKE_API void fake_cuda_lose_context_after(long launches, int r) {
  atomic_store(&lose_code, r);
  atomic_store(&lose_countdown, launches);
}
/* fake_cuda_lose_context_after_loads(n, r): the same, counting module
 * loads (the fault lands between a tuning run's compile and its bench). */
FAKE_API void fake_cuda_lose_context_after_loads(long loads, int r) {
  atomic_store(&lose_code, r);
  atomic_store(&lose_load_countdown, loads);
}
/* 1 if this call is the one that faults (the context is lost from now). */
static int counted_call_faults(atomic_long *countdown) {
  for (long left = atomic_load(countdown); left >= 0;) {
    if (!atomic_compare_exchange_weak(countdown, &left, left - 1)) continue;
    if (left > 0) return 0;
    atomic_store(&lost, atomic_load(&lose_code));
    return 1;
  }
  return 0;
}
/* fake_cuda_lose_async(1) (or FAKE_CUDA_LOSE_ASYNC=1 from the start): the
 * launch that faults returns CUDA_SUCCESS, as a real one does (the kernel
 * faults on the device after the launch returned), and the context is
 * lost from the next call on: the caller meets the error at a later
 * launch, copy or synchronisation. 0 (the default): the faulting launch
 * itself returns it. */
static atomic_int lose_async;
FAKE_API void fake_cuda_lose_async(int on) { atomic_store(&lose_async, on); }
/* 1 if this launch faults and returns the error itself. */
static int launch_faults(void) {
  return counted_call_faults(&lose_countdown) && !atomic_load(&lose_async);
}
/* fake_cuda_lose_context_at_alloc(bytes, r): the first cuMemAlloc of at
 * least that many bytes finds the context lost (another library's kernel
 * faulted just before), e.g. the tuner's copy-bandwidth buffers, which
 * are allocated after its candidates were timed. 0 lifts it. */
FAKE_API void fake_cuda_lose_context_at_alloc(size_t bytes, int r) {
  atomic_store(&lose_code, r);
  atomic_store(&lose_alloc_bytes, bytes);
}
static int alloc_faults(size_t n) {
  const size_t at = atomic_load(&lose_alloc_bytes);
  if (at == 0 || n < at) return 0;
  atomic_store(&lose_alloc_bytes, 0);
  atomic_store(&lost, atomic_load(&lose_code));
  return 1;
}
static CUresult lost_or(CUresult r) {
  const int l = atomic_load(&lost);
  return l != 0 ? (CUresult)l : r;
}
FAKE_API long fake_cuda_launches(void) { return atomic_load(&launches); }
FAKE_API long fake_cuda_overlap_launches(void) { return atomic_load(&overlap_launches); }
FAKE_API long fake_cuda_refused_launches(void) { return atomic_load(&refused_launches); }
FAKE_API long fake_cuda_live_allocations(void) { return atomic_load(&live_allocs); }
FAKE_API long fake_cuda_loaded_modules(void) { return atomic_load(&modules); }

/* FAKE_CUDA_INIT_RESULT=N: cuInit returns N (100: CUDA_ERROR_NO_DEVICE, as
 * a real driver does with CUDA_VISIBLE_DEVICES=""). */
FAKE_API CUresult cuInit(unsigned int flags) {
  (void)flags;
  const char *r = getenv("FAKE_CUDA_INIT_RESULT");
  return r && *r ? (CUresult)atoi(r) : CUDA_SUCCESS;
}
FAKE_API CUresult cuDriverGetVersion(int *v) { *v = 13000; return CUDA_SUCCESS; }
FAKE_API CUresult cuGetErrorName(CUresult r, const char **s) {
  *s = r == CUDA_SUCCESS                ? "CUDA_SUCCESS"
       : r == CUDA_ERROR_ILLEGAL_ADDRESS ? "CUDA_ERROR_ILLEGAL_ADDRESS"
       : r == CUDA_ERROR_LAUNCH_FAILED   ? "CUDA_ERROR_LAUNCH_FAILED"
                                         : "CUDA_ERROR_FAKE";
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuGetErrorString(CUresult r, const char **s) {
  *s = r == CUDA_SUCCESS ? "no error" : "fake driver error";
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuDeviceGetCount(int *n) { *n = 1; return CUDA_SUCCESS; }
FAKE_API CUresult cuDeviceGet(CUdevice *d, int ordinal) {
  if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
  *d = 0;
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuDeviceGetName(char *name, int len, CUdevice d) {
  (void)d;
  snprintf(name, (size_t)len, "Fake GPU (no device)");
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuDeviceGetAttribute(int *v, CUdevice_attribute a, CUdevice d) {
  (void)d;
  switch (a) {
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *v = 9; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *v = 0; break;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *v = 132; break;
    case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: *v = 50 << 20; break;
    default: *v = 0;
  }
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuDeviceGetPCIBusId(char *s, int len, CUdevice d) {
  (void)d;
  snprintf(s, (size_t)len, "0000:00:00.0");
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d) {
  (void)d;
  *c = &primary;
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuDevicePrimaryCtxRelease(CUdevice d) { (void)d; return CUDA_SUCCESS; }
/* fake_cuda_deinitialize(1): context calls fail as they do while the
 * driver shuts down at exit (CUDA_ERROR_DEINITIALIZED); 0 undoes it. */
static atomic_int deinitialized;
FAKE_API void fake_cuda_deinitialize(int on) { atomic_store(&deinitialized, on); }
FAKE_API CUresult cuCtxGetCurrent(CUcontext *c) {
  if (atomic_load(&deinitialized)) return CUDA_ERROR_DEINITIALIZED;
  *c = depth ? stack[depth - 1] : NULL;
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuCtxSetCurrent(CUcontext c) {
  if (depth == 0) depth = 1;
  stack[depth - 1] = c;
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuCtxPushCurrent(CUcontext c) {
  if (atomic_load(&deinitialized)) return CUDA_ERROR_DEINITIALIZED;
  if (depth == 16) return CUDA_ERROR_INVALID_VALUE;
  stack[depth++] = c;
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuCtxPopCurrent(CUcontext *c) {
  if (depth == 0) return CUDA_ERROR_INVALID_CONTEXT;
  if (c) *c = stack[depth - 1];
  --depth;
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuCtxGetDevice(CUdevice *d) { *d = 0; return CUDA_SUCCESS; }
FAKE_API CUresult cuCtxSynchronize(void) {
  RETURN_IF_LOST();
  legacy_use(NULL);
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuModuleLoadData(CUmodule *m, const void *image) {
  if (image == NULL) return CUDA_ERROR_INVALID_IMAGE;
  RETURN_IF_LOST();
  if (counted_call_faults(&lose_load_countdown)) return (CUresult)atomic_load(&lost);
  if (unsafe_now()) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  for (long left = atomic_load(&refuse_loads); left > 0;)
    if (atomic_compare_exchange_weak(&refuse_loads, &left, left - 1))
      return CUDA_ERROR_UNSUPPORTED_PTX_VERSION;
  *m = (CUmodule)obj_new(16);
  atomic_fetch_add(&modules, 1);
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuModuleUnload(CUmodule m) {
  if (unsafe_now()) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  obj_free(m);
  atomic_fetch_sub(&modules, 1);
  return lost_or(CUDA_SUCCESS);
}
/* fake_cuda_compare_passes(1) (or FAKE_CUDA_COMPARE_PASSES=1 from the
 * start): the tuner's compare kernel reports every element visited and
 * equal, as on a GPU where every candidate computes the reference's
 * output, so that a tuning run gets past validation, times its candidates
 * and stores its winner. Off, the stand-in's kernels write nothing and
 * every run stops at validation: a test that a run stored nothing after a
 * fault would pass whatever the library did. Its handle is the module's
 * address + 1 (the others' is the module's): never dereferenced. */
static atomic_int compare_passes;
FAKE_API void fake_cuda_compare_passes(int on) { atomic_store(&compare_passes, on); }
/* The switches a test that drives another process (kda-tune verify or
 * prewarm meeting a fault) sets in its environment:
 * FAKE_CUDA_LOSE_AFTER_LAUNCHES=N is fake_cuda_lose_context_after(N,
 * CUDA_ERROR_ILLEGAL_ADDRESS) from the start; FAKE_CUDA_LOSE_ASYNC=1 and
 * FAKE_CUDA_COMPARE_PASSES=1 turn on what their functions above do. */
__attribute__((constructor)) static void switches_from_the_environment(void) {
  const char *n = getenv("FAKE_CUDA_LOSE_AFTER_LAUNCHES");
  if (n != NULL && *n != '\0') fake_cuda_lose_context_after(atol(n), CUDA_ERROR_ILLEGAL_ADDRESS);
  const char *v = getenv("FAKE_CUDA_LOSE_ASYNC");
  if (v != NULL && strcmp(v, "1") == 0) fake_cuda_lose_async(1);
  v = getenv("FAKE_CUDA_COMPARE_PASSES");
  if (v != NULL && strcmp(v, "1") == 0) fake_cuda_compare_passes(1);
}
static int is_compare(CUfunction f) { return ((uintptr_t)f & 1u) != 0; }
FAKE_API CUresult cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name) {
  *f = (CUfunction)((uintptr_t)m + (name != NULL && strstr(name, "tune_compare") != NULL));
  return CUDA_SUCCESS;
}
/* The compare kernel's result words (kernel_templates/tune_compare.cuh):
 * none wrong, none unwritten, error 0, n visited, none NaN in both. */
static void compare_run(CUfunction f, void **params) {
  if (!is_compare(f) || !atomic_load(&compare_passes)) return;
  const long long n = *(const long long *)params[2];
  unsigned long long *res = *(unsigned long long **)params[4];
  memset(res, 0, 5 * sizeof *res);
  res[3] = (unsigned long long)n;
}
FAKE_API CUresult cuFuncGetAttribute(int *v, CUfunction_attribute a, CUfunction f) {
  (void)a;
  (void)f;
  *v = 0;
  return CUDA_SUCCESS;
}
/* A stream made while a context was current remembers it; a launch on a
 * stream of another context than the current one fails, as a launch of
 * one GPU's function on another GPU's stream does. Streams made with no
 * context current, and handles the tests make up, belong to any. */
#define OWNED_MAX 64
static struct { CUstream s; CUcontext owner; } owned[OWNED_MAX];
static atomic_int owned_n;
static pthread_mutex_t owned_lock = PTHREAD_MUTEX_INITIALIZER;
static CUcontext stream_owner(CUstream s) {
  if (s == NULL || atomic_load(&owned_n) == 0) return NULL;
  CUcontext c = NULL;
  pthread_mutex_lock(&owned_lock);
  for (int i = 0; i < OWNED_MAX; ++i)
    if (owned[i].s == s) c = owned[i].owner;
  pthread_mutex_unlock(&owned_lock);
  return c;
}
static void stream_owned(CUstream s, CUcontext owner) {
  pthread_mutex_lock(&owned_lock);
  for (int i = 0; i < OWNED_MAX; ++i) {
    if (owner != NULL && owned[i].s == NULL) {
      owned[i].s = s, owned[i].owner = owner;
      atomic_fetch_add(&owned_n, 1);
      break;
    }
    if (owner == NULL && owned[i].s == s) {
      owned[i].s = NULL;
      atomic_fetch_sub(&owned_n, 1);
    }
  }
  pthread_mutex_unlock(&owned_lock);
}
static int foreign_stream(CUstream s) {
  const CUcontext owner = stream_owner(s);
  return owner != NULL && owner != (depth ? stack[depth - 1] : NULL);
}
FAKE_API CUresult cuStreamGetCtx(CUstream s, CUcontext *c) {
  *c = s ? stream_owner(s) : (depth ? stack[depth - 1] : NULL);
  if (*c == NULL) *c = &primary;
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                 unsigned by, unsigned bz, unsigned smem, CUstream s, void **params,
                                 void **extra) {
  (void)gy; (void)gz; (void)by; (void)bz; (void)smem; (void)extra;
  if (f == NULL || gx == 0 || bx == 0 || bx > 1024 || params == NULL) return CUDA_ERROR_INVALID_VALUE;
  RETURN_IF_LOST();
  if (launch_faults()) return (CUresult)atomic_load(&lost);
  if (foreign_stream(s)) return CUDA_ERROR_INVALID_HANDLE;
  legacy_use(s);
  compare_run(f, params);
  atomic_fetch_add(&launches, 1);
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuLaunchKernelEx(const CUlaunchConfig *c, CUfunction f, void **params,
                                   void **extra) {
  (void)extra;
  if (c == NULL || f == NULL || c->gridDimX == 0 || c->blockDimX == 0 || c->blockDimX > 1024 ||
      c->gridDimY != 1 || c->gridDimZ != 1 || c->blockDimY != 1 || c->blockDimZ != 1 ||
      params == NULL || (c->numAttrs > 0 && c->attrs == NULL))
    return CUDA_ERROR_INVALID_VALUE;
  RETURN_IF_LOST();
  if (launch_faults()) return (CUresult)atomic_load(&lost);
  if (foreign_stream(c->hStream)) return CUDA_ERROR_INVALID_HANDLE;
  legacy_use(c->hStream);
  int pdl = 0;
  for (unsigned i = 0; i < c->numAttrs; ++i)
    if (c->attrs[i].id == CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION)
      pdl = c->attrs[i].value.programmaticStreamSerializationAllowed != 0;
  const char *refuse = getenv("FAKE_CUDA_REFUSE_LAUNCH_EX");
  if (pdl && refuse && strcmp(refuse, "1") == 0) {
    atomic_fetch_add(&refused_launches, 1);
    return CUDA_ERROR_NOT_SUPPORTED;
  }
  atomic_fetch_add(&launches, 1);
  if (pdl) atomic_fetch_add(&overlap_launches, 1);
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuMemAlloc(CUdeviceptr *p, size_t n) {
  RETURN_IF_LOST();
  if (alloc_faults(n)) return (CUresult)atomic_load(&lost);
  if (unsafe_now()) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  for (long left = atomic_load(&allocs_left); left >= 0;) {
    if (left == 0) return CUDA_ERROR_OUT_OF_MEMORY;
    if (atomic_compare_exchange_weak(&allocs_left, &left, left - 1)) break;
  }
  void *m = aligned_alloc(256, (n + 255) & ~(size_t)255);
  if (!m) return CUDA_ERROR_OUT_OF_MEMORY;
  *p = (CUdeviceptr)(uintptr_t)m;
  atomic_fetch_add(&live_allocs, 1);
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuMemFree(CUdeviceptr p) {
  if (unsafe_now()) return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
  free((void *)(uintptr_t)p);
  atomic_fetch_sub(&live_allocs, 1);
  return lost_or(CUDA_SUCCESS);
}
FAKE_API CUresult cuMemcpyHtoD(CUdeviceptr d, const void *s, size_t n) {
  RETURN_IF_LOST();
  legacy_use(NULL);
  memcpy((void *)(uintptr_t)d, s, n);
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuMemcpyDtoH(void *d, CUdeviceptr s, size_t n) {
  RETURN_IF_LOST();
  legacy_use(NULL);
  memcpy(d, (const void *)(uintptr_t)s, n);
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuMemcpyDtoD(CUdeviceptr d, CUdeviceptr s, size_t n) {
  RETURN_IF_LOST();
  legacy_use(NULL);
  memmove((void *)(uintptr_t)d, (const void *)(uintptr_t)s, n);
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuMemcpyHtoDAsync(CUdeviceptr d, const void *s, size_t n, CUstream st) {
  RETURN_IF_LOST();
  legacy_use(st);
  memcpy((void *)(uintptr_t)d, s, n);
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuMemcpyDtoHAsync(void *d, CUdeviceptr s, size_t n, CUstream st) {
  RETURN_IF_LOST();
  legacy_use(st);
  memcpy(d, (const void *)(uintptr_t)s, n);
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuMemcpyDtoDAsync(CUdeviceptr d, CUdeviceptr s, size_t n, CUstream st) {
  RETURN_IF_LOST();
  legacy_use(st);
  memmove((void *)(uintptr_t)d, (const void *)(uintptr_t)s, n);
  return CUDA_SUCCESS;
}
static void fill32(CUdeviceptr d, unsigned int v, size_t n) {
  uint32_t *p = (uint32_t *)(uintptr_t)d;
  for (size_t i = 0; i < n; ++i) p[i] = v;
}
FAKE_API CUresult cuMemsetD32(CUdeviceptr d, unsigned int v, size_t n) {
  RETURN_IF_LOST();
  legacy_use(NULL);
  fill32(d, v, n);
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuMemsetD32Async(CUdeviceptr d, unsigned int v, size_t n, CUstream s) {
  RETURN_IF_LOST();
  legacy_use(s);
  fill32(d, v, n);
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuStreamCreate(CUstream *s, unsigned int flags) {
  (void)flags;
  RETURN_IF_LOST();
  *s = (CUstream)obj_new(16);
  if (depth && stack[depth - 1] != NULL) stream_owned(*s, stack[depth - 1]);
  atomic_fetch_add(&streams_made, 1);
  atomic_fetch_add(&streams_live, 1);
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuStreamDestroy(CUstream s) {
  stream_owned(s, NULL);
  obj_free(s);
  atomic_fetch_sub(&streams_live, 1);
  return lost_or(CUDA_SUCCESS);
}
FAKE_API CUresult cuStreamSynchronize(CUstream s) {
  RETURN_IF_LOST();
  legacy_use(s);
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuStreamIsCapturing(CUstream s, CUstreamCaptureStatus *st) {
  RETURN_IF_LOST();
  *st = s != NULL && s == atomic_load(&capturing) ? CU_STREAM_CAPTURE_STATUS_ACTIVE
                                                   : CU_STREAM_CAPTURE_STATUS_NONE;
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuStreamBeginCapture(CUstream s, CUstreamCaptureMode m) {
  (void)s;
  (void)m;
  return CUDA_ERROR_NOT_SUPPORTED;
}
FAKE_API CUresult cuStreamEndCapture(CUstream s, CUgraph *g) {
  (void)s;
  (void)g;
  return CUDA_ERROR_NOT_SUPPORTED;
}
FAKE_API CUresult cuGraphInstantiate(CUgraphExec *e, CUgraph g, unsigned long long f) {
  (void)e; (void)g; (void)f;
  return CUDA_ERROR_NOT_SUPPORTED;
}
FAKE_API CUresult cuGraphLaunch(CUgraphExec e, CUstream s) { (void)e; (void)s; return CUDA_ERROR_NOT_SUPPORTED; }
FAKE_API CUresult cuGraphExecDestroy(CUgraphExec e) { (void)e; return CUDA_SUCCESS; }
FAKE_API CUresult cuGraphDestroy(CUgraph g) { (void)g; return CUDA_SUCCESS; }
FAKE_API CUresult cuEventCreate(CUevent *e, unsigned int flags) {
  (void)flags;
  RETURN_IF_LOST();
  *e = (CUevent)obj_new(sizeof(struct timespec));
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuEventDestroy(CUevent e) {
  obj_free(e);
  return lost_or(CUDA_SUCCESS);
}
FAKE_API CUresult cuEventRecord(CUevent e, CUstream s) {
  RETURN_IF_LOST();
  legacy_use(s);
  clock_gettime(CLOCK_MONOTONIC, (struct timespec *)(void *)e);
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuEventSynchronize(CUevent e) {
  (void)e;
  return lost_or(CUDA_SUCCESS);
}
FAKE_API CUresult cuEventElapsedTime(float *ms, CUevent a, CUevent b) {
  const struct timespec *x = (const void *)a, *y = (const void *)b;
  *ms = (float)((y->tv_sec - x->tv_sec) * 1e3 + (y->tv_nsec - x->tv_nsec) / 1e6);
  return CUDA_SUCCESS;
}
FAKE_API CUresult cuModuleGetGlobal(CUdeviceptr *p, size_t *n, CUmodule m, const char *name) {
  (void)p; (void)n; (void)m; (void)name;
  return CUDA_ERROR_NOT_FOUND;
}
