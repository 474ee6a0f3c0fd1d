/* Export of tuning results (JSON with trials, or CSV) and import of a JSON
 * export: how one tuning run serves a fleet. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_internal.h"
#include "db_json.h"
#include "error.h"

#define KDA__EXPORT_FORMAT "kda-tune-export"
#define KDA__EXPORT_VERSION 1

/* ----------------------------------------------------------------- export */

typedef struct trial_writer {
  FILE *out;
  int first;
} trial_writer;

static int write_trial(void *user, const kda__store_trial *t) {
  trial_writer *w = user;
  fputs(w->first ? "\n        " : ",\n        ", w->out);
  w->first = 0;
  fputs("{\"config\": ", w->out);
  kda__json_write_string(w->out, t->config);
  fprintf(w->out, ", \"config_id\": %lld, \"median_us\": ", (long long)t->config_id);
  kda__json_write_opt(w->out, t->median_us);
  fputs(", \"p10_us\": ", w->out);
  kda__json_write_opt(w->out, t->p10_us);
  fputs(", \"p90_us\": ", w->out);
  kda__json_write_opt(w->out, t->p90_us);
  fputs(", \"status\": ", w->out);
  const char *status = kda__trial_status_name(t->status);
  kda__json_write_string(w->out, status ? status : "rejected");
  fputs(", \"reason\": ", w->out);
  kda__json_write_string(w->out, t->reason && t->reason[0] ? t->reason : NULL);
  fputc('}', w->out);
  return 0;
}

static void field_str(FILE *out, const char *name, const char *v, int last) {
  fprintf(out, "      \"%s\": ", name);
  kda__json_write_string(out, v);
  fputs(last ? "\n" : ",\n", out);
}

static void field_opt(FILE *out, const char *name, double v) {
  fprintf(out, "      \"%s\": ", name);
  kda__json_write_opt(out, v);
  fputs(",\n", out);
}

static kda_status export_json(kda_db *db, const kda_db_record *rows, size_t n, FILE *out) {
  fprintf(out, "{\n  \"format\": \"%s\",\n  \"version\": %d,\n  \"results\": [", KDA__EXPORT_FORMAT,
          KDA__EXPORT_VERSION);
  for (size_t i = 0; i < n; i++) {
    const kda_db_record *r = &rows[i];
    fputs(i ? ",\n    {\n" : "\n    {\n", out);
    field_str(out, "gpu_key", r->gpu_key, 0);
    field_str(out, "gpu_name", r->gpu_name[0] ? r->gpu_name : NULL, 0);
    field_opt(out, "copy_bw_gbps", r->copy_bw_gbps);
    field_str(out, "kernel", r->kernel, 0);
    field_str(out, "spec", r->spec, 0);
    fprintf(out, "      \"bucket\": %lld,\n", (long long)r->bucket);
    field_str(out, "template_hash", r->template_hash, 0);
    field_str(out, "space_hash", r->space_hash, 0);
    field_str(out, "config", r->config, 0);
    fprintf(out, "      \"config_id\": %lld,\n", (long long)r->config_id);
    field_opt(out, "median_us", r->median_us);
    field_opt(out, "gbps", r->gbps);
    field_opt(out, "max_err", r->max_err);
    fprintf(out, "      \"candidates\": %lld,\n      \"rejected\": %lld,\n",
            (long long)r->candidates, (long long)r->rejected);
    field_opt(out, "heuristic_us", r->heuristic_us);
    field_opt(out, "tune_ms", r->tune_ms);
    field_opt(out, "compile_ms", r->compile_ms);
    fprintf(out, "      \"created_at\": %lld,\n", (long long)r->created_at);
    field_str(out, "lib_version", r->lib_version, 0);
    field_str(out, "nvrtc_version", r->nvrtc_version, 0);
    kda__store_record prov;
    int found = 0;
    KDA__TRY(kda__db_provenance(db, r, &prov, &found));
    field_str(out, "tuned_on", found && prov.host[0] ? prov.host : NULL, 0);
    field_str(out, "driver", found && prov.driver[0] ? prov.driver : NULL, 0);
    field_str(out, "source", found && prov.source[0] ? prov.source : NULL, 0);
    fputs("      \"trials\": [", out);
    kda__store_record rec;
    memset(&rec, 0, sizeof rec);
    rec.id = r->id;
    rec.in_overlay = r->in_memory;
    trial_writer w = {out, 1};
    KDA__TRY(kda__store_list_trials(db->store, &rec, write_trial, &w));
    fputs(w.first ? "]\n    }" : "\n      ]\n    }", out);
  }
  fputs(n ? "\n  ]\n}\n" : "]\n}\n", out);
  return KDA_OK;
}

static void csv_text(FILE *out, const char *s) {
  if (strpbrk(s, ",\"\n\r") == NULL) {
    fputs(s, out);
    return;
  }
  fputc('"', out);
  for (; *s; s++) {
    if (*s == '"') fputc('"', out);
    fputc(*s, out);
  }
  fputc('"', out);
}

static void csv_opt(FILE *out, double v) {
  fputc(',', out);
  if (v >= 0) kda__json_write_opt(out, v);
}

static kda_status export_csv(kda_db *db, const kda_db_record *rows, size_t n, FILE *out) {
  fputs("key,gpu_key,gpu_name,kernel,spec,bucket,heads,head_dim,chunk,config,config_id,"
        "median_us,gbps,max_err,candidates,rejected,heuristic_us,tune_ms,compile_ms,"
        "created_at,lib_version,nvrtc_version,template_hash,space_hash,stale,tuned_on,driver,"
        "source\n",
        out);
  for (size_t i = 0; i < n; i++) {
    const kda_db_record *r = &rows[i];
    const char *texts[] = {r->key, r->gpu_key, r->gpu_name, r->kernel, r->spec};
    for (size_t t = 0; t < 5; t++) {
      if (t) fputc(',', out);
      csv_text(out, texts[t]);
    }
    fprintf(out, ",%lld,%d,%d,%d,", (long long)r->bucket, r->heads, r->head_dim, r->chunk);
    csv_text(out, r->config);
    fprintf(out, ",%lld", (long long)r->config_id);
    csv_opt(out, r->median_us);
    csv_opt(out, r->gbps);
    csv_opt(out, r->max_err);
    fprintf(out, ",%lld,%lld", (long long)r->candidates, (long long)r->rejected);
    csv_opt(out, r->heuristic_us);
    csv_opt(out, r->tune_ms);
    csv_opt(out, r->compile_ms);
    fprintf(out, ",%lld,", (long long)r->created_at);
    csv_text(out, r->lib_version);
    fputc(',', out);
    csv_text(out, r->nvrtc_version);
    fprintf(out, ",%s,%s,%d", r->template_hash, r->space_hash, r->stale != 0);
    kda__store_record prov;
    int found = 0;
    KDA__TRY(kda__db_provenance(db, r, &prov, &found));
    const char *more[] = {found ? prov.host : "", found ? prov.driver : "",
                          found ? prov.source : ""};
    for (size_t t = 0; t < 3; t++) {
      fputc(',', out);
      csv_text(out, more[t]);
    }
    fputc('\n', out);
  }
  return KDA_OK;
}

kda_status kda_db_export(kda_db *db, const kda_db_filter *f, kda_db_format format, FILE *out) {
  KDA__REQUIRE(db != NULL && out != NULL, KDA_ERROR_NULL_POINTER, "kda_db_export: NULL argument");
  KDA__REQUIRE(format == KDA_DB_FORMAT_JSON || format == KDA_DB_FORMAT_CSV,
               KDA_ERROR_INVALID_ARGUMENT, "kda_db_export: unknown format %d", (int)format);
  kda_db_record *rows;
  size_t n;
  KDA__TRY(kda__db_collect(db, f, &rows, &n));
  kda_status st = KDA_OK;
  if (format == KDA_DB_FORMAT_JSON) st = export_json(db, rows, n, out);
  else st = export_csv(db, rows, n, out);
  free(rows);
  if (st == KDA_OK && (fflush(out) != 0 || ferror(out)))
    st = kda__fail(KDA_ERROR_INVALID_ARGUMENT, "kda_db_export: writing the output failed: %s",
                   kda__errno_text(errno));
  return st;
}

/* ----------------------------------------------------------------- import */

static const char *jstr(const kda__json *o, const char *key) {
  const kda__json *v = kda__json_get(o, key);
  return v != NULL && v->type == KDA__JSON_STRING ? v->string : NULL;
}

/* Number, or def when absent / null / not a number. */
static double jnum(const kda__json *o, const char *key, double def) {
  const kda__json *v = kda__json_get(o, key);
  return v != NULL && v->type == KDA__JSON_NUMBER ? v->number : def;
}

/* Integer member: def when absent, not a number or out of int64's range
 * (a double outside it, or NaN, has no defined conversion). */
static int64_t jint(const kda__json *o, const char *key, int64_t def) {
  double v = jnum(o, key, (double)def);
  return v >= -9223372036854775808.0 && v < 9223372036854775808.0 ? (int64_t)v : def;
}

static kda__trial_status status_of(const char *name) {
  for (int i = 0; i <= KDA__TRIAL_UNWRITTEN; i++) {
    const char *s = kda__trial_status_name((kda__trial_status)i);
    if (s != NULL && name != NULL && strcmp(s, name) == 0) return (kda__trial_status)i;
  }
  return KDA__TRIAL_REJECTED;
}

static char *read_file(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return NULL;
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  while (buf != NULL) {
    if (n + 1 >= cap) {
      char *b = realloc(buf, cap *= 2);
      if (b == NULL) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = b;
    }
    size_t got = fread(buf + n, 1, cap - n - 1, f);
    n += got;
    if (got == 0) break;
  }
  if (buf != NULL && ferror(f)) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  if (buf != NULL) {
    buf[n] = '\0';
    *size = n;
  }
  return buf;
}

/* 1 if the result carries what import trusts: a known median, a config and,
 * when trials are given, an "ok" trial of the winning config. */
static int verified(const kda__json *r, const char *config) {
  if (!(jnum(r, "median_us", -1) > 0) || config == NULL || config[0] == '\0') return 0;
  const kda__json *trials = kda__json_get(r, "trials");
  if (trials == NULL || trials->type != KDA__JSON_ARRAY || trials->count == 0) return 1;
  for (size_t i = 0; i < trials->count; i++) {
    const char *c = jstr(&trials->items[i], "config");
    const char *s = jstr(&trials->items[i], "status");
    if (c != NULL && s != NULL && strcmp(c, config) == 0 && strcmp(s, "ok") == 0) return 1;
  }
  return 0;
}

static kda_status import_one(kda_db *db, const char *path, size_t index, const kda__json *r,
                             int64_t *imported, int64_t *kept, int64_t *skipped) {
  KDA__REQUIRE(r->type == KDA__JSON_OBJECT, KDA_ERROR_INVALID_ARGUMENT,
               "%s: results[%zu] is not an object", path, index);
  kda__store_key key = {jstr(r, "gpu_key"), jstr(r, "kernel"), jstr(r, "spec"),
                        jint(r, "bucket", -1), jstr(r, "template_hash"),
                        jstr(r, "space_hash")};
  const char *config = jstr(r, "config");
  KDA__REQUIRE(key.gpu_key && key.kernel && key.spec && key.template_hash && key.space_hash &&
                   key.bucket >= 0,
               KDA_ERROR_INVALID_ARGUMENT,
               "%s: results[%zu] lacks a key field (gpu_key, kernel, spec, bucket, "
               "template_hash, space_hash)",
               path, index);
  /* Rows the public record cannot hold whole would export truncated, under
   * another key; the tuner never writes such rows. */
  kda_db_record *o = NULL;
  KDA__REQUIRE(strlen(key.gpu_key) < sizeof o->gpu_key && strlen(key.kernel) < sizeof o->kernel &&
                   strlen(key.spec) < sizeof o->spec &&
                   strlen(key.template_hash) < sizeof o->template_hash &&
                   strlen(key.space_hash) < sizeof o->space_hash &&
                   (config == NULL || strlen(config) < sizeof o->config),
               KDA_ERROR_INVALID_ARGUMENT,
               "%s: results[%zu] has a key field or config longer than a record holds", path,
               index);
  if (!verified(r, config)) {
    (*skipped)++;
    return KDA_OK;
  }
  kda__store_record rec;
  memset(&rec, 0, sizeof rec);
  snprintf(rec.config, sizeof rec.config, "%s", config);
  rec.config_id = jint(r, "config_id", 0);
  rec.median_us = jnum(r, "median_us", -1);
  rec.gbps = jnum(r, "gbps", -1);
  rec.max_err = jnum(r, "max_err", -1);
  rec.candidates = jint(r, "candidates", 0);
  rec.rejected = jint(r, "rejected", 0);
  rec.heuristic_us = jnum(r, "heuristic_us", -1);
  rec.tune_ms = jnum(r, "tune_ms", -1);
  rec.compile_ms = jnum(r, "compile_ms", -1);
  rec.created_at = jint(r, "created_at", 0);
  const char *lib = jstr(r, "lib_version"), *nvrtc = jstr(r, "nvrtc_version");
  snprintf(rec.lib_version, sizeof rec.lib_version, "%s", lib ? lib : "");
  snprintf(rec.nvrtc_version, sizeof rec.nvrtc_version, "%s", nvrtc ? nvrtc : "");
  /* Where it was tuned stays; what brought it here is this import. */
  /* (Cut at character boundaries: exports stay valid UTF-8.) */
  const char *host = jstr(r, "tuned_on"), *driver = jstr(r, "driver"), *src = jstr(r, "source");
  kda__store_copy_utf8(rec.host, sizeof rec.host, host ? host : "");
  kda__store_copy_utf8(rec.driver, sizeof rec.driver, driver ? driver : "");
  const char *base = strrchr(path, '/');
  if (src != NULL && strncmp(src, "import of ", 10) == 0) { /* its first import says it */
    kda__store_copy_utf8(rec.source, sizeof rec.source, src);
  } else {
    char file[61], was[51];
    kda__store_copy_utf8(file, sizeof file, base ? base + 1 : path);
    kda__store_copy_utf8(was, sizeof was, src ? src : "unknown");
    snprintf(rec.source, sizeof rec.source, "import of %s: %s", file, was);
  }
  const kda__json *tj = kda__json_get(r, "trials");
  size_t nt = tj != NULL && tj->type == KDA__JSON_ARRAY ? tj->count : 0;
  kda__store_trial *trials = calloc(nt + 1, sizeof *trials);
  KDA__REQUIRE(trials != NULL, KDA_ERROR_OUT_OF_MEMORY, "import: out of memory");
  size_t m = 0;
  for (size_t i = 0; i < nt; i++) {
    const kda__json *t = &tj->items[i];
    if (jstr(t, "config") == NULL) continue;
    trials[m].config = jstr(t, "config");
    trials[m].config_id = jint(t, "config_id", 0);
    trials[m].median_us = jnum(t, "median_us", -1);
    trials[m].p10_us = jnum(t, "p10_us", -1);
    trials[m].p90_us = jnum(t, "p90_us", -1);
    trials[m].status = status_of(jstr(t, "status"));
    trials[m].reason = jstr(t, "reason");
    m++;
  }
  int stored = 0;
  kda_status st = kda__store_put_result(db->store, &key, &rec, trials, m, KDA__PUT_FASTER, &stored);
  free(trials);
  if (st != KDA_OK) return st;
  const char *name = jstr(r, "gpu_name");
  double bw = jnum(r, "copy_bw_gbps", -1);
  if (name != NULL || bw >= 0) KDA__TRY(kda__store_put_gpu(db->store, key.gpu_key, name, bw));
  if (stored) (*imported)++;
  else (*kept)++;
  return KDA_OK;
}

kda_status kda_db_import(kda_db *db, const char *path, int64_t *imported, int64_t *kept,
                         int64_t *skipped) {
  int64_t n_imp = 0, n_kept = 0, n_skip = 0;
  if (imported) *imported = 0;
  if (kept) *kept = 0;
  if (skipped) *skipped = 0;
  KDA__REQUIRE(db != NULL && path != NULL, KDA_ERROR_NULL_POINTER, "kda_db_import: NULL argument");
  KDA__REQUIRE(strcmp(kda_db_mode(db), "read-write") == 0, KDA_ERROR_READ_ONLY,
               "the tuning database %s is not open for writing (%s); nothing was imported",
               kda_db_path(db)[0] ? kda_db_path(db) : "(in memory)", kda_db_mode(db));
  size_t size = 0;
  char *text = read_file(path, &size);
  KDA__REQUIRE(text != NULL, KDA_ERROR_INVALID_ARGUMENT, "cannot read %s: %s", path,
               kda__errno_text(errno));
  if (strlen(text) != size) {
    free(text);
    return kda__fail(KDA_ERROR_INVALID_ARGUMENT, "%s: not a JSON export (it contains NUL bytes)",
                     path);
  }
  kda__json doc;
  char err[256];
  int rc = kda__json_parse(text, &doc, err, sizeof err);
  free(text);
  KDA__REQUIRE(rc == 0, KDA_ERROR_INVALID_ARGUMENT,
               "%s: not valid JSON: %s (import reads what `kda-tune export` writes in its "
               "default JSON format; a CSV export cannot be imported)",
               path, err);
  const char *format = jstr(&doc, "format");
  const kda__json *results = kda__json_get(&doc, "results");
  kda_status st = KDA_OK;
  if (format == NULL || strcmp(format, KDA__EXPORT_FORMAT) != 0) {
    st = kda__fail(KDA_ERROR_INVALID_ARGUMENT,
                   "%s: not a kda-tune export (\"format\" is not \"" KDA__EXPORT_FORMAT "\")", path);
  } else if (jnum(&doc, "version", 0) != KDA__EXPORT_VERSION) {
    st = kda__fail(KDA_ERROR_INVALID_ARGUMENT, "%s: export version %g, this library reads %d",
                   path, jnum(&doc, "version", 0), KDA__EXPORT_VERSION);
  } else if (results == NULL || results->type != KDA__JSON_ARRAY) {
    st = kda__fail(KDA_ERROR_INVALID_ARGUMENT, "%s: \"results\" is missing or not an array", path);
  }
  for (size_t i = 0; st == KDA_OK && i < results->count; i++)
    st = import_one(db, path, i, &results->items[i], &n_imp, &n_kept, &n_skip);
  kda__json_free(&doc);
  if (imported) *imported = n_imp;
  if (kept) *kept = n_kept;
  if (skipped) *skipped = n_skip;
  return st;
}
