/* Thread-local last-error message and the macros that return statuses.
 * Nothing here aborts: every failure becomes a status plus a message. */
#ifndef KDA_SRC_ERROR_H
#define KDA_SRC_ERROR_H

#include "kda/kda.h"

/* Records a formatted message for kda_last_error() on this thread and
 * returns status, so a failure site reads `return kda__fail(...)`. */
kda_status kda__fail(kda_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Appends more text (e.g. a compiler log) to this thread's message. */
void kda__append_error(const char *text);

/* Returns the calling thread's message (never NULL). */
const char *kda__error_message(void);

/* The text of errno value e, in a buffer of the calling thread: strerror
 * may share one buffer between threads (the library's calls run on a
 * server's threads at once). */
const char *kda__errno_text(int e);

#define KDA__TRY(expr)                          \
  do {                                          \
    kda_status kda__s_ = (expr);                \
    if (kda__s_ != KDA_OK) return kda__s_;      \
  } while (0)

#define KDA__REQUIRE(cond, status, ...)                    \
  do {                                                     \
    if (!(cond)) return kda__fail((status), __VA_ARGS__);  \
  } while (0)

#endif
