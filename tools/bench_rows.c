#include "bench.h"

#define MATRIX(T, H) {"matrix", 1, T, H, 128, 64, 1, 0, 0, 0, 0}

const bench_row bench_rows[] = {
    MATRIX(512, 32),   MATRIX(512, 16),   MATRIX(512, 8),   MATRIX(512, 4),
    MATRIX(2048, 32),  MATRIX(2048, 16),  MATRIX(2048, 8),  MATRIX(2048, 4),
    MATRIX(8192, 32),  MATRIX(8192, 16),  MATRIX(8192, 8),  MATRIX(8192, 4),
    MATRIX(32768, 32), MATRIX(32768, 16), MATRIX(32768, 8), MATRIX(32768, 4),
    {"varlen", 1, 8192, 32, 128, 64, 1, 8, 0, 0, 0},
    {"varlen", 1, 8192, 16, 128, 64, 1, 8, 0, 0, 0},
    {"varlen", 1, 32768, 32, 128, 64, 1, 8, 0, 0, 0},
    {"varlen", 1, 32768, 16, 128, 64, 1, 8, 0, 0, 0},
    /* The 8192-token batches (132 chunks) with their rows in the launch. */
    {"varlen-host", 1, 8192, 32, 128, 64, 1, 8, 1, 0, 0},
    {"varlen-host", 1, 8192, 16, 128, 64, 1, 8, 1, 0, 0},
    /* The same batches through a kda_chunk_plan built on the device. */
    {"varlen-plan", 1, 8192, 32, 128, 64, 1, 8, 0, 0, 1},
    {"varlen-plan", 1, 8192, 16, 128, 64, 1, 8, 0, 0, 1},
    {"varlen-plan", 1, 32768, 32, 128, 64, 1, 8, 0, 0, 1},
    {"varlen-plan", 1, 32768, 16, 128, 64, 1, 8, 0, 0, 1},
    {"no-bias", 1, 8192, 32, 128, 64, 0, 0, 0, 0, 0},
    {"K=64", 1, 8192, 32, 64, 64, 1, 0, 0, 0, 0},
    {"K=64", 1, 32768, 32, 64, 64, 1, 0, 0, 0, 0},
    {"chunk", 1, 8192, 32, 128, 32, 1, 0, 0, 0, 0},
    {"chunk", 1, 8192, 32, 128, 128, 1, 0, 0, 0, 0},
    /* Extra rows, run only on request: what a server also sends. */
    {"more", 4, 2048, 16, 128, 64, 1, 0, 0, 1, 0},   /* a batch of 4 */
    {"more", 1, 10000, 16, 128, 64, 1, 0, 0, 1, 0},  /* a partial last chunk */
    {"more", 1, 4096, 32, 128, 64, 1, 0, 0, 1, 0},
    {"more", 1, 2048, 64, 128, 64, 1, 0, 0, 1, 0},
    {"more", 1, 65536, 4, 128, 64, 1, 0, 0, 1, 0},
    {"more-varlen", 1, 8192, 16, 128, 64, 1, 32, 0, 1, 0},
    {"more-varlen", 1, 8192, 16, 128, 64, 1, 64, 0, 1, 0},
    {"more-varlen", 1, 8192, 16, 128, 64, 1, 128, 0, 1, 0},
    {"more-varlen", 1, 32768, 8, 128, 64, 1, 64, 0, 1, 0},
    {"more-host", 1, 8192, 16, 128, 64, 1, 32, 1, 1, 0},
    {"more-host", 1, 8192, 16, 128, 64, 1, 64, 1, 1, 0},
    {"more-host", 1, 8192, 32, 128, 64, 1, 64, 1, 1, 0},
    {"more-host", 1, 8192, 16, 128, 64, 1, 128, 1, 1, 0},
    {"more-plan", 1, 8192, 16, 128, 64, 1, 32, 0, 1, 1},
    {"more-plan", 1, 8192, 16, 128, 64, 1, 64, 0, 1, 1},
    {"more-plan", 1, 8192, 16, 128, 64, 1, 128, 0, 1, 1},
    {"more-plan", 1, 32768, 8, 128, 64, 1, 64, 0, 1, 1},
};
const int bench_row_count = (int)(sizeof bench_rows / sizeof bench_rows[0]);

void bench_row_lengths(const bench_row *r, int64_t *lens) {
  /* Uneven weights (sum 64 over each 8 sequences) plus an odd offset, so no
   * sequence of the 8-sequence rows is a whole number of chunks; the last one
   * takes the remainder. */
  static const int w[8] = {3, 17, 5, 11, 1, 13, 7, 7};
  int64_t used = 0;
  for (int i = 0; i < r->num_seqs; ++i) {
    if (i == r->num_seqs - 1) {
      lens[i] = r->tokens - used;
    } else {
      /* Pairs move 13 tokens (less for short ones) from the even to the
       * odd sequence, so the offsets cancel and the last stays positive. */
      const int64_t per = 8 * (int64_t)r->num_seqs;
      const int64_t base = r->tokens * w[i % 8] / per;
      const int64_t even = (i % 2) ? r->tokens * w[(i - 1) % 8] / per : base;
      const int64_t shift = even / 2 < 13 ? even / 2 : 13;
      lens[i] = base + ((i % 2) ? shift : -shift);
      if (lens[i] < 1) lens[i] = 1;
    }
    used += lens[i];
  }
}
