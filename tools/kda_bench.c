/* kda-bench: the performance claims of libkda, measured in one run on one
 * card and written as a table and a JSON file.
 *
 * Method (docs/PERFORMANCE.md): every output is checked against the float64
 * reference before it is timed; steady state is 64 back-to-back launches
 * captured in a CUDA graph over rotating buffers larger than L2, median of
 * the replays; single-launch latency follows a read-only L2 flush (a memset
 * would leave dirty lines whose write-back is charged to the kernel). */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "bench_common.h"
#include "bench_convert.h"
#include "bench_host.h"
#include "bench_run.h"
#include "bench_start.h"
#include "cuda_api.h"
#include "kda/kda.h"
#include "prewarm_budget.h"
#include "test_util.h"

/* A row whose fused time moves by more than this when repeated at the end of
 * the row gets a line under it. */
#define REPEAT_NOTE_PCT 3.0

/* Device copy bandwidth, counting bytes read plus bytes written. */
static double copy_bandwidth_gbps(void) {
  const size_t bytes = (size_t)1 << 30;
  void *a = cuda_alloc(&cu, bytes), *b = cuda_alloc(&cu, bytes);
  CUevent e0, e1;
  cu.EventCreate(&e0, 0);
  cu.EventCreate(&e1, 0);
  double t[REPLAYS];
  for (int i = -2; i < REPLAYS; ++i) {
    cu.EventRecord(e0, g_stream);
    cuda_check(&cu, cu.MemcpyDtoDAsync((CUdeviceptr)(uintptr_t)b, (CUdeviceptr)(uintptr_t)a, bytes, g_stream), "copy");
    cu.EventRecord(e1, g_stream);
    double ms = event_ms(e0, e1);
    if (i >= 0) t[i] = ms;
  }
  cu.EventDestroy(e0);
  cu.EventDestroy(e1);
  cu.MemFree((CUdeviceptr)(uintptr_t)a);
  cu.MemFree((CUdeviceptr)(uintptr_t)b);
  return 2.0 * (double)bytes / (median(t, REPLAYS) * 1e-3) / 1e9;
}

/* Device chunk-table build for 256 ragged sequences: GPU time per build
 * (steady state in a graph, and single), checked against the host builder. */
static void chunk_table_cost(kda_context *ctx, double *steady, double *single) {
  enum { N = 256, BT = 64 };
  int32_t cu_h[N + 1];
  cu_h[0] = 0;
  tu_rng rng;
  tu_rng_seed(&rng, 99);
  for (int i = 0; i < N; ++i) cu_h[i + 1] = cu_h[i] + (int32_t)tu_uniform_int(&rng, 0, 2000);
  const int64_t T = cu_h[N], cap = kda_chunk_indices_capacity(T, N, BT);
  void *d_cu = cuda_upload(&cu, cu_h, sizeof cu_h);
  int32_t *d_out = cuda_alloc(&cu, (size_t)cap * 8 + 4);
  kda_ok(kda_chunk_indices_build_device(ctx, d_cu, KDA_DTYPE_I32, N, T, BT, d_out, cap, d_out + cap * 2,
                                        (kda_stream)g_stream), "device chunk table");
  int32_t *dev = malloc((size_t)cap * 8 + 4), *host = malloc((size_t)cap * 8);
  int64_t nc = 0;
  kda_ok(kda_chunk_indices_build_host(cu_h, KDA_DTYPE_I32, N, BT, host, cap, &nc), "host table");
  cuda_download(&cu, dev, d_out, (size_t)cap * 8 + 4);
  if (dev[cap * 2] != nc || memcmp(dev, host, (size_t)nc * 8) != 0) {
    fprintf(stderr, "device chunk table differs from the host one\n");
    exit(1);
  }
  CUgraph graph;
  CUgraphExec exec;
  cuda_check(&cu, cu.StreamBeginCapture(g_stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), "capture");
  for (int i = 0; i < GRAPH_LAUNCHES; ++i)
    kda_ok(kda_chunk_indices_build_device(ctx, d_cu, KDA_DTYPE_I32, N, T, BT, d_out, cap,
                                          d_out + cap * 2, (kda_stream)g_stream), "captured build");
  cuda_check(&cu, cu.StreamEndCapture(g_stream, &graph), "end capture");
  cuda_check(&cu, cu.GraphInstantiate(&exec, graph, 0), "instantiate");
  CUevent e0, e1;
  cu.EventCreate(&e0, 0);
  cu.EventCreate(&e1, 0);
  double t[REPLAYS], u[SINGLES];
  for (int i = -2; i < REPLAYS; ++i) {
    cu.EventRecord(e0, g_stream);
    cu.GraphLaunch(exec, g_stream);
    cu.EventRecord(e1, g_stream);
    double ms = event_ms(e0, e1);
    if (i >= 0) t[i] = ms * 1e3 / GRAPH_LAUNCHES;
  }
  for (int i = 0; i < SINGLES; ++i) {
    cu.EventRecord(e0, g_stream);
    kda_chunk_indices_build_device(ctx, d_cu, KDA_DTYPE_I32, N, T, BT, d_out, cap, d_out + cap * 2,
                                   (kda_stream)g_stream);
    cu.EventRecord(e1, g_stream);
    u[i] = event_ms(e0, e1) * 1e3;
  }
  *steady = median(t, REPLAYS);
  *single = median(u, SINGLES);
  cu.EventDestroy(e0);
  cu.EventDestroy(e1);
  cu.GraphExecDestroy(exec);
  cu.GraphDestroy(graph);
  free(dev);
  free(host);
  cu.MemFree((CUdeviceptr)(uintptr_t)d_cu);
  cu.MemFree((CUdeviceptr)(uintptr_t)d_out);
}

/* Whether name is one of the comma-separated items of list. */
static int in_list(const char *list, const char *name) {
  const size_t n = strlen(name);
  for (const char *p = list; *p;) {
    const char *e = strchr(p, ',');
    const size_t len = e ? (size_t)(e - p) : strlen(p);
    if (len == n && strncmp(p, name, n) == 0) return 1;
    if (!e) break;
    p = e + 1;
  }
  return 0;
}

/* The rows to run: all but the extra groups, the first 4 (--quick) or
 * those of --groups, and of those only the token counts of --tokens when
 * given; their indices go to sel unless it is NULL. Returns how many. */
static int select_rows(const char *groups, const char *tokens, int quick, int *sel) {
  int n = 0;
  for (int i = 0; i < bench_row_count && !(quick && n == 4); ++i) {
    char t[32];
    snprintf(t, sizeof t, "%lld", (long long)bench_rows[i].tokens);
    if (tokens != NULL && !in_list(tokens, t)) continue;
    if (groups == NULL ? !bench_rows[i].extra : in_list(groups, bench_rows[i].group)) {
      if (sel) sel[n] = i;
      ++n;
    }
  }
  return n;
}

/* mkdir -p: 0, or -1 with errno set. */
static int make_dirs(const char *path) {
  char p[1024];
  if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p) {
    errno = ENAMETOOLONG;
    return -1;
  }
  for (char *s = p + 1; *s; ++s) {
    if (*s != '/') continue;
    *s = '\0';
    if (mkdir(p, 0755) != 0 && errno != EEXIST) return -1;
    *s = '/';
  }
  if (mkdir(p, 0755) != 0 && errno != EEXIST) return -1;
  struct stat st;
  if (stat(p, &st) != 0) return -1;
  if (!S_ISDIR(st.st_mode)) {
    errno = ENOTDIR;
    return -1;
  }
  return access(p, W_OK) == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
  const char *json_dir = "bench/results";
  const char *db = NULL;
  double budget_ms = KDA_PREWARM_BUDGET_MS;
  int quick = 0, host_only = 0, host_threads = 0, extra_streams = 0;
  const char *groups = NULL, *tokens = NULL;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--json-dir") && i + 1 < argc) {
      json_dir = argv[++i];
    } else if (!strcmp(argv[i], "--quick")) {
      quick = 1;
    } else if (!strcmp(argv[i], "--groups") && i + 1 < argc) {
      groups = argv[++i];
    } else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) {
      tokens = argv[++i];
    } else if (!strcmp(argv[i], "--host-only")) {
      host_only = 1;
    } else if (!strcmp(argv[i], "--host-threads") && i + 1 < argc) {
      host_only = 1;
      host_threads = atoi(argv[++i]);
      if (host_threads < 1 || host_threads > 256) {
        fprintf(stderr, "--host-threads: 1 to 256\n");
        return 2;
      }
    } else if (!strcmp(argv[i], "--extra-streams") && i + 1 < argc) {
      extra_streams = atoi(argv[++i]);
      if (extra_streams < 0 || extra_streams > 256) {
        fprintf(stderr, "--extra-streams: 0 to 256\n");
        return 2;
      }
    } else if (!strcmp(argv[i], "--db") && i + 1 < argc) {
      db = argv[++i];
    } else if (!strcmp(argv[i], "--budget-ms") && i + 1 < argc) {
      budget_ms = atof(argv[++i]);
    } else if (!strcmp(argv[i], "--child-start")) {
      char why[256];
      if (cuda_api_load(&cu, 0, why, sizeof why) != 0) return 1;
      return child_start();
    } else {
      fprintf(stderr, "usage: kda-bench [--json-dir DIR] [--db PATH] [--budget-ms MS] [--quick]\n"
                      "                 [--groups G,G...] [--tokens T,T...]\n"
                      "  --json-dir DIR  where <gpu>-<date>.json goes (default bench/results)\n"
                      "  --db PATH       tuning database (default: a fresh one under /tmp)\n"
                      "  --budget-ms MS  tuning budget of the fused kernel (default 15000, kda-tune prewarm's:\n"
                      "                  the whole candidate space); the unfused path's kernels get\n"
                      "                  the library's own (1000, a cold call in a server)\n"
                      "  --quick         the first 4 matrix rows only\n"
                      "  --groups LIST   only the rows of these groups (matrix, varlen, varlen-host,\n"
                      "                  varlen-plan, no-bias, K=64, chunk), e.g. --groups chunk,varlen-host;\n"
                      "                  the extra groups more, more-varlen, more-host and more-plan\n"
                      "                  (batches, a partial chunk, 32-128 sequences) run only when named\n"
                      "  --tokens LIST   of those rows only the token counts T in LIST, e.g.\n"
                      "                  --groups matrix --tokens 512,2048\n"
                      "  --extra-streams N  create N more streams (one launch each) before the rows,\n"
                      "                  as a server's process has: small grids run slower in such\n"
                      "                  a process (docs/performance-runs.md, sixteenth session)\n"
                      "  --host-only     only the host cost of a warm call (also runs on the\n"
                      "                  tests' stand-in driver: KDA_LIBCUDA=.../libkda_fake_cuda.so)\n"
                      "  --host-threads N  --host-only, then N threads calling at once into one\n"
                      "                  context, a stream each\n");
      return strcmp(argv[i], "--help") ? 2 : 0;
    }
  }
  /* Checked before anything is loaded or created. */
  if (select_rows(groups, tokens, quick, NULL) == 0) {
    fprintf(stderr, "kda-bench: no row is in the groups '%s' with the token counts '%s'\n",
            groups ? groups : "(default)", tokens ? tokens : "(any)");
    return 2;
  }
  char why[512];
  if (cuda_api_load(&cu, 0, why, sizeof why) != 0) {
    printf("kda-bench needs a GPU: %s\n", why);
    return 1;
  }
  /* The JSON is written at the end of a run of minutes: its folder is made
   * (with its parents) and checked now, not found missing then. */
  if (make_dirs(json_dir) != 0) {
    fprintf(stderr, "kda-bench: cannot create --json-dir %s: %s\n", json_dir, strerror(errno));
    return 2;
  }
  cuda_check(&cu, cu.StreamCreate(&g_stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
  /* A fresh database unless one is named: the run then shows tuning from
   * scratch, and the cold/warm-start children share it. */
  char tmpdir[] = "/tmp/kda-bench-XXXXXX", dbbuf[600];
  if (!db) {
    if (!mkdtemp(tmpdir)) {
      perror("mkdtemp");
      return 1;
    }
    snprintf(dbbuf, sizeof dbbuf, "%s/tune.db", tmpdir);
    db = dbbuf;
  }
  kda_context *ctx = NULL, *heur = NULL, *plain = NULL;
  kda_options o = kda_options_default();
  o.device = -1;
  o.db_path = db;
  /* Host-only runs may be on the stand-in driver, where nothing can be
   * timed: the tuned-slot path is then taken in cached mode. */
  o.tune_mode = host_only ? KDA_TUNE_CACHED : KDA_TUNE_ON;
  o.tune_budget_ms = budget_ms;
  kda_ok(kda_context_create(&o, &ctx), "kda_context_create (tuned)");
  kda_options oh = kda_options_default();
  oh.device = -1;
  oh.tune_mode = KDA_TUNE_OFF;
  kda_ok(kda_context_create(&oh, &heur), "kda_context_create (heuristic)");
  /* The tuned winners (read from the same database) launched without
   * programmatic dependent launch: the overlap's share of each row. */
  kda_options op = o;
  op.tune_mode = KDA_TUNE_CACHED;
  op.launch_overlap = KDA_LAUNCH_OVERLAP_OFF;
  kda_ok(kda_context_create(&op, &plain), "kda_context_create (plain launch)");
  g_info.struct_size = sizeof g_info;
  kda_context_get_device_info(ctx, &g_info);
  if (host_only) {
    double inside = 0, enq = 0, gpu = 0;
    host_cost(heur, &inside, &enq, &gpu, NULL);
    printf("%s: host cost per warm call (tuning off): %.3f us median inside "
           "kda_gate_chunk_cumsum; %.3f us per call over 100k enqueues\n",
           g_info.name, inside, enq);
    /* --host-only loads no module of its own (it also runs on the tests'
     * stand-in driver), so no bare launch to compare with. */
    host_cost(ctx, &inside, &enq, &gpu, NULL);
    printf("%s: host cost per warm call (tuned-slot path): %.3f us median inside "
           "kda_gate_chunk_cumsum; %.3f us per call over 100k enqueues\n",
           g_info.name, inside, enq);
    host_cost(plain, &inside, &enq, &gpu, NULL);
    printf("%s: host cost per warm call (tuned-slot path, launch overlap off): %.3f us median "
           "inside kda_gate_chunk_cumsum; %.3f us per call over 100k enqueues\n",
           g_info.name, inside, enq);
    if (host_threads > 0) host_cost_threads(ctx, host_threads);
    kda_context_destroy(plain);
    kda_context_destroy(ctx);
    kda_context_destroy(heur);
    return 0;
  }
  /* The unfused path's kernels are tuned here, with the library's own
   * budget, into the same database, where the tuned context then finds
   * them: the full search of each would add about 10 s per row and move
   * no large row (both converge to the heuristic's shape there). */
  kda_options ou = o;
  ou.tune_budget_ms = kda_options_default().tune_budget_ms;
  kda_context *unf = NULL;
  kda_ok(kda_context_create(&ou, &unf), "kda_context_create (unfused tuning)");
  bench_run_init();
  bench_host_init();
  if (extra_streams > 0) bench_extra_streams(extra_streams);
  if (bench_convert_init(&cu, g_info.cc_major, g_info.cc_minor, why, sizeof why) != 0) {
    fprintf(stderr, "%s\n", why);
    return 1;
  }
  const double bw = copy_bandwidth_gbps();
  printf("GPU: %s, driver %d, NVRTC %d.%d, libkda %s\n", g_info.name, g_info.driver_version,
         g_info.nvrtc_major, g_info.nvrtc_minor, kda_version());
  printf("device copy bandwidth: %.0f GB/s (read + write, 1 GiB cudaMemcpy, median of %d)\n", bw,
         REPLAYS);
  printf("convert_us: the fastest of 6 plain kernels that only move the row's bytes (bf16 in,\n"
         "f32 out, no arithmetic), timed like fused_us; %%conv = convert_us / fused_us, over\n"
         "100%% where the fused kernel is the faster of the two\n");
  printf("each row is timed again at the end of its measurements, on a second allocation of "
         "its buffers;\na line under the row shows the repeat where the fused time moved by more "
         "than %.0f%%\n\n", REPEAT_NOTE_PCT);

  int *sel = calloc((size_t)bench_row_count, sizeof *sel);
  const int nrows = select_rows(groups, tokens, quick, sel);
  bench_result *res = calloc((size_t)nrows, sizeof *res);
  printf("tuning database: %s (budget per specialization: fused kernel %.0f ms, as kda-tune "
         "prewarm; the unfused path's kernels %.0f ms, the library's own)\n\n",
         db, budget_ms, ou.tune_budget_ms);
  printf("%-11s %6s %3s %4s %5s %4s %10s %8s %9s %6s %6s %10s %6s %8s %7s %8s %7s %8s %s\n",
         "group", "T", "H", "K", "chunk", "seqs", "elements", "fused_us", "single_us", "GB/s",
         "%copy", "convert_us", "%conv", "unfused",
         "speedup", "heur_us", "tuned/h", "plain_us",
         "config (tune ms: compile ms, candidates; the tuner's own us: winner/heuristic)");
  int repeat_moved = 0;
  for (int i = 0; i < nrows; ++i) {
    const bench_row *r = &bench_rows[sel[i]];
    run_row(ctx, unf, heur, plain, r, &res[i]);
    const double bytes = (double)res[i].elements * 6.0;
    const double gbps = bytes / (res[i].fused_us * 1e-6) / 1e9;
    printf("%-11s %6lld %3d %4d %5d %4d %10lld %8.2f %9.2f %6.0f %5.1f%% %10.2f %5.1f%% %8.2f %6.2fx "
           "%8.2f %6.2fx %8.2f %s (%.0f ms: %.0f, %d; %.2f/%.2f)\n",
           r->group, (long long)r->tokens, r->heads, r->head_dim, r->chunk, r->num_seqs,
           (long long)res[i].elements, res[i].fused_us, res[i].fused_single_us, gbps,
           100.0 * gbps / bw, res[i].convert_us, 100.0 * res[i].convert_us / res[i].fused_us,
           res[i].unfused_us, res[i].unfused_us / res[i].fused_us,
           res[i].heuristic_us, res[i].heuristic_us / res[i].fused_us, res[i].plain_us,
           res[i].config, res[i].tune_ms, res[i].compile_ms, res[i].candidates, res[i].tuner_us,
           res[i].tuner_heuristic_us);
    const double moved = 100.0 * (res[i].fused_us_repeat / res[i].fused_us - 1.0);
    if (fabs(moved) > REPEAT_NOTE_PCT) {
      printf("  ^ repeated at the end of the row, on new buffers: fused %.2f us (%+.1f%%), heuristic %.2f "
             "(%+.1f%%), convert %.2f (%+.1f%%)\n",
             res[i].fused_us_repeat, moved, res[i].heuristic_us_repeat,
             100.0 * (res[i].heuristic_us_repeat / res[i].heuristic_us - 1.0),
             res[i].convert_us_repeat,
             100.0 * (res[i].convert_us_repeat / res[i].convert_us - 1.0));
      ++repeat_moved;
    }
    fflush(stdout);
  }

  printf("rows whose fused time moved by more than %.0f%% when repeated: %d of %d\n",
         REPEAT_NOTE_PCT, repeat_moved, nrows);

  double inside = 0, enq = 0, gpu = 0, tab_steady = 0, tab_single = 0;
  double plain_inside = 0, plain_enq = 0, plain_gpu = 0;
  /* Whether the tuned and heuristic contexts still launched with the
   * programmatic attribute after the rows (a refusal turns it off). */
  kda_stats st_tuned = {.struct_size = sizeof st_tuned}, st_heur = {.struct_size = sizeof st_heur};
  kda_ok(kda_context_get_stats(ctx, &st_tuned), "stats (tuned)");
  kda_ok(kda_context_get_stats(heur, &st_heur), "stats (heuristic)");
  printf("\nprogrammatic dependent launch still on after the rows: tuned context %s, heuristic "
         "context %s\n", st_tuned.launch_overlap_active ? "yes" : "NO",
         st_heur.launch_overlap_active ? "yes" : "NO");
  double bare = 0;
  host_cost(plain, &plain_inside, &plain_enq, &plain_gpu, NULL);
  host_cost(ctx, &inside, &enq, &gpu, &bare);
  double bare_wall = 0, bare_gpu = 0;
  bare_enqueue_cost(&bare_wall, &bare_gpu);
  chunk_table_cost(ctx, &tab_steady, &tab_single);
  printf("\nhost cost per warm call (T=512 H=4): %.2f us median inside kda_gate_chunk_cumsum "
         "(queue never full); 100k enqueues then one sync: %.2f us per call wall, %.2f us per "
         "call GPU\n",
         inside, enq, gpu);
  printf("  with launch overlap off (plain cuLaunchKernel): %.2f us median inside; %.2f us per "
         "call wall, %.2f us per call GPU\n",
         plain_inside, plain_enq, plain_gpu);
  printf("  the driver alone on this machine (an empty kernel with the same 12 parameters, %s; "
         "in rounds alternating with the calls above): %.2f us median per launch, so the "
         "library's share is %.2f us\n",
         cu.LaunchKernelEx ? "cuLaunchKernelEx + programmatic serialization" : "cuLaunchKernel",
         bare, inside - bare);
  printf("  the same empty kernel, 100k enqueues then one sync: %.2f us per call wall, %.2f us "
         "per call GPU\n",
         bare_wall, bare_gpu);
  queued_gpu_cost(ctx);
  launch_forms();
  printf("device chunk-table build, 256 sequences (%s): %.2f us steady state, %.2f us single\n",
         "no host sync", tab_steady, tab_single);
  /* Cold and warm start share a database of their own, new for this run. */
  char startdb[700];
  snprintf(startdb, sizeof startdb, "%s.start", db);
  setenv("KDA_BENCH_DB", startdb, 1);
  char cold[512] = "", warm[512] = "";
  int cold_ok = run_child(cold, sizeof cold) == 0, warm_ok = run_child(warm, sizeof warm) == 0;
  printf("fresh process, context creation to first result (T=8192 H=32 K=128, default budget):\n");
  printf("  first process:  %s", cold_ok ? cold : "failed\n");
  printf("  second process: %s", warm_ok ? warm : "failed\n");

  /* JSON */
  char slug[128] = "", date[32], path[512];
  for (size_t i = 0, j = 0; g_info.name[i] && j + 1 < sizeof slug; ++i) {
    char c = g_info.name[i];
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) slug[j++] = c;
    else if (j && slug[j - 1] != '-') slug[j++] = '-';
    slug[j] = 0;
  }
  time_t tt = time(NULL);
  strftime(date, sizeof date, "%Y-%m-%d", gmtime(&tt));
  snprintf(path, sizeof path, "%s/%s-%s.json", json_dir, slug, date);
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
    return 1;
  }
  fprintf(f, "{\n  \"gpu\": \"%s\",\n  \"driver\": %d,\n  \"nvrtc\": \"%d.%d\",\n  \"libkda\": \"%s\",\n"
             "  \"copy_bw_gbps\": %.1f,\n",
          g_info.name, g_info.driver_version, g_info.nvrtc_major, g_info.nvrtc_minor, kda_version(), bw);
  fprintf(f, "  \"extra_streams\": %d,\n", extra_streams);
  fprintf(f, "  \"tune_budget_ms_fused\": %.0f,\n  \"tune_budget_ms_unfused\": %.0f,\n", budget_ms,
          ou.tune_budget_ms);
  fprintf(f, "  \"host_us_per_call_inside\": %.3f,\n  \"host_us_per_call_enqueue\": %.3f,\n"
             "  \"gpu_us_per_call_host_row\": %.3f,\n  \"chunk_table_256_us_steady\": %.3f,\n"
             "  \"chunk_table_256_us_single\": %.3f,\n  \"host_us_bare_driver_launch\": %.3f,\n"
             "  \"host_us_library_share\": %.3f,\n  \"host_us_bare_enqueue\": %.3f,\n"
             "  \"gpu_us_bare_enqueue\": %.3f,\n",
          inside, enq, gpu, tab_steady, tab_single, bare, inside - bare, bare_wall, bare_gpu);
  fprintf(f, "  \"launch_overlap\": \"auto (programmatic dependent launch) in every row but the "
             "plain_launch fields\",\n  \"launch_overlap_active_after_rows\": {\"tuned\": %s, "
             "\"heuristic\": %s},\n  \"host_us_per_call_inside_plain_launch\": %.3f,\n"
             "  \"host_us_per_call_enqueue_plain_launch\": %.3f,\n",
          st_tuned.launch_overlap_active ? "true" : "false",
          st_heur.launch_overlap_active ? "true" : "false", plain_inside, plain_enq);
  fprintf(f, "  \"cold_start\": %s,\n  \"warm_start\": %s,\n", cold_ok ? cold : "null\n",
          warm_ok ? warm : "null\n");
  fprintf(f, "  \"rows\": [\n");
  for (int i = 0; i < nrows; ++i) {
    const bench_row *r = &bench_rows[sel[i]];
    const double gbps = (double)res[i].elements * 6.0 / (res[i].fused_us * 1e-6) / 1e9;
    fprintf(f,
            "    {\"kernel\": \"gate_chunk_cumsum\", \"group\": \"%s\", \"B\": %lld, \"T\": %lld, "
            "\"H\": %d, \"K\": %d, \"chunk\": %d, \"dt_bias\": %s, \"num_seqs\": %d, "
            "\"rows_in_launch\": %s, \"chunk_plan\": %s, \"dtype\": \"bf16\", "
            "\"out_dtype\": \"f32\", \"elements\": %lld, \"us_median\": %.3f, \"us_single\": %.3f, "
            "\"gbps\": %.1f, \"pct_of_copy_bw\": %.2f, \"unfused_us_median\": %.3f, "
            "\"speedup_vs_unfused\": %.3f, \"heuristic_us_median\": %.3f, \"max_rel_err\": %.3g, "
            "\"us_median_plain_launch\": %.3f, \"config\": \"%s\", \"tune_ms\": %.1f, "
            "\"compile_ms\": %.1f, \"candidates\": %d, \"tuner_us\": %.3f, "
            "\"tuner_heuristic_us\": %.3f, \"convert_us\": %.3f, \"pct_of_convert\": %.2f, "
            "\"convert_kernel\": \"%s\", \"us_median_repeat\": %.3f, "
            "\"heuristic_us_median_repeat\": %.3f, \"convert_us_repeat\": %.3f}%s\n",
            r->group, (long long)r->batch, (long long)r->tokens, r->heads, r->head_dim, r->chunk,
            r->bias ? "true" : "false", r->num_seqs, r->host_rows ? "true" : "false",
            r->chunk_plan ? "true" : "false",
            (long long)res[i].elements, res[i].fused_us,
            res[i].fused_single_us, gbps, 100.0 * gbps / bw, res[i].unfused_us,
            res[i].unfused_us / res[i].fused_us, res[i].heuristic_us, res[i].max_err,
            res[i].plain_us, res[i].config, res[i].tune_ms, res[i].compile_ms, res[i].candidates,
            res[i].tuner_us, res[i].tuner_heuristic_us, res[i].convert_us,
            100.0 * res[i].convert_us / res[i].fused_us, res[i].convert_kernel,
            res[i].fused_us_repeat, res[i].heuristic_us_repeat, res[i].convert_us_repeat,
            i + 1 < nrows ? "," : "");
  }
  fprintf(f, "  ]\n}\n");
  fclose(f);
  printf("\nwrote %s\n", path);
  kda_context_destroy(ctx);
  kda_context_destroy(unf);
  kda_context_destroy(heur);
  kda_context_destroy(plain);
  free(res);
  free(sel);
  return 0;
}
