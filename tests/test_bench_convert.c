/* kda-bench's convert kernels (tools/bench_convert.c) compile with real
 * NVRTC and no GPU, for the archs the library targets, and name every
 * kernel the benchmark looks up; a row whose size the kernels cannot cover
 * is refused before any driver call. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bench.h"
#include "bench_convert.h"

static int contains(const char *hay, size_t n, const char *needle) {
  const size_t m = strlen(needle);
  for (size_t i = 0; i + m <= n; ++i)
    if (!memcmp(hay + i, needle, m)) return 1;
  return 0;
}

static void compiles_for(int major, int minor) {
  char why[4096] = "";
  size_t size = 0;
  char *cubin = bench_convert_compile(major, minor, &size, why, sizeof why);
  if (!cubin) fail_msg("sm_%d%d: %s", major, minor, why);
  assert_true(size > 1000);
  assert_memory_equal(cubin, "\177ELF", 4);
  int kernels = 0;
  for (const char *name; (name = bench_convert_kernel_name(kernels)) != NULL; ++kernels)
    if (!contains(cubin, size, name)) fail_msg("sm_%d%d: no kernel %s in the cubin", major, minor, name);
  assert_int_equal(kernels, 6);
  free(cubin);
}

/* kda-bench's varlen rows (tools/bench_rows.c): each row's sequences, in a
 * buffer of exactly their number (AddressSanitizer in CI), are at least one
 * token, sum to the row's tokens, and are not all whole chunks. */
static void every_varlen_row_splits_its_tokens_into_ragged_sequences(void **state) {
  (void)state;
  int rows = 0;
  for (int i = 0; i < bench_row_count; ++i) {
    const bench_row *r = &bench_rows[i];
    if (r->num_seqs == 0) continue;
    int64_t *lens = malloc((size_t)r->num_seqs * sizeof *lens);
    assert_non_null(lens);
    bench_row_lengths(r, lens);
    int64_t sum = 0;
    int partial = 0;
    for (int s = 0; s < r->num_seqs; ++s) {
      assert_true(lens[s] >= 1);
      sum += lens[s];
      partial += lens[s] % r->chunk != 0;
    }
    assert_int_equal(sum, r->tokens);
    assert_true(partial > 0);
    free(lens);
    ++rows;
  }
  assert_true(rows >= 20);
}

static void convert_kernels_compile_for_sm90(void **state) {
  (void)state;
  compiles_for(9, 0);
}

/* Without programmatic dependent launch (its asm is sm_90 only). */
static void convert_kernels_compile_for_sm80(void **state) {
  (void)state;
  compiles_for(8, 0);
}

static void a_bad_arch_fails_with_the_nvrtc_log(void **state) {
  (void)state;
  char why[4096] = "";
  size_t size = 0;
  assert_null(bench_convert_compile(1, 0, &size, why, sizeof why));
  assert_non_null(strstr(why, "sm_10"));
}

static void sizes_that_are_not_whole_groups_are_refused(void **state) {
  (void)state;
  cuda_api none;
  memset(&none, 0, sizeof none); /* any driver call would crash */
  void *p[1] = {NULL};
  char which[16], why[256] = "";
  unsigned short in = 0;
  assert_true(bench_convert_us(&none, NULL, p, p, 1, 12, &in, 64, 15, which, sizeof which, why,
                             sizeof why) < 0);
  assert_non_null(strstr(why, "multiple of 8"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(every_varlen_row_splits_its_tokens_into_ragged_sequences),
      cmocka_unit_test(convert_kernels_compile_for_sm90),
      cmocka_unit_test(convert_kernels_compile_for_sm80),
      cmocka_unit_test(a_bad_arch_fails_with_the_nvrtc_log),
      cmocka_unit_test(sizes_that_are_not_whole_groups_are_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
