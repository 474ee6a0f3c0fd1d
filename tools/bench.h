/* kda-bench: the shapes it measures and the numbers it keeps per shape. */
#ifndef KDA_TOOLS_BENCH_H
#define KDA_TOOLS_BENCH_H

#include <stdint.h>

#include "kda/kda.h"

typedef struct bench_row {
  const char *group;   /* "matrix", "varlen", "varlen-host", "varlen-plan", "no-bias", "K=64", "chunk" */
  int64_t batch, tokens; /* dense: [batch, tokens]; varlen: batch 1, tokens total */
  int32_t heads, head_dim, chunk;
  int32_t bias;        /* dt_bias given */
  int32_t num_seqs;    /* 0: dense; else ragged sequences summing to tokens */
  int32_t host_rows;   /* varlen: pass cu_seqlens_host and no chunk table */
  int32_t extra;       /* run only when its group is named in --groups */
  int32_t chunk_plan;  /* varlen: a kda_chunk_plan instead of cu_seqlens and the table */
} bench_row;

typedef struct bench_result {
  double fused_us, fused_single_us;     /* steady state (graph), after an L2 flush */
  double unfused_us;                    /* gate + chunk_local_cumsum, steady state */
  double heuristic_us;                  /* fused with the built-in heuristic config */
  double plain_us;                      /* fused, tuned config, launch overlap off */
  double max_err;                       /* vs the float64 reference */
  int64_t elements;
  char config[96];
  double tune_ms;                       /* tuning run of the fused kernel */
  double compile_ms;                    /* its NVRTC wall time */
  int candidates;
  double tuner_us, tuner_heuristic_us; /* what the tuner itself measured */
  double convert_us;   /* a plain bf16 -> f32 convert kernel, steady state (bench_convert.h) */
  char convert_kernel[16]; /* which of the convert kernels was fastest */
  /* fused (tuned), heuristic and convert again at the end of the row, on a
   * second allocation of its buffers (some rows' times depend on what the
   * GPU ran before them) */
  double fused_us_repeat, heuristic_us_repeat, convert_us_repeat;
} bench_result;

/* The benchmark's rows: the H x T matrix at K=128, chunk 64, with
 * dt_bias; ragged varlen rows, with the chunk table, with the rows in the
 * launch and with a chunk plan; one without dt_bias; K=64; chunk 32 and 128. Then the extra rows
 * (--groups more,more-varlen,more-host,more-plan): shapes of 16M elements and up that
 * the table does not name (batches, a partial last chunk, many
 * sequences). */
extern const bench_row bench_rows[];
extern const int bench_row_count;

/* Ragged lengths of row r's sequences (num_seqs of them, summing to tokens). */
void bench_row_lengths(const bench_row *r, int64_t *lens);

#endif
