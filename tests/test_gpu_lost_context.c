/* A real kernel fault on a GPU, as another library's kernel in a server
 * process makes one: the CUDA context is lost for the process, so
 * each scene runs in a process of its own (this program, spawned with a
 * scene name). The fault is a gate call whose input is an unmapped address,
 * on a context that tunes nothing. What each scene checks: every later call
 * returns KDA_ERROR_CONTEXT_LOST saying so, kda_context_destroy returns
 * promptly, and a tuning run the fault interrupts (in kda_prewarm, in the
 * background worker) leaves no winner, trial or lease in the database. The
 * parent then reads the database and spawns a fresh process that tunes the
 * key afresh: nothing of the lost process stands in its way. With two
 * GPUs, device 1's calls after a fault on device 0 compute correctly or
 * say their context is lost too, as the driver decides (skipped with
 * one). Skips (exit 77) without a GPU. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "gpu_util.h"
#include "reference.h"
#include "test_util.h"
#include "kda/kda.h"
#include "kda/kda_db.h"

extern char **environ;

static char g_self[PATH_MAX];

/* ------------------------------------------------------------------------ */
/* The scenes (child processes): no cmocka here, a failure exits 1.         */
/* ------------------------------------------------------------------------ */

static const char *g_scene = "?";
static const kda__driver *g_drv;

#define EXPECT(cond, ...)                                                \
  do {                                                                   \
    if (!(cond)) {                                                       \
      fprintf(stderr, "scene %s, line %d: ", g_scene, __LINE__);         \
      fprintf(stderr, __VA_ARGS__);                                      \
      fprintf(stderr, "\n  (last error: %s)\n", kda_last_error());       \
      exit(1);                                                           \
    }                                                                    \
  } while (0)

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* One gate call's buffers on the device: H=16 K=128 T=8192, bf16 in. */
enum { H = 16, K = 128, T = 8192 };
typedef struct call {
  kda_gate_args a;
  void *g, *out, *A_log;
  uint16_t *host_g; /* the input as uploaded */
  float host_A_log[H];
} call;

/* Device memory of device d (its primary context made current). */
static void *upload_on(int d, const void *src, size_t bytes) {
  CUdevice dev;
  CUcontext cu;
  CUdeviceptr p = 0;
  EXPECT(g_drv->cuDeviceGet(&dev, d) == CUDA_SUCCESS &&
             g_drv->cuDevicePrimaryCtxRetain(&cu, dev) == CUDA_SUCCESS &&
             g_drv->cuCtxSetCurrent(cu) == CUDA_SUCCESS && g_drv->cuMemAlloc(&p, bytes) == CUDA_SUCCESS &&
             (src == NULL || g_drv->cuMemcpyHtoD(p, src, bytes) == CUDA_SUCCESS),
         "device memory on device %d", d);
  return (void *)(uintptr_t)p;
}

static void call_make_on(call *c, int d) {
  const size_t n = (size_t)T * H * K;
  uint16_t *g = malloc(n * 2);
  EXPECT(g != NULL, "out of host memory");
  uint32_t x = 12345;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    g[i] = (uint16_t)(0x3f00 | (x >> 25)); /* bf16 in [0.5, 1) */
  }
  for (int h = 0; h < H; ++h) c->host_A_log[h] = 0.1f * (float)h;
  c->g = upload_on(d, g, n * 2);
  c->out = upload_on(d, NULL, n * 4);
  c->A_log = upload_on(d, c->host_A_log, sizeof c->host_A_log);
  c->host_g = g;
  c->a = kda_gate_args_default();
  c->a.g = c->g;
  c->a.g_dtype = KDA_DTYPE_BF16;
  c->a.out = c->out;
  c->a.batch = 1;
  c->a.seq_len = T;
  c->a.num_heads = H;
  c->a.head_dim = K;
  c->a.chunk_size = 64;
  c->a.gate = KDA_GATE_SOFTPLUS;
  c->a.A_log = c->A_log;
}

static void call_make(call *c) { call_make_on(c, 0); }

static kda_context *context_make(const char *db, int tune_mode) {
  kda_options o = kda_options_default();
  o.tune_mode = tune_mode;
  o.db_path = db;
  o.tune_budget_ms = 15000; /* the whole space, as kda-tune prewarm: seconds of timing */
  kda_context *ctx = NULL;
  EXPECT(kda_context_create(&o, &ctx) == KDA_OK, "kda_context_create");
  return ctx;
}

/* A warm context that tunes nothing, and the call that faults on it: the
 * input is an address no process maps (below mmap_min_addr). */
typedef struct faulter {
  kda_context *ctx;
  call c;
  kda_stream stream;
} faulter;

static void faulter_make(faulter *f) {
  f->ctx = context_make(NULL, KDA_TUNE_OFF);
  call_make(&f->c);
  EXPECT(kda_gate_chunk_cumsum(f->ctx, &f->c.a, NULL) == KDA_OK, "warm call");
  gu_sync();
}

static void fault_now(faulter *f) {
  kda_gate_args bad = f->c.a;
  bad.g = (const void *)(uintptr_t)0x1000;
  EXPECT(kda_gate_chunk_cumsum(f->ctx, &bad, f->stream) == KDA_OK,
         "the faulting call is launched (its fault comes later)");
}

static void expect_lost(kda_status st, const char *what) {
  EXPECT(st == KDA_ERROR_CONTEXT_LOST, "%s: %s, not KDA_ERROR_CONTEXT_LOST", what,
         kda_status_name(st));
  EXPECT(strstr(kda_last_error(), "the CUDA context is lost") != NULL, "%s: message", what);
  printf("scene %s: %s -> %s\n", g_scene, what, kda_last_error());
}

static void destroy_promptly(kda_context *ctx, const char *what) {
  const double t0 = now_ms();
  kda_context_destroy(ctx);
  const double ms = now_ms() - t0;
  printf("scene %s: kda_context_destroy(%s) took %.1f ms\n", g_scene, what, ms);
  EXPECT(ms < 2000.0, "destroy of %s took %.0f ms", what, ms);
}

/* Waits until a tuning run holds the GPU's timing lock (the only lock file
 * in $KDA_TIMING_LOCK_DIR): its candidates are being timed. */
static void wait_for_timing(void) {
  const char *dir = getenv("KDA_TIMING_LOCK_DIR");
  EXPECT(dir != NULL, "KDA_TIMING_LOCK_DIR unset");
  const double deadline = now_ms() + 60000.0;
  struct timespec nap = {0, 2 * 1000000L};
  while (now_ms() < deadline) {
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[PATH_MAX] = "";
    while (d != NULL && (e = readdir(d)) != NULL)
      if (strncmp(e->d_name, "kda-timing-", 11) == 0)
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (d != NULL) closedir(d);
    const int fd = path[0] ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (fd >= 0) {
      const int busy = flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
      close(fd); /* releases it at once if it was taken */
      if (busy) return;
    }
    nanosleep(&nap, NULL);
  }
  EXPECT(0, "no tuning run held the timing lock within 60 s");
}

typedef struct prewarm_job {
  kda_context *ctx;
  kda_gate_args shape;
  kda_status st;
  char message[2048];
} prewarm_job;

static void *prewarm_thread(void *p) {
  prewarm_job *j = p;
  kda_prewarm_result r = {.struct_size = sizeof r};
  j->st = kda_prewarm(j->ctx, KDA_KERNEL_GATE_CHUNK_CUMSUM, &j->shape, 0, &r);
  snprintf(j->message, sizeof j->message, "%s", kda_last_error());
  return NULL;
}

/* The fault first, then calls of every kind on contexts made before it. */
static int scene_before(const char *db) {
  faulter f = {0};
  faulter_make(&f);
  kda_context *tuning = context_make(db, KDA_TUNE_ON);
  call c;
  call_make(&c);
  fault_now(&f);
  const CUresult r = g_drv->cuCtxSynchronize();
  EXPECT(kda__cu_context_lost(r), "cuCtxSynchronize after the fault returned %d", (int)r);
  printf("scene before: the fault: cuCtxSynchronize returned %d\n", (int)r);
  expect_lost(kda_gate_chunk_cumsum(f.ctx, &f.c.a, NULL), "a warm call");
  expect_lost(kda_gate_chunk_cumsum(tuning, &c.a, NULL), "a cold call that would tune");
  kda_gate_args other = c.a;
  other.num_heads = 8;
  kda_prewarm_result pr = {.struct_size = sizeof pr};
  expect_lost(kda_prewarm(tuning, KDA_KERNEL_GATE_CHUNK_CUMSUM, &other, 0, &pr), "kda_prewarm");
  EXPECT(pr.outcome == KDA_PREWARM_FAILED, "prewarm outcome %d", pr.outcome);
  /* A context made after the fault: refused, or made and then refused. */
  kda_options o = kda_options_default();
  kda_context *late = NULL;
  const kda_status st = kda_context_create(&o, &late);
  printf("scene before: kda_context_create after the fault -> %s\n", kda_status_name(st));
  EXPECT(st == KDA_OK || st == KDA_ERROR_CONTEXT_LOST, "kda_context_create: %s",
         kda_status_name(st));
  if (st == KDA_OK) {
    expect_lost(kda_gate_chunk_cumsum(late, &c.a, NULL), "a call on a context made after it");
    destroy_promptly(late, "the late context");
  }
  destroy_promptly(tuning, "the tuning context");
  destroy_promptly(f.ctx, "the faulting context");
  return 0;
}

/* The fault while kda_prewarm times its candidates. */
static int scene_prewarm(const char *db) {
  faulter f = {0};
  faulter_make(&f);
  prewarm_job j = {.ctx = context_make(db, KDA_TUNE_ON)};
  call c;
  call_make(&c);
  j.shape = c.a;
  pthread_t th;
  EXPECT(pthread_create(&th, NULL, prewarm_thread, &j) == 0, "pthread_create");
  wait_for_timing();
  const double t0 = now_ms();
  fault_now(&f);
  pthread_join(th, NULL);
  printf("scene prewarm: the prewarm returned %.0f ms after the fault: %s\n", now_ms() - t0,
         j.message);
  EXPECT(j.st == KDA_ERROR_CONTEXT_LOST, "prewarm: %s", kda_status_name(j.st));
  EXPECT(strstr(j.message, "the CUDA context is lost") != NULL, "prewarm message");
  kda_stats s = {.struct_size = sizeof s};
  EXPECT(kda_context_get_stats(j.ctx, &s) == KDA_OK && s.tuning_runs == 0, "no tuning run counted");
  destroy_promptly(j.ctx, "the tuning context");
  destroy_promptly(f.ctx, "the faulting context");
  return 0;
}

/* The fault while the background worker times the key of a call. */
static int scene_background(const char *db) {
  faulter f = {0};
  faulter_make(&f);
  kda_context *bg = context_make(db, KDA_TUNE_BACKGROUND);
  call c;
  call_make(&c);
  EXPECT(kda_gate_chunk_cumsum(bg, &c.a, NULL) == KDA_OK, "the call runs on the heuristic");
  wait_for_timing();
  fault_now(&f);
  kda_stats s = {.struct_size = sizeof s};
  const double deadline = now_ms() + 60000.0;
  struct timespec nap = {0, 10 * 1000000L};
  do {
    EXPECT(kda_context_get_stats(bg, &s) == KDA_OK, "stats");
    if (s.background_jobs > 0) break;
    nanosleep(&nap, NULL);
  } while (now_ms() < deadline);
  EXPECT(s.background_jobs == 1 && s.tuning_runs == 0, "the job ended without a run: %llu jobs, "
         "%llu runs", (unsigned long long)s.background_jobs, (unsigned long long)s.tuning_runs);
  expect_lost(kda_gate_chunk_cumsum(bg, &c.a, NULL), "the next call");
  destroy_promptly(bg, "the background context");
  destroy_promptly(f.ctx, "the faulting context");
  return 0;
}

static void make_current(int d) {
  CUdevice dev;
  CUcontext cu;
  EXPECT(g_drv->cuDeviceGet(&dev, d) == CUDA_SUCCESS &&
             g_drv->cuDevicePrimaryCtxRetain(&cu, dev) == CUDA_SUCCESS &&
             g_drv->cuCtxSetCurrent(cu) == CUDA_SUCCESS,
         "device %d's context current", d);
  g_drv->cuDevicePrimaryCtxRelease(dev); /* retained by the kda_context too */
}

/* Elements of c's output (on device d) outside 2e-5 (1 + |ref|) of float64. */
static size_t wrong_elements(const call *c, int d) {
  const size_t n = (size_t)T * H * K;
  float *got = malloc(n * sizeof *got);
  double *g = malloc(n * sizeof *g), *ref = malloc(n * sizeof *ref);
  EXPECT(got && g && ref, "out of host memory");
  make_current(d);
  EXPECT(g_drv->cuCtxSynchronize() == CUDA_SUCCESS, "device %d synchronises", d);
  EXPECT(g_drv->cuMemcpyDtoH(got, (CUdeviceptr)(uintptr_t)c->out, n * 4) == CUDA_SUCCESS,
         "download from device %d", d);
  for (size_t i = 0; i < n; ++i) g[i] = tu_bf16_to_f32(c->host_g[i]);
  kda_gate_args host = c->a;
  host.A_log = c->host_A_log;
  EXPECT(kda_ref_gate_chunk_cumsum(&host, g, ref) == 0, "reference");
  double err = 0;
  const size_t bad = tu_check_close(got, ref, n, 2e-5, &err, NULL);
  free(got), free(g), free(ref);
  return bad;
}

/* Two GPUs in one process: after a fault on device 0, device 1's calls
 * either compute correctly (a driver that loses only the faulting
 * device's context) or say their context is lost too (one that loses
 * every context of the process: driver 580.159.04 on 2x H200 does); never
 * a wrong output, a hang or another status. Device 0's say it. */
static int scene_other_device(const char *db) {
  (void)db;
  int count = 0;
  EXPECT(g_drv->cuDeviceGetCount(&count) == CUDA_SUCCESS, "device count");
  if (count < 2) {
    printf("scene other_device: %d GPU; it needs two\n", count);
    return GU_SKIP_EXIT;
  }
  faulter f = {0};
  faulter_make(&f);
  kda_options o = kda_options_default();
  o.device = 1;
  o.tune_mode = KDA_TUNE_OFF;
  kda_context *one = NULL;
  EXPECT(kda_context_create(&o, &one) == KDA_OK, "a context on device 1");
  call c;
  call_make_on(&c, 1);
  EXPECT(kda_gate_chunk_cumsum(one, &c.a, NULL) == KDA_OK, "device 1's warm call");
  EXPECT(wrong_elements(&c, 1) == 0, "device 1 before the fault");
  fault_now(&f);
  make_current(0);
  const CUresult r = g_drv->cuCtxSynchronize();
  EXPECT(kda__cu_context_lost(r), "device 0 after the fault: %d", (int)r);
  expect_lost(kda_gate_chunk_cumsum(f.ctx, &f.c.a, NULL), "device 0's next call");
  make_current(1);
  const CUresult poisoned =
      g_drv->cuMemsetD32((CUdeviceptr)(uintptr_t)c.out, 0x7fc00000u, (size_t)T * H * K);
  const kda_status st = kda_gate_chunk_cumsum(one, &c.a, NULL);
  if (st == KDA_OK) {
    EXPECT(poisoned == CUDA_SUCCESS, "device 1 computes but could not be poisoned: %d",
           (int)poisoned);
    const size_t bad = wrong_elements(&c, 1);
    printf("scene other_device: device 1 still computes: %zu wrong of %zu\n", bad,
           (size_t)T * H * K);
    EXPECT(bad == 0, "device 1's output after device 0's fault");
  } else {
    printf("scene other_device: the driver lost device 1's context too (cuMemsetD32 %d)\n",
           (int)poisoned);
    expect_lost(st, "device 1's call after device 0's fault");
  }
  destroy_promptly(one, "device 1's context");
  destroy_promptly(f.ctx, "the faulting context");
  return 0;
}

/* A fresh process: the key is tuned now, neither skipped nor waited for. */
static int scene_retune(const char *db) {
  kda_context *ctx = context_make(db, KDA_TUNE_ON);
  call c;
  call_make(&c);
  kda_prewarm_result r = {.struct_size = sizeof r};
  const double t0 = now_ms();
  EXPECT(kda_prewarm(ctx, KDA_KERNEL_GATE_CHUNK_CUMSUM, &c.a, 0, &r) == KDA_OK, "prewarm");
  const double ms = now_ms() - t0;
  printf("scene retune: outcome %d, %s %.2f us, %.0f ms\n", r.outcome, r.config, r.median_us, ms);
  EXPECT(r.outcome == KDA_PREWARM_TUNED, "outcome %d", r.outcome);
  kda_stats s = {.struct_size = sizeof s};
  EXPECT(kda_context_get_stats(ctx, &s) == KDA_OK, "stats");
  EXPECT(s.tuning_timing_waits == 0, "waited for a timing lock");
  kda_context_destroy(ctx);
  return 0;
}

static int scene_main(const char *scene, const char *db) {
  g_scene = scene;
  setvbuf(stdout, NULL, _IONBF, 0);
  g_drv = gu_require_gpu("test_gpu_lost_context (scene)");
  if (strcmp(scene, "before") == 0) return scene_before(db);
  if (strcmp(scene, "prewarm") == 0) return scene_prewarm(db);
  if (strcmp(scene, "background") == 0) return scene_background(db);
  if (strcmp(scene, "retune") == 0) return scene_retune(db);
  if (strcmp(scene, "other_device") == 0) return scene_other_device(db);
  fprintf(stderr, "unknown scene %s\n", scene);
  return 2;
}

/* ------------------------------------------------------------------------ */
/* The cases (parent): runs scenes, reads the database.                     */
/* ------------------------------------------------------------------------ */

typedef struct fixture {
  char dir[64], db[96];
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (f == NULL) return -1;
  snprintf(f->dir, sizeof f->dir, "/tmp/kda_gpu_lost_XXXXXX");
  if (mkdtemp(f->dir) == NULL) return -1;
  snprintf(f->db, sizeof f->db, "%s/tune.db", f->dir);
  /* The scenes' timing lock in a folder of their own (wait_for_timing). */
  setenv("KDA_TIMING_LOCK_DIR", f->dir, 1);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
  const int rc = system(cmd);
  free(f);
  return rc == 0 ? 0 : -1;
}

/* The scene's exit status: 0, or GU_SKIP_EXIT where it cannot run here. */
static int run_scene_or_skip(const fixture *f, const char *scene) {
  char *argv[] = {g_self, "scene", (char *)scene, (char *)f->db, NULL};
  pid_t pid;
  assert_int_equal(posix_spawn(&pid, g_self, NULL, NULL, argv, environ), 0);
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (WIFEXITED(status) && WEXITSTATUS(status) == GU_SKIP_EXIT) return GU_SKIP_EXIT;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail_msg("scene %s: %s %d", scene, WIFEXITED(status) ? "exit" : "signal",
             WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
  return 0;
}

static void run_scene(const fixture *f, const char *scene) {
  if (run_scene_or_skip(f, scene) != 0) fail_msg("scene %s skipped", scene);
}

static kda_db_stats db_stats(const fixture *f) {
  kda_db *db = NULL;
  if (kda_db_open(f->db, 0, &db) != KDA_OK) fail_msg("%s", kda_last_error());
  kda_db_stats s = {.struct_size = sizeof s};
  if (kda_db_stats_get(db, &s, NULL, NULL) != KDA_OK) fail_msg("%s", kda_last_error());
  kda_db_close(db);
  return s;
}

static void lost_scene_leaves_nothing_then_a_fresh_process_tunes(void **state, const char *scene) {
  fixture *f = *state;
  run_scene(f, scene);
  const kda_db_stats s = db_stats(f);
  printf("after scene %s: %lld results, %lld trials, %lld leases, %lld cubins\n", scene,
         (long long)s.results, (long long)s.trials, (long long)s.leases, (long long)s.cubins);
  assert_int_equal(s.results, 0);
  assert_int_equal(s.trials, 0);
  assert_int_equal(s.leases, 0);
  run_scene(f, "retune");
  const kda_db_stats after = db_stats(f);
  assert_int_equal(after.results, 1);
  assert_int_equal(after.leases, 0);
}

static void every_call_after_a_fault_says_the_context_is_lost(void **state) {
  lost_scene_leaves_nothing_then_a_fresh_process_tunes(state, "before");
}

static void a_fault_while_prewarm_times_stores_nothing(void **state) {
  lost_scene_leaves_nothing_then_a_fresh_process_tunes(state, "prewarm");
}

static void a_fault_while_the_background_worker_times_stores_nothing(void **state) {
  lost_scene_leaves_nothing_then_a_fresh_process_tunes(state, "background");
}

static void another_gpus_calls_after_a_fault_compute_or_say_lost(void **state) {
  if (run_scene_or_skip(*state, "other_device") == GU_SKIP_EXIT) skip();
}

int main(int argc, char **argv) {
  const ssize_t n = readlink("/proc/self/exe", g_self, sizeof g_self - 1);
  if (n <= 0) return 1;
  g_self[n] = '\0';
  unsetenv("KDA_TUNE"); /* the scenes set the mode themselves */
  if (argc == 4 && strcmp(argv[1], "scene") == 0) return scene_main(argv[2], argv[3]);
  /* Skip here, in the parent, where there is no GPU; the scenes' own
   * processes use the device (a forked child of a CUDA process cannot). */
  gu_require_gpu("test_gpu_lost_context");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(every_call_after_a_fault_says_the_context_is_lost, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_fault_while_prewarm_times_stores_nothing, setup, teardown),
      cmocka_unit_test_setup_teardown(a_fault_while_the_background_worker_times_stores_nothing,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(another_gpus_calls_after_a_fault_compute_or_say_lost, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
