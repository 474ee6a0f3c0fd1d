/* kda-tune: what the subcommands share (option parsing, opening the
 * database, JSON output). Uses only the public headers. */
#ifndef KDA_TOOLS_KDA_TUNE_H
#define KDA_TOOLS_KDA_TUNE_H

#include <stdint.h>
#include <stdio.h>

#include "kda/kda.h"
#include "kda/kda_db.h"

#define TUNE_MAX_OPTS 40
#define TUNE_MAX_POS 8

/* Exit codes: 0 success, 1 failure (a run failed, a check found problems,
 * no GPU for a GPU command), 2 usage (bad flag or value). */
enum { TUNE_OK = 0, TUNE_FAIL = 1, TUNE_USAGE = 2 };

typedef struct tune_opt {
  const char *name; /* without the leading "--" */
  const char *arg;  /* metavariable ("N"), NULL for a switch */
  const char *help;
} tune_opt;

typedef struct tune_cmd {
  const char *name;
  const char *synopsis; /* after "kda-tune NAME " */
  const char *summary;
  const tune_opt *opts; /* NULL-terminated by name */
  int min_pos, max_pos; /* positional arguments */
} tune_cmd;

typedef struct tune_args {
  const char *value[TUNE_MAX_OPTS]; /* by index in the command's opts */
  int given[TUNE_MAX_OPTS];
  const char *pos[TUNE_MAX_POS];
  int npos;
  const tune_cmd *cmd;
} tune_args;

/* Parses argv (after the subcommand name). Returns -1 when parsed, else
 * the exit code to return (0 after --help). Errors name the flag and list
 * the valid ones. */
int tune_parse(const tune_cmd *cmd, int argc, char **argv, tune_args *out);
void tune_usage(const tune_cmd *cmd, FILE *out);
/* Value of option name (NULL if not given); 1 if given. */
const char *tune_get(const tune_args *a, const char *name);
int tune_has(const tune_args *a, const char *name);
/* Integer option: 0 (with *out untouched when absent) or prints an error
 * and returns TUNE_USAGE. */
int tune_get_int(const tune_args *a, const char *name, long lo, long hi, long *out);

/* Prints "kda-tune CMD: error: ..." to stderr. */
void tune_error(const tune_args *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Opens the database named by --db (else the default one), printing its
 * warnings. Read-only commands pass KDA_DB_READ_ONLY. An existing file the
 * library cannot use is an error (NULL returned, message printed). */
kda_db *tune_open_db(const tune_args *a, uint32_t flags);
/* The same for commands that only make sense on a file that exists (list,
 * show, stats, export, verify, purge): a missing one is an error that names
 * the path and the rule that chose it. */
kda_db *tune_open_existing_db(const tune_args *a, uint32_t flags);
/* "--db flag", "environment KDA_CACHE_DIR", ... for kda_db_path_rule(). */
const char *tune_rule_words(const char *rule);
void tune_print_warnings(kda_db *db);

/* The filter options shared by list, export and purge. Returns 0 or an
 * exit code; strings point into argv. */
int tune_filter(const tune_args *a, kda_db_filter *f);
/* A result's shape in the words prewarm prints: "gate_chunk_cumsum H=32
 * K=128 chunk=64 softplus bias bf16->f32 dense" (plus "vec<=N" when the
 * row is for tensors aligned for narrower vectors only). */
void tune_shape_words(const kda_db_record *r, char *buf, size_t size);
/* A token bucket's range: "1024-4095", ">=65536". */
void tune_tokens_text(int64_t bucket, char *buf, size_t size);
/* "30d", "12h", "45m", "90s" or plain seconds; -1 if malformed. */
int64_t tune_parse_duration(const char *text);

/* JSON helpers. */
void json_str(FILE *out, const char *s);
void json_num(FILE *out, double v); /* negative: null */
/* "2024-05-01 12:00" (UTC) */
void tune_time_text(int64_t unix_s, char *buf, size_t size);

/* Subcommands. */
int cmd_prewarm(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_show(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_purge(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_lookup(int argc, char **argv);

/* Shared option rows. */
#define TUNE_OPT_HELP {"help", NULL, "show this help and exit"}
#define TUNE_OPT_DB {"db", "PATH", "tuning database (default: $KDA_CACHE_DIR/tune.db, $XDG_CACHE_HOME/kda/tune.db, ~/.cache/kda/tune.db)"}
#define TUNE_OPT_JSON {"json", NULL, "print JSON instead of a table"}
#define TUNE_OPT_DEVICE {"device", "N", "CUDA device ordinal (default 0)"}
#define TUNE_OPT_FILTERS                                                                  \
  {"gpu", "GPU", "GPU key, key prefix (sm90) or part of the GPU name (H100)"},            \
  {"kernel", "NAME", "gate_chunk_cumsum, chunk_local_cumsum, gate (or gate_cumsum: all three)"}, \
  {"heads", "H", "number of heads"},                                                       \
  {"head-dim", "K", "head dimension"},                                                     \
  {"chunk", "N", "chunk size"},                                                            \
  {"bucket", "B", "token bucket (0..4)"},                                                  \
  {"stale", NULL, "only rows this library may not use (another library version or kernel template; cubins: another NVRTC build too)"}, \
  {"older-than", "AGE", "only rows created before AGE ago (30d, 12h, 45m, 90s)"}

/* The shape flags of prewarm and lookup (tools/shapes_file.h). */
#define TUNE_OPT_SHAPES \
    {"heads", "H[,H...]", "heads per GPU"}, \
    {"head-dim", "K[,K...]", "head dimension (default 128)"}, \
    {"chunk", "N[,N...]", "chunk size (default 64)"}, \
    {"bias", "yes|no|both", "dt_bias given (default yes)"}, \
    {"gate", "softplus|lower-bound|none", "gate activation (default softplus; none: chunk_local_cumsum)"}, \
    {"dtype", "T[,T...]", "input dtype: f32, f16, bf16 (default bf16)"}, \
    {"out-dtype", "f32|bf16", "output dtype (default f32)"}, \
    {"varlen", "yes|no|both", "packed variable-length batches (default no)"}, \
    {"host-rows", "yes|no|both", "varlen calls passing cu_seqlens_host, where the batch fits (default no)"}, \
    {"chunk-plan", "yes|no|both", "varlen calls passing a kda_chunk_plan (default no)"}, \
    {"tokens", "N[,N...]", "token counts (default one per bucket: 512,2048,8192,32768,65536)"}, \
    {"seqs", "N", "sequences of a varlen shape (default 8)"}, \
    {"scale", "yes|no|both", "scaled cumsum (default no)"}, \
    {"reverse", "yes|no|both", "reverse cumsum (default no)"}, \
    {"kernel", "NAME", "gate_chunk_cumsum, chunk_local_cumsum or gate (default: from --gate)"}, \
    {"shapes", "FILE", "shapes file (format: kda-tune prewarm --help, or tools/shapes_file.h)"}, \
    {"model", "NAME", "model preset: kimi-linear"}, \
    {"tp", "N[,N...]", "tensor-parallel degrees for --model (H = total heads / tp)"}, \
    {"g-align", "BYTES", "alignment of the calls' g (default 256, as cudaMalloc's; a view at " \
                         "an offset has less, and keys of its own)"}, \
    {"out-align", "BYTES", "alignment of the calls' out (default 256)"}

/* The shapes the shape flags, --shapes FILE or --model/--tp name (the
 * command must have TUNE_OPT_SHAPES). 0, or an exit code after an error
 * message. */
struct shape_list;
int tune_collect_shapes(const tune_args *a, struct shape_list *list);

#endif
