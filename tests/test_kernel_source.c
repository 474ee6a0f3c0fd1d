/* Kernel template sets (embedded and read from a folder), their SHA-256, and
 * NVRTC compiling a real instantiation. No GPU needed: NVRTC emits a CUBIN
 * for a named architecture without a device. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kernel_source.h"
#include "nvrtc_compile.h"
#include "sha256.h"

static const char *const k_expected[] = {"gate_cumsum.cu", "chunk_indices.cu", "kda_common.cuh"};
#define NUM_EXPECTED (sizeof k_expected / sizeof k_expected[0])

static const char *kernel_dir(void) {
  const char *dir = getenv("KDA_TEST_KERNEL_DIR");
  if (dir == NULL || dir[0] == '\0') {
    print_message("KDA_TEST_KERNEL_DIR is not set (ctest sets it); skipping\n");
    skip();
  }
  return dir;
}

/* Whole file, NUL-terminated; NULL if unreadable. */
static char *slurp(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return NULL;
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  size_t got;
  while (buf && (got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
    n += got;
    if (cap - n - 1 == 0) buf = realloc(buf, cap *= 2);
  }
  fclose(f);
  if (buf) buf[n] = '\0';
  *size = n;
  return buf;
}

static void write_file(const char *dir, const char *name, const char *text, size_t size) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(text, 1, size, f), size);
  assert_int_equal(fclose(f), 0);
}

/* A temporary folder holding copies of the embedded files, optionally
 * skipping one. */
static void make_copy_dir(char *dir, const char *skip_name) {
  strcpy(dir, "/tmp/kda_test_kernels_XXXXXX");
  assert_non_null(mkdtemp(dir));
  for (size_t i = 0; i < kda__embedded_source_count; ++i) {
    const kda__source *s = &kda__embedded_sources[i];
    if (skip_name && strcmp(s->name, skip_name) == 0) continue;
    write_file(dir, s->name, s->text, s->size);
  }
}

static void remove_dir(const char *dir) {
  char path[1024];
  for (size_t i = 0; i < kda__embedded_source_count; ++i) {
    snprintf(path, sizeof path, "%s/%s", dir, kda__embedded_sources[i].name);
    unlink(path);
  }
  rmdir(dir);
}

static void sha256_matches_fips_test_vectors(void **state) {
  (void)state;
  unsigned char d[32];
  char hex[65];
  kda__sha256("", 0, d);
  kda__sha256_hex(d, hex);
  assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  kda__sha256("abc", 3, d);
  kda__sha256_hex(d, hex);
  assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const char *two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  kda__sha256(two_blocks, strlen(two_blocks), d);
  kda__sha256_hex(d, hex);
  assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");

  char *million = malloc(1000000);
  assert_non_null(million);
  memset(million, 'a', 1000000);
  kda__sha256(million, 1000000, d);
  kda__sha256_hex(d, hex);
  assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

  /* Same digest when fed in uneven pieces that straddle block boundaries. */
  kda__sha256_ctx c;
  kda__sha256_init(&c);
  size_t off = 0, step = 1;
  while (off < 1000000) {
    size_t n = step < 1000000 - off ? step : 1000000 - off;
    kda__sha256_update(&c, million + off, n);
    off += n;
    step = step * 7 % 131 + 1;
  }
  unsigned char d2[32];
  kda__sha256_final(&c, d2);
  assert_memory_equal(d, d2, 32);
  free(million);
}

static void embedded_set_matches_template_folder(void **state) {
  (void)state;
  const char *dir = kernel_dir();
  kda__source_set set;
  assert_int_equal(kda__source_set_load(NULL, &set), KDA_OK);
  assert_int_equal(set.owned, 0);
  assert_true(set.count >= NUM_EXPECTED);
  for (size_t i = 0; i < NUM_EXPECTED; ++i) {
    const kda__source *s = kda__source_find(&set, k_expected[i]);
    assert_non_null(s);
    assert_true(s->size > 0);
    assert_int_equal(strlen(s->text), s->size);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, k_expected[i]);
    size_t size = 0;
    char *disk = slurp(path, &size);
    assert_non_null(disk);
    assert_int_equal(size, s->size);
    assert_memory_equal(disk, s->text, size);
    free(disk);
  }
  assert_null(kda__source_find(&set, "no_such_file.cu"));
  kda__source_set_free(&set);
}

static void folder_set_has_the_embedded_hash(void **state) {
  (void)state;
  const char *dir = kernel_dir();
  kda__source_set embedded, folder;
  assert_int_equal(kda__source_set_load(NULL, &embedded), KDA_OK);
  assert_int_equal(kda__source_set_load(dir, &folder), KDA_OK);
  assert_int_equal(folder.owned, 1);
  assert_int_equal(folder.count, embedded.count);
  assert_memory_equal(folder.sha256, embedded.sha256, 32);
  for (size_t i = 0; i < NUM_EXPECTED; ++i) {
    const kda__source *a = kda__source_find(&embedded, k_expected[i]);
    const kda__source *b = kda__source_find(&folder, k_expected[i]);
    assert_non_null(b);
    assert_int_equal(a->size, b->size);
    assert_string_equal(a->text, b->text);
  }
  char hex[65];
  kda__sha256_hex(folder.sha256, hex);
  print_message("kernel source set sha256 %s\n", hex);
  kda__source_set_free(&folder);
  kda__source_set_free(&embedded);
  assert_null(folder.files);
}

static void folder_missing_a_file_is_a_kernel_source_error(void **state) {
  (void)state;
  char dir[64];
  make_copy_dir(dir, "kda_common.cuh");
  kda__source_set set;
  memset(&set, 0xab, sizeof set);
  assert_int_equal(kda__source_set_load(dir, &set), KDA_ERROR_KERNEL_SOURCE);
  assert_null(set.files);
  assert_int_equal(set.count, 0);
  assert_non_null(strstr(kda_last_error(), dir));
  assert_non_null(strstr(kda_last_error(), "kda_common.cuh"));
  assert_non_null(strstr(kda_last_error(), "No such file"));
  remove_dir(dir);

  assert_int_equal(kda__source_set_load("/nonexistent/kernels", &set), KDA_ERROR_KERNEL_SOURCE);
  assert_non_null(strstr(kda_last_error(), "/nonexistent/kernels/"));
}

static void changed_file_changes_the_hash(void **state) {
  (void)state;
  char dir[64];
  make_copy_dir(dir, NULL);
  kda__source_set embedded, same, changed;
  assert_int_equal(kda__source_set_load(NULL, &embedded), KDA_OK);
  assert_int_equal(kda__source_set_load(dir, &same), KDA_OK);
  assert_memory_equal(same.sha256, embedded.sha256, 32);

  /* One appended space in one file. */
  const kda__source *s = kda__source_find(&embedded, "chunk_indices.cu");
  char *text = malloc(s->size + 2);
  memcpy(text, s->text, s->size);
  text[s->size] = ' ';
  write_file(dir, "chunk_indices.cu", text, s->size + 1);
  free(text);
  assert_int_equal(kda__source_set_load(dir, &changed), KDA_OK);
  assert_memory_not_equal(changed.sha256, embedded.sha256, 32);

  kda__source_set_free(&changed);
  kda__source_set_free(&same);
  kda__source_set_free(&embedded);
  remove_dir(dir);
}

static void nvrtc_compiles_gate_cumsum_for_sm90_without_warnings(void **state) {
  (void)state;
  kda__source_set set;
  assert_int_equal(kda__source_set_load(NULL, &set), KDA_OK);
  const char *names[] = {"kda::gate_cumsum<2,0,32,128,64,1,1,1,1,0,0,0,3,8,32,16>"};
  kda__compile_request req = {&set, "gate_cumsum.cu", 90, names, 1};
  kda__compiled out;
  kda_status s = kda__nvrtc_compile(&req, &out);
  if (s != KDA_OK) print_error("%s\n", kda_last_error());
  assert_int_equal(s, KDA_OK);
  assert_non_null(out.cubin);
  assert_true(out.cubin_size > 0);
  /* A CUBIN is an ELF image. */
  assert_memory_equal(out.cubin, "\x7f" "ELF", 4);
  assert_int_equal(out.num_names, 1);
  assert_non_null(out.lowered_names[0]);
  assert_true(strlen(out.lowered_names[0]) > 0);
  if (out.log != NULL) print_error("unexpected NVRTC log:\n%s\n", out.log);
  assert_null(out.log);
  int major = 0, minor = 0;
  kda__nvrtc_version(&major, &minor);
  print_message("NVRTC %d.%d compiled %s for sm_90 in %.1f ms (%zu-byte cubin, %s)\n", major,
                minor, names[0], out.compile_ms, out.cubin_size, out.lowered_names[0]);
  assert_true(out.compile_ms > 0.0);
  kda__compiled_free(&out);
  assert_null(out.cubin);
  kda__source_set_free(&set);
}

static void nvrtc_syntax_error_returns_compile_error_with_log(void **state) {
  (void)state;
  kda__source_set embedded;
  assert_int_equal(kda__source_set_load(NULL, &embedded), KDA_OK);
  const kda__source *common = kda__source_find(&embedded, "kda_common.cuh");
  assert_non_null(common);
  static const char broken[] =
      "#include \"kda_common.cuh\"\n"
      "namespace kda {\n"
      "template <int N> __global__ void broken(float *p) { p[0] = N }\n"
      "}\n";
  kda__source files[2] = {{"broken.cu", broken, sizeof broken - 1}, *common};
  kda__source_set set = {files, 2, 0, {0}};
  const char *names[] = {"kda::broken<1>"};
  kda__compile_request req = {&set, "broken.cu", 90, names, 1};
  kda__compiled out;
  assert_int_equal(kda__nvrtc_compile(&req, &out), KDA_ERROR_COMPILE);
  const char *msg = kda_last_error();
  print_message("%s\n", msg);
  assert_non_null(strstr(msg, "KDA_ERROR_COMPILE"));
  assert_non_null(strstr(msg, "broken.cu"));
  assert_non_null(strstr(msg, "sm_90"));
  assert_non_null(strstr(msg, "kda::broken<1>"));
  assert_non_null(strstr(msg, "error")); /* from NVRTC's log */
  assert_non_null(strstr(msg, "expected a \";\""));
  assert_null(out.cubin);
  assert_null(out.lowered_names);
  kda__source_set_free(&embedded);
}

static void nvrtc_request_for_unknown_template_is_a_kernel_source_error(void **state) {
  (void)state;
  kda__source_set set;
  assert_int_equal(kda__source_set_load(NULL, &set), KDA_OK);
  const char *names[] = {"kda::nothing<1>"};
  kda__compile_request req = {&set, "nothing.cu", 90, names, 1};
  kda__compiled out;
  assert_int_equal(kda__nvrtc_compile(&req, &out), KDA_ERROR_KERNEL_SOURCE);
  assert_non_null(strstr(kda_last_error(), "nothing.cu"));
  assert_int_equal(kda__nvrtc_compile(NULL, &out), KDA_ERROR_NULL_POINTER);
  kda__source_set_free(&set);
}

static void nvrtc_options_are_strict_cxx17_for_exact_arch(void **state) {
  (void)state;
  assert_string_equal(kda__nvrtc_options_string(),
                      "-std=c++17 --gpu-architecture=sm_<arch> -default-device");
  assert_null(strstr(kda__nvrtc_options_string(), "fast"));
  int major = 0, minor = 0;
  kda__nvrtc_version(&major, &minor);
  assert_true(major >= 11);
  kda__nvrtc_version(NULL, NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(sha256_matches_fips_test_vectors),
      cmocka_unit_test(embedded_set_matches_template_folder),
      cmocka_unit_test(folder_set_has_the_embedded_hash),
      cmocka_unit_test(folder_missing_a_file_is_a_kernel_source_error),
      cmocka_unit_test(changed_file_changes_the_hash),
      cmocka_unit_test(nvrtc_compiles_gate_cumsum_for_sm90_without_warnings),
      cmocka_unit_test(nvrtc_syntax_error_returns_compile_error_with_log),
      cmocka_unit_test(nvrtc_request_for_unknown_template_is_a_kernel_source_error),
      cmocka_unit_test(nvrtc_options_are_strict_cxx17_for_exact_arch),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
