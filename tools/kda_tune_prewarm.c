/* kda-tune prewarm: tune and persist every specialization a deployment
 * will meet (or, with --compile-only, compile their heuristic cubins for a
 * named architecture without a GPU). */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kda_tune.h"
#include "prewarm_budget.h"
#include "server_streams.h"
#include "shapes_file.h"

static const tune_opt prewarm_opts[] = {
    TUNE_OPT_HELP, TUNE_OPT_DB, TUNE_OPT_JSON, TUNE_OPT_DEVICE,
    TUNE_OPT_SHAPES,
    {"force", NULL, "tune (or compile) again what the database already holds"},
    {"compile-only", NULL, "compile and store heuristic cubins, no GPU needed (needs --arch)"},
    {"arch", "sm_XY", "architecture for --compile-only, e.g. sm_90"},
    {"budget-ms", "MS", "tuning budget per specialization (default 15000: the whole candidate space; the library's own, for a cold call in a server, is 1000)"},
    {"compile-threads", "N", "threads compiling one specialization's candidates (default: the CPUs, at most 8)"},
    {"streams", "N", "CUDA streams made in this process before tuning, as a PyTorch process makes 64 or more (default 0; they did not change what the tuner picks, docs/perf-notes.md)"},
    {"dry-run", NULL, "list the specializations, do nothing"},
    {NULL, NULL, NULL}};
static const tune_cmd prewarm_cmd = {
    "prewarm", "[OPTIONS]",
    "Tune and persist every specialization a deployment will meet, so a server never compiles "
    "or tunes while serving. Shapes come from flags, --shapes FILE or --model NAME --tp LIST; "
    "each token count is tuned in its bucket. What the database already holds for this GPU "
    "model and library is skipped unless --force. Exit status 1 if any specialization failed. "
    "A run that loses the CUDA context (a kernel faulted) ends prewarm there: the shapes after "
    "it are counted as not attempted.\n"
    "\nShapes file: one shape set per line, KEY=VALUE pairs with the flag names as keys, e.g.\n"
    "  heads=32,16 head-dim=128 gate=softplus bias=both dtype=bf16 tokens=512,8192\n"
    "  model=kimi-linear tp=1,2,4,8\n"
    "'#' starts a comment. Errors are reported as FILE:LINE: message.",
    prewarm_opts, 0, 0};

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

typedef struct progress {
  int tty, json;
  size_t total, done;
} progress;

static void bar(progress *p, const char *label) {
  if (!p->tty) return;
  int width = 30, filled = p->total ? (int)(width * p->done / p->total) : width;
  fprintf(stderr, "\r\033[K[");
  for (int i = 0; i < width; i++) fputc(i < filled ? '#' : ' ', stderr);
  fprintf(stderr, "] %zu/%zu %.60s", p->done, p->total, label);
  fflush(stderr);
}

/* One finished specialization: a plain line (no tty), or a line above the
 * bar for a failure (tty). */
static void report(progress *p, const tune_shape *s, const char *what, const char *detail) {
  if (p->json) return;
  int fail = !strcmp(what, "failed");
  if (p->tty && !fail) return;
  if (p->tty) fprintf(stderr, "\r\033[K");
  FILE *out = p->tty ? stderr : stdout;
  fprintf(out, "[%zu/%zu] %-8s %s%s%s\n", p->done, p->total, what, s->label, detail[0] ? "  " : "",
          detail);
}

typedef struct outcome {
  const char *what; /* tuned, compiled, skipped, failed */
  char detail[512];
  kda_prewarm_result r;
  double ms;
} outcome;

static void json_outcome(int first, const tune_shape *s, const outcome *o, int compile_only) {
  printf(first ? "\n    {\"shape\": " : ",\n    {\"shape\": ");
  json_str(stdout, s->label);
  printf(", \"bucket\": %d, \"outcome\": ", s->bucket);
  json_str(stdout, o->what);
  if (!compile_only && strcmp(o->what, "failed") != 0) {
    printf(", \"config\": ");
    json_str(stdout, o->r.config);
    printf(", \"median_us\": ");
    json_num(stdout, o->r.median_us);
    printf(", \"heuristic_us\": ");
    json_num(stdout, o->r.heuristic_us);
    printf(", \"candidates\": %d, \"rejected\": %d, \"tune_ms\": ", o->r.candidates, o->r.rejected);
    json_num(stdout, o->r.tune_ms);
    printf(", \"compile_ms\": ");
    json_num(stdout, o->r.compile_ms);
  }
  if (!strcmp(o->what, "failed")) {
    printf(", \"error\": ");
    json_str(stdout, o->detail);
  }
  printf(", \"ms\": ");
  json_num(stdout, o->ms);
  printf("}");
}

static int parse_arch(const char *text, int32_t *arch) {
  const char *p = !strncmp(text, "sm_", 3) ? text + 3 : text;
  char *end = NULL;
  long v = strtol(p, &end, 10);
  if (end == p || *end != '\0' || v < 50 || v > 200) return -1;
  *arch = (int32_t)v;
  return 0;
}

int cmd_prewarm(int argc, char **argv) {
  tune_args a;
  int rc = tune_parse(&prewarm_cmd, argc, argv, &a);
  if (rc >= 0) return rc;
  int compile_only = tune_has(&a, "compile-only");
  int32_t arch = 0;
  if (compile_only) {
    const char *as = tune_get(&a, "arch");
    if (as == NULL || parse_arch(as, &arch) != 0) {
      tune_error(&a, as ? "--arch %s: expected sm_XY such as sm_90" : "--compile-only needs --arch sm_XY (such as sm_90)%s", as ? as : "");
      return TUNE_USAGE;
    }
  } else if (tune_has(&a, "arch")) {
    tune_error(&a, "--arch applies to --compile-only only (tuning uses the GPU's own architecture)");
    return TUNE_USAGE;
  }
  if (compile_only && tune_has(&a, "streams")) {
    tune_error(&a, "--streams applies to tuning on a GPU, not to --compile-only");
    return TUNE_USAGE;
  }
  /* --streams: small grids run at another speed in a process that has made
   * several (docs/perf-notes.md, sixteenth session), and a PyTorch process
   * makes 32 per priority the first time it takes a side stream. Off by
   * default: with 64 the tuner's own timings moved by about 1% and its
   * picks among near-ties changed either way (eighteenth session). */
  long device = 0, budget = 0, compile_threads = 0, streams = 0;
  if ((rc = tune_get_int(&a, "device", 0, 1023, &device)) != 0) return rc;
  if ((rc = tune_get_int(&a, "streams", 0, 1024, &streams)) != 0) return rc;
  if ((rc = tune_get_int(&a, "budget-ms", 1, 600000, &budget)) != 0) return rc;
  if ((rc = tune_get_int(&a, "compile-threads", 1, 64, &compile_threads)) != 0) return rc;
  shape_list list = {NULL, 0, 0, 0};
  if ((rc = tune_collect_shapes(&a, &list)) != 0) {
    shape_list_free(&list);
    return rc;
  }
  int json = tune_has(&a, "json");
  if (tune_has(&a, "dry-run")) {
    for (size_t i = 0; i < list.n; i++) printf("%s\n", list.items[i].label);
    printf("%zu specializations\n", list.n);
    shape_list_free(&list);
    return TUNE_OK;
  }
  /* The database: resolved here so both paths use, and report, one file. */
  kda_db *db = tune_open_db(&a, 0);
  if (db == NULL) {
    shape_list_free(&list);
    return TUNE_FAIL;
  }
  if (strcmp(kda_db_mode(db), "read-write") != 0) {
    tune_error(&a, "the tuning database %s is not writable (%s); prewarm would persist nothing",
               kda_db_path(db)[0] ? kda_db_path(db) : "(none)", kda_db_mode(db));
    kda_db_close(db);
    shape_list_free(&list);
    return TUNE_FAIL;
  }
  kda_context *ctx = NULL;
  char where[300];
  if (compile_only) {
    snprintf(where, sizeof where, "sm_%d, compile only", arch);
  } else {
    kda_options o = kda_options_default();
    o.device = (int32_t)device;
    o.db_path = kda_db_path(db);
    o.tune_mode = KDA_TUNE_ON;
    o.tune_budget_ms = budget > 0 ? (double)budget : KDA_PREWARM_BUDGET_MS;
    o.compile_threads = (int32_t)compile_threads;
    if (kda_context_create(&o, &ctx) != KDA_OK) {
      tune_error(&a, "no usable GPU for tuning (device %ld): %s", device, kda_last_error());
      fprintf(stderr, "kda-tune prewarm: hint: on a build box without a GPU, use --compile-only "
                      "--arch sm_XY to store cubins\n");
      kda_db_close(db);
      shape_list_free(&list);
      return TUNE_FAIL;
    }
    char why[256];
    if (server_streams_make((int)device, (int)streams, why, sizeof why) != 0) {
      tune_error(&a, "--streams %ld: %s", streams, why);
      kda_context_destroy(ctx);
      kda_db_close(db);
      shape_list_free(&list);
      return TUNE_FAIL;
    }
    kda_device_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    kda_context_get_device_info(ctx, &info);
    snprintf(where, sizeof where, "%.200s, device %ld, sm_%d%d", info.name, device, info.cc_major,
             info.cc_minor);
  }
  progress p = {isatty(2) && !json, json, list.n, 0};
  size_t tuned = 0, skipped = 0, failed = 0, shared = 0;
  /* A run that lost the CUDA context (a kernel faulted): every later call
   * of this process fails the same way, so the shapes after it are not
   * attempted (and not listed as failed: nothing of theirs was wrong). */
  int lost = 0;
  char lost_note[512] = "";
  /* Compile-only: which cubins were there before this run, so that a shape
   * whose cubin an earlier line of this run just stored (two token buckets
   * share one offline config) says so rather than "already stored". */
  unsigned char *stored_before = compile_only ? calloc(list.n ? list.n : 1, 1) : NULL;
  for (size_t i = 0; stored_before != NULL && i < list.n; i++) {
    int32_t present = 0;
    if (kda_db_has_offline_cubin(db, list.items[i].kernel, &list.items[i].args, arch, &present) ==
        KDA_OK)
      stored_before[i] = present != 0;
  }
  double t0 = now_ms();
  if (json) printf("{\"target\": \"%s\", \"results\": [", compile_only ? "compile-only" : "gpu");
  for (size_t i = 0; i < list.n; i++) {
    const tune_shape *s = &list.items[i];
    bar(&p, s->label);
    outcome o;
    memset(&o, 0, sizeof o);
    double t = now_ms();
    if (compile_only) {
      /* A varlen shape read through a table or a plan: a server builds it
       * on the device, so the builder's cubin is stored beside the gate
       * kernel's (a context reads both from the database). */
      const int builder = s->kernel != KDA_KERNEL_GATE && s->args.num_seqs > 0 &&
                          (s->args.cu_seqlens_host == NULL || s->args.chunk_plan != NULL);
      const int force = tune_has(&a, "force");
      int32_t present = 0, builder_present = !builder;
      kda_status st = force ? KDA_OK : kda_db_has_offline_cubin(db, s->kernel, &s->args, arch, &present);
      if (st == KDA_OK && builder && !force)
        st = kda_db_has_offline_cubin(db, KDA_KERNEL_CHUNK_INDICES, &s->args, arch, &builder_present);
      if (st == KDA_OK && present && builder_present) {
        o.what = "skipped";
        const int here = stored_before != NULL && !stored_before[i];
        snprintf(o.detail, sizeof o.detail, "%s",
                 here ? "same cubin as a line above (one config serves both token buckets)"
                      : "cubin already stored");
        shared += here;
      } else {
        double cms = 0, bms = 0;
        if (st == KDA_OK && !present)
          st = kda_compile_offline_store(s->kernel, &s->args, arch, kda_db_path(db), &cms);
        if (st == KDA_OK && !builder_present)
          st = kda_compile_offline_store(KDA_KERNEL_CHUNK_INDICES, &s->args, arch, kda_db_path(db),
                                         &bms);
        o.what = st == KDA_OK ? "compiled" : "failed";
        if (st == KDA_OK) snprintf(o.detail, sizeof o.detail, "(%.0f ms)", cms + bms);
        else snprintf(o.detail, sizeof o.detail, "%s", kda_last_error());
      }
    } else {
      o.r.struct_size = sizeof o.r;
      kda_status st = kda_prewarm(ctx, s->kernel, &s->args, tune_has(&a, "force"), &o.r);
      lost = st == KDA_ERROR_CONTEXT_LOST;
      if (st != KDA_OK || o.r.outcome == KDA_PREWARM_FAILED) {
        o.what = "failed";
        snprintf(o.detail, sizeof o.detail, "%s", st != KDA_OK ? kda_last_error() : "tuning failed");
      } else if (o.r.outcome == KDA_PREWARM_SKIPPED) {
        o.what = "skipped";
        snprintf(o.detail, sizeof o.detail, "%s %.3f us (already tuned)", o.r.config, o.r.median_us);
      } else {
        o.what = "tuned";
        snprintf(o.detail, sizeof o.detail,
                 "%s %.3f us (heuristic %.3f us), %d candidates, %d rejected (%.0f ms)", o.r.config,
                 o.r.median_us, o.r.heuristic_us, o.r.candidates, o.r.rejected, o.r.tune_ms);
      }
    }
    o.ms = now_ms() - t;
    if (!strcmp(o.what, "failed")) failed++;
    else if (!strcmp(o.what, "skipped")) skipped++;
    else tuned++;
    p.done++;
    if (json) json_outcome(i == 0, s, &o, compile_only);
    report(&p, s, o.what, o.detail);
    bar(&p, s->label);
    if (lost) break;
  }
  if (p.tty) fprintf(stderr, "\r\033[K");
  const size_t not_attempted = list.n - p.done;
  if (lost)
    snprintf(lost_note, sizeof lost_note,
             "shape %zu of %zu lost the CUDA context (a kernel faulted): the %zu shapes after it "
             "were not attempted; run kda-tune prewarm again (a new process) for them",
             p.done, list.n, not_attempted);
  double secs = (now_ms() - t0) / 1e3;
  const char *done_word = compile_only ? "compiled" : "tuned";
  if (json) {
    printf("%s],\n \"summary\": {\"%s\": %zu, \"skipped\": %zu, \"shared\": %zu, \"failed\": %zu, "
           "\"not_attempted\": %zu, \"total\": %zu, \"seconds\": %.3f, \"database\": ",
           p.done ? "\n  " : "", done_word, tuned, skipped, shared, failed, not_attempted, list.n,
           secs);
    json_str(stdout, kda_db_path(db));
    printf(", \"note\": ");
    json_str(stdout, lost ? lost_note : NULL);
    printf("}}\n");
  } else {
    printf("\nprewarm summary (%s)\n", where);
    printf("  %-10s %6zu\n  %-10s %6zu", done_word, tuned, "skipped", skipped);
    if (shared > 0) printf(" (%zu of them share a cubin compiled above)", shared);
    printf("\n  %-10s %6zu\n", "failed", failed);
    if (lost) printf("  %-10s %6zu\n", "not attempted", not_attempted);
    printf("  %-10s %6zu\n  %-10s %6.1f s\n", "total", list.n, "time", secs);
    printf("  database   %s\n", kda_db_path(db));
  }
  free(stored_before);
  kda_context_destroy(ctx);
  tune_print_warnings(db);
  kda_db_close(db);
  size_t total = list.n;
  shape_list_free(&list);
  if (lost_note[0]) fprintf(stderr, "kda-tune prewarm: error: %s\n", lost_note);
  if (failed > 0) {
    fprintf(stderr, "kda-tune prewarm: %zu of %zu specializations failed\n", failed, total);
    return TUNE_FAIL;
  }
  return TUNE_OK;
}
