/* A chunk plan's layout, built on the host: the same slots, bit for bit, as
 * the device builder (kernel_templates/chunk_indices.cu) writes, for
 * kda_prewarm's timing batches and as the tests' reference. */
#include "plan_pack.h"

#include <string.h>

#include "gate_args.h"
#include "spec.h"

int kda__plan_granules(int32_t chunk) { return chunk / kda__host_granule(chunk); }

size_t kda__plan_bytes(int64_t slots, int32_t chunk) {
  return (size_t)slots * (size_t)kda__plan_granules(chunk) * 2 * sizeof(uint32_t);
}

int kda__plan_runs(const int64_t *count, int ng, int max_greedy, kda__plan_run *runs,
                   int64_t *packed) {
  int64_t c[KDA__PLAN_MAX_NG], taken[KDA__PLAN_MAX_NG] = {0}, slot = 0;
  memcpy(c, count, sizeof c);
  int n = 0;
  for (;;) {
    int big = 0;
    for (int k = ng - 1; k >= 1 && big == 0; --k)
      if (c[k] > 0) big = k;
    if (big == 0) break;
    kda__plan_run *r = &runs[n++];
    memset(r, 0, sizeof *r);
    if (n > max_greedy) {
      /* Never reached with the library's limit of 64: a run ends when some
       * size k has fewer left than the run takes (m[k] <= ng / k); the
       * first time, that leaves fewer than ng / k, and each later time one
       * fewer at least, so size k ends at most ng / k runs, and there are
       * at most the sum of ng / k over k < ng runs: 19 for 8 granules (at
       * most 11 seen). Kept so that the run table is bounded for any limit
       * the tests pass: the rest go one per slot, largest first. */
      r->m[big] = 1;
    } else {
      int fill = 0;
      for (int k = big; k >= 1; --k)
        while (c[k] - r->m[k] > 0 && fill + k <= ng) {
          ++r->m[k];
          fill += k;
        }
    }
    r->reps = INT64_MAX;
    for (int k = 1; k < ng; ++k)
      if (r->m[k] > 0 && c[k] / r->m[k] < r->reps) r->reps = c[k] / r->m[k];
    r->start = slot;
    for (int k = 1; k < ng; ++k) {
      r->taken[k] = taken[k];
      taken[k] += r->reps * r->m[k];
      c[k] -= r->reps * r->m[k];
    }
    slot += r->reps;
  }
  *packed = slot;
  return n;
}

void kda__plan_place(const kda__plan_run *runs, int nruns, int ng, int k, int64_t q,
                     int64_t *slot, int *g0, int *g1) {
  for (int i = 0; i < nruns; ++i) {
    const kda__plan_run *r = &runs[i];
    if (r->m[k] == 0 || q >= r->taken[k] + r->reps * r->m[k]) continue;
    const int64_t at = q - r->taken[k];
    const int j = (int)(at % r->m[k]);
    int base = 0, smallest = k;
    for (int b = ng - 1; b > k; --b) base += r->m[b] * b;
    for (int b = k - 1; b >= 1; --b)
      if (r->m[b] > 0) smallest = b;
    *slot = r->start + at / r->m[k];
    *g0 = base + j * k;
    /* The slot's last chunk also owns its empty granules. */
    *g1 = smallest == k && j == r->m[k] - 1 ? ng : *g0 + k;
    return;
  }
  *slot = -1; /* not reached when q is below the count the runs were made from */
}

static void put(uint32_t *out, int64_t cap, int ng, int64_t slot, int g0, int g1, int64_t row0,
                int64_t len) {
  if (slot < 0 || slot >= cap) return; /* past capacity: dropped */
  for (int q = g0; q < g1; ++q) {
    uint32_t *e = out + 2 * (slot * ng + q);
    e[0] = (uint32_t)row0;
    e[1] = (uint32_t)len | (uint32_t)g0 << 16 | (uint32_t)g1 << 24;
  }
}

/* Sequence i as the device builder sees it (plan_seq in chunk_indices.cu):
 * its tokens [a, b), clamped; its chunks; the last one's rows and granules
 * k (ng: a whole chunk; 0: an empty sequence); its whole chunks. */
typedef struct seq_chunks {
  int64_t a, b, nc, last, whole;
  int k;
} seq_chunks;

static seq_chunks seq_at(const void *cu, kda_dtype dt, int64_t T, int64_t i, int32_t chunk,
                         int G) {
  seq_chunks s;
  int64_t x = kda__seqlen_at(cu, dt, i), y = kda__seqlen_at(cu, dt, i + 1);
  x = x < 0 ? 0 : (x > T ? T : x);
  y = y > T ? T : y;
  s.a = x;
  s.b = y > x ? y : x;
  s.nc = (s.b - s.a + chunk - 1) / chunk;
  s.last = s.b - s.a - (s.nc > 0 ? s.nc - 1 : 0) * chunk;
  s.k = s.nc > 0 ? (int)((s.last + G - 1) / G) : 0;
  s.whole = s.k == chunk / G ? s.nc : (s.nc > 0 ? s.nc - 1 : 0);
  return s;
}

int64_t kda__plan_pack(const void *cu, kda_dtype dt, int64_t num_seqs, int64_t total_tokens,
                       int32_t chunk, int max_greedy, uint32_t *out, int64_t cap) {
  const int G = kda__host_granule(chunk), ng = chunk / G;
  int64_t count[KDA__PLAN_MAX_NG] = {0}, whole = 0;
  for (int64_t i = 0; i < num_seqs; ++i) {
    const seq_chunks s = seq_at(cu, dt, total_tokens, i, chunk, G);
    whole += s.whole;
    if (s.k >= 1 && s.k < ng) ++count[s.k];
  }
  kda__plan_run runs[KDA__PLAN_MAX_RUNS];
  int64_t packed = 0;
  const int nruns = kda__plan_runs(count, ng, max_greedy, runs, &packed);
  memset(out, 0, kda__plan_bytes(cap, chunk));
  int64_t rank[KDA__PLAN_MAX_NG] = {0}, w = 0;
  for (int64_t i = 0; i < num_seqs; ++i) {
    const seq_chunks s = seq_at(cu, dt, total_tokens, i, chunk, G);
    for (int64_t j = 0; j < s.whole; ++j) {
      const int64_t r0 = s.a + j * chunk;
      put(out, cap, ng, packed + w++, 0, ng, r0, s.b - r0 < chunk ? s.b - r0 : chunk);
    }
    if (s.k >= 1 && s.k < ng) {
      int64_t slot;
      int g0, g1;
      kda__plan_place(runs, nruns, ng, s.k, rank[s.k]++, &slot, &g0, &g1);
      put(out, cap, ng, slot, g0, g1, s.a + (s.nc - 1) * chunk, s.last);
    }
  }
  const int64_t used = packed + whole;
  return used < cap ? used : cap;
}
