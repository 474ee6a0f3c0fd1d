/* The tuning budget `kda-tune prewarm` gives each specialization by default,
 * and kda-bench the fused kernel: about the whole candidate space. A
 * deployment prewarms once, offline, so it can afford the full search that
 * a cold call inside a server (the library's 1 s budget, 7-15 candidates
 * pruned around the heuristic) cannot.
 *
 * Measured on the H100 (thirteenth session, docs/perf-notes.md):
 * - a T=512 shape's search took 2.1-5.6 s; a process's first search, fitted
 *   to the default NVRTC cost model, timed 95 of 124 candidates, later ones
 *   all of them;
 * - in kda-bench on one machine the full search's winners ran T=512 H=16
 *   and H=8 9-13% faster than the pruned run's (3.49 against 3.80-3.84 us,
 *   2.46 against 2.83-2.84), H=32 and H=4 within 1%; large shapes converge
 *   to the heuristic's block shape either way;
 * - the kimi-linear preset at tensor-parallel 1,2,4,8 (40 specializations)
 *   took 230 s. */
#ifndef KDA_TOOLS_PREWARM_BUDGET_H
#define KDA_TOOLS_PREWARM_BUDGET_H

#define KDA_PREWARM_BUDGET_MS 10000

#endif
