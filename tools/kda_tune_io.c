/* kda-tune export, import and purge: moving results between machines and
 * removing what is no longer wanted. */
#include <errno.h>
#include <string.h>

#include "kda_tune.h"

/* ---------------------------------------------------------------- export */

static const tune_opt export_opts[] = {
    TUNE_OPT_HELP, TUNE_OPT_DB,
    {"format", "json|csv", "output format (default json; only json can be imported)"},
    {"output", "FILE", "write to FILE instead of standard output"},
    TUNE_OPT_FILTERS, {NULL, NULL, NULL}};
static const tune_cmd export_cmd = {
    "export", "[OPTIONS]",
    "Write the results matching the filters, with every trial (JSON) or one line each (CSV). "
    "The output holds no row ids, paths or times of export: the same rows give the same bytes.",
    export_opts, 0, 0};

int cmd_export(int argc, char **argv) {
  tune_args a;
  int rc = tune_parse(&export_cmd, argc, argv, &a);
  if (rc >= 0) return rc;
  kda_db_filter f;
  if ((rc = tune_filter(&a, &f)) != 0) return rc;
  const char *format = tune_get(&a, "format");
  kda_db_format fmt = KDA_DB_FORMAT_JSON;
  if (format != NULL && !strcmp(format, "csv")) fmt = KDA_DB_FORMAT_CSV;
  else if (format != NULL && strcmp(format, "json") != 0) {
    tune_error(&a, "--format %s: expected json or csv", format);
    return TUNE_USAGE;
  }
  kda_db *db = tune_open_existing_db(&a, KDA_DB_READ_ONLY);
  if (db == NULL) return TUNE_FAIL;
  const char *path = tune_get(&a, "output");
  FILE *out = path ? fopen(path, "w") : stdout;
  if (out == NULL) {
    tune_error(&a, "cannot write %s: %s", path, strerror(errno));
    kda_db_close(db);
    return TUNE_FAIL;
  }
  kda_status st = kda_db_export(db, &f, fmt, out);
  if (path && fclose(out) != 0 && st == KDA_OK) {
    tune_error(&a, "writing %s failed: %s", path, strerror(errno));
    st = KDA_ERROR_INVALID_ARGUMENT;
  } else if (st != KDA_OK) {
    tune_error(&a, "%s", kda_last_error());
  }
  tune_print_warnings(db);
  kda_db_close(db);
  return st == KDA_OK ? TUNE_OK : TUNE_FAIL;
}

/* ---------------------------------------------------------------- import */

static const tune_opt import_opts[] = {TUNE_OPT_HELP, TUNE_OPT_DB, TUNE_OPT_JSON, {NULL, NULL, NULL}};
static const tune_cmd import_cmd = {
    "import", "FILE",
    "Merge a JSON file written by `kda-tune export` (another machine's results). A result is "
    "taken when it is verified (a median, a config and an ok trial of that config) and its key "
    "is new here or it is faster than the row here; otherwise the row here is kept. Importing "
    "the same file again changes nothing.",
    import_opts, 1, 1};

int cmd_import(int argc, char **argv) {
  tune_args a;
  int rc = tune_parse(&import_cmd, argc, argv, &a);
  if (rc >= 0) return rc;
  kda_db *db = tune_open_db(&a, 0);
  if (db == NULL) return TUNE_FAIL;
  int64_t imported = 0, kept = 0, skipped = 0;
  kda_status st = kda_db_import(db, a.pos[0], &imported, &kept, &skipped);
  tune_print_warnings(db);
  kda_db_close(db);
  if (st != KDA_OK) {
    tune_error(&a, "%s", kda_last_error());
    if (imported > 0) fprintf(stderr, "kda-tune import: %lld results were imported before the error\n", (long long)imported);
    return TUNE_FAIL;
  }
  if (tune_has(&a, "json"))
    printf("{\"imported\": %lld, \"kept\": %lld, \"skipped\": %lld}\n", (long long)imported,
           (long long)kept, (long long)skipped);
  else
    printf("imported %lld, kept %lld (existing row as fast or faster), skipped %lld (not verified)\n",
           (long long)imported, (long long)kept, (long long)skipped);
  return TUNE_OK;
}

/* ----------------------------------------------------------------- purge */

static const tune_opt purge_opts[] = {
    TUNE_OPT_HELP, TUNE_OPT_DB, TUNE_OPT_JSON,
    {"dry-run", NULL, "list what would be deleted, delete nothing"},
    {"all", NULL, "allow a purge without any filter (deletes every result and every cubin)"},
    {"results-only", NULL, "leave cubins alone"},
    TUNE_OPT_FILTERS, {NULL, NULL, NULL}};
static const tune_cmd purge_cmd = {
    "purge", "[OPTIONS]",
    "Delete the results matching the filters (--gpu, --stale, --older-than, ...). With --stale "
    "also the cubins of another NVRTC build or kernel template; with --older-than also cubins "
    "unused for that long; with --all every cubin (unless --results-only). Cubins carry no GPU "
    "or shape, so a filter on those (--gpu, --kernel, --heads, ...) leaves every cubin alone. "
    "Refuses to run without a filter unless --all.",
    purge_opts, 0, 0};

typedef struct purge_state {
  int json, dry, n;
} purge_state;

static int purge_row(void *user, const kda_db_record *r, const kda_db_cubin *c) {
  purge_state *s = user;
  const char *verb = s->dry ? "would delete" : "deleted";
  if (s->json) {
    printf(s->n ? ",\n  {" : "\n  {");
    if (r != NULL) {
      printf("\"kind\": \"result\", \"key\": ");
      json_str(stdout, r->key);
      printf(", \"gpu_key\": ");
      json_str(stdout, r->gpu_key);
      printf(", \"spec\": ");
      json_str(stdout, r->spec);
      printf(", \"bucket\": %lld}", (long long)r->bucket);
    } else {
      printf("\"kind\": \"cubin\", \"arch\": %d, \"spec\": ", c->arch);
      json_str(stdout, c->spec);
      printf(", \"config\": ");
      json_str(stdout, c->config);
      printf(", \"bytes\": %lld}", (long long)c->size);
    }
  } else if (r != NULL) {
    printf("%s result %.16s  %s  %s  bucket %lld%s\n", verb, r->key, r->gpu_key, r->spec,
           (long long)r->bucket, r->stale ? "  (stale)" : "");
  } else {
    printf("%s cubin  sm_%d  %s  %s  %lld bytes%s\n", verb, c->arch, c->spec, c->config,
           (long long)c->size, c->stale ? "  (stale)" : "");
  }
  s->n++;
  return 0;
}

int cmd_purge(int argc, char **argv) {
  tune_args a;
  int rc = tune_parse(&purge_cmd, argc, argv, &a);
  if (rc >= 0) return rc;
  kda_db_filter f;
  if ((rc = tune_filter(&a, &f)) != 0) return rc;
  int filtered = f.gpu || f.kernel || f.heads || f.head_dim || f.chunk || f.bucket >= 0 ||
                 f.stale_only || f.older_than_s > 0;
  if (!filtered && !tune_has(&a, "all")) {
    tune_error(&a, "no filter given; pass --gpu, --stale, --older-than (or other filters), or "
                   "--all to delete every result");
    return TUNE_USAGE;
  }
  uint32_t what = KDA_DB_PURGE_RESULTS;
  if ((f.stale_only || f.older_than_s > 0 || tune_has(&a, "all")) && !tune_has(&a, "results-only") &&
      !f.gpu && !f.kernel && !f.heads && !f.head_dim && !f.chunk && f.bucket < 0)
    what |= KDA_DB_PURGE_CUBINS;
  int dry = tune_has(&a, "dry-run");
  kda_db *db = tune_open_existing_db(&a, dry ? KDA_DB_READ_ONLY : 0);
  if (db == NULL) return TUNE_FAIL;
  purge_state s = {tune_has(&a, "json"), dry, 0};
  int64_t results = 0, cubins = 0;
  if (s.json) printf("{\"dry_run\": %s, \"rows\": [", dry ? "true" : "false");
  kda_status st = kda_db_purge(db, &f, what, dry, purge_row, &s, &results, &cubins);
  if (s.json)
    printf("%s], \"results\": %lld, \"cubins\": %lld}\n", s.n ? "\n" : "", (long long)results,
           (long long)cubins);
  else if (st == KDA_OK)
    printf("%s %lld results and %lld cubins\n", dry ? "dry run: would delete" : "deleted",
           (long long)results, (long long)cubins);
  tune_print_warnings(db);
  kda_db_close(db);
  if (st != KDA_OK) {
    tune_error(&a, "%s", kda_last_error());
    return TUNE_FAIL;
  }
  return TUNE_OK;
}
