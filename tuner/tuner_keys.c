/* Keys of the tuning database: canonical texts and hashes that make a row
 * stale by construction when anything it depends on changes (GPU model,
 * kernel template and its headers, candidate space, NVRTC build, options),
 * and nothing else. Also the framing of stored cubins. No device needed. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <nvrtc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build_id.h"
#include "error.h"
#include "nvrtc_compile.h"
#include "sha256.h"
#include "tuner.h"

int kda__config_text(const kda__config *c, char *buf, size_t size) {
  int n = snprintf(buf, size, "vec=%d,tx=%d,seg=%d", c->vec, c->tx, c->seg);
  return (n < 0 || (size_t)n >= size) ? -1 : n;
}

int kda__config_parse(const char *text, kda__config *c) {
  int v, t, s, used = 0;
  if (text == NULL || sscanf(text, "vec=%d,tx=%d,seg=%d%n", &v, &t, &s, &used) != 3 ||
      text[used] != '\0')
    return -1;
  c->vec = v;
  c->tx = t;
  c->seg = s;
  return 0;
}

static const char *dt_name(int32_t dt) {
  static const char *names[] = {"f32", "f16", "bf16", "i32", "i64"};
  return (dt >= 0 && dt <= 4) ? names[dt] : "?";
}

int kda__tune_spec_text(const kda__spec *s, char *buf, size_t size) {
  int n = snprintf(buf, size,
                   "%s in=%s out=%s H=%d K=%d chunk=%d cumsum=%d gate=%d bias=%d alog=%d "
                   "scale=%d reverse=%d varlen=%d idx=%s",
                   s->kernel == KDA__KERNEL_CHUNK_INDICES ? "chunk_indices" : "gate_cumsum",
                   dt_name(s->in_dtype), dt_name(s->out_dtype), s->heads, s->head_dim, s->chunk,
                   s->cumsum, s->gate, s->has_bias, s->has_alog, s->has_scale, s->reverse,
                   s->varlen, dt_name(s->idx_dtype));
  return (n < 0 || (size_t)n >= size) ? -1 : n;
}

size_t kda__tune_space(const kda__spec *slot, kda__config heuristic, kda__config *out,
                       size_t cap, size_t *heuristic_id) {
  kda__config *all = malloc(KDA__TUNE_SPACE_MAX * sizeof *all);
  size_t k = 0, hid = (size_t)-1;
  if (all != NULL) {
    size_t n = kda__config_space(slot, all, KDA__TUNE_SPACE_MAX);
    if (n > KDA__TUNE_SPACE_MAX) n = KDA__TUNE_SPACE_MAX;
    for (size_t i = 0; i < n && k < cap; ++i) {
      if (slot->vec_cap > 0 && all[i].vec > slot->vec_cap) continue;
      if (all[i].vec == heuristic.vec && all[i].tx == heuristic.tx && all[i].seg == heuristic.seg)
        hid = k;
      out[k++] = all[i];
    }
    free(all);
  }
  if (hid == (size_t)-1) {
    if (k == cap && k > 0) --k; /* never drop the heuristic */
    hid = k;
    out[k++] = heuristic;
  }
  if (heuristic_id) *heuristic_id = hid;
  return k;
}

void kda__tune_space_hash(const kda__config *space, size_t n, char hex[65]) {
  kda__sha256_ctx c;
  kda__sha256_init(&c);
  char line[64];
  for (size_t i = 0; i < n; ++i) {
    int len = kda__config_text(&space[i], line, sizeof line - 1);
    if (len < 0) continue;
    line[len++] = '\n';
    kda__sha256_update(&c, line, (size_t)len);
  }
  unsigned char d[32];
  kda__sha256_final(&c, d);
  kda__sha256_hex(d, hex);
}

/* Names of the files `text` includes with #include "name". Appends new
 * ones (pointers into set) to list. */
static void scan_includes(const kda__source_set *set, const char *text, const kda__source **list,
                          size_t *count, size_t cap) {
  for (const char *p = text; (p = strstr(p, "#include")) != NULL; p += 8) {
    const char *q = p + 8;
    while (*q == ' ' || *q == '\t') ++q;
    if (*q != '"') continue;
    const char *end = strchr(q + 1, '"');
    if (end == NULL || end - q - 1 >= 256) continue;
    char name[256];
    memcpy(name, q + 1, (size_t)(end - q - 1));
    name[end - q - 1] = '\0';
    const kda__source *f = kda__source_find(set, name);
    if (f == NULL) continue; /* a system header: not part of the template */
    int seen = 0;
    for (size_t i = 0; i < *count; ++i) seen |= list[i] == f;
    if (!seen && *count < cap) list[(*count)++] = f;
  }
}

static void hash_file(kda__sha256_ctx *c, const kda__source *f) {
  unsigned char size_le[8];
  for (int b = 0; b < 8; ++b) size_le[b] = (unsigned char)((uint64_t)f->size >> (8 * b));
  kda__sha256_update(c, f->name, strlen(f->name) + 1);
  kda__sha256_update(c, size_le, sizeof size_le);
  kda__sha256_update(c, f->text, f->size);
}

static int cmp_source_name(const void *a, const void *b) {
  return strcmp((*(const kda__source *const *)a)->name, (*(const kda__source *const *)b)->name);
}

kda_status kda__template_hash(const kda__source_set *set, const char *source_name,
                              char hex[65]) {
  const kda__source *main_src = kda__source_find(set, source_name);
  if (main_src == NULL)
    return kda__fail(KDA_ERROR_KERNEL_SOURCE, "kernel template %s is not in the source set",
                     source_name ? source_name : "(null)");
  const kda__source *list[64];
  size_t count = 0;
  list[count++] = main_src;
  for (size_t i = 0; i < count; ++i) scan_includes(set, list[i]->text, list, &count, 64);
  qsort(list + 1, count - 1, sizeof list[0], cmp_source_name);
  kda__sha256_ctx c;
  kda__sha256_init(&c);
  for (size_t i = 0; i < count; ++i) hash_file(&c, list[i]);
  unsigned char d[32];
  kda__sha256_final(&c, d);
  kda__sha256_hex(d, hex);
  return KDA_OK;
}

static char g_nvrtc_version[160];
static pthread_once_t g_nvrtc_once = PTHREAD_ONCE_INIT;

/* "13.0 build-id=<hex>": the GNU build ID of the loaded NVRTC, so that two
 * copies of one build are one compiler. A PyTorch process has loaded the
 * wheel's copy (.../nvidia/cu13/lib/libnvrtc.so.13) before libkda, and the
 * toolkit's is libnvrtc.so.13.0.88: the same bytes, and cubins kda-tune
 * prewarm stored with the toolkit's must be hits there. Without a build
 * ID, the real file name (the soname says 13 only; the file 13.0.88). */
static void find_nvrtc_version(void) {
  int ma = 0, mi = 0;
  kda__nvrtc_version(&ma, &mi);
  char id[129];
  if (kda__build_id_of((const void *)nvrtcVersion, id, sizeof id) > 0) {
    /* 40 hex digits (a SHA-1 ID whole) keep the text within a result row's 63. */
    snprintf(g_nvrtc_version, sizeof g_nvrtc_version, "%d.%d build-id=%.40s", ma, mi, id);
    return;
  }
  const char *build = "unknown-build";
  char real[PATH_MAX];
  Dl_info info;
  if (dladdr((void *)nvrtcVersion, &info) != 0 && info.dli_fname != NULL &&
      realpath(info.dli_fname, real) != NULL) {
    const char *slash = strrchr(real, '/');
    build = slash ? slash + 1 : real;
  }
  snprintf(g_nvrtc_version, sizeof g_nvrtc_version, "%d.%d %.120s", ma, mi, build);
}

const char *kda__nvrtc_build_version(void) {
  pthread_once(&g_nvrtc_once, find_nvrtc_version);
  return g_nvrtc_version;
}

/* One "key=value" field of KDA_TEST_GPU_IDENTITY into *info; -1 if the
 * key is unknown or the value is not a number in range. */
static int identity_field(const char *key, size_t klen, const char *val, size_t vlen,
                          kda_device_info *info) {
  if (klen == 4 && strncmp(key, "name", 4) == 0) {
    if (vlen == 0 || vlen >= sizeof info->name) return -1;
    memcpy(info->name, val, vlen);
    info->name[vlen] = '\0';
    return 0;
  }
  char num[32];
  if (vlen == 0 || vlen >= sizeof num) return -1;
  memcpy(num, val, vlen);
  num[vlen] = '\0';
  char *end = NULL;
  long v = strtol(num, &end, 0); /* base 0: pci=0x2330 reads as hex */
  if (*end != '\0' || v <= 0 || v > INT32_MAX) return -1;
  if (klen == 3 && strncmp(key, "pci", 3) == 0) info->pci_device_id = (int32_t)v;
  else if (klen == 3 && strncmp(key, "sms", 3) == 0) info->sm_count = (int32_t)v;
  else if (klen == 2 && strncmp(key, "l2", 2) == 0) info->l2_bytes = (int32_t)v;
  else return -1;
  return 0;
}

int kda__gpu_identity_override(const char *text, kda_device_info *info) {
  if (text == NULL || info == NULL || *text == '\0') return -1;
  /* All or nothing: a half-applied identity would be a third, unintended model. */
  kda_device_info tmp = *info;
  for (const char *p = text;;) {
    const char *semi = strchr(p, ';');
    const size_t len = semi ? (size_t)(semi - p) : strlen(p);
    const char *eq = memchr(p, '=', len);
    if (eq == NULL ||
        identity_field(p, (size_t)(eq - p), eq + 1, len - (size_t)(eq - p) - 1, &tmp) != 0)
      return -1;
    if (semi == NULL) break;
    p = semi + 1;
  }
  *info = tmp;
  return 0;
}

kda_status kda__tune_keys_make(const kda_device_info *info, int arch,
                               const kda__source_set *sources, const kda__spec *slot,
                               const kda__config *space, size_t n, const char *nvrtc,
                               kda__tune_keys *k) {
  memset(k, 0, sizeof *k);
  KDA__REQUIRE(kda__store_gpu_key(info, k->gpu, sizeof k->gpu) > 0, KDA_ERROR_INTERNAL,
               "GPU key too long");
  snprintf(k->kernel, sizeof k->kernel, "%s",
           slot->kernel == KDA__KERNEL_CHUNK_INDICES ? "chunk_indices" : "gate_cumsum");
  KDA__REQUIRE(kda__tune_spec_text(slot, k->cubin_spec, sizeof k->cubin_spec) > 0,
               KDA_ERROR_INTERNAL, "spec text too long");
  /* The vector-width cap (pointer alignment) bounds the space, so results
   * differ by it; a cubin depends on its config only. */
  snprintf(k->spec, sizeof k->spec, "%s veccap=%d", k->cubin_spec, slot->vec_cap);
  k->bucket = slot->bucket;
  KDA__TRY(kda__template_hash(sources, kda__spec_source_name(slot), k->template_hash));
  kda__tune_space_hash(space, n, k->space_hash);
  k->arch = arch;
  snprintf(k->nvrtc, sizeof k->nvrtc, "%s", nvrtc ? nvrtc : kda__nvrtc_build_version());
  snprintf(k->options, sizeof k->options, "%s", kda__nvrtc_options_string());
  snprintf(k->lease, sizeof k->lease, "%s|%s|%s|%lld|%s|%s", k->gpu, k->kernel, k->spec,
           (long long)k->bucket, k->template_hash, k->space_hash);
  return KDA_OK;
}

void kda__tune_result_key(const kda__tune_keys *k, kda__store_key *out) {
  out->gpu_key = k->gpu;
  out->kernel = k->kernel;
  out->spec = k->spec;
  out->bucket = k->bucket;
  out->template_hash = k->template_hash;
  out->space_hash = k->space_hash;
}

void kda__tune_cubin_key(const kda__tune_keys *k, const char *config_text, kda__cubin_key *out) {
  out->arch = k->arch;
  out->nvrtc_version = k->nvrtc;
  out->options = k->options;
  out->source_hash = k->template_hash;
  out->spec = k->cubin_spec;
  out->config = config_text;
}

#define KDA__FRAME_MAGIC "KDACUBN1"
#define KDA__FRAME_HEAD 12 /* magic + u32 name length */

static size_t frame_offset(size_t name_len) {
  return (KDA__FRAME_HEAD + name_len + 15) & ~(size_t)15;
}

kda_status kda__cubin_frame(const void *cubin, size_t size, const char *lowered, void **blob,
                            size_t *blob_size) {
  const size_t name_len = strlen(lowered);
  const size_t off = frame_offset(name_len);
  unsigned char *b = calloc(1, off + size);
  KDA__REQUIRE(b != NULL, KDA_ERROR_OUT_OF_MEMORY, "out of memory framing a cubin");
  memcpy(b, KDA__FRAME_MAGIC, 8);
  for (int i = 0; i < 4; ++i) b[8 + i] = (unsigned char)(name_len >> (8 * i));
  memcpy(b + KDA__FRAME_HEAD, lowered, name_len);
  memcpy(b + off, cubin, size);
  *blob = b;
  *blob_size = off + size;
  return KDA_OK;
}

int kda__cubin_unframe(const void *blob, size_t size, const char **name, size_t *name_len,
                       const void **cubin, size_t *cubin_size) {
  const unsigned char *b = blob;
  if (b == NULL || size < KDA__FRAME_HEAD || memcmp(b, KDA__FRAME_MAGIC, 8) != 0) return -1;
  size_t len = 0;
  for (int i = 0; i < 4; ++i) len |= (size_t)b[8 + i] << (8 * i);
  if (len == 0 || len > 4096 || frame_offset(len) >= size) return -1;
  *name = (const char *)b + KDA__FRAME_HEAD;
  *name_len = len;
  *cubin = b + frame_offset(len);
  *cubin_size = size - frame_offset(len);
  return 0;
}
