/* The shapes-file parser of `kda-tune prewarm --shapes FILE`: any bytes give
 * a list or a "FILE:LINE: ..." error, never a crash, and a list only holds
 * shapes that a kernel call could take. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shapes_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* fmemopen of zero bytes fails on some C libraries: read one "\n". */
  static const uint8_t empty[] = "\n";
  FILE *f = fmemopen((void *)(size ? data : empty), size ? size : 1, "r");
  if (f == NULL) return 0;
  shape_list list = {NULL, 0, 0, 0};
  char err[1024] = "";
  int rc = shapes_stream_load(f, "fuzz", &list, err, sizeof err);
  fclose(f);
  if (rc != 0 && strncmp(err, "fuzz", 4) != 0) {
    fprintf(stderr, "error without the file name: %s\n", err);
    abort();
  }
  for (size_t i = 0; rc == 0 && i < list.n; i++) {
    const kda_gate_args *a = &list.items[i].args;
    if (a->num_heads < 1 || a->num_heads > KDA_MAX_HEADS || a->head_dim < 1 ||
        a->head_dim > KDA_MAX_HEAD_DIM || a->chunk_size < KDA_MIN_CHUNK ||
        a->chunk_size > KDA_MAX_CHUNK || a->seq_len < 1 || a->num_seqs > a->seq_len) {
      fprintf(stderr, "shape %zu out of range: %s\n", i, list.items[i].label);
      abort();
    }
  }
  shape_list_free(&list);
  return 0;
}
