/* The tuning budget `kda-tune prewarm` gives each specialization by default,
 * and kda-bench the fused kernel: large enough for the whole candidate
 * space. A deployment prewarms once, offline, so it can afford the full
 * search that a cold call inside a server (the library's 1 s budget, 7-15
 * candidates pruned around the heuristic) cannot. On the H100 the full space
 * of a T=512 shape (122-124 candidates) took 3.5-4.9 s, and its winner was
 * 2-24% faster than the pruned run's on the tuner's clock (docs/perf-notes.md,
 * "Thirteenth session"); large shapes converge to the heuristic either way. */
#ifndef KDA_TOOLS_PREWARM_BUDGET_H
#define KDA_TOOLS_PREWARM_BUDGET_H

#define KDA_PREWARM_BUDGET_MS 10000

#endif
