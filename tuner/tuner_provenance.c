/* Where a tuning result comes from, stored with it (tuner/store.h): the
 * machine, the GPU driver and what ran the tuning. A performance engineer
 * reading a fleet's merged database asks "tuned where, under which
 * driver?" before trusting a row. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "context_internal.h"
#include "tuner.h"

static char g_release[32];
static pthread_once_t g_release_once = PTHREAD_ONCE_INIT;

int kda__driver_release_of(const char *line, char *out, size_t size) {
  /* The first word of digits and dots with a dot in it: the proprietary
   * module says "...UNIX x86_64 Kernel Module  580.159.04  <date>", the open
   * one "...UNIX Open Kernel Module for x86_64  580.159.04  Release Build". */
  for (const char *p = line; *p;) {
    while (*p == ' ' || *p == '\t') ++p;
    const char *w = p;
    int digits = 0, dots = 0, other = 0;
    for (; *p && *p != ' ' && *p != '\t' && *p != '\n'; ++p) {
      if (*p >= '0' && *p <= '9') digits++;
      else if (*p == '.') dots++;
      else other++;
    }
    const size_t len = (size_t)(p - w);
    if (digits > 0 && dots > 0 && other == 0 && w[0] != '.' && len < size) {
      memcpy(out, w, len);
      out[len] = '\0';
      return 0;
    }
    if (*p == '\n') break;
  }
  if (size > 0) out[0] = '\0';
  return -1;
}

/* "" where the file is missing (no Linux driver, a container without it). */
static void read_release(void) {
  FILE *f = fopen("/proc/driver/nvidia/version", "r");
  if (f == NULL) return;
  char line[512];
  if (fgets(line, sizeof line, f) != NULL) kda__driver_release_of(line, g_release, sizeof g_release);
  fclose(f);
}

void kda__tune_provenance(const kda_context *ctx, int by_prewarm, kda__store_record *rec) {
  /* Linux allows 64 characters, one past the field: keep what fits. */
  char host[256];
  if (gethostname(host, sizeof host) != 0) host[0] = '\0';
  host[sizeof host - 1] = '\0';
  kda__store_copy_utf8(rec->host, sizeof rec->host, host);
  pthread_once(&g_release_once, read_release);
  const int v = ctx->info.driver_version; /* the CUDA API version: 13000 */
  if (g_release[0])
    snprintf(rec->driver, sizeof rec->driver, "%s (CUDA %d.%d)", g_release, v / 1000, v % 1000 / 10);
  else
    snprintf(rec->driver, sizeof rec->driver, "CUDA %d.%d", v / 1000, v % 1000 / 10);
  snprintf(rec->source, sizeof rec->source, "%s", by_prewarm ? "kda_prewarm" : "a kernel call");
}
