#include "reference.h"

#include <math.h>
#include <stddef.h>

/* Upstream's softplus: the identity past the threshold 20. */
static double ref_softplus(double z) { return z > 20.0 ? z : log1p(exp(z)); }

static double ref_sigmoid(double z) { return 1.0 / (1.0 + exp(-z)); }

static double ref_activate(const kda_gate_args *a, int h, int k, double x) {
  if (a->gate == KDA_GATE_NONE) return x;
  const int K = a->head_dim;
  const double z = x + (a->dt_bias ? (double)a->dt_bias[(size_t)h * (size_t)K + (size_t)k] : 0.0);
  const double ae = a->A_log ? exp((double)a->A_log[h]) : 1.0;
  if (a->gate == KDA_GATE_SOFTPLUS) return -ae * ref_softplus(z);
  return (double)a->lower_bound * ref_sigmoid(ae * z);
}

static int check_common(const kda_gate_args *a, const double *g, double *out) {
  if (!a || !g || !out) return -1;
  if (a->batch < 1 || a->seq_len < 1 || a->num_heads < 1 || a->head_dim < 1) return -1;
  if (a->gate != KDA_GATE_NONE && a->gate != KDA_GATE_SOFTPLUS &&
      a->gate != KDA_GATE_LOWER_BOUND)
    return -1;
  return 0;
}

static int64_t seqlen_at(const kda_gate_args *a, int64_t i) {
  if (a->cu_seqlens_dtype == KDA_DTYPE_I32) return (int64_t)((const int32_t *)a->cu_seqlens)[i];
  return ((const int64_t *)a->cu_seqlens)[i];
}

/* Cumsum over rows [bos, eos) of a [*, H*K] array, chunk by chunk, with the
 * activation applied to each value first when activate is set. */
static void cumsum_sequence(const kda_gate_args *a, int activate, const double *g, double *out,
                            int64_t bos, int64_t eos) {
  const int H = a->num_heads, K = a->head_dim;
  const size_t HK = (size_t)H * (size_t)K;
  const int64_t BT = a->chunk_size;
  const double scale = a->has_scale ? (double)a->scale : 1.0;
  for (int64_t c0 = bos; c0 < eos; c0 += BT) {
    const int64_t c1 = c0 + BT < eos ? c0 + BT : eos; /* the chunk, clipped */
    for (int h = 0; h < H; ++h) {
      for (int k = 0; k < K; ++k) {
        const size_t ch = (size_t)h * (size_t)K + (size_t)k;
        double acc = 0.0;
        for (int64_t s = 0; s < c1 - c0; ++s) {
          const int64_t t = a->reverse ? c1 - 1 - s : c0 + s;
          const double x = g[(size_t)t * HK + ch];
          acc += activate ? ref_activate(a, h, k, x) : x;
          out[(size_t)t * HK + ch] = acc * scale;
        }
      }
    }
  }
}

static int ref_cumsum(const kda_gate_args *a, int activate, const double *g, double *out) {
  if (check_common(a, g, out) != 0) return -1;
  if (a->chunk_size < 1) return -1;
  const size_t HK = (size_t)a->num_heads * (size_t)a->head_dim;
  const int64_t T = a->seq_len;
  if (a->cu_seqlens == NULL) {
    for (int64_t b = 0; b < a->batch; ++b) cumsum_sequence(a, activate, g, out, b * T, (b + 1) * T);
    return 0;
  }
  if (a->batch != 1 || a->num_seqs < 1) return -1;
  if (a->cu_seqlens_dtype != KDA_DTYPE_I32 && a->cu_seqlens_dtype != KDA_DTYPE_I64) return -1;
  if (seqlen_at(a, 0) != 0) return -1;
  for (int64_t i = 0; i < a->num_seqs; ++i) {
    if (seqlen_at(a, i + 1) < seqlen_at(a, i)) return -1;
  }
  const int64_t end = seqlen_at(a, a->num_seqs);
  if (end > T) return -1;
  for (int64_t i = 0; i < a->num_seqs; ++i) {
    cumsum_sequence(a, activate, g, out, seqlen_at(a, i), seqlen_at(a, i + 1));
  }
  for (size_t e = (size_t)end * HK; e < (size_t)T * HK; ++e) out[e] = 0.0;
  return 0;
}

int kda_ref_gate_chunk_cumsum(const kda_gate_args *a, const double *g, double *out) {
  return ref_cumsum(a, 1, g, out);
}

int kda_ref_chunk_local_cumsum(const kda_gate_args *a, const double *g, double *out) {
  return ref_cumsum(a, 0, g, out);
}

int kda_ref_gate(const kda_gate_args *a, const double *g, double *out) {
  if (check_common(a, g, out) != 0) return -1;
  const int H = a->num_heads, K = a->head_dim;
  const size_t rows = (size_t)a->batch * (size_t)a->seq_len;
  for (size_t r = 0; r < rows; ++r) {
    for (int h = 0; h < H; ++h) {
      for (int k = 0; k < K; ++k) {
        const size_t e = (r * (size_t)H + (size_t)h) * (size_t)K + (size_t)k;
        out[e] = ref_activate(a, h, k, g[e]);
      }
    }
  }
  return 0;
}

int64_t kda_ref_chunk_indices(const int64_t *cu_seqlens, int64_t num_seqs, int chunk,
                              int32_t *out, int64_t cap) {
  if (!cu_seqlens || num_seqs < 0 || chunk < 1 || cap < 0 || (!out && cap > 0)) return -1;
  int64_t count = 0;
  for (int64_t i = 0; i < num_seqs; ++i) {
    const int64_t len = cu_seqlens[i + 1] - cu_seqlens[i];
    for (int64_t j = 0; j * chunk < len; ++j) {
      if (count < cap) {
        out[2 * count] = (int32_t)i;
        out[2 * count + 1] = (int32_t)j;
      }
      ++count;
    }
  }
  return count;
}
