/* The public tuning-database API (kda/kda_db.h): opening, listing with
 * filters, showing trials, staleness, export/import round trips, purging,
 * cubin checks. Rows are written through the store (tuner/store.h). */
#define _GNU_SOURCE
#include <locale.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "kda/kda_db.h"
#include "store.h"

#define GPU_A "sm90-pci2330-sms132-l2_52428800"
#define GPU_B "sm90-pci2335-sms132-l2_62914560"
#define SPEC32 "gate_cumsum in=bf16 out=f32 H=32 K=128 chunk=64 cumsum=1 gate=1 bias=1 alog=1 scale=0 reverse=0 varlen=0 idx=i32 veccap=8"
#define SPEC8 "gate_cumsum in=f32 out=bf16 H=8 K=64 chunk=32 cumsum=1 gate=2 bias=0 alog=1 scale=1 reverse=1 varlen=1 idx=i32 veccap=4"

typedef struct fixture {
  char dir[64], db[128], other[128], json[128];
  kda_db_versions v;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  snprintf(f->dir, sizeof f->dir, "/tmp/kda_db_api_XXXXXX");
  if (f == NULL || mkdtemp(f->dir) == NULL) return -1;
  snprintf(f->db, sizeof f->db, "%s/tune.db", f->dir);
  snprintf(f->other, sizeof f->other, "%s/other.db", f->dir);
  snprintf(f->json, sizeof f->json, "%s/export.json", f->dir);
  if (kda_db_current(&f->v) != KDA_OK) return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  setlocale(LC_NUMERIC, "C"); /* a failed locale test leaves it set */
  char cmd[160];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
  if (system(cmd) != 0) return -1;
  free(f);
  return 0;
}

/* One result with three trials (one rejected, unmeasured). */
static void put_row(const char *path, const fixture *f, const char *gpu, const char *spec,
                    int64_t bucket, const char *lib, double median, kda__put_mode mode) {
  kda__store *s = NULL;
  assert_int_equal(kda__store_open(path, 0, &s), KDA_OK);
  kda__store_key key = {gpu, "gate_cumsum", spec, bucket, f->v.gate_cumsum_hash, "space"};
  kda__store_record r;
  memset(&r, 0, sizeof r);
  snprintf(r.config, sizeof r.config, "vec=4,tx=32,seg=8");
  r.median_us = median;
  r.gbps = 1000;
  r.max_err = -1;
  r.heuristic_us = median * 2;
  r.tune_ms = r.compile_ms = -1;
  r.created_at = 1700000000;
  snprintf(r.lib_version, sizeof r.lib_version, "%s", lib);
  snprintf(r.nvrtc_version, sizeof r.nvrtc_version, "%.63s", f->v.nvrtc_version);
  kda__store_trial t[3] = {
      {"vec=8,tx=16,seg=8", 5, -1, -1, -1, KDA__TRIAL_WRONG_RESULT, "wrong"},
      {"vec=2,tx=64,seg=8", 1, median * 1.5, median, median * 2, KDA__TRIAL_OK, NULL},
      {"vec=4,tx=32,seg=8", 3, median, median, median, KDA__TRIAL_OK, NULL},
  };
  assert_int_equal(kda__store_put_result(s, &key, &r, t, 3, mode, NULL), KDA_OK);
  assert_int_equal(kda__store_put_gpu(s, GPU_A, "NVIDIA H100 80GB HBM3", 3000), KDA_OK);
  kda__store_close(s);
}

static int count_row(void *user, const kda_db_record *r) {
  (void)r;
  ++*(int *)user;
  return 0;
}

static int list_count(kda_db *db, const kda_db_filter *f) {
  int n = 0;
  assert_int_equal(kda_db_list(db, f, count_row, &n), KDA_OK);
  return n;
}

static void db_open_rejects_null_out_and_close_accepts_null(void **state) {
  (void)state;
  assert_int_equal(kda_db_open(NULL, 0, NULL), KDA_ERROR_NULL_POINTER);
  kda_db_close(NULL);
}

static void db_memory_path_opens_empty_in_memory(void **state) {
  (void)state;
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(":memory:", 0, &db), KDA_OK);
  assert_string_equal(kda_db_mode(db), "memory");
  assert_int_equal(list_count(db, NULL), 0);
  assert_false(kda_db_file_unusable(db));
  kda_db_close(db);
}

static void db_path_rule_says_option_or_environment(void **state) {
  fixture *f = *state;
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(f->db, 0, &db), KDA_OK);
  assert_string_equal(kda_db_path_rule(db), "option");
  assert_string_equal(kda_db_path(db), f->db);
  kda_db_close(db);
  setenv("KDA_CACHE_DIR", f->dir, 1);
  assert_int_equal(kda_db_open(NULL, KDA_DB_READ_ONLY, &db), KDA_OK);
  assert_string_equal(kda_db_path_rule(db), "KDA_CACHE_DIR");
  assert_string_equal(kda_db_path(db), f->db);
  kda_db_close(db);
  unsetenv("KDA_CACHE_DIR");
}

static int first_record(void *user, const kda_db_record *r);

static void db_list_filters_by_gpu_name_prefix_shape_and_staleness(void **state) {
  fixture *f = *state;
  put_row(f->db, f, GPU_A, SPEC32, 1, f->v.lib_version, 10, KDA__PUT_REPLACE);
  put_row(f->db, f, GPU_A, SPEC8, 2, f->v.lib_version, 5, KDA__PUT_REPLACE);
  put_row(f->db, f, GPU_B, SPEC32, 1, "0.0.1", 9, KDA__PUT_REPLACE);
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(f->db, KDA_DB_READ_ONLY, &db), KDA_OK);
  assert_int_equal(list_count(db, NULL), 3);
  kda_db_filter flt = kda_db_filter_default();
  flt.gpu = "h100"; /* part of the name, any case */
  assert_int_equal(list_count(db, &flt), 2);
  flt.gpu = "sm90-pci2335"; /* key prefix */
  assert_int_equal(list_count(db, &flt), 1);
  flt = kda_db_filter_default();
  flt.heads = 8;
  assert_int_equal(list_count(db, &flt), 1);
  flt.heads = 0;
  flt.chunk = 64;
  assert_int_equal(list_count(db, &flt), 2);
  flt = kda_db_filter_default();
  flt.stale_only = 1;
  assert_int_equal(list_count(db, &flt), 1);
  flt = kda_db_filter_default();
  flt.older_than_s = 3600; /* rows are from 2023 */
  assert_int_equal(list_count(db, &flt), 3);
  flt.struct_size = 3;
  assert_int_equal(kda_db_list(db, &flt, count_row, &(int){0}), KDA_ERROR_BAD_OPTIONS);
  /* The kernel filter: the template, or the entry point the API names. */
  flt = kda_db_filter_default();
  flt.kernel = "gate_cumsum";
  assert_int_equal(list_count(db, &flt), 3);
  flt.kernel = "gate_chunk_cumsum";
  assert_int_equal(list_count(db, &flt), 3);
  flt.kernel = "chunk_local_cumsum";
  assert_int_equal(list_count(db, &flt), 0);
  flt.kernel = "gate";
  assert_int_equal(list_count(db, &flt), 0);
  kda_db_record r;
  assert_int_equal(kda_db_list(db, NULL, first_record, &r), KDA_OK);
  assert_string_equal(kda_db_record_entry(&r), "gate_chunk_cumsum");
  assert_string_equal(kda_db_record_entry(NULL), "");
  kda_db_close(db);
  /* A result from another NVRTC build is not stale: its config is used
   * whatever build compiles it (only cubins are per build). */
  sqlite3 *raw = NULL;
  assert_int_equal(sqlite3_open(f->db, &raw), SQLITE_OK);
  assert_int_equal(sqlite3_exec(raw, "UPDATE results SET nvrtc_version = '12.4 libnvrtc.so.12.4.99'",
                                NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(raw);
  assert_int_equal(kda_db_open(f->db, KDA_DB_READ_ONLY, &db), KDA_OK);
  flt = kda_db_filter_default();
  flt.stale_only = 1;
  assert_int_equal(list_count(db, &flt), 1); /* still only the other library version's */
  kda_db_close(db);
  int64_t lo = 0, hi = 0;
  kda_token_bucket_range(0, &lo, &hi);
  assert_true(lo == 1 && hi == 1023);
  kda_token_bucket_range(1, &lo, &hi);
  assert_true(lo == 1024 && hi == 4095);
  kda_token_bucket_range(4, &lo, &hi);
  assert_true(lo == 65536 && hi == -1);
  kda_token_bucket_range(99, &lo, NULL); /* clamped */
  assert_true(lo == 65536);
  assert_int_equal(kda_token_bucket(4095), 1);
  assert_int_equal(kda_token_bucket(4096), 2);
}

typedef struct trials_seen {
  char configs[8][32];
  int n;
} trials_seen;

static int see_trial(void *user, const kda_db_trial *t) {
  trials_seen *s = user;
  snprintf(s->configs[s->n++], sizeof s->configs[0], "%.31s", t->config);
  return 0;
}

static void db_show_sorts_trials_fastest_first_unmeasured_last(void **state) {
  fixture *f = *state;
  put_row(f->db, f, GPU_A, SPEC32, 1, f->v.lib_version, 10, KDA__PUT_REPLACE);
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(f->db, KDA_DB_READ_ONLY, &db), KDA_OK);
  kda_db_record r;
  trials_seen s = {0};
  assert_int_equal(kda_db_show(db, "1", &r, see_trial, &s), KDA_OK);
  assert_int_equal(s.n, 3);
  assert_string_equal(s.configs[0], "vec=4,tx=32,seg=8");
  assert_string_equal(s.configs[1], "vec=2,tx=64,seg=8");
  assert_string_equal(s.configs[2], "vec=8,tx=16,seg=8");
  assert_string_equal(r.gpu_name, "NVIDIA H100 80GB HBM3");
  assert_true(r.copy_bw_gbps == 3000);
  assert_int_equal(r.stale, 0);
  assert_int_equal(r.heads, 32);
  /* By key prefix too; unknown ids and too-short keys fail. */
  char prefix[8];
  snprintf(prefix, sizeof prefix, "%.6s", r.key);
  kda_db_record r2;
  assert_int_equal(kda_db_show(db, prefix, &r2, NULL, NULL), KDA_OK);
  assert_int_equal(r2.id, r.id);
  assert_int_equal(kda_db_show(db, "42", &r2, NULL, NULL), KDA_ERROR_INVALID_ARGUMENT);
  assert_int_equal(kda_db_show(db, "ab", &r2, NULL, NULL), KDA_ERROR_INVALID_ARGUMENT);
  kda_db_close(db);
}

static int first_record(void *user, const kda_db_record *r) {
  *(kda_db_record *)user = *r;
  return 1;
}

static void db_record_shape_parses_spec_flags(void **state) {
  fixture *f = *state;
  put_row(f->db, f, GPU_A, SPEC8, 4, "0.0.1", 3, KDA__PUT_REPLACE);
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(f->db, KDA_DB_READ_ONLY, &db), KDA_OK);
  kda_db_record r;
  assert_int_equal(kda_db_list(db, NULL, first_record, &r), KDA_OK);
  assert_true(r.stale & KDA_DB_STALE_LIB);
  assert_false(r.stale & KDA_DB_STALE_TEMPLATE);
  kda_kernel k;
  kda_gate_args a;
  int64_t tokens = 0;
  assert_int_equal(kda_db_record_shape(&r, &k, &a, &tokens), KDA_OK);
  assert_int_equal(k, KDA_KERNEL_GATE_CHUNK_CUMSUM);
  assert_int_equal(a.num_heads, 8);
  assert_int_equal(a.head_dim, 64);
  assert_int_equal(a.chunk_size, 32);
  assert_int_equal(a.g_dtype, KDA_DTYPE_F32);
  assert_int_equal(a.out_dtype, KDA_DTYPE_BF16);
  assert_int_equal(a.gate, KDA_GATE_LOWER_BOUND);
  assert_null(a.dt_bias);
  assert_non_null(a.A_log);
  assert_true(a.has_scale && a.reverse && a.num_seqs > 0);
  assert_int_equal(kda_token_bucket(tokens), 4);
  assert_null(a.chunk_plan);
  assert_null(a.cu_seqlens_host);
  /* The other varlen modes' rows ask kda_prewarm for their specialization. */
  char *v = strstr(r.spec, " varlen=1 ");
  assert_non_null(v);
  v[8] = '3';
  assert_int_equal(kda_db_record_shape(&r, &k, &a, &tokens), KDA_OK);
  assert_non_null(a.chunk_plan);
  assert_null(a.cu_seqlens_host);
  v[8] = '2';
  assert_int_equal(kda_db_record_shape(&r, &k, &a, &tokens), KDA_OK);
  assert_null(a.chunk_plan);
  assert_non_null(a.cu_seqlens_host);
  snprintf(r.spec, sizeof r.spec, "something else");
  assert_int_equal(kda_db_record_shape(&r, &k, &a, &tokens), KDA_ERROR_INVALID_ARGUMENT);
  kda_db_close(db);
}

static void export_to(const char *db_path, const char *out_path) {
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(db_path, KDA_DB_READ_ONLY, &db), KDA_OK);
  FILE *out = fopen(out_path, "w");
  assert_non_null(out);
  assert_int_equal(kda_db_export(db, NULL, KDA_DB_FORMAT_JSON, out), KDA_OK);
  fclose(out);
  kda_db_close(db);
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  static char buf[1 << 16];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = '\0';
  fclose(f);
  return strdup(buf);
}

/* text without its lines naming key (in place). */
static char *drop_lines_with(char *text, const char *key) {
  char *w = text;
  for (char *line = text; *line;) {
    char *end = strchr(line, '\n');
    size_t len = end ? (size_t)(end - line + 1) : strlen(line);
    if (memmem(line, len, key, strlen(key)) == NULL) {
      memmove(w, line, len);
      w += len;
    }
    line += len;
  }
  *w = '\0';
  return text;
}

/* Identical but for the source, which names the import (the first one: a
 * row imported again keeps it, so the second hop is identical whole). */
static void db_export_import_round_trip_is_identical_and_idempotent(void **state) {
  fixture *f = *state;
  put_row(f->db, f, GPU_A, SPEC32, 1, f->v.lib_version, 10.1, KDA__PUT_REPLACE);
  put_row(f->db, f, GPU_B, SPEC8, 2, f->v.lib_version, 0.1, KDA__PUT_REPLACE);
  export_to(f->db, f->json);
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(f->other, 0, &db), KDA_OK);
  int64_t imp = -1, kept = -1, skipped = -1;
  assert_int_equal(kda_db_import(db, f->json, &imp, &kept, &skipped), KDA_OK);
  assert_int_equal(imp, 2);
  assert_int_equal(kept, 0);
  assert_int_equal(skipped, 0);
  assert_int_equal(kda_db_import(db, f->json, &imp, &kept, &skipped), KDA_OK);
  assert_int_equal(imp, 0);
  assert_int_equal(kept, 2);
  kda_db_close(db);
  char second[160];
  snprintf(second, sizeof second, "%s/second.json", f->dir);
  export_to(f->other, second);
  char *a = slurp(f->json), *b = slurp(second);
  assert_non_null(strstr(b, "\"source\": \"import of export.json: unknown\""));
  assert_string_equal(drop_lines_with(a, "\"source\":"), drop_lines_with(b, "\"source\":"));
  assert_non_null(strstr(a, "\"median_us\": 10.1,"));
  free(a);
  free(b);
  /* A second hop: the row keeps its first import's source. */
  char third_db[160], third[160];
  snprintf(third_db, sizeof third_db, "%s/third.db", f->dir);
  snprintf(third, sizeof third, "%s/third.json", f->dir);
  assert_int_equal(kda_db_open(third_db, 0, &db), KDA_OK);
  assert_int_equal(kda_db_import(db, second, &imp, &kept, &skipped), KDA_OK);
  assert_int_equal(imp, 2);
  kda_db_close(db);
  export_to(third_db, third);
  b = slurp(second);
  char *c = slurp(third);
  assert_string_equal(b, c);
  free(b);
  free(c);
}

static void db_provenance_says_where_a_row_comes_from(void **state) {
  fixture *f = *state;
  put_row(f->db, f, GPU_A, SPEC32, 1, f->v.lib_version, 10.1, KDA__PUT_REPLACE);
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(f->db, KDA_DB_READ_ONLY, &db), KDA_OK);
  kda_db_record r;
  assert_int_equal(kda_db_list(db, NULL, first_record, &r), KDA_OK);
  kda_db_provenance p;
  memset(&p, 0, sizeof p);
  assert_int_equal(kda_db_provenance_get(db, &r, &p), KDA_ERROR_BAD_OPTIONS);
  p.struct_size = sizeof p;
  assert_int_equal(kda_db_provenance_get(NULL, &r, &p), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_db_provenance_get(db, &r, &p), KDA_OK);
  assert_string_equal(p.source, ""); /* put_row writes none: unknown */
  kda_db_record gone = r;
  snprintf(gone.spec, sizeof gone.spec, "no such spec");
  assert_int_equal(kda_db_provenance_get(db, &gone, &p), KDA_ERROR_INVALID_ARGUMENT);
  kda_db_close(db);
  /* An import says so, and keeps where the row was tuned. */
  export_to(f->db, f->json);
  assert_int_equal(kda_db_open(f->other, 0, &db), KDA_OK);
  assert_int_equal(kda_db_import(db, f->json, NULL, NULL, NULL), KDA_OK);
  assert_int_equal(kda_db_list(db, NULL, first_record, &r), KDA_OK);
  assert_int_equal(kda_db_provenance_get(db, &r, &p), KDA_OK);
  assert_string_equal(p.source, "import of export.json: unknown");
  kda_db_close(db);
}

/* 1 if s is valid UTF-8 (no character cut short). */
static int valid_utf8(const unsigned char *s) {
  while (*s) {
    int more = *s < 0x80 ? 0 : (*s & 0xE0) == 0xC0 ? 1 : (*s & 0xF0) == 0xE0 ? 2
               : (*s & 0xF8) == 0xF0 ? 3 : -1;
    if (more < 0) return 0;
    for (s++; more > 0; more--, s++)
      if ((*s & 0xC0) != 0x80) return 0;
  }
  return 1;
}

/* A file whose name puts a two-byte character across the source's cut
 * (60 bytes of it): the row's source, and so every export, stays UTF-8. */
static void db_import_source_is_cut_at_a_character(void **state) {
  fixture *f = *state;
  put_row(f->db, f, GPU_A, SPEC32, 1, f->v.lib_version, 10.1, KDA__PUT_REPLACE);
  char name[200];
  snprintf(name, sizeof name, "%s/fffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
           "\xc3\xa9x.json", f->dir);
  export_to(f->db, name);
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(f->other, 0, &db), KDA_OK);
  assert_int_equal(kda_db_import(db, name, NULL, NULL, NULL), KDA_OK);
  kda_db_record r;
  assert_int_equal(kda_db_list(db, NULL, first_record, &r), KDA_OK);
  kda_db_provenance p;
  memset(&p, 0, sizeof p);
  p.struct_size = sizeof p;
  assert_int_equal(kda_db_provenance_get(db, &r, &p), KDA_OK);
  kda_db_close(db);
  assert_non_null(strstr(p.source, "import of fffff"));
  assert_true(valid_utf8((const unsigned char *)p.source));
}

static void db_import_keeps_the_faster_row(void **state) {
  fixture *f = *state;
  put_row(f->db, f, GPU_A, SPEC32, 1, f->v.lib_version, 10, KDA__PUT_REPLACE);
  export_to(f->db, f->json);
  put_row(f->other, f, GPU_A, SPEC32, 1, f->v.lib_version, 8, KDA__PUT_REPLACE);
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(f->other, 0, &db), KDA_OK);
  int64_t imp = 0, kept = 0;
  assert_int_equal(kda_db_import(db, f->json, &imp, &kept, NULL), KDA_OK);
  assert_int_equal(imp, 0);
  assert_int_equal(kept, 1);
  kda_db_record r;
  assert_int_equal(kda_db_list(db, NULL, first_record, &r), KDA_OK);
  assert_true(r.median_us == 8);
  kda_db_close(db);
  /* The other way round the faster import wins. */
  assert_int_equal(kda_db_open(f->db, 0, &db), KDA_OK);
  export_to(f->other, f->json);
  assert_int_equal(kda_db_import(db, f->json, &imp, &kept, NULL), KDA_OK);
  assert_int_equal(imp, 1);
  assert_int_equal(kda_db_list(db, NULL, first_record, &r), KDA_OK);
  assert_true(r.median_us == 8);
  kda_db_close(db);
}

/* Switches LC_NUMERIC to a locale whose decimal point is a comma, as a
 * server that calls setlocale(LC_ALL, "") on a German host has it. Made with
 * localedef into dir when none is installed (tools/install_deps.sh installs
 * the locale sources, the `locales` package). */
static void write_text(const char *path, const char *text);

static void use_a_comma_locale(const char *dir) {
  static const char *const names[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (setlocale(LC_NUMERIC, names[i]) != NULL) return;
  char cmd[256];
  snprintf(cmd, sizeof cmd, "localedef -i de_DE -f UTF-8 '%s/de_DE.UTF-8' > /dev/null 2>&1", dir);
  if (system(cmd) == 0 && setenv("LOCPATH", dir, 1) == 0 &&
      setlocale(LC_NUMERIC, "de_DE.UTF-8") != NULL)
    return;
  fail_msg("no locale with a decimal comma could be set or made (install the `locales` "
           "package: tools/install_deps.sh does)");
}

static void db_export_and_import_write_and_read_numbers_whatever_the_locale(void **state) {
  fixture *f = *state;
  put_row(f->db, f, GPU_A, SPEC32, 1, f->v.lib_version, 10.25, KDA__PUT_REPLACE);
  use_a_comma_locale(f->dir);
  char probe[16];
  snprintf(probe, sizeof probe, "%.2f", 10.25);
  assert_string_equal(probe, "10,25"); /* the locale is in force: the test can fail */
  export_to(f->db, f->json);
  char *text = slurp(f->json);
  assert_non_null(strstr(text, "\"median_us\": 10.25,"));
  assert_null(strstr(text, "10,25"));
  free(text);
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(f->db, KDA_DB_READ_ONLY, &db), KDA_OK);
  char csv[160];
  snprintf(csv, sizeof csv, "%s/export.csv", f->dir);
  FILE *out = fopen(csv, "w");
  assert_non_null(out);
  assert_int_equal(kda_db_export(db, NULL, KDA_DB_FORMAT_CSV, out), KDA_OK);
  fclose(out);
  kda_db_close(db);
  text = slurp(csv);
  assert_non_null(strstr(text, ",10.25,"));
  free(text);
  /* Read back under the comma locale: 10.25, not 10. */
  assert_int_equal(kda_db_open(f->other, 0, &db), KDA_OK);
  int64_t imp = 0;
  assert_int_equal(kda_db_import(db, f->json, &imp, NULL, NULL), KDA_OK);
  assert_int_equal(imp, 1);
  kda_db_record r;
  assert_int_equal(kda_db_list(db, NULL, first_record, &r), KDA_OK);
  assert_true(r.median_us == 10.25);
  kda_db_close(db);
}

static void db_import_reads_json_numbers_only(void **state) {
  fixture *f = *state;
  put_row(f->db, f, GPU_A, SPEC32, 1, f->v.lib_version, 10.25, KDA__PUT_REPLACE);
  export_to(f->db, f->json);
  char *good = slurp(f->json);
  /* strtod alone would read each of these as a number. */
  static const char *const bad[] = {"0x1p3", "inf", "-nan", "1.", ".5", "01", "1e", "+1"};
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(f->other, 0, &db), KDA_OK);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char *at = strstr(good, "10.25");
    assert_non_null(at);
    char *text = NULL;
    assert_true(asprintf(&text, "%.*s%s%s", (int)(at - good), good, bad[i], at + 5) > 0);
    write_text(f->json, text);
    free(text);
    int64_t imp = -1;
    assert_int_equal(kda_db_import(db, f->json, &imp, NULL, NULL), KDA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(kda_last_error(), "line "));
  }
  kda_db_close(db);
  free(good);
}

static void write_text(const char *path, const char *text) {
  FILE *out = fopen(path, "w");
  assert_non_null(out);
  fputs(text, out);
  fclose(out);
}

static void db_import_skips_unverified_and_rejects_bad_files(void **state) {
  fixture *f = *state;
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(f->db, 0, &db), KDA_OK);
  /* The winner's only trial was rejected: not verified. */
  write_text(f->json,
             "{\"format\": \"kda-tune-export\", \"version\": 1, \"results\": [{\"gpu_key\": \"g\","
             " \"kernel\": \"gate_cumsum\", \"spec\": \"s\", \"bucket\": 0, \"template_hash\": \"t\","
             " \"space_hash\": \"h\", \"config\": \"c\", \"median_us\": 1.5, \"trials\": [{\"config\":"
             " \"c\", \"status\": \"wrong_result\"}]}]}");
  int64_t imp = 0, kept = 0, skipped = 0;
  assert_int_equal(kda_db_import(db, f->json, &imp, &kept, &skipped), KDA_OK);
  assert_int_equal(skipped, 1);
  assert_int_equal(imp, 0);
  write_text(f->json, "{\"format\": \"something\", \"version\": 1, \"results\": []}");
  assert_int_equal(kda_db_import(db, f->json, NULL, NULL, NULL), KDA_ERROR_INVALID_ARGUMENT);
  write_text(f->json, "{\"format\": \"kda-tune-export\",\n \"results\": [1,}");
  assert_int_equal(kda_db_import(db, f->json, NULL, NULL, NULL), KDA_ERROR_INVALID_ARGUMENT);
  assert_non_null(strstr(kda_last_error(), "line 2"));
  kda_db_close(db);
  assert_int_equal(kda_db_open(f->db, KDA_DB_READ_ONLY, &db), KDA_OK);
  assert_int_equal(kda_db_import(db, f->json, NULL, NULL, NULL), KDA_ERROR_READ_ONLY);
  kda_db_close(db);
}

static void db_purge_dry_run_lists_and_real_run_deletes(void **state) {
  fixture *f = *state;
  put_row(f->db, f, GPU_A, SPEC32, 1, f->v.lib_version, 10, KDA__PUT_REPLACE);
  put_row(f->db, f, GPU_B, SPEC32, 1, "0.0.1", 9, KDA__PUT_REPLACE);
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(f->db, 0, &db), KDA_OK);
  kda_db_filter flt = kda_db_filter_default();
  flt.stale_only = 1;
  int64_t results = -1, cubins = -1;
  assert_int_equal(kda_db_purge(db, &flt, KDA_DB_PURGE_RESULTS, 1, NULL, NULL, &results, &cubins),
                   KDA_OK);
  assert_int_equal(results, 1);
  assert_int_equal(list_count(db, NULL), 2);
  assert_int_equal(kda_db_purge(db, &flt, KDA_DB_PURGE_RESULTS, 0, NULL, NULL, &results, NULL),
                   KDA_OK);
  assert_int_equal(results, 1);
  assert_int_equal(list_count(db, NULL), 1);
  kda_db_stats st;
  assert_int_equal(kda_db_stats_get(db, &st, NULL, NULL), KDA_OK);
  assert_int_equal(st.results, 1);
  assert_int_equal(st.trials, 3);
  assert_int_equal(st.stale_results, 0);
  kda_db_close(db);
  assert_int_equal(kda_db_open(f->db, KDA_DB_READ_ONLY, &db), KDA_OK);
  assert_int_equal(kda_db_purge(db, NULL, KDA_DB_PURGE_RESULTS, 0, NULL, NULL, NULL, NULL),
                   KDA_ERROR_READ_ONLY);
  assert_int_equal(list_count(db, NULL), 1);
  kda_db_close(db);
}

static void db_cubin_checks_find_a_tampered_hash_without_a_gpu(void **state) {
  fixture *f = *state;
  kda_gate_args shape = kda_gate_args_default();
  shape.num_heads = 4;
  shape.head_dim = 64;
  shape.batch = 1;
  shape.seq_len = 256;
  shape.gate = KDA_GATE_NONE;
  assert_int_equal(kda_compile_offline_store(KDA_KERNEL_CHUNK_LOCAL_CUMSUM, &shape, 90, f->db, NULL),
                   KDA_OK);
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(f->db, 0, &db), KDA_OK);
  int32_t present = 0;
  assert_int_equal(kda_db_has_offline_cubin(db, KDA_KERNEL_CHUNK_LOCAL_CUMSUM, &shape, 90, &present),
                   KDA_OK);
  assert_int_equal(present, 1);
  assert_int_equal(kda_db_has_offline_cubin(db, KDA_KERNEL_CHUNK_LOCAL_CUMSUM, &shape, 80, &present),
                   KDA_OK);
  assert_int_equal(present, 0);
  int64_t checked = 0, bad = -1;
  assert_int_equal(kda_db_check_cubins(db, 0, NULL, NULL, &checked, &bad), KDA_OK);
  assert_int_equal(checked, 1);
  assert_int_equal(bad, 0);
  kda_db_close(db);
  sqlite3 *raw = NULL;
  assert_int_equal(sqlite3_open(f->db, &raw), SQLITE_OK);
  assert_int_equal(sqlite3_exec(raw, "UPDATE cubins SET sha256 = 'beef'", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(raw);
  assert_int_equal(kda_db_open(f->db, 0, &db), KDA_OK);
  assert_int_equal(kda_db_check_cubins(db, 1, NULL, NULL, &checked, &bad), KDA_OK);
  assert_int_equal(bad, 1);
  kda_db_stats st;
  assert_int_equal(kda_db_stats_get(db, &st, NULL, NULL), KDA_OK);
  assert_int_equal(st.cubins, 0); /* dropped */
  kda_db_close(db);
}

/* Each callback counts its calls; returning nonzero from the first one is
 * the caller asking to stop. */
typedef struct stopper {
  int calls;
} stopper;

static int stop_record(void *user, const kda_db_record *r) {
  (void)r;
  ((stopper *)user)->calls++;
  return 1;
}

static int stop_trial(void *user, const kda_db_trial *t) {
  (void)t;
  ((stopper *)user)->calls++;
  return 1;
}

static int stop_count(void *user, const char *gpu_key, const char *gpu_name, const char *kernel,
                      int64_t results, int64_t stale) {
  (void)gpu_key, (void)gpu_name, (void)kernel, (void)results, (void)stale;
  ((stopper *)user)->calls++;
  return 1;
}

static int stop_purge(void *user, const kda_db_record *result, const kda_db_cubin *cubin) {
  (void)result, (void)cubin;
  ((stopper *)user)->calls++;
  return -7; /* any nonzero value */
}

static int stop_cubin(void *user, const kda_db_cubin *cubin, int32_t ok, const char *problem) {
  (void)cubin, (void)ok, (void)problem;
  ((stopper *)user)->calls++;
  return 1;
}

static void store_two_offline_cubins(const char *path) {
  kda_gate_args shape = kda_gate_args_default();
  shape.num_heads = 4;
  shape.head_dim = 64;
  shape.batch = 1;
  shape.seq_len = 256;
  shape.gate = KDA_GATE_NONE;
  assert_int_equal(kda_compile_offline_store(KDA_KERNEL_CHUNK_LOCAL_CUMSUM, &shape, 90, path, NULL),
                   KDA_OK);
  shape.head_dim = 128;
  assert_int_equal(kda_compile_offline_store(KDA_KERNEL_CHUNK_LOCAL_CUMSUM, &shape, 90, path, NULL),
                   KDA_OK);
}

/* kda_db.h: "a callback returning nonzero stops the iteration (the call
 * still returns KDA_OK)", with what each call does after the stop. */
static void db_callbacks_returning_nonzero_stop_the_iteration(void **state) {
  fixture *f = *state;
  /* Two GPU models, so every iteration has at least two items. */
  put_row(f->db, f, GPU_A, SPEC32, 1, f->v.lib_version, 10, KDA__PUT_REPLACE);
  put_row(f->db, f, GPU_B, SPEC32, 1, "0.0.1", 9, KDA__PUT_REPLACE);
  put_row(f->db, f, GPU_B, SPEC8, 2, "0.0.1", 8, KDA__PUT_REPLACE);
  store_two_offline_cubins(f->db);
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(f->db, 0, &db), KDA_OK);
  assert_int_equal(list_count(db, NULL), 3);

  stopper s = {0};
  assert_int_equal(kda_db_list(db, NULL, stop_record, &s), KDA_OK);
  assert_int_equal(s.calls, 1);

  s.calls = 0;
  kda_db_record r;
  assert_int_equal(kda_db_show(db, "1", &r, stop_trial, &s), KDA_OK);
  assert_int_equal(s.calls, 1); /* of 3 trials */
  assert_int_equal(r.id, 1);    /* the record is still whole */

  s.calls = 0;
  kda_db_stats st;
  assert_int_equal(kda_db_stats_get(db, &st, stop_count, &s), KDA_OK);
  assert_int_equal(s.calls, 1); /* of 2 (GPU, kernel) groups */
  assert_int_equal(st.results, 3); /* the totals still count every row */
  assert_int_equal(st.stale_results, 2);
  assert_int_equal(st.cubins, 2);

  /* Cubin checks stop checking: the counts cover what was checked. */
  s.calls = 0;
  int64_t checked = -1, bad = -1;
  assert_int_equal(kda_db_check_cubins(db, 0, stop_cubin, &s, &checked, &bad), KDA_OK);
  assert_int_equal(s.calls, 1);
  assert_int_equal(checked, 1);
  assert_int_equal(bad, 0);

  /* A purge stops reporting, not purging: a dry run still counts, a real
   * run still deletes, every row chosen. */
  kda_db_filter stale = kda_db_filter_default();
  stale.stale_only = 1;
  int64_t results = -1, cubins = -1;
  s.calls = 0;
  assert_int_equal(kda_db_purge(db, &stale, KDA_DB_PURGE_RESULTS, 1, stop_purge, &s, &results,
                                &cubins),
                   KDA_OK);
  assert_int_equal(s.calls, 1);
  assert_int_equal(results, 2);
  assert_int_equal(list_count(db, NULL), 3);
  s.calls = 0;
  assert_int_equal(kda_db_purge(db, NULL, KDA_DB_PURGE_CUBINS, 0, stop_purge, &s, &results,
                                &cubins),
                   KDA_OK);
  assert_int_equal(s.calls, 1);
  assert_int_equal(cubins, 2);
  assert_int_equal(kda_db_stats_get(db, &st, NULL, NULL), KDA_OK);
  assert_int_equal(st.cubins, 0);
  s.calls = 0;
  assert_int_equal(kda_db_purge(db, &stale, KDA_DB_PURGE_RESULTS, 0, stop_purge, &s, &results,
                                NULL),
                   KDA_OK);
  assert_int_equal(s.calls, 1);
  assert_int_equal(results, 2);
  assert_int_equal(list_count(db, NULL), 1);
  kda_db_close(db);
}

static void db_corrupt_file_is_reported_read_only_and_moved_aside_writable(void **state) {
  fixture *f = *state;
  char junk[4096];
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (char)(i * 7 + 3);
  FILE *out = fopen(f->db, "wb");
  fwrite(junk, 1, sizeof junk, out);
  fclose(out);
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(f->db, KDA_DB_READ_ONLY | KDA_DB_VERIFY, &db), KDA_OK);
  assert_true(kda_db_file_unusable(db));
  kda_db_close(db);
  assert_int_equal(kda_db_open(f->db, KDA_DB_VERIFY, &db), KDA_OK);
  assert_false(kda_db_file_unusable(db));
  assert_string_equal(kda_db_mode(db), "read-write");
  const char *w = kda_db_pop_warning(db);
  assert_non_null(w);
  assert_non_null(strstr(w, "moved it to"));
  kda_db_close(db);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(db_open_rejects_null_out_and_close_accepts_null),
      cmocka_unit_test(db_memory_path_opens_empty_in_memory),
      cmocka_unit_test_setup_teardown(db_path_rule_says_option_or_environment, setup, teardown),
      cmocka_unit_test_setup_teardown(db_list_filters_by_gpu_name_prefix_shape_and_staleness, setup, teardown),
      cmocka_unit_test_setup_teardown(db_show_sorts_trials_fastest_first_unmeasured_last, setup, teardown),
      cmocka_unit_test_setup_teardown(db_record_shape_parses_spec_flags, setup, teardown),
      cmocka_unit_test_setup_teardown(db_export_import_round_trip_is_identical_and_idempotent, setup, teardown),
      cmocka_unit_test_setup_teardown(db_import_keeps_the_faster_row, setup, teardown),
      cmocka_unit_test_setup_teardown(db_provenance_says_where_a_row_comes_from, setup, teardown),
      cmocka_unit_test_setup_teardown(db_import_source_is_cut_at_a_character, setup, teardown),
      cmocka_unit_test_setup_teardown(db_export_and_import_write_and_read_numbers_whatever_the_locale,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(db_import_reads_json_numbers_only, setup, teardown),
      cmocka_unit_test_setup_teardown(db_import_skips_unverified_and_rejects_bad_files, setup, teardown),
      cmocka_unit_test_setup_teardown(db_purge_dry_run_lists_and_real_run_deletes, setup, teardown),
      cmocka_unit_test_setup_teardown(db_cubin_checks_find_a_tampered_hash_without_a_gpu, setup, teardown),
      cmocka_unit_test_setup_teardown(db_callbacks_returning_nonzero_stop_the_iteration, setup, teardown),
      cmocka_unit_test_setup_teardown(db_corrupt_file_is_reported_read_only_and_moved_aside_writable, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
