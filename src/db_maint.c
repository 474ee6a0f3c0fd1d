/* Tuning database statistics, purging and cubin checks for the public
 * kda_db API (include/kda/kda_db.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "context_internal.h"
#include "db_internal.h"
#include "error.h"
#include "sha256.h"
#include "tuner.h"

/* ----------------------------------------------------------------- stats */

typedef struct cubin_count {
  kda_db *db;
  int64_t stale;
} cubin_count;

static int count_stale_cubin(void *user, const kda__store_cubin_row *row) {
  cubin_count *c = user;
  kda_db_cubin cb;
  kda__db_cubin_from(c->db, row, &cb);
  if (cb.stale) c->stale++;
  return 0;
}

kda_status kda_db_stats_get(kda_db *db, kda_db_stats *out, kda_db_count_fn fn, void *user) {
  KDA__REQUIRE(db != NULL && out != NULL, KDA_ERROR_NULL_POINTER, "kda_db_stats_get: NULL argument");
  kda__store_stats s;
  KDA__TRY(kda__store_get_stats(db->store, &s));
  memset(out, 0, sizeof *out);
  out->struct_size = sizeof *out;
  out->schema_version = s.schema_version;
  out->file_bytes = s.file_bytes;
  out->gpus = s.gpus;
  out->results = s.results;
  out->trials = s.trials;
  out->cubins = s.cubins;
  out->cubin_bytes = s.cubin_bytes;
  out->leases = s.leases;
  out->memory_results = s.overlay_results;
  kda_db_record *rows;
  size_t n;
  KDA__TRY(kda__db_collect(db, NULL, &rows, &n));
  /* Rows come ordered by GPU then kernel: groups are runs. */
  for (size_t i = 0; i < n;) {
    size_t end = i;
    int64_t stale = 0;
    while (end < n && strcmp(rows[end].gpu_key, rows[i].gpu_key) == 0 &&
           strcmp(rows[end].kernel, rows[i].kernel) == 0) {
      stale += rows[end].stale != 0;
      end++;
    }
    out->stale_results += stale;
    if (fn != NULL && fn(user, rows[i].gpu_key, rows[i].gpu_name, rows[i].kernel,
                         (int64_t)(end - i), stale) != 0) {
      fn = NULL;
    }
    i = end;
  }
  free(rows);
  cubin_count c = {db, 0};
  KDA__TRY(kda__store_list_cubins(db->store, 0, count_stale_cubin, &c));
  out->stale_cubins = c.stale;
  return KDA_OK;
}

/* ----------------------------------------------------------------- purge */

typedef struct cubin_pick {
  kda_db *db;
  const kda_db_filter *f;
  int64_t now;
  kda_db_cubin *rows;
  size_t n, cap;
  int oom;
} cubin_pick;

static int pick_cubin(void *user, const kda__store_cubin_row *row) {
  cubin_pick *p = user;
  if (row->in_overlay) return 0;
  kda_db_cubin cb;
  kda__db_cubin_from(p->db, row, &cb);
  if (p->f->stale_only && cb.stale == 0) return 0;
  if (p->f->older_than_s > 0 && !(cb.last_used < p->now - p->f->older_than_s)) return 0;
  if (p->n == p->cap) {
    size_t cap = p->cap ? p->cap * 2 : 16;
    kda_db_cubin *rows = realloc(p->rows, cap * sizeof *rows);
    if (rows == NULL) {
      p->oom = 1;
      return 1;
    }
    p->rows = rows;
    p->cap = cap;
  }
  p->rows[p->n++] = cb;
  return 0;
}

static kda_status purge_results(kda_db *db, const kda_db_filter *f, int32_t dry_run,
                                kda_db_purge_fn *fn, void *user, int64_t *count) {
  kda_db_record *rows;
  size_t n;
  KDA__TRY(kda__db_collect(db, f, &rows, &n));
  int64_t *ids = malloc((n + 1) * sizeof *ids);
  size_t m = 0;
  kda_status st = ids != NULL ? KDA_OK : kda__fail(KDA_ERROR_OUT_OF_MEMORY, "purge: out of memory");
  for (size_t i = 0; st == KDA_OK && i < n; i++) {
    if (rows[i].in_memory) continue; /* nothing of the file */
    ids[m++] = rows[i].id;
  }
  if (st == KDA_OK && !dry_run) st = kda__store_delete_results(db->store, ids, m, NULL);
  if (st == KDA_OK) {
    *count = (int64_t)m;
    for (size_t i = 0; *fn != NULL && i < n; i++) {
      if (rows[i].in_memory) continue;
      if ((*fn)(user, &rows[i], NULL) != 0) *fn = NULL;
    }
  }
  free(ids);
  free(rows);
  return st;
}

static kda_status purge_cubins(kda_db *db, const kda_db_filter *f, int32_t dry_run,
                               kda_db_purge_fn *fn, void *user, int64_t *count) {
  cubin_pick p = {db, f, kda__db_now(), NULL, 0, 0, 0};
  kda_status st = kda__store_list_cubins(db->store, 0, pick_cubin, &p);
  if (st == KDA_OK && p.oom) st = kda__fail(KDA_ERROR_OUT_OF_MEMORY, "purge: out of memory");
  int64_t *ids = st == KDA_OK ? malloc((p.n + 1) * sizeof *ids) : NULL;
  if (st == KDA_OK && ids == NULL) st = kda__fail(KDA_ERROR_OUT_OF_MEMORY, "purge: out of memory");
  for (size_t i = 0; st == KDA_OK && i < p.n; i++) ids[i] = p.rows[i].id;
  if (st == KDA_OK && !dry_run) st = kda__store_delete_cubins(db->store, ids, p.n, NULL);
  if (st == KDA_OK) {
    *count = (int64_t)p.n;
    for (size_t i = 0; *fn != NULL && i < p.n; i++)
      if ((*fn)(user, NULL, &p.rows[i]) != 0) *fn = NULL;
  }
  free(ids);
  free(p.rows);
  return st;
}

kda_status kda_db_purge(kda_db *db, const kda_db_filter *f, uint32_t what, int32_t dry_run,
                        kda_db_purge_fn fn, void *user, int64_t *results_deleted,
                        int64_t *cubins_deleted) {
  if (results_deleted != NULL) *results_deleted = 0;
  if (cubins_deleted != NULL) *cubins_deleted = 0;
  KDA__REQUIRE(db != NULL, KDA_ERROR_NULL_POINTER, "kda_db_purge: db is NULL");
  KDA__REQUIRE((what & ~(uint32_t)(KDA_DB_PURGE_RESULTS | KDA_DB_PURGE_CUBINS)) == 0,
               KDA_ERROR_INVALID_ARGUMENT, "kda_db_purge: unknown bits 0x%x in what", (unsigned)what);
  kda_db_filter flt;
  KDA__TRY(kda__db_filter_copy(f, &flt));
  KDA__REQUIRE(dry_run || strcmp(kda_db_mode(db), "read-write") == 0, KDA_ERROR_READ_ONLY,
               "the tuning database %s is not open for writing (%s); nothing was deleted",
               kda_db_path(db)[0] ? kda_db_path(db) : "(in memory)", kda_db_mode(db));
  int64_t r = 0, c = 0;
  if (what & KDA_DB_PURGE_RESULTS) KDA__TRY(purge_results(db, &flt, dry_run, &fn, user, &r));
  if (results_deleted != NULL) *results_deleted = r;
  if (what & KDA_DB_PURGE_CUBINS) KDA__TRY(purge_cubins(db, &flt, dry_run, &fn, user, &c));
  if (cubins_deleted != NULL) *cubins_deleted = c;
  return KDA_OK;
}

/* ---------------------------------------------------------- cubin checks */

typedef struct check_job {
  kda_db *db;
  kda_db_cubin_check_fn fn;
  void *user;
  int64_t checked, bad;
  int64_t *bad_ids;
  size_t bad_cap;
  int oom;
  kda_context *ctx; /* load checks only */
  /* A load met a lost context: no cubin can load and none is to blame,
   * so the check stops and says so (the message, without its status). */
  int lost;
  char lost_message[1024];
} check_job;

static void note_bad(check_job *j, int64_t id) {
  if ((size_t)j->bad >= j->bad_cap) {
    size_t cap = j->bad_cap ? j->bad_cap * 2 : 16;
    int64_t *ids = realloc(j->bad_ids, cap * sizeof *ids);
    if (ids == NULL) {
      j->oom = 1;
      return;
    }
    j->bad_ids = ids;
    j->bad_cap = cap;
  }
  j->bad_ids[j->bad] = id;
  j->bad++;
}

static int check_one(void *user, const kda__store_cubin_row *row) {
  check_job *j = user;
  kda_db_cubin cb;
  kda__db_cubin_from(j->db, row, &cb);
  char problem[256] = "";
  unsigned char d[32];
  char hex[65];
  kda__sha256(row->blob, row->blob_size, d);
  kda__sha256_hex(d, hex);
  const char *name;
  size_t name_len, cubin_size;
  const void *cubin;
  if (row->blob == NULL || row->blob_size == 0) {
    snprintf(problem, sizeof problem, "empty blob");
  } else if (strcmp(hex, cb.sha256) != 0) {
    snprintf(problem, sizeof problem, "SHA-256 mismatch: stored %.16s..., bytes hash to %.16s...",
             cb.sha256, hex);
  } else if ((int64_t)row->blob_size != row->size) {
    snprintf(problem, sizeof problem, "size column says %lld bytes, blob has %zu",
             (long long)row->size, row->blob_size);
  } else if (kda__cubin_unframe(row->blob, row->blob_size, &name, &name_len, &cubin,
                                &cubin_size) != 0) {
    snprintf(problem, sizeof problem, "not a framed cubin (no kernel name header)");
  } else if (cubin_size < 4 || memcmp(cubin, "\177ELF", 4) != 0) {
    snprintf(problem, sizeof problem, "framed payload is not an ELF cubin");
  }
  j->checked++;
  int ok = problem[0] == '\0';
  if (!ok && !row->in_overlay) note_bad(j, row->id);
  return j->fn != NULL ? j->fn(j->user, &cb, ok, ok ? "" : problem) : 0;
}

kda_status kda_db_check_cubins(kda_db *db, int32_t drop, kda_db_cubin_check_fn fn, void *user,
                               int64_t *checked, int64_t *bad) {
  KDA__REQUIRE(db != NULL, KDA_ERROR_NULL_POINTER, "kda_db_check_cubins: db is NULL");
  KDA__REQUIRE(!drop || strcmp(kda_db_mode(db), "read-write") == 0, KDA_ERROR_READ_ONLY,
               "the tuning database %s is not open for writing; cannot drop cubins",
               kda_db_path(db));
  check_job j;
  memset(&j, 0, sizeof j);
  j.db = db, j.fn = fn, j.user = user;
  kda_status st = kda__store_list_cubins(db->store, 1, check_one, &j);
  if (st == KDA_OK && j.oom) st = kda__fail(KDA_ERROR_OUT_OF_MEMORY, "checking cubins: out of memory");
  if (st == KDA_OK && drop && j.bad > 0)
    st = kda__store_delete_cubins(db->store, j.bad_ids, (size_t)j.bad, NULL);
  if (checked != NULL) *checked = j.checked;
  if (bad != NULL) *bad = j.bad;
  free(j.bad_ids);
  return st;
}

static int load_one(void *user, const kda__store_cubin_row *row) {
  check_job *j = user;
  kda_context *ctx = j->ctx;
  if (row->arch != ctx->arch) return 0;
  kda_db_cubin cb;
  kda__db_cubin_from(j->db, row, &cb);
  const char *name;
  size_t name_len, cubin_size;
  const void *cubin;
  char problem[512] = "";
  if (kda__cubin_unframe(row->blob, row->blob_size, &name, &name_len, &cubin, &cubin_size) != 0) {
    snprintf(problem, sizeof problem, "not a framed cubin");
  } else {
    char lowered[4097];
    void *copy = malloc(cubin_size); /* the driver wants an aligned image */
    if (copy == NULL || name_len >= sizeof lowered) {
      snprintf(problem, sizeof problem, copy == NULL ? "out of memory" : "kernel name too long");
    } else {
      memcpy(copy, cubin, cubin_size);
      memcpy(lowered, name, name_len);
      lowered[name_len] = '\0';
      CUmodule module = NULL;
      CUfunction function = NULL;
      const kda_status st = kda__context_load(ctx, copy, lowered, &module, &function);
      if (st == KDA_ERROR_CONTEXT_LOST) {
        j->lost = 1;
        const char *m = kda_last_error(), *name = "KDA_ERROR_CONTEXT_LOST: ";
        if (strncmp(m, name, strlen(name)) == 0) m += strlen(name);
        kda__db_copy(j->lost_message, sizeof j->lost_message, m);
        free(copy);
        return 1;
      }
      if (st != KDA_OK) {
        kda__db_copy(problem, sizeof problem, kda_last_error());
      } else {
        int pushed = 0;
        if (kda__context_enter(ctx, &pushed) == KDA_OK) {
          ctx->drv->cuModuleUnload(module);
          kda__context_leave(ctx, pushed);
        }
      }
    }
    free(copy);
  }
  j->checked++;
  int ok = problem[0] == '\0';
  if (!ok) j->bad++;
  return j->fn != NULL ? j->fn(j->user, &cb, ok, ok ? "" : problem) : 0;
}

kda_status kda_db_load_cubins(kda_db *db, kda_context *ctx, kda_db_cubin_check_fn fn, void *user,
                              int64_t *tried, int64_t *bad) {
  KDA__REQUIRE(db != NULL && ctx != NULL, KDA_ERROR_NULL_POINTER, "kda_db_load_cubins: NULL argument");
  check_job j;
  memset(&j, 0, sizeof j);
  j.db = db, j.fn = fn, j.user = user, j.ctx = ctx;
  kda_status st = kda__store_list_cubins(db->store, 1, load_one, &j);
  if (tried != NULL) *tried = j.checked;
  if (bad != NULL) *bad = j.bad;
  if (j.lost) return kda__fail(KDA_ERROR_CONTEXT_LOST, "%s", j.lost_message);
  return st;
}

/* ------------------------------------------------------ offline cubins */

kda_status kda_db_has_offline_cubin(kda_db *db, kda_kernel kernel, const kda_gate_args *shape,
                                    int32_t arch, int32_t *present) {
  KDA__REQUIRE(db != NULL && shape != NULL && present != NULL, KDA_ERROR_NULL_POINTER,
               "kda_db_has_offline_cubin: NULL argument");
  *present = 0;
  kda__offline_cubin oc;
  KDA__TRY(kda__offline_cubin_make(kernel, shape, arch, &oc));
  int found = 0, tampered = 0;
  void *blob = NULL;
  size_t size = 0;
  kda_status st = kda__store_lookup_cubin(db->store, &oc.key, &found, &blob, &size, &tampered);
  kda__offline_cubin_free(&oc);
  free(blob);
  KDA__TRY(st);
  *present = found;
  return KDA_OK;
}
