/* Names: where the database lives by default, the canonical GPU identity
 * and the lease holder of this process. */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "store_internal.h"

/* mkdir -p: the cache folders usually do not exist on a fresh machine. */
static int make_dirs(const char *dir) {
  char tmp[PATH_MAX];
  if ((size_t)snprintf(tmp, sizeof tmp, "%s", dir) >= sizeof tmp) return -1;
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  if (mkdir(tmp, 0755) != 0 && errno != EEXIST) return -1;
  struct stat st;
  return stat(tmp, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

static const char *nonempty_env(const char *name) {
  const char *v = getenv(name);
  return v != NULL && v[0] != '\0' ? v : NULL;
}

kda_status kda__store_default_path(char *buf, size_t size, const char **rule) {
  KDA__REQUIRE(buf != NULL && size > 0, KDA_ERROR_NULL_POINTER, "kda__store_default_path: no buffer");
  buf[0] = '\0';
  char dir[PATH_MAX];
  const char *chosen;
  const char *v;
  int n;
  if ((v = nonempty_env("KDA_CACHE_DIR")) != NULL) {
    chosen = "KDA_CACHE_DIR";
    n = snprintf(dir, sizeof dir, "%s", v);
  } else if ((v = nonempty_env("XDG_CACHE_HOME")) != NULL && v[0] == '/') {
    /* The XDG spec says a relative value is invalid and must be ignored. */
    chosen = "XDG_CACHE_HOME";
    n = snprintf(dir, sizeof dir, "%s/kda", v);
  } else {
    chosen = "default";
    const char *home = nonempty_env("HOME");
    char pwbuf[4096];
    struct passwd pwd, *pw = NULL;
    if (home == NULL) {
      /* getpwuid_r: this runs on a server's threads at once (HOME is unset
       * under systemd), and getpwuid's result is shared. */
      if (getpwuid_r(getuid(), &pwd, pwbuf, sizeof pwbuf, &pw) != 0) pw = NULL;
      home = pw != NULL && pw->pw_dir != NULL ? pw->pw_dir : "/tmp";
    }
    n = snprintf(dir, sizeof dir, "%s/.cache/kda", home);
  }
  if (rule != NULL) *rule = chosen;
  if (n < 0 || (size_t)n >= sizeof dir) {
    return kda__fail(KDA_ERROR_BUFFER_TOO_SMALL, "tuning database folder name too long (%s)", chosen);
  }
  n = snprintf(buf, size, "%s/tune.db", dir);
  if (n < 0 || (size_t)n >= size) {
    buf[0] = '\0';
    return kda__fail(KDA_ERROR_BUFFER_TOO_SMALL, "tuning database path too long (%s)", chosen);
  }
  if (make_dirs(dir) != 0) {
    return kda__fail(KDA_ERROR_STORE, "cannot create the tuning database folder %s (from %s): %s",
                     dir, chosen, kda__errno_text(errno));
  }
  return KDA_OK;
}

int kda__store_gpu_key(const kda_device_info *info, char *buf, size_t size) {
  if (info == NULL || buf == NULL) return -1;
  int n = snprintf(buf, size, "sm%d%d-pci%04x-sms%d-l2_%d", info->cc_major, info->cc_minor,
                   (unsigned)info->pci_device_id, info->sm_count, info->l2_bytes);
  return n < 0 || (size_t)n >= size ? -1 : n;
}

int kda__store_gpu_key_parse(const char *key, kda_device_info *info) {
  unsigned cc = 0, pci = 0;
  int sms = 0, l2 = 0, used = 0;
  if (key == NULL || sscanf(key, "sm%u-pci%x-sms%d-l2_%d%n", &cc, &pci, &sms, &l2, &used) != 4 ||
      key[used] != '\0' || cc < 10 || cc > 999 || sms <= 0 || l2 <= 0)
    return -1;
  memset(info, 0, sizeof *info);
  info->struct_size = sizeof *info;
  info->cc_major = (int32_t)(cc / 10); /* "sm90": 9.0, "sm100": 10.0, "sm121": 12.1 */
  info->cc_minor = (int32_t)(cc % 10);
  info->pci_device_id = (int32_t)pci;
  info->sm_count = sms;
  info->l2_bytes = l2;
  /* Only the canonical text: another spelling is another key. */
  char again[128];
  if (kda__store_gpu_key(info, again, sizeof again) < 0 || strcmp(again, key) != 0) return -1;
  return 0;
}

void kda__store_default_holder(char *buf, size_t size) {
  char host[256];
  if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "unknown");
  host[sizeof host - 1] = '\0';
  snprintf(buf, size, "%ld@%s", (long)getpid(), host);
}
