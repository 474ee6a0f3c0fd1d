/* The GPU kernel tests' cases: one shape, dtype, option set and varlen path
 * per gcase, run against the float64 CPU reference with the output
 * poisoned first (run_case), or many at once after compiling their
 * specializations on every CPU (run_cases). Shared by test_gpu_kernels
 * (the fixed sweeps) and test_gpu_random (cases drawn from a seed). */
#ifndef KDA_TESTS_GPU_CASE_H
#define KDA_TESTS_GPU_CASE_H

#include <stddef.h>
#include <stdint.h>

#include "driver.h"
#include "gate_args.h"
#include "kda/kda.h"
#include "spec.h"

#define TOL_F32 2e-5

/* Set by the test binary's setup before any case runs. */
extern kda_context *g_ctx;
extern const kda__driver *g_drv;
extern int g_sm_count; /* for the heuristic's fit to the grid */
extern int g_cases;    /* cases run so far */
extern double g_ahead_s; /* wall time of precompile_specs, summed */

typedef struct gcase {
  kda__op op;
  kda_dtype in, out;
  int H, K, chunk;
  kda_gate_kind gate;
  int bias, alog, scale, reverse;
  int B;
  int64_t T;               /* dense length */
  const int64_t *lens;     /* varlen sequence lengths (NULL: dense) */
  int nseq;
  kda_dtype idx;           /* cu_seqlens dtype */
  int device_table;        /* build chunk_indices on the device */
  int layer;               /* go through kda_layer_gate_fwd (table built inside) */
  int host_rows;           /* pass cu_seqlens_host: 1 without a table, 2 with one too */
  int expect_varlen;       /* with host_rows: the plan's varlen mode (2, or 1 past the limit) */
  int chunk_plan;          /* pass a kda_chunk_plan built on the device (no cu_seqlens) */
  const kda__config *cfg;  /* NULL: heuristic */
  kda__spec *spec_out;     /* with cfg: gets the specialization, less its config */
  double stddev;           /* of the random input; 0 means 1 */
  int g_offset, out_offset; /* elements past an aligned allocation (not with cfg) */
  uint64_t seed;
  struct case_data *reuse; /* input and reference made by the first case, kept */
} gcase;

/* A case's random input, A_log, dt_bias and float64 reference. The sweeps
 * of every configuration make them once per shape (at 2.4M elements they
 * take some 0.2 s of CPU, as long as the rest of a case). */
typedef struct case_data {
  int ready;
  void *g_host;
  double *g_d, *ref;
  float *bias;
  float A_log[4096];
} case_data;

void case_data_release(case_data *d);
/* One line naming every field of c, for failure messages. */
void describe(const gcase *c, char *buf, size_t n);
/* Runs one case and returns the number of elements outside the budget. */
size_t run_case(const gcase *c);
double seconds_now(void);
/* Compiles specs[0, n) on up to 16 threads, so the cases after find them warm. */
void precompile_specs(const kda__spec *specs, size_t n);
/* spec with each of cfgs. */
void precompile_configs(const kda__spec *spec, const kda__config *cfgs, size_t n);
/* The specializations run_case(c) will launch (at most 2); 0 when it does not plan. */
int case_spec(const gcase *c, kda__spec *out);
/* Runs cases[0, n) after compiling their specializations ahead; returns
 * the elements out of budget, summed. */
size_t run_cases(const gcase *cases, size_t n);
/* bf16 -> f32 fused softplus, H=4 K=64 chunk 64, dt_bias and A_log, B=2 T=200. */
gcase base_case(void);

/* cmocka group setup: a context on device 0 (g_ctx), its SM count, and a
 * line naming the device; teardown prints the compile count and destroys it. */
int gpu_case_setup(void **state);
int gpu_case_teardown(void **state);

extern const int64_t RAGGED[7];
/* Shorter ragged batch for sweeps that repeat one shape many times. */
extern const int64_t RAGGED_SHORT[7];

#endif
