/* Host-side validation of kda_gate_args and its translation into a kernel
 * specialization plus the launch geometry. Pure functions: no driver, no
 * device, so every validation path is tested on a CPU-only machine. */
#ifndef KDA_SRC_GATE_ARGS_H
#define KDA_SRC_GATE_ARGS_H

#include "kda/kda.h"
#include "spec.h"

typedef enum kda__op {
  KDA__OP_GATE_CHUNK_CUMSUM = 0, /* fused */
  KDA__OP_CHUNK_LOCAL_CUMSUM = 1,
  KDA__OP_GATE = 2
} kda__op;

typedef struct kda__launch_plan {
  kda__spec spec;         /* config filled by the heuristic */
  int64_t num_chunks;     /* chunk rows launched for */
  int64_t seq_len;        /* T passed to the kernel (B*T for the gate op) */
  int64_t chunks_per_seq; /* dense: ceil(T / chunk); varlen: num_seqs (the kernel's last argument) */
  uint64_t grid;          /* blocks */
} kda__launch_plan;

/* Validates args for op and fills plan. Every rejection is a specific status
 * with a message naming the field. */
kda_status kda__plan_gate_op(kda__op op, const kda_gate_args *args, kda__launch_plan *plan);

/* Checks a chunk size: power of two in [KDA_MIN_CHUNK, KDA_MAX_CHUNK]. */
kda_status kda__check_chunk_size(int32_t chunk);

#endif
