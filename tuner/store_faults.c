/* Recognising a damaged database file and moving it out of the way.
 *
 * The header check is only a cheap trigger: a suspect file is confirmed by
 * SQLite itself (PRAGMA quick_check) before anything is moved, because the
 * header of a healthy file can look short for a moment while another
 * process checkpoints it. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store_internal.h"

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* A WAL with frames can hold pages the main file does not have yet. */
static int has_wal(const char *path) {
  char wal[PATH_MAX + 8];
  snprintf(wal, sizeof wal, "%s-wal", path);
  struct stat st;
  return stat(wal, &st) == 0 && st.st_size > 0;
}

/* The header is read through SQLite's own VFS, never with open()/close():
 * closing any descriptor of a file drops every POSIX lock this process
 * holds on it, including those of connections already open on the
 * database (another kda_db or context of this process). A process that
 * lost its shared lock lets another one think it is the last user, which
 * then checkpoints and deletes the WAL under it: corruption. SQLite's unix
 * VFS shares one inode record per file and defers the close while locks
 * are held. */
int kda__store_header_suspect(const char *path, char *reason, size_t reason_size) {
  sqlite3_vfs *vfs = sqlite3_vfs_find(NULL);
  if (vfs == NULL) return 0;
  sqlite3_file *f = calloc(1, (size_t)vfs->szOsFile);
  if (f == NULL) return 0;
  int out_flags = 0;
  int suspect = 0;
  if (vfs->xOpen(vfs, path, f, SQLITE_OPEN_READONLY | SQLITE_OPEN_MAIN_DB, &out_flags) != SQLITE_OK)
    goto done; /* SQLite will report what is wrong */
  sqlite3_int64 size = 0;
  unsigned char h[100];
  if (f->pMethods->xFileSize(f, &size) != SQLITE_OK || size == 0) goto done; /* empty: a new database */
  if (size < (sqlite3_int64)sizeof h) {
    snprintf(reason, reason_size, "%lld bytes, shorter than a header", (long long)size);
    suspect = 1;
    goto done;
  }
  if (f->pMethods->xRead(f, h, (int)sizeof h, 0) != SQLITE_OK) goto done;
  if (memcmp(h, "SQLite format 3", 16) != 0) {
    snprintf(reason, reason_size, "not an SQLite file");
    suspect = 1;
    goto done;
  }
  uint32_t page = (uint32_t)h[16] << 8 | h[17];
  if (page == 1) page = 65536;
  uint32_t change = be32(h + 24), pages = be32(h + 28), valid_for = be32(h + 92);
  /* The page count is trusted only when valid_for matches the change
   * counter (SQLite's own rule), and a non-empty WAL may explain a gap. */
  if (valid_for == change && pages > 0 && (uint64_t)pages * page > (uint64_t)size &&
      !has_wal(path)) {
    snprintf(reason, reason_size, "header says %u pages of %u bytes, file has %lld bytes", pages,
             page, (long long)size);
    suspect = 1;
  }
done:
  if (f->pMethods != NULL) f->pMethods->xClose(f);
  free(f);
  return suspect;
}

int kda__store_rc_is_corrupt(int rc) {
  return (rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB;
}

void kda__store_keep_wal(const char *path, char *kept, size_t kept_size) {
  /* SQLite deletes a -wal when its last connection closes, even one that
   * failed to read the main file: by the time a damaged file is moved aside
   * its log would be gone. A second name for the same inode keeps it. */
  kept[0] = '\0';
  char wal[PATH_MAX + 8];
  snprintf(wal, sizeof wal, "%s-wal", path);
  int n = snprintf(kept, kept_size, "%s-wal.kept-%ld", path, (long)getpid());
  if (n < 0 || (size_t)n >= kept_size || link(wal, kept) != 0) kept[0] = '\0';
}

int kda__store_move_aside(const char *path, const struct stat *seen, const char *kept_wal,
                          char *aside, size_t aside_size) {
  /* Two processes may find the same damaged file. Each names the inode it
   * examined; both lock it (flock, independent of SQLite's fcntl locks), and
   * whoever finds the path no longer naming that inode leaves the new
   * database alone. */
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? 1 : -1;
  struct stat mine, now;
  int rc = -1;
  if (fstat(fd, &mine) != 0) goto done;
  if (mine.st_ino != seen->st_ino || mine.st_dev != seen->st_dev) {
    rc = 1; /* already replaced by another process */
    goto done;
  }
  if (flock(fd, LOCK_EX) != 0) goto done;
  if (stat(path, &now) != 0 || now.st_ino != mine.st_ino || now.st_dev != mine.st_dev) {
    rc = 1;
    goto done;
  }
  long long when = (long long)time(NULL);
  int n = snprintf(aside, aside_size, "%s.corrupt-%lld", path, when);
  /* Never overwrite an earlier damaged file moved aside in the same second. */
  for (int i = 2; n >= 0 && (size_t)n < aside_size && access(aside, F_OK) == 0 && i < 100; i++) {
    n = snprintf(aside, aside_size, "%s.corrupt-%lld.%d", path, when, i);
  }
  if (n < 0 || (size_t)n >= aside_size) goto done;
  if (rename(path, aside) != 0) goto done;
  /* The old -wal must not be replayed into the new file; the -shm indexes
   * it. Keep the -wal beside the damaged file for whoever investigates:
   * the name kept before SQLite opened the file if there is one (a -wal
   * there now may be one SQLite made since, and goes). */
  char from[PATH_MAX + 8], to[PATH_MAX + 80];
  snprintf(from, sizeof from, "%s-wal", path);
  snprintf(to, sizeof to, "%s-wal", aside);
  if (kept_wal != NULL && kept_wal[0] != '\0' && rename(kept_wal, to) == 0) {
    unlink(from);
  } else if (rename(from, to) != 0 && errno != ENOENT) {
    unlink(from);
  }
  snprintf(from, sizeof from, "%s-shm", path);
  unlink(from);
  rc = 0;
done:
  close(fd); /* releases the flock */
  return rc;
}
