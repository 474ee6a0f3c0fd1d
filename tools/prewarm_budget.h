/* The tuning budget `kda-tune prewarm` gives each specialization by default,
 * and kda-bench the fused kernel: the whole candidate space. A deployment
 * prewarms once, offline, so it can afford the full search that a cold call
 * inside a server (the library's 1 s budget, 7-15 candidates pruned around
 * the heuristic) cannot. The search itself ends when the space does: the
 * budget bounds what the tuner's cost model admits, and a process's first
 * search, before NVRTC's cost is calibrated, runs on the default model,
 * which with 8 compile threads admits 95 candidates at 10 s and 143 at 15 s,
 * past the fused kernel's 122-124 (test_tuner_select).
 *
 * Measured on the H100 at 10 s (thirteenth session, docs/perf-notes.md):
 * - a T=512 shape's search took 2.1-5.6 s; a process's first search timed
 *   95 of 124 candidates (hence 15 s), later ones all of them;
 * - in kda-bench on one machine the full search's winners ran T=512 H=16
 *   and H=8 9-13% faster than the pruned run's (3.49 against 3.80-3.84 us,
 *   2.46 against 2.83-2.84), H=32 and H=4 within 1%; large shapes converge
 *   to the heuristic's block shape either way;
 * - the kimi-linear preset at tensor-parallel 1,2,4,8 (40 specializations)
 *   took 230 s. */
#ifndef KDA_TOOLS_PREWARM_BUDGET_H
#define KDA_TOOLS_PREWARM_BUDGET_H

#define KDA_PREWARM_BUDGET_MS 15000

#endif
