/* The public tuning-database handle: opening, the running library's
 * versions, listing and showing results. See include/kda/kda_db.h. */
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "db_internal.h"
#include "error.h"
#include "kernel_source.h"
#include "sha256.h"
#include "tuner.h"

int64_t kda__db_now(void) { return (int64_t)time(NULL); }

kda_status kda_db_open(const char *path, uint32_t flags, kda_db **out) {
  KDA__REQUIRE(out != NULL, KDA_ERROR_NULL_POINTER, "kda_db_open: out is NULL");
  *out = NULL;
  KDA__REQUIRE((flags & ~(uint32_t)(KDA_DB_READ_ONLY | KDA_DB_VERIFY)) == 0,
               KDA_ERROR_INVALID_ARGUMENT, "kda_db_open: unknown flags 0x%x", (unsigned)flags);
  kda_db *db = calloc(1, sizeof *db);
  KDA__REQUIRE(db != NULL, KDA_ERROR_OUT_OF_MEMORY, "kda_db_open: out of memory");
  db->memory_requested = path != NULL && strcmp(path, ":memory:") == 0;
  unsigned sf = 0;
  if (flags & KDA_DB_READ_ONLY) sf |= KDA__STORE_READ_ONLY;
  if (flags & KDA_DB_VERIFY) sf |= KDA__STORE_VERIFY;
  kda_status st = kda__store_open(db->memory_requested ? "" : path, sf, &db->store);
  if (st != KDA_OK) {
    free(db);
    return st;
  }
  /* Reading a database that does not exist yet is reading an empty one:
   * the store's "cannot create" warning does not apply. */
  if ((flags & KDA_DB_READ_ONLY) && !db->memory_requested && kda__store_path(db->store)[0] != '\0') {
    kda__store_probe probe;
    kda__store_probe_path(kda__store_path(db->store), &probe);
    if (!probe.exists) kda__store_pop_warning(db->store);
  }
  *out = db;
  return KDA_OK;
}

void kda_db_close(kda_db *db) {
  if (db == NULL) return;
  kda__store_close(db->store);
  free(db);
}

const char *kda_db_path(const kda_db *db) { return db != NULL ? kda__store_path(db->store) : ""; }

const char *kda_db_path_rule(const kda_db *db) {
  return db != NULL ? kda__store_path_rule(db->store) : "";
}

const char *kda_db_mode(const kda_db *db) {
  if (db == NULL) return "memory";
  switch (kda__store_get_mode(db->store)) {
    case KDA__STORE_MODE_READ_WRITE:
      return kda__store_is_read_only(db->store) ? "memory" : "read-write";
    case KDA__STORE_MODE_READ_ONLY:
      return "read-only";
    case KDA__STORE_MODE_IMMUTABLE:
      return "immutable";
    default:
      return "memory";
  }
}

int kda_db_file_unusable(const kda_db *db) {
  if (db == NULL || db->memory_requested) return 0;
  const char *path = kda__store_path(db->store);
  if (path[0] == '\0') return 0;
  kda__store_probe probe;
  kda__store_probe_path(path, &probe);
  /* A missing file opened read-only is simply empty; an existing one that
   * left us in memory (or whose reads failed) is not being used. */
  kda__store *s = db->store;
  return probe.exists && (kda__store_get_mode(s) == KDA__STORE_MODE_MEMORY ||
                          kda__store_handle(s) == NULL);
}

const char *kda_db_pop_warning(kda_db *db) {
  if (db == NULL) return NULL;
  const char *w = kda__store_pop_warning(db->store);
  if (w == NULL) return NULL;
  kda__db_copy(db->warning, sizeof db->warning, w);
  return db->warning;
}

/* ---------------------------------------------------------------- current */

kda_status kda_db_current(kda_db_versions *out) {
  KDA__REQUIRE(out != NULL, KDA_ERROR_NULL_POINTER, "kda_db_current: out is NULL");
  memset(out, 0, sizeof *out);
  out->struct_size = sizeof *out;
  kda__db_copy(out->lib_version, sizeof out->lib_version, kda_version());
  kda__db_copy(out->nvrtc_version, sizeof out->nvrtc_version, kda__nvrtc_build_version());
  out->schema_version = KDA__STORE_SCHEMA_VERSION;
  kda__source_set set;
  const char *dir = getenv("KDA_KERNEL_DIR");
  KDA__TRY(kda__source_set_load(dir && *dir ? dir : NULL, &set));
  kda_status st = kda__template_hash(&set, "gate_cumsum.cu", out->gate_cumsum_hash);
  if (st == KDA_OK) st = kda__template_hash(&set, "chunk_indices.cu", out->chunk_indices_hash);
  kda__source_set_free(&set);
  return st;
}

const kda_db_versions *kda__db_current(kda_db *db) {
  if (!db->have_current) {
    /* A failure (a template folder gone missing) leaves empty hashes: every
     * row then reads as stale, which is what such a library would do. */
    kda_db_current(&db->current);
    db->have_current = 1;
  }
  return &db->current;
}

/* ---------------------------------------------------------------- records */

/* Integer value of " name=" in a spec text; -1 if absent. */
static int32_t spec_field(const char *spec, const char *name) {
  size_t len = strlen(name);
  for (const char *p = spec; (p = strstr(p, name)) != NULL; p += len) {
    if ((p == spec || p[-1] == ' ') && p[len] == '=') {
      char *end = NULL;
      long v = strtol(p + len + 1, &end, 10);
      if (end != p + len + 1) return (int32_t)v;
    }
  }
  return -1;
}

/* Text value of " name=" (up to the next space) into buf; 0 if found. */
static int spec_text(const char *spec, const char *name, char *buf, size_t size) {
  size_t len = strlen(name);
  for (const char *p = spec; (p = strstr(p, name)) != NULL; p += len) {
    if ((p == spec || p[-1] == ' ') && p[len] == '=') {
      const char *v = p + len + 1;
      size_t n = strcspn(v, " ");
      if (n == 0 || n >= size) return -1;
      memcpy(buf, v, n);
      buf[n] = '\0';
      return 0;
    }
  }
  return -1;
}

static void short_key(const kda__store_key *k, char out[17]) {
  kda__sha256_ctx c;
  kda__sha256_init(&c);
  const char *parts[] = {k->gpu_key, k->kernel, k->spec, k->template_hash, k->space_hash};
  char bucket[32];
  snprintf(bucket, sizeof bucket, "%lld", (long long)k->bucket);
  for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
    const char *p = parts[i] ? parts[i] : "";
    kda__sha256_update(&c, p, strlen(p) + 1);
    if (i == 2) kda__sha256_update(&c, bucket, strlen(bucket) + 1);
  }
  unsigned char d[32];
  kda__sha256_final(&c, d);
  char hex[65];
  kda__sha256_hex(d, hex);
  memcpy(out, hex, 16);
  out[16] = '\0';
}

static const char *kernel_hash(const kda_db_versions *v, const char *kernel) {
  if (kernel != NULL && strcmp(kernel, "chunk_indices") == 0) return v->chunk_indices_hash;
  return v->gate_cumsum_hash;
}

void kda__db_record_from(kda_db *db, const kda__store_key *k, const kda__store_record *r,
                         kda_db_record *o) {
  memset(o, 0, sizeof *o);
  o->struct_size = sizeof *o;
  o->id = r->id;
  short_key(k, o->key);
  kda__db_copy(o->gpu_key, sizeof o->gpu_key, k->gpu_key ? k->gpu_key : "");
  o->copy_bw_gbps = -1;
  int found = 0;
  if (k->gpu_key != NULL &&
      kda__store_lookup_gpu(db->store, k->gpu_key, &found, o->gpu_name, sizeof o->gpu_name,
                            &o->copy_bw_gbps) != KDA_OK) {
    found = 0;
  }
  if (!found) {
    o->gpu_name[0] = '\0';
    o->copy_bw_gbps = -1;
  }
  kda__db_copy(o->kernel, sizeof o->kernel, k->kernel ? k->kernel : "");
  kda__db_copy(o->spec, sizeof o->spec, k->spec ? k->spec : "");
  o->bucket = k->bucket;
  o->heads = spec_field(o->spec, "H");
  o->head_dim = spec_field(o->spec, "K");
  o->chunk = spec_field(o->spec, "chunk");
  kda__db_copy(o->config, sizeof o->config, r->config);
  o->config_id = r->config_id;
  o->median_us = r->median_us;
  o->gbps = r->gbps;
  o->max_err = r->max_err;
  o->candidates = r->candidates;
  o->rejected = r->rejected;
  o->heuristic_us = r->heuristic_us;
  o->tune_ms = r->tune_ms;
  o->compile_ms = r->compile_ms;
  o->created_at = r->created_at;
  kda__db_copy(o->lib_version, sizeof o->lib_version, r->lib_version);
  kda__db_copy(o->nvrtc_version, sizeof o->nvrtc_version, r->nvrtc_version);
  kda__db_copy(o->template_hash, sizeof o->template_hash, k->template_hash ? k->template_hash : "");
  kda__db_copy(o->space_hash, sizeof o->space_hash, k->space_hash ? k->space_hash : "");
  o->in_memory = r->in_overlay;
  const kda_db_versions *v = kda__db_current(db);
  if (strcmp(o->lib_version, v->lib_version) != 0) o->stale |= KDA_DB_STALE_LIB;
  if (strcmp(o->template_hash, kernel_hash(v, o->kernel)) != 0) o->stale |= KDA_DB_STALE_TEMPLATE;
  /* No KDA_DB_STALE_NVRTC for a result: its config is used whatever NVRTC
   * build compiles it (only cubins are per build), so a server whose
   * PyTorch wheel ships another NVRTC still reads it. */
}

/* The public entry point a gate_cumsum row serves, from its spec flags. */
static const char *entry_of(const kda_db_record *r) {
  if (strcmp(r->kernel, "gate_cumsum") != 0) return r->kernel;
  if (spec_field(r->spec, "cumsum") == 0) return "gate";
  return spec_field(r->spec, "gate") > 0 ? "gate_chunk_cumsum" : "chunk_local_cumsum";
}

const char *kda_db_record_entry(const kda_db_record *r) {
  return r != NULL ? entry_of(r) : "";
}

void kda__db_cubin_from(kda_db *db, const kda__store_cubin_row *row, kda_db_cubin *o) {
  memset(o, 0, sizeof *o);
  o->struct_size = sizeof *o;
  o->id = row->id;
  o->arch = row->arch;
  kda__db_copy(o->nvrtc_version, sizeof o->nvrtc_version, row->nvrtc_version ? row->nvrtc_version : "");
  kda__db_copy(o->spec, sizeof o->spec, row->spec ? row->spec : "");
  kda__db_copy(o->config, sizeof o->config, row->config ? row->config : "");
  kda__db_copy(o->sha256, sizeof o->sha256, row->sha256 ? row->sha256 : "");
  o->size = row->size;
  o->compile_ms = row->compile_ms;
  o->created_at = row->created_at;
  o->last_used = row->last_used;
  const kda_db_versions *v = kda__db_current(db);
  const char *h = row->source_hash ? row->source_hash : "";
  if (strcmp(h, v->gate_cumsum_hash) != 0 && strcmp(h, v->chunk_indices_hash) != 0)
    o->stale |= KDA_DB_STALE_TEMPLATE;
  if (strcmp(o->nvrtc_version, v->nvrtc_version) != 0) o->stale |= KDA_DB_STALE_NVRTC;
}

/* ---------------------------------------------------------------- filters */

kda_db_filter kda_db_filter_default(void) {
  kda_db_filter f;
  memset(&f, 0, sizeof f);
  f.struct_size = sizeof f;
  f.bucket = -1;
  return f;
}

kda_status kda__db_filter_copy(const kda_db_filter *f, kda_db_filter *out) {
  *out = kda_db_filter_default();
  if (f == NULL) return KDA_OK;
  KDA__REQUIRE(f->struct_size >= offsetof(kda_db_filter, older_than_s) + sizeof f->older_than_s &&
                   f->struct_size <= sizeof *f,
               KDA_ERROR_BAD_OPTIONS, "kda_db_filter: struct_size %u unknown (expected %zu)",
               (unsigned)f->struct_size, sizeof *f);
  *out = *f;
  out->struct_size = sizeof *out;
  return KDA_OK;
}

static int contains_nocase(const char *hay, const char *needle) {
  size_t n = strlen(needle);
  if (n == 0) return 1;
  for (; *hay; hay++) {
    size_t i = 0;
    while (i < n && hay[i] && tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i])) i++;
    if (i == n) return 1;
  }
  return 0;
}

int kda__db_match(const kda_db_filter *f, const kda_db_record *r, int64_t now) {
  if (f == NULL) return 1;
  if (f->gpu != NULL && f->gpu[0] != '\0' &&
      strncmp(r->gpu_key, f->gpu, strlen(f->gpu)) != 0 &&
      !(r->gpu_name[0] != '\0' && contains_nocase(r->gpu_name, f->gpu))) {
    return 0;
  }
  if (f->kernel != NULL && f->kernel[0] != '\0' && strcmp(r->kernel, f->kernel) != 0 &&
      strcmp(entry_of(r), f->kernel) != 0)
    return 0;
  if (f->heads > 0 && r->heads != f->heads) return 0;
  if (f->head_dim > 0 && r->head_dim != f->head_dim) return 0;
  if (f->chunk > 0 && r->chunk != f->chunk) return 0;
  if (f->bucket >= 0 && r->bucket != f->bucket) return 0;
  if (f->stale_only && r->stale == 0) return 0;
  if (f->older_than_s > 0 && !(r->created_at < now - f->older_than_s)) return 0;
  return 1;
}

/* ---------------------------------------------------------------- listing */

typedef struct collect_job {
  kda_db *db;
  const kda_db_filter *f;
  int64_t now;
  kda_db_record *rows;
  size_t n, cap;
  int oom;
} collect_job;

static int collect_one(void *user, const kda__store_key *key, const kda__store_record *rec) {
  collect_job *j = user;
  if (j->n == j->cap) {
    size_t cap = j->cap ? j->cap * 2 : 16;
    kda_db_record *rows = realloc(j->rows, cap * sizeof *rows);
    if (rows == NULL) {
      j->oom = 1;
      return 1;
    }
    j->rows = rows;
    j->cap = cap;
  }
  kda__db_record_from(j->db, key, rec, &j->rows[j->n]);
  if (kda__db_match(j->f, &j->rows[j->n], j->now)) j->n++;
  return 0;
}

kda_status kda__db_collect(kda_db *db, const kda_db_filter *f, kda_db_record **out, size_t *n) {
  *out = NULL;
  *n = 0;
  kda_db_filter flt;
  KDA__TRY(kda__db_filter_copy(f, &flt));
  /* The store filters exactly on gpu_key and kernel (template) only; a
   * GPU name or prefix, and an entry point's name, are ours. */
  const int template_name = flt.kernel != NULL && (strcmp(flt.kernel, "gate_cumsum") == 0 ||
                                                   strcmp(flt.kernel, "chunk_indices") == 0);
  collect_job j = {db, &flt, kda__db_now(), NULL, 0, 0, 0};
  kda_status st = kda__store_list_results(db->store, NULL, template_name ? flt.kernel : NULL,
                                          collect_one, &j);
  if (st == KDA_OK && j.oom) st = kda__fail(KDA_ERROR_OUT_OF_MEMORY, "listing results: out of memory");
  if (st != KDA_OK) {
    free(j.rows);
    return st;
  }
  *out = j.rows;
  *n = j.n;
  return KDA_OK;
}

kda_status kda_db_list(kda_db *db, const kda_db_filter *f, kda_db_record_fn fn, void *user) {
  KDA__REQUIRE(db != NULL && fn != NULL, KDA_ERROR_NULL_POINTER, "kda_db_list: NULL argument");
  kda_db_record *rows;
  size_t n;
  KDA__TRY(kda__db_collect(db, f, &rows, &n));
  for (size_t i = 0; i < n; i++)
    if (fn(user, &rows[i]) != 0) break;
  free(rows);
  return KDA_OK;
}

/* ------------------------------------------------------------------ show */

typedef struct trial_job {
  kda_db_trial *rows;
  size_t n, cap;
  size_t *order;
  int oom;
} trial_job;

static int collect_trial(void *user, const kda__store_trial *t) {
  trial_job *j = user;
  if (j->n == j->cap) {
    size_t cap = j->cap ? j->cap * 2 : 32;
    kda_db_trial *rows = realloc(j->rows, cap * sizeof *rows);
    if (rows == NULL) {
      j->oom = 1;
      return 1;
    }
    j->rows = rows;
    j->cap = cap;
  }
  kda_db_trial *o = &j->rows[j->n++];
  memset(o, 0, sizeof *o);
  o->struct_size = sizeof *o;
  kda__db_copy(o->config, sizeof o->config, t->config ? t->config : "");
  o->config_id = t->config_id;
  o->median_us = t->median_us;
  o->p10_us = t->p10_us;
  o->p90_us = t->p90_us;
  o->status = kda__trial_status_name(t->status);
  if (o->status == NULL) o->status = "rejected";
  kda__db_copy(o->reason, sizeof o->reason, t->reason ? t->reason : "");
  return 0;
}

/* What a trial is sorted by, carried in the sorted array itself: qsort's
 * comparator has no user pointer, and a global one would be shared by
 * threads showing on different handles. */
typedef struct trial_key {
  double median_us; /* < 0: not measured */
  size_t index;     /* insertion order */
} trial_key;

static int trial_order(const void *a, const void *b) {
  const trial_key *x = a, *y = b;
  int mx = x->median_us >= 0, my = y->median_us >= 0;
  if (mx != my) return my - mx; /* measured first */
  if (mx && x->median_us != y->median_us) return x->median_us < y->median_us ? -1 : 1;
  return (x->index > y->index) - (x->index < y->index);
}

static int is_decimal(const char *s) {
  if (*s == '\0') return 0;
  for (; *s; s++)
    if (!isdigit((unsigned char)*s)) return 0;
  return 1;
}

kda_status kda_db_show(kda_db *db, const char *key_or_id, kda_db_record *out, kda_db_trial_fn fn,
                       void *user) {
  KDA__REQUIRE(db != NULL && key_or_id != NULL && out != NULL, KDA_ERROR_NULL_POINTER,
               "kda_db_show: NULL argument");
  kda_db_record *rows;
  size_t n;
  KDA__TRY(kda__db_collect(db, NULL, &rows, &n));
  const char *want = key_or_id[0] == '#' ? key_or_id + 1 : key_or_id;
  size_t hits = 0, at = 0;
  int by_id = is_decimal(want);
  size_t len = strlen(want);
  for (size_t i = 0; i < n; i++) {
    int hit = (by_id && rows[i].id == strtoll(want, NULL, 10) && !rows[i].in_memory) ||
              (len >= 4 && len <= 16 && strncasecmp(rows[i].key, want, len) == 0);
    if (hit) {
      hits++;
      at = i;
    }
  }
  if (hits != 1) {
    free(rows);
    return kda__fail(KDA_ERROR_INVALID_ARGUMENT,
                     hits == 0 ? "no tuning result has the id or key '%s'"
                               : "'%s' matches several results; give more digits of the key",
                     key_or_id);
  }
  *out = rows[at];
  free(rows);
  kda__store_record rec;
  memset(&rec, 0, sizeof rec);
  rec.id = out->id;
  rec.in_overlay = out->in_memory;
  trial_job j = {0};
  kda_status st = kda__store_list_trials(db->store, &rec, collect_trial, &j);
  if (st == KDA_OK && j.oom) st = kda__fail(KDA_ERROR_OUT_OF_MEMORY, "kda_db_show: out of memory");
  trial_key *order = st == KDA_OK ? malloc((j.n + 1) * sizeof *order) : NULL;
  if (st == KDA_OK && order == NULL) st = kda__fail(KDA_ERROR_OUT_OF_MEMORY, "kda_db_show: out of memory");
  if (st == KDA_OK) {
    for (size_t i = 0; i < j.n; i++) order[i] = (trial_key){j.rows[i].median_us, i};
    qsort(order, j.n, sizeof *order, trial_order);
    for (size_t i = 0; fn != NULL && i < j.n; i++)
      if (fn(user, &j.rows[order[i].index]) != 0) break;
  }
  free(order);
  free(j.rows);
  return st;
}

/* ----------------------------------------------------------------- shape */

static int dtype_of(const char *name, kda_dtype *out) {
  static const char *names[] = {"f32", "f16", "bf16", "i32", "i64"};
  for (int i = 0; i < 5; i++)
    if (strcmp(name, names[i]) == 0) {
      *out = (kda_dtype)i;
      return 0;
    }
  return -1;
}

kda_status kda_db_record_shape(const kda_db_record *r, kda_kernel *kernel, kda_gate_args *shape,
                               int64_t *tokens) {
  KDA__REQUIRE(r != NULL && kernel != NULL && shape != NULL, KDA_ERROR_NULL_POINTER,
               "kda_db_record_shape: NULL argument");
  KDA__REQUIRE(memchr(r->spec, '\0', sizeof r->spec) != NULL, KDA_ERROR_INVALID_ARGUMENT,
               "kda_db_record_shape: the record's spec is not a string");
  char in[16], outdt[16], idx[16];
  int32_t H = spec_field(r->spec, "H"), K = spec_field(r->spec, "K");
  int32_t chunk = spec_field(r->spec, "chunk"), cumsum = spec_field(r->spec, "cumsum");
  int32_t gate = spec_field(r->spec, "gate"), bias = spec_field(r->spec, "bias");
  int32_t alog = spec_field(r->spec, "alog"), scale = spec_field(r->spec, "scale");
  int32_t reverse = spec_field(r->spec, "reverse"), varlen = spec_field(r->spec, "varlen");
  kda_gate_args a = kda_gate_args_default();
  int ok = strncmp(r->spec, "gate_cumsum ", 12) == 0 && spec_text(r->spec, "in", in, sizeof in) == 0 &&
           spec_text(r->spec, "out", outdt, sizeof outdt) == 0 &&
           spec_text(r->spec, "idx", idx, sizeof idx) == 0 && dtype_of(in, &a.g_dtype) == 0 &&
           dtype_of(outdt, &a.out_dtype) == 0 && dtype_of(idx, &a.cu_seqlens_dtype) == 0 &&
           H > 0 && K > 0 && chunk > 0 && cumsum >= 0 && gate >= 0 && gate <= 2 && bias >= 0 &&
           alog >= 0 && scale >= 0 && reverse >= 0 && varlen >= 0;
  KDA__REQUIRE(ok, KDA_ERROR_INVALID_ARGUMENT,
               "kda_db_record_shape: spec '%s' is not one this library writes", r->spec);
  a.num_heads = H;
  a.head_dim = K;
  a.chunk_size = chunk;
  a.gate = (kda_gate_kind)gate;
  /* Stand-ins: "present", aligned for the widest vector access. */
  if (bias) a.dt_bias = (const float *)(uintptr_t)(UINT64_C(1) << 42);
  if (alog) a.A_log = (const float *)(uintptr_t)(UINT64_C(1) << 43);
  a.has_scale = scale;
  if (scale) a.scale = 1.0f;
  if (gate == KDA_GATE_LOWER_BOUND) a.lower_bound = -5.0f;
  a.reverse = reverse;
  static const int64_t bucket_tokens[] = {512, 2048, 8192, 32768, 65536};
  int64_t t = r->bucket >= 0 && r->bucket < 5 ? bucket_tokens[r->bucket] : 4096;
  a.batch = 1;
  a.seq_len = t;
  if (varlen) a.num_seqs = 1;
  /* varlen=2: rows in the launch; kda_prewarm reads this as a request. */
  if (varlen == 2) a.cu_seqlens_host = (const void *)(uintptr_t)1;
  /* varlen=3: a chunk plan's specialization, likewise. */
  if (varlen == 3) a.chunk_plan = (const kda_chunk_plan *)(uintptr_t)1;
  *kernel = !cumsum ? KDA_KERNEL_GATE
            : gate == KDA_GATE_NONE ? KDA_KERNEL_CHUNK_LOCAL_CUMSUM
                                    : KDA_KERNEL_GATE_CHUNK_CUMSUM;
  *shape = a;
  if (tokens != NULL) *tokens = t;
  return KDA_OK;
}

int kda_db_gpu_key(const kda_device_info *info, char *buf, size_t size) {
  return kda__store_gpu_key(info, buf, size);
}
