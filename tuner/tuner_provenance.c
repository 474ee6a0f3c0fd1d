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

/* The kernel module's release ("580.159.04") from the line
 * "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  <date>";
 * "" where the file is missing (no Linux driver, a container without it). */
static void read_release(void) {
  FILE *f = fopen("/proc/driver/nvidia/version", "r");
  if (f == NULL) return;
  char line[512];
  if (fgets(line, sizeof line, f) != NULL) {
    const char *at = strstr(line, "Kernel Module");
    if (at != NULL && sscanf(at + 13, " %31s", g_release) != 1) g_release[0] = '\0';
  }
  fclose(f);
}

void kda__tune_provenance(const kda_context *ctx, int by_prewarm, kda__store_record *rec) {
  if (gethostname(rec->host, sizeof rec->host) != 0) rec->host[0] = '\0';
  rec->host[sizeof rec->host - 1] = '\0';
  pthread_once(&g_release_once, read_release);
  const int v = ctx->info.driver_version; /* the CUDA API version: 13000 */
  if (g_release[0])
    snprintf(rec->driver, sizeof rec->driver, "%s (CUDA %d.%d)", g_release, v / 1000, v % 1000 / 10);
  else
    snprintf(rec->driver, sizeof rec->driver, "CUDA %d.%d", v / 1000, v % 1000 / 10);
  snprintf(rec->source, sizeof rec->source, "%s", by_prewarm ? "kda_prewarm" : "a kernel call");
}
