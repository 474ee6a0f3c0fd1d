/* The host side of the real launch path, driven through the stand-in driver
 * (tests/fake_cuda, loaded via KDA_LIBCUDA by ctest): context lifecycle
 * without growth, and many threads meeting cold specializations at once.
 * NVRTC really compiles; the stand-in counts launches instead of running. */
#include <dirent.h>
#include <dlfcn.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <cuda.h>

#include "kda/kda.h"
#include "kda/kda_db.h"
#include "stand_in_call.h"
#include "tuner_compile.h" /* the pool of compile threads, empty again after a run */

static long (*fake_launches)(void);
static long (*fake_live_allocations)(void);
static long (*fake_loaded_modules)(void);
static void (*fake_capture)(kda_stream);
static long (*fake_unsafe_calls)(void);
static void (*fake_fail_allocs_after)(long);
static void (*fake_deinitialize)(int);
static long (*fake_legacy_calls)(void);
static CUresult (*fake_push_context)(CUcontext);
static CUresult (*fake_pop_context)(CUcontext *);
static CUresult (*fake_stream_create)(CUstream *, unsigned int);
static CUresult (*fake_stream_destroy)(CUstream);

static long open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  long n = 0;
  if (!d) return -1;
  while (readdir(d)) ++n;
  closedir(d);
  return n;
}

static long rss_kib(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = 0, resident = 0;
  if (!f) return -1;
  if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = -1;
  fclose(f);
  return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* A warm call's arguments on stand-in "device" memory: bf16, softplus. */
typedef stand_in_call call;
static void call_init(call *c, int H, int K, int chunk, int64_t T) {
  stand_in_call_init(c, H, K, chunk, T, KDA_DTYPE_BF16, KDA_GATE_SOFTPLUS);
}

/* A context on the stand-in with an in-memory database, errors logged only. */
static kda_context *memory_context(int tune_mode) {
  kda_options o = kda_options_default();
  o.db_path = ":memory:";
  o.tune_mode = tune_mode;
  o.log_level = KDA_LOG_ERROR;
  kda_context *ctx = NULL;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  return ctx;
}

static void call_free(call *c) { stand_in_call_free(c); }

static void context_lifecycle_10000_cycles_keeps_memory_and_fds_flat(void **state) {
  (void)state;
  call c;
  call_init(&c, 4, 64, 64, 128);
  long fds0 = 0, rss0 = 0;
  const int cycles = 10000;
  for (int i = 0; i < cycles; ++i) {
    kda_context *ctx = NULL;
    kda_options o = kda_options_default();
    o.db_path = ":memory:";
    o.tune_mode = KDA_TUNE_OFF;
    assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
    /* Every 1000th context compiles, loads and launches a kernel too. */
    if (i % 1000 == 999) assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, NULL), KDA_OK);
    kda_context_destroy(ctx);
    /* The baseline follows the first compile: NVRTC keeps ~45 MB of its
     * own (builtins, compiler state) for the life of the process. */
    if (i == 999) {
      fds0 = open_fds();
      rss0 = rss_kib();
    }
  }
  const long fds1 = open_fds(), rss1 = rss_kib();
  printf("%d create/destroy cycles (10 with a compile and a launch): from cycle 1000 on, "
         "fds %ld -> %ld, RSS %ld -> %ld KiB; stand-in allocations live %ld, modules loaded %ld\n",
         cycles, fds0, fds1, rss0, rss1, fake_live_allocations(), fake_loaded_modules());
  assert_int_equal(fds1, fds0);
#if defined(__SANITIZE_ADDRESS__)
  /* ASan's quarantine keeps freed memory resident, so RSS says nothing
   * here; LeakSanitizer checks this build for leaks at exit instead. */
  (void)rss1;
#else
  /* A leak of a few hundred bytes per cycle would pass 8 MiB over 9,000
   * cycles, but LeakSanitizer sees those in the ASan build; this bound is
   * for growth that is still reachable (caches kept per context), without
   * failing on allocator noise under load. */
  assert_true(rss1 - rss0 < 8192);
#endif
  assert_int_equal(fake_live_allocations(), 0);
  assert_int_equal(fake_loaded_modules(), 0);
  call_free(&c);
}

enum { THREADS = 16, SPECS = 8, ROUNDS = 300 };

typedef struct worker {
  kda_context *ctx;
  call *calls;
  int failures;
} worker;

static void *work(void *p) {
  worker *w = p;
  for (int r = 0; r < ROUNDS; ++r)
    for (int s = 0; s < SPECS; ++s)
      if (kda_gate_chunk_cumsum(w->ctx, &w->calls[s].a, NULL) != KDA_OK) ++w->failures;
  return NULL;
}

static void sixteen_threads_compile_each_cold_specialization_once(void **state) {
  (void)state;
  kda_context *ctx = NULL;
  kda_options o = kda_options_default();
  o.db_path = ":memory:";
  o.tune_mode = KDA_TUNE_OFF;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  call calls[SPECS];
  for (int s = 0; s < SPECS; ++s) call_init(&calls[s], 1 + s, 64, s % 2 ? 32 : 64, 96);
  const long launches0 = fake_launches();
  pthread_t th[THREADS];
  worker w[THREADS];
  for (int t = 0; t < THREADS; ++t) {
    w[t] = (worker){ctx, calls, 0};
    assert_int_equal(pthread_create(&th[t], NULL, work, &w[t]), 0);
  }
  int failures = 0;
  for (int t = 0; t < THREADS; ++t) {
    pthread_join(th[t], NULL);
    failures += w[t].failures;
  }
  kda_stats st = {.struct_size = sizeof st};
  assert_int_equal(kda_context_get_stats(ctx, &st), KDA_OK);
  printf("%d threads x %d specializations x %d rounds: %llu NVRTC compiles, %llu launches, "
         "%llu cache hits, %d failures\n",
         THREADS, SPECS, ROUNDS, (unsigned long long)st.nvrtc_compiles,
         (unsigned long long)st.launches, (unsigned long long)st.cache_hits, failures);
  assert_int_equal(failures, 0);
  assert_int_equal(st.nvrtc_compiles, SPECS);
  assert_int_equal(st.launches, (uint64_t)THREADS * SPECS * ROUNDS);
  assert_int_equal(fake_launches() - launches0, (long)THREADS * SPECS * ROUNDS);
  kda_context_destroy(ctx);
  for (int s = 0; s < SPECS; ++s) call_free(&calls[s]);
}

/* Background mode: a cold call returns at once (the heuristic config
 * launched), the worker runs off the caller's thread, and destroying the
 * context while it works neither hangs nor leaks (LeakSanitizer in the ASan
 * build). On the stand-in driver the worker's tuning fails (nothing is ever
 * written, so every candidate is "unwritten"): the calls keep running the
 * heuristic, which is the defined fallback. */
static void background_mode_runs_cold_calls_at_once_and_shuts_down_cleanly(void **state) {
  (void)state;
  call c;
  call_init(&c, 2, 64, 64, 300);
  for (int round = 0; round < 2; ++round) {
    kda_context *ctx = memory_context(KDA_TUNE_BACKGROUND);
    assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, NULL), KDA_OK);
    kda_stats st = {.struct_size = sizeof st};
    /* The call's own launch (the stand-in's counter also sees the worker's
     * benchmark launches, which may already be running). */
    assert_int_equal(kda_context_get_stats(ctx, &st), KDA_OK);
    assert_int_equal(st.launches, 1);
    if (round == 1) {
      /* Let the worker finish its job (up to 60 s: it compiles with NVRTC,
       * slow under a sanitizer on a loaded machine), then call again. */
      for (int i = 0; i < 6000; ++i) {
        assert_int_equal(kda_context_get_stats(ctx, &st), KDA_OK);
        if (st.background_jobs >= 1) break;
        usleep(10000);
      }
      assert_int_equal(st.background_jobs, 1);
      assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, NULL), KDA_OK);
    }
    /* Round 0 destroys while the worker is (most likely) compiling. */
    kda_context_destroy(ctx);
  }
  call_free(&c);
}

static uint64_t background_jobs(kda_context *ctx) {
  kda_stats st = {.struct_size = sizeof st};
  assert_int_equal(kda_context_get_stats(ctx, &st), KDA_OK);
  return st.background_jobs;
}

static void wait_background_jobs(kda_context *ctx, uint64_t n) {
  for (int i = 0; i < 6000 && background_jobs(ctx) < n; ++i) usleep(10000);
  assert_int_equal(background_jobs(ctx), n);
}

/* The specialization descriptions the background worker logs. */
typedef struct job_log {
  int varlen1, varlen2;
} job_log;

static void note_varlen(void *user, kda_log_level level, const char *message) {
  (void)level;
  job_log *l = user;
  if (strstr(message, "gate_chunk_cumsum") == NULL) return;
  if (strstr(message, " varlen=1 ") != NULL) ++l->varlen1;
  if (strstr(message, " varlen=2 ") != NULL) ++l->varlen2;
}

/* A call that passes cu_seqlens_host for a batch past the host rows (257
 * chunks: lengths 1 and 16383) reads the chunk table (varlen=1): the
 * background job tunes that specialization, not the host-rows one. */
static void background_job_tunes_the_calls_varlen_mode(void **state) {
  (void)state;
  call c;
  call_init(&c, 2, 32, 64, 16384);
  static const int32_t cu[3] = {0, 1, 16384};
  int32_t *table = calloc(2 * 300, sizeof *table);
  assert_non_null(table);
  int64_t rows = 0;
  assert_int_equal(kda_chunk_indices_build_host(cu, KDA_DTYPE_I32, 2, 64, table, 300, &rows),
                   KDA_OK);
  assert_int_equal(rows, 257);
  c.a.cu_seqlens = cu;
  c.a.cu_seqlens_host = cu;
  c.a.cu_seqlens_dtype = KDA_DTYPE_I32;
  c.a.num_seqs = 2;
  c.a.chunk_indices = table;
  c.a.num_chunks = rows;
  job_log l = {0, 0};
  kda_options o = kda_options_default();
  o.db_path = ":memory:";
  o.tune_mode = KDA_TUNE_BACKGROUND;
  o.log_level = KDA_LOG_DEBUG;
  o.log_fn = note_varlen;
  o.log_user = &l;
  kda_context *ctx = NULL;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, NULL), KDA_OK);
  wait_background_jobs(ctx, 1);
  kda_context_destroy(ctx);
  assert_true(l.varlen1 > 0);
  assert_int_equal(l.varlen2, 0);
  free(table);
  call_free(&c);
}

/* Background mode, a warm heuristic met in a new token bucket while the
 * stream captures: the call launches (the heuristic is compiled) but queues
 * no tuning (a job that outlives the capture is the warm-up's, not the
 * graph's). The next call outside capture queues the bucket. */
static void background_mode_queues_no_tuning_during_capture(void **state) {
  (void)state;
  /* chunk 16, H*K = 256: 264+ chunks keep the heuristic the same in both
   * buckets (no narrowing for the 132 stand-in SMs). */
  call c;
  call_init(&c, 4, 64, 16, 16384);
  kda_context *ctx = memory_context(KDA_TUNE_BACKGROUND);
  c.a.seq_len = 4224; /* bucket 2 */
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, NULL), KDA_OK);
  wait_background_jobs(ctx, 1);

  static int stream_object;
  kda_stream capturing = (kda_stream)(void *)&stream_object;
  const long unsafe0 = fake_unsafe_calls(), launches0 = fake_launches();
  fake_capture(capturing);
  c.a.seq_len = 16384; /* bucket 3: a cold slot, its heuristic warm */
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, capturing), KDA_OK);
  assert_int_equal(fake_launches() - launches0, 1);
  /* A queued job would allocate within milliseconds. */
  for (int i = 0; i < 100 && fake_unsafe_calls() == unsafe0; ++i) usleep(10000);
  fake_capture(NULL);
  assert_int_equal(fake_unsafe_calls() - unsafe0, 0);
  assert_int_equal(background_jobs(ctx), 1);

  assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, capturing), KDA_OK);
  wait_background_jobs(ctx, 2);
  kda_context_destroy(ctx);
  call_free(&c);
}

/* Another thread captures a CUDA graph in the default global mode, on a
 * blocking stream (the stand-in's model: fake_cuda_capture), while this
 * thread's calls compile, load, allocate and tune: a cold call with tuning
 * on, kda_prewarm, a chunk plan's creation and destruction, and a
 * background job queued before the capture that runs during it. None may
 * make an unsafe call (refused in global mode, and it invalidates that
 * capture) or touch the legacy stream (it would make the capture wait).
 * The calls run on a stream of their own, as a server's threads do. */
static void work_beside_another_threads_capture_leaves_it_alone(void **state) {
  (void)state;
  call c;
  call_init(&c, 2, 64, 64, 4096);
  static int other_object, own_object;
  kda_stream other = (kda_stream)(void *)&other_object, own = (kda_stream)(void *)&own_object;
  const long unsafe0 = fake_unsafe_calls(), legacy0 = fake_legacy_calls();
  const long modules0 = fake_loaded_modules();

  kda_context *ctx = memory_context(KDA_TUNE_ON);
  fake_capture(other);
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, own), KDA_OK); /* cold: compiles, tunes */
  kda_stats st = {.struct_size = sizeof st};
  assert_int_equal(kda_context_get_stats(ctx, &st), KDA_OK);
  assert_true(st.nvrtc_compiles >= 2); /* the heuristic and a tuning run's candidates */
  kda_gate_args shape = c.a;
  shape.seq_len = 300; /* another bucket */
  kda_prewarm_result r = {.struct_size = sizeof r};
  const kda_status pst = kda_prewarm(ctx, KDA_KERNEL_GATE_CHUNK_CUMSUM, &shape, 0, &r);
  /* On the stand-in a tuning run cannot validate (its kernels write
   * nothing): the prewarm keeps the heuristic or reports that. */
  if (pst != KDA_OK && pst != KDA_ERROR_INTERNAL) fail_msg("kda_prewarm: %s", kda_last_error());
  kda_chunk_plan *plan = NULL;
  assert_int_equal(kda_chunk_plan_create(ctx, 4096, 8, 64, &plan), KDA_OK);
  kda_chunk_plan_destroy(plan);
  fake_capture(NULL);
  kda_context_destroy(ctx);

  ctx = memory_context(KDA_TUNE_BACKGROUND);
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, own), KDA_OK); /* queues a job */
  fake_capture(other);
  wait_background_jobs(ctx, 1); /* it ran (most of it) during the capture */
  fake_capture(NULL);
  kda_context_destroy(ctx);

  assert_int_equal(fake_unsafe_calls() - unsafe0, 0);
  assert_int_equal(fake_legacy_calls() - legacy0, 0);
  assert_int_equal(fake_loaded_modules(), modules0);
  call_free(&c);
}

/* kda_layer_gate_fwd checks every argument before it builds the chunk
 * table: a rejected call compiles and launches nothing, and a bad chunk
 * size is KDA_ERROR_BAD_CHUNK_SIZE as for the other kernel calls. */
static void layer_gate_fwd_rejects_before_building_the_table(void **state) {
  (void)state;
  call c;
  call_init(&c, 4, 64, 64, 256);
  kda_context *ctx = NULL;
  kda_options o = kda_options_default();
  o.db_path = ":memory:";
  o.tune_mode = KDA_TUNE_OFF;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  int32_t cu[3] = {0, 100, 256};
  c.a.cu_seqlens = cu;
  c.a.num_seqs = 2;
  const size_t ws_bytes = kda_layer_workspace_size(256, 2, 64);
  void *ws = aligned_alloc(256, (ws_bytes + 255) & ~(size_t)255);
  const long launches0 = fake_launches();

  kda_gate_args bad = c.a;
  bad.num_heads = 0;
  assert_int_equal(kda_layer_gate_fwd(ctx, &bad, ws, ws_bytes, NULL), KDA_ERROR_BAD_SHAPE);
  bad = c.a;
  bad.out = NULL;
  assert_int_equal(kda_layer_gate_fwd(ctx, &bad, ws, ws_bytes, NULL), KDA_ERROR_NULL_POINTER);
  bad = c.a;
  bad.g_dtype = KDA_DTYPE_I32;
  assert_int_equal(kda_layer_gate_fwd(ctx, &bad, ws, ws_bytes, NULL),
                   KDA_ERROR_UNSUPPORTED_DTYPE);
  bad = c.a;
  bad.chunk_size = 48;
  assert_int_equal(kda_layer_gate_fwd(ctx, &bad, ws, ws_bytes, NULL), KDA_ERROR_BAD_CHUNK_SIZE);
  kda_stats st = {.struct_size = sizeof st};
  assert_int_equal(kda_context_get_stats(ctx, &st), KDA_OK);
  assert_int_equal(fake_launches() - launches0, 0);
  assert_int_equal(st.nvrtc_compiles, 0);

  /* The valid call builds the table and runs the gate: two launches. */
  assert_int_equal(kda_layer_gate_fwd(ctx, &c.a, ws, ws_bytes, NULL), KDA_OK);
  assert_int_equal(fake_launches() - launches0, 2);
  kda_context_destroy(ctx);
  free(ws);
  call_free(&c);
}

/* KDA_TUNE_ON when validation cannot run (the stand-in driver runs no
 * kernel, so the compare kernel visits nothing): tuning stops, and the call
 * still runs with the heuristic config instead of failing; later calls of
 * the slot do not tune again in this context. */
static void tune_on_call_keeps_the_heuristic_when_validation_cannot_run(void **state) {
  (void)state;
  call c;
  call_init(&c, 2, 64, 64, 300);
  kda_context *ctx = memory_context(KDA_TUNE_ON);
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, NULL), KDA_OK);
  kda_stats st1 = {.struct_size = sizeof st1}, st2 = {.struct_size = sizeof st2};
  assert_int_equal(kda_context_get_stats(ctx, &st1), KDA_OK);
  assert_int_equal(st1.launches, 1);
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, NULL), KDA_OK);
  assert_int_equal(kda_context_get_stats(ctx, &st2), KDA_OK);
  assert_int_equal(st2.launches, 2);
  assert_int_equal(st2.nvrtc_compiles, st1.nvrtc_compiles);
  kda_context_destroy(ctx);
  call_free(&c);
}

typedef struct log_grab {
  char programs[256];
  char sets[256];
  int stopped;
  int no_scratch;
} log_grab;

static void grab_log(void *user, kda_log_level level, const char *message) {
  log_grab *g = user;
  (void)level;
  if (strstr(message, "NVRTC programs")) snprintf(g->programs, sizeof g->programs, "%s", message);
  if (strstr(message, "tuning stopped")) g->stopped++;
  if (strstr(message, "buffer sets")) snprintf(g->sets, sizeof g->sets, "%s", message);
  if (strstr(message, "no device memory for tuning scratch buffers")) g->no_scratch++;
}

/* From "...: N candidates compiled in P NVRTC programs: ...": P, checked
 * against min(threads, CPUs) by the caller (N + 1 names, the compare kernel
 * included, are at least 3); -1 when the line is missing or N < 2. */
static int programs_logged(const char *line) {
  const char *p = strstr(line, " candidates compiled in ");
  if (p == NULL) return -1;
  const char *q = p;
  while (q > line && q[-1] >= '0' && q[-1] <= '9') --q;
  const int n = atoi(q), programs = atoi(p + strlen(" candidates compiled in "));
  return n >= 2 ? programs : -1;
}

/* compile_threads = 3: a tuning run's candidates are compiled as three
 * programs, or one per CPU where there are fewer (the process's pool of
 * compile threads); the stand-in then stops the run at validation, and
 * every module of the run is unloaded except the heuristic's, which serves
 * the call, and its compile threads are back in the pool. */
static void tuning_run_compiles_its_candidates_in_parallel_programs(void **state) {
  (void)state;
  call c;
  call_init(&c, 2, 64, 64, 300);
  log_grab g = {{0}, {0}, 0, 0};
  kda_options o = kda_options_default();
  o.db_path = ":memory:";
  o.tune_mode = KDA_TUNE_ON;
  o.log_level = KDA_LOG_DEBUG;
  o.log_fn = grab_log;
  o.log_user = &g;
  o.compile_threads = 3;
  /* Enough budget for at least two candidates whatever this process has
   * measured NVRTC to cost (sanitizer builds are slow). */
  o.tune_budget_ms = 3000;
  const long modules0 = fake_loaded_modules();
  kda_context *ctx = NULL;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, NULL), KDA_OK);
  printf("%s\n", g.programs);
  const int cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
  assert_int_equal(programs_logged(g.programs), cpus < 3 ? cpus : 3);
  assert_int_equal(kda__compile_pool_in_use(NULL), 0);
  assert_int_equal(g.stopped, 1);
  /* The candidates are timed over rotated buffer sets: 3x the stand-in's
   * 50 MiB L2 is 683 of this shape's 225 KiB sets (300 x 128 bf16 in, f32
   * out), so the cap of 256 (once 8: a small shape was timed from L2). */
  printf("%s\n", g.sets);
  assert_non_null(strstr(g.sets, "timing over 256 buffer sets of 225 KB"));
  assert_int_equal(fake_loaded_modules() - modules0, 1);
  kda_context_destroy(ctx);
  assert_int_equal(fake_loaded_modules(), modules0);
  /* Negative is refused; KDA_COMPILE_THREADS overrides the option. */
  o.compile_threads = -1;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_ERROR_BAD_OPTIONS);
  o.compile_threads = 3;
  setenv("KDA_COMPILE_THREADS", "2", 1);
  g.programs[0] = '\0';
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  c.a.seq_len = 200; /* another token bucket: tuned again */
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, NULL), KDA_OK);
  unsetenv("KDA_COMPILE_THREADS");
  printf("%s\n", g.programs);
  assert_int_equal(programs_logged(g.programs), cpus < 2 ? cpus : 2);
  assert_int_equal(kda__compile_pool_in_use(NULL), 0);
  kda_context_destroy(ctx);
  call_free(&c);
}

/* Device memory for the tuner's scratch runs out (the stand-in's cuMemAlloc
 * fails after n more calls): a copy that cannot be allocated shortens the
 * rotation; the outputs that cannot be allocated make the run keep the
 * heuristic config with a warning. Either way the call runs. The run's
 * allocations: the reference output, the compare result, the first output,
 * then an output and an input per further set. */
static void tuning_scratch_that_cannot_be_allocated_shortens_or_skips_the_run(void **state) {
  (void)state;
  call c;
  call_init(&c, 2, 64, 64, 300);
  log_grab g = {{0}, {0}, 0, 0};
  kda_options o = kda_options_default();
  o.db_path = ":memory:";
  o.tune_mode = KDA_TUNE_ON;
  o.log_level = KDA_LOG_DEBUG;
  o.log_fn = grab_log;
  o.log_user = &g;
  o.tune_budget_ms = 3000;
  kda_context *ctx = NULL;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  const long live0 = fake_live_allocations();
  fake_fail_allocs_after(3 + 2 * 3 + 1); /* 3 more sets, then an output without its input */
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, NULL), KDA_OK);
  fake_fail_allocs_after(-1);
  printf("%s\n", g.sets);
  assert_non_null(strstr(g.sets, "timing over 4 buffer sets of 225 KB"));
  assert_int_equal(g.no_scratch, 0);
  assert_int_equal(fake_live_allocations(), live0); /* every scratch buffer freed */
  kda_context_destroy(ctx);
  /* A new context (the run above kept its heuristic for the bucket),
   * nothing left to allocate. */
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  g.sets[0] = '\0';
  fake_fail_allocs_after(0);
  kda_stats st = {.struct_size = sizeof st};
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, NULL), KDA_OK);
  fake_fail_allocs_after(-1);
  assert_int_equal(g.no_scratch, 1);
  assert_int_equal(g.sets[0], '\0');
  assert_int_equal(kda_context_get_stats(ctx, &st), KDA_OK);
  assert_int_equal(st.launches, 1);
  assert_int_equal(fake_live_allocations(), live0);
  kda_context_destroy(ctx);
  call_free(&c);
}

/* Callers compiled against earlier headers: their struct sizes are accepted
 * and nothing is written past them; unknown sizes are refused. */
static void earlier_struct_sizes_are_accepted(void **state) {
  (void)state;
  kda_options o = kda_options_default();
  o.struct_size = (uint32_t)offsetof(kda_options, compile_threads);
  kda_context *ctx = NULL;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  kda_context_destroy(ctx);
  o.struct_size = (uint32_t)offsetof(kda_options, tune_mode);
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  _Alignas(kda_stats) unsigned char buf[sizeof(kda_stats) + 16];
  const size_t sizes[] = {offsetof(kda_stats, tuning_runs), offsetof(kda_stats, background_jobs),
                          offsetof(kda_stats, launch_overlap_active),
                          offsetof(kda_stats, tuning_timing_waits),
                          offsetof(kda_stats, db_cubin_other_nvrtc_hits), sizeof(kda_stats)};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; ++i) {
    memset(buf, 0xab, sizeof buf);
    kda_stats *s = (kda_stats *)(void *)buf;
    s->struct_size = (uint32_t)sizes[i];
    assert_int_equal(kda_context_get_stats(ctx, s), KDA_OK);
    for (size_t b = sizes[i]; b < sizeof buf; ++b) assert_int_equal(buf[b], 0xab);
  }
  kda_stats bad = {.struct_size = 12};
  assert_int_equal(kda_context_get_stats(ctx, &bad), KDA_ERROR_BAD_OPTIONS);
  kda_context_destroy(ctx);
  o = kda_options_default();
  o.struct_size = 20;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_ERROR_BAD_OPTIONS);
}

/* A log callback that calls back into the library, as a server's logger
 * that adds the database path to each line would. */
typedef struct reentrant_log {
  kda_context *ctx;
  int warnings, with_path;
} reentrant_log;

static void log_with_db_path(void *user, kda_log_level level, const char *message) {
  reentrant_log *r = user;
  (void)message;
  if (r->ctx == NULL) return; /* kda_context_create has not returned yet */
  kda_stats st = {.struct_size = sizeof st};
  if (kda_context_get_stats(r->ctx, &st) != KDA_OK) return;
  const char *path = kda_context_db_path(r->ctx);
  if (level == KDA_LOG_WARN) ++r->warnings;
  if (path != NULL) ++r->with_path;
}

/* The store's warnings (here: the database folder cannot be created) are
 * logged while the store is in use; a callback that asks for the database
 * path took the store's lock again and hung the first call. An alarm turns
 * a hang into a failure. */
static void log_callback_may_call_the_library(void **state) {
  (void)state;
  call c;
  call_init(&c, 2, 64, 64, 300);
  reentrant_log r = {NULL, 0, 0};
  kda_options o = kda_options_default();
  o.db_path = "/proc/kda-no-such-folder/tune.db";
  o.tune_mode = KDA_TUNE_CACHED;
  o.log_level = KDA_LOG_INFO;
  o.log_fn = log_with_db_path;
  o.log_user = &r;
  kda_context *ctx = NULL;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  r.ctx = ctx;
  alarm(30);
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, NULL), KDA_OK);
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, NULL), KDA_OK);
  alarm(0);
  assert_true(r.warnings >= 1); /* "cannot create the tuning database" */
  assert_true(r.with_path >= r.warnings);
  kda_context_destroy(ctx);
  call_free(&c);
}

/* A log callback called while a tuning run holds the GPU's timing lock,
 * which calls the library on another context of the same GPU with a cold
 * shape (a tuning run of its own): it used to wait for the lock its own
 * thread held. Here the run's scratch cannot be allocated, so it warns
 * ("no device memory for tuning scratch") while timing. */
typedef struct nested_call {
  kda_context *other;
  call *c;
  int nested;
  kda_status nested_status;
} nested_call;

static void log_calls_another_context(void *user, kda_log_level level, const char *message) {
  nested_call *n = user;
  if (level != KDA_LOG_WARN || n->nested || strstr(message, "no device memory") == NULL) return;
  n->nested = 1;
  fake_fail_allocs_after(-1);
  n->nested_status = kda_gate_chunk_cumsum(n->other, &n->c->a, NULL);
}

/* A log_fn that calls the same shape on the same context from a message of
 * that shape's build ("no stored winner", cached mode): the message comes
 * once the entry is ready, so the call finds it (it waited for its own
 * thread's build before: SIGALRM). */
typedef struct same_call {
  kda_context *ctx;
  call *c;
  int nested;
  kda_status nested_status;
} same_call;

static void log_calls_the_same_shape(void *user, kda_log_level level, const char *message) {
  (void)level;
  same_call *s = user;
  if (s->nested || s->ctx == NULL || strstr(message, "no stored winner") == NULL) return;
  s->nested = 1;
  s->nested_status = kda_gate_chunk_cumsum(s->ctx, &s->c->a, NULL);
}

static void log_callback_may_call_the_shape_being_built(void **state) {
  (void)state;
  call c;
  call_init(&c, 4, 64, 64, 1024);
  same_call s = {NULL, &c, 0, KDA_ERROR_INTERNAL};
  kda_options o = kda_options_default();
  o.db_path = ":memory:";
  o.tune_mode = KDA_TUNE_CACHED;
  o.log_level = KDA_LOG_INFO;
  o.log_fn = log_calls_the_same_shape;
  o.log_user = &s;
  assert_int_equal(kda_context_create(&o, &s.ctx), KDA_OK);
  alarm(30);
  assert_int_equal(kda_gate_chunk_cumsum(s.ctx, &c.a, NULL), KDA_OK);
  alarm(0);
  assert_int_equal(s.nested, 1);
  assert_int_equal(s.nested_status, KDA_OK);
  kda_context_destroy(s.ctx);
  call_free(&c);
}

static void log_callback_may_tune_on_another_context(void **state) {
  (void)state;
  call c, cold;
  call_init(&c, 4, 16, 64, 1024);
  call_init(&cold, 2, 32, 64, 512);
  kda_context *other = memory_context(KDA_TUNE_ON);
  nested_call n = {other, &cold, 0, KDA_ERROR_INTERNAL};
  kda_options o = kda_options_default();
  o.db_path = ":memory:";
  o.log_level = KDA_LOG_WARN;
  o.log_fn = log_calls_another_context;
  o.log_user = &n;
  kda_context *ctx = NULL;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  fake_fail_allocs_after(0);
  alarm(60);
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, NULL), KDA_OK);
  alarm(0);
  fake_fail_allocs_after(-1);
  assert_int_equal(n.nested, 1);
  assert_int_equal(n.nested_status, KDA_OK);
  kda_context_destroy(ctx);
  kda_context_destroy(other);
  call_free(&c);
  call_free(&cold);
}

/* A context destroyed after the driver began shutting down (a server's
 * atexit handler) cannot enter its CUDA context: its modules and streams
 * are gone with it, but the host side (the module cache, the tuning kit and
 * its timing-lock descriptor) must still be freed. 20 cycles with a tuning
 * run each (the kit holds the lock file open): descriptors flat, and
 * LeakSanitizer (the CI's ASan build) sees no leak. */
static void destroy_after_driver_shutdown_frees_the_host_side(void **state) {
  (void)state;
  call c;
  call_init(&c, 2, 64, 64, 300);
  const long fds0 = open_fds();
  for (int i = 0; i < 20; ++i) {
    kda_context *ctx = memory_context(KDA_TUNE_ON);
    assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, NULL), KDA_OK); /* a tuning run: the kit */
    fake_deinitialize(1);
    kda_context_destroy(ctx);
    fake_deinitialize(0);
  }
  assert_int_equal(open_fds(), fds0);
  call_free(&c);
}

static void count_warning(void *user, kda_log_level level, const char *message) {
  if (level == KDA_LOG_WARN && strstr(message, "KDA_TEST_GPU_IDENTITY")) ++*(int *)user;
}

/* The test hook reaches the context's identity (and so its database key),
 * loudly; a malformed one is ignored, loudly. */
static void gpu_identity_hook_changes_the_context_identity(void **state) {
  (void)state;
  kda_options o = kda_options_default();
  o.tune_mode = KDA_TUNE_OFF;
  int warnings = 0;
  o.log_fn = count_warning;
  o.log_user = &warnings;
  kda_context *ctx = NULL;
  kda_device_info real = {.struct_size = sizeof real}, fake = {.struct_size = sizeof fake};
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  assert_int_equal(kda_context_get_device_info(ctx, &real), KDA_OK);
  kda_context_destroy(ctx);
  assert_int_equal(warnings, 0);
  setenv("KDA_TEST_GPU_IDENTITY", "name=Fake GPU X;pci=0xfffe", 1);
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  assert_int_equal(kda_context_get_device_info(ctx, &fake), KDA_OK);
  kda_context_destroy(ctx);
  assert_int_equal(warnings, 1);
  assert_string_equal(fake.name, "Fake GPU X");
  assert_int_equal(fake.pci_device_id, 0xfffe);
  assert_int_equal(fake.cc_major, real.cc_major);
  char kr[128], kf[128];
  assert_true(kda_db_gpu_key(&real, kr, sizeof kr) > 0 && kda_db_gpu_key(&fake, kf, sizeof kf) > 0);
  assert_string_not_equal(kr, kf);
  setenv("KDA_TEST_GPU_IDENTITY", "name=Fake GPU X;cc=80", 1);
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  assert_int_equal(kda_context_get_device_info(ctx, &fake), KDA_OK);
  kda_context_destroy(ctx);
  unsetenv("KDA_TEST_GPU_IDENTITY");
  assert_int_equal(warnings, 2);
  assert_string_equal(fake.name, real.name);
}

static int count_loaded(void *user, const kda_db_cubin *cubin, int32_t ok, const char *problem) {
  (void)cubin, (void)problem;
  int *n = user;
  n[0]++;
  n[1] += ok != 0;
  return n[2]; /* nonzero: stop */
}

/* kda_db_load_cubins loads every cubin of the context's architecture and
 * unloads it again; a callback returning nonzero stops the loading (kda_db.h). */
static void db_load_cubins_loads_each_cubin_once_and_stops_when_asked(void **state) {
  (void)state;
  char dir[] = "/tmp/kda_fake_load_XXXXXX", path[64];
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/tune.db", dir);
  kda_gate_args shape = kda_gate_args_default();
  shape.num_heads = 4;
  shape.batch = 1;
  shape.seq_len = 256;
  shape.gate = KDA_GATE_NONE;
  for (int k = 64; k <= 128; k += 64) {
    shape.head_dim = k;
    assert_int_equal(kda_compile_offline_store(KDA_KERNEL_CHUNK_LOCAL_CUMSUM, &shape, 90, path, NULL),
                     KDA_OK);
  }
  /* One cubin for another architecture: not tried. */
  assert_int_equal(kda_compile_offline_store(KDA_KERNEL_CHUNK_LOCAL_CUMSUM, &shape, 80, path, NULL),
                   KDA_OK);
  kda_options o = kda_options_default();
  o.tune_mode = KDA_TUNE_OFF;
  kda_context *ctx = NULL;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(path, KDA_DB_READ_ONLY, &db), KDA_OK);
  const long modules0 = fake_loaded_modules();
  int seen[3] = {0, 0, 0};
  int64_t tried = -1, bad = -1;
  assert_int_equal(kda_db_load_cubins(db, ctx, count_loaded, seen, &tried, &bad), KDA_OK);
  assert_int_equal(seen[0], 2);
  assert_int_equal(seen[1], 2);
  assert_int_equal(tried, 2);
  assert_int_equal(bad, 0);
  assert_int_equal(fake_loaded_modules(), modules0); /* each unloaded again */
  int stop[3] = {0, 0, 1};
  assert_int_equal(kda_db_load_cubins(db, ctx, count_loaded, stop, &tried, &bad), KDA_OK);
  assert_int_equal(stop[0], 1);
  assert_int_equal(tried, 1);
  assert_int_equal(fake_loaded_modules(), modules0);
  kda_db_close(db);
  kda_context_destroy(ctx);
  char cmd[96];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

/* The chunk-table and chunk-plan builders are not tuned, but a server that
 * prewarmed must not compile them either: a context that reads the
 * database (any mode but KDA_TUNE_OFF) loads a builder's cubin stored by
 * kda_compile_offline_store (kda-tune prewarm --compile-only) or by an
 * earlier context's first build, and stores the ones it compiles. */
static uint64_t compiles_of(kda_context *ctx, uint64_t *cubin_hits) {
  kda_stats s = {.struct_size = sizeof s};
  assert_int_equal(kda_context_get_stats(ctx, &s), KDA_OK);
  *cubin_hits = s.db_cubin_hits;
  return s.nvrtc_compiles;
}

static void build_both(kda_context *ctx) {
  /* The stand-in runs no kernel: host arrays stand for device ones. */
  static const int32_t cu[3] = {0, 5, 70};
  static int32_t table[64], count;
  assert_int_equal(kda_chunk_indices_build_device(ctx, cu, KDA_DTYPE_I32, 2, 70, 64, table, 64,
                                                  &count, NULL),
                   KDA_OK);
  /* The capacity must be ceil(70 / 64) + 2 = 4 rows: 4 is enough, 3 not. */
  assert_int_equal(kda_chunk_indices_build_device(ctx, cu, KDA_DTYPE_I32, 2, 70, 64, table, 4,
                                                  &count, NULL),
                   KDA_OK);
  assert_int_equal(kda_chunk_indices_build_device(ctx, cu, KDA_DTYPE_I32, 2, 70, 64, table, 3,
                                                  &count, NULL),
                   KDA_ERROR_BUFFER_TOO_SMALL);
  kda_chunk_plan *plan = NULL;
  assert_int_equal(kda_chunk_plan_create(ctx, 70, 2, 64, &plan), KDA_OK);
  assert_int_equal(kda_chunk_plan_build(plan, cu, KDA_DTYPE_I32, 2, 70, NULL), KDA_OK);
  kda_chunk_plan_destroy(plan);
}

/* With a chunk plan, kda_layer_gate_fwd reads no cu_seqlens (kda.h): a call
 * that also passes them is the plan's call, not a table to build. */
static void layer_gate_fwd_with_a_chunk_plan_reads_no_cu_seqlens(void **state) {
  (void)state;
  kda_context *ctx = memory_context(KDA_TUNE_OFF);
  call c;
  call_init(&c, 4, 64, 64, 256);
  static const int32_t cu[3] = {0, 100, 256};
  kda_chunk_plan *plan = NULL;
  assert_int_equal(kda_chunk_plan_create(ctx, 256, 2, 64, &plan), KDA_OK);
  assert_int_equal(kda_chunk_plan_build(plan, cu, KDA_DTYPE_I32, 2, 256, NULL), KDA_OK);
  c.a.chunk_plan = plan;
  c.a.num_seqs = 2;
  c.a.cu_seqlens = cu;
  c.a.cu_seqlens_dtype = KDA_DTYPE_I32;
  if (kda_layer_gate_fwd(ctx, &c.a, NULL, 0, NULL) != KDA_OK) fail_msg("%s", kda_last_error());
  c.a.cu_seqlens = NULL;
  assert_int_equal(kda_layer_gate_fwd(ctx, &c.a, NULL, 0, NULL), KDA_OK);
  kda_chunk_plan_destroy(plan);
  call_free(&c);
  kda_context_destroy(ctx);
}

/* A chunk plan holds device memory of the CUDA context that made it: a
 * call on a context of another CUDA context is refused, not launched. */
static void a_chunk_plan_of_another_cuda_context_is_refused(void **state) {
  (void)state;
  kda_context *a = memory_context(KDA_TUNE_OFF);
  static int other_cuda_context;
  assert_int_equal(fake_push_context((CUcontext)&other_cuda_context), CUDA_SUCCESS);
  kda_options o = kda_options_default();
  o.db_path = ":memory:";
  o.tune_mode = KDA_TUNE_OFF;
  o.device = -1; /* the current CUDA context: the other one */
  kda_context *b = NULL;
  assert_int_equal(kda_context_create(&o, &b), KDA_OK);
  call c;
  call_init(&c, 4, 64, 64, 256);
  static const int32_t cu[3] = {0, 100, 256};
  kda_chunk_plan *plan = NULL;
  assert_int_equal(kda_chunk_plan_create(a, 256, 2, 64, &plan), KDA_OK);
  assert_int_equal(kda_chunk_plan_build(plan, cu, KDA_DTYPE_I32, 2, 256, NULL), KDA_OK);
  c.a.chunk_plan = plan;
  c.a.num_seqs = 2;
  c.a.cu_seqlens_dtype = KDA_DTYPE_I32;
  const long launches = fake_launches();
  assert_int_equal(kda_gate_chunk_cumsum(b, &c.a, NULL), KDA_ERROR_INVALID_ARGUMENT);
  assert_non_null(strstr(kda_last_error(), "another CUDA context"));
  assert_int_equal(fake_launches(), launches);
  assert_int_equal(kda_gate_chunk_cumsum(a, &c.a, NULL), KDA_OK);
  kda_chunk_plan_destroy(plan);
  kda_context_destroy(b);
  CUcontext popped = NULL;
  assert_int_equal(fake_pop_context(&popped), CUDA_SUCCESS);
  kda_context_destroy(a);
  call_free(&c);
}

/* A stream made while another CUDA context was current (another GPU's). */
static CUstream another_contexts_stream(void) {
  static int other_cuda_context;
  CUstream s = NULL;
  assert_int_equal(fake_push_context((CUcontext)&other_cuda_context), CUDA_SUCCESS);
  assert_int_equal(fake_stream_create(&s, 0), CUDA_SUCCESS);
  CUcontext popped = NULL;
  assert_int_equal(fake_pop_context(&popped), CUDA_SUCCESS);
  return s;
}

/* A stream of another CUDA context (another GPU's, in a process driving
 * several): the driver refuses the launch with a code that names no
 * stream; the status says what the caller passed, and nothing launched. */
static void a_stream_of_another_cuda_context_is_named(void **state) {
  (void)state;
  kda_context *a = memory_context(KDA_TUNE_OFF);
  CUstream theirs = another_contexts_stream();
  call c;
  call_init(&c, 4, 64, 64, 256);
  assert_int_equal(kda_gate_chunk_cumsum(a, &c.a, NULL), KDA_OK); /* warm */
  const long launches = fake_launches();
  assert_int_equal(kda_gate_chunk_cumsum(a, &c.a, (kda_stream)theirs), KDA_ERROR_INVALID_ARGUMENT);
  assert_non_null(strstr(kda_last_error(), "the stream belongs to another CUDA context"));
  /* A cold specialization the same way: refused before its compile. */
  assert_int_equal(kda_gate(a, &c.a, (kda_stream)theirs), KDA_ERROR_INVALID_ARGUMENT);
  assert_non_null(strstr(kda_last_error(), "(device 0's): pass a stream made in that CUDA context"));
  assert_int_equal(fake_launches(), launches);
  assert_int_equal(kda_gate(a, &c.a, NULL), KDA_OK);
  assert_int_equal(fake_launches(), launches + 1);
  fake_stream_destroy(theirs);
  kda_context_destroy(a);
  call_free(&c);
}

/* The same stream on a cold key of a tuning context: refused before the
 * tuning run (seconds of GPU time and a database row on a GPU) or the
 * background job the call would otherwise spend first. */
static void a_stream_of_another_cuda_context_costs_no_tuning(void **state) {
  (void)state;
  CUstream theirs = another_contexts_stream();
  call c;
  call_init(&c, 4, 64, 64, 256);
  const int modes[] = {KDA_TUNE_ON, KDA_TUNE_BACKGROUND, KDA_TUNE_OFF};
  for (size_t m = 0; m < sizeof modes / sizeof modes[0]; ++m) {
    kda_context *ctx = memory_context(modes[m]);
    const long launches = fake_launches();
    assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, (kda_stream)theirs),
                     KDA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(kda_last_error(), "the stream belongs to another CUDA context"));
    kda_stats st = {.struct_size = sizeof st};
    assert_int_equal(kda_context_get_stats(ctx, &st), KDA_OK);
    assert_int_equal(st.tuning_runs, 0);
    assert_int_equal(st.nvrtc_compiles, 0);
    assert_int_equal(st.cache_misses, 0);
    kda_context_destroy(ctx); /* waits for a background job, had one been queued */
    assert_int_equal(fake_launches(), launches);
    assert_int_equal(st.background_jobs, 0);
  }
  fake_stream_destroy(theirs);
  call_free(&c);
}

static void count_message(void *user, kda_log_level level, const char *message) {
  (void)level;
  (void)message;
  ++*(int *)user;
}

/* kda_options.log_level below KDA_LOG_ERROR logs nothing (a server that
 * silences the library with -1), above KDA_LOG_DEBUG everything. */
static void log_level_out_of_range_means_nothing_or_everything(void **state) {
  (void)state;
  const int32_t levels[] = {-1, 99};
  int counted[2] = {0, 0};
  for (int i = 0; i < 2; i++) {
    kda_options o = kda_options_default();
    o.db_path = "/proc/kda-no-such-folder/tune.db"; /* a warning, at least */
    o.tune_mode = KDA_TUNE_CACHED;
    o.log_level = levels[i];
    o.log_fn = count_message;
    o.log_user = &counted[i];
    kda_context *ctx = NULL;
    assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
    call c;
    call_init(&c, 4, 64, 64, 256);
    assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, NULL), KDA_OK);
    call_free(&c);
    kda_context_destroy(ctx);
  }
  assert_int_equal(counted[0], 0);
  assert_true(counted[1] >= 2); /* the warning and info lines */
}

/* A database path nothing can be made at: results are kept in memory (a
 * warning says so), and kda_context_db_path names no file. */
static void db_path_is_empty_when_the_store_fell_back_to_memory(void **state) {
  (void)state;
  kda_options o = kda_options_default();
  o.db_path = "/proc/kda-no-such-folder/tune.db";
  o.tune_mode = KDA_TUNE_CACHED;
  o.log_level = KDA_LOG_ERROR;
  kda_context *ctx = NULL;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  call c;
  call_init(&c, 4, 64, 64, 256);
  if (kda_gate_chunk_cumsum(ctx, &c.a, NULL) != KDA_OK) fail_msg("%s", kda_last_error());
  assert_string_equal(kda_context_db_path(ctx), "");
  call_free(&c);
  kda_context_destroy(ctx);
}

static void builders_come_from_the_database_like_the_gate_kernels(void **state) {
  (void)state;
  char dir[] = "/tmp/kda_fake_builders_XXXXXX", path[64];
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/tune.db", dir);
  kda_gate_args shape = kda_gate_args_default();
  shape.cu_seqlens_dtype = KDA_DTYPE_I32;
  shape.chunk_size = 64;
  assert_int_equal(kda_compile_offline_store(KDA_KERNEL_CHUNK_INDICES, &shape, 90, path, NULL),
                   KDA_OK);
  const int modes[] = {KDA_TUNE_CACHED, KDA_TUNE_ON, KDA_TUNE_OFF};
  /* Compiles and stored-cubin loads of build_both in each context: the
   * table's builder stored offline, the plan's compiled by the first and
   * stored; the database unread with tuning off. */
  const uint64_t want_compiles[] = {1, 0, 2}, want_hits[] = {1, 2, 0};
  for (int i = 0; i < 3; ++i) {
    kda_options o = kda_options_default();
    o.tune_mode = modes[i];
    o.db_path = path;
    kda_context *ctx = NULL;
    assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
    build_both(ctx);
    uint64_t hits = 0;
    const uint64_t compiles = compiles_of(ctx, &hits);
    printf("mode %d: %llu compiles, %llu stored cubins loaded\n", modes[i],
           (unsigned long long)compiles, (unsigned long long)hits);
    assert_int_equal(compiles, want_compiles[i]);
    assert_int_equal(hits, want_hits[i]);
    kda_context_destroy(ctx);
  }
  char cmd[96];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

/* A database compiled without the GPU (kda-tune prewarm --compile-only)
 * holds the heuristic before its fit to the SM count. At T=2048 H=32 the
 * stand-in's 132 SMs get 1024 blocks, and the fit takes seg 8 for the
 * offline seg 16: a CACHED context serves the stored cubin rather than
 * compile the fitted config; with nothing stored it compiles. */
static void cached_mode_serves_the_offline_heuristic_of_a_large_shape(void **state) {
  (void)state;
  char dir[] = "/tmp/kda_fake_offline_XXXXXX", path[64];
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/tune.db", dir);
  call c;
  call_init(&c, 32, 128, 64, 2048);
  for (int stored = 1; stored >= 0; --stored) {
    if (stored)
      assert_int_equal(kda_compile_offline_store(KDA_KERNEL_GATE_CHUNK_CUMSUM, &c.a, 90, path, NULL),
                       KDA_OK);
    kda_options o = kda_options_default();
    o.tune_mode = KDA_TUNE_CACHED;
    o.db_path = stored ? path : ":memory:";
    kda_context *ctx = NULL;
    assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
    assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, NULL), KDA_OK);
    uint64_t hits = 0;
    const uint64_t compiles = compiles_of(ctx, &hits);
    printf("%s: %llu compiles, %llu stored cubins loaded\n", stored ? "offline database" : "none",
           (unsigned long long)compiles, (unsigned long long)hits);
    assert_int_equal(compiles, stored ? 0 : 1);
    assert_int_equal(hits, stored ? 1 : 0);
    kda_context_destroy(ctx);
  }
  call_free(&c);
  char cmd[96];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

int main(void) {
  /* Each test names its tuning mode; ctest's KDA_TUNE=off would override. */
  unsetenv("KDA_TUNE");
  const char *path = getenv("KDA_LIBCUDA");
  void *h = path ? dlopen(path, RTLD_NOW) : NULL;
  if (h) {
    *(void **)&fake_launches = dlsym(h, "fake_cuda_launches");
    *(void **)&fake_live_allocations = dlsym(h, "fake_cuda_live_allocations");
    *(void **)&fake_loaded_modules = dlsym(h, "fake_cuda_loaded_modules");
    *(void **)&fake_capture = dlsym(h, "fake_cuda_capture");
    *(void **)&fake_unsafe_calls = dlsym(h, "fake_cuda_unsafe_calls");
    *(void **)&fake_fail_allocs_after = dlsym(h, "fake_cuda_fail_allocs_after");
    *(void **)&fake_deinitialize = dlsym(h, "fake_cuda_deinitialize");
    *(void **)&fake_legacy_calls = dlsym(h, "fake_cuda_legacy_calls");
    *(void **)&fake_push_context = dlsym(h, "cuCtxPushCurrent_v2");
    *(void **)&fake_pop_context = dlsym(h, "cuCtxPopCurrent_v2");
    *(void **)&fake_stream_create = dlsym(h, "cuStreamCreate");
    *(void **)&fake_stream_destroy = dlsym(h, "cuStreamDestroy_v2");
  }
  if (!fake_launches || !fake_live_allocations || !fake_loaded_modules || !fake_capture ||
      !fake_unsafe_calls || !fake_fail_allocs_after || !fake_deinitialize ||
      !fake_legacy_calls || !fake_push_context || !fake_pop_context || !fake_stream_create ||
      !fake_stream_destroy) {
    fprintf(stderr, "KDA_LIBCUDA must name the stand-in driver (tests/fake_cuda); got %s\n",
            path ? path : "(unset)");
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(context_lifecycle_10000_cycles_keeps_memory_and_fds_flat),
      cmocka_unit_test(sixteen_threads_compile_each_cold_specialization_once),
      cmocka_unit_test(earlier_struct_sizes_are_accepted),
      cmocka_unit_test(background_mode_runs_cold_calls_at_once_and_shuts_down_cleanly),
      cmocka_unit_test(background_mode_queues_no_tuning_during_capture),
      cmocka_unit_test(background_job_tunes_the_calls_varlen_mode),
      cmocka_unit_test(work_beside_another_threads_capture_leaves_it_alone),
      cmocka_unit_test(layer_gate_fwd_rejects_before_building_the_table),
      cmocka_unit_test(tune_on_call_keeps_the_heuristic_when_validation_cannot_run),
      cmocka_unit_test(tuning_run_compiles_its_candidates_in_parallel_programs),
      cmocka_unit_test(tuning_scratch_that_cannot_be_allocated_shortens_or_skips_the_run),
      cmocka_unit_test(gpu_identity_hook_changes_the_context_identity),
      cmocka_unit_test(db_load_cubins_loads_each_cubin_once_and_stops_when_asked),
      cmocka_unit_test(builders_come_from_the_database_like_the_gate_kernels),
      cmocka_unit_test(layer_gate_fwd_with_a_chunk_plan_reads_no_cu_seqlens),
      cmocka_unit_test(db_path_is_empty_when_the_store_fell_back_to_memory),
      cmocka_unit_test(log_level_out_of_range_means_nothing_or_everything),
      cmocka_unit_test(a_chunk_plan_of_another_cuda_context_is_refused),
      cmocka_unit_test(a_stream_of_another_cuda_context_is_named),
      cmocka_unit_test(a_stream_of_another_cuda_context_costs_no_tuning),
      cmocka_unit_test(cached_mode_serves_the_offline_heuristic_of_a_large_shape),
      cmocka_unit_test(log_callback_may_call_the_library),
      cmocka_unit_test(log_callback_may_tune_on_another_context),
      cmocka_unit_test(log_callback_may_call_the_shape_being_built),
      cmocka_unit_test(destroy_after_driver_shutdown_frees_the_host_side),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
