/* A chunk plan's layout (varlen mode 3 of kernel_templates/gate_cumsum.cu).
 *
 * A slot is what one block (per channel block) computes: one chunk of at
 * least chunk - granule rows, or several shorter ones (a sequence's last
 * chunk, a short sequence) packed at granules of kda__host_granule(chunk)
 * rows, as varlen mode 2 packs a host's rows. A slot has NG = chunk /
 * granule entries of two 32-bit words; entry q describes the chunk that
 * covers granule q: word 0 its first row, word 1 its rows | its first
 * granule << 16 | its end granule << 24 (the slot's last chunk also owns
 * the empty granules after it). An unused slot is all zero.
 *
 * The packed slots come first, then the whole chunks in sequence order.
 * Packing is first-fit decreasing: short chunks are sorted by granules
 * (stably, so each size keeps sequence order); a slot takes the largest
 * left, then as many of each smaller size as fit. Which chunks fill a slot
 * depends only on how many there are of each size, so the slots form a
 * few runs of one pattern repeated (kda__plan_runs), which the device
 * builder computes on one thread and then places every chunk in parallel.
 */
#ifndef KDA_SRC_PLAN_PACK_H
#define KDA_SRC_PLAN_PACK_H

#include <stddef.h>
#include <stdint.h>

#include "kda/kda.h"

enum {
  KDA__PLAN_MAX_NG = 9,          /* granules per slot are at most 8 */
  KDA__PLAN_GREEDY_RUNS = 64,    /* the device builder's limit (chunk_indices.cu) */
  KDA__PLAN_MAX_RUNS = 64 + 8,   /* the limit plus the one-per-slot runs after it */
};

/* Slots [start, start + reps) each take m[k] chunks of k granules; the
 * first of them is the taken[k]-th of that size (in sequence order). */
typedef struct kda__plan_run {
  int64_t start, reps;
  int m[KDA__PLAN_MAX_NG];
  int64_t taken[KDA__PLAN_MAX_NG];
} kda__plan_run;

int kda__plan_granules(int32_t chunk);

/* Device bytes of a plan of `slots` slots. */
size_t kda__plan_bytes(int64_t slots, int32_t chunk);

/* The runs that pack count[k] chunks of k granules (k in 1..ng-1) into
 * slots of ng granules; after max_greedy runs the rest go one per slot.
 * Returns the number of runs (at most KDA__PLAN_MAX_RUNS when max_greedy
 * <= KDA__PLAN_GREEDY_RUNS) and the slots they fill in *packed. */
int kda__plan_runs(const int64_t *count, int ng, int max_greedy, kda__plan_run *runs,
                   int64_t *packed);

/* Where the q-th chunk of k granules goes: its slot and granules [g0, g1). */
void kda__plan_place(const kda__plan_run *runs, int nruns, int ng, int k, int64_t q,
                     int64_t *slot, int *g0, int *g1);

/* Writes the plan of a batch (cu_seqlens on the host, clamped as the device
 * builder clamps it) into out (cap slots, kda__plan_bytes(cap, chunk));
 * slots past cap are dropped. Returns the slots used, at most cap. The
 * library passes max_greedy = KDA__PLAN_GREEDY_RUNS. */
int64_t kda__plan_pack(const void *cu_seqlens, kda_dtype dt, int64_t num_seqs,
                       int64_t total_tokens, int32_t chunk, int max_greedy, uint32_t *out,
                       int64_t cap);

#endif
