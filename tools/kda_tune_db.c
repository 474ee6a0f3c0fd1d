/* kda-tune list, show and stats: reading the tuning database. */
#include <stdlib.h>
#include <string.h>

#include "kda_tune.h"

static const char *stale_text(uint32_t stale, char *buf, size_t size) {
  if (stale == 0) return "no";
  snprintf(buf, size, "yes (%s%s%s)", stale & KDA_DB_STALE_LIB ? "library version " : "",
           stale & KDA_DB_STALE_TEMPLATE ? "kernel template " : "",
           stale & KDA_DB_STALE_NVRTC ? "NVRTC " : "");
  size_t n = strlen(buf);
  if (n >= 2 && buf[n - 2] == ' ') memmove(buf + n - 2, ")", 2);
  return buf;
}

static void record_json(FILE *out, const kda_db_record *r, const char *indent) {
  fprintf(out, "%s\"key\": ", indent);
  json_str(out, r->key);
  fprintf(out, ", \"id\": %lld, \"gpu_key\": ", (long long)r->id);
  json_str(out, r->gpu_key);
  fputs(", \"gpu_name\": ", out);
  json_str(out, r->gpu_name[0] ? r->gpu_name : NULL);
  fputs(", \"kernel\": ", out);
  json_str(out, r->kernel);
  fputs(", \"spec\": ", out);
  json_str(out, r->spec);
  fprintf(out, ", \"bucket\": %lld, \"heads\": %d, \"head_dim\": %d, \"chunk\": %d, \"config\": ",
          (long long)r->bucket, r->heads, r->head_dim, r->chunk);
  json_str(out, r->config);
  fputs(", \"median_us\": ", out);
  json_num(out, r->median_us);
  fputs(", \"gbps\": ", out);
  json_num(out, r->gbps);
  fputs(", \"max_err\": ", out);
  json_num(out, r->max_err);
  fputs(", \"heuristic_us\": ", out);
  json_num(out, r->heuristic_us);
  fprintf(out, ", \"candidates\": %lld, \"rejected\": %lld, \"tune_ms\": ",
          (long long)r->candidates, (long long)r->rejected);
  json_num(out, r->tune_ms);
  fputs(", \"compile_ms\": ", out);
  json_num(out, r->compile_ms);
  fprintf(out, ", \"created_at\": %lld, \"lib_version\": ", (long long)r->created_at);
  json_str(out, r->lib_version);
  fputs(", \"nvrtc_version\": ", out);
  json_str(out, r->nvrtc_version);
  fprintf(out, ", \"stale\": %s", r->stale ? "true" : "false");
}

/* ------------------------------------------------------------------ list */

static const tune_opt list_opts[] = {TUNE_OPT_HELP, TUNE_OPT_DB, TUNE_OPT_JSON, TUNE_OPT_FILTERS,
                                     {NULL, NULL, NULL}};
static const tune_cmd list_cmd = {
    "list", "[OPTIONS]",
    "One line per tuning result: its key (a '*' marks a row this library may not use: "
    "another library version or kernel template), the GPU, the token counts of its bucket, the "
    "winning config, its median time, its share of the card's measured copy bandwidth, how much "
    "faster than the built-in heuristic config it is, when it was tuned, and the shape in "
    "prewarm's words. Sorted by GPU, entry point, heads and head dim (largest first), then "
    "tokens. --json: every field, and the raw spec.",
    list_opts, 0, 0};

typedef struct list_state {
  int json, oom;
  kda_db_record *rows;
  size_t n, cap;
} list_state;

static int keep_row(void *user, const kda_db_record *r) {
  list_state *s = user;
  if (s->n == s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 64;
    kda_db_record *rows = realloc(s->rows, cap * sizeof *rows);
    if (rows == NULL) {
      s->oom = 1;
      return 1; /* stops the listing */
    }
    s->rows = rows;
    s->cap = cap;
  }
  s->rows[s->n++] = *r;
  return 0;
}

static const char *gpu_words(const kda_db_record *r) {
  return r->gpu_name[0] ? r->gpu_name : r->gpu_key;
}

/* GPU, entry point, heads and head dim (largest first: the model's full
 * width before its tensor-parallel shards), chunk, the rest of the spec,
 * then the bucket. */
static int row_order(const void *pa, const void *pb) {
  const kda_db_record *a = pa, *b = pb;
  int c = strcmp(gpu_words(a), gpu_words(b));
  if (c == 0) c = strcmp(kda_db_record_entry(a), kda_db_record_entry(b));
  if (c == 0) c = (b->heads > a->heads) - (b->heads < a->heads);
  if (c == 0) c = (b->head_dim > a->head_dim) - (b->head_dim < a->head_dim);
  if (c == 0) c = (a->chunk > b->chunk) - (a->chunk < b->chunk);
  if (c == 0) c = strcmp(a->spec, b->spec);
  if (c == 0) c = (a->bucket > b->bucket) - (a->bucket < b->bucket);
  return c;
}

static void list_text(const kda_db_record *r, int first) {
  if (first)
    printf("%-17s %-24s %-11s %-18s %10s %6s %7s  %-16s  %s\n", "KEY", "GPU", "TOKENS", "CONFIG",
           "MEDIAN_US", "%COPY", "VS_HEUR", "TUNED (UTC)", "SHAPE");
  char when[32], med[32], copy[16], heur[16], key[24], tokens[32], shape[512], gpu[32];
  tune_time_text(r->created_at, when, sizeof when);
  snprintf(med, sizeof med, r->median_us >= 0 ? "%.3f" : "-", r->median_us);
  if (r->gbps > 0 && r->copy_bw_gbps > 0) snprintf(copy, sizeof copy, "%.1f", 100.0 * r->gbps / r->copy_bw_gbps);
  else snprintf(copy, sizeof copy, "-");
  if (r->heuristic_us > 0 && r->median_us > 0) snprintf(heur, sizeof heur, "%.2fx", r->heuristic_us / r->median_us);
  else snprintf(heur, sizeof heur, "-");
  snprintf(key, sizeof key, "%.16s%s", r->key, r->stale ? "*" : "");
  snprintf(gpu, sizeof gpu, "%.24s", gpu_words(r));
  tune_tokens_text(r->bucket, tokens, sizeof tokens);
  tune_shape_words(r, shape, sizeof shape);
  printf("%-17s %-24s %-11s %-18s %10s %6s %7s  %-16s  %s\n", key, gpu, tokens, r->config, med,
         copy, heur, when, shape);
}

static void list_json(kda_db *db, const kda_db_record *r, int first) {
  char tokens[32], shape[512];
  fputs(first ? "\n  {" : ",\n  {", stdout);
  record_json(stdout, r, "");
  tune_tokens_text(r->bucket, tokens, sizeof tokens);
  tune_shape_words(r, shape, sizeof shape);
  fputs(", \"entry\": ", stdout);
  json_str(stdout, kda_db_record_entry(r));
  fputs(", \"tokens\": ", stdout);
  json_str(stdout, tokens);
  fputs(", \"shape\": ", stdout);
  json_str(stdout, shape);
  fputs(", \"copy_bw_gbps\": ", stdout);
  json_num(stdout, r->copy_bw_gbps);
  kda_db_provenance p;
  memset(&p, 0, sizeof p);
  p.struct_size = sizeof p;
  const int known = kda_db_provenance_get(db, r, &p) == KDA_OK;
  fputs(", \"tuned_on\": ", stdout);
  json_str(stdout, known && p.host[0] ? p.host : NULL);
  fputs(", \"driver\": ", stdout);
  json_str(stdout, known && p.driver[0] ? p.driver : NULL);
  fputs(", \"source\": ", stdout);
  json_str(stdout, known && p.source[0] ? p.source : NULL);
  fputs("}", stdout);
}

int cmd_list(int argc, char **argv) {
  tune_args a;
  int rc = tune_parse(&list_cmd, argc, argv, &a);
  if (rc >= 0) return rc;
  kda_db_filter f;
  if ((rc = tune_filter(&a, &f)) != 0) return rc;
  kda_db *db = tune_open_existing_db(&a, KDA_DB_READ_ONLY);
  if (db == NULL) return TUNE_FAIL;
  list_state s = {tune_has(&a, "json"), 0, NULL, 0, 0};
  kda_status st = kda_db_list(db, &f, keep_row, &s);
  if (s.oom) {
    tune_error(&a, "out of memory after %zu results", s.n);
    free(s.rows);
    kda_db_close(db);
    return TUNE_FAIL;
  }
  if (s.n > 1) qsort(s.rows, s.n, sizeof *s.rows, row_order);
  if (s.json) fputs("[", stdout);
  for (size_t i = 0; i < s.n; ++i) {
    if (s.json) list_json(db, &s.rows[i], i == 0);
    else list_text(&s.rows[i], i == 0);
  }
  if (s.json) fputs(s.n ? "\n]\n" : "]\n", stdout);
  else if (st == KDA_OK && s.n == 0)
    fprintf(stderr, "kda-tune list: no tuning results match in %s\n", kda_db_path(db));
  free(s.rows);
  tune_print_warnings(db);
  kda_db_close(db);
  if (st != KDA_OK) {
    tune_error(&a, "%s", kda_last_error());
    return TUNE_FAIL;
  }
  return TUNE_OK;
}

/* ------------------------------------------------------------------ show */

static const tune_opt show_opts[] = {TUNE_OPT_HELP, TUNE_OPT_DB, TUNE_OPT_JSON, {NULL, NULL, NULL}};
static const tune_cmd show_cmd = {
    "show", "KEY",
    "Everything about one result. KEY is its key from `list` (at least 4 leading hex digits) "
    "or its row id. Trials are sorted by median time, fastest first; rejected ones give their "
    "reason.",
    show_opts, 1, 1};

typedef struct trial_list {
  kda_db_trial *t;
  size_t n, cap;
} trial_list;

static int keep_trial(void *user, const kda_db_trial *t) {
  trial_list *l = user;
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 16;
    kda_db_trial *p = realloc(l->t, cap * sizeof *p);
    if (p == NULL) return 1;
    l->t = p;
    l->cap = cap;
  }
  l->t[l->n++] = *t;
  return 0;
}

static void fmt_us(char *buf, size_t size, double us) {
  snprintf(buf, size, us >= 0 ? "%.3f" : "-", us);
}

static void show_text(const kda_db_record *r, const kda_db_provenance *p, const trial_list *l) {
  char buf[256], a[32], b[32];
  printf("result %s (id %lld)\n", r->key, (long long)r->id);
  printf("  gpu         %s", r->gpu_key);
  if (r->gpu_name[0]) printf(" (%s)", r->gpu_name);
  char shape[512], tokens[32];
  tune_shape_words(r, shape, sizeof shape);
  tune_tokens_text(r->bucket, tokens, sizeof tokens);
  printf("\n  shape       %s\n  tokens      %s (bucket %lld): calls of this many tokens (batch x "
         "seq_len) use this row\n  kernel      %s\n  spec        %s\n",
         shape, tokens, (long long)r->bucket, r->kernel, r->spec);
  printf("  winner      %s (config %lld)\n", r->config, (long long)r->config_id);
  fmt_us(a, sizeof a, r->median_us);
  printf("  median      %s us\n", a);
  const kda_db_trial *win = NULL, *runner = NULL;
  double fastest = -1, slowest = -1;
  for (size_t i = 0; i < l->n; i++) {
    const kda_db_trial *t = &l->t[i];
    if (strcmp(t->status, "ok") != 0 || t->median_us < 0) continue;
    if (win == NULL && strcmp(t->config, r->config) == 0) win = t;
    else if (runner == NULL && strcmp(t->config, r->config) != 0) runner = t;
    if (fastest < 0) fastest = t->median_us;
    slowest = t->median_us;
  }
  if (win != NULL && win->p10_us >= 0 && win->p90_us >= 0 && win->median_us > 0) {
    printf("  spread      winner p10..p90 %.3f..%.3f us (%.1f%% of its median)", win->p10_us,
           win->p90_us, 100.0 * (win->p90_us - win->p10_us) / win->median_us);
    if (fastest > 0 && slowest > fastest) printf("; ok trials span %.2fx", slowest / fastest);
    printf("\n");
  } else {
    printf("  spread      - (no timed trial of the winner)\n");
  }
  double base = r->median_us;
  if (runner != NULL && base > 0)
    printf("  runner-up   %s %.3f us: winner is %.1f%% faster\n", runner->config, runner->median_us,
           100.0 * (runner->median_us - base) / runner->median_us);
  else
    printf("  runner-up   - (no other ok trial)\n");
  if (r->heuristic_us >= 0 && base > 0)
    printf("  heuristic   %.3f us: winner is %.1f%% faster\n", r->heuristic_us,
           100.0 * (r->heuristic_us - base) / r->heuristic_us);
  else
    printf("  heuristic   -\n");
  if (r->gbps >= 0) {
    printf("  bandwidth   %.1f GB/s", r->gbps);
    if (r->copy_bw_gbps > 0)
      printf(" = %.1f%% of the card's copy bandwidth (%.0f GB/s)", 100.0 * r->gbps / r->copy_bw_gbps,
             r->copy_bw_gbps);
    else
      printf(" (card's copy bandwidth unknown)");
    printf("\n");
  } else {
    printf("  bandwidth   -\n");
  }
  printf("  max error   ");
  if (r->max_err >= 0) printf("%.3g\n", r->max_err);
  else printf("-\n");
  fmt_us(a, sizeof a, r->tune_ms);
  fmt_us(b, sizeof b, r->compile_ms);
  size_t left_out = 0; /* shapes the tuner did not time (kda_db.h) */
  for (size_t i = 0; i < l->n; i++)
    left_out += strncmp(l->t[i].reason, KDA_DB_TRIAL_LEFT_OUT, strlen(KDA_DB_TRIAL_LEFT_OUT)) == 0;
  printf("  tuning      %lld candidates, %lld rejected", (long long)r->candidates,
         (long long)r->rejected);
  if (left_out > 0) printf(", %zu more left out before timing", left_out);
  printf("; %s ms (compile %s ms)\n", a, b);
  tune_time_text(r->created_at, a, sizeof a);
  printf("  created     %s UTC by libkda %s, NVRTC %s\n", a, r->lib_version[0] ? r->lib_version : "?",
         r->nvrtc_version[0] ? r->nvrtc_version : "?");
  printf("  tuned on    %s, driver %s\n  source      %s\n", p->host[0] ? p->host : "unknown",
         p->driver[0] ? p->driver : "unknown", p->source[0] ? p->source : "unknown");
  printf("  hashes      template %.16s, space %.16s\n", r->template_hash, r->space_hash);
  printf("  stale       %s\n", stale_text(r->stale, buf, sizeof buf));
  printf("trials (%zu, fastest first):\n", l->n);
  printf("  %-3s %-20s %10s %10s %10s  %-14s %s\n", "#", "CONFIG", "MEDIAN_US", "P10_US", "P90_US",
         "STATUS", "REASON");
  for (size_t i = 0; i < l->n; i++) {
    const kda_db_trial *t = &l->t[i];
    char m[32], p10[32], p90[32];
    fmt_us(m, sizeof m, t->median_us);
    fmt_us(p10, sizeof p10, t->p10_us);
    fmt_us(p90, sizeof p90, t->p90_us);
    printf("  %-3zu %-20s %10s %10s %10s  %-14s %s%s\n", i + 1, t->config, m, p10, p90, t->status,
           t->reason, strcmp(t->config, r->config) == 0 && strcmp(t->status, "ok") == 0 ? "(winner)" : "");
  }
}

static void show_json(const kda_db_record *r, const kda_db_provenance *p, const trial_list *l) {
  printf("{");
  record_json(stdout, r, "");
  printf(", \"tuned_on\": ");
  json_str(stdout, p->host[0] ? p->host : NULL);
  printf(", \"driver\": ");
  json_str(stdout, p->driver[0] ? p->driver : NULL);
  printf(", \"source\": ");
  json_str(stdout, p->source[0] ? p->source : NULL);
  printf(", \"copy_bw_gbps\": ");
  json_num(stdout, r->copy_bw_gbps);
  printf(", \"template_hash\": ");
  json_str(stdout, r->template_hash);
  printf(", \"space_hash\": ");
  json_str(stdout, r->space_hash);
  printf(",\n \"trials\": [");
  for (size_t i = 0; i < l->n; i++) {
    const kda_db_trial *t = &l->t[i];
    printf(i ? ",\n  {\"config\": " : "\n  {\"config\": ");
    json_str(stdout, t->config);
    printf(", \"median_us\": ");
    json_num(stdout, t->median_us);
    printf(", \"p10_us\": ");
    json_num(stdout, t->p10_us);
    printf(", \"p90_us\": ");
    json_num(stdout, t->p90_us);
    printf(", \"status\": ");
    json_str(stdout, t->status);
    printf(", \"reason\": ");
    json_str(stdout, t->reason[0] ? t->reason : NULL);
    printf("}");
  }
  printf(l->n ? "\n ]}\n" : "]}\n");
}

int cmd_show(int argc, char **argv) {
  tune_args a;
  int rc = tune_parse(&show_cmd, argc, argv, &a);
  if (rc >= 0) return rc;
  kda_db *db = tune_open_existing_db(&a, KDA_DB_READ_ONLY);
  if (db == NULL) return TUNE_FAIL;
  kda_db_record r;
  trial_list l = {NULL, 0, 0};
  kda_status st = kda_db_show(db, a.pos[0], &r, keep_trial, &l);
  kda_db_provenance p;
  memset(&p, 0, sizeof p);
  p.struct_size = sizeof p;
  /* A row whose key is longer than a record holds (hand-edited) cannot
   * be found again by it: its provenance reads as unknown. */
  if (st == KDA_OK && kda_db_provenance_get(db, &r, &p) != KDA_OK) {
    memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
  }
  if (st == KDA_OK) {
    if (tune_has(&a, "json")) show_json(&r, &p, &l);
    else show_text(&r, &p, &l);
  } else {
    tune_error(&a, "%s", kda_last_error());
  }
  free(l.t);
  kda_db_close(db);
  return st == KDA_OK ? TUNE_OK : TUNE_FAIL;
}

/* ----------------------------------------------------------------- stats */

static const tune_opt stats_opts[] = {TUNE_OPT_HELP, TUNE_OPT_DB, TUNE_OPT_JSON, {NULL, NULL, NULL}};
static const tune_cmd stats_cmd = {
    "stats", "[OPTIONS]",
    "Database path (and why that one), schema version, size, results per GPU model and "
    "kernel, cubins and their bytes, stale entries (another library version, kernel template "
    "or NVRTC build than the running library's).",
    stats_opts, 0, 0};

typedef struct count_state {
  int json;
  int n;
} count_state;

static int print_count(void *user, const char *gpu, const char *name, const char *kernel,
                       int64_t results, int64_t stale) {
  count_state *s = user;
  if (s->json) {
    printf(s->n ? ",\n    {\"gpu_key\": " : "\n    {\"gpu_key\": ");
    json_str(stdout, gpu);
    printf(", \"gpu_name\": ");
    json_str(stdout, name && name[0] ? name : NULL);
    printf(", \"kernel\": ");
    json_str(stdout, kernel);
    printf(", \"results\": %lld, \"stale\": %lld}", (long long)results, (long long)stale);
  } else {
    if (s->n == 0) printf("  %-32s %-12s %8s %6s  %s\n", "GPU", "KERNEL", "RESULTS", "STALE", "NAME");
    printf("  %-32s %-12s %8lld %6lld  %s\n", gpu, kernel, (long long)results, (long long)stale,
           name && name[0] ? name : "-");
  }
  s->n++;
  return 0;
}

int cmd_stats(int argc, char **argv) {
  tune_args a;
  int rc = tune_parse(&stats_cmd, argc, argv, &a);
  if (rc >= 0) return rc;
  kda_db *db = tune_open_existing_db(&a, KDA_DB_READ_ONLY | KDA_DB_VERIFY);
  if (db == NULL) return TUNE_FAIL;
  kda_db_versions cur;
  kda_status st = kda_db_current(&cur);
  kda_db_stats s;
  memset(&s, 0, sizeof s);
  if (st == KDA_OK) st = kda_db_stats_get(db, &s, NULL, NULL);
  if (st != KDA_OK) {
    tune_error(&a, "%s", kda_last_error());
    kda_db_close(db);
    return TUNE_FAIL;
  }
  int json = tune_has(&a, "json");
  count_state cs = {json, 0};
  if (json) {
    printf("{\"path\": ");
    json_str(stdout, kda_db_path(db));
    printf(", \"path_rule\": ");
    json_str(stdout, kda_db_path_rule(db));
    printf(", \"mode\": ");
    json_str(stdout, kda_db_mode(db));
    printf(",\n  \"schema_version\": %d, \"library_schema_version\": %d, \"file_bytes\": %lld,\n"
           "  \"gpus\": %lld, \"results\": %lld, \"stale_results\": %lld, \"trials\": %lld,"
           " \"cubins\": %lld, \"cubin_bytes\": %lld, \"stale_cubins\": %lld, \"leases\": %lld,\n"
           "  \"per_gpu_kernel\": [",
           s.schema_version, cur.schema_version, (long long)s.file_bytes, (long long)s.gpus,
           (long long)s.results, (long long)s.stale_results, (long long)s.trials,
           (long long)s.cubins, (long long)s.cubin_bytes, (long long)s.stale_cubins,
           (long long)s.leases);
    st = kda_db_stats_get(db, &s, print_count, &cs);
    printf(cs.n ? "\n  ]}\n" : "]}\n");
  } else {
    printf("database    %s (%s)\n", kda_db_path(db)[0] ? kda_db_path(db) : "(in memory)",
           !strcmp(kda_db_path_rule(db), "option") ? "--db" : kda_db_path_rule(db));
    printf("mode        %s\n", kda_db_mode(db));
    printf("schema      %d (this library writes %d)\n", s.schema_version, cur.schema_version);
    printf("size        %lld bytes\n", (long long)s.file_bytes);
    printf("gpus        %lld\n", (long long)s.gpus);
    printf("results     %lld (%lld stale)\n", (long long)s.results, (long long)s.stale_results);
    printf("trials      %lld\n", (long long)s.trials);
    printf("cubins      %lld (%lld bytes, %lld stale)\n", (long long)s.cubins,
           (long long)s.cubin_bytes, (long long)s.stale_cubins);
    printf("leases      %lld\n", (long long)s.leases);
    printf("current     libkda %s, NVRTC %s\n", cur.lib_version, cur.nvrtc_version);
    printf("results per GPU and kernel:\n");
    st = kda_db_stats_get(db, &s, print_count, &cs);
    if (cs.n == 0) printf("  (none)\n");
  }
  tune_print_warnings(db);
  kda_db_close(db);
  if (st != KDA_OK) {
    tune_error(&a, "%s", kda_last_error());
    return TUNE_FAIL;
  }
  return TUNE_OK;
}
