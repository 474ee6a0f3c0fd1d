/* A machine without a usable CUDA driver: KDA_LIBCUDA points at a library
 * that does not exist, which is what dlopen sees on a CPU-only host. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "driver.h"
#include "kda/kda.h"

#define FAKE_LIBCUDA "/nonexistent/libcuda.so.1"

static void context_create_reports_no_driver_naming_the_library(void **state) {
  (void)state;
  kda_options opts = kda_options_default();
  kda_context *ctx = (kda_context *)&opts; /* must be overwritten with NULL */
  assert_int_equal(kda_context_create(&opts, &ctx), KDA_ERROR_NO_DRIVER);
  assert_null(ctx);
  assert_non_null(strstr(kda_last_error(), FAKE_LIBCUDA));
}

static void second_context_create_reports_the_same_failure(void **state) {
  (void)state;
  kda_options opts = kda_options_default();
  kda_context *ctx = NULL;
  assert_int_equal(kda_context_create(&opts, &ctx), KDA_ERROR_NO_DRIVER);
  char first[1024];
  snprintf(first, sizeof first, "%s", kda_last_error());
  ctx = (kda_context *)&opts;
  assert_int_equal(kda_context_create(&opts, &ctx), KDA_ERROR_NO_DRIVER);
  assert_null(ctx);
  assert_string_equal(kda_last_error(), first);
  assert_non_null(strstr(kda_last_error(), FAKE_LIBCUDA));
}

typedef struct thread_result {
  kda_status status;
  const kda__driver *driver;
  char message[1024];
} thread_result;

static void *load_on_thread(void *arg) {
  thread_result *r = arg;
  r->driver = (const kda__driver *)arg; /* must be overwritten with NULL */
  r->status = kda__driver_load(&r->driver);
  snprintf(r->message, sizeof r->message, "%s", kda_last_error());
  return NULL;
}

static void driver_failure_is_recorded_on_every_calling_thread(void **state) {
  (void)state;
  thread_result r;
  memset(&r, 0, sizeof r);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, load_on_thread, &r), 0);
  pthread_join(t, NULL);
  assert_int_equal(r.status, KDA_ERROR_NO_DRIVER);
  assert_null(r.driver);
  /* The thread's own message, not just the first loader's. */
  assert_non_null(strstr(r.message, "KDA_ERROR_NO_DRIVER"));
  assert_non_null(strstr(r.message, FAKE_LIBCUDA));
}

static void context_destroy_null_is_a_noop(void **state) {
  (void)state;
  kda_context_destroy(NULL);
}

int main(void) {
  /* Before anything can load the driver: the load happens once per process. */
  if (setenv("KDA_LIBCUDA", FAKE_LIBCUDA, 1) != 0) {
    fprintf(stderr, "setenv failed\n");
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(context_create_reports_no_driver_naming_the_library),
      cmocka_unit_test(second_context_create_reports_the_same_failure),
      cmocka_unit_test(driver_failure_is_recorded_on_every_calling_thread),
      cmocka_unit_test(context_destroy_null_is_a_noop),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
