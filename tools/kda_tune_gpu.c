/* kda-tune verify, info and bench: the subcommands that touch a GPU. */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cuda_api.h"
#include "kda_tune.h"
#include "reference.h"
#include "test_util.h"

/* ---------------------------------------------------------------- verify */

static const tune_opt verify_opts[] = {
    TUNE_OPT_HELP, TUNE_OPT_DB, TUNE_OPT_JSON, TUNE_OPT_DEVICE,
    {"hash-only", NULL, "only check cubin hashes and framing (no GPU needed)"},
    {"drop", NULL, "delete cubins that fail the hash check"},
    {NULL, NULL, NULL}};
static const tune_cmd verify_cmd = {
    "verify", "[OPTIONS]",
    "Check every cubin's SHA-256 and framing (no GPU needed), then on the GPU load each cubin "
    "built for its architecture and re-run every result tuned for this GPU model against the "
    "float64 reference on random inputs. A re-run whose kernel faults loses the CUDA context: "
    "verify names that result and stops, the rest not re-run. Without a GPU only the hash "
    "check runs and the exit status is 1 unless --hash-only.",
    verify_opts, 0, 0};

typedef struct verify_state {
  int json, first;
  const char *phase;
} verify_state;

static int report_cubin(void *user, const kda_db_cubin *c, int32_t ok, const char *problem) {
  verify_state *s = user;
  if (s->json) {
    printf(s->first ? "\n  {" : ",\n  {");
    s->first = 0;
    printf("\"check\": \"%s\", \"arch\": %d, \"spec\": ", s->phase, c->arch);
    json_str(stdout, c->spec);
    printf(", \"config\": ");
    json_str(stdout, c->config);
    printf(", \"ok\": %s, \"problem\": ", ok ? "true" : "false");
    json_str(stdout, ok ? NULL : problem);
    printf("}");
  } else if (!ok) {
    printf("%-6s FAIL sm_%d %s %s: %s\n", s->phase, c->arch, c->spec, c->config, problem);
  }
  return 0;
}

typedef struct rerun_job {
  const cuda_api *cu;
  kda_context *ctx;
  char gpu_key[128];
  verify_state *vs;
  int64_t tried, bad, other_gpu;
  /* A re-run faulted (or met a context lost before it): the CUDA context
   * is gone, so the rows after it cannot be re-run. The row's key. */
  int lost;
  char lost_key[64];
} rerun_job;

/* Runs one stored result's specialization on random inputs and compares
 * with the float64 reference. 0 ok, else a message in why. */
static int rerun_one(rerun_job *j, const kda_db_record *r, char *why, size_t why_size) {
  kda_kernel kernel;
  kda_gate_args a;
  int64_t tokens = 0;
  if (kda_db_record_shape(r, &kernel, &a, &tokens) != KDA_OK) {
    snprintf(why, why_size, "%s", kda_last_error());
    return -1;
  }
  const size_t hk = (size_t)a.num_heads * (size_t)a.head_dim, n = (size_t)tokens * hk;
  const size_t isz = tu_dtype_size(a.g_dtype), osz = tu_dtype_size(a.out_dtype);
  tu_rng rng;
  tu_rng_seed(&rng, 0x7665726966ull ^ (uint64_t)r->id);
  void *g = malloc(n * isz), *got = malloc(n * osz);
  double *gd = malloc(n * sizeof *gd), *ref = malloc(n * sizeof *ref);
  float *alog = malloc((size_t)a.num_heads * sizeof *alog), *bias = malloc(hk * sizeof *bias);
  int32_t cu_host[2] = {0, (int32_t)tokens};
  int64_t cap = kda_chunk_indices_capacity(tokens, 1, a.chunk_size), rows = 0;
  int32_t *table = malloc((size_t)(cap > 0 ? cap : 1) * 8);
  int rc = -1;
  if (!g || !got || !gd || !ref || !alog || !bias || !table) {
    snprintf(why, why_size, "out of memory");
    goto done;
  }
  tu_fill_random_input(&rng, a.g_dtype, g, gd, n, 1.0);
  for (int h = 0; h < a.num_heads; h++) alog[h] = (float)log(1.0 + 15.0 * tu_uniform(&rng));
  for (size_t i = 0; i < hk; i++) bias[i] = (float)tu_normal(&rng);
  kda_gate_args host = a;
  host.A_log = a.A_log ? alog : NULL;
  host.dt_bias = a.dt_bias ? bias : NULL;
  if (a.num_seqs > 0) {
    host.cu_seqlens = cu_host;
    host.cu_seqlens_dtype = KDA_DTYPE_I32;
    if (kda_chunk_indices_build_host(cu_host, KDA_DTYPE_I32, 1, a.chunk_size, table, cap, &rows) != KDA_OK) {
      snprintf(why, why_size, "%s", kda_last_error());
      goto done;
    }
  }
  int ref_rc = kernel == KDA_KERNEL_GATE               ? kda_ref_gate(&host, gd, ref)
               : kernel == KDA_KERNEL_CHUNK_LOCAL_CUMSUM ? kda_ref_chunk_local_cumsum(&host, gd, ref)
                                                         : kda_ref_gate_chunk_cumsum(&host, gd, ref);
  if (ref_rc != 0) {
    snprintf(why, why_size, "the reference rejected the shape");
    goto done;
  }
  kda_gate_args d = a;
  d.g = cuda_upload(j->cu, g, n * isz);
  d.out = cuda_alloc(j->cu, n * osz);
  d.A_log = a.A_log ? cuda_upload(j->cu, alog, (size_t)a.num_heads * 4) : NULL;
  d.dt_bias = a.dt_bias ? cuda_upload(j->cu, bias, hk * 4) : NULL;
  if (a.num_seqs > 0) {
    d.cu_seqlens = cuda_upload(j->cu, cu_host, sizeof cu_host);
    d.cu_seqlens_dtype = KDA_DTYPE_I32;
    d.chunk_indices = cuda_upload(j->cu, table, (size_t)rows * 8);
    d.num_chunks = rows;
  }
  kda_status st = kernel == KDA_KERNEL_GATE               ? kda_gate(j->ctx, &d, NULL)
                  : kernel == KDA_KERNEL_CHUNK_LOCAL_CUMSUM ? kda_chunk_local_cumsum(j->ctx, &d, NULL)
                                                            : kda_gate_chunk_cumsum(j->ctx, &d, NULL);
  /* Synchronised here, not inside cuda_download (which exits on an error):
   * a kernel that faults is what verify is for, and this row is its. */
  const CUresult synced = st == KDA_OK ? j->cu->CtxSynchronize() : CUDA_SUCCESS;
  if (synced != CUDA_SUCCESS) {
    const char *name = "?";
    j->cu->GetErrorName(synced, &name);
    /* Named as the library names it, whichever call met the fault first
     * (on a GPU, this one: the kernel faults after its launch returned). */
    snprintf(why, why_size, "%s: the kernel faulted (cuCtxSynchronize: %s): the CUDA context is "
             "lost", kda_status_name(KDA_ERROR_CONTEXT_LOST), name);
    j->lost = 1;
  } else if (st == KDA_OK) {
    cuda_download(j->cu, got, d.out, n * osz);
    double err = 0;
    size_t bad = a.out_dtype == KDA_DTYPE_BF16 ? tu_check_rounded_bf16(got, ref, n, 2e-5, &err, NULL)
                                               : tu_check_close(got, ref, n, 2e-5, &err, NULL);
    if (bad == 0) rc = 0;
    else snprintf(why, why_size, "%zu of %zu outputs differ from the reference (max err %.3g)", bad, n, err);
  } else {
    snprintf(why, why_size, "%s", kda_last_error());
    j->lost = st == KDA_ERROR_CONTEXT_LOST;
  }
  const void *bufs[] = {d.g, d.out, d.A_log, d.dt_bias, a.num_seqs > 0 ? d.cu_seqlens : NULL,
                        a.num_seqs > 0 ? d.chunk_indices : NULL};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
    if (bufs[i]) j->cu->MemFree((CUdeviceptr)(uintptr_t)bufs[i]);
done:
  free(g), free(got), free(gd), free(ref), free(alog), free(bias), free(table);
  return rc;
}

static int rerun_row(void *user, const kda_db_record *r) {
  rerun_job *j = user;
  if (strcmp(r->gpu_key, j->gpu_key) != 0) {
    j->other_gpu++;
    return 0;
  }
  char why[512] = "";
  j->tried++;
  int ok = rerun_one(j, r, why, sizeof why) == 0;
  if (!ok) j->bad++;
  if (j->vs->json) {
    printf(j->vs->first ? "\n  {" : ",\n  {");
    j->vs->first = 0;
    printf("\"check\": \"rerun\", \"key\": ");
    json_str(stdout, r->key);
    printf(", \"spec\": ");
    json_str(stdout, r->spec);
    printf(", \"ok\": %s, \"problem\": ", ok ? "true" : "false");
    json_str(stdout, ok ? NULL : why);
    printf("}");
  } else {
    printf("rerun  %s %.16s %s bucket %lld%s%s\n", ok ? "ok  " : "FAIL", r->key, r->spec,
           (long long)r->bucket, ok ? "" : ": ", why);
  }
  if (j->lost) snprintf(j->lost_key, sizeof j->lost_key, "%.16s", r->key);
  return j->lost; /* nothing after a lost context can run: stop */
}

int cmd_verify(int argc, char **argv) {
  tune_args a;
  int rc = tune_parse(&verify_cmd, argc, argv, &a);
  if (rc >= 0) return rc;
  long device = 0;
  if ((rc = tune_get_int(&a, "device", 0, 1023, &device)) != 0) return rc;
  int drop = tune_has(&a, "drop");
  kda_db *db = tune_open_existing_db(&a, (drop ? 0 : KDA_DB_READ_ONLY) | KDA_DB_VERIFY);
  if (db == NULL) return TUNE_FAIL;
  verify_state vs = {tune_has(&a, "json"), 1, "hash"};
  if (vs.json) printf("{\"checks\": [");
  int64_t checked = 0, bad = 0, loaded = 0, load_bad = 0;
  kda_status st = kda_db_check_cubins(db, drop, report_cubin, &vs, &checked, &bad);
  int status = TUNE_OK;
  char gpu_note[1024] = "";
  rerun_job job;
  memset(&job, 0, sizeof job);
  job.vs = &vs;
  if (st != KDA_OK) {
    status = TUNE_FAIL;
    snprintf(gpu_note, sizeof gpu_note, "%s", kda_last_error());
  } else if (!tune_has(&a, "hash-only")) {
    static cuda_api cu;
    char why[512] = "";
    kda_context *ctx = NULL;
    kda_options o = kda_options_default();
    o.device = -1; /* the tools' CUDA context, so buffers and kernels share it */
    o.db_path = kda_db_path(db);
    o.tune_mode = KDA_TUNE_CACHED;
    if (cuda_api_load(&cu, (int)device, why, sizeof why) != 0 || kda_context_create(&o, &ctx) != KDA_OK) {
      snprintf(gpu_note, sizeof gpu_note,
               "no usable GPU (%s): only the hash check ran; loading cubins and re-running "
               "tuned kernels need a GPU (use --hash-only to check hashes alone)",
               why[0] ? why : kda_last_error());
      status = TUNE_FAIL;
    } else {
      kda_device_info info;
      memset(&info, 0, sizeof info);
      info.struct_size = sizeof info;
      kda_context_get_device_info(ctx, &info);
      kda_db_gpu_key(&info, job.gpu_key, sizeof job.gpu_key);
      vs.phase = "load";
      st = kda_db_load_cubins(db, ctx, report_cubin, &vs, &loaded, &load_bad);
      job.cu = &cu;
      job.ctx = ctx;
      if (st == KDA_OK) st = kda_db_list(db, NULL, rerun_row, &job);
      if (st != KDA_OK) snprintf(gpu_note, sizeof gpu_note, "%s", kda_last_error());
      else if (job.lost)
        snprintf(gpu_note, sizeof gpu_note,
                 "re-running result %s lost the CUDA context (its kernel faulted, or the "
                 "context was lost before it): the results after it were not re-run; run "
                 "kda-tune verify again to check them", job.lost_key);
      kda_context_destroy(ctx);
    }
  }
  if (bad || load_bad || job.bad || job.lost || st != KDA_OK) status = TUNE_FAIL;
  if (vs.json) {
    printf("%s],\n \"cubins_checked\": %lld, \"hash_failures\": %lld, \"cubins_loaded\": %lld, "
           "\"load_failures\": %lld, \"results_rerun\": %lld, \"rerun_failures\": %lld, "
           "\"results_of_other_gpus\": %lld, \"dropped\": %lld, \"note\": ",
           vs.first ? "" : "\n", (long long)checked, (long long)bad, (long long)loaded,
           (long long)load_bad, (long long)job.tried, (long long)job.bad, (long long)job.other_gpu,
           (long long)(drop ? bad : 0));
    json_str(stdout, gpu_note[0] ? gpu_note : NULL);
    printf("}\n");
  } else {
    printf("hash   %lld cubins checked, %lld failed%s\n", (long long)checked, (long long)bad,
           drop && bad ? " (dropped)" : "");
    if (!tune_has(&a, "hash-only") && (gpu_note[0] == '\0' || job.lost)) {
      printf("load   %lld cubins for this architecture loaded, %lld failed\n", (long long)loaded,
             (long long)load_bad);
      printf("rerun  %lld results re-run, %lld failed (%lld belong to other GPU models)\n",
             (long long)job.tried, (long long)job.bad, (long long)job.other_gpu);
    }
  }
  if (gpu_note[0]) fprintf(stderr, "kda-tune verify: error: %s\n", gpu_note);
  tune_print_warnings(db);
  kda_db_close(db);
  return status;
}

/* ------------------------------------------------------------------ info */

static const tune_opt info_opts[] = {TUNE_OPT_HELP, TUNE_OPT_DB, TUNE_OPT_JSON, TUNE_OPT_DEVICE,
                                     {NULL, NULL, NULL}};
static const tune_cmd info_cmd = {
    "info", "[OPTIONS]",
    "GPUs (all, or --device N), driver, NVRTC and library versions, and the tuning database in "
    "use with the rule that chose it (--db, KDA_CACHE_DIR, XDG_CACHE_HOME or the default).",
    info_opts, 0, 0};

typedef struct gpu_rows {
  int64_t n, stale;
} gpu_rows;

static int count_gpu_row(void *user, const kda_db_record *r) {
  gpu_rows *g = user;
  g->n++;
  g->stale += r->stale != 0;
  return 0;
}

int cmd_info(int argc, char **argv) {
  tune_args a;
  int rc = tune_parse(&info_cmd, argc, argv, &a);
  if (rc >= 0) return rc;
  long only = -1;
  if ((rc = tune_get_int(&a, "device", 0, 1023, &only)) != 0) return rc;
  int json = tune_has(&a, "json");
  kda_db_versions v;
  if (kda_db_current(&v) != KDA_OK) {
    tune_error(&a, "%s", kda_last_error());
    return TUNE_FAIL;
  }
  kda_db *db = tune_open_db(&a, KDA_DB_READ_ONLY);
  if (db == NULL) return TUNE_FAIL;
  const char *rule = kda_db_path_rule(db);
  const char *why = tune_rule_words(rule);
  if (json) {
    printf("{\"library\": \"%s\", \"nvrtc\": ", v.lib_version);
    json_str(stdout, v.nvrtc_version);
    printf(", \"schema_version\": %d, \"database\": ", v.schema_version);
    json_str(stdout, kda_db_path(db));
    printf(", \"database_rule\": ");
    json_str(stdout, rule);
    printf(", \"database_mode\": ");
    json_str(stdout, kda_db_mode(db));
    printf(", \"gpus\": [");
  } else {
    printf("libkda      %s (tool built with %d.%d.%d)\n", v.lib_version, KDA_VERSION_MAJOR,
           KDA_VERSION_MINOR, KDA_VERSION_PATCH);
    printf("nvrtc       %s\n", v.nvrtc_version);
    printf("database    %s\n", kda_db_path(db)[0] ? kda_db_path(db) : "(in memory)");
    printf("  chosen by %s; %s\n", why,
           !strcmp(kda_db_mode(db), "memory") && kda_db_path(db)[0] ? "not created yet"
                                                                     : kda_db_mode(db));
    printf("templates   gate_cumsum %.16s, chunk_indices %.16s\n", v.gate_cumsum_hash,
           v.chunk_indices_hash);
  }
  int found = 0;
  char no_gpu[512] = "";
  for (int dev = only >= 0 ? (int)only : 0; dev < (only >= 0 ? only + 1 : 64); dev++) {
    kda_options o = kda_options_default();
    o.device = dev;
    o.tune_mode = KDA_TUNE_OFF;
    kda_context *ctx = NULL;
    kda_status st = kda_context_create(&o, &ctx);
    if (st != KDA_OK) {
      if (found == 0 || only >= 0) snprintf(no_gpu, sizeof no_gpu, "%s", kda_last_error());
      break;
    }
    kda_device_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    kda_context_get_device_info(ctx, &info);
    char key[128];
    kda_db_gpu_key(&info, key, sizeof key);
    /* What this database holds for this GPU model: none means every call
     * here tunes (or runs the heuristic) cold, e.g. a file from another
     * model's fleet. */
    kda_db_filter f = kda_db_filter_default();
    f.gpu = key;
    gpu_rows rows = {0, 0};
    kda_db_list(db, &f, count_gpu_row, &rows);
    if (json) {
      printf("%s{\"device\": %d, \"name\": ", found ? ", " : "", dev);
      json_str(stdout, info.name);
      printf(", \"gpu_key\": ");
      json_str(stdout, key);
      printf(", \"cc\": \"%d.%d\", \"sms\": %d, \"l2_bytes\": %d, \"driver\": %d, "
             "\"results\": %lld, \"stale_results\": %lld}",
             info.cc_major, info.cc_minor, info.sm_count, info.l2_bytes, info.driver_version,
             (long long)rows.n, (long long)rows.stale);
    } else {
      printf("gpu %-7d %s, sm_%d%d, %d SMs, L2 %d MiB, driver %d.%d\n", dev, info.name,
             info.cc_major, info.cc_minor, info.sm_count, info.l2_bytes >> 20,
             info.driver_version / 1000, (info.driver_version % 1000) / 10);
      printf("  gpu key   %s\n", key);
      printf("  results   %lld in this database (%lld stale)%s\n", (long long)rows.n,
             (long long)rows.stale,
             rows.n == 0 ? ": nothing tuned for this GPU model here; run kda-tune prewarm" : "");
    }
    kda_context_destroy(ctx);
    found++;
  }
  if (json) {
    printf("], \"gpu_error\": ");
    json_str(stdout, found ? NULL : no_gpu);
    printf("}\n");
  } else if (!found) {
    printf("gpu         none: %s\n", no_gpu);
  }
  kda_db_close(db);
  return TUNE_OK;
}

/* ----------------------------------------------------------------- bench */

static const tune_opt bench_opts[] = {
    TUNE_OPT_HELP, TUNE_OPT_DB, TUNE_OPT_JSON, TUNE_OPT_DEVICE,
    {"quick", NULL, "fewer rows (kda-bench --quick)"},
    {"json-dir", "DIR", "where kda-bench writes its JSON (default: a temporary folder)"},
    {NULL, NULL, NULL}};
static const tune_cmd bench_cmd = {
    "bench", "[OPTIONS]",
    "Runs kda-bench (installed next to kda-tune), which times the tuned config versus the "
    "heuristic config versus the unfused two-kernel path on its fixed shape table, checking "
    "every output against the float64 reference first, and prints a table. --json prints "
    "kda-bench's JSON instead. --device N sets CUDA_VISIBLE_DEVICES. --db PATH times the "
    "configs of that database (a prewarmed one: no tuning in the run); without it kda-bench "
    "tunes from scratch in a fresh database under /tmp.",
    bench_opts, 0, 0};

int cmd_bench(int argc, char **argv) {
  tune_args a;
  int rc = tune_parse(&bench_cmd, argc, argv, &a);
  if (rc >= 0) return rc;
  long device = -1;
  if ((rc = tune_get_int(&a, "device", 0, 1023, &device)) != 0) return rc;
  char self[PATH_MAX], bench[PATH_MAX + 16];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) {
    tune_error(&a, "cannot locate kda-tune's own folder: %s", strerror(errno));
    return TUNE_FAIL;
  }
  self[n] = '\0';
  snprintf(bench, sizeof bench, "%s/kda-bench", dirname(self));
  if (access(bench, X_OK) != 0) {
    tune_error(&a, "kda-bench not found at %s (it is built and installed with kda-tune)", bench);
    return TUNE_FAIL;
  }
  const char *db = tune_get(&a, "db");
  if (db != NULL && db[0] == '\0') {
    tune_error(&a, "--db needs a file name");
    return TUNE_USAGE;
  }
  if (device >= 0) {
    char d[32];
    snprintf(d, sizeof d, "%ld", device);
    setenv("CUDA_VISIBLE_DEVICES", d, 1);
  }
  char dir[] = "/tmp/kda-tune-bench-XXXXXX";
  const char *json_dir = tune_get(&a, "json-dir");
  if (json_dir == NULL && mkdtemp(dir) == NULL) {
    tune_error(&a, "cannot create a temporary folder: %s", strerror(errno));
    return TUNE_FAIL;
  }
  if (json_dir == NULL) json_dir = dir;
  char *args[8];
  int k = 0;
  args[k++] = bench;
  args[k++] = "--json-dir";
  args[k++] = (char *)json_dir;
  if (db != NULL) {
    args[k++] = "--db";
    args[k++] = (char *)db;
  }
  if (tune_has(&a, "quick")) args[k++] = "--quick";
  args[k] = NULL;
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    if (tune_has(&a, "json")) dup2(2, 1); /* the table goes to stderr, JSON to stdout */
    execv(bench, args);
    _exit(127);
  }
  int ws = 0;
  if (pid < 0 || waitpid(pid, &ws, 0) < 0) {
    tune_error(&a, "cannot run %s: %s", bench, strerror(errno));
    return TUNE_FAIL;
  }
  int code = WIFEXITED(ws) ? WEXITSTATUS(ws) : 1;
  if (code == 0 && tune_has(&a, "json")) {
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "cat '%s'/*.json", json_dir);
    code = system(cmd) == 0 ? 0 : 1;
  }
  if (code != 0) fprintf(stderr, "kda-tune bench: kda-bench exited with status %d\n", code);
  return code == 0 ? TUNE_OK : TUNE_FAIL;
}
