/* Status names and messages from the X-macro table, and the thread-local
 * last-error message behind kda_last_error(). */
#define _GNU_SOURCE /* the GNU strerror_r, which returns the text */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define KDA__ERROR_CAP 16384

static _Thread_local char kda__error_buf[KDA__ERROR_CAP];

const char *kda_status_string(kda_status status) {
  switch (status) {
#define KDA__STATUS_MESSAGE(name, value, message) \
  case name:                                     \
    return message;
    KDA_STATUS_MAP(KDA__STATUS_MESSAGE)
#undef KDA__STATUS_MESSAGE
  }
  return "unknown status";
}

const char *kda_status_name(kda_status status) {
  switch (status) {
#define KDA__STATUS_NAME(name, value, message) \
  case name:                                  \
    return #name;
    KDA_STATUS_MAP(KDA__STATUS_NAME)
#undef KDA__STATUS_NAME
  }
  return "KDA_STATUS_UNKNOWN";
}

const char *kda_last_error(void) { return kda__error_buf; }

const char *kda__error_message(void) { return kda__error_buf; }

kda_status kda__fail(kda_status status, const char *fmt, ...) {
  int n = snprintf(kda__error_buf, sizeof kda__error_buf, "%s: ", kda_status_name(status));
  if (n < 0 || (size_t)n >= sizeof kda__error_buf) n = 0;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(kda__error_buf + n, sizeof kda__error_buf - (size_t)n, fmt, ap);
  va_end(ap);
  return status;
}

void kda__append_error(const char *text) {
  if (text == NULL) return;
  size_t used = strlen(kda__error_buf);
  if (used + 1 >= sizeof kda__error_buf) return;
  snprintf(kda__error_buf + used, sizeof kda__error_buf - used, "%s", text);
}

const char *kda__errno_text(int e) {
  static _Thread_local char buf[256];
  return strerror_r(e, buf, sizeof buf);
}
