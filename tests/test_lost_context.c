/* A CUDA context lost to a kernel fault (the stand-in driver's
 * fake_cuda_lose_context: every later call on the device fails with the
 * fault's error, as a real driver's do): each kind of call says so with
 * KDA_ERROR_CONTEXT_LOST, a tuning run that meets the fault stores no row
 * and leaves neither its lease nor the GPU's timing lock behind, the
 * background worker stops the same way, and destroy still returns and
 * releases what the context held. test_gpu_lost_context makes a real fault
 * on a GPU. */
#include <dlfcn.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <cuda.h>

#include "kda/kda.h"
#include "kda/kda_db.h"
#include "stand_in_call.h"

static void (*fake_lose_context)(int);
static void (*fake_lose_context_after)(long, int);
static void (*fake_lose_context_after_loads)(long, int);
static void (*fake_lose_context_at_alloc)(size_t, int);
static void (*fake_compare_passes)(int);
static void (*fake_lose_async)(int);
static int (*fake_lost)(void);
static long (*fake_live_allocations)(void);
static long (*fake_loaded_modules)(void);
static long (*fake_streams_live)(void);

typedef struct fixture {
  char dir[64], db[96];
  stand_in_call call;
  kda_gate_args a; /* its H=4 K=64 T=1024 bf16 softplus call */
  int stopped, waiting; /* "tuning stopped", "is tuning it; waiting" logged */
  int refused;          /* "the stored cubin ... was refused" logged */
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (f == NULL) return -1;
  snprintf(f->dir, sizeof f->dir, "/tmp/kda_lost_context_XXXXXX");
  if (mkdtemp(f->dir) == NULL) return -1;
  snprintf(f->db, sizeof f->db, "%s/tune.db", f->dir);
  stand_in_call_init(&f->call, 4, 64, 64, 1024, KDA_DTYPE_BF16, KDA_GATE_SOFTPLUS);
  if (f->call.g == NULL || f->call.out == NULL) return -1;
  f->a = f->call.a;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  fake_lose_context(0);
  fake_compare_passes(0);
  fake_lose_async(0);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
  if (system(cmd) != 0) return -1;
  stand_in_call_free(&f->call);
  free(f);
  return 0;
}

static void watch_log(void *user, kda_log_level level, const char *message) {
  (void)level;
  fixture *f = user;
  if (strstr(message, "tuning stopped") != NULL) ++f->stopped;
  if (strstr(message, "is tuning it; waiting") != NULL) ++f->waiting;
  if (strstr(message, "was refused") != NULL) ++f->refused;
}

static kda_context *context_make(fixture *f, int tune_mode) {
  kda_options o = kda_options_default();
  o.tune_mode = tune_mode;
  o.db_path = f->db;
  o.log_level = KDA_LOG_DEBUG;
  o.log_fn = watch_log;
  o.log_user = f;
  kda_context *ctx = NULL;
  if (kda_context_create(&o, &ctx) != KDA_OK) fail_msg("%s", kda_last_error());
  return ctx;
}

static void assert_lost(kda_status st) {
  assert_int_equal(st, KDA_ERROR_CONTEXT_LOST);
  assert_non_null(strstr(kda_last_error(), "CUDA_ERROR_ILLEGAL_ADDRESS"));
  assert_non_null(strstr(kda_last_error(), "the CUDA context is lost"));
  assert_non_null(strstr(kda_last_error(), "restart the process"));
}

/* Rows of the file, read through a handle of its own. */
static kda_db_stats db_stats(const fixture *f) {
  kda_db *db = NULL;
  if (kda_db_open(f->db, 0, &db) != KDA_OK) fail_msg("%s", kda_last_error());
  kda_db_stats s = {.struct_size = sizeof s};
  if (kda_db_stats_get(db, &s, NULL, NULL) != KDA_OK) fail_msg("%s", kda_last_error());
  kda_db_close(db);
  return s;
}

static kda_stats stats(kda_context *ctx) {
  kda_stats s = {.struct_size = sizeof s};
  assert_int_equal(kda_context_get_stats(ctx, &s), KDA_OK);
  return s;
}

/* What the stand-in holds for live contexts: after destroy, back to it. */
typedef struct held {
  long allocations, modules, streams;
} held;
static held held_now(void) {
  return (held){fake_live_allocations(), fake_loaded_modules(), fake_streams_live()};
}
static void assert_released(held before) {
  const held now = held_now();
  assert_int_equal(now.allocations, before.allocations);
  assert_int_equal(now.modules, before.modules);
  assert_int_equal(now.streams, before.streams);
}

/* Warm and cold kernel calls, the device chunk-table build and the layer
 * entry point after the fault: each returns KDA_ERROR_CONTEXT_LOST naming
 * the driver's error; destroy releases everything. */
static void every_call_after_a_fault_says_the_context_is_lost(void **state) {
  fixture *f = *state;
  const held before = held_now();
  kda_context *ctx = context_make(f, KDA_TUNE_OFF);
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &f->a, NULL), KDA_OK); /* warm */
  fake_lose_context(CUDA_ERROR_ILLEGAL_ADDRESS);
  assert_lost(kda_gate_chunk_cumsum(ctx, &f->a, NULL));
  assert_non_null(strstr(kda_last_error(), "cuLaunchKernel"));
  assert_lost(kda_gate(ctx, &f->a, NULL)); /* cold: compiled, then the load fails */
  int32_t cu[3] = {0, 300, 1024}, idx[64], n = 0;
  assert_lost(kda_chunk_indices_build_device(ctx, cu, KDA_DTYPE_I32, 2, 1024, 64, idx, 32, &n,
                                             NULL));
  kda_gate_args v = f->a;
  v.cu_seqlens = cu;
  v.cu_seqlens_dtype = KDA_DTYPE_I32;
  v.num_seqs = 2;
  const size_t ws_bytes = kda_layer_workspace_size(1024, 2, 64);
  void *ws = aligned_alloc(256, (ws_bytes + 255) & ~(size_t)255);
  assert_non_null(ws);
  assert_lost(kda_layer_gate_fwd(ctx, &v, ws, ws_bytes, NULL));
  free(ws);
  /* Another of the codes that mean the same. */
  fake_lose_context(CUDA_ERROR_LAUNCH_FAILED);
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &f->a, NULL), KDA_ERROR_CONTEXT_LOST);
  assert_non_null(strstr(kda_last_error(), "CUDA_ERROR_LAUNCH_FAILED"));
  kda_context_destroy(ctx);
  fake_lose_context(0);
  assert_released(before);
}

/* A cold kernel call's tuning run, or kda_prewarm's, meeting the armed
 * fault; kda_prewarm reports it failed, not tuned. */
static void tune_into_the_fault(fixture *f, kda_context *ctx, int prewarm) {
  if (prewarm) {
    kda_prewarm_result r = {.struct_size = sizeof r};
    assert_lost(kda_prewarm(ctx, KDA_KERNEL_GATE_CHUNK_CUMSUM, &f->a, 0, &r));
    assert_int_equal(r.outcome, KDA_PREWARM_FAILED);
  } else {
    assert_lost(kda_gate_chunk_cumsum(ctx, &f->a, NULL));
  }
  assert_int_equal(fake_lost(), CUDA_ERROR_ILLEGAL_ADDRESS); /* a call of the run met it */
  assert_int_equal(stats(ctx).tuning_runs, 0);
}

/* Destroys the context of a faulted run and gives the device back: all it
 * held is released, and the file holds no winner, trial or lease. */
static void assert_the_faulted_run_left_nothing(fixture *f, kda_context *ctx, held before) {
  kda_context_destroy(ctx);
  fake_lose_context(0);
  assert_released(before);
  const kda_db_stats s = db_stats(f);
  assert_int_equal(s.results, 0);
  assert_int_equal(s.trials, 0);
  assert_int_equal(s.leases, 0);
}

/* The fault lands in a tuning run: in its bench (the reference config's
 * launch runs and the next launch faults: a kernel of another library, or
 * a candidate's; the fault met at that launch or, as on a GPU, at the next
 * call), or between its compile and its bench (the first module load
 * fails). The kernel call and
 * kda_prewarm both return KDA_ERROR_CONTEXT_LOST; the file keeps no
 * winner, trial or lease; and once the device works again (here: the
 * stand-in told so; on a GPU: the restarted process) the key is tuned
 * afresh, neither waiting for a lease nor for the GPU's timing lock. */
static void a_tuning_run_that_meets_a_fault_stores_nothing_and_lets_go(void **state) {
  fixture *f = *state;
  const held before = held_now();
  fake_compare_passes(1); /* unfaulted, the run would store its winner: the last step shows it */
  for (int run = 0; run < 6; ++run) {
    /* where: 0 the launch fails, 1 it returns and the next call fails (as
     * on a GPU, fake_cuda_lose_async), 2 the load fails. */
    const int prewarm = run & 1, where = run >> 1;
    kda_context *ctx = context_make(f, KDA_TUNE_ON);
    fake_lose_async(where == 1);
    if (where == 2)
      fake_lose_context_after_loads(0, CUDA_ERROR_ILLEGAL_ADDRESS);
    else
      fake_lose_context_after(1, CUDA_ERROR_ILLEGAL_ADDRESS);
    tune_into_the_fault(f, ctx, prewarm);
    /* The candidates' compile only: no heuristic compiled after the fault. */
    assert_int_equal(stats(ctx).nvrtc_compiles, 1);
    assert_the_faulted_run_left_nothing(f, ctx, before);
  }
  /* The key is tuned again, past lease and lock, and its winner stored:
   * what each faulted run above would have stored. */
  kda_context *ctx = context_make(f, KDA_TUNE_ON);
  f->stopped = f->waiting = 0;
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &f->a, NULL), KDA_OK);
  assert_int_equal(stats(ctx).tuning_runs, 1);
  assert_int_equal(f->stopped, 0);
  assert_int_equal(f->waiting, 0);
  assert_int_equal(stats(ctx).tuning_timing_waits, 0);
  kda_context_destroy(ctx);
  const kda_db_stats s = db_stats(f);
  assert_int_equal(s.results, 1);
  assert_true(s.trials > 0);
  assert_int_equal(s.leases, 0);
}

/* The fault lands after the candidates were timed, while the run measures
 * the device's copy bandwidth (its first allocation finds the context
 * lost): the run is interrupted all the same, so nothing is stored and
 * kda_prewarm does not report the key tuned. */
static void a_fault_met_measuring_copy_bandwidth_stores_nothing(void **state) {
  fixture *f = *state;
  const held before = held_now();
  fake_compare_passes(1);
  for (int prewarm = 0; prewarm < 2; ++prewarm) {
    kda_context *ctx = context_make(f, KDA_TUNE_ON);
    fake_lose_context_at_alloc((size_t)64 << 20, CUDA_ERROR_ILLEGAL_ADDRESS);
    tune_into_the_fault(f, ctx, prewarm); /* the copy's allocation meets it */
    assert_the_faulted_run_left_nothing(f, ctx, before);
  }
}

/* A server's warm start on a lost context: the key's stored cubin cannot
 * load. That is the context's fault, not the cubin's: no warning calls it
 * refused, nothing is recompiled, and the row stays for the restart. */
static void a_stored_cubin_is_not_blamed_for_a_lost_context(void **state) {
  fixture *f = *state;
  kda_context *ctx = context_make(f, KDA_TUNE_CACHED);
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &f->a, NULL), KDA_OK); /* compiles, stores */
  kda_context_destroy(ctx);
  assert_int_equal(db_stats(f).cubins, 1);
  ctx = context_make(f, KDA_TUNE_CACHED);
  fake_lose_context(CUDA_ERROR_ILLEGAL_ADDRESS);
  assert_lost(kda_gate_chunk_cumsum(ctx, &f->a, NULL));
  assert_non_null(strstr(kda_last_error(), "cuModuleLoadData"));
  assert_int_equal(stats(ctx).nvrtc_compiles, 0);
  assert_int_equal(f->refused, 0);
  kda_context_destroy(ctx);
  fake_lose_context(0);
  assert_int_equal(db_stats(f).cubins, 1);
  /* The restart loads it. */
  ctx = context_make(f, KDA_TUNE_CACHED);
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &f->a, NULL), KDA_OK);
  assert_int_equal(stats(ctx).db_cubin_hits, 1);
  assert_int_equal(stats(ctx).nvrtc_compiles, 0);
  kda_context_destroy(ctx);
}

static int count_cubin(void *user, const kda_db_cubin *c, int32_t ok, const char *problem) {
  (void)c, (void)ok, (void)problem;
  ++*(int *)user;
  return 0;
}

/* kda_db_load_cubins on a lost context: no cubin can load, and none is to
 * blame. It says the context is lost and stops, rather than return KDA_OK
 * with every stored cubin reported as refused by the driver. */
static void loading_the_stored_cubins_on_a_lost_context_blames_none(void **state) {
  fixture *f = *state;
  kda_context *ctx = context_make(f, KDA_TUNE_CACHED);
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &f->a, NULL), KDA_OK); /* compiles, stores */
  kda_gate_args other = f->a;
  other.num_heads = 2;
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &other, NULL), KDA_OK);
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(f->db, KDA_DB_READ_ONLY, &db), KDA_OK);
  int64_t tried = -1, bad = -1;
  int reported = 0;
  assert_int_equal(kda_db_load_cubins(db, ctx, count_cubin, &reported, &tried, &bad), KDA_OK);
  assert_int_equal(tried, 2); /* the fixture: two cubins, both load */
  assert_int_equal(bad, 0);
  fake_lose_context(CUDA_ERROR_ILLEGAL_ADDRESS);
  reported = 0;
  assert_lost(kda_db_load_cubins(db, ctx, count_cubin, &reported, &tried, &bad));
  assert_non_null(strstr(kda_last_error(), "cuModuleLoadData"));
  assert_int_equal(reported, 0);
  assert_int_equal(tried, 0);
  assert_int_equal(bad, 0);
  kda_db_close(db);
  kda_context_destroy(ctx);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Background tuning: the call ran on the heuristic, and the worker's run
 * meets the fault. It stores nothing, the next call says the context is
 * lost, and destroy returns at once. The test holds the GPU's timing lock
 * (as another process would) until the fault is armed: the worker compiles
 * beside the call and could otherwise time and store before it. */
static void the_background_worker_meeting_a_fault_stores_nothing(void **state) {
  fixture *f = *state;
  const held before = held_now();
  fake_compare_passes(1); /* unfaulted, the worker's run would store its winner */
  char lock[160];
  snprintf(lock, sizeof lock, "%s/kda-timing-0000:00:00.0.lock", /* the stand-in's bus id */
           getenv("KDA_TIMING_LOCK_DIR"));
  const int fd = open(lock, O_RDONLY | O_CREAT | O_CLOEXEC, 0444);
  assert_true(fd >= 0);
  assert_int_equal(flock(fd, LOCK_EX), 0);
  kda_context *ctx = context_make(f, KDA_TUNE_BACKGROUND);
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &f->a, NULL), KDA_OK);
  /* The worker's first launch faults, once it may time. */
  fake_lose_context_after(0, CUDA_ERROR_ILLEGAL_ADDRESS);
  close(fd); /* releases the lock */
  struct timespec nap = {0, 20 * 1000000L};
  for (int i = 0; i < 500 && stats(ctx).background_jobs == 0; ++i) nanosleep(&nap, NULL);
  assert_int_equal(stats(ctx).background_jobs, 1);
  assert_int_equal(fake_lost(), CUDA_ERROR_ILLEGAL_ADDRESS); /* the worker's launch faulted */
  assert_lost(kda_gate_chunk_cumsum(ctx, &f->a, NULL));
  assert_int_equal(stats(ctx).tuning_runs, 0);
  const double t0 = now_ms();
  kda_context_destroy(ctx);
  assert_true(now_ms() - t0 < 2000.0);
  fake_lose_context(0);
  assert_released(before);
  const kda_db_stats s = db_stats(f);
  assert_int_equal(s.results, 0);
  assert_int_equal(s.leases, 0);
}

int main(void) {
  unsetenv("KDA_TUNE"); /* each test names its tuning mode */
  /* The GPU's timing lock in a folder of this run's own (set once, before
   * any thread reads it), so that a test can hold it. */
  char lock_dir[] = "/tmp/kda_lost_lock_XXXXXX";
  if (mkdtemp(lock_dir) == NULL) return 1;
  setenv("KDA_TIMING_LOCK_DIR", lock_dir, 1);
  const char *path = getenv("KDA_LIBCUDA");
  void *h = path ? dlopen(path, RTLD_NOW) : NULL;
  if (h) {
    *(void **)&fake_lose_context = dlsym(h, "fake_cuda_lose_context");
    *(void **)&fake_lose_context_after = dlsym(h, "fake_cuda_lose_context_after");
    *(void **)&fake_lost = dlsym(h, "fake_cuda_lost");
    *(void **)&fake_lose_context_after_loads = dlsym(h, "fake_cuda_lose_context_after_loads");
    *(void **)&fake_lose_context_at_alloc = dlsym(h, "fake_cuda_lose_context_at_alloc");
    *(void **)&fake_compare_passes = dlsym(h, "fake_cuda_compare_passes");
    *(void **)&fake_lose_async = dlsym(h, "fake_cuda_lose_async");
    *(void **)&fake_live_allocations = dlsym(h, "fake_cuda_live_allocations");
    *(void **)&fake_loaded_modules = dlsym(h, "fake_cuda_loaded_modules");
    *(void **)&fake_streams_live = dlsym(h, "fake_cuda_streams_live");
  }
  if (!fake_lose_context || !fake_lose_context_after || !fake_lose_context_after_loads ||
      !fake_lose_context_at_alloc || !fake_compare_passes || !fake_lose_async ||
      !fake_lost || !fake_live_allocations || !fake_loaded_modules || !fake_streams_live) {
    fprintf(stderr, "KDA_LIBCUDA must name the stand-in driver (tests/fake_cuda); got %s\n",
            path ? path : "(unset)");
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(every_call_after_a_fault_says_the_context_is_lost, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_tuning_run_that_meets_a_fault_stores_nothing_and_lets_go,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(a_fault_met_measuring_copy_bandwidth_stores_nothing, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(the_background_worker_meeting_a_fault_stores_nothing, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_stored_cubin_is_not_blamed_for_a_lost_context, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(loading_the_stored_cubins_on_a_lost_context_blames_none,
                                      setup, teardown),
  };
  const int failed = cmocka_run_group_tests(tests, NULL, NULL);
  char cmd[96];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", lock_dir);
  return system(cmd) == 0 ? failed : 1;
}
