/* Tuning leases: a row per key naming the process tuning it and until
 * when. Expiry, not the holder's goodbye, is what frees a lease, so a holder
 * that crashed blocks the others for at most its ttl. */
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "store_internal.h"

typedef struct lease_ctx {
  const char *key, *holder;
  double ttl_s;
  kda__lease *out;
  int released;
} lease_ctx;

static kda_status acquire_in(kda__store *s, sqlite3 *db, void *ctx) {
  lease_ctx *c = ctx;
  kda__lease *out = c->out;
  memset(out, 0, sizeof *out);
  sqlite3_stmt *st = NULL;
  /* Read and decide inside BEGIN IMMEDIATE: no other writer can slip in
   * between seeing an expired lease and taking it. */
  int rc = kda__store_prepare(db, "SELECT holder, expires_at FROM leases WHERE key = ?1", &st);
  if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 1, c->key);
  int exists = 0;
  double now = kda__store_now();
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      exists = 1;
      const unsigned char *h = sqlite3_column_text(st, 0);
      snprintf(out->holder, sizeof out->holder, "%s", h != NULL ? (const char *)h : "");
      out->expires_at = sqlite3_column_double(st, 1);
    }
    rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
  }
  sqlite3_finalize(st);
  st = NULL;
  if (rc != SQLITE_OK) return kda__store_fail(s, db, rc, "reading a lease");
  int mine = exists && strcmp(out->holder, c->holder) == 0;
  if (exists && !mine && out->expires_at > now) return KDA_OK; /* held by another */
  rc = kda__store_prepare(db, "INSERT OR REPLACE INTO leases(key, holder, expires_at) VALUES(?1, ?2, ?3)", &st);
  if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 1, c->key);
  if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 2, c->holder);
  if (rc == SQLITE_OK) rc = sqlite3_bind_double(st, 3, now + c->ttl_s);
  if (rc == SQLITE_OK) rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
  sqlite3_finalize(st);
  if (rc != SQLITE_OK) return kda__store_fail(s, db, rc, "writing a lease");
  out->acquired = 1;
  out->taken_over = exists && !mine;
  snprintf(out->holder, sizeof out->holder, "%s", c->holder);
  out->expires_at = now + c->ttl_s;
  return KDA_OK;
}

kda_status kda__store_lease_acquire(kda__store *s, const char *key, const char *holder,
                                    double ttl_s, kda__lease *out) {
  KDA__REQUIRE(s != NULL && key != NULL && out != NULL, KDA_ERROR_NULL_POINTER,
               "kda__store_lease_acquire: NULL argument");
  KDA__REQUIRE(ttl_s > 0, KDA_ERROR_INVALID_ARGUMENT, "kda__store_lease_acquire: ttl %g <= 0", ttl_s);
  memset(out, 0, sizeof *out);
  char self[256];
  if (holder == NULL) {
    kda__store_default_holder(self, sizeof self);
    holder = self;
  }
  lease_ctx c = {key, holder, ttl_s, out, 0};
  return kda__store_write(s, NULL, "taking a lease", acquire_in, &c);
}

static kda_status release_in(kda__store *s, sqlite3 *db, void *ctx) {
  lease_ctx *c = ctx;
  sqlite3_stmt *st = NULL;
  int rc = kda__store_prepare(db, "DELETE FROM leases WHERE key = ?1 AND holder = ?2", &st);
  if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 1, c->key);
  if (rc == SQLITE_OK) rc = kda__store_bind_text(st, 2, c->holder);
  if (rc == SQLITE_OK) rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
  c->released = rc == SQLITE_OK && sqlite3_changes(db) > 0;
  sqlite3_finalize(st);
  return rc == SQLITE_OK ? KDA_OK : kda__store_fail(s, db, rc, "releasing a lease");
}

kda_status kda__store_lease_release(kda__store *s, const char *key, const char *holder,
                                    int *released) {
  if (released != NULL) *released = 0;
  KDA__REQUIRE(s != NULL && key != NULL, KDA_ERROR_NULL_POINTER,
               "kda__store_lease_release: NULL argument");
  char self[256];
  if (holder == NULL) {
    kda__store_default_holder(self, sizeof self);
    holder = self;
  }
  lease_ctx c = {key, holder, 0, NULL, 0};
  /* Leases live where puts go: a release must not be retried elsewhere. */
  kda_status st = kda__store_write(s, kda__store_writer(s), "releasing a lease", release_in, &c);
  if (released != NULL) *released = c.released;
  return st;
}
