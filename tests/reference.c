#include "reference.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#include "test_util.h"

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

/* Cumsum over rows [bos, eos) of a [*, H*K] array, chunk by chunk, for the
 * channels [ch0, ch1) of H*K, with the activation applied to each value
 * first when activate is set. */
static void cumsum_sequence(const kda_gate_args *a, int activate, const double *g, double *out,
                            int64_t bos, int64_t eos, size_t ch0, size_t ch1) {
  const int K = a->head_dim;
  const size_t HK = (size_t)a->num_heads * (size_t)K;
  const int64_t BT = a->chunk_size;
  const double scale = a->has_scale ? (double)a->scale : 1.0;
  for (int64_t c0 = bos; c0 < eos; c0 += BT) {
    const int64_t c1 = c0 + BT < eos ? c0 + BT : eos; /* the chunk, clipped */
    for (size_t ch = ch0; ch < ch1; ++ch) {
      const int h = (int)(ch / (size_t)K), k = (int)(ch % (size_t)K);
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

/* The sequences' bounds, shared by the threads that each take a range of
 * channels (tu_parallel_for): every output element is computed the same
 * way whatever the split. */
typedef struct cumsum_job {
  const kda_gate_args *a;
  int activate;
  const double *g;
  double *out;
  int64_t nseq;
  const int64_t *bounds; /* nseq + 1 row offsets; NULL: dense batches of seq_len */
} cumsum_job;

static void cumsum_channels(void *ctx, size_t ch0, size_t ch1) {
  const cumsum_job *j = ctx;
  const int64_t T = j->a->seq_len;
  for (int64_t i = 0; i < j->nseq; ++i) {
    const int64_t bos = j->bounds ? j->bounds[i] : i * T;
    const int64_t eos = j->bounds ? j->bounds[i + 1] : (i + 1) * T;
    cumsum_sequence(j->a, j->activate, j->g, j->out, bos, eos, ch0, ch1);
  }
}

static int ref_cumsum(const kda_gate_args *a, int activate, const double *g, double *out) {
  if (check_common(a, g, out) != 0) return -1;
  if (a->chunk_size < 1) return -1;
  const size_t HK = (size_t)a->num_heads * (size_t)a->head_dim;
  const int64_t T = a->seq_len;
  /* A channel's work is its rows: split so that each part has ~64k elements. */
  const size_t grain = 1 + 65536 / (size_t)(a->batch * T);
  if (a->cu_seqlens == NULL) {
    cumsum_job j = {a, activate, g, out, a->batch, NULL};
    tu_parallel_for(HK, grain, cumsum_channels, &j);
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
  int64_t *bounds = malloc(((size_t)a->num_seqs + 1) * sizeof *bounds);
  if (!bounds) return -1;
  for (int64_t i = 0; i <= a->num_seqs; ++i) bounds[i] = seqlen_at(a, i);
  cumsum_job j = {a, activate, g, out, a->num_seqs, bounds};
  tu_parallel_for(HK, grain, cumsum_channels, &j);
  free(bounds);
  for (size_t e = (size_t)end * HK; e < (size_t)T * HK; ++e) out[e] = 0.0;
  return 0;
}

int kda_ref_gate_chunk_cumsum(const kda_gate_args *a, const double *g, double *out) {
  return ref_cumsum(a, 1, g, out);
}

int kda_ref_chunk_local_cumsum(const kda_gate_args *a, const double *g, double *out) {
  return ref_cumsum(a, 0, g, out);
}

typedef struct gate_job {
  const kda_gate_args *a;
  const double *g;
  double *out;
} gate_job;

static void gate_rows(void *ctx, size_t r0, size_t r1) {
  const gate_job *j = ctx;
  const int H = j->a->num_heads, K = j->a->head_dim;
  for (size_t r = r0; r < r1; ++r) {
    for (int h = 0; h < H; ++h) {
      for (int k = 0; k < K; ++k) {
        const size_t e = (r * (size_t)H + (size_t)h) * (size_t)K + (size_t)k;
        j->out[e] = ref_activate(j->a, h, k, j->g[e]);
      }
    }
  }
}

int kda_ref_gate(const kda_gate_args *a, const double *g, double *out) {
  if (check_common(a, g, out) != 0) return -1;
  const size_t rows = (size_t)a->batch * (size_t)a->seq_len;
  gate_job j = {a, g, out};
  tu_parallel_for(rows, 1 + 65536 / ((size_t)a->num_heads * (size_t)a->head_dim), gate_rows, &j);
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
