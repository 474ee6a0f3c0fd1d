/* Scratch files for the fuzz targets: one private folder per process, an
 * input written to a file in it, and the folder emptied between inputs. */
#ifndef KDA_FUZZ_TMP_H
#define KDA_FUZZ_TMP_H

#include <stddef.h>
#include <stdint.h>

/* The process's folder (created on first call; KDA_CACHE_DIR points into
 * it so nothing touches the user's cache). Aborts if it cannot be made:
 * a harness without a scratch folder tests nothing. */
const char *fuzz_dir(void);
/* Writes data to fuzz_dir()/name and returns the path (static buffer). */
const char *fuzz_write(const char *name, const uint8_t *data, size_t size);
/* Removes every file in fuzz_dir() (databases, -wal, -shm, moved-aside
 * copies). */
void fuzz_clean(void);

#endif
