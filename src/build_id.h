/* The GNU build ID of a loaded shared object: the linker's hash of its
 * contents, the same for every copy of one build whatever the file is
 * called or where it lies. */
#ifndef KDA_BUILD_ID_H
#define KDA_BUILD_ID_H

#include <stddef.h>

/* Writes the build ID of the loaded object whose mapped segments hold addr
 * to hex (lowercase, NUL-terminated; at most 64 bytes of ID) and returns
 * its length in bytes; 0 when no loaded object holds addr, it has no build
 * ID, or hex (n bytes) is too small. */
size_t kda__build_id_of(const void *addr, char *hex, size_t n);

#endif
