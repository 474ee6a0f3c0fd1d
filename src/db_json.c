/* JSON reading and the few writing helpers export needs.
 *
 * Numbers are written and read in the C locale whatever the host process set:
 * a server that calls setlocale(LC_ALL, "") under a comma locale (de_DE) would
 * otherwise write "12,5" (bad JSON, and a broken CSV column) and read "12.5"
 * back as 12. uselocale() changes this thread only, so it is safe while other
 * threads run. */
#include "db_json.h"

#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static locale_t c_numeric;
static pthread_once_t c_numeric_once = PTHREAD_ONCE_INIT;

static void make_c_numeric(void) { c_numeric = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0); }

/* Switches this thread to the C locale for numbers; returns what to restore
 * (0 when the C locale object could not be made: numbers then follow the
 * process's locale, as before). */
static locale_t enter_c_numeric(void) {
  pthread_once(&c_numeric_once, make_c_numeric);
  return c_numeric != (locale_t)0 ? uselocale(c_numeric) : (locale_t)0;
}

static void leave_c_numeric(locale_t old) {
  if (old != (locale_t)0) uselocale(old);
}

typedef struct parser {
  const char *s, *p;
  char *err;
  size_t err_size;
  int depth;
} parser;

static int fail(parser *ps, const char *what) {
  int line = 1, col = 1;
  for (const char *q = ps->s; q < ps->p; q++) {
    if (*q == '\n') {
      line++;
      col = 1;
    } else {
      col++;
    }
  }
  snprintf(ps->err, ps->err_size, "line %d, column %d: %s", line, col, what);
  return -1;
}

static void skip_ws(parser *ps) {
  while (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r') ps->p++;
}

static int hex4(const char *p, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return -1;
  }
  *out = v;
  return 0;
}

static int parse_string(parser *ps, char **out) {
  ps->p++; /* opening quote */
  size_t cap = 32, n = 0;
  char *buf = malloc(cap);
  if (buf == NULL) return fail(ps, "out of memory");
  for (;;) {
    if (n + 8 >= cap) {
      char *b = realloc(buf, cap *= 2);
      if (b == NULL) {
        free(buf);
        return fail(ps, "out of memory");
      }
      buf = b;
    }
    unsigned char c = (unsigned char)*ps->p;
    if (c == '\0') {
      free(buf);
      return fail(ps, "unterminated string");
    }
    if (c < 0x20) {
      free(buf);
      return fail(ps, "control character in string");
    }
    ps->p++;
    if (c == '"') break;
    if (c != '\\') {
      buf[n++] = (char)c;
      continue;
    }
    char e = *ps->p++;
    switch (e) {
      case '"': buf[n++] = '"'; break;
      case '\\': buf[n++] = '\\'; break;
      case '/': buf[n++] = '/'; break;
      case 'b': buf[n++] = '\b'; break;
      case 'f': buf[n++] = '\f'; break;
      case 'n': buf[n++] = '\n'; break;
      case 'r': buf[n++] = '\r'; break;
      case 't': buf[n++] = '\t'; break;
      case 'u': {
        unsigned u;
        if (hex4(ps->p, &u) != 0) {
          free(buf);
          return fail(ps, "bad \\u escape");
        }
        ps->p += 4;
        if (u >= 0xd800 && u < 0xdc00 && ps->p[0] == '\\' && ps->p[1] == 'u') {
          unsigned lo;
          if (hex4(ps->p + 2, &lo) == 0 && lo >= 0xdc00 && lo < 0xe000) {
            u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
            ps->p += 6;
          }
        }
        if (u < 0x80) {
          buf[n++] = (char)u;
        } else if (u < 0x800) {
          buf[n++] = (char)(0xc0 | (u >> 6));
          buf[n++] = (char)(0x80 | (u & 0x3f));
        } else if (u < 0x10000) {
          buf[n++] = (char)(0xe0 | (u >> 12));
          buf[n++] = (char)(0x80 | ((u >> 6) & 0x3f));
          buf[n++] = (char)(0x80 | (u & 0x3f));
        } else {
          buf[n++] = (char)(0xf0 | (u >> 18));
          buf[n++] = (char)(0x80 | ((u >> 12) & 0x3f));
          buf[n++] = (char)(0x80 | ((u >> 6) & 0x3f));
          buf[n++] = (char)(0x80 | (u & 0x3f));
        }
        break;
      }
      default:
        free(buf);
        ps->p--;
        return fail(ps, "bad escape in string");
    }
  }
  buf[n] = '\0';
  *out = buf;
  return 0;
}

static int parse_value(parser *ps, kda__json *v);

static int push(parser *ps, kda__json *v, size_t *cap, char *key) {
  if (v->count == *cap) {
    size_t c = *cap ? *cap * 2 : 8;
    kda__json *items = realloc(v->items, c * sizeof *items);
    if (items == NULL) return fail(ps, "out of memory");
    v->items = items;
    if (v->type == KDA__JSON_OBJECT) {
      char **keys = realloc(v->keys, c * sizeof *keys);
      if (keys == NULL) return fail(ps, "out of memory");
      v->keys = keys;
    }
    *cap = c;
  }
  memset(&v->items[v->count], 0, sizeof v->items[0]);
  if (v->type == KDA__JSON_OBJECT) v->keys[v->count] = key;
  v->count++;
  return 0;
}

static int parse_container(parser *ps, kda__json *v, int object) {
  v->type = object ? KDA__JSON_OBJECT : KDA__JSON_ARRAY;
  if (++ps->depth > 64) return fail(ps, "nested too deeply");
  ps->p++;
  size_t cap = 0;
  skip_ws(ps);
  if (*ps->p == (object ? '}' : ']')) {
    ps->p++;
    ps->depth--;
    return 0;
  }
  for (;;) {
    skip_ws(ps);
    char *key = NULL;
    if (object) {
      if (*ps->p != '"') return fail(ps, "expected a member name in quotes");
      if (parse_string(ps, &key) != 0) return -1;
      skip_ws(ps);
      if (*ps->p != ':') {
        free(key);
        return fail(ps, "expected ':' after a member name");
      }
      ps->p++;
    }
    if (push(ps, v, &cap, key) != 0) {
      free(key);
      return -1;
    }
    if (parse_value(ps, &v->items[v->count - 1]) != 0) return -1;
    skip_ws(ps);
    if (*ps->p == ',') {
      ps->p++;
      continue;
    }
    if (*ps->p == (object ? '}' : ']')) {
      ps->p++;
      ps->depth--;
      return 0;
    }
    return fail(ps, object ? "expected ',' or '}'" : "expected ',' or ']'");
  }
}

static const char *digits_end(const char *p) {
  while (*p >= '0' && *p <= '9') p++;
  return p;
}

/* The end of the JSON number at p, or NULL:
 * -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static const char *json_number_end(const char *p) {
  if (*p == '-') p++;
  if (*p == '0') p++;
  else if (*p >= '1' && *p <= '9') p = digits_end(p);
  else return NULL;
  if (*p == '.') {
    const char *q = digits_end(p + 1);
    if (q == p + 1) return NULL;
    p = q;
  }
  if (*p == 'e' || *p == 'E') {
    p++;
    if (*p == '+' || *p == '-') p++;
    const char *q = digits_end(p);
    if (q == p) return NULL;
    p = q;
  }
  return p;
}

static int parse_value(parser *ps, kda__json *v) {
  memset(v, 0, sizeof *v);
  skip_ws(ps);
  char c = *ps->p;
  if (c == '{' || c == '[') return parse_container(ps, v, c == '{');
  if (c == '"') {
    v->type = KDA__JSON_STRING;
    return parse_string(ps, &v->string);
  }
  if (strncmp(ps->p, "null", 4) == 0) {
    ps->p += 4;
    v->type = KDA__JSON_NULL;
    return 0;
  }
  if (strncmp(ps->p, "true", 4) == 0 || strncmp(ps->p, "false", 5) == 0) {
    v->type = KDA__JSON_BOOL;
    v->number = c == 't';
    ps->p += c == 't' ? 4 : 5;
    return 0;
  }
  if (c == '-' || (c >= '0' && c <= '9')) {
    /* JSON's grammar first: strtod alone also takes hex, "inf" and "nan". */
    const char *end = json_number_end(ps->p);
    if (end == NULL) return fail(ps, "bad number");
    locale_t old = enter_c_numeric();
    v->number = strtod(ps->p, NULL);
    leave_c_numeric(old);
    v->type = KDA__JSON_NUMBER;
    ps->p = end;
    return 0;
  }
  return fail(ps, c == '\0' ? "unexpected end of file" : "unexpected character");
}

int kda__json_parse(const char *text, kda__json *out, char *err, size_t err_size) {
  parser ps = {text, text, err, err_size, 0};
  memset(out, 0, sizeof *out);
  if (parse_value(&ps, out) != 0) {
    kda__json_free(out);
    return -1;
  }
  skip_ws(&ps);
  if (*ps.p != '\0') {
    kda__json_free(out);
    return fail(&ps, "text after the end of the document");
  }
  return 0;
}

void kda__json_free(kda__json *v) {
  if (v == NULL) return;
  for (size_t i = 0; i < v->count; i++) {
    kda__json_free(&v->items[i]);
    if (v->keys != NULL) free(v->keys[i]);
  }
  free(v->items);
  free(v->keys);
  free(v->string);
  memset(v, 0, sizeof *v);
}

const kda__json *kda__json_get(const kda__json *v, const char *key) {
  if (v == NULL || v->type != KDA__JSON_OBJECT) return NULL;
  for (size_t i = 0; i < v->count; i++)
    if (strcmp(v->keys[i], key) == 0) return &v->items[i];
  return NULL;
}

void kda__json_write_string(FILE *out, const char *s) {
  if (s == NULL) {
    fputs("null", out);
    return;
  }
  fputc('"', out);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\') fprintf(out, "\\%c", *p);
    else if (*p == '\n') fputs("\\n", out);
    else if (*p == '\t') fputs("\\t", out);
    else if (*p < 0x20) fprintf(out, "\\u%04x", *p);
    else fputc(*p, out);
  }
  fputc('"', out);
}

void kda__json_write_opt(FILE *out, double v) {
  if (!(v >= 0) || !isfinite(v)) {
    fputs("null", out);
    return;
  }
  char buf[64];
  locale_t old = enter_c_numeric();
  for (int digits = 15; digits <= 17; digits++) {
    snprintf(buf, sizeof buf, "%.*g", digits, v);
    if (strtod(buf, NULL) == v) break;
  }
  leave_c_numeric(old);
  fputs(buf, out);
}
