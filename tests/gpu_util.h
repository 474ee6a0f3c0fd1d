/* GPU test helpers: skip cleanly without a device, device buffers through
 * the library's own driver table, and NaN poisoning of outputs. */
#ifndef KDA_TESTS_GPU_UTIL_H
#define KDA_TESTS_GPU_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "driver.h"
#include "kda/kda.h"

/* ctest treats this exit code as "skipped" (SKIP_RETURN_CODE in CMake). */
#define GU_SKIP_EXIT 77

/* Loads the driver and checks for a device. Returns NULL and writes why
 * into reason when there is none usable. */
const kda__driver *gu_driver_or_reason(char *reason, size_t n);

/* Prints "SKIPPED: <reason>" and exits with GU_SKIP_EXIT when no GPU. */
const kda__driver *gu_require_gpu(const char *test_name);

/* Creates a context on device 0 (fails the test process on error). */
kda_context *gu_context(void);

/* Device allocation filled from host (src may be NULL: then left unset). */
void *gu_alloc(size_t bytes);
void *gu_upload(const void *src, size_t bytes);
void gu_download(void *dst, const void *dev, size_t bytes);
/* Host to device into an existing buffer (dev may be any byte address). */
void gu_copy_to(void *dev, const void *src, size_t bytes);
void gu_free(void *dev);
/* Fills bytes (a multiple of 4) with the 32-bit pattern: 0x7fc00000 is a
 * float NaN; 0x7fc07fc0 is two bf16 NaNs. */
void gu_poison(void *dev, size_t bytes, uint32_t pattern);
void gu_sync(void);

#define GU_CHECK(call)                                                             \
  do {                                                                             \
    kda_status s_ = (call);                                                        \
    if (s_ != KDA_OK) {                                                            \
      fprintf(stderr, "%s:%d: %s -> %s\n  %s\n", __FILE__, __LINE__, #call,        \
              kda_status_name(s_), kda_last_error());                              \
      fail();                                                                      \
    }                                                                              \
  } while (0)

#endif
