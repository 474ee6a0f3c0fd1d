/* The calls kda.h and kda_db.h say may be made from several threads, made
 * from 16 threads released together by a barrier, many times each, against
 * the stand-in driver (tests/fake_cuda, loaded via KDA_LIBCUDA by ctest):
 * kernel calls go through the real launch path (module cache, NVRTC,
 * tuning database), the stand-in counts launches instead of running them.
 * Every result is compared with the same call made on one thread; counters
 * must add up to the calls made. Built with KDA_TSAN=ON this is also the
 * ThreadSanitizer check of those calls. cmocka's asserts are not
 * thread-safe: workers only record (NOTE), the main thread checks.
 *
 * A few tests reach internals (the static library), as the stand-in driver
 * cannot produce a tuning result: a winner row is written straight into the
 * store under the key the context computes, a database is made to look
 * read-only (tests run as root, where chmod stops nothing) or full. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "context_internal.h"
#include "gate_args.h"
#include "kda/kda.h"
#include "kda/kda_db.h"
#include "stand_in_call.h"
#include "store.h"
#include "tuner.h"
#include "tuner_rows.h"

#define THREADS 16

static long (*fake_launches)(void);
static long (*fake_live_allocations)(void);
static long (*fake_loaded_modules)(void);
static long (*fake_overlap_launches)(void);

/* ------------------------------------------------------------------------ */
/* Threads                                                                   */
/* ------------------------------------------------------------------------ */

/* What a worker saw go wrong: a count and the first description. */
typedef struct notes {
  int bad;
  char why[320];
} notes;

#define NOTE(n, cond, ...)                                              \
  do {                                                                  \
    if (!(cond) && (n)->bad++ == 0) snprintf((n)->why, sizeof (n)->why, __VA_ARGS__); \
  } while (0)

static pthread_barrier_t g_start;

/* Runs fn on n threads, item i of items (each size bytes) for thread i;
 * fn calls start_together() first. Returns when all have ended. */
static void run_threads(int n, void *(*fn)(void *), void *items, size_t size) {
  pthread_t th[THREADS];
  assert_true(n <= THREADS);
  assert_int_equal(pthread_barrier_init(&g_start, NULL, (unsigned)n), 0);
  for (int i = 0; i < n; ++i)
    assert_int_equal(pthread_create(&th[i], NULL, fn, (char *)items + (size_t)i * size), 0);
  for (int i = 0; i < n; ++i) pthread_join(th[i], NULL);
  pthread_barrier_destroy(&g_start);
}

static void start_together(void) { pthread_barrier_wait(&g_start); }

/* Sums the workers' notes (the first of which notes is at items + offset)
 * and prints the first few descriptions. */
static int sum_notes(const void *items, size_t size, size_t offset, int n) {
  int total = 0;
  for (int i = 0; i < n; ++i) {
    const notes *w = (const notes *)(const void *)((const char *)items + (size_t)i * size + offset);
    if (w->bad && total < 5) printf("thread %d: %d wrong, first: %s\n", i, w->bad, w->why);
    total += w->bad;
  }
  return total;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A temporary folder with a database path in it. */
typedef struct tmpdb {
  char dir[64], path[128];
} tmpdb;

static void tmpdb_make(tmpdb *t) {
  snprintf(t->dir, sizeof t->dir, "/tmp/kda_concurrent_XXXXXX");
  assert_non_null(mkdtemp(t->dir));
  snprintf(t->path, sizeof t->path, "%s/tune.db", t->dir);
}

static void tmpdb_remove(tmpdb *t) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->dir);
  assert_int_equal(system(cmd), 0);
}

/* Log callback counting warnings whose text contains `match` (any warning
 * when match is NULL); called from whichever thread logs. */
typedef struct log_count {
  const char *match;
  atomic_int warnings;
  atomic_int matched;
} log_count;

static void count_log(void *user, kda_log_level level, const char *message) {
  log_count *c = user;
  if (level > KDA_LOG_WARN) return;
  atomic_fetch_add(&c->warnings, 1);
  if (c->match == NULL || strstr(message, c->match) != NULL) atomic_fetch_add(&c->matched, 1);
}

/* ------------------------------------------------------------------------ */
/* Field-by-field comparisons (padding bytes of returned structs are not    */
/* part of their value)                                                      */
/* ------------------------------------------------------------------------ */

static int same_options(const kda_options *a, const kda_options *b) {
  return a->struct_size == b->struct_size && a->device == b->device &&
         a->kernel_dir == b->kernel_dir && a->tune_mode == b->tune_mode &&
         a->db_path == b->db_path && a->tune_budget_ms == b->tune_budget_ms &&
         a->log_fn == b->log_fn && a->log_user == b->log_user && a->log_level == b->log_level;
}

static int same_args(const kda_gate_args *a, const kda_gate_args *b) {
  return a->struct_size == b->struct_size && a->g == b->g && a->g_dtype == b->g_dtype &&
         a->out == b->out && a->out_dtype == b->out_dtype && a->batch == b->batch &&
         a->seq_len == b->seq_len && a->num_heads == b->num_heads && a->head_dim == b->head_dim &&
         a->chunk_size == b->chunk_size && a->gate == b->gate && a->A_log == b->A_log &&
         a->dt_bias == b->dt_bias && a->lower_bound == b->lower_bound && a->scale == b->scale &&
         a->has_scale == b->has_scale && a->reverse == b->reverse &&
         a->cu_seqlens == b->cu_seqlens && a->cu_seqlens_dtype == b->cu_seqlens_dtype &&
         a->num_seqs == b->num_seqs && a->chunk_indices == b->chunk_indices &&
         a->num_chunks == b->num_chunks && a->num_chunks_device == b->num_chunks_device;
}

static int same_filter(const kda_db_filter *a, const kda_db_filter *b) {
  return a->struct_size == b->struct_size && a->gpu == b->gpu && a->kernel == b->kernel &&
         a->heads == b->heads && a->head_dim == b->head_dim && a->chunk == b->chunk &&
         a->bucket == b->bucket && a->stale_only == b->stale_only &&
         a->older_than_s == b->older_than_s;
}

static int same_versions(const kda_db_versions *a, const kda_db_versions *b) {
  return a->struct_size == b->struct_size && strcmp(a->lib_version, b->lib_version) == 0 &&
         strcmp(a->nvrtc_version, b->nvrtc_version) == 0 &&
         a->schema_version == b->schema_version &&
         strcmp(a->gate_cumsum_hash, b->gate_cumsum_hash) == 0 &&
         strcmp(a->chunk_indices_hash, b->chunk_indices_hash) == 0;
}

/* ------------------------------------------------------------------------ */
/* Pure calls of kda.h                                                       */
/* ------------------------------------------------------------------------ */

enum { STATUS_LO = -2, STATUS_HI = 24, HOST_CASES = 8, PURE_ROUNDS = 300 };

/* One host chunk-table case and what one thread computed for it. */
typedef struct host_case {
  kda_dtype dt;
  int32_t chunk;
  int64_t num_seqs, total, capacity;
  void *cu; /* num_seqs + 1 entries of dt */
  kda_status status;
  int64_t rows;
  int32_t *table; /* capacity x 2 */
} host_case;

typedef struct pure_ref {
  char version[32];
  uint32_t version_number;
  const char *strings[STATUS_HI - STATUS_LO + 1], *names[STATUS_HI - STATUS_LO + 1];
  kda_options options;
  kda_gate_args args;
  int64_t capacity[4][6][5];
  size_t workspace[4][6][5];
  host_case cases[HOST_CASES];
  /* Failing host builds: their statuses and this thread's messages. */
  kda_status bad_seqlens, too_small;
  char bad_seqlens_error[256], too_small_error[256];
} pure_ref;

static const int64_t g_tokens[4] = {-1, 1, 4097, INT64_C(1) << 40};
static const int64_t g_seqs[6] = {-3, 0, 1, 7, 64, INT64_C(1) << 33};
static const int32_t g_chunks[5] = {8, 16, 48, 64, 256};

/* Random sequence lengths (some empty) for each case. */
static void host_cases_make(host_case *cases) {
  uint64_t s = 0x5eed;
  for (int c = 0; c < HOST_CASES; ++c) {
    host_case *h = &cases[c];
    memset(h, 0, sizeof *h);
    h->dt = c % 2 ? KDA_DTYPE_I64 : KDA_DTYPE_I32;
    h->chunk = 16 << (c % 5);
    h->num_seqs = 1 + (int64_t)((s = s * 6364136223846793005ull + 1442695040888963407ull) >> 58);
    h->cu = calloc((size_t)h->num_seqs + 1, 8);
    int64_t at = 0;
    for (int64_t i = 0; i <= h->num_seqs; ++i) {
      if (h->dt == KDA_DTYPE_I64) ((int64_t *)h->cu)[i] = at;
      else ((int32_t *)h->cu)[i] = (int32_t)at;
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      at += (s >> 61) == 0 ? 0 : (int64_t)((s >> 33) % 3000); /* one in eight empty */
    }
    h->total = h->dt == KDA_DTYPE_I64 ? ((int64_t *)h->cu)[h->num_seqs]
                                      : ((int32_t *)h->cu)[h->num_seqs];
    h->capacity = kda_chunk_indices_capacity(h->total, h->num_seqs, h->chunk);
    h->table = malloc((size_t)h->capacity * 8);
  }
}

static void host_cases_free(host_case *cases) {
  for (int c = 0; c < HOST_CASES; ++c) {
    free(cases[c].cu);
    free(cases[c].table);
  }
}

/* Everything the pure calls return, computed on the calling thread. */
static void pure_compute(pure_ref *r, const pure_ref *cases_from) {
  snprintf(r->version, sizeof r->version, "%s", kda_version());
  r->version_number = kda_version_number();
  for (int s = STATUS_LO; s <= STATUS_HI; ++s) {
    r->strings[s - STATUS_LO] = kda_status_string((kda_status)s);
    r->names[s - STATUS_LO] = kda_status_name((kda_status)s);
  }
  r->options = kda_options_default();
  r->args = kda_gate_args_default();
  for (int t = 0; t < 4; ++t)
    for (int n = 0; n < 6; ++n)
      for (int c = 0; c < 5; ++c) {
        r->capacity[t][n][c] = kda_chunk_indices_capacity(g_tokens[t], g_seqs[n], g_chunks[c]);
        r->workspace[t][n][c] = kda_layer_workspace_size(g_tokens[t], g_seqs[n], g_chunks[c]);
      }
  for (int c = 0; c < HOST_CASES; ++c) {
    host_case *h = &r->cases[c];
    const host_case *in = &cases_from->cases[c];
    memset(h->table, 0x5a, (size_t)h->capacity * 8);
    h->rows = -1;
    h->status = kda_chunk_indices_build_host(in->cu, in->dt, in->num_seqs, in->chunk, h->table,
                                             in->capacity, &h->rows);
  }
  /* Decreasing, then a table one row short. */
  const int32_t decreasing[4] = {0, 100, 50, 200};
  int32_t table[64];
  int64_t rows = 0;
  r->bad_seqlens = kda_chunk_indices_build_host(decreasing, KDA_DTYPE_I32, 3, 64, table, 32, &rows);
  snprintf(r->bad_seqlens_error, sizeof r->bad_seqlens_error, "%s", kda_last_error());
  const int32_t two[3] = {0, 100, 200}; /* 4 rows */
  r->too_small = kda_chunk_indices_build_host(two, KDA_DTYPE_I32, 2, 64, table, 3, &rows);
  snprintf(r->too_small_error, sizeof r->too_small_error, "%s", kda_last_error());
}

typedef struct pure_worker {
  const pure_ref *ref;
  pure_ref mine; /* this thread's results (cases share the reference's inputs) */
  long checks;
  notes n;
} pure_worker;

static void *pure_work(void *p) {
  pure_worker *w = p;
  const pure_ref *ref = w->ref;
  start_together();
  for (int round = 0; round < PURE_ROUNDS; ++round) {
    pure_ref *m = &w->mine;
    pure_compute(m, ref);
    NOTE(&w->n, strcmp(m->version, ref->version) == 0, "kda_version %s", m->version);
    NOTE(&w->n, m->version_number == ref->version_number, "kda_version_number %u",
         m->version_number);
    for (int s = 0; s <= STATUS_HI - STATUS_LO; ++s) {
      NOTE(&w->n, strcmp(m->strings[s], ref->strings[s]) == 0, "kda_status_string(%d) = %s",
           s + STATUS_LO, m->strings[s]);
      NOTE(&w->n, strcmp(m->names[s], ref->names[s]) == 0, "kda_status_name(%d) = %s",
           s + STATUS_LO, m->names[s]);
    }
    NOTE(&w->n, same_options(&m->options, &ref->options), "kda_options_default differs");
    NOTE(&w->n, same_args(&m->args, &ref->args), "kda_gate_args_default differs");
    NOTE(&w->n, memcmp(m->capacity, ref->capacity, sizeof m->capacity) == 0,
         "kda_chunk_indices_capacity differs");
    NOTE(&w->n, memcmp(m->workspace, ref->workspace, sizeof m->workspace) == 0,
         "kda_layer_workspace_size differs");
    for (int c = 0; c < HOST_CASES; ++c) {
      const host_case *h = &m->cases[c], *r = &ref->cases[c];
      NOTE(&w->n, h->status == r->status && h->rows == r->rows, "case %d: status %d rows %lld", c,
           (int)h->status, (long long)h->rows);
      NOTE(&w->n, memcmp(h->table, r->table, (size_t)r->capacity * 8) == 0,
           "case %d: table differs", c);
    }
    NOTE(&w->n, m->bad_seqlens == ref->bad_seqlens &&
                    strcmp(m->bad_seqlens_error, ref->bad_seqlens_error) == 0,
         "decreasing seqlens: %d '%s'", (int)m->bad_seqlens, m->bad_seqlens_error);
    NOTE(&w->n, m->too_small == ref->too_small &&
                    strcmp(m->too_small_error, ref->too_small_error) == 0,
         "short table: %d '%s'", (int)m->too_small, m->too_small_error);
    ++w->checks;
  }
  return NULL;
}

/* kda_version*, kda_status_*, kda_*_default, the capacity and workspace
 * helpers and the host chunk-table builder (8 random batches, I32 and I64,
 * chunk 16..256, empty sequences, and two failing calls whose messages must
 * be this thread's) from 16 threads at once, 300 rounds each: every answer
 * equals the one computed on the main thread before. */
static void pure_calls_from_sixteen_threads_match_one_thread(void **state) {
  (void)state;
  static pure_ref ref;
  host_cases_make(ref.cases);
  pure_compute(&ref, &ref);
  assert_int_equal(ref.bad_seqlens, KDA_ERROR_BAD_SEQLENS);
  assert_int_equal(ref.too_small, KDA_ERROR_BUFFER_TOO_SMALL);
  for (int c = 0; c < HOST_CASES; ++c) assert_int_equal(ref.cases[c].status, KDA_OK);
  static pure_worker w[THREADS];
  for (int t = 0; t < THREADS; ++t) {
    memset(&w[t], 0, sizeof w[t]);
    w[t].ref = &ref;
    for (int c = 0; c < HOST_CASES; ++c) {
      w[t].mine.cases[c].capacity = ref.cases[c].capacity;
      w[t].mine.cases[c].table = malloc((size_t)ref.cases[c].capacity * 8);
    }
  }
  run_threads(THREADS, pure_work, w, sizeof w[0]);
  long checks = 0;
  for (int t = 0; t < THREADS; ++t) checks += w[t].checks;
  printf("%d threads x %d rounds of the pure calls (%d host tables each)\n", THREADS, PURE_ROUNDS,
         HOST_CASES);
  assert_int_equal(sum_notes(w, sizeof w[0], offsetof(pure_worker, n), THREADS), 0);
  assert_int_equal(checks, (long)THREADS * PURE_ROUNDS);
  for (int t = 0; t < THREADS; ++t)
    for (int c = 0; c < HOST_CASES; ++c) free(w[t].mine.cases[c].table);
  host_cases_free(ref.cases);
}

/* ------------------------------------------------------------------------ */
/* Pure calls of kda_db.h                                                    */
/* ------------------------------------------------------------------------ */

enum { INFOS = 3, RECORDS = 5, DB_ROUNDS = 40 };

static const char *const g_record_specs[RECORDS] = {
    "gate_cumsum in=bf16 out=f32 H=32 K=128 chunk=64 cumsum=1 gate=1 bias=1 alog=1 scale=0 "
    "reverse=0 varlen=0 idx=i32 veccap=8",
    "gate_cumsum in=f32 out=bf16 H=8 K=64 chunk=32 cumsum=1 gate=2 bias=0 alog=1 scale=1 "
    "reverse=1 varlen=1 idx=i64 veccap=4",
    "gate_cumsum in=f16 out=f32 H=4 K=256 chunk=128 cumsum=0 gate=1 bias=0 alog=1 scale=0 "
    "reverse=0 varlen=0 idx=i32 veccap=8",
    "gate_cumsum in=bf16 out=f32 H=16 K=32 chunk=16 cumsum=1 gate=0 bias=0 alog=0 scale=0 "
    "reverse=0 varlen=1 idx=i32 veccap=2",
    "not a spec this library writes",
};

typedef struct db_ref {
  kda_db_filter filter;
  kda_db_versions current;
  kda_status current_status;
  char keys[INFOS][160];
  int key_len[INFOS], short_len;
  kda_status shape_status[RECORDS];
  kda_kernel kernel[RECORDS];
  kda_gate_args shape[RECORDS];
  int64_t tokens[RECORDS];
  char shape_error[256];
} db_ref;

static kda_device_info g_infos[INFOS];
static kda_db_record g_records[RECORDS];

static void db_inputs_make(void) {
  const char *names[INFOS] = {"NVIDIA H100 80GB HBM3", "NVIDIA H200", "Fake GPU (no device)"};
  const int32_t pci[INFOS] = {0x2330, 0x2335, 0}, sms[INFOS] = {132, 132, 7};
  for (int i = 0; i < INFOS; ++i) {
    memset(&g_infos[i], 0, sizeof g_infos[i]);
    g_infos[i].struct_size = sizeof g_infos[i];
    snprintf(g_infos[i].name, sizeof g_infos[i].name, "%s", names[i]);
    g_infos[i].cc_major = 9;
    g_infos[i].sm_count = sms[i];
    g_infos[i].l2_bytes = (50 + 10 * i) << 20;
    g_infos[i].pci_device_id = pci[i];
  }
  for (int r = 0; r < RECORDS; ++r) {
    memset(&g_records[r], 0, sizeof g_records[r]);
    g_records[r].struct_size = sizeof g_records[r];
    snprintf(g_records[r].spec, sizeof g_records[r].spec, "%s", g_record_specs[r]);
    g_records[r].bucket = r;
  }
}

static void db_compute(db_ref *d) {
  d->filter = kda_db_filter_default();
  d->current_status = kda_db_current(&d->current);
  for (int i = 0; i < INFOS; ++i)
    d->key_len[i] = kda_db_gpu_key(&g_infos[i], d->keys[i], sizeof d->keys[i]);
  char tiny[8];
  d->short_len = kda_db_gpu_key(&g_infos[0], tiny, sizeof tiny);
  for (int r = 0; r < RECORDS; ++r) {
    memset(&d->shape[r], 0, sizeof d->shape[r]);
    d->tokens[r] = -1;
    d->shape_status[r] = kda_db_record_shape(&g_records[r], &d->kernel[r], &d->shape[r],
                                             &d->tokens[r]);
    if (d->shape_status[r] != KDA_OK)
      snprintf(d->shape_error, sizeof d->shape_error, "%s", kda_last_error());
  }
}

typedef struct db_worker {
  const db_ref *ref;
  db_ref mine;
  notes n;
} db_worker;

static void *db_work(void *p) {
  db_worker *w = p;
  const db_ref *ref = w->ref;
  db_ref *m = &w->mine;
  start_together();
  for (int round = 0; round < DB_ROUNDS; ++round) {
    db_compute(m);
    NOTE(&w->n, same_filter(&m->filter, &ref->filter), "kda_db_filter_default differs");
    NOTE(&w->n, m->current_status == ref->current_status && same_versions(&m->current, &ref->current),
         "kda_db_current: %d %s %s", (int)m->current_status, m->current.lib_version,
         m->current.gate_cumsum_hash);
    for (int i = 0; i < INFOS; ++i)
      NOTE(&w->n, m->key_len[i] == ref->key_len[i] && strcmp(m->keys[i], ref->keys[i]) == 0,
           "kda_db_gpu_key(%d) = %s", i, m->keys[i]);
    NOTE(&w->n, m->short_len == ref->short_len, "kda_db_gpu_key into 8 bytes: %d", m->short_len);
    for (int r = 0; r < RECORDS; ++r) {
      NOTE(&w->n, m->shape_status[r] == ref->shape_status[r], "record %d: status %d", r,
           (int)m->shape_status[r]);
      if (ref->shape_status[r] == KDA_OK)
        NOTE(&w->n, m->kernel[r] == ref->kernel[r] && m->tokens[r] == ref->tokens[r] &&
                        same_args(&m->shape[r], &ref->shape[r]),
             "record %d: kernel %d tokens %lld", r, (int)m->kernel[r], (long long)m->tokens[r]);
    }
    NOTE(&w->n, strcmp(m->shape_error, ref->shape_error) == 0, "record_shape message '%s'",
         m->shape_error);
  }
  return NULL;
}

/* kda_db_filter_default, kda_db_current (which reads and hashes the kernel
 * templates each call), kda_db_gpu_key (three identities and a buffer too
 * small) and kda_db_record_shape (four specs and one it refuses) from 16
 * threads at once: every answer equals the main thread's. */
static void db_helpers_from_sixteen_threads_match_one_thread(void **state) {
  (void)state;
  db_inputs_make();
  static db_ref ref;
  db_compute(&ref);
  assert_int_equal(ref.current_status, KDA_OK);
  assert_int_equal(ref.short_len, -1);
  for (int i = 0; i < INFOS; ++i) assert_true(ref.key_len[i] > 0);
  for (int r = 0; r < RECORDS - 1; ++r) assert_int_equal(ref.shape_status[r], KDA_OK);
  assert_int_equal(ref.shape_status[RECORDS - 1], KDA_ERROR_INVALID_ARGUMENT);
  assert_int_equal(ref.kernel[2], KDA_KERNEL_GATE);
  assert_int_equal(ref.kernel[3], KDA_KERNEL_CHUNK_LOCAL_CUMSUM);
  static db_worker w[THREADS];
  for (int t = 0; t < THREADS; ++t) {
    memset(&w[t], 0, sizeof w[t]);
    w[t].ref = &ref;
  }
  run_threads(THREADS, db_work, w, sizeof w[0]);
  printf("%d threads x %d rounds of the kda_db pure calls\n", THREADS, DB_ROUNDS);
  assert_int_equal(sum_notes(w, sizeof w[0], offsetof(db_worker, n), THREADS), 0);
}

/* ------------------------------------------------------------------------ */
/* kda_db_show on 16 handles of one file at once                             */
/* ------------------------------------------------------------------------ */

enum { SHOW_TRIALS = 48, SHOW_ROUNDS = 30 };

typedef struct trial_order {
  int64_t ids[SHOW_TRIALS];
  int n;
} trial_order;

static int note_trial(void *user, const kda_db_trial *t) {
  trial_order *o = user;
  if (o->n < SHOW_TRIALS) o->ids[o->n] = t->config_id;
  ++o->n;
  return 0;
}

typedef struct show_worker {
  const char *path;
  const trial_order *ref;
  const kda_db_record *ref_record;
  notes n;
} show_worker;

static void *show_work(void *p) {
  show_worker *w = p;
  kda_db *db = NULL;
  const kda_status st = kda_db_open(w->path, KDA_DB_READ_ONLY, &db);
  NOTE(&w->n, st == KDA_OK, "open: %s", kda_last_error());
  start_together();
  for (int r = 0; r < SHOW_ROUNDS && db != NULL; ++r) {
    trial_order got = {.n = 0};
    kda_db_record rec;
    const kda_status s = kda_db_show(db, w->ref_record->key, &rec, note_trial, &got);
    NOTE(&w->n, s == KDA_OK, "show: %s", kda_last_error());
    if (s != KDA_OK) continue;
    NOTE(&w->n, rec.id == w->ref_record->id && strcmp(rec.config, w->ref_record->config) == 0,
         "record #%lld %s", (long long)rec.id, rec.config);
    NOTE(&w->n, got.n == w->ref->n && memcmp(got.ids, w->ref->ids, sizeof got.ids) == 0,
         "%d trials, first config ids %lld %lld", got.n, (long long)got.ids[0],
         (long long)got.ids[1]);
  }
  kda_db_close(db);
  return NULL;
}

/* kda_db_show on 16 handles of one file (one per thread, as kda_db.h
 * allows), 30 times each: every thread gets the record and its 48 trials
 * in the order the main thread got (measured first by median, unmeasured
 * last, ties by insertion). */
static void db_show_on_sixteen_handles_at_once_orders_trials_as_one_thread(void **state) {
  (void)state;
  tmpdb db;
  tmpdb_make(&db);
  kda_db_versions v;
  assert_int_equal(kda_db_current(&v), KDA_OK);
  kda__store *store = NULL;
  assert_int_equal(kda__store_open(db.path, 0, &store), KDA_OK);
  kda__store_key key = {"sm90-pci2330-sms132-l2_52428800", "gate_cumsum", g_record_specs[0], 1,
                        v.gate_cumsum_hash, "space"};
  kda__store_record r;
  memset(&r, 0, sizeof r);
  snprintf(r.config, sizeof r.config, "vec=4,tx=32,seg=8");
  r.median_us = 3.0;
  snprintf(r.lib_version, sizeof r.lib_version, "%s", v.lib_version);
  static char configs[SHOW_TRIALS][32];
  kda__store_trial trials[SHOW_TRIALS];
  for (int i = 0; i < SHOW_TRIALS; ++i) {
    snprintf(configs[i], sizeof configs[i], "vec=%d,tx=%d,seg=%d", 1 << (i % 4), 32 << (i % 3), i);
    const double m = i % 7 == 3 ? -1.0 : 3.0 + (double)((i * 37) % 11); /* ties, unmeasured */
    trials[i] = (kda__store_trial){configs[i], i, m, m, m,
                                   m < 0 ? KDA__TRIAL_WRONG_RESULT : KDA__TRIAL_OK,
                                   m < 0 ? "wrong" : NULL};
  }
  assert_int_equal(kda__store_put_result(store, &key, &r, trials, SHOW_TRIALS, KDA__PUT_REPLACE,
                                         NULL), KDA_OK);
  kda__store_close(store);

  kda_db *h = NULL;
  assert_int_equal(kda_db_open(db.path, KDA_DB_READ_ONLY, &h), KDA_OK);
  kda_db_record rec;
  trial_order ref = {.n = 0};
  assert_int_equal(kda_db_show(h, "1", &rec, note_trial, &ref), KDA_OK);
  kda_db_close(h);
  assert_int_equal(ref.n, SHOW_TRIALS);
  assert_int_equal(ref.ids[0], 0); /* median 3, lowest id */
  assert_int_equal(ref.ids[SHOW_TRIALS - 1], 45); /* unmeasured, last inserted */

  static show_worker w[THREADS];
  for (int t = 0; t < THREADS; ++t) w[t] = (show_worker){db.path, &ref, &rec, {0, ""}};
  run_threads(THREADS, show_work, w, sizeof w[0]);
  printf("%d handles x %d kda_db_show of %d trials\n", THREADS, SHOW_ROUNDS, SHOW_TRIALS);
  assert_int_equal(sum_notes(w, sizeof w[0], offsetof(show_worker, n), THREADS), 0);
  tmpdb_remove(&db);
}

/* ------------------------------------------------------------------------ */
/* Kernel-call arguments on stand-in "device" memory (host memory)           */
/* ------------------------------------------------------------------------ */

typedef stand_in_call call;

static kda_context *context_make(int tune_mode, const char *db_path, log_count *log) {
  kda_options o = kda_options_default();
  o.tune_mode = tune_mode;
  o.db_path = db_path;
  o.log_level = KDA_LOG_WARN;
  if (log) {
    o.log_fn = count_log;
    o.log_user = log;
  }
  kda_context *ctx = NULL;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  return ctx;
}

/* ------------------------------------------------------------------------ */
/* kda_context_create on 16 threads at once                                  */
/* ------------------------------------------------------------------------ */

enum { CREATE_ROUNDS = 40 };

typedef struct create_worker {
  const char *db_path;
  const call *c;
  const kda_device_info *info;
  const char *no_device_error; /* the message of device = 1, from the main thread */
  log_count *log;
  long launches;
  notes n;
} create_worker;

static void *create_work(void *p) {
  create_worker *w = p;
  start_together();
  for (int round = 0; round < CREATE_ROUNDS; ++round) {
    kda_options o = kda_options_default();
    o.tune_mode = KDA_TUNE_CACHED;
    o.db_path = w->db_path;
    o.log_fn = count_log;
    o.log_user = w->log;
    kda_context *ctx = NULL;
    kda_status st = kda_context_create(&o, &ctx);
    NOTE(&w->n, st == KDA_OK && ctx != NULL, "create: %s", kda_last_error());
    if (st != KDA_OK) continue;
    kda_device_info info = {.struct_size = sizeof info};
    NOTE(&w->n, kda_context_get_device_info(ctx, &info) == KDA_OK &&
                    memcmp(&info, w->info, sizeof info) == 0,
         "device info differs: %s", info.name);
    /* A stored heuristic cubin: loaded, no NVRTC. */
    st = kda_gate_chunk_cumsum(ctx, &w->c->a, NULL);
    NOTE(&w->n, st == KDA_OK, "call: %s", kda_last_error());
    if (st == KDA_OK) ++w->launches;
    kda_stats s = {.struct_size = sizeof s};
    NOTE(&w->n, kda_context_get_stats(ctx, &s) == KDA_OK && s.launches == 1 &&
                    s.nvrtc_compiles == 0 && s.db_cubin_hits == 1 && s.modules_loaded == 1,
         "own context's stats: %llu launches, %llu compiles, %llu cubin hits",
         (unsigned long long)s.launches, (unsigned long long)s.nvrtc_compiles,
         (unsigned long long)s.db_cubin_hits);
    kda_context_destroy(ctx);

    /* Failures on this thread meanwhile: a device past the count, and -1
     * with no CUDA context current on the thread. */
    o = kda_options_default();
    o.tune_mode = KDA_TUNE_OFF;
    o.device = 1;
    ctx = (kda_context *)(uintptr_t)1;
    st = kda_context_create(&o, &ctx);
    NOTE(&w->n, st == KDA_ERROR_NO_DEVICE && ctx == NULL &&
                    strcmp(kda_last_error(), w->no_device_error) == 0,
         "device 1: %d '%s'", (int)st, kda_last_error());
    o.device = -1;
    ctx = (kda_context *)(uintptr_t)1;
    st = kda_context_create(&o, &ctx);
    NOTE(&w->n, st == KDA_ERROR_NO_DEVICE && ctx == NULL &&
                    strstr(kda_last_error(), "no CUDA context is current") != NULL,
         "device -1: %d '%s'", (int)st, kda_last_error());
  }
  return NULL;
}

/* 16 threads each create a context (KDA_TUNE_CACHED, one database file
 * shared by all), read its device info, make one call that loads the
 * heuristic cubin kda_compile_offline_store put there, check the context's
 * own counters and destroy it, 40 times; between them each fails to create
 * one for device 1 (past the stand-in's count) and for device -1 (no
 * current CUDA context). Every context is independent (its counters are its
 * own call's), no warning is logged, and nothing is left allocated or
 * loaded in the stand-in driver. */
static void contexts_created_on_sixteen_threads_at_once_are_independent(void **state) {
  (void)state;
  tmpdb db;
  tmpdb_make(&db);
  call c;
  stand_in_call_init(&c, 4, 64, 64, 4096, KDA_DTYPE_BF16, KDA_GATE_SOFTPLUS);
  assert_int_equal(kda_compile_offline_store(KDA_KERNEL_GATE_CHUNK_CUMSUM, &c.a, 90, db.path, NULL),
                   KDA_OK);
  log_count log = {.match = NULL};
  kda_context *ref = context_make(KDA_TUNE_CACHED, db.path, &log);
  kda_device_info info = {.struct_size = sizeof info};
  assert_int_equal(kda_context_get_device_info(ref, &info), KDA_OK);
  assert_int_equal(kda_gate_chunk_cumsum(ref, &c.a, NULL), KDA_OK);
  kda_stats s = tr_stats(ref);
  assert_int_equal(s.nvrtc_compiles, 0); /* the shape's cubin is the stored one */
  assert_int_equal(s.db_cubin_hits, 1);
  kda_context_destroy(ref);
  kda_options o = kda_options_default();
  o.device = 1;
  kda_context *none = NULL;
  assert_int_equal(kda_context_create(&o, &none), KDA_ERROR_NO_DEVICE);
  char no_device[256];
  snprintf(no_device, sizeof no_device, "%s", kda_last_error());

  const long launches0 = fake_launches();
  static create_worker w[THREADS];
  for (int t = 0; t < THREADS; ++t)
    w[t] = (create_worker){db.path, &c, &info, no_device, &log, 0, {0, ""}};
  const double t0 = now_s();
  run_threads(THREADS, create_work, w, sizeof w[0]);
  long launches = 0;
  for (int t = 0; t < THREADS; ++t) launches += w[t].launches;
  printf("%d threads x %d contexts created, called and destroyed in %.2f s; %d warnings; "
         "stand-in: %ld launches, %ld allocations and %ld modules live\n",
         THREADS, CREATE_ROUNDS, now_s() - t0, atomic_load(&log.warnings),
         fake_launches() - launches0, fake_live_allocations(), fake_loaded_modules());
  assert_int_equal(sum_notes(w, sizeof w[0], offsetof(create_worker, n), THREADS), 0);
  assert_int_equal(launches, (long)THREADS * CREATE_ROUNDS);
  assert_int_equal(fake_launches() - launches0, launches);
  assert_int_equal(atomic_load(&log.warnings), 0);
  assert_int_equal(fake_live_allocations(), 0);
  assert_int_equal(fake_loaded_modules(), 0);
  stand_in_call_free(&c);
  tmpdb_remove(&db);
}

/* ------------------------------------------------------------------------ */
/* A reader of a context's counters and device info while others launch     */
/* ------------------------------------------------------------------------ */

typedef struct reader {
  kda_context *ctx;
  const kda_device_info *info;
  uint64_t max_launches; /* no read may exceed it */
  atomic_int stop;
  long reads;
  kda_stats last;
  notes n;
} reader;

static void *read_stats(void *p) {
  reader *r = p;
  memset(&r->last, 0, sizeof r->last);
  while (!atomic_load(&r->stop) || r->reads == 0) {
    kda_stats s;
    memset(&s, 0, sizeof s);
    /* Every other read as a caller of the first header would. */
    s.struct_size = r->reads % 2 ? (uint32_t)offsetof(kda_stats, tuning_runs) : sizeof s;
    NOTE(&r->n, kda_context_get_stats(r->ctx, &s) == KDA_OK, "get_stats: %s", kda_last_error());
    const kda_stats *l = &r->last;
    NOTE(&r->n, s.nvrtc_compiles >= l->nvrtc_compiles && s.modules_loaded >= l->modules_loaded &&
                    s.cache_hits >= l->cache_hits && s.cache_misses >= l->cache_misses &&
                    s.launches >= l->launches && s.compile_ms_total >= l->compile_ms_total,
         "a counter went back: launches %llu -> %llu, hits %llu -> %llu",
         (unsigned long long)l->launches, (unsigned long long)s.launches,
         (unsigned long long)l->cache_hits, (unsigned long long)s.cache_hits);
    NOTE(&r->n, s.launches <= r->max_launches, "%llu launches counted, at most %llu made",
         (unsigned long long)s.launches, (unsigned long long)r->max_launches);
    if (s.struct_size == sizeof s) {
      NOTE(&r->n, s.tuning_runs >= l->tuning_runs && s.db_result_hits >= l->db_result_hits &&
                      s.db_cubin_hits >= l->db_cubin_hits && s.persist_failures >= l->persist_failures,
           "a tuning counter went back");
      NOTE(&r->n, s.memory_hits == s.cache_hits, "memory_hits %llu != cache_hits %llu",
           (unsigned long long)s.memory_hits, (unsigned long long)s.cache_hits);
    } else {
      s.tuning_runs = l->tuning_runs;
      s.db_result_hits = l->db_result_hits;
      s.db_cubin_hits = l->db_cubin_hits;
      s.persist_failures = l->persist_failures;
    }
    r->last = s;
    kda_device_info info = {.struct_size = sizeof info};
    NOTE(&r->n, kda_context_get_device_info(r->ctx, &info) == KDA_OK &&
                    memcmp(&info, r->info, sizeof info) == 0,
         "device info differs: %s", info.name);
    ++r->reads;
  }
  return NULL;
}

static void reader_start(reader *r, pthread_t *th, kda_context *ctx, const kda_device_info *info,
                         uint64_t max_launches) {
  memset(r, 0, sizeof *r);
  r->ctx = ctx;
  r->info = info;
  r->max_launches = max_launches;
  atomic_init(&r->stop, 0);
  assert_int_equal(pthread_create(th, NULL, read_stats, r), 0);
}

static void reader_stop(reader *r, pthread_t th) {
  atomic_store(&r->stop, 1);
  pthread_join(th, NULL);
  printf("the reader read the counters and device info %ld times meanwhile\n", r->reads);
  assert_int_equal(sum_notes(r, sizeof *r, offsetof(reader, n), 1), 0);
  assert_true(r->reads > 0);
}

/* ------------------------------------------------------------------------ */
/* kda_gate from 16 threads on one context                                   */
/* ------------------------------------------------------------------------ */

enum { GATE_SPECS = 3, GATE_ROUNDS = 250 };

typedef struct gate_worker {
  kda_context *ctx;
  call calls[GATE_SPECS]; /* this thread's outputs, the shared inputs */
  long launched;
  notes n;
} gate_worker;

static void gate_calls_init(call *calls) {
  stand_in_call_init(&calls[0], 4, 64, 64, 64, KDA_DTYPE_BF16, KDA_GATE_SOFTPLUS);
  stand_in_call_init(&calls[1], 8, 128, 64, 32, KDA_DTYPE_F32, KDA_GATE_LOWER_BOUND);
  stand_in_call_init(&calls[2], 2, 32, 64, 128, KDA_DTYPE_F16, KDA_GATE_SOFTPLUS);
  calls[2].a.dt_bias = calls[2].dt_bias;
  calls[2].a.out_dtype = KDA_DTYPE_BF16;
}

static void *gate_work(void *p) {
  gate_worker *w = p;
  start_together();
  for (int r = 0; r < GATE_ROUNDS; ++r)
    for (int s = 0; s < GATE_SPECS; ++s) {
      kda_status st = kda_gate(w->ctx, &w->calls[s].a, NULL);
      NOTE(&w->n, st == KDA_OK, "kda_gate spec %d: %s", s, kda_last_error());
      if (st == KDA_OK) ++w->launched;
    }
  return NULL;
}

/* kda_gate from 16 threads on one context (KDA_TUNE_OFF), three cold
 * specializations met at once, 250 rounds, while another thread reads the
 * counters and the device info in a loop (every counter monotonic, device
 * info constant). As many NVRTC compiles as the same calls made once on one
 * thread in a fresh context, and every call launched: launches = calls =
 * the stand-in's count = cache hits + misses. */
/* ------------------------------------------------------------------------ */
/* Gate calls reading one chunk plan from 16 threads                        */
/* ------------------------------------------------------------------------ */

enum { PLAN_ROUNDS = 150 };

typedef struct plan_worker {
  kda_context *ctx;
  kda_chunk_plan *shared; /* built on stream 1 by the main thread */
  int own;                /* also create, build, use and destroy a plan of its own */
  kda_stream stream;
  call c;
  long launched;
  notes n;
} plan_worker;

static void *plan_work(void *p) {
  plan_worker *w = p;
  start_together();
  kda_gate_args a = w->c.a;
  a.chunk_plan = w->shared;
  for (int r = 0; r < PLAN_ROUNDS; ++r) {
    const kda_status st = kda_gate_chunk_cumsum(w->ctx, &a, w->stream);
    NOTE(&w->n, st == KDA_OK, "round %d: %s", r, kda_last_error());
    w->launched += st == KDA_OK;
  }
  if (w->own) {
    kda_chunk_plan *mine = NULL;
    kda_status st = kda_chunk_plan_create(w->ctx, a.seq_len, a.num_seqs, a.chunk_size, &mine);
    NOTE(&w->n, st == KDA_OK, "create: %s", kda_last_error());
    if (st == KDA_OK) {
      static const int32_t cu[3] = {0, 100, 256};
      st = kda_chunk_plan_build(mine, cu, KDA_DTYPE_I32, 2, a.seq_len, w->stream);
      NOTE(&w->n, st == KDA_OK, "build: %s", kda_last_error());
      a.chunk_plan = mine;
      st = kda_gate_chunk_cumsum(w->ctx, &a, w->stream);
      NOTE(&w->n, st == KDA_OK, "own plan: %s", kda_last_error());
      kda_chunk_plan_destroy(mine);
    }
  }
  return NULL;
}

/* kda.h: gate calls reading one plan may run concurrently, and plans are
 * independent. Half the threads call on the plan's build stream: exactly
 * one of all those calls launches plainly (the first read after the build),
 * whatever the interleaving; the other half call on streams of their own
 * (overlapped), then each makes, builds, uses and destroys a plan of its
 * own (a plain build and a plain first read each). Twice, with a rebuild
 * between. */
static void chunk_plan_read_from_sixteen_threads_launches_plainly_once_per_build(void **state) {
  (void)state;
  kda_context *ctx = context_make(KDA_TUNE_OFF, ":memory:", NULL);
  kda_chunk_plan *plan = NULL;
  assert_int_equal(kda_chunk_plan_create(ctx, 256, 2, 64, &plan), KDA_OK);
  static const int32_t cu[3] = {0, 100, 256};
  const kda_stream build_stream = (kda_stream)(uintptr_t)0x5000;
  static plan_worker w[THREADS];
  for (int round = 0; round < 2; ++round) {
    assert_int_equal(kda_chunk_plan_build(plan, cu, KDA_DTYPE_I32, 2, 256, build_stream), KDA_OK);
    for (int t = 0; t < THREADS; ++t) {
      memset(&w[t], 0, sizeof w[t]);
      w[t].ctx = ctx;
      w[t].shared = plan;
      w[t].own = t >= THREADS / 2;
      w[t].stream = w[t].own ? (kda_stream)(uintptr_t)(0x6000 + 0x100 * t) : build_stream;
      stand_in_call_init(&w[t].c, 4, 64, 64, 256, KDA_DTYPE_BF16, KDA_GATE_SOFTPLUS);
      w[t].c.a.num_seqs = 2;
    }
    const long l0 = fake_launches(), o0 = fake_overlap_launches();
    run_threads(THREADS, plan_work, w, sizeof w[0]);
    const long launched = fake_launches() - l0, plain = launched - (fake_overlap_launches() - o0);
    assert_int_equal(sum_notes(w, sizeof w[0], offsetof(plan_worker, n), THREADS), 0);
    long calls = 0;
    for (int t = 0; t < THREADS; ++t) calls += w[t].launched;
    assert_int_equal(calls, (long)THREADS * PLAN_ROUNDS);
    /* The shared plan's calls, then per own plan a build and a call. */
    assert_int_equal(launched, calls + 2 * (THREADS / 2));
    /* One plain read of the shared plan; a plain build and read per own plan. */
    printf("round %d: %ld launches, %ld plain\n", round, launched, plain);
    assert_int_equal(plain, 1 + 2 * (THREADS / 2));
    for (int t = 0; t < THREADS; ++t) stand_in_call_free(&w[t].c);
  }
  kda_chunk_plan_destroy(plan);
  kda_context_destroy(ctx);
}

static void kda_gate_from_sixteen_threads_compiles_once_and_launches_every_call(void **state) {
  (void)state;
  call one[GATE_SPECS];
  gate_calls_init(one);
  kda_context *ctx = context_make(KDA_TUNE_OFF, ":memory:", NULL);
  for (int s = 0; s < GATE_SPECS; ++s) assert_int_equal(kda_gate(ctx, &one[s].a, NULL), KDA_OK);
  const kda_stats single = tr_stats(ctx);
  kda_context_destroy(ctx);
  assert_int_equal(single.launches, GATE_SPECS);
  assert_int_equal(single.nvrtc_compiles, GATE_SPECS);

  ctx = context_make(KDA_TUNE_OFF, ":memory:", NULL);
  kda_device_info info = {.struct_size = sizeof info};
  assert_int_equal(kda_context_get_device_info(ctx, &info), KDA_OK);
  static gate_worker w[THREADS];
  for (int t = 0; t < THREADS; ++t) {
    memset(&w[t], 0, sizeof w[t]);
    w[t].ctx = ctx;
    gate_calls_init(w[t].calls);
  }
  const uint64_t total = (uint64_t)THREADS * GATE_ROUNDS * GATE_SPECS;
  const long launches0 = fake_launches();
  reader r;
  pthread_t rt;
  reader_start(&r, &rt, ctx, &info, total);
  run_threads(THREADS, gate_work, w, sizeof w[0]);
  reader_stop(&r, rt);
  const kda_stats s = tr_stats(ctx);
  long launched = 0;
  for (int t = 0; t < THREADS; ++t) launched += w[t].launched;
  printf("%d threads x %d rounds x %d kda_gate specializations: %llu compiles (one thread: %llu), "
         "%llu launches, %llu hits, %llu misses\n",
         THREADS, GATE_ROUNDS, GATE_SPECS, (unsigned long long)s.nvrtc_compiles,
         (unsigned long long)single.nvrtc_compiles, (unsigned long long)s.launches,
         (unsigned long long)s.cache_hits, (unsigned long long)s.cache_misses);
  assert_int_equal(sum_notes(w, sizeof w[0], offsetof(gate_worker, n), THREADS), 0);
  assert_int_equal(launched, (long)total);
  assert_int_equal(s.launches, total);
  assert_int_equal(fake_launches() - launches0, (long)total);
  assert_int_equal(s.cache_hits + s.cache_misses, total);
  assert_int_equal(s.nvrtc_compiles, single.nvrtc_compiles);
  assert_int_equal(s.modules_loaded, single.modules_loaded);
  assert_true(r.last.launches <= s.launches);
  kda_context_destroy(ctx);
  for (int t = 0; t < THREADS; ++t)
    for (int i = 0; i < GATE_SPECS; ++i) stand_in_call_free(&w[t].calls[i]);
  for (int i = 0; i < GATE_SPECS; ++i) stand_in_call_free(&one[i]);
}

/* ------------------------------------------------------------------------ */
/* kda_layer_gate_fwd from 16 threads on one context                         */
/* ------------------------------------------------------------------------ */

enum { LAYER_ROUNDS = 150, LAYER_T = 512 };

/* One thread's layer: its own sequence split (I32 or I64), workspace and
 * host-built table. */
typedef struct layer {
  call fused, plain; /* SOFTPLUS (fused kernel), NONE (plain chunk cumsum) */
  int32_t cu32[9];
  int64_t cu64[9];
  const void *cu; /* one of them */
  int32_t *table;
  int64_t rows;
  void *ws;
  size_t ws_bytes;
} layer;

static void layer_init(layer *l, int t) {
  memset(l, 0, sizeof *l);
  stand_in_call_init(&l->fused, 4, 64, 64, LAYER_T, KDA_DTYPE_BF16, KDA_GATE_SOFTPLUS);
  stand_in_call_init(&l->plain, 4, 64, 64, LAYER_T, KDA_DTYPE_F32, KDA_GATE_NONE);
  const int N = 1 + t % 8;
  const kda_dtype dt = t % 2 ? KDA_DTYPE_I64 : KDA_DTYPE_I32;
  for (int i = 0; i <= N; ++i) {
    const int64_t v = (int64_t)i * LAYER_T / N - (i > 0 && i < N ? t : 0);
    l->cu64[i] = v;
    l->cu32[i] = (int32_t)v;
  }
  l->cu = dt == KDA_DTYPE_I64 ? (const void *)l->cu64 : (const void *)l->cu32;
  const int64_t cap = kda_chunk_indices_capacity(LAYER_T, N, 64);
  l->table = malloc((size_t)cap * 8);
  assert_int_equal(kda_chunk_indices_build_host(l->cu, dt, N, 64, l->table, cap, &l->rows), KDA_OK);
  l->ws_bytes = kda_layer_workspace_size(LAYER_T, N, 64);
  l->ws = aligned_alloc(256, (l->ws_bytes + 255) & ~(size_t)255);
  call *cs[2] = {&l->fused, &l->plain};
  for (int i = 0; i < 2; ++i) {
    cs[i]->a.cu_seqlens = l->cu;
    cs[i]->a.cu_seqlens_dtype = dt;
    cs[i]->a.num_seqs = N;
  }
}

static void layer_free(layer *l) {
  stand_in_call_free(&l->fused);
  stand_in_call_free(&l->plain);
  free(l->table);
  free(l->ws);
}

/* One round of a layer: the table built on the device then the fused
 * kernel (2 launches), the same with the plain cumsum (2), the fused kernel
 * on the host-built table (1), dense (1), and a workspace one byte short
 * (refused, no launch). Returns the launches of the successful calls. */
static long layer_round(kda_context *ctx, const layer *l, notes *n) {
  long launched = 0;
  kda_status st = kda_layer_gate_fwd(ctx, &l->fused.a, l->ws, l->ws_bytes, NULL);
  NOTE(n, st == KDA_OK, "fused, device table: %s", kda_last_error());
  launched += st == KDA_OK ? 2 : 0;
  st = kda_layer_gate_fwd(ctx, &l->plain.a, l->ws, l->ws_bytes, NULL);
  NOTE(n, st == KDA_OK, "plain, device table: %s", kda_last_error());
  launched += st == KDA_OK ? 2 : 0;
  kda_gate_args a = l->fused.a;
  a.chunk_indices = l->table;
  a.num_chunks = l->rows;
  st = kda_layer_gate_fwd(ctx, &a, NULL, 0, NULL);
  NOTE(n, st == KDA_OK, "fused, host table: %s", kda_last_error());
  launched += st == KDA_OK;
  a = l->fused.a;
  a.cu_seqlens = NULL;
  a.num_seqs = 0;
  st = kda_layer_gate_fwd(ctx, &a, NULL, 0, NULL);
  NOTE(n, st == KDA_OK, "dense: %s", kda_last_error());
  launched += st == KDA_OK;
  st = kda_layer_gate_fwd(ctx, &l->fused.a, l->ws, l->ws_bytes - 1, NULL);
  NOTE(n, st == KDA_ERROR_BUFFER_TOO_SMALL, "short workspace: %d", (int)st);
  return launched;
}

typedef struct layer_worker {
  kda_context *ctx;
  layer l;
  long launched;
  notes n;
} layer_worker;

static void *layer_work(void *p) {
  layer_worker *w = p;
  start_together();
  for (int r = 0; r < LAYER_ROUNDS; ++r) w->launched += layer_round(w->ctx, &w->l, &w->n);
  return NULL;
}

/* kda_layer_gate_fwd from 16 threads on one context (KDA_TUNE_OFF), each
 * with its own sequence split (1 to 8 sequences, I32 and I64 cu_seqlens),
 * workspace and outputs: device-built tables with the fused and the plain
 * kernel, a host-built table, a dense batch and a refused call, 150 rounds,
 * while another thread reads the counters and device info. The NVRTC
 * compiles equal those of the same 16 layers run once on one thread in a
 * fresh context; launches = the stand-in's count = 6 per round per thread
 * = cache hits + misses. */
static void layer_gate_fwd_from_sixteen_threads_compiles_once_and_launches_every_kernel(void **state) {
  (void)state;
  static layer_worker w[THREADS];
  for (int t = 0; t < THREADS; ++t) {
    memset(&w[t], 0, sizeof w[t]);
    layer_init(&w[t].l, t);
  }
  kda_context *ctx = context_make(KDA_TUNE_OFF, ":memory:", NULL);
  notes n = {0, ""};
  long single_launches = 0;
  for (int t = 0; t < THREADS; ++t) single_launches += layer_round(ctx, &w[t].l, &n);
  const kda_stats single = tr_stats(ctx);
  kda_context_destroy(ctx);
  if (n.bad) printf("one thread: %s\n", n.why);
  assert_int_equal(n.bad, 0);
  assert_int_equal(single_launches, 6 * THREADS);
  assert_int_equal(single.launches, (uint64_t)single_launches);

  ctx = context_make(KDA_TUNE_OFF, ":memory:", NULL);
  kda_device_info info = {.struct_size = sizeof info};
  assert_int_equal(kda_context_get_device_info(ctx, &info), KDA_OK);
  for (int t = 0; t < THREADS; ++t) w[t].ctx = ctx;
  const uint64_t total = (uint64_t)single_launches * LAYER_ROUNDS;
  const long launches0 = fake_launches();
  reader r;
  pthread_t rt;
  reader_start(&r, &rt, ctx, &info, total);
  run_threads(THREADS, layer_work, w, sizeof w[0]);
  reader_stop(&r, rt);
  const kda_stats s = tr_stats(ctx);
  long launched = 0;
  for (int t = 0; t < THREADS; ++t) launched += w[t].launched;
  printf("%d threads x %d layer rounds: %llu compiles (one thread: %llu), %llu launches, "
         "%llu hits, %llu misses\n",
         THREADS, LAYER_ROUNDS, (unsigned long long)s.nvrtc_compiles,
         (unsigned long long)single.nvrtc_compiles, (unsigned long long)s.launches,
         (unsigned long long)s.cache_hits, (unsigned long long)s.cache_misses);
  assert_int_equal(sum_notes(w, sizeof w[0], offsetof(layer_worker, n), THREADS), 0);
  assert_int_equal(launched, (long)total);
  assert_int_equal(s.launches, total);
  assert_int_equal(fake_launches() - launches0, (long)total);
  assert_int_equal(s.cache_hits + s.cache_misses, total);
  assert_int_equal(s.nvrtc_compiles, single.nvrtc_compiles);
  assert_int_equal(s.modules_loaded, single.modules_loaded);
  kda_context_destroy(ctx);
  for (int t = 0; t < THREADS; ++t) layer_free(&w[t].l);
}

/* ------------------------------------------------------------------------ */
/* Tuning-database rows and faults (internals)                               */
/* ------------------------------------------------------------------------ */

static int same_prewarm(const kda_prewarm_result *a, const kda_prewarm_result *b) {
  return a->struct_size == b->struct_size && a->outcome == b->outcome &&
         strcmp(a->config, b->config) == 0 && a->median_us == b->median_us &&
         a->heuristic_us == b->heuristic_us && a->compile_ms == b->compile_ms &&
         a->tune_ms == b->tune_ms && a->candidates == b->candidates &&
         a->rejected == b->rejected && a->bucket == b->bucket;
}

/* ------------------------------------------------------------------------ */
/* kda_prewarm from 16 threads with kernel calls on the same context         */
/* ------------------------------------------------------------------------ */

enum { PREWARM_SHAPES = 3, PREWARM_ROUNDS = 40, COLD_TUNERS = 2 };

static const kda_kernel g_prewarm_kernel[PREWARM_SHAPES] = {
    KDA_KERNEL_GATE_CHUNK_CUMSUM, KDA_KERNEL_CHUNK_LOCAL_CUMSUM, KDA_KERNEL_GATE};
static const kda__op g_prewarm_op[PREWARM_SHAPES] = {KDA__OP_GATE_CHUNK_CUMSUM,
                                                      KDA__OP_CHUNK_LOCAL_CUMSUM, KDA__OP_GATE};

static void prewarm_calls_init(call *calls) {
  stand_in_call_init(&calls[0], 4, 64, 64, 4096, KDA_DTYPE_BF16, KDA_GATE_SOFTPLUS);
  stand_in_call_init(&calls[1], 8, 64, 32, 2048, KDA_DTYPE_F32, KDA_GATE_NONE);
  stand_in_call_init(&calls[2], 2, 128, 64, 512, KDA_DTYPE_F16, KDA_GATE_LOWER_BOUND);
}

typedef struct prewarm_worker {
  kda_context *ctx;
  const kda_prewarm_result *ref; /* [PREWARM_SHAPES], the main thread's */
  call calls[PREWARM_SHAPES];
  const kda_gate_args *cold; /* non-NULL: prewarm this shape (no row) once first */
  kda_status cold_status;
  kda_prewarm_result cold_result;
  long launched;
  notes n;
} prewarm_worker;

static void *prewarm_work(void *p) {
  prewarm_worker *w = p;
  start_together();
  if (w->cold) {
    memset(&w->cold_result, 0, sizeof w->cold_result);
    w->cold_result.struct_size = sizeof w->cold_result;
    w->cold_status = kda_prewarm(w->ctx, KDA_KERNEL_GATE_CHUNK_CUMSUM, w->cold, 0, &w->cold_result);
  }
  for (int r = 0; r < PREWARM_ROUNDS; ++r)
    for (int s = 0; s < PREWARM_SHAPES; ++s) {
      kda_prewarm_result got;
      memset(&got, 0, sizeof got);
      got.struct_size = sizeof got;
      kda_status st = kda_prewarm(w->ctx, g_prewarm_kernel[s], &w->calls[s].a, 0, &got);
      NOTE(&w->n, st == KDA_OK && same_prewarm(&got, &w->ref[s]),
           "prewarm of shape %d: %d '%s', outcome %d config %s", s, (int)st,
           st == KDA_OK ? "" : kda_last_error(), got.outcome, got.config);
      const call *c = &w->calls[s];
      st = g_prewarm_kernel[s] == KDA_KERNEL_GATE_CHUNK_CUMSUM ? kda_gate_chunk_cumsum(w->ctx, &c->a, NULL)
           : g_prewarm_kernel[s] == KDA_KERNEL_CHUNK_LOCAL_CUMSUM
               ? kda_chunk_local_cumsum(w->ctx, &c->a, NULL)
               : kda_gate(w->ctx, &c->a, NULL);
      NOTE(&w->n, st == KDA_OK, "call of shape %d: %s", s, kda_last_error());
      if (st == KDA_OK) ++w->launched;
      st = kda_prewarm(w->ctx, KDA_KERNEL_CHUNK_INDICES, &c->a, 0, NULL);
      NOTE(&w->n, st == KDA_ERROR_INVALID_ARGUMENT, "prewarm of the chunk-index kernel: %d",
           (int)st);
    }
  return NULL;
}

/* kda_prewarm from 16 threads on one context (KDA_TUNE_CACHED, a database
 * file) while the same threads call the kernels, 40 rounds: three shapes
 * (fused, plain cumsum, gate) whose winner rows are in the database (the
 * stand-in driver cannot tune, so the rows are written through the store
 * under the context's own keys) are reported KDA_PREWARM_SKIPPED with the
 * stored row, exactly as on the main thread before; the kernel calls
 * launch the stored winner (one database read and one compile per slot);
 * the chunk-index kernel is refused on every thread. Meanwhile two threads
 * prewarm a shape with no row: one takes the key's lease and runs a real
 * tuning run (one NVRTC program, candidate benchmarks, validation), which
 * on the stand-in ends KDA_PREWARM_FAILED (validation cannot run); the
 * other waits for that job's row (each job holds the lease under its own
 * name, so two jobs of one process never tune a key at once), then takes
 * the lease over and fails the same way, or, past its wait (slow
 * sanitizer builds), runs the heuristic: KDA_OK, still
 * KDA_PREWARM_FAILED. The skips and the calls go on meanwhile. */
static void prewarm_from_sixteen_threads_with_kernel_calls_on_one_context(void **state) {
  (void)state;
  tmpdb db;
  tmpdb_make(&db);
  log_count log = {.match = "tuning stopped"};
  kda_options o = kda_options_default();
  o.tune_mode = KDA_TUNE_CACHED;
  o.db_path = db.path;
  o.tune_budget_ms = 50; /* the cold run: the heuristic candidate only */
  o.log_fn = count_log;
  o.log_user = &log;
  kda_context *ctx = NULL;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  call ref_calls[PREWARM_SHAPES];
  prewarm_calls_init(ref_calls);
  kda_prewarm_result ref[PREWARM_SHAPES];
  for (int s = 0; s < PREWARM_SHAPES; ++s) {
    kda__tune_keys keys;
    kda__config other;
    int bucket = -1;
    tr_slot_keys(ctx, g_prewarm_op[s], &ref_calls[s].a, &keys, &other, &bucket);
    tr_put_winner(ctx, &keys, &other, 10.0 + s);
    memset(&ref[s], 0, sizeof ref[s]);
    ref[s].struct_size = sizeof ref[s];
    assert_int_equal(kda_prewarm(ctx, g_prewarm_kernel[s], &ref_calls[s].a, 0, &ref[s]), KDA_OK);
    char text[64];
    kda__config_text(&other, text, sizeof text);
    assert_int_equal(ref[s].outcome, KDA_PREWARM_SKIPPED);
    assert_string_equal(ref[s].config, text);
    assert_int_equal(ref[s].bucket, bucket);
  }
  const kda_stats before = tr_stats(ctx);
  assert_int_equal(before.launches, 0);
  assert_int_equal(before.nvrtc_compiles, 0);

  call cold;
  stand_in_call_init(&cold, 2, 64, 64, 1000, KDA_DTYPE_BF16, KDA_GATE_SOFTPLUS);
  static prewarm_worker w[THREADS];
  for (int t = 0; t < THREADS; ++t) {
    memset(&w[t], 0, sizeof w[t]);
    w[t].ctx = ctx;
    w[t].ref = ref;
    prewarm_calls_init(w[t].calls);
    if (t < COLD_TUNERS) w[t].cold = &cold.a;
  }
  const long launches0 = fake_launches();
  const double t0 = now_s();
  run_threads(THREADS, prewarm_work, w, sizeof w[0]);
  const double took = now_s() - t0;
  const kda_stats s = tr_stats(ctx);
  long launched = 0;
  for (int t = 0; t < THREADS; ++t) launched += w[t].launched;
  printf("%d threads x %d rounds x %d shapes of prewarm + call in %.2f s; cold prewarm on %d "
         "threads: %s / %s (%s); %llu tuning runs, %llu compiles, %llu db result hits, "
         "%llu launches\n",
         THREADS, PREWARM_ROUNDS, PREWARM_SHAPES, took, COLD_TUNERS, kda_status_name(w[0].cold_status),
         kda_status_name(w[1].cold_status),
         w[0].cold_result.outcome == KDA_PREWARM_FAILED ? "failed" : "not failed",
         (unsigned long long)s.tuning_runs, (unsigned long long)s.nvrtc_compiles,
         (unsigned long long)s.db_result_hits, (unsigned long long)s.launches);
  assert_int_equal(sum_notes(w, sizeof w[0], offsetof(prewarm_worker, n), THREADS), 0);
  const uint64_t total = (uint64_t)THREADS * PREWARM_ROUNDS * PREWARM_SHAPES;
  assert_int_equal(launched, (long)total);
  assert_int_equal(s.launches, total);
  /* The stand-in also counts the tuning runs' benchmark launches. */
  assert_true(fake_launches() - launches0 >= (long)total);
  assert_int_equal(s.db_result_hits, PREWARM_SHAPES);
  /* One per slot's winner, one program per tuning run. */
  assert_int_equal(s.nvrtc_compiles, PREWARM_SHAPES + COLD_TUNERS);
  int tuned = 0;
  for (int t = 0; t < COLD_TUNERS; ++t) {
    assert_true(w[t].cold_status == KDA_ERROR_INTERNAL || w[t].cold_status == KDA_OK);
    assert_int_equal(w[t].cold_result.outcome, KDA_PREWARM_FAILED);
    tuned += w[t].cold_status == KDA_ERROR_INTERNAL;
  }
  assert_true(tuned >= 1); /* the lease holder's run failed validation */
  kda_context_destroy(ctx);
  assert_int_equal(fake_live_allocations(), 0);
  for (int t = 0; t < THREADS; ++t)
    for (int i = 0; i < PREWARM_SHAPES; ++i) stand_in_call_free(&w[t].calls[i]);
  for (int i = 0; i < PREWARM_SHAPES; ++i) stand_in_call_free(&ref_calls[i]);
  stand_in_call_free(&cold);
  tmpdb_remove(&db);
}

/* ------------------------------------------------------------------------ */
/* Database faults met by kernel calls from 16 threads                       */
/* ------------------------------------------------------------------------ */

/* Gives ctx, before its first database use, a store opened with flags.
 * Tests run as root, where chmod does not make a file unwritable:
 * KDA__STORE_ASSUME_UNWRITABLE reaches the same path. Warnings of the open
 * are logged by the context on its first use, as they would be. */
static void context_use_store(kda_context *ctx, const char *path, unsigned flags) {
  kda__store *s = NULL;
  const kda_status st = kda__store_open(path, flags, &s);
  assert_int_equal(st, KDA_OK);
  pthread_mutex_lock(&ctx->store_lock);
  const int was_opened = ctx->store_opened;
  if (!was_opened) {
    ctx->store_opened = 1;
    ctx->store = s;
  }
  pthread_mutex_unlock(&ctx->store_lock);
  if (was_opened) kda__store_close(s);
  assert_false(was_opened);
}

typedef struct db_counts {
  int64_t results, cubins;
} db_counts;

/* Rows in the file itself, through the public API (read-only). */
static db_counts file_rows(const char *path) {
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(path, KDA_DB_READ_ONLY, &db), KDA_OK);
  kda_db_stats st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  assert_int_equal(kda_db_stats_get(db, &st, NULL, NULL), KDA_OK);
  kda_db_close(db);
  return (db_counts){st.results, st.cubins};
}

enum { FAULT_SHAPES = 3, FAULT_ROUNDS = 60 };

typedef struct fault_worker {
  kda_context *ctx;
  call calls[FAULT_SHAPES];
  long launched;
  notes n;
} fault_worker;

static void fault_calls_init(call *calls) {
  stand_in_call_init(&calls[0], 4, 64, 64, 4096, KDA_DTYPE_BF16, KDA_GATE_SOFTPLUS);
  stand_in_call_init(&calls[1], 8, 64, 64, 2048, KDA_DTYPE_BF16, KDA_GATE_SOFTPLUS);
  stand_in_call_init(&calls[2], 2, 128, 32, 1024, KDA_DTYPE_F32, KDA_GATE_LOWER_BOUND);
}

static void *fault_work(void *p) {
  fault_worker *w = p;
  start_together();
  for (int r = 0; r < FAULT_ROUNDS; ++r)
    for (int s = 0; s < FAULT_SHAPES; ++s) {
      kda_status st = kda_gate_chunk_cumsum(w->ctx, &w->calls[s].a, NULL);
      NOTE(&w->n, st == KDA_OK, "shape %d: %s", s, kda_last_error());
      if (st == KDA_OK) ++w->launched;
    }
  return NULL;
}

/* Runs fault_work on 16 threads on ctx; returns the launches made. */
static long fault_run(kda_context *ctx) {
  static fault_worker w[THREADS];
  for (int t = 0; t < THREADS; ++t) {
    memset(&w[t], 0, sizeof w[t]);
    w[t].ctx = ctx;
    fault_calls_init(w[t].calls);
  }
  run_threads(THREADS, fault_work, w, sizeof w[0]);
  long launched = 0;
  for (int t = 0; t < THREADS; ++t) launched += w[t].launched;
  const int bad = sum_notes(w, sizeof w[0], offsetof(fault_worker, n), THREADS);
  for (int t = 0; t < THREADS; ++t)
    for (int i = 0; i < FAULT_SHAPES; ++i) stand_in_call_free(&w[t].calls[i]);
  assert_int_equal(bad, 0);
  return launched;
}

/* A context whose database file is not writable (KDA_TUNE_CACHED): 16
 * threads call three cold shapes at once, 60 rounds. Shape 0 has a
 * heuristic cubin in the file (loaded, no NVRTC), shape 1 a winner row
 * (read; its config compiled once), shape 2 nothing (the heuristic compiled
 * once); the new cubins go to the in-memory overlay. Every call runs, one
 * warning is logged ("not writable"), no persist failure is counted, and
 * the file still holds only its one result and one cubin. */
static void kernel_calls_on_a_read_only_database_run_and_warn_once(void **state) {
  (void)state;
  tmpdb db;
  tmpdb_make(&db);
  call shapes[FAULT_SHAPES];
  fault_calls_init(shapes);
  assert_int_equal(kda_compile_offline_store(KDA_KERNEL_GATE_CHUNK_CUMSUM, &shapes[0].a, 90,
                                             db.path, NULL), KDA_OK);
  kda_context *writer = context_make(KDA_TUNE_CACHED, db.path, NULL);
  kda__tune_keys keys;
  kda__config other;
  tr_slot_keys(writer, KDA__OP_GATE_CHUNK_CUMSUM, &shapes[1].a, &keys, &other, NULL);
  tr_put_winner(writer, &keys, &other, 5.0);
  kda_context_destroy(writer);
  const db_counts before = file_rows(db.path);
  assert_int_equal(before.results, 1);
  assert_int_equal(before.cubins, 1);

  log_count log = {.match = "not writable"};
  kda_context *ctx = context_make(KDA_TUNE_CACHED, db.path, &log);
  context_use_store(ctx, db.path, KDA__STORE_ASSUME_UNWRITABLE);
  const long launched = fault_run(ctx);
  const kda_stats s = tr_stats(ctx);
  printf("read-only database, %d threads x %d rounds x %d shapes: %llu launches, %llu compiles, "
         "%llu cubin hits, %llu result hits, %llu persist failures, %d warnings\n",
         THREADS, FAULT_ROUNDS, FAULT_SHAPES, (unsigned long long)s.launches,
         (unsigned long long)s.nvrtc_compiles, (unsigned long long)s.db_cubin_hits,
         (unsigned long long)s.db_result_hits, (unsigned long long)s.persist_failures,
         atomic_load(&log.warnings));
  const uint64_t total = (uint64_t)THREADS * FAULT_ROUNDS * FAULT_SHAPES;
  assert_int_equal(launched, (long)total);
  assert_int_equal(s.launches, total);
  assert_int_equal(s.nvrtc_compiles, 2);
  assert_int_equal(s.db_cubin_hits, 1);
  assert_int_equal(s.db_result_hits, 1);
  assert_int_equal(s.persist_failures, 0);
  assert_int_equal(atomic_load(&log.warnings), 1);
  assert_int_equal(atomic_load(&log.matched), 1);
  kda_context_destroy(ctx);
  const db_counts after = file_rows(db.path);
  assert_int_equal(after.results, before.results);
  assert_int_equal(after.cubins, before.cubins);
  for (int i = 0; i < FAULT_SHAPES; ++i) stand_in_call_free(&shapes[i]);
  tmpdb_remove(&db);
}

/* kda_context_db_path on 8 threads while 8 others make the context's first
 * kernel calls (which open the database): every answer is "" (not opened
 * yet) or the one path, a thread that saw the path never sees "" again,
 * and the final answer names the file asked for. */
typedef struct path_worker {
  kda_context *ctx;
  call *shape; /* NULL: a reader */
  atomic_int *callers_left;
  int reads, saw_empty, saw_path;
  char last[256];
  notes n;
} path_worker;

static void *path_work(void *p) {
  path_worker *w = p;
  start_together();
  if (w->shape != NULL) {
    for (int r = 0; r < 50; ++r)
      NOTE(&w->n, kda_gate_chunk_cumsum(w->ctx, &w->shape->a, NULL) == KDA_OK, "call %d: %s", r,
           kda_last_error());
    atomic_fetch_sub(w->callers_left, 1);
    return NULL;
  }
  int last_round = 0;
  while (!last_round) {
    last_round = atomic_load(w->callers_left) == 0; /* one more read after the last call */
    const char *path = kda_context_db_path(w->ctx);
    w->reads++;
    NOTE(&w->n, path != NULL, "read %d: NULL", w->reads);
    if (path == NULL) break;
    if (path[0] == '\0') {
      NOTE(&w->n, !w->saw_path, "read %d: \"\" after the path", w->reads);
      w->saw_empty++;
    } else {
      NOTE(&w->n, !w->saw_path || strcmp(path, w->last) == 0, "read %d: %s after %s", w->reads,
           path, w->last);
      snprintf(w->last, sizeof w->last, "%s", path);
      w->saw_path++;
    }
    /* A short nap: the callers take the same lock, and a reader spinning
     * on it would only slow them (and, under TSan, grow its history). */
    const struct timespec nap = {0, 20000};
    nanosleep(&nap, NULL);
  }
  return NULL;
}

static void db_path_read_on_eight_threads_while_eight_open_the_database(void **state) {
  (void)state;
  tmpdb db;
  tmpdb_make(&db);
  call shape;
  stand_in_call_init(&shape, 4, 64, 64, 256, KDA_DTYPE_BF16, KDA_GATE_SOFTPLUS);
  kda_context *ctx = context_make(KDA_TUNE_CACHED, db.path, NULL);
  assert_string_equal(kda_context_db_path(ctx), ""); /* opened at first use */
  atomic_int callers_left = THREADS / 2;
  path_worker w[THREADS];
  memset(w, 0, sizeof w);
  for (int i = 0; i < THREADS; ++i) {
    w[i].ctx = ctx;
    w[i].shape = i % 2 == 0 ? &shape : NULL;
    w[i].callers_left = &callers_left;
  }
  run_threads(THREADS, path_work, w, sizeof w[0]);
  assert_int_equal(sum_notes(w, sizeof w[0], offsetof(path_worker, n), THREADS), 0);
  const char *final = kda_context_db_path(ctx);
  int reads = 0, empty = 0;
  for (int i = 1; i < THREADS; i += 2) {
    assert_string_equal(w[i].last, final); /* each reader's last read came after the calls */
    reads += w[i].reads;
    empty += w[i].saw_empty;
  }
  printf("kda_context_db_path: %d reads on %d threads during %d first calls, %d of them \"\" "
         "(before the database was open), the rest %s\n",
         reads, THREADS / 2, THREADS / 2 * 50, empty, final);
  assert_non_null(strstr(final, strrchr(db.dir, '/')));
  assert_non_null(strstr(final, "/tune.db"));
  assert_int_equal(tr_stats(ctx).launches, THREADS / 2 * 50);
  kda_context_destroy(ctx);
  assert_string_equal(kda_context_db_path(NULL), "");
  /* KDA_TUNE_OFF and in-memory contexts never name a file. */
  ctx = context_make(KDA_TUNE_OFF, db.path, NULL);
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &shape.a, NULL), KDA_OK);
  assert_string_equal(kda_context_db_path(ctx), "");
  kda_context_destroy(ctx);
  ctx = context_make(KDA_TUNE_CACHED, ":memory:", NULL);
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &shape.a, NULL), KDA_OK);
  assert_string_equal(kda_context_db_path(ctx), "");
  kda_context_destroy(ctx);
  stand_in_call_free(&shape);
  tmpdb_remove(&db);
}

/* A context whose database file fills up (SQLite's max_page_count set to
 * the file's size): 16 threads call three cold shapes at once, 60 rounds
 * (KDA_TUNE_CACHED: each compiles its heuristic once and stores the
 * cubin). The first store fails, the store turns to its in-memory overlay
 * and later stores succeed there: every call runs, persist_failures is 1,
 * one "could not persist" warning and one from the store are logged, and
 * no cubin reached the file. */
static void full_disk_at_kernel_calls_counts_the_failure_and_every_call_runs(void **state) {
  (void)state;
  tmpdb db;
  tmpdb_make(&db);
  log_count log = {.match = "could not persist"};
  kda_context *ctx = context_make(KDA_TUNE_CACHED, db.path, &log);
  context_use_store(ctx, db.path, 0);
  kda__store *store = kda__context_store_lock(ctx);
  assert_non_null(store);
  sqlite3 *h = kda__store_handle(store);
  sqlite3_stmt *q = NULL;
  int rc = sqlite3_prepare_v2(h, "PRAGMA page_count", -1, &q, NULL);
  long long pages = rc == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW ? sqlite3_column_int64(q, 0) : -1;
  sqlite3_finalize(q);
  char sql[64];
  snprintf(sql, sizeof sql, "PRAGMA max_page_count = %lld", pages);
  rc = sqlite3_exec(h, sql, NULL, NULL, NULL);
  kda__context_store_unlock(ctx);
  assert_true(pages > 0);
  assert_int_equal(rc, SQLITE_OK);

  const long launched = fault_run(ctx);
  const kda_stats s = tr_stats(ctx);
  printf("full database, %d threads x %d rounds x %d shapes: %llu launches, %llu compiles, "
         "%llu persist failures, %d warnings (%d 'could not persist')\n",
         THREADS, FAULT_ROUNDS, FAULT_SHAPES, (unsigned long long)s.launches,
         (unsigned long long)s.nvrtc_compiles, (unsigned long long)s.persist_failures,
         atomic_load(&log.warnings), atomic_load(&log.matched));
  const uint64_t total = (uint64_t)THREADS * FAULT_ROUNDS * FAULT_SHAPES;
  assert_int_equal(launched, (long)total);
  assert_int_equal(s.launches, total);
  assert_int_equal(s.nvrtc_compiles, FAULT_SHAPES);
  assert_int_equal(s.persist_failures, 1);
  assert_int_equal(atomic_load(&log.matched), 1);
  assert_int_equal(atomic_load(&log.warnings), 2);
  kda_context_destroy(ctx);
  assert_int_equal(file_rows(db.path).cubins, 0);
  tmpdb_remove(&db);
}

enum { WAIT_ROUNDS = 20 };

typedef struct wait_worker {
  kda_context *ctx;
  call c;
  long launched;
  notes n;
} wait_worker;

static void *wait_work(void *p) {
  wait_worker *w = p;
  start_together();
  for (int r = 0; r < WAIT_ROUNDS; ++r) {
    const kda_status st = kda_gate_chunk_cumsum(w->ctx, &w->c.a, NULL);
    NOTE(&w->n, st == KDA_OK, "call: %s", kda_last_error());
    if (st == KDA_OK) ++w->launched;
  }
  return NULL;
}

/* KDA_TUNE_ON, a cold key whose lease another process holds and which it
 * never stores: 16 threads call it at once. The one building the slot
 * waits about 2 * tune_budget_ms + 3 s (budget 1 ms here), gives up with
 * one warning and runs the heuristic config; the others wait for that
 * build and get the same. Every call runs, nothing is tuned, one NVRTC
 * compile, and the other holder's lease is left alone. */
static void waiter_falls_back_to_the_heuristic_when_the_lease_holder_never_stores(void **state) {
  (void)state;
  tmpdb db;
  tmpdb_make(&db);
  log_count log = {.match = "gave up waiting"};
  kda_options o = kda_options_default();
  o.tune_mode = KDA_TUNE_ON;
  o.db_path = db.path;
  o.tune_budget_ms = 1;
  o.log_fn = count_log;
  o.log_user = &log;
  kda_context *ctx = NULL;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  static wait_worker w[THREADS];
  for (int t = 0; t < THREADS; ++t) {
    memset(&w[t], 0, sizeof w[t]);
    w[t].ctx = ctx;
    stand_in_call_init(&w[t].c, 4, 64, 64, 2048, KDA_DTYPE_BF16, KDA_GATE_SOFTPLUS);
  }
  kda__tune_keys keys;
  tr_slot_keys(ctx, KDA__OP_GATE_CHUNK_CUMSUM, &w[0].c.a, &keys, NULL, NULL);
  kda__store *other = NULL;
  assert_int_equal(kda__store_open(db.path, 0, &other), KDA_OK);
  kda__lease lease;
  assert_int_equal(kda__store_lease_acquire(other, keys.lease, "another-host:4242", 120, &lease),
                   KDA_OK);
  assert_true(lease.acquired);

  const double t0 = now_s();
  run_threads(THREADS, wait_work, w, sizeof w[0]);
  const double took = now_s() - t0;
  const kda_stats s = tr_stats(ctx);
  long launched = 0;
  for (int t = 0; t < THREADS; ++t) launched += w[t].launched;
  printf("lease held elsewhere: %d threads x %d calls in %.2f s, %llu tuning runs, %llu compiles, "
         "%d 'gave up waiting' warnings\n",
         THREADS, WAIT_ROUNDS, took, (unsigned long long)s.tuning_runs,
         (unsigned long long)s.nvrtc_compiles, atomic_load(&log.matched));
  assert_int_equal(sum_notes(w, sizeof w[0], offsetof(wait_worker, n), THREADS), 0);
  assert_int_equal(launched, (long)THREADS * WAIT_ROUNDS);
  assert_int_equal(s.launches, (uint64_t)THREADS * WAIT_ROUNDS);
  assert_true(took >= 3.0);
  assert_true(took < 60.0);
  assert_int_equal(s.tuning_runs, 0);
  assert_int_equal(s.nvrtc_compiles, 1);
  assert_int_equal(atomic_load(&log.matched), 1);
  kda__lease still;
  assert_int_equal(kda__store_lease_acquire(other, keys.lease, "a-third-host:1", 120, &still),
                   KDA_OK);
  assert_false(still.acquired);
  assert_string_equal(still.holder, "another-host:4242");
  kda__store_close(other);
  kda_context_destroy(ctx);
  for (int t = 0; t < THREADS; ++t) stand_in_call_free(&w[t].c);
  tmpdb_remove(&db);
}

int main(void) {
  /* Each test names its tuning mode; ctest's KDA_TUNE=off would override. */
  unsetenv("KDA_TUNE");
  const char *path = getenv("KDA_LIBCUDA");
  void *h = path ? dlopen(path, RTLD_NOW) : NULL;
  if (h) {
    *(void **)&fake_launches = dlsym(h, "fake_cuda_launches");
    *(void **)&fake_live_allocations = dlsym(h, "fake_cuda_live_allocations");
    *(void **)&fake_loaded_modules = dlsym(h, "fake_cuda_loaded_modules");
    *(void **)&fake_overlap_launches = dlsym(h, "fake_cuda_overlap_launches");
  }
  if (!fake_launches || !fake_live_allocations || !fake_loaded_modules || !fake_overlap_launches) {
    fprintf(stderr, "KDA_LIBCUDA must name the stand-in driver (tests/fake_cuda); got %s\n",
            path ? path : "(unset)");
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(pure_calls_from_sixteen_threads_match_one_thread),
      cmocka_unit_test(db_helpers_from_sixteen_threads_match_one_thread),
      cmocka_unit_test(db_show_on_sixteen_handles_at_once_orders_trials_as_one_thread),
      cmocka_unit_test(contexts_created_on_sixteen_threads_at_once_are_independent),
      cmocka_unit_test(kda_gate_from_sixteen_threads_compiles_once_and_launches_every_call),
      cmocka_unit_test(chunk_plan_read_from_sixteen_threads_launches_plainly_once_per_build),
      cmocka_unit_test(layer_gate_fwd_from_sixteen_threads_compiles_once_and_launches_every_kernel),
      cmocka_unit_test(prewarm_from_sixteen_threads_with_kernel_calls_on_one_context),
      cmocka_unit_test(kernel_calls_on_a_read_only_database_run_and_warn_once),
      cmocka_unit_test(db_path_read_on_eight_threads_while_eight_open_the_database),
      cmocka_unit_test(full_disk_at_kernel_calls_counts_the_failure_and_every_call_runs),
      cmocka_unit_test(waiter_falls_back_to_the_heuristic_when_the_lease_holder_never_stores),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
