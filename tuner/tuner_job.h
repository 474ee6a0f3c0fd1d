/* What the tuner's own files share about one slot build (tuner.c decides,
 * tuner_run.c runs a tuning). Not for other modules. */
#ifndef KDA_TUNER_TUNER_JOB_H
#define KDA_TUNER_TUNER_JOB_H

#include "context_internal.h"
#include "tuner.h"

typedef struct kda__slot_job {
  kda_context *ctx;
  const kda__tune_request *rq;
  kda__spec slot;
  kda__config heuristic;
  kda__config space[KDA__TUNE_SPACE_MAX]; /* the slot's candidate space */
  size_t n, hid;                          /* its size, the heuristic's id */
  kda__tune_keys keys;
  int have_keys; /* 0: no database use at all */
  char what[512]; /* spec description for logs */
  /* The lease holder of this job: "pid@host#n", n counting the process's
   * jobs. Not "pid@host" alone: two contexts of one process (or a prewarm
   * beside a call of one context) would each take the other's lease as
   * their own and tune the key twice, the first to finish dropping the
   * lease the other still tunes under. */
  char holder[300];
} kda__slot_job;

static inline int same_config(const kda__config *a, const kda__config *b) {
  return a->vec == b->vec && a->tx == b->tx && a->seg == b->seg;
}

double kda__job_now_ms(void);
/* The slot's spec with a concrete config (tuned, bucket, vec_cap zero). */
kda__spec kda__job_concrete(const kda__spec *slot, kda__config cfg);
/* A database write failed: count it; warn once per context (the store adds
 * its own one-time warning naming the condition). */
void kda__job_persist_failed(kda_context *ctx, const char *what);
/* Loads cfg's module from a stored cubin, or compiles it alone and stores
 * the cubin. Never fails for a database reason. */
kda_status kda__job_use_config(kda__slot_job *j, kda__config cfg, CUmodule *module,
                               CUfunction *function);
/* A tuning run (the caller holds the key's lease); *cfg gets the winner.
 * Falls back to the heuristic, unpersisted, when tuning cannot proceed. */
kda_status kda__job_tune(kda__slot_job *j, CUmodule *module, CUfunction *function,
                         kda__config *cfg);

#endif
