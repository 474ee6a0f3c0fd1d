/* `kda-tune import`: kda_db_import of any file into a writable database
 * gives a status, never a crash. The JSON reader is also run on its own
 * (it is what import parses with). Whatever was imported must export and
 * import again as "nothing new" (import is idempotent), and is then purged
 * so every input starts from an empty database. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_json.h"
#include "fuzz_tmp.h"
#include "kda/kda_db.h"

static kda_db *g_db;

static void close_db(void) { kda_db_close(g_db); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (g_db == NULL) {
    char path[4096];
    snprintf(path, sizeof path, "%s/import.db", fuzz_dir());
    if (kda_db_open(path, 0, &g_db) != KDA_OK || strcmp(kda_db_mode(g_db), "read-write") != 0) {
      fprintf(stderr, "cannot open %s: %s\n", path, kda_last_error());
      abort();
    }
    atexit(close_db);
  }
  /* The reader alone, on the bytes up to the first NUL. */
  char *text = malloc(size + 1);
  if (text == NULL) return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  kda__json doc;
  char err[256];
  if (kda__json_parse(text, &doc, err, sizeof err) == 0) kda__json_free(&doc);
  free(text);

  const char *in = fuzz_write("in.json", data, size);
  int64_t imported = -1, kept = -1, skipped = -1;
  kda_status st = kda_db_import(g_db, in, &imported, &kept, &skipped);
  if (imported < 0 || kept < 0 || skipped < 0) abort(); /* counts are always written */
  if (st != KDA_OK && st != KDA_ERROR_INVALID_ARGUMENT && st != KDA_ERROR_STORE) {
    fprintf(stderr, "unexpected status %s: %s\n", kda_status_name(st), kda_last_error());
    abort();
  }
  if (imported > 0) {
    char out[4096];
    snprintf(out, sizeof out, "%s/out.json", fuzz_dir());
    FILE *f = fopen(out, "w");
    if (f == NULL) abort();
    st = kda_db_export(g_db, NULL, KDA_DB_FORMAT_JSON, f);
    fclose(f);
    if (st != KDA_OK) {
      fprintf(stderr, "export failed: %s\n", kda_last_error());
      abort();
    }
    int64_t again = -1;
    st = kda_db_import(g_db, out, &again, NULL, NULL);
    if (st != KDA_OK || again != 0) {
      fprintf(stderr, "re-import of the export: %s, %lld imported: %s\n", kda_status_name(st),
              (long long)again, kda_last_error());
      abort();
    }
    int64_t deleted = 0;
    kda_db_filter all = kda_db_filter_default();
    if (kda_db_purge(g_db, &all, KDA_DB_PURGE_RESULTS, 0, NULL, NULL, &deleted, NULL) != KDA_OK)
      abort();
  }
  return 0;
}
