/* The chunk plan object (kda_chunk_plan_* in kda.h), shared with the launch
 * code: what a gate call checks against and whether its launch must be
 * plain. */
#ifndef KDA_SRC_CHUNK_PLAN_H
#define KDA_SRC_CHUNK_PLAN_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "driver.h"
#include "kda/kda.h"
#include "spec.h"

struct kda_chunk_plan {
  kda_context *ctx;
  CUdeviceptr rows;      /* capacity slots, laid out as src/plan_pack.h says */
  int64_t capacity;      /* chunk slots allocated */
  int64_t max_tokens, max_seqs;
  int32_t chunk;
  /* The last build's batch, as gate calls must repeat it. */
  int64_t total_tokens, num_seqs;
  int built;
  /* Set by a build: the next gate launch on build_stream that reads the
   * plan goes without programmatic overlap, so it starts after the build
   * has completed; cleared (under lock) once that launch is enqueued. */
  CUstream build_stream;
  atomic_int plain_next;
  pthread_mutex_t lock;
};

/* A plan over device rows allocated elsewhere (kda_chunk_plan_create's,
 * kda_prewarm's equal-length batch, test_gpu_bad_seqlens's hand-made plan
 * of hostile entries): no allocation, nothing to free but the struct. */
void kda__chunk_plan_wrap(kda_chunk_plan *plan, kda_context *ctx, CUdeviceptr rows,
                          int64_t slots, int64_t total_tokens, int64_t num_seqs, int32_t chunk);

/* The spec of the one-block device builder (src/chunk_indices.c): of the
 * chunk table, or of a chunk plan. */
kda__spec kda__chunk_builder_spec(kda_dtype dt, int32_t chunk, int plan);

/* Checks that a gate call's batch is the plan's last build. */
kda_status kda__chunk_plan_check(const kda_chunk_plan *plan, const char *fn, int64_t seq_len,
                                 int64_t num_seqs, int32_t chunk);

/* KDA_TEST_PLAN_ALWAYS_OVERLAP=1: tools/gpu_check.sh's mutant launches the
 * plan builder and the first read after a build with programmatic overlap,
 * to show that test_gpu_kernels sees the stale plan the plain launches
 * prevent. Read only where a plain launch would be taken (not on the warm
 * path of a gate call). */
int kda__chunk_plan_test_overlap(void);

#endif
