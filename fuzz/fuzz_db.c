/* A database file of any content, opened and queried through the public
 * kda_db API (read-only, then writable) and through the store the contexts
 * use: every call gives a status, never a crash. Seeds are valid databases
 * written by the store (fuzz/corpus/fuzz_db), so mutations reach the rows. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_tmp.h"
#include "kda/kda_db.h"
#include "store.h"

/* Keys of the rows in the seed databases (tests/cli/make_test_db.c). */
#define SEED_GPU "sm90-pci2330-sms132-l2_52428800"
#define SEED_SPEC                                                                        \
  "gate_cumsum in=bf16 out=f32 H=32 K=128 chunk=64 cumsum=1 gate=1 bias=1 alog=1 scale=0 " \
  "reverse=0 varlen=0 idx=i32 veccap=8"
#define SEED_SPACE "5ace5ace5ace5ace5ace5ace5ace5ace5ace5ace5ace5ace5ace5ace5ace5ace"

static kda_db_versions g_cur;

typedef struct seen {
  kda_db_record first;
  size_t n;
} seen;

static int on_record(void *user, const kda_db_record *r) {
  seen *s = user;
  if (s->n++ == 0) s->first = *r;
  kda_kernel k;
  kda_gate_args shape;
  int64_t tokens;
  kda_db_record_shape(r, &k, &shape, &tokens);
  return 0;
}

static int on_trial(void *user, const kda_db_trial *t) {
  (void)user;
  return t->status == NULL; /* must never be NULL */
}

static int on_count(void *user, const char *gpu_key, const char *gpu_name, const char *kernel,
                    int64_t results, int64_t stale) {
  (void)user, (void)results, (void)stale;
  return gpu_key == NULL || gpu_name == NULL || kernel == NULL ? (abort(), 1) : 0;
}

static int on_cubin(void *user, const kda_db_cubin *c, int32_t ok, const char *problem) {
  (void)user, (void)c;
  if (!ok && problem == NULL) abort();
  return 0;
}

static void query(kda_db *db, int writable) {
  kda_db_pop_warning(db);
  kda_db_file_unusable(db);
  seen s;
  memset(&s, 0, sizeof s);
  kda_db_list(db, NULL, on_record, &s);
  kda_db_filter f = kda_db_filter_default();
  f.gpu = "H100";
  f.stale_only = 1;
  f.older_than_s = 1;
  kda_db_list(db, &f, on_record, &s);
  kda_db_record r;
  kda_db_show(db, "1", &r, on_trial, NULL);
  if (s.n > 0) kda_db_show(db, s.first.key, &r, on_trial, NULL);
  kda_db_stats st;
  kda_db_stats_get(db, &st, on_count, NULL);
  FILE *null = fopen("/dev/null", "w");
  if (null != NULL) {
    kda_db_export(db, NULL, KDA_DB_FORMAT_JSON, null);
    kda_db_export(db, NULL, KDA_DB_FORMAT_CSV, null);
    fclose(null);
  }
  int64_t checked, bad, results, cubins;
  kda_db_check_cubins(db, writable, on_cubin, NULL, &checked, &bad);
  kda_db_purge(db, NULL, KDA_DB_PURGE_RESULTS | KDA_DB_PURGE_CUBINS, 1, NULL, NULL, &results,
               &cubins);
  if (writable) {
    f = kda_db_filter_default();
    f.stale_only = 1;
    kda_db_purge(db, &f, KDA_DB_PURGE_RESULTS | KDA_DB_PURGE_CUBINS, 0, NULL, NULL, &results,
                 &cubins);
  }
  kda_db_pop_warning(db);
}

static int on_result(void *user, const kda__store_key *k, const kda__store_record *r) {
  (void)user, (void)k, (void)r;
  return 0;
}

static int on_store_trial(void *user, const kda__store_trial *t) {
  (void)user, (void)t;
  return 0;
}

/* What a context does with the file: lookups, a lease, a put. */
static void store_calls(const char *path) {
  kda__store *s = NULL;
  if (kda__store_open(path, 0, &s) != KDA_OK) abort(); /* never fails for the file */
  kda__store_key key = {SEED_GPU, "gate_cumsum", SEED_SPEC, 1, g_cur.gate_cumsum_hash, SEED_SPACE};
  int found = 0;
  kda__store_record rec;
  if (kda__store_lookup_result(s, &key, &found, &rec) == KDA_OK && found)
    kda__store_list_trials(s, &rec, on_store_trial, NULL);
  kda__store_list_results(s, NULL, NULL, on_result, NULL);
  kda__cubin_key ck = {90, g_cur.nvrtc_version, "", g_cur.gate_cumsum_hash, SEED_SPEC,
                       "vec=4,tx=32,seg=8"};
  void *blob = NULL;
  size_t size = 0;
  int tampered = 0;
  if (kda__store_lookup_cubin(s, &ck, &found, &blob, &size, &tampered) == KDA_OK) free(blob);
  kda__lease lease;
  if (kda__store_lease_acquire(s, "fuzz", NULL, 5.0, &lease) == KDA_OK && lease.acquired)
    kda__store_lease_release(s, "fuzz", NULL, NULL);
  memset(&rec, 0, sizeof rec);
  snprintf(rec.config, sizeof rec.config, "vec=1,tx=32,seg=1");
  rec.median_us = 1.0;
  kda__store_trial t = {"vec=1,tx=32,seg=1", 0, 1.0, 1.0, 1.0, KDA__TRIAL_OK, NULL};
  kda__store_put_result(s, &key, &rec, &t, 1, KDA__PUT_FASTER, NULL);
  static const unsigned char fake[64] = {0x7f, 'E', 'L', 'F'};
  kda__store_put_cubin(s, &ck, fake, sizeof fake, 1.0);
  kda__store_stats stats;
  kda__store_get_stats(s, &stats);
  kda__store_pop_warning(s);
  kda__store_close(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (g_cur.struct_size == 0 && kda_db_current(&g_cur) != KDA_OK) abort();
  const char *p = fuzz_write("t.db", data, size);
  char path[4096];
  snprintf(path, sizeof path, "%s", p);
  kda_db *db = NULL;
  if (kda_db_open(path, KDA_DB_READ_ONLY, &db) != KDA_OK) abort();
  query(db, 0);
  kda_db_close(db);
  if (kda_db_open(path, KDA_DB_READ_ONLY | KDA_DB_VERIFY, &db) != KDA_OK) abort();
  query(db, 0);
  kda_db_close(db);
  /* Writable: a damaged file is moved aside and replaced. Rewrite the
   * input first so the store sees the same bytes. */
  fuzz_write("t.db", data, size);
  if (kda_db_open(path, 0, &db) != KDA_OK) abort();
  query(db, 1);
  kda_db_close(db);
  fuzz_write("t.db", data, size);
  store_calls(path);
  fuzz_clean();
  return 0;
}
