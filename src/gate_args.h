/* Host-side validation of kda_gate_args and its translation into a kernel
 * specialization plus the launch geometry. Pure functions: no driver, no
 * device, so every validation path is tested on a CPU-only machine. */
#ifndef KDA_SRC_GATE_ARGS_H
#define KDA_SRC_GATE_ARGS_H

#include "kda/kda.h"
#include "spec.h"

/* A device address's offset within 256 bytes (cudaMalloc's alignment): all
 * of it that decides the vector width a pointer allows (at most 32 bytes),
 * so a view's key; a shape description (kda_prewarm, kda_db_lookup, the
 * background worker's job) passes a view's g and out as such offsets. */
static inline uintptr_t kda__view_offset(const void *p) { return (uintptr_t)p & 255u; }

typedef enum kda__op {
  KDA__OP_GATE_CHUNK_CUMSUM = 0, /* fused */
  KDA__OP_CHUNK_LOCAL_CUMSUM = 1,
  KDA__OP_GATE = 2
} kda__op;

/* Varlen mode 2's launch parameter, laid out as host_plan<KDA_MAX_HOST_ROWS>
 * in kernel_templates/kda_common.cuh: each chunk's first row << 8 | (rows -
 * 1), and per chunk slot (a block per channel block) its first chunk (low
 * byte) and the granules its chunks start at (high byte). */
typedef struct kda__host_plan {
  uint32_t rows[KDA_MAX_HOST_ROWS];
  uint16_t slots[KDA_MAX_HOST_ROWS];
} kda__host_plan;

typedef struct kda__launch_plan {
  kda__spec spec;         /* config filled by the heuristic */
  int64_t num_chunks;     /* chunk rows launched for (chunk slots in varlen mode 2) */
  int64_t seq_len;        /* T passed to the kernel (B*T for the gate op) */
  int64_t chunks_per_seq; /* dense: ceil(T / chunk); varlen: num_seqs (the kernel's last argument) */
  uint64_t grid;          /* blocks */
  /* spec.varlen == 2 only: the kernel's last argument. Last, and left
   * uninitialised otherwise, so a dense call does not clear 1.5 KB. */
  kda__host_plan host;
} kda__launch_plan;

/* The kernel's last argument for a plan: its host plan in varlen mode 2, a
 * zero word (host_plan<1>) otherwise. */
const void *kda__plan_rows_arg(const kda__launch_plan *plan);

/* The kernel's cu_seqlens, chunk_indices and num_chunks_device arguments
 * for a plan of args: the caller's pointers in the modes that read them, a
 * chunk plan's rows in mode 3 (args->chunk_plan must be a real plan), NULL
 * otherwise. */
void kda__plan_table_args(const kda__launch_plan *plan, const kda_gate_args *a, const void **cu,
                          const void **ci, const void **nd);

/* Entry i of a host cu_seqlens of dtype I32 or I64. */
int64_t kda__seqlen_at(const void *cu, kda_dtype dt, int64_t i);

/* Equal-length sequences, as kda_prewarm and kda_compile_offline describe a
 * varlen shape: entry i = i * total / num_seqs, in dtype (I32 or I64). buf
 * holds num_seqs + 1 entries. */
void kda__equal_seqlens(kda_dtype dtype, int64_t num_seqs, int64_t total, void *buf);

/* For a shape description (kda_prewarm, kda_compile_offline), where a
 * non-NULL cu_seqlens_host only asks for the host-rows specialization:
 * points it at equal-length sequences (*owned, to free) when the shape is
 * varlen (num_seqs in [1, 65535]), else clears it. */
kda_status kda__shape_host_seqlens(kda_gate_args *a, void **owned);

/* Packs a varlen batch's chunks into chunk slots of one block each (per
 * channel block): a whole chunk, or short chunks at granules of
 * kda__host_granule(chunk) rows. lens[i] (1..chunk) and rows[i] are chunk
 * i's length and first row, n <= KDA_MAX_HOST_ROWS of them. Fills hp and
 * returns the slot count. Exposed for its unit test. */
int64_t kda__pack_host_chunks(const uint32_t *rows, const uint16_t *lens, int64_t n, int32_t chunk,
                              kda__host_plan *hp);

/* Validates args for op and fills plan. Every rejection is a specific status
 * with a message naming the field. */
kda_status kda__plan_gate_op(kda__op op, const kda_gate_args *args, kda__launch_plan *plan);

/* Checks a chunk size: power of two in [KDA_MIN_CHUNK, KDA_MAX_CHUNK]. */
kda_status kda__check_chunk_size(int32_t chunk);

#endif
