/* A driver that loads but sees no GPU (CUDA_VISIBLE_DEVICES="", a container
 * without devices: cuInit returns CUDA_ERROR_NO_DEVICE) is reported as
 * KDA_ERROR_NO_DEVICE with what to check, not as a missing driver. Runs on
 * the stand-in driver told to answer cuInit so (FAKE_CUDA_INIT_RESULT=100). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "kda/kda.h"

static void a_driver_without_devices_is_no_device(void **state) {
  (void)state;
  kda_context *ctx = (kda_context *)(uintptr_t)1;
  assert_int_equal(kda_context_create(NULL, &ctx), KDA_ERROR_NO_DEVICE);
  assert_null(ctx);
  const char *msg = kda_last_error();
  assert_non_null(strstr(msg, "sees no GPU"));
  assert_non_null(strstr(msg, "CUDA_VISIBLE_DEVICES"));
  /* Every later call says the same. */
  assert_int_equal(kda_context_create(NULL, &ctx), KDA_ERROR_NO_DEVICE);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(a_driver_without_devices_is_no_device),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
