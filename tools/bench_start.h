/* kda-bench's cold and warm start: a fresh process from context creation
 * (on a CUDA context it already has) to its first finished result. */
#ifndef KDA_TOOLS_BENCH_START_H
#define KDA_TOOLS_BENCH_START_H

#include <stddef.h>

/* The child's side (kda-bench --child-start): one call of T=8192 H=32
 * K=128 through a new context on the database $KDA_BENCH_DB; prints one
 * JSON line of its timings and counters. */
int child_start(void);

/* Runs this executable as a child (--child-start) and reads its line into
 * line. Returns 0, or -1 where the child could not run or failed. */
int run_child(char *line, size_t size);

#endif
