/* The status table, names and messages, and the version calls. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

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
      cmocka_unit_test(version_matches_header),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
