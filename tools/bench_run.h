/* kda-bench: how one row is run: its buffers, the float64 check of every path,
 * and its timings (steady state of the tuned, heuristic and plain-launch
 * contexts, single launch after an L2 flush, the unfused path and the
 * convert reference; then the tuned, heuristic and convert timings again at
 * the end, on a second allocation of the row's buffers). */
#ifndef KDA_TOOLS_BENCH_RUN_H
#define KDA_TOOLS_BENCH_RUN_H

#include "bench.h"
#include "kda/kda.h"

/* Compiles the L2 flush kernel; before the first run_row. */
void bench_run_init(void);

/* Checks, then times row r in the three contexts (tuned, tuning off, tuned
 * with launch overlap off) into res; the unfused path's kernels are tuned in
 * unf_ctx (same database, the library's own budget). Exits with a message
 * on any failure. */
void run_row(kda_context *ctx, kda_context *unf_ctx, kda_context *heur_ctx,
             kda_context *plain_ctx, const bench_row *r, bench_result *res);

#endif
