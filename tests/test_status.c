/* The status table, names and messages, and the version calls. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "driver.h"
#include "error.h"
#include "kda/kda.h"

static void every_status_has_a_distinct_name_and_message(void **state) {
  (void)state;
  int count = 0;
#define CHECK(name, value, message)                                   \
  assert_string_equal(kda_status_name(name), #name);                 \
  assert_string_equal(kda_status_string(name), message);             \
  assert_int_equal((int)name, value);                                \
  ++count;
  KDA_STATUS_MAP(CHECK)
#undef CHECK
  assert_true(count >= 18);
}

static void unknown_status_is_named_unknown(void **state) {
  (void)state;
  assert_string_equal(kda_status_string((kda_status)9999), "unknown status");
  assert_string_equal(kda_status_name((kda_status)-1), "KDA_STATUS_UNKNOWN");
}

static void codes_are_never_renumbered(void **state) {
  (void)state;
  /* Pinned values: a change here breaks every caller compiled before it. */
  assert_int_equal(KDA_OK, 0);
  assert_int_equal(KDA_ERROR_NO_DRIVER, 8);
  assert_int_equal(KDA_ERROR_COMPILE, 11);
  assert_int_equal(KDA_ERROR_CAPTURE_COLD, 13);
  assert_int_equal(KDA_ERROR_INTERNAL, 17);
}

static void last_error_holds_the_failure_message_per_thread(void **state) {
  (void)state;
  kda_status s = kda__fail(KDA_ERROR_BAD_SHAPE, "H=%d is wrong", 7);
  assert_int_equal(s, KDA_ERROR_BAD_SHAPE);
  assert_non_null(strstr(kda_last_error(), "KDA_ERROR_BAD_SHAPE"));
  assert_non_null(strstr(kda_last_error(), "H=7 is wrong"));
  kda__append_error(" and more");
  assert_non_null(strstr(kda_last_error(), "and more"));
}

/* The faults after which the driver fails every later call (cuda.h: "the
 * process must be terminated and relaunched") are KDA_ERROR_CONTEXT_LOST;
 * errors a later call can recover from are not. */
static void a_fault_that_loses_the_context_has_its_own_status(void **state) {
  (void)state;
  const CUresult lost[] = {CUDA_ERROR_ILLEGAL_ADDRESS, CUDA_ERROR_LAUNCH_FAILED,
                           CUDA_ERROR_MISALIGNED_ADDRESS, CUDA_ERROR_ILLEGAL_INSTRUCTION,
                           CUDA_ERROR_HARDWARE_STACK_ERROR, CUDA_ERROR_ASSERT,
                           CUDA_ERROR_LAUNCH_TIMEOUT, CUDA_ERROR_INVALID_PC,
                           CUDA_ERROR_ECC_UNCORRECTABLE};
  for (size_t i = 0; i < sizeof lost / sizeof lost[0]; ++i) {
    assert_true(kda__cu_context_lost(lost[i]));
    assert_int_equal(kda__cu_status(NULL, lost[i], "cuStreamSynchronize", "f.c", 1),
                     KDA_ERROR_CONTEXT_LOST);
    assert_non_null(strstr(kda_last_error(), "the CUDA context is lost"));
  }
  const CUresult not_lost[] = {CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES,
                               CUDA_ERROR_INVALID_HANDLE, CUDA_ERROR_NOT_READY,
                               CUDA_ERROR_STREAM_CAPTURE_INVALIDATED};
  for (size_t i = 0; i < sizeof not_lost / sizeof not_lost[0]; ++i) {
    assert_false(kda__cu_context_lost(not_lost[i]));
    assert_int_equal(kda__cu_status(NULL, not_lost[i], "cuStreamSynchronize", "f.c", 1),
                     KDA_ERROR_CUDA);
  }
  assert_int_equal(kda__cu_status(NULL, CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc", "f.c", 1),
                   KDA_ERROR_OUT_OF_MEMORY);
  assert_int_equal(KDA_ERROR_CONTEXT_LOST, 20);
}

static void version_matches_header(void **state) {
  (void)state;
  assert_int_equal(kda_version_number(), KDA_VERSION_NUMBER);
  assert_string_equal(kda_version(), "0.1.0");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(every_status_has_a_distinct_name_and_message),
      cmocka_unit_test(unknown_status_is_named_unknown),
      cmocka_unit_test(codes_are_never_renumbered),
      cmocka_unit_test(last_error_holds_the_failure_message_per_thread),
      cmocka_unit_test(a_fault_that_loses_the_context_has_its_own_status),
      cmocka_unit_test(version_matches_header),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
