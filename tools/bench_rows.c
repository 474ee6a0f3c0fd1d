#include "bench.h"

#define MATRIX(T, H) {"matrix", 1, T, H, 128, 64, 1, 0, 0}

const bench_row bench_rows[] = {
    MATRIX(512, 32),   MATRIX(512, 16),   MATRIX(512, 8),   MATRIX(512, 4),
    MATRIX(2048, 32),  MATRIX(2048, 16),  MATRIX(2048, 8),  MATRIX(2048, 4),
    MATRIX(8192, 32),  MATRIX(8192, 16),  MATRIX(8192, 8),  MATRIX(8192, 4),
    MATRIX(32768, 32), MATRIX(32768, 16), MATRIX(32768, 8), MATRIX(32768, 4),
    {"varlen", 1, 8192, 32, 128, 64, 1, 8, 0},
    {"varlen", 1, 8192, 16, 128, 64, 1, 8, 0},
    {"varlen", 1, 32768, 32, 128, 64, 1, 8, 0},
    {"varlen", 1, 32768, 16, 128, 64, 1, 8, 0},
    /* The 8192-token batches (136 chunks) with their rows in the launch. */
    {"varlen-host", 1, 8192, 32, 128, 64, 1, 8, 1},
    {"varlen-host", 1, 8192, 16, 128, 64, 1, 8, 1},
    {"no-bias", 1, 8192, 32, 128, 64, 0, 0, 0},
    {"K=64", 1, 8192, 32, 64, 64, 1, 0, 0},
    {"K=64", 1, 32768, 32, 64, 64, 1, 0, 0},
    {"chunk", 1, 8192, 32, 128, 32, 1, 0, 0},
    {"chunk", 1, 8192, 32, 128, 128, 1, 0, 0},
};
const int bench_row_count = (int)(sizeof bench_rows / sizeof bench_rows[0]);

void bench_row_lengths(const bench_row *r, int64_t *lens) {
  /* Uneven weights (sum 64) plus an odd offset, so no sequence is a whole
   * number of chunks and the last one takes the remainder. */
  static const int w[8] = {3, 17, 5, 11, 1, 13, 7, 7};
  int64_t used = 0;
  for (int i = 0; i < r->num_seqs; ++i) {
    if (i == r->num_seqs - 1) {
      lens[i] = r->tokens - used;
    } else {
      lens[i] = r->tokens * w[i % 8] / 64 + ((i % 2) ? 13 : -13);
      if (lens[i] < 1) lens[i] = 1;
    }
    used += lens[i];
  }
}
