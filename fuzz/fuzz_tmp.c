#include "fuzz_tmp.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_dir[PATH_MAX];

static void remove_dir(void) {
  fuzz_clean();
  rmdir(g_dir);
}

const char *fuzz_dir(void) {
  if (g_dir[0] != '\0') return g_dir;
  const char *base = getenv("TMPDIR");
  snprintf(g_dir, sizeof g_dir, "%s/kda_fuzz.XXXXXX", base && *base ? base : "/tmp");
  if (mkdtemp(g_dir) == NULL) {
    perror("mkdtemp");
    abort();
  }
  char cache[PATH_MAX + 16];
  snprintf(cache, sizeof cache, "%s/cache", g_dir);
  setenv("KDA_CACHE_DIR", cache, 1);
  unsetenv("KDA_KERNEL_DIR");
  atexit(remove_dir);
  return g_dir;
}

const char *fuzz_write(const char *name, const uint8_t *data, size_t size) {
  static char path[PATH_MAX + 64];
  snprintf(path, sizeof path, "%s/%s", fuzz_dir(), name);
  FILE *f = fopen(path, "wb");
  if (f == NULL || (size > 0 && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
    perror(path);
    abort();
  }
  return path;
}

void fuzz_clean(void) {
  DIR *d = opendir(fuzz_dir());
  if (d == NULL) return;
  struct dirent *e;
  char path[PATH_MAX + 300];
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "%s/%s", g_dir, e->d_name);
    unlink(path);
  }
  closedir(d);
}
