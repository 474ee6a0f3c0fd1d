/* Float64 CPU reference of the gate kernels, written from the math of
 * upstream flash-linear-attention (kda_gate_chunk_cumsum) and independent of
 * the library's code: it calls no library function.
 *
 * In every function below, a's pointer fields A_log, dt_bias and cu_seqlens
 * are HOST pointers (cu_seqlens of a->cu_seqlens_dtype); a->g and a->out are
 * not read. g holds the input already converted to double (the exact values
 * of the rounded input) and out receives batch * seq_len * num_heads *
 * head_dim doubles, both [B, T, H, K] row major. Return 0, or -1 on bad
 * arguments (NULL pointers, non-positive shapes, chunk_size < 1, varlen with
 * batch != 1 or num_seqs < 1, cu_seqlens not non-decreasing from 0 or past
 * seq_len).
 *
 * Activation at (h, k) of x, with z = x + dt_bias[h*K+k] (0 without dt_bias)
 * and a = exp(A_log[h]) (1 without A_log):
 *   SOFTPLUS:    -a * softplus(z), softplus(z) = z if z > 20 else log(1+e^z)
 *   LOWER_BOUND: lower_bound * sigmoid(a * z)
 *   NONE:        x
 * Chunk-local cumsum: every sequence's time axis is cut into chunks of
 * chunk_size tokens from the sequence start; o[t] sums the chunk from its
 * start to t (reverse: from t to the chunk end, clipped to the sequence
 * end), then o *= scale if has_scale. Tokens past cu_seqlens[num_seqs]
 * belong to no sequence and get 0.
 *
 * Each function runs on tu_threads() threads (test_util.h), each taking a
 * range of channels or rows; every element is computed the same way
 * whatever the split, so the result does not depend on the count. */
#ifndef KDA_TESTS_REFERENCE_H
#define KDA_TESTS_REFERENCE_H

#include <stdint.h>

#include "kda/kda.h"

/* Activation a->gate (NONE: identity) followed by the chunk-local cumsum. */
int kda_ref_gate_chunk_cumsum(const kda_gate_args *a, const double *g, double *out);

/* Chunk-local cumsum only; a->gate, A_log, dt_bias and lower_bound are
 * ignored (the input is treated as already activated). */
int kda_ref_chunk_local_cumsum(const kda_gate_args *a, const double *g, double *out);

/* Activation only, elementwise over B*T*H*K; chunk_size, reverse, scale and
 * the varlen fields are ignored, as kda_gate() ignores them. */
int kda_ref_gate(const kda_gate_args *a, const double *g, double *out);

/* The varlen chunk table, the naive way: for each sequence i in order, for
 * each chunk j of ceil(len_i / chunk) (none when len_i <= 0), a row (i, j).
 * Writes at most cap rows to out ([cap][2]) and returns the total count
 * (which may exceed cap), or -1 for bad arguments (NULL cu_seqlens,
 * num_seqs < 0, chunk < 1, out NULL with cap > 0, cap < 0). */
int64_t kda_ref_chunk_indices(const int64_t *cu_seqlens, int64_t num_seqs, int chunk,
                              int32_t *out, int64_t cap);

#endif
