/* The NVRTC identity in cubin keys is the loaded library's GNU build ID, so
 * that two copies of one build (the CUDA toolkit's libnvrtc.so.13.0.88 and
 * a PyTorch wheel's libnvrtc.so.13, byte for byte the same) are one
 * compiler: a cubin kda-tune prewarm stored is a hit in a PyTorch server.
 * Checked against readelf, and with a second copy of NVRTC loaded from
 * another path. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <nvrtc.h>

#include "build_id.h"
#include "tuner.h"

/* The real path of the object holding addr. */
static void object_path(const void *addr, char path[PATH_MAX]) {
  Dl_info info;
  assert_true(dladdr(addr, &info) != 0 && info.dli_fname != NULL);
  assert_non_null(realpath(info.dli_fname, path));
}

/* "Build ID: <hex>" as readelf -n prints it for path ("" if none). */
static void readelf_build_id(const char *path, char *hex, size_t n) {
  char cmd[PATH_MAX + 64];
  snprintf(cmd, sizeof cmd, "readelf -n '%s' 2>/dev/null", path);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  char line[512];
  hex[0] = '\0';
  while (fgets(line, sizeof line, p)) {
    const char *at = strstr(line, "Build ID: ");
    if (at && sscanf(at + 10, "%127[0-9a-f]", hex) == 1) break;
  }
  pclose(p);
  (void)n;
}

static void build_id_of_nvrtc_and_libc_match_readelf(void **state) {
  (void)state;
  const void *addrs[] = {(const void *)nvrtcVersion, (const void *)strlen};
  for (int i = 0; i < 2; ++i) {
    char path[PATH_MAX], want[130], got[130];
    object_path(addrs[i], path);
    readelf_build_id(path, want, sizeof want);
    /* Both carry one on every distribution this builds on; an empty one
     * would make the check below vacuous. */
    assert_true(strlen(want) >= 32);
    const size_t bytes = kda__build_id_of(addrs[i], got, sizeof got);
    printf("%s: %s\n", path, got);
    assert_int_equal(bytes * 2, strlen(want));
    assert_string_equal(got, want);
  }
}

static void build_id_refuses_what_it_cannot_name(void **state) {
  (void)state;
  char hex[130];
  assert_int_equal(kda__build_id_of(NULL, hex, sizeof hex), 0);
  /* The heap belongs to no loaded object. */
  void *heap = malloc(64);
  assert_int_equal(kda__build_id_of(heap, hex, sizeof hex), 0);
  assert_string_equal(hex, "");
  free(heap);
  /* Too small for the ID and its NUL: nothing, not a truncated ID. */
  assert_int_equal(kda__build_id_of((const void *)nvrtcVersion, hex, 8), 0);
  assert_int_equal(kda__build_id_of((const void *)nvrtcVersion, NULL, 0), 0);
}

/* A second copy of the NVRTC library under another name and directory, as
 * a PyTorch wheel ships it, loaded beside the linked one: one identity. */
static void a_copy_of_nvrtc_elsewhere_is_the_same_compiler(void **state) {
  (void)state;
  char path[PATH_MAX];
  object_path((const void *)nvrtcVersion, path);
  char dir[] = "/tmp/kda_build_id_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char copy[PATH_MAX + 64], cmd[3 * PATH_MAX];
  snprintf(copy, sizeof copy, "%s/libnvrtc.so.13", dir);
  snprintf(cmd, sizeof cmd, "cp '%s' '%s'", path, copy);
  assert_int_equal(system(cmd), 0);
  void *h = dlopen(copy, RTLD_NOW | RTLD_LOCAL);
  assert_non_null(h);
  void *other = dlsym(h, "nvrtcVersion");
  assert_non_null(other);
  assert_true(other != (void *)nvrtcVersion); /* really another mapping */
  char a[130], b[130];
  assert_true(kda__build_id_of((const void *)nvrtcVersion, a, sizeof a) > 0);
  assert_true(kda__build_id_of(other, b, sizeof b) > 0);
  assert_string_equal(a, b);
  /* The text in the keys names that build, and not the file. */
  const char *v = kda__nvrtc_build_version();
  printf("NVRTC in the keys: %s\n", v);
  char want[200];
  int ma = 0, mi = 0;
  assert_int_equal(nvrtcVersion(&ma, &mi), NVRTC_SUCCESS);
  snprintf(want, sizeof want, "%d.%d build-id=%.40s", ma, mi, a);
  assert_string_equal(v, want);
  assert_null(strstr(v, "libnvrtc"));
  /* The copy stays loaded: its static constructors' allocations (the C++
   * runtime's exception pool) would read as leaks to LeakSanitizer once
   * the module is gone. The mapping survives the file's removal. */
  unlink(copy);
  rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(build_id_of_nvrtc_and_libc_match_readelf),
      cmocka_unit_test(build_id_refuses_what_it_cannot_name),
      cmocka_unit_test(a_copy_of_nvrtc_elsewhere_is_the_same_compiler),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
