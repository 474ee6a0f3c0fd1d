/* A small JSON reader for kda_db_import: the whole document into a tree.
 * Enough JSON for any file (objects, arrays, strings with escapes, numbers,
 * true/false/null); \u escapes outside ASCII become UTF-8. */
#ifndef KDA_SRC_DB_JSON_H
#define KDA_SRC_DB_JSON_H

#include <stddef.h>

typedef enum kda__json_type {
  KDA__JSON_NULL, KDA__JSON_BOOL, KDA__JSON_NUMBER, KDA__JSON_STRING, KDA__JSON_ARRAY,
  KDA__JSON_OBJECT
} kda__json_type;

typedef struct kda__json {
  kda__json_type type;
  double number;           /* NUMBER; BOOL: 0 or 1 */
  char *string;            /* STRING */
  struct kda__json *items; /* ARRAY and OBJECT values */
  char **keys;             /* OBJECT keys */
  size_t count;
} kda__json;

/* Parses text. 0 on success; -1 with "line L, column C: what" in err. */
int kda__json_parse(const char *text, kda__json *out, char *err, size_t err_size);
void kda__json_free(kda__json *v);
/* Member of an object, or NULL (also when v is not an object). */
const kda__json *kda__json_get(const kda__json *v, const char *key);

/* Writes s as a JSON string literal (quotes included); NULL as null. */
#include <stdio.h>
void kda__json_write_string(FILE *out, const char *s);
/* Writes a number that reads back as the same double; negative (unknown)
 * as null. */
void kda__json_write_opt(FILE *out, double v);

#endif
