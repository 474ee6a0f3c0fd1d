/* kda-tune: prewarm the tuning database at deployment and inspect it for
 * triage. Built on the public API only (kda/kda.h, kda/kda_db.h); see
 * `kda-tune --help`. This file: entry point, version check, the option
 * parser and helpers the subcommands share. */
#include "kda_tune.h"
#include "shapes_file.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct subcommand {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *summary;
} subcommand;

static const subcommand subcommands[] = {
    {"prewarm", cmd_prewarm, "tune (or, with --compile-only, compile) every specialization a deployment meets"},
    {"list", cmd_list, "one line per tuning result"},
    {"show", cmd_show, "everything about one result, every trial"},
    {"lookup", cmd_lookup, "what each call of a deployment takes from the database (row, cubin), or why nothing"},
    {"stats", cmd_stats, "database path, schema, size, counts, stale entries"},
    {"export", cmd_export, "write results as JSON or CSV"},
    {"import", cmd_import, "merge a JSON export (faster verified result wins)"},
    {"purge", cmd_purge, "delete results and cubins by GPU, staleness or age"},
    {"verify", cmd_verify, "check cubin hashes; on a GPU load them and re-run tuned kernels"},
    {"info", cmd_info, "GPUs, driver, NVRTC and library versions, the database in use"},
    {"bench", cmd_bench, "run kda-bench: tuned vs heuristic vs unfused"},
};
#define NUM_SUBCOMMANDS (sizeof subcommands / sizeof subcommands[0])

static void main_usage(FILE *out) {
  fprintf(out, "usage: kda-tune COMMAND [OPTIONS]\n\ncommands:\n");
  for (size_t i = 0; i < NUM_SUBCOMMANDS; i++)
    fprintf(out, "  %-8s %s\n", subcommands[i].name, subcommands[i].summary);
  fprintf(out,
          "\nEvery command takes --help and --db PATH. Exit status: 0 success, 1 failure,\n"
          "2 bad usage. kda-tune --version prints the tool and library versions.\n");
}

/* zstd's checkLibVersion: a tool built against one header must not run
 * against another library silently. */
static int check_lib_version(void) {
  if (kda_version_number() == KDA_VERSION_NUMBER) return 0;
  fprintf(stderr,
          "kda-tune: error: version mismatch: built with libkda %d.%d.%d headers, but the "
          "loaded library is %s\n",
          KDA_VERSION_MAJOR, KDA_VERSION_MINOR, KDA_VERSION_PATCH, kda_version());
  return 1;
}

int main(int argc, char **argv) {
  if (check_lib_version() != 0) return TUNE_FAIL;
  if (argc < 2) {
    main_usage(stderr);
    return TUNE_USAGE;
  }
  const char *name = argv[1];
  if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
    if (argc > 2 && strcmp(name, "help") == 0) {
      for (size_t i = 0; i < NUM_SUBCOMMANDS; i++) {
        if (!strcmp(argv[2], subcommands[i].name)) {
          char *help_argv[] = {argv[2], "--help", NULL};
          return subcommands[i].run(2, help_argv);
        }
      }
    }
    main_usage(stdout);
    return TUNE_OK;
  }
  if (!strcmp(name, "--version")) {
    printf("kda-tune %d.%d.%d (libkda %s)\n", KDA_VERSION_MAJOR, KDA_VERSION_MINOR,
           KDA_VERSION_PATCH, kda_version());
    return TUNE_OK;
  }
  for (size_t i = 0; i < NUM_SUBCOMMANDS; i++)
    if (!strcmp(name, subcommands[i].name)) return subcommands[i].run(argc - 1, argv + 1);
  fprintf(stderr, "kda-tune: error: unknown command '%s'; valid commands:", name);
  for (size_t i = 0; i < NUM_SUBCOMMANDS; i++) fprintf(stderr, " %s", subcommands[i].name);
  fprintf(stderr, "\n");
  return TUNE_USAGE;
}

/* ---------------------------------------------------------------- parser */

void tune_usage(const tune_cmd *cmd, FILE *out) {
  fprintf(out, "usage: kda-tune %s %s\n\n%s\n\noptions:\n", cmd->name, cmd->synopsis, cmd->summary);
  for (const tune_opt *o = cmd->opts; o->name != NULL; o++) {
    char left[64];
    snprintf(left, sizeof left, "--%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
    fprintf(out, "  %-22s %s\n", left, o->help);
  }
}

static void list_valid(const tune_cmd *cmd) {
  fprintf(stderr, "valid options for '%s':", cmd->name);
  for (const tune_opt *o = cmd->opts; o->name != NULL; o++) fprintf(stderr, " --%s", o->name);
  fprintf(stderr, "\n");
}

int tune_parse(const tune_cmd *cmd, int argc, char **argv, tune_args *out) {
  memset(out, 0, sizeof *out);
  out->cmd = cmd;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (!strcmp(arg, "-h")) arg = "--help";
    if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
      if (out->npos >= cmd->max_pos || out->npos >= TUNE_MAX_POS) {
        fprintf(stderr, "kda-tune %s: error: unexpected argument '%s'\n", cmd->name, arg);
        tune_usage(cmd, stderr);
        return TUNE_USAGE;
      }
      out->pos[out->npos++] = arg;
      continue;
    }
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    int idx = -1;
    for (int k = 0; cmd->opts[k].name != NULL && k < TUNE_MAX_OPTS; k++)
      if (strlen(cmd->opts[k].name) == len && !strncmp(cmd->opts[k].name, name, len)) idx = k;
    if (idx < 0) {
      fprintf(stderr, "kda-tune %s: error: unknown option '--%.*s'\n", cmd->name, (int)len, name);
      list_valid(cmd);
      return TUNE_USAGE;
    }
    const tune_opt *o = &cmd->opts[idx];
    if (!strcmp(o->name, "help")) {
      tune_usage(cmd, stdout);
      return TUNE_OK;
    }
    const char *value = NULL;
    if (o->arg != NULL) {
      if (eq) value = eq + 1;
      else if (i + 1 < argc) value = argv[++i];
      else {
        fprintf(stderr, "kda-tune %s: error: option '--%s' needs a value (%s)\n", cmd->name,
                o->name, o->arg);
        return TUNE_USAGE;
      }
    } else if (eq) {
      fprintf(stderr, "kda-tune %s: error: option '--%s' takes no value\n", cmd->name, o->name);
      return TUNE_USAGE;
    }
    out->given[idx] = 1;
    out->value[idx] = value;
  }
  if (out->npos < cmd->min_pos) {
    fprintf(stderr, "kda-tune %s: error: missing argument\n", cmd->name);
    tune_usage(cmd, stderr);
    return TUNE_USAGE;
  }
  return -1;
}

static int opt_index(const tune_args *a, const char *name) {
  for (int k = 0; a->cmd->opts[k].name != NULL; k++)
    if (!strcmp(a->cmd->opts[k].name, name)) return k;
  return -1;
}

const char *tune_get(const tune_args *a, const char *name) {
  int k = opt_index(a, name);
  return k >= 0 && a->given[k] ? a->value[k] : NULL;
}

int tune_has(const tune_args *a, const char *name) {
  int k = opt_index(a, name);
  return k >= 0 && a->given[k];
}

void tune_error(const tune_args *a, const char *fmt, ...) {
  fprintf(stderr, "kda-tune %s: error: ", a->cmd->name);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

int tune_get_int(const tune_args *a, const char *name, long lo, long hi, long *out) {
  const char *v = tune_get(a, name);
  if (v == NULL) return 0;
  char *end = NULL;
  long x = strtol(v, &end, 10);
  if (end == v || *end != '\0' || x < lo || x > hi) {
    tune_error(a, "--%s %s: expected an integer in [%ld, %ld]", name, v, lo, hi);
    return TUNE_USAGE;
  }
  *out = x;
  return 0;
}

/* -------------------------------------------------------------- database */

void tune_print_warnings(kda_db *db) {
  const char *w;
  while ((w = kda_db_pop_warning(db)) != NULL) fprintf(stderr, "kda-tune: warning: %s\n", w);
}

const char *tune_rule_words(const char *rule) {
  if (!strcmp(rule, "option")) return "--db flag";
  if (!strcmp(rule, "KDA_CACHE_DIR")) return "environment KDA_CACHE_DIR";
  if (!strcmp(rule, "XDG_CACHE_HOME")) return "environment XDG_CACHE_HOME";
  return "default (~/.cache/kda)";
}

/* Why path cannot be used, in words that say what to do; "" if unknown. */
static const char *unusable_advice(const char *path, char *buf, size_t size) {
  struct stat st;
  if (stat(path, &st) != 0) return "";
  if (S_ISDIR(st.st_mode)) return "it is a folder: --db names the database file itself";
  if (!S_ISREG(st.st_mode)) return "it is not a regular file";
  if (access(path, R_OK) != 0) {
    snprintf(buf, size, "this user may not read it (%s); run as its owner or change its mode",
             strerror(errno));
    return buf;
  }
  return "it is damaged or not a tuning database: commands that write (import, purge, "
         "prewarm) move such a file aside to PATH.corrupt-TIME and start a new one";
}

/* 1 (error printed) if db's path names no file: a read of it would read as
 * an empty database (on a mistyped path or another user's cache folder,
 * "no results" or "0 cubins checked" would look like an answer). */
static int no_file(const tune_args *a, kda_db *db) {
  const char *file = kda_db_path(db);
  if (file[0] == '\0' || access(file, F_OK) == 0 || errno != ENOENT) return 0;
  tune_error(a, "no tuning database at %s (chosen by the %s); prewarm or the library's "
                "first tuned call creates it, or pass the right --db",
             file, tune_rule_words(kda_db_path_rule(db)));
  return 1;
}

/* The same before a writable open, which would create the file: the path
 * the rules choose is learnt from a read-only open. */
static int missing_db(const tune_args *a, const char *path) {
  kda_db *db = NULL;
  if (kda_db_open(path, KDA_DB_READ_ONLY, &db) != KDA_OK) return 0; /* the real open reports */
  const int missing = no_file(a, db);
  kda_db_close(db);
  return missing;
}

static kda_db *open_db(const tune_args *a, uint32_t flags, int must_exist) {
  const char *path = tune_get(a, "db");
  if (path != NULL && path[0] == '\0') {
    tune_error(a, "--db needs a file name");
    return NULL;
  }
  const int read_only = (flags & KDA_DB_READ_ONLY) != 0;
  if (must_exist && !read_only && missing_db(a, path)) return NULL;
  kda_db *db = NULL;
  if (kda_db_open(path, flags, &db) != KDA_OK) {
    tune_error(a, "cannot open the tuning database: %s", kda_last_error());
    return NULL;
  }
  if (must_exist && read_only && no_file(a, db)) {
    kda_db_close(db);
    return NULL;
  }
  if (kda_db_file_unusable(db)) {
    const char *file = kda_db_path(db);
    const char *w = kda_db_pop_warning(db);
    char buf[256];
    const char *advice = unusable_advice(file, buf, sizeof buf);
    /* The library's warning speaks to a process that goes on without the
     * file ("kept in memory", "cannot be moved aside"); a command stops. */
    char what[512];
    snprintf(what, sizeof what, "%s", w ? w : "not a usable SQLite database");
    char *cut = strstr(what, "; tuning results are kept");
    if (cut != NULL) *cut = '\0';
    if ((cut = strstr(what, " and cannot be moved aside")) != NULL) *cut = '\0';
    const char *text = strncmp(what, "kda: ", 5) == 0 ? what + 5 : what;
    tune_error(a, "cannot read %s: %s", file, text);
    if (advice[0] != '\0') fprintf(stderr, "kda-tune %s: hint: %s\n", a->cmd->name, advice);
    kda_db_close(db);
    return NULL;
  }
  tune_print_warnings(db);
  return db;
}

kda_db *tune_open_db(const tune_args *a, uint32_t flags) { return open_db(a, flags, 0); }

kda_db *tune_open_existing_db(const tune_args *a, uint32_t flags) {
  return open_db(a, flags, 1);
}

void tune_tokens_text(int64_t bucket, char *buf, size_t size) {
  int64_t lo = 0, hi = 0;
  kda_token_bucket_range((int32_t)bucket, &lo, &hi);
  if (hi < 0) snprintf(buf, size, ">=%lld", (long long)lo);
  else snprintf(buf, size, "%lld-%lld", (long long)lo, (long long)hi);
}

void tune_shape_words(const kda_db_record *r, char *buf, size_t size) {
  kda_kernel kernel;
  kda_gate_args a;
  int64_t tokens = 0;
  if (kda_db_record_shape(r, &kernel, &a, &tokens) != KDA_OK) {
    snprintf(buf, size, "%s", r->spec); /* not one this library writes: as stored */
    return;
  }
  char words[400];
  shape_words(kernel, &a, words, sizeof words);
  const char *veccap = strstr(r->spec, " veccap=");
  const int cap = veccap != NULL ? atoi(veccap + 8) : 0;
  if (cap > 0 && cap < 8) snprintf(buf, size, "%s vec<=%d", words, cap); /* tensors less aligned */
  else snprintf(buf, size, "%s", words);
}

int64_t tune_parse_duration(const char *text) {
  char *end = NULL;
  double v = strtod(text, &end);
  if (end == text || !(v >= 0)) return -1;
  double unit = 1;
  if (!strcmp(end, "d")) unit = 86400;
  else if (!strcmp(end, "h")) unit = 3600;
  else if (!strcmp(end, "m")) unit = 60;
  else if (!strcmp(end, "s") || *end == '\0') unit = 1;
  else return -1;
  return (int64_t)llround(v * unit);
}

int tune_filter(const tune_args *a, kda_db_filter *f) {
  *f = kda_db_filter_default();
  f->gpu = tune_get(a, "gpu");
  f->kernel = tune_get(a, "kernel");
  static const char *const kernels[] = {"gate_chunk_cumsum", "chunk_local_cumsum", "gate",
                                        "gate_cumsum", "chunk_indices"};
  int known = f->kernel == NULL;
  for (size_t i = 0; i < sizeof kernels / sizeof kernels[0] && !known; ++i)
    known = strcmp(f->kernel, kernels[i]) == 0;
  if (!known) {
    tune_error(a, "--kernel %s: expected an entry point (gate_chunk_cumsum, chunk_local_cumsum, "
                  "gate) or a template (gate_cumsum: all three; chunk_indices)",
               f->kernel);
    return TUNE_USAGE;
  }
  long v;
  int rc;
  if ((rc = tune_get_int(a, "heads", 1, KDA_MAX_HEADS, &v)) != 0) return rc;
  if (tune_has(a, "heads")) f->heads = (int32_t)v;
  if ((rc = tune_get_int(a, "head-dim", 1, KDA_MAX_HEAD_DIM, &v)) != 0) return rc;
  if (tune_has(a, "head-dim")) f->head_dim = (int32_t)v;
  if ((rc = tune_get_int(a, "chunk", KDA_MIN_CHUNK, KDA_MAX_CHUNK, &v)) != 0) return rc;
  if (tune_has(a, "chunk")) f->chunk = (int32_t)v;
  if ((rc = tune_get_int(a, "bucket", 0, 4, &v)) != 0) return rc;
  if (tune_has(a, "bucket")) f->bucket = (int32_t)v;
  f->stale_only = tune_has(a, "stale");
  const char *age = tune_get(a, "older-than");
  if (age != NULL) {
    f->older_than_s = tune_parse_duration(age);
    if (f->older_than_s <= 0) {
      tune_error(a, "--older-than %s: expected a positive age such as 30d, 12h, 45m or 90s", age);
      return TUNE_USAGE;
    }
  }
  return 0;
}

/* ------------------------------------------------------------------ json */

void json_str(FILE *out, const char *s) {
  if (s == NULL) {
    fputs("null", out);
    return;
  }
  fputc('"', out);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\') fprintf(out, "\\%c", *p);
    else if (*p == '\n') fputs("\\n", out);
    else if (*p < 0x20) fprintf(out, "\\u%04x", *p);
    else fputc(*p, out);
  }
  fputc('"', out);
}

void json_num(FILE *out, double v) {
  if (!(v >= 0) || !isfinite(v)) fputs("null", out);
  else fprintf(out, "%.6g", v);
}

void tune_time_text(int64_t unix_s, char *buf, size_t size) {
  time_t t = (time_t)unix_s;
  struct tm tm;
  if (unix_s <= 0 || gmtime_r(&t, &tm) == NULL) {
    snprintf(buf, size, "-");
    return;
  }
  strftime(buf, size, "%Y-%m-%d %H:%M", &tm);
}
