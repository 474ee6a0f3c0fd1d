/* The kernel template set: the copy embedded at build time, or the same file
 * names read from a folder so kernels can be edited without rebuilding. The
 * set's SHA-256 goes into cache keys, so a changed template never reuses a
 * stale binary. */
#include "kernel_source.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "sha256.h"

/* Files are hashed in name order (not table order) so the digest does not
 * depend on how the table was generated. Each file contributes its name, a
 * NUL, its size as 8 little-endian bytes and its bytes: unambiguous framing,
 * so moving text between files changes the digest. */
static void hash_set(kda__source_set *set) {
  kda__sha256_ctx c;
  kda__sha256_init(&c);
  const char *prev = NULL;
  for (size_t done = 0; done < set->count; ++done) {
    /* Selection of the next name: the set is a handful of files, and this
     * needs no allocation that could fail. */
    const kda__source *next = NULL;
    for (size_t i = 0; i < set->count; ++i) {
      const kda__source *f = &set->files[i];
      if (prev != NULL && strcmp(f->name, prev) <= 0) continue;
      if (next == NULL || strcmp(f->name, next->name) < 0) next = f;
    }
    if (next == NULL) break;
    unsigned char size_le[8];
    for (int b = 0; b < 8; ++b) size_le[b] = (unsigned char)((uint64_t)next->size >> (8 * b));
    kda__sha256_update(&c, next->name, strlen(next->name) + 1);
    kda__sha256_update(&c, size_le, sizeof size_le);
    kda__sha256_update(&c, next->text, next->size);
    prev = next->name;
  }
  kda__sha256_final(&c, set->sha256);
}

static kda_status read_file(const char *path, char **text, size_t *size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return kda__fail(KDA_ERROR_KERNEL_SOURCE, "cannot open kernel template %s: %s", path,
                     kda__errno_text(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return kda__fail(KDA_ERROR_KERNEL_SOURCE, "cannot stat kernel template %s: %s", path,
                     kda__errno_text(e));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return kda__fail(KDA_ERROR_KERNEL_SOURCE, "kernel template %s is not a regular file: %s",
                     path, kda__errno_text(EISDIR));
  }
  size_t n = (size_t)st.st_size;
  char *buf = malloc(n + 1);
  if (buf == NULL) {
    close(fd);
    return kda__fail(KDA_ERROR_OUT_OF_MEMORY, "out of memory reading kernel template %s (%zu bytes)",
                     path, n);
  }
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      /* r == 0: the file shrank while being read. */
      int e = r < 0 ? errno : EIO;
      free(buf);
      close(fd);
      return kda__fail(KDA_ERROR_KERNEL_SOURCE, "cannot read kernel template %s: %s", path,
                       kda__errno_text(e));
    }
    got += (size_t)r;
  }
  close(fd);
  buf[n] = '\0';
  *text = buf;
  *size = n;
  return KDA_OK;
}

kda_status kda__source_set_load(const char *dir, kda__source_set *out) {
  if (out == NULL) return kda__fail(KDA_ERROR_NULL_POINTER, "kda__source_set_load: out is NULL");
  memset(out, 0, sizeof *out);

  if (dir == NULL) {
    /* The embedded table is read-only and lives for the whole process;
     * owned == 0 says nothing is ever written through or freed. */
    out->files = (kda__source *)kda__embedded_sources;
    out->count = kda__embedded_source_count;
    out->owned = 0;
    hash_set(out);
    return KDA_OK;
  }

  size_t count = kda__embedded_source_count;
  kda__source *files = calloc(count ? count : 1, sizeof *files);
  if (files == NULL)
    return kda__fail(KDA_ERROR_OUT_OF_MEMORY, "out of memory loading kernel templates from %s",
                     dir);
  kda__source_set set = {files, 0, 1, {0}};
  for (size_t i = 0; i < count; ++i) {
    const char *name = kda__embedded_sources[i].name;
    size_t len = strlen(dir) + 1 + strlen(name) + 1;
    char *path = malloc(len);
    if (path == NULL) {
      kda__source_set_free(&set);
      return kda__fail(KDA_ERROR_OUT_OF_MEMORY, "out of memory loading kernel templates from %s",
                       dir);
    }
    snprintf(path, len, "%s/%s", dir, name);
    char *text = NULL;
    size_t size = 0;
    kda_status s = read_file(path, &text, &size);
    free(path);
    if (s != KDA_OK) {
      kda__source_set_free(&set);
      return s;
    }
    /* Names point at the embedded table's string literals, which outlive
     * any set; only the texts are owned. */
    files[i].name = name;
    files[i].text = text;
    files[i].size = size;
    set.count = i + 1;
  }
  hash_set(&set);
  *out = set;
  return KDA_OK;
}

void kda__source_set_free(kda__source_set *set) {
  if (set == NULL) return;
  if (set->owned) {
    for (size_t i = 0; i < set->count; ++i) free((void *)set->files[i].text);
    free(set->files);
  }
  memset(set, 0, sizeof *set);
}

const kda__source *kda__source_find(const kda__source_set *set, const char *name) {
  if (set == NULL || name == NULL) return NULL;
  for (size_t i = 0; i < set->count; ++i)
    if (strcmp(set->files[i].name, name) == 0) return &set->files[i];
  return NULL;
}
