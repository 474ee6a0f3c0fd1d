/* Shape sets: parsing values, expanding into specializations, reading a
 * shapes file (format in shapes_file.h). */
#include "shapes_file.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const shape_keys[] = {"heads", "head-dim", "chunk", "gate", "bias",
                                         "dtype", "out-dtype", "varlen", "host-rows", "chunk-plan", "tokens",
                                         "seqs", "scale", "reverse", "kernel", "model", "tp",
                                         "g-align", "out-align"};
#define NUM_KEYS (sizeof shape_keys / sizeof shape_keys[0])
const size_t shape_key_count = NUM_KEYS;

void shape_set_init(shape_set *s) {
  memset(s, 0, sizeof *s);
  s->gate = -1;
  s->out_dtype = -1;
  s->kernel = -1;
}

static int fail(char *err, size_t size, const char *fmt, const char *a, const char *b) {
  snprintf(err, size, fmt, a, b);
  return -1;
}

/* Comma-separated integers in [lo, hi] into out (count in *n). */
static int int_list(const char *key, const char *v, int64_t lo, int64_t hi, int64_t *out,
                    int32_t *n, char *err, size_t size) {
  *n = 0;
  const char *p = v;
  for (;;) {
    char *end = NULL;
    errno = 0;
    long long x = strtoll(p, &end, 10);
    if (end == p || errno != 0 || x < lo || x > hi || (*end != ',' && *end != '\0')) {
      snprintf(err, size, "%s=%s: expected comma-separated integers in [%lld, %lld]", key, v,
               (long long)lo, (long long)hi);
      return -1;
    }
    if (*n >= SHAPE_LIST_MAX) {
      snprintf(err, size, "%s=%s: at most %d values", key, v, SHAPE_LIST_MAX);
      return -1;
    }
    out[(*n)++] = x;
    if (*end == '\0') return 0;
    p = end + 1;
  }
}

static int int32_list(const char *key, const char *v, int64_t lo, int64_t hi, int32_t *out,
                      int32_t *n, char *err, size_t size) {
  int64_t tmp[SHAPE_LIST_MAX];
  if (int_list(key, v, lo, hi, tmp, n, err, size) != 0) return -1;
  for (int32_t i = 0; i < *n; i++) out[i] = (int32_t)tmp[i];
  return 0;
}

static int yes_no_both(const char *key, const char *v, int32_t *out, char *err, size_t size) {
  if (!strcmp(v, "yes")) *out = 2;
  else if (!strcmp(v, "no")) *out = 1;
  else if (!strcmp(v, "both")) *out = 3;
  else return fail(err, size, "%s=%s: expected yes, no or both", key, v);
  return 0;
}

static int dtype_of(const char *name, int32_t *out) {
  if (!strcmp(name, "f32") || !strcmp(name, "fp32") || !strcmp(name, "float32")) *out = KDA_DTYPE_F32;
  else if (!strcmp(name, "f16") || !strcmp(name, "fp16") || !strcmp(name, "float16")) *out = KDA_DTYPE_F16;
  else if (!strcmp(name, "bf16") || !strcmp(name, "bfloat16")) *out = KDA_DTYPE_BF16;
  else return -1;
  return 0;
}

int shape_set_apply(shape_set *s, const char *key, const char *v, char *err, size_t size) {
  if (v == NULL || v[0] == '\0') return fail(err, size, "%s: needs a value%s", key, "");
  if (!strcmp(key, "heads"))
    return int32_list(key, v, 1, KDA_MAX_HEADS, s->heads, &s->nheads, err, size);
  if (!strcmp(key, "head-dim"))
    return int32_list(key, v, 1, KDA_MAX_HEAD_DIM, s->head_dim, &s->nhead_dim, err, size);
  if (!strcmp(key, "chunk")) {
    if (int32_list(key, v, KDA_MIN_CHUNK, KDA_MAX_CHUNK, s->chunk, &s->nchunk, err, size) != 0) return -1;
    for (int32_t i = 0; i < s->nchunk; i++)
      if (s->chunk[i] & (s->chunk[i] - 1)) return fail(err, size, "%s=%s: chunk sizes are powers of two (16..256)", key, v);
    return 0;
  }
  if (!strcmp(key, "tokens"))
    return int_list(key, v, 1, (int64_t)1 << 31, s->tokens, &s->ntokens, err, size);
  if (!strcmp(key, "tp")) return int32_list(key, v, 1, 1024, s->tp, &s->ntp, err, size);
  if (!strcmp(key, "seqs")) {
    int32_t n = 0, x[SHAPE_LIST_MAX];
    if (int32_list(key, v, 1, 1 << 20, x, &n, err, size) != 0) return -1;
    if (n != 1) return fail(err, size, "%s=%s: one value only", key, v);
    s->seqs = x[0];
    return 0;
  }
  if (!strcmp(key, "gate")) {
    if (!strcmp(v, "softplus")) s->gate = KDA_GATE_SOFTPLUS;
    else if (!strcmp(v, "lower-bound")) s->gate = KDA_GATE_LOWER_BOUND;
    else if (!strcmp(v, "none")) s->gate = KDA_GATE_NONE;
    else return fail(err, size, "%s=%s: expected softplus, lower-bound or none", key, v);
    return 0;
  }
  if (!strcmp(key, "dtype")) {
    s->ndtype = 0;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", v);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
      if (s->ndtype >= SHAPE_LIST_MAX || dtype_of(t, &s->dtype[s->ndtype]) != 0)
        return fail(err, size, "%s=%s: expected f32, f16 or bf16 (comma-separated)", key, v);
      s->ndtype++;
    }
    if (s->ndtype == 0) return fail(err, size, "%s=%s: expected f32, f16 or bf16", key, v);
    return 0;
  }
  if (!strcmp(key, "out-dtype")) {
    if (dtype_of(v, &s->out_dtype) != 0 || s->out_dtype == KDA_DTYPE_F16)
      return fail(err, size, "%s=%s: expected f32 or bf16", key, v);
    return 0;
  }
  if (!strcmp(key, "bias")) return yes_no_both(key, v, &s->bias, err, size);
  if (!strcmp(key, "varlen")) return yes_no_both(key, v, &s->varlen, err, size);
  if (!strcmp(key, "host-rows")) return yes_no_both(key, v, &s->host_rows, err, size);
  if (!strcmp(key, "chunk-plan")) return yes_no_both(key, v, &s->chunk_plan, err, size);
  if (!strcmp(key, "scale")) return yes_no_both(key, v, &s->scale, err, size);
  if (!strcmp(key, "reverse")) return yes_no_both(key, v, &s->reverse, err, size);
  if (!strcmp(key, "kernel")) {
    if (!strcmp(v, "gate_chunk_cumsum")) s->kernel = KDA_KERNEL_GATE_CHUNK_CUMSUM;
    else if (!strcmp(v, "chunk_local_cumsum")) s->kernel = KDA_KERNEL_CHUNK_LOCAL_CUMSUM;
    else if (!strcmp(v, "gate")) s->kernel = KDA_KERNEL_GATE;
    else return fail(err, size, "%s=%s: expected gate_chunk_cumsum, chunk_local_cumsum or gate", key, v);
    return 0;
  }
  if (!strcmp(key, "g-align") || !strcmp(key, "out-align")) {
    int32_t *dst = key[0] == 'g' ? &s->g_align : &s->out_align;
    char *end = NULL;
    errno = 0;
    const long x = strtol(v, &end, 10);
    if (end == v || *end != '\0' || errno != 0 || x < 1 || x > 256 || (x & (x - 1)) != 0)
      return fail(err, size, "%s=%s: expected a power of two from 1 to 256 (bytes)", key, v);
    *dst = (int32_t)x;
    return 0;
  }
  if (!strcmp(key, "model")) {
    if (preset_find(v) == NULL) {
      snprintf(err, size, "model=%s: unknown model; known: %s", v, preset_names());
      return -1;
    }
    s->model = preset_find(v)->name;
    return 0;
  }
  char valid[256] = "";
  for (size_t i = 0; i < NUM_KEYS; i++) {
    strncat(valid, i ? ", " : "", sizeof valid - strlen(valid) - 1);
    strncat(valid, shape_keys[i], sizeof valid - strlen(valid) - 1);
  }
  snprintf(err, size, "unknown key '%s'; valid keys: %s", key, valid);
  return -1;
}

static const char *dt_name(int32_t d) {
  return d == KDA_DTYPE_F16 ? "f16" : d == KDA_DTYPE_BF16 ? "bf16" : "f32";
}

/* The alignment a stand-in address of a shape stands for (NULL: 256). */
static unsigned align_of(const void *p) {
  const uintptr_t v = (uintptr_t)p & 255u;
  return v == 0 ? 256u : (unsigned)(v & -v);
}

void shape_words(kda_kernel kernel, const kda_gate_args *a, char *buf, size_t size) {
  char views[48] = "";
  if (align_of(a->g) < 256 || align_of(a->out) < 256)
    snprintf(views, sizeof views, " g-align=%u out-align=%u", align_of(a->g), align_of(a->out));
  snprintf(buf, size, "%s H=%d K=%d chunk=%d %s%s %s->%s%s%s %s%s%s%s",
           kernel == KDA_KERNEL_GATE_CHUNK_CUMSUM ? "gate_chunk_cumsum"
           : kernel == KDA_KERNEL_GATE             ? "gate"
                                                   : "chunk_local_cumsum",
           a->num_heads, a->head_dim, a->chunk_size,
           a->gate == KDA_GATE_SOFTPLUS       ? "softplus"
           : a->gate == KDA_GATE_LOWER_BOUND ? "lower-bound"
                                             : "activated",
           a->dt_bias ? " bias" : "", dt_name(a->g_dtype), dt_name(a->out_dtype),
           a->has_scale ? " scale" : "", a->reverse ? " reverse" : "",
           a->num_seqs > 0 ? "varlen" : "dense", a->cu_seqlens_host ? " host-rows" : "",
           a->chunk_plan ? " chunk-plan" : "", views);
}

static int same_shape(const tune_shape *a, const tune_shape *b) {
  const kda_gate_args *x = &a->args, *y = &b->args;
  return a->kernel == b->kernel && a->bucket == b->bucket && x->g_dtype == y->g_dtype &&
         x->out_dtype == y->out_dtype && x->num_heads == y->num_heads &&
         x->head_dim == y->head_dim && x->chunk_size == y->chunk_size && x->gate == y->gate &&
         (x->dt_bias != NULL) == (y->dt_bias != NULL) && (x->A_log != NULL) == (y->A_log != NULL) &&
         x->has_scale == y->has_scale && x->reverse == y->reverse &&
         (x->num_seqs > 0) == (y->num_seqs > 0) &&
         (x->cu_seqlens_host != NULL) == (y->cu_seqlens_host != NULL) &&
         (x->chunk_plan != NULL) == (y->chunk_plan != NULL) && x->g == y->g && x->out == y->out;
}

/* Deduplicating is quadratic: a hostile file with long lists on many lines
 * would otherwise expand for hours. Far more than any tuning session needs. */
#define SHAPES_MAX 16384

static int bits2(int32_t v) { return (v & 1) + (v >> 1 & 1); }

static int push(shape_list *l, const tune_shape *t) {
  for (size_t i = 0; i < l->n; i++)
    if (same_shape(&l->items[i], t) && (!l->per_token || l->items[i].tokens == t->tokens)) return 0;
  if (l->n >= SHAPES_MAX) return -2;
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 32;
    tune_shape *p = realloc(l->items, cap * sizeof *p);
    if (p == NULL) return -1;
    l->items = p;
    l->cap = cap;
  }
  l->items[l->n++] = *t;
  return 0;
}

/* Whether kda_prewarm's batch for a varlen shape (seqs equal sequences of
 * tokens / seqs) fits the rows in the launch, as kda_gate_args says. */
static int host_rows_fit(int64_t tokens, int32_t seqs, int32_t chunk) {
  const int64_t n = seqs < tokens ? seqs : tokens;
  int64_t chunks = 0;
  for (int64_t i = 0; i < n; i++) {
    const int64_t len = (i + 1) * tokens / n - i * tokens / n;
    chunks += (len + chunk - 1) / chunk;
  }
  return chunks <= KDA_MAX_HOST_ROWS && tokens < ((int64_t)1 << 24);
}

int shape_set_expand(const shape_set *s0, shape_list *list, char *err, size_t size) {
  shape_set s = *s0;
  const model_preset *m = s.model ? preset_find(s.model) : NULL;
  if (m != NULL && s.nheads == 0) {
    if (s.ntp == 0) s.tp[s.ntp++] = 1;
    for (int32_t i = 0; i < s.ntp; i++) {
      if (m->total_heads % s.tp[i] != 0) {
        snprintf(err, size, "tp=%d does not divide %s's %d heads", s.tp[i], m->name, m->total_heads);
        return -1;
      }
      s.heads[s.nheads++] = m->total_heads / s.tp[i];
    }
  } else if (s.ntp > 0 && m == NULL) {
    snprintf(err, size, "tp needs a model (model=%s)", preset_names());
    return -1;
  }
  if (s.nheads == 0) {
    snprintf(err, size, "no heads: give heads=H (--heads) or a model (--model %s)", preset_names());
    return -1;
  }
  if (s.nhead_dim == 0) s.head_dim[s.nhead_dim++] = m ? m->head_dim : 128;
  if (s.nchunk == 0) s.chunk[s.nchunk++] = m ? m->chunk : 64;
  if (s.ndtype == 0) s.dtype[s.ndtype++] = m ? m->dtype : KDA_DTYPE_BF16;
  if (s.ntokens == 0) {
    static const int64_t per_bucket[] = {512, 2048, 8192, 32768, 65536};
    for (int i = 0; i < 5; i++) s.tokens[s.ntokens++] = per_bucket[i];
  }
  if (s.gate < 0) s.gate = m ? m->gate : KDA_GATE_SOFTPLUS;
  if (s.out_dtype < 0) s.out_dtype = m ? m->out_dtype : KDA_DTYPE_F32;
  /* gate none has no activation, so no bias: default to none, and refuse
   * bias=yes alone (it would expand to nothing). */
  if (s.bias == 0) s.bias = m ? (m->bias ? 2 : 1) : s.gate == KDA_GATE_NONE ? 1 : 2;
  if (s.gate == KDA_GATE_NONE && s.bias == 2) {
    snprintf(err, size, "gate none takes no dt_bias (bias=no)");
    return -1;
  }
  if (s.varlen == 0) s.varlen = m ? m->varlen : 1;
  if (s.host_rows == 0) s.host_rows = 1;
  if (s.chunk_plan == 0) s.chunk_plan = 1;
  if (s.scale == 0) s.scale = m ? m->scale : 1;
  if (s.reverse == 0) s.reverse = 1;
  if (s.seqs == 0) s.seqs = 8;
  int32_t kernel = s.kernel >= 0 ? s.kernel
                   : s.gate == KDA_GATE_NONE ? KDA_KERNEL_CHUNK_LOCAL_CUMSUM
                                             : KDA_KERNEL_GATE_CHUNK_CUMSUM;
  if (kernel == KDA_KERNEL_GATE_CHUNK_CUMSUM && s.gate == KDA_GATE_NONE) {
    snprintf(err, size, "kernel gate_chunk_cumsum needs gate softplus or lower-bound");
    return -1;
  }
  if (kernel == KDA_KERNEL_CHUNK_LOCAL_CUMSUM && s.gate != KDA_GATE_NONE) {
    snprintf(err, size, "kernel chunk_local_cumsum takes an activated gate (gate=none)");
    return -1;
  }
  int64_t combos = (int64_t)s.nheads * s.nhead_dim * s.nchunk * s.ndtype * s.ntokens *
                   bits2(s.bias) * bits2(s.varlen) * bits2(s.host_rows) * bits2(s.chunk_plan) * bits2(s.scale) *
                   bits2(s.reverse);
  if (combos > SHAPES_MAX) {
    snprintf(err, size, "%lld combinations of values; at most %d per line", (long long)combos,
             SHAPES_MAX);
    return -1;
  }
  for (int32_t h = 0; h < s.nheads; h++)
    for (int32_t k = 0; k < s.nhead_dim; k++)
      for (int32_t c = 0; c < s.nchunk; c++)
        for (int32_t d = 0; d < s.ndtype; d++)
          for (int bias = 0; bias < 2; bias++)
            for (int var = 0; var < 2; var++)
             for (int hr = 0; hr < 2; hr++)
             for (int cp = 0; cp < 2; cp++)
              for (int sc = 0; sc < 2; sc++)
                for (int rev = 0; rev < 2; rev++)
                  for (int32_t t = 0; t < s.ntokens; t++) {
                    if (!(s.bias >> bias & 1) || !(s.varlen >> var & 1) || !(s.scale >> sc & 1) ||
                        !(s.reverse >> rev & 1))
                      continue;
                    if (bias && s.gate == KDA_GATE_NONE) continue; /* no activation, no bias */
                    /* Host rows: varlen only, and only where the batch fits. */
                    if (!(s.host_rows >> hr & 1) || (hr && !var)) continue;
                    if (hr && !host_rows_fit(s.tokens[t], s.seqs, s.chunk[c])) continue;
                    /* A chunk plan: varlen only, in place of host rows, rows below 2^31. */
                    if (!(s.chunk_plan >> cp & 1) || (cp && (!var || hr))) continue;
                    if (cp && s.tokens[t] > INT32_MAX) continue;
                    tune_shape ts;
                    memset(&ts, 0, sizeof ts);
                    ts.kernel = (kda_kernel)kernel;
                    kda_gate_args *a = &ts.args;
                    *a = kda_gate_args_default();
                    a->g_dtype = (kda_dtype)s.dtype[d];
                    a->out_dtype = (kda_dtype)s.out_dtype;
                    a->num_heads = s.heads[h];
                    a->head_dim = s.head_dim[k];
                    a->chunk_size = s.chunk[c];
                    a->gate = (kda_gate_kind)s.gate;
                    /* Non-NULL stand-ins mean "present" (kda_prewarm's rule),
                     * aligned for the widest vector access. */
                    if (bias) a->dt_bias = (const float *)(uintptr_t)((uintptr_t)1 << 42);
                    if (s.gate != KDA_GATE_NONE) a->A_log = (const float *)(uintptr_t)((uintptr_t)1 << 43);
                    if (s.gate == KDA_GATE_LOWER_BOUND) a->lower_bound = -5.0f;
                    /* The gate kernel has no cumsum to scale or reverse:
                     * its specialization has neither (a preset's scale
                     * must not label it so). */
                    a->has_scale = kernel == KDA_KERNEL_GATE ? 0 : sc;
                    a->scale = 1.0f;
                    a->reverse = kernel == KDA_KERNEL_GATE ? 0 : rev;
                    a->batch = 1;
                    a->seq_len = s.tokens[t];
                    if (var) a->num_seqs = s.seqs < s.tokens[t] ? s.seqs : s.tokens[t];
                    if (hr) a->cu_seqlens_host = (const void *)(uintptr_t)1; /* "host rows" */
                    if (cp) a->chunk_plan = (const kda_chunk_plan *)(uintptr_t)1; /* "plan" */
                    /* A view's address within 256 bytes, as kda_prewarm and
                     * kda_db_lookup read g and out (NULL: 256-byte aligned). */
                    if (s.g_align > 0 && s.g_align < 256) a->g = (const void *)(uintptr_t)s.g_align;
                    if (s.out_align > 0 && s.out_align < 256)
                      a->out = (void *)(uintptr_t)s.out_align;
                    ts.tokens = s.tokens[t];
                    ts.bucket = kda_token_bucket(s.tokens[t]);
                    char words[150]; /* room for the tokens in the 200-byte label */
                    shape_words(ts.kernel, a, words, sizeof words);
                    snprintf(ts.label, sizeof ts.label, "%s tokens=%lld (bucket %d)", words,
                             (long long)ts.tokens, ts.bucket);
                    int pushed = push(list, &ts);
                    if (pushed != 0) {
                      if (pushed == -2) snprintf(err, size, "more than %d shapes in all", SHAPES_MAX);
                      else snprintf(err, size, "out of memory");
                      return -1;
                    }
                  }
  return 0;
}

int shapes_file_load(const char *path, shape_list *list, char *err, size_t size) {
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    snprintf(err, size, "%s: cannot open: %s", path, strerror(errno));
    return -1;
  }
  int rc = shapes_stream_load(f, path, list, err, size);
  fclose(f);
  return rc;
}

int shapes_stream_load(FILE *f, const char *path, shape_list *list, char *err, size_t size) {
  char line[4096], msg[512];
  int lineno = 0, sets = 0, rc = 0;
  while (rc == 0 && fgets(line, sizeof line, f) != NULL) {
    lineno++;
    size_t len = strlen(line);
    if (len == sizeof line - 1 && line[len - 1] != '\n') {
      snprintf(err, size, "%s:%d: line longer than %zu characters", path, lineno, sizeof line - 2);
      rc = -1;
      break;
    }
    char *hash = strchr(line, '#');
    if (hash) *hash = '\0';
    shape_set s;
    shape_set_init(&s);
    int pairs = 0;
    for (char *save = NULL, *tok = strtok_r(line, " \t\r\n", &save); tok != NULL;
         tok = strtok_r(NULL, " \t\r\n", &save)) {
      char *eq = strchr(tok, '=');
      if (eq == NULL) {
        snprintf(err, size, "%s:%d: '%s' is not KEY=VALUE", path, lineno, tok);
        rc = -1;
        break;
      }
      *eq = '\0';
      if (shape_set_apply(&s, tok, eq + 1, msg, sizeof msg) != 0) {
        snprintf(err, size, "%s:%d: %s", path, lineno, msg);
        rc = -1;
        break;
      }
      pairs++;
    }
    if (rc != 0 || pairs == 0) continue;
    if (shape_set_expand(&s, list, msg, sizeof msg) != 0) {
      snprintf(err, size, "%s:%d: %s", path, lineno, msg);
      rc = -1;
    }
    sets++;
  }
  if (rc == 0 && ferror(f)) {
    snprintf(err, size, "%s: read error: %s", path, strerror(errno));
    rc = -1;
  }
  if (rc == 0 && sets == 0) {
    snprintf(err, size, "%s: no shapes (every line is blank or a comment)", path);
    rc = -1;
  }
  return rc;
}

void shape_list_free(shape_list *l) {
  free(l->items);
  memset(l, 0, sizeof *l);
}
