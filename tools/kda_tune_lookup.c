/* kda-tune lookup: what a server's calls take from the tuning database,
 * asked before it serves (kda_db_lookup): per call the row it reads, or
 * none and why the rows of its shape do not serve it, and whether the
 * cubin it runs is stored. Needs no GPU. */
#define _GNU_SOURCE /* strcasestr */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kda_tune.h"
#include "shapes_file.h"

static const tune_opt lookup_opts[] = {
    TUNE_OPT_HELP, TUNE_OPT_DB, TUNE_OPT_JSON, TUNE_OPT_DEVICE,
    {"gpu", "GPU", "GPU key, key prefix (sm90) or part of a GPU name (H200) the database holds; "
                   "a GPU key it does not hold is taken as given (default: the GPU of --device, "
                   "else the database's only GPU model)"},
    TUNE_OPT_SHAPES,
    {"check", NULL, "exit status 1 if any call has no row or no stored cubin (it would tune or "
                    "compile while serving)"},
    {NULL, NULL, NULL}};
static const tune_cmd lookup_cmd = {
    "lookup", "[OPTIONS]",
    "What each call of a deployment takes from the database, on a GPU model, without the GPU: "
    "the row it reads (its config, median time and share of the card's copy bandwidth), or "
    "none (with KDA_TUNE=on the call tunes on first use; cached and off run the built-in "
    "heuristic), and whether the cubin of the config it runs is stored (else it compiles with "
    "NVRTC). A call is a shape at one token count: the shape flags of prewarm, --shapes FILE or "
    "--model NAME --tp LIST (a line per token count: counts of one bucket read one row, but "
    "a miss runs a heuristic fitted to the count). Where no row serves a call, the rows of its shape say why not "
    "(another token bucket, pointer alignment, candidate space or kernel template). With "
    "--check, exit status 1 if any call would tune or compile.",
    lookup_opts, 0, 0};

/* ------------------------------------------------------------ the GPU */

typedef struct gpu_pick {
  const char *want;      /* --gpu, or NULL */
  char key[128], name[256];
  int matches;
  char seen[2048];       /* the GPU models held, for messages */
} gpu_pick;

static int pick_gpu(void *user, const char *key, const char *name, const char *kernel,
                    int64_t results, int64_t stale) {
  (void)kernel;
  (void)results;
  (void)stale;
  gpu_pick *p = user;
  /* One call per (GPU, kernel): a GPU is counted once (whole lines: one
   * key may be the prefix of another). */
  char line[160];
  snprintf(line, sizeof line, "\n  %s (", key);
  if (strncmp(p->seen, line + 1, strlen(line + 1)) == 0 || strstr(p->seen, line) != NULL)
    return 0;
  size_t n = strlen(p->seen);
  snprintf(p->seen + n, sizeof p->seen - n, "%s  %s (%s)", n ? "\n" : "", key,
           name && name[0] ? name : "name unknown");
  const int hit = p->want == NULL || strcmp(key, p->want) == 0 ||
                  strncmp(key, p->want, strlen(p->want)) == 0 ||
                  (name != NULL && strcasestr(name, p->want) != NULL);
  if (!hit) return 0;
  if (p->matches++ == 0 || strcmp(key, p->want ? p->want : "") == 0) {
    snprintf(p->key, sizeof p->key, "%s", key);
    snprintf(p->name, sizeof p->name, "%s", name ? name : "");
  }
  return 0;
}

/* The GPU key of --device's GPU, or "" with why. */
static void device_gpu(long device, char *key, size_t size, char *name, size_t name_size,
                       char *why, size_t why_size) {
  key[0] = '\0';
  kda_options o = kda_options_default();
  o.device = (int32_t)device;
  o.tune_mode = KDA_TUNE_OFF; /* no database, no compile */
  kda_context *ctx = NULL;
  if (kda_context_create(&o, &ctx) != KDA_OK) {
    snprintf(why, why_size, "%s", kda_last_error());
    return;
  }
  kda_device_info info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  if (kda_context_get_device_info(ctx, &info) == KDA_OK) {
    kda_db_gpu_key(&info, key, size);
    snprintf(name, name_size, "%s", info.name);
  }
  kda_context_destroy(ctx);
}

/* Fills p->key (and name) or prints why not and returns an exit code. */
static int choose_gpu(const tune_args *a, kda_db *db, gpu_pick *p) {
  memset(p, 0, sizeof *p);
  p->want = tune_get(a, "gpu");
  kda_db_stats st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  if (kda_db_stats_get(db, &st, pick_gpu, p) != KDA_OK) {
    tune_error(a, "%s", kda_last_error());
    return TUNE_FAIL;
  }
  if (p->want != NULL) {
    if (p->matches == 1 || (p->matches > 1 && strcmp(p->key, p->want) == 0)) return 0;
    if (p->matches > 1) {
      tune_error(a, "--gpu %s matches several GPU models; give one key:\n%s", p->want, p->seen);
      return TUNE_USAGE;
    }
    /* A key the database does not hold: its calls find nothing, which is
     * the answer (a fleet's new GPU model). Anything else is a typo. */
    unsigned cc = 0, pci = 0;
    int sms = 0, l2 = 0, used = 0;
    if (sscanf(p->want, "sm%u-pci%x-sms%d-l2_%d%n", &cc, &pci, &sms, &l2, &used) != 4 ||
        p->want[used] != '\0') {
      tune_error(a, "--gpu %s: no GPU model of the database matches, and it is not a GPU key "
                    "(sm90-pci2330-sms132-l2_52428800; kda-tune info prints a GPU's). The "
                    "database holds:\n%s", p->want, p->seen[0] ? p->seen : "  nothing");
      return TUNE_USAGE;
    }
    snprintf(p->key, sizeof p->key, "%s", p->want);
    p->name[0] = '\0';
    return 0;
  }
  long device = 0;
  int rc = tune_get_int(a, "device", 0, 1023, &device);
  if (rc != 0) return rc;
  char why[1024] = "";
  device_gpu(device, p->key, sizeof p->key, p->name, sizeof p->name, why, sizeof why);
  if (p->key[0]) return 0;
  if (p->matches == 1) return 0; /* no GPU here: the database's only model */
  if (p->matches == 0)
    tune_error(a, "no GPU here (%s) and the database holds no results: give --gpu KEY "
                  "(kda-tune info prints a GPU's key)", why);
  else
    tune_error(a, "no GPU here (%s); the database holds several GPU models, give --gpu:\n%s",
               why, p->seen);
  return TUNE_USAGE;
}

/* ------------------------------------------------------- why not a row */

/* A row's spec without " veccap=N", and N. */
static int split_veccap(const char *spec, char *base, size_t size) {
  snprintf(base, size, "%s", spec);
  char *v = strstr(base, " veccap=");
  if (v == NULL) return 0;
  const int cap = atoi(v + 8);
  *v = '\0';
  return cap;
}

typedef struct why_not {
  const kda_db_lookup_result *r;
  const char *gpu;
  int json, shown;
  char base[512];
} why_not;

static int explain_row(void *user, const kda_db_record *row) {
  why_not *w = user;
  if (strcmp(row->gpu_key, w->gpu) != 0) return 0;
  char base[512];
  const int cap = split_veccap(row->spec, base, sizeof base);
  if (strcmp(base, w->base) != 0) return 0; /* another shape */
  char why[256] = "", tokens[32];
  tune_tokens_text(row->bucket, tokens, sizeof tokens);
  size_t n = 0;
#define WHY(...) n += (size_t)snprintf(why + n, n < sizeof why ? sizeof why - n : 0, __VA_ARGS__)
  if (row->bucket != w->r->bucket) WHY("%stokens %s only", n ? "; " : "", tokens);
  if (cap != w->r->vec_cap)
    WHY("%sfor pointers aligned for %d-wide vectors (this call's allow %d)", n ? "; " : "", cap,
        w->r->vec_cap);
  /* The vector cap bounds the candidate space: a row of another cap has
   * another space by construction, not worth a second reason. */
  if (strcmp(row->template_hash, w->r->template_hash) != 0)
    WHY("%sanother kernel template", n ? "; " : "");
  else if (cap == w->r->vec_cap && strcmp(row->space_hash, w->r->space_hash) != 0)
    WHY("%sanother candidate space (written by library %s)", n ? "; " : "", row->lib_version);
#undef WHY
  if (n == 0) return 0; /* the call's own row: reported already */
  if (w->json) {
    fputs(w->shown++ ? ", {\"key\": " : "{\"key\": ", stdout);
    json_str(stdout, row->key);
    fputs(", \"why_not\": ", stdout);
    json_str(stdout, why);
    fputs("}", stdout);
  } else {
    printf("        not this call's: row %.16s, %s\n", row->key, why);
    w->shown++;
  }
  return 0;
}

static void why_no_row(kda_db *db, const char *gpu, const kda_db_lookup_result *r, int json) {
  why_not w;
  memset(&w, 0, sizeof w);
  w.r = r;
  w.gpu = gpu;
  w.json = json;
  split_veccap(r->spec, w.base, sizeof w.base);
  kda_db_filter f = kda_db_filter_default();
  f.gpu = gpu;
  if (kda_db_list(db, &f, explain_row, &w) != KDA_OK) return;
  if (!json && w.shown == 0) printf("        no row of this shape on this GPU model\n");
}

/* -------------------------------------------------------------- output */

static const char *cubin_state_words(int32_t state) {
  return state == 1 ? "stored" : state == 2 ? "other-nvrtc" : "compile";
}

static const char *cubin_words(const kda_db_lookup_result *r) {
  return cubin_state_words(r->cubin_stored);
}

static void call_text(kda_db *db, const char *gpu, const tune_shape *s,
                      const kda_db_lookup_result *r, int first) {
  if (first)
    printf("%8s  %-17s %-11s %-18s %10s %6s  %-11s  %s\n", "TOKENS", "ROW", "BUCKET", "CONFIG",
           "MEDIAN_US", "%COPY", "CUBIN", "SHAPE");
  char row[24], med[32], copy[16], tokens[32], shape[256];
  tune_tokens_text(r->bucket, tokens, sizeof tokens);
  shape_words(s->kernel, &s->args, shape, sizeof shape);
  if (r->vec_cap < 8) {
    size_t n = strlen(shape);
    snprintf(shape + n, sizeof shape - n, " vec<=%d", r->vec_cap);
  }
  if (r->found) {
    snprintf(row, sizeof row, "%.16s%s", r->record.key, r->record.stale ? "*" : "");
    snprintf(med, sizeof med, r->record.median_us >= 0 ? "%.3f" : "-", r->record.median_us);
    if (r->record.gbps > 0 && r->record.copy_bw_gbps > 0)
      snprintf(copy, sizeof copy, "%.1f", 100.0 * r->record.gbps / r->record.copy_bw_gbps);
    else
      snprintf(copy, sizeof copy, "-");
  } else {
    snprintf(row, sizeof row, r->ignored ? "ignored" : "none");
    snprintf(med, sizeof med, "-");
    snprintf(copy, sizeof copy, "-");
  }
  printf("%8lld  %-17s %-11s %-18s %10s %6s  %-11s  %s\n", (long long)s->tokens, row, tokens,
         r->config, med, copy, cubin_words(r), shape);
  if (r->ignored)
    printf("        row %.16s names %s, not in this call's candidate space: ignored, the call "
           "runs the heuristic\n", r->record.key, r->record.config);
  if (r->offline_cubin_stored)
    printf("        with KDA_TUNE=cached the call runs the stored heuristic %s (compiled without "
           "the device): nothing to compile\n", r->offline_config);
  if (!r->found) why_no_row(db, gpu, r, 0);
}

static void call_json(kda_db *db, const char *gpu, const tune_shape *s,
                      const kda_db_lookup_result *r, int first) {
  char tokens[32], shape[256];
  tune_tokens_text(r->bucket, tokens, sizeof tokens);
  shape_words(s->kernel, &s->args, shape, sizeof shape);
  fputs(first ? "\n  {\"shape\": " : ",\n  {\"shape\": ", stdout);
  json_str(stdout, shape);
  printf(", \"tokens\": %lld, \"bucket\": %d, \"bucket_tokens\": ", (long long)s->tokens, r->bucket);
  json_str(stdout, tokens);
  printf(", \"vec_cap\": %d, \"spec\": ", r->vec_cap);
  json_str(stdout, r->spec);
  printf(", \"found\": %s, \"ignored\": %s, \"row\": ", r->found ? "true" : "false",
         r->ignored ? "true" : "false");
  json_str(stdout, r->found || r->ignored ? r->record.key : NULL);
  fputs(", \"config\": ", stdout);
  json_str(stdout, r->config);
  fputs(", \"heuristic\": ", stdout);
  json_str(stdout, r->heuristic);
  fputs(", \"median_us\": ", stdout);
  json_num(stdout, r->found ? r->record.median_us : -1);
  fputs(", \"pct_of_copy\": ", stdout);
  json_num(stdout, r->found && r->record.gbps > 0 && r->record.copy_bw_gbps > 0
                       ? 100.0 * r->record.gbps / r->record.copy_bw_gbps
                       : -1);
  fputs(", \"cubin\": ", stdout);
  json_str(stdout, cubin_words(r));
  fputs(", \"cubin_nvrtc\": ", stdout);
  json_str(stdout, r->cubin_stored ? r->cubin_nvrtc : NULL);
  fputs(", \"offline_config\": ", stdout);
  json_str(stdout, r->offline_config[0] ? r->offline_config : NULL);
  fputs(", \"offline_cubin\": ", stdout);
  json_str(stdout, r->offline_config[0] ? cubin_state_words(r->offline_cubin_stored) : NULL);
  fputs(", \"other_rows\": [", stdout);
  if (!r->found) why_no_row(db, gpu, r, 1);
  fputs("]}", stdout);
}

int cmd_lookup(int argc, char **argv) {
  tune_args a;
  int rc = tune_parse(&lookup_cmd, argc, argv, &a);
  if (rc >= 0) return rc;
  long device = 0;
  if ((rc = tune_get_int(&a, "device", 0, 1023, &device)) != 0) return rc;
  shape_list list = {NULL, 0, 0, 1}; /* a line per token count */
  if ((rc = tune_collect_shapes(&a, &list)) != 0) {
    shape_list_free(&list);
    return rc;
  }
  kda_db *db = tune_open_existing_db(&a, KDA_DB_READ_ONLY);
  if (db == NULL) {
    shape_list_free(&list);
    return TUNE_FAIL;
  }
  gpu_pick gpu;
  if ((rc = choose_gpu(&a, db, &gpu)) != 0) {
    kda_db_close(db);
    shape_list_free(&list);
    return rc;
  }
  const int json = tune_has(&a, "json");
  if (json) {
    fputs("{\"gpu_key\": ", stdout);
    json_str(stdout, gpu.key);
    fputs(", \"gpu_name\": ", stdout);
    json_str(stdout, gpu.name[0] ? gpu.name : NULL);
    fputs(", \"database\": ", stdout);
    json_str(stdout, kda_db_path(db));
    fputs(", \"calls\": [", stdout);
  } else {
    printf("GPU       %s%s%s%s\ndatabase  %s\n\n", gpu.name[0] ? gpu.name : "", gpu.name[0] ? " (" : "",
           gpu.key, gpu.name[0] ? ")" : "", kda_db_path(db));
  }
  size_t served = 0, no_row = 0, compile = 0;
  int status = TUNE_OK;
  for (size_t i = 0; i < list.n; i++) {
    tune_shape *s = &list.items[i];
    kda_db_lookup_result r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    if (kda_db_lookup(db, gpu.key, s->kernel, &s->args, &r) != KDA_OK) {
      if (json) fputs("]}\n", stdout);
      fprintf(stderr, "kda-tune lookup: error: %s: %s\n", s->label, kda_last_error());
      status = strstr(kda_last_error(), "not a GPU key") ? TUNE_USAGE : TUNE_FAIL;
      kda_db_close(db);
      shape_list_free(&list);
      return status;
    }
    if (r.found && r.cubin_stored) served++;
    if (!r.found) no_row++;
    if (!r.cubin_stored) compile++;
    if (json) call_json(db, gpu.key, s, &r, i == 0);
    else call_text(db, gpu.key, s, &r, i == 0);
  }
  if (json) {
    printf("%s],\n \"summary\": {\"calls\": %zu, \"served\": %zu, \"no_row\": %zu, \"compile\": %zu}}\n",
           list.n ? "\n" : "", list.n, served, no_row, compile);
  } else {
    printf("\ncalls: %zu; served from the database (row and cubin): %zu; without a row "
           "(KDA_TUNE=on tunes them on first use): %zu; would compile: %zu\n",
           list.n, served, no_row, compile);
    if (no_row || compile)
      printf("kda-tune prewarm with the same flags on a GPU of this model stores what is "
             "missing\n");
  }
  if (tune_has(&a, "check") && (no_row || compile)) status = TUNE_FAIL;
  tune_print_warnings(db);
  kda_db_close(db);
  shape_list_free(&list);
  return status;
}
