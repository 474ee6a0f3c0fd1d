/* Invalidation of tuning rows through their keys, against a real store in
 * a temporary file: a new NVRTC build, an edited template (or header) or
 * another SM count makes every affected key a miss; editing one kernel
 * leaves the other kernels' rows hits. Also the key texts and the framing
 * of stored cubins. No device. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kernel_source.h"
#include "spec.h"
#include "store.h"
#include "tuner.h"

#define NVRTC_A "13.0 libnvrtc.so.13.0.88"
#define NVRTC_B "13.0 libnvrtc.so.13.0.99"

typedef struct fixture {
  char dir[64];
  char db[128];
  kda__store *store;
  kda_device_info info;
  kda__source_set sources; /* a private copy of the embedded set */
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  strcpy(f->dir, "/tmp/kda_tuner_keys_XXXXXX");
  if (mkdtemp(f->dir) == NULL) return -1;
  snprintf(f->db, sizeof f->db, "%s/tune.db", f->dir);
  if (kda__store_open(f->db, 0, &f->store) != KDA_OK) return -1;
  f->info.struct_size = sizeof f->info;
  snprintf(f->info.name, sizeof f->info.name, "NVIDIA H100 80GB HBM3");
  f->info.cc_major = 9;
  f->info.cc_minor = 0;
  f->info.sm_count = 132;
  f->info.l2_bytes = 52428800;
  f->info.pci_device_id = 0x2330;
  f->sources.count = kda__embedded_source_count;
  f->sources.files = calloc(f->sources.count, sizeof *f->sources.files);
  memcpy(f->sources.files, kda__embedded_sources, f->sources.count * sizeof *f->sources.files);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  kda__store_close(f->store);
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
  if (system(cmd) != 0) return -1;
  free(f->sources.files);
  free(f);
  return 0;
}

/* Replaces a file's text in the fixture's set (the text must outlive it). */
static void edit(fixture *f, const char *name, const char *text) {
  for (size_t i = 0; i < f->sources.count; ++i)
    if (strcmp(f->sources.files[i].name, name) == 0) {
      f->sources.files[i].text = text;
      f->sources.files[i].size = strlen(text);
      return;
    }
  fail_msg("no template %s", name);
}

static char *appended(const char *name, const char *suffix) {
  const kda__source *s = NULL;
  for (size_t i = 0; i < kda__embedded_source_count; ++i)
    if (strcmp(kda__embedded_sources[i].name, name) == 0) s = &kda__embedded_sources[i];
  assert_non_null(s);
  char *t = malloc(s->size + strlen(suffix) + 1);
  memcpy(t, s->text, s->size);
  strcpy(t + s->size, suffix);
  return t;
}

static kda__spec gate_slot(void) {
  kda__spec s;
  memset(&s, 0, sizeof s);
  s.kernel = KDA__KERNEL_GATE_CUMSUM;
  s.in_dtype = KDA_DTYPE_BF16;
  s.out_dtype = KDA_DTYPE_F32;
  s.heads = 32;
  s.head_dim = 128;
  s.chunk = 64;
  s.cumsum = 1;
  s.gate = KDA_GATE_SOFTPLUS;
  s.has_alog = 1;
  s.has_bias = 1;
  s.idx_dtype = KDA_DTYPE_I32;
  s.tuned = 1;
  s.bucket = 2;
  s.vec_cap = 8;
  return s;
}

static kda__spec indices_slot(void) {
  kda__spec s;
  memset(&s, 0, sizeof s);
  s.kernel = KDA__KERNEL_CHUNK_INDICES;
  s.idx_dtype = KDA_DTYPE_I32;
  s.chunk = 64;
  s.tuned = 1;
  return s;
}

static void make_keys(fixture *f, const kda__spec *slot, const char *nvrtc, kda__tune_keys *k) {
  static kda__config space[KDA__TUNE_SPACE_MAX];
  kda__spec h = *slot;
  h.tuned = h.bucket = h.vec_cap = 0;
  size_t hid;
  size_t n = kda__tune_space(slot, kda__config_heuristic(&h), space, KDA__TUNE_SPACE_MAX, &hid);
  assert_int_equal(kda__tune_keys_make(&f->info, f->info.cc_major * 10 + f->info.cc_minor,
                                       &f->sources, slot, space, n, nvrtc, k),
                   KDA_OK);
}

/* Stores a result and its cubin under k. */
static void put(fixture *f, const kda__tune_keys *k) {
  kda__store_record rec;
  memset(&rec, 0, sizeof rec);
  snprintf(rec.config, sizeof rec.config, "vec=4,tx=32,seg=8");
  rec.median_us = 12.5;
  rec.gbps = rec.max_err = rec.heuristic_us = rec.tune_ms = rec.compile_ms = -1;
  kda__store_trial t = {"vec=4,tx=32,seg=8", 3, 12.5, 12.0, 13.0, KDA__TRIAL_OK, NULL};
  kda__store_key key;
  kda__tune_result_key(k, &key);
  assert_int_equal(kda__store_put_result(f->store, &key, &rec, &t, 1, KDA__PUT_REPLACE, NULL),
                   KDA_OK);
  kda__cubin_key ck;
  kda__tune_cubin_key(k, rec.config, &ck);
  void *blob;
  size_t size;
  assert_int_equal(kda__cubin_frame("\x7f" "ELF-fake-cubin", 15, "_Z3foov", &blob, &size), KDA_OK);
  assert_int_equal(kda__store_put_cubin(f->store, &ck, blob, size, 200.0), KDA_OK);
  free(blob);
}

static int result_hit(fixture *f, const kda__tune_keys *k) {
  kda__store_key key;
  kda__tune_result_key(k, &key);
  kda__store_record rec;
  int found = -1;
  assert_int_equal(kda__store_lookup_result(f->store, &key, &found, &rec), KDA_OK);
  return found;
}

static int cubin_hit(fixture *f, const kda__tune_keys *k) {
  kda__cubin_key ck;
  kda__tune_cubin_key(k, "vec=4,tx=32,seg=8", &ck);
  int found = -1, tampered = 0;
  void *blob = NULL;
  size_t size = 0;
  assert_int_equal(kda__store_lookup_cubin(f->store, &ck, &found, &blob, &size, &tampered), KDA_OK);
  if (found) {
    const char *name;
    size_t name_len, cubin_size;
    const void *cubin;
    assert_int_equal(kda__cubin_unframe(blob, size, &name, &name_len, &cubin, &cubin_size), 0);
    assert_int_equal(name_len, 7);
    assert_memory_equal(name, "_Z3foov", 7);
    assert_int_equal(cubin_size, 15);
  }
  free(blob);
  return found;
}

static void same_inputs_give_same_keys_and_hits(void **state) {
  fixture *f = *state;
  kda__spec s = gate_slot();
  kda__tune_keys a, b;
  make_keys(f, &s, NVRTC_A, &a);
  make_keys(f, &s, NVRTC_A, &b);
  assert_memory_equal(&a, &b, sizeof a);
  put(f, &a);
  assert_int_equal(result_hit(f, &b), 1);
  assert_int_equal(cubin_hit(f, &b), 1);
  /* Another bucket is another row. */
  s.bucket = 3;
  make_keys(f, &s, NVRTC_A, &b);
  assert_int_equal(result_hit(f, &b), 0);
}

static void a_new_nvrtc_build_misses_every_cubin_but_keeps_results(void **state) {
  fixture *f = *state;
  kda__spec s = gate_slot();
  kda__tune_keys a, b;
  make_keys(f, &s, NVRTC_A, &a);
  put(f, &a);
  make_keys(f, &s, NVRTC_B, &b);
  assert_int_equal(cubin_hit(f, &b), 0);
  /* The winner is a property of the card and the template: still valid. */
  assert_int_equal(result_hit(f, &b), 1);
  /* The real library's version names its build (test_build_id checks
   * which). */
  const char *v = kda__nvrtc_build_version();
  assert_non_null(strstr(v, " build-id="));
  make_keys(f, &s, NULL, &b);
  assert_string_equal(b.nvrtc, v);
}

static void an_edited_template_misses_its_results_and_cubins(void **state) {
  fixture *f = *state;
  kda__spec s = gate_slot();
  kda__tune_keys a, b;
  make_keys(f, &s, NVRTC_A, &a);
  put(f, &a);
  char *text = appended("gate_cumsum.cu", "\n// one more line\n");
  edit(f, "gate_cumsum.cu", text);
  make_keys(f, &s, NVRTC_A, &b);
  assert_string_not_equal(a.template_hash, b.template_hash);
  assert_int_equal(result_hit(f, &b), 0);
  assert_int_equal(cubin_hit(f, &b), 0);
  free(text);
}

static void an_edited_header_misses_every_kernel_including_it(void **state) {
  fixture *f = *state;
  kda__spec g = gate_slot(), c = indices_slot();
  kda__tune_keys ga, ca, gb, cb;
  make_keys(f, &g, NVRTC_A, &ga);
  make_keys(f, &c, NVRTC_A, &ca);
  put(f, &ga);
  put(f, &ca);
  char *text = appended("kda_common.cuh", "\n// touched\n");
  edit(f, "kda_common.cuh", text);
  make_keys(f, &g, NVRTC_A, &gb);
  make_keys(f, &c, NVRTC_A, &cb);
  assert_int_equal(result_hit(f, &gb), 0);
  assert_int_equal(cubin_hit(f, &gb), 0);
  assert_int_equal(result_hit(f, &cb), 0);
  assert_int_equal(cubin_hit(f, &cb), 0);
  free(text);
}

static void editing_chunk_indices_leaves_gate_cumsum_rows_hits(void **state) {
  fixture *f = *state;
  kda__spec g = gate_slot(), c = indices_slot();
  kda__tune_keys ga, ca, gb, cb;
  make_keys(f, &g, NVRTC_A, &ga);
  make_keys(f, &c, NVRTC_A, &ca);
  put(f, &ga);
  put(f, &ca);
  char *text = appended("chunk_indices.cu", "\n// faster now\n");
  edit(f, "chunk_indices.cu", text);
  make_keys(f, &g, NVRTC_A, &gb);
  make_keys(f, &c, NVRTC_A, &cb);
  assert_string_equal(ga.template_hash, gb.template_hash);
  assert_int_equal(result_hit(f, &gb), 1);
  assert_int_equal(cubin_hit(f, &gb), 1);
  assert_int_equal(result_hit(f, &cb), 0);
  assert_int_equal(cubin_hit(f, &cb), 0);
  /* Nor does the tuner's own compare kernel belong to gate_cumsum's hash. */
  char *cmp = appended("tune_compare.cuh", "\n// tweak\n");
  edit(f, "tune_compare.cuh", cmp);
  make_keys(f, &g, NVRTC_A, &gb);
  assert_string_equal(ga.template_hash, gb.template_hash);
  free(text);
  free(cmp);
}

static void another_sm_count_misses_results_not_cubins(void **state) {
  fixture *f = *state;
  kda__spec s = gate_slot();
  kda__tune_keys a, b;
  make_keys(f, &s, NVRTC_A, &a);
  put(f, &a);
  f->info.sm_count = 114; /* a lower-SM part or a MIG slice */
  make_keys(f, &s, NVRTC_A, &b);
  assert_string_not_equal(a.gpu, b.gpu);
  assert_int_equal(result_hit(f, &b), 0);
  /* The machine code depends on the architecture only. */
  assert_int_equal(cubin_hit(f, &b), 1);
  f->info.sm_count = 132;
  f->info.l2_bytes = 26214400;
  make_keys(f, &s, NVRTC_A, &b);
  assert_int_equal(result_hit(f, &b), 0);
}

static void another_space_or_alignment_cap_misses_results(void **state) {
  fixture *f = *state;
  kda__spec s = gate_slot();
  kda__tune_keys a, b;
  make_keys(f, &s, NVRTC_A, &a);
  put(f, &a);
  s.vec_cap = 2;
  make_keys(f, &s, NVRTC_A, &b);
  assert_string_not_equal(a.space_hash, b.space_hash);
  assert_int_equal(result_hit(f, &b), 0);
  assert_string_equal(a.cubin_spec, b.cubin_spec);
}

static void config_text_round_trips_and_rejects_garbage(void **state) {
  (void)state;
  kda__config c = {4, 32, 8}, d;
  char buf[64];
  assert_true(kda__config_text(&c, buf, sizeof buf) > 0);
  assert_string_equal(buf, "vec=4,tx=32,seg=8");
  assert_int_equal(kda__config_parse(buf, &d), 0);
  assert_true(d.vec == 4 && d.tx == 32 && d.seg == 8);
  assert_int_equal(kda__config_parse("vec=4,tx=32", &d), -1);
  assert_int_equal(kda__config_parse("vec=4,tx=32,seg=8x", &d), -1);
  assert_int_equal(kda__config_parse(NULL, &d), -1);
}

/* KDA_TEST_GPU_IDENTITY's format: every field, hex and decimal, and
 * anything malformed refused with the identity left untouched. */
static void gpu_identity_hook_parses_fields_and_refuses_garbage(void **state) {
  fixture *f = *state;
  kda_device_info i = f->info;
  assert_int_equal(kda__gpu_identity_override("name=Fake GPU X;pci=0xfffe;sms=100;l2=1048576", &i),
                   0);
  assert_string_equal(i.name, "Fake GPU X");
  assert_int_equal(i.pci_device_id, 0xfffe);
  assert_int_equal(i.sm_count, 100);
  assert_int_equal(i.l2_bytes, 1048576);
  assert_int_equal(i.cc_major, 9); /* never overridden: cubins must still run */
  i = f->info;
  assert_int_equal(kda__gpu_identity_override("sms=7", &i), 0);
  assert_int_equal(i.sm_count, 7);
  assert_string_equal(i.name, f->info.name);
  const char *bad[] = {"", "name=", "name=A;", "pci=12x", "sms=0", "sms=-3", "l2=99999999999",
                       "cc=80", "name", "name=A;sms=", "=5"};
  for (size_t b = 0; b < sizeof bad / sizeof bad[0]; ++b) {
    i = f->info;
    if (kda__gpu_identity_override(bad[b], &i) != -1) fail_msg("accepted \"%s\"", bad[b]);
    assert_memory_equal(&i, &f->info, sizeof i); /* all or nothing */
  }
  assert_int_equal(kda__gpu_identity_override(NULL, &i), -1);
}

/* The hook makes another GPU key: the real model's rows are misses for it,
 * and its own rows are hits for it only. */
static void overridden_gpu_identity_keeps_separate_results(void **state) {
  fixture *f = *state;
  kda__spec s = gate_slot();
  kda__tune_keys real, fake;
  make_keys(f, &s, NVRTC_A, &real);
  put(f, &real);
  const kda_device_info saved = f->info;
  assert_int_equal(kda__gpu_identity_override("name=Fake GPU X;pci=0xfffe", &f->info), 0);
  make_keys(f, &s, NVRTC_A, &fake);
  assert_string_not_equal(real.gpu, fake.gpu);
  assert_int_equal(result_hit(f, &fake), 0);
  put(f, &fake);
  assert_int_equal(result_hit(f, &fake), 1);
  f->info = saved;
  assert_int_equal(result_hit(f, &real), 1);
}

static void framed_cubins_round_trip_and_garbage_is_refused(void **state) {
  (void)state;
  void *blob;
  size_t size;
  const char cubin[] = "not really a cubin";
  assert_int_equal(kda__cubin_frame(cubin, sizeof cubin, "_Z1fv", &blob, &size), KDA_OK);
  const char *name;
  size_t name_len, csize;
  const void *c;
  assert_int_equal(kda__cubin_unframe(blob, size, &name, &name_len, &c, &csize), 0);
  assert_int_equal(((uintptr_t)c - (uintptr_t)blob) % 16, 0);
  assert_int_equal(csize, sizeof cubin);
  assert_memory_equal(c, cubin, sizeof cubin);
  ((unsigned char *)blob)[0] ^= 1;
  assert_int_equal(kda__cubin_unframe(blob, size, &name, &name_len, &c, &csize), -1);
  assert_int_equal(kda__cubin_unframe(blob, 5, &name, &name_len, &c, &csize), -1);
  free(blob);
}

int main(void) {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(same_inputs_give_same_keys_and_hits),
      T(a_new_nvrtc_build_misses_every_cubin_but_keeps_results),
      T(an_edited_template_misses_its_results_and_cubins),
      T(an_edited_header_misses_every_kernel_including_it),
      T(editing_chunk_indices_leaves_gate_cumsum_rows_hits),
      T(another_sm_count_misses_results_not_cubins),
      T(another_space_or_alignment_cap_misses_results),
      T(gpu_identity_hook_parses_fields_and_refuses_garbage),
      T(overridden_gpu_identity_keeps_separate_results),
      cmocka_unit_test(config_text_round_trips_and_rejects_garbage),
      cmocka_unit_test(framed_cubins_round_trip_and_garbage_is_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
