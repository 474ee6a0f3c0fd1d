/* A specialization: everything that is a compile-time parameter of a kernel
 * template (shape, flags, dtypes) plus its block configuration. The struct is
 * compared and hashed as bytes, so always zero it before filling it in. */
#ifndef KDA_SRC_SPEC_H
#define KDA_SRC_SPEC_H

#include <stddef.h>
#include <stdint.h>

#include "kda/kda.h"

typedef enum kda__kernel_id {
  KDA__KERNEL_GATE_CUMSUM = 0,   /* kernel_templates/gate_cumsum.cu */
  KDA__KERNEL_CHUNK_INDICES = 1  /* kernel_templates/chunk_indices.cu */
} kda__kernel_id;

/* Block-configuration knobs (the tuner's search space).
 * gate_cumsum: vec channels per thread (1,2,4,8), tx threads across channels
 * (1..256, power of two), seg segments the chunk's rows are split into
 * (1..chunk, power of two); threads per block = tx * seg <= 1024.
 * chunk_indices: tx threads per block (32..1024), vec = seg = 1. */
typedef struct kda__config {
  int32_t vec, tx, seg;
} kda__config;

typedef struct kda__spec {
  int32_t kernel;     /* kda__kernel_id */
  int32_t in_dtype;   /* kda_dtype of g */
  int32_t out_dtype;  /* kda_dtype of out */
  int32_t heads;      /* H */
  int32_t head_dim;   /* K */
  int32_t chunk;      /* BT */
  int32_t cumsum;     /* 0: activation only (kda_gate) */
  int32_t gate;       /* kda_gate_kind */
  int32_t has_bias, has_alog, has_scale, reverse, varlen;
  int32_t idx_dtype;  /* kda_dtype of cu_seqlens (I32 when dense) */
  kda__config cfg;
  /* A tuned slot (tuned = 1) names a specialization in a token bucket whose
   * config the tuner picks: cfg is zero and vec_cap is the widest vector
   * width the call's pointers allow. All three are zero for a concrete
   * config, so the module cache's single flight covers tuning too. */
  int32_t tuned, bucket, vec_cap;
} kda__spec;

#define KDA__NAME_MAX 256

/* Template source of the spec's kernel ("gate_cumsum.cu"). */
const char *kda__spec_source_name(const kda__spec *spec);

/* Writes the NVRTC name expression, e.g. "kda::gate_cumsum<2,0,...>".
 * Returns the length, or -1 if it did not fit. */
int kda__spec_name(const kda__spec *spec, char *buf, size_t size);

/* Human-readable one-line description, for logs and error messages. */
int kda__spec_describe(const kda__spec *spec, char *buf, size_t size);

/* 64-bit FNV-1a of the spec's bytes. */
uint64_t kda__spec_hash(const kda__spec *spec);

/* Varlen mode 2 (rows in the launch) packs short chunks into one block at
 * granules of this many rows: chunk / 8, at least 8 (host_granule in
 * kernel_templates/kda_common.cuh). Its configs keep a segment's rows
 * (chunk / seg) within one granule. */
int kda__host_granule(int chunk);

/* Threads per block of the spec's config. */
int kda__config_threads(const kda__spec *spec);
/* Nonzero for the plain cumsum (no gate), which sums in double: its
 * blocks hold at most KDA__MAX_WIDE_TOTALS segment totals (tx*seg*vec). */
int kda__spec_sums_in_double(const kda__spec *spec);
#define KDA__MAX_WIDE_TOTALS 4096

/* Largest vector width (8, 4, 2, 1) dividing H*K. */
int kda__max_vec(const kda__spec *spec);

/* KDA_OK if spec->cfg is a legal config for the spec (divides, fits in 1024
 * threads and the register budget), else KDA_ERROR_INVALID_ARGUMENT with a
 * message. Does not depend on a device. */
kda_status kda__config_check(const kda__spec *spec);

/* The built-in heuristic config for a spec (always legal). */
kda__config kda__config_heuristic(const kda__spec *spec);

/* Narrows config c while a launch of num_chunks chunks would starve the
 * SMs (kda__grid_starves_sms), down to one warp (the result stays legal). */
kda__config kda__config_fit_grid(const kda__spec *spec, kda__config c, int64_t num_chunks,
                                 int sm_count);

/* Every legal config of the spec in a stable order (the tuner's space).
 * Returns how many there are; writes at most cap of them. */
size_t kda__config_space(const kda__spec *spec, kda__config *out, size_t cap);

/* Grid size (blocks) for a launch of num_chunks chunks. */
uint64_t kda__spec_grid(const kda__spec *spec, int64_t num_chunks);

/* Whether a grid of `grid` blocks is too small to keep the SMs busy: fewer
 * blocks than a quarter of the SMs. The one threshold shared by
 * kda__config_fit_grid and the tuner's ranking of candidates. */
int kda__grid_starves_sms(uint64_t grid, int sm_count);

#endif
