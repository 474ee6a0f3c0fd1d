/* Reads NT_GNU_BUILD_ID from the program headers of the loaded objects
 * (dl_iterate_phdr): no file is opened, the notes are mapped already. */
#define _GNU_SOURCE
#include "build_id.h"

#include <elf.h>
#include <link.h>
#include <stdint.h>
#include <string.h>

typedef struct find {
  uintptr_t addr;
  char *hex;
  size_t n, bytes;
} find;

static int holds(const struct dl_phdr_info *info, uintptr_t addr) {
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    const uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
    if (ph->p_type == PT_LOAD && addr >= lo && addr - lo < ph->p_memsz) return 1;
  }
  return 0;
}

/* The build ID note in one PT_NOTE segment: 0, or its length in bytes. */
static size_t note_build_id(const unsigned char *p, size_t size, size_t align,
                            const unsigned char **id) {
  const unsigned char *end = p + size;
  while ((size_t)(end - p) >= sizeof(ElfW(Nhdr))) {
    ElfW(Nhdr) nh;
    memcpy(&nh, p, sizeof nh);
    const size_t name_at = sizeof nh;
    const size_t desc_at = name_at + ((nh.n_namesz + align - 1) & ~(align - 1));
    const size_t next = desc_at + ((nh.n_descsz + align - 1) & ~(align - 1));
    if (next > (size_t)(end - p) || next < desc_at) return 0;
    if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 && memcmp(p + name_at, "GNU", 4) == 0) {
      *id = p + desc_at;
      return nh.n_descsz;
    }
    p += next;
  }
  return 0;
}

static int visit(struct dl_phdr_info *info, size_t size, void *data) {
  (void)size;
  find *f = data;
  if (!holds(info, f->addr)) return 0;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_NOTE) continue;
    const unsigned char *id = NULL;
    const size_t align = ph->p_align == 8 ? 8 : 4; /* 8 only in 8-aligned note segments */
    const size_t len = note_build_id((const unsigned char *)(info->dlpi_addr + ph->p_vaddr),
                                     ph->p_memsz, align, &id);
    if (len == 0 || len > 64 || 2 * len + 1 > f->n) continue;
    static const char digits[] = "0123456789abcdef";
    for (size_t b = 0; b < len; ++b) {
      f->hex[2 * b] = digits[id[b] >> 4];
      f->hex[2 * b + 1] = digits[id[b] & 15];
    }
    f->hex[2 * len] = '\0';
    f->bytes = len;
    break;
  }
  return 1; /* the object holding addr: stop */
}

size_t kda__build_id_of(const void *addr, char *hex, size_t n) {
  if (addr == NULL || hex == NULL || n == 0) return 0;
  hex[0] = '\0';
  find f = {(uintptr_t)addr, hex, n, 0};
  dl_iterate_phdr(visit, &f);
  return f.bytes;
}
