/* The chunk plan's layout as the host packs it (src/plan_pack.c), the
 * reference the GPU tests hold the device builder to: against a plain
 * first-fit-decreasing packer written here, and for what any plan must
 * hold (every token of every sequence in exactly one chunk, entries that
 * agree across a chunk's granules), on ragged, empty, many-sequence and
 * malformed batches at every chunk size. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "plan_pack.h"
#include "spec.h"
#include "test_util.h"

enum { MAX_SEQS = 4096 };

typedef struct batch {
  int64_t cu[MAX_SEQS + 1];
  int64_t N, T;
  int32_t chunk;
} batch;

static void clamp_span(const batch *b, int64_t i, int64_t *a, int64_t *e) {
  int64_t x = b->cu[i], y = b->cu[i + 1];
  x = x < 0 ? 0 : (x > b->T ? b->T : x);
  y = y > b->T ? b->T : y;
  *a = x;
  *e = y > x ? y : x;
}

/* First-fit decreasing as gate_args.c packs a host's rows, written
 * independently: short chunks (fewer granules than a slot) stably sorted
 * by granules, largest first; each slot takes the largest left and tops
 * up with the largest that fit; whole chunks follow in sequence order. */
static int64_t reference_pack(const batch *b, uint32_t *out, int64_t cap) {
  const int G = kda__host_granule(b->chunk), NG = b->chunk / G;
  typedef struct { int64_t row0, len; int k; } item;
  item *shorts = malloc(sizeof(item) * (size_t)(b->N + 1));
  int64_t ns = 0, slot = 0;
  memset(out, 0, kda__plan_bytes(cap, b->chunk));
  for (int k = NG - 1; k >= 1; --k)
    for (int64_t i = 0; i < b->N; ++i) {
      int64_t a, e;
      clamp_span(b, i, &a, &e);
      if (e == a) continue;
      const int64_t nc = (e - a + b->chunk - 1) / b->chunk, last = e - a - (nc - 1) * b->chunk;
      if ((last + G - 1) / G == k) shorts[ns++] = (item){a + (nc - 1) * b->chunk, last, k};
    }
  /* shorts is sorted by granules, largest first, each size in sequence order. */
  char *taken = calloc((size_t)ns + 1, 1);
  for (int64_t first = 0; first < ns; ++first) {
    if (taken[first]) continue;
    int fill = 0, g[9], n = 0;
    int64_t which[9];
    for (int64_t j = first; j < ns && fill < NG; ++j)
      if (!taken[j] && fill + shorts[j].k <= NG) {
        taken[j] = 1;
        g[n] = fill;
        which[n++] = j;
        fill += shorts[j].k;
      }
    for (int m = 0; m < n; ++m) {
      const item *it = &shorts[which[m]];
      const int g1 = m == n - 1 ? NG : g[m] + it->k;
      for (int q = g[m]; q < g1 && slot < cap; ++q) {
        out[2 * (slot * NG + q)] = (uint32_t)it->row0;
        out[2 * (slot * NG + q) + 1] =
            (uint32_t)it->len | (uint32_t)g[m] << 16 | (uint32_t)g1 << 24;
      }
    }
    ++slot;
  }
  for (int64_t i = 0; i < b->N; ++i) {
    int64_t a, e;
    clamp_span(b, i, &a, &e);
    for (int64_t r0 = a; r0 < e; r0 += b->chunk) {
      const int64_t len = e - r0 < b->chunk ? e - r0 : b->chunk;
      if ((len + G - 1) / G < NG) continue; /* the short one, packed above */
      for (int q = 0; q < NG && slot < cap; ++q) {
        out[2 * (slot * NG + q)] = (uint32_t)r0;
        out[2 * (slot * NG + q) + 1] = (uint32_t)len | (uint32_t)NG << 24;
      }
      ++slot;
    }
  }
  free(shorts);
  free(taken);
  return slot < cap ? slot : cap;
}

/* What any plan must hold: each used slot's entries agree across each
 * chunk's granules and tile the slot; unused slots are zero; every token
 * of every well-formed batch's sequences lies in exactly one chunk. */
static void check_plan(const batch *b, const uint32_t *p, int64_t cap, int64_t used,
                       int well_formed) {
  const int NG = kda__plan_granules(b->chunk);
  unsigned char *cover = calloc((size_t)b->T + 1, 1);
  for (int64_t s = 0; s < cap; ++s) {
    const uint32_t *e = p + 2 * s * NG;
    if (s >= used) {
      for (int q = 0; q < 2 * NG; ++q) assert_int_equal(e[q], 0);
      continue;
    }
    for (int q = 0; q < NG;) {
      const uint32_t row0 = e[2 * q], w = e[2 * q + 1];
      const int len = (int)(w & 0xffff), g0 = (int)(w >> 16 & 255), g1 = (int)(w >> 24);
      assert_int_equal(g0, q);
      assert_true(g1 > g0 && g1 <= NG);
      assert_true(len >= 1 && len <= b->chunk && (int64_t)row0 + len <= b->T);
      const int G = b->chunk / NG;
      assert_true(len <= (g1 - g0) * G); /* the granules hold the rows */
      for (int r = q; r < g1; ++r) {
        assert_int_equal(e[2 * r], row0);
        assert_int_equal(e[2 * r + 1], w);
      }
      for (int64_t t = row0; t < (int64_t)row0 + len; ++t) cover[t]++;
      q = g1;
    }
  }
  if (well_formed)
    for (int64_t t = 0; t < b->T; ++t) assert_int_equal(cover[t], 1);
  free(cover);
}

static void run_batch(const batch *b, int well_formed) {
  const int64_t cap = kda_chunk_indices_capacity(b->T, b->N, b->chunk);
  const size_t bytes = kda__plan_bytes(cap, b->chunk);
  uint32_t *got = malloc(bytes), *want = malloc(bytes);
  memset(got, 0xab, bytes); /* poison: every word must be written */
  const int64_t used = kda__plan_pack(b->cu, KDA_DTYPE_I64, b->N, b->T, b->chunk,
                                      KDA__PLAN_GREEDY_RUNS, got, cap);
  const int64_t want_used = reference_pack(b, want, cap);
  assert_int_equal(used, want_used);
  if (memcmp(got, want, bytes) != 0) {
    for (size_t i = 0; i < bytes / 4; ++i)
      if (got[i] != want[i]) {
        fail_msg("N=%lld T=%lld chunk=%d: word %zu (slot %zu) is %08x, the reference %08x",
                 (long long)b->N, (long long)b->T, b->chunk, i,
                 i / 2 / (size_t)kda__plan_granules(b->chunk), got[i], want[i]);
      }
  }
  check_plan(b, got, cap, used, well_formed);
  /* The same batch as int32 bounds. */
  if (b->T < INT32_MAX) {
    int32_t *cu32 = malloc(sizeof(int32_t) * (size_t)(b->N + 1));
    int ok = 1;
    for (int64_t i = 0; i <= b->N; ++i) {
      ok &= b->cu[i] >= INT32_MIN && b->cu[i] <= INT32_MAX;
      cu32[i] = (int32_t)b->cu[i];
    }
    if (ok) {
      memset(got, 0xab, bytes);
      kda__plan_pack(cu32, KDA_DTYPE_I32, b->N, b->T, b->chunk, KDA__PLAN_GREEDY_RUNS, got, cap);
      assert_memory_equal(got, want, bytes);
    }
    free(cu32);
  }
  free(got);
  free(want);
}

static void ragged(batch *b, tu_rng *rng, int64_t N, int64_t max_len, int empties) {
  b->N = N;
  b->cu[0] = 0;
  for (int64_t i = 0; i < N; ++i) {
    int64_t len = 1 + (int64_t)(tu_uniform(rng) * (double)max_len);
    if (empties && tu_uniform(rng) < 0.15) len = 0;
    b->cu[i + 1] = b->cu[i] + len;
  }
  b->T = b->cu[N];
  if (b->T == 0) b->T = b->cu[N] = 1;
}

static void plans_match_first_fit_decreasing(void **state) {
  (void)state;
  static batch b;
  tu_rng rng;
  tu_rng_seed(&rng, 0x91a9ull);
  const int32_t chunks[] = {16, 32, 64, 128, 256};
  for (int c = 0; c < 5; ++c) {
    b.chunk = chunks[c];
    /* Few and many sequences, short and long, with empty ones: 4000
     * sequences cross the device builder's tiles of 1024. */
    const int64_t counts[] = {1, 2, 7, 8, 31, 128, 1000, 4000};
    const int64_t lens[] = {3, 70, 300, 2000};
    for (int i = 0; i < 8; ++i)
      for (int l = 0; l < 4; ++l) {
        if (counts[i] * lens[l] > 4000000) continue;
        ragged(&b, &rng, counts[i], lens[l] * chunks[c] / 64 + 1, (i + l) % 2);
        run_batch(&b, 1);
      }
    /* Whole chunks only; one chunk's worth short of whole; one token each. */
    b.N = 16;
    for (int64_t i = 0; i <= 16; ++i) b.cu[i] = i * 4 * chunks[c];
    b.T = b.cu[16];
    run_batch(&b, 1);
    for (int64_t i = 0; i <= 16; ++i) b.cu[i] = i * (chunks[c] - 1);
    b.T = b.cu[16];
    run_batch(&b, 1);
    b.N = 300;
    for (int64_t i = 0; i <= 300; ++i) b.cu[i] = i;
    b.T = 300;
    run_batch(&b, 1);
  }
}

/* cu_seqlens as kda_chunk_indices_build_device defines a bad one: clamped
 * to [0, T), a decreasing entry an empty sequence, an overlap computed
 * twice; more chunks than the capacity drop the slots past it. */
static void malformed_batches_are_clamped_and_capped(void **state) {
  (void)state;
  static batch b;
  const int64_t decreasing[] = {-5, 100, 60, 260, 250, 250, 290};
  b.chunk = 64;
  b.N = 6;
  b.T = 320;
  memcpy(b.cu, decreasing, sizeof decreasing);
  run_batch(&b, 0);
  b.cu[6] = INT64_C(1) << 40;
  run_batch(&b, 0);
  const int64_t thrice[] = {0, 300, 0, 300, 0, 300};
  b.N = 5;
  b.T = 300;
  memcpy(b.cu, thrice, sizeof thrice);
  run_batch(&b, 0);
  /* Overlapping short sequences: more short chunks than slots. */
  b.N = 40;
  b.T = 50;
  for (int i = 0; i <= 40; ++i) b.cu[i] = i % 2 ? 50 : 3 * (i % 7);
  run_batch(&b, 0);
}

/* The runs stay few (the device builder keeps 72 in shared memory), and a
 * run limit, which no batch measured reaches, still packs every chunk once. */
static void runs_stay_few_and_the_limit_still_covers(void **state) {
  (void)state;
  tu_rng rng;
  tu_rng_seed(&rng, 0x5eedull);
  static kda__plan_run runs[KDA__PLAN_MAX_RUNS];
  int most = 0;
  for (int t = 0; t < 200000; ++t) {
    int64_t count[KDA__PLAN_MAX_NG] = {0}, packed;
    for (int k = 1; k < 8; ++k)
      count[k] = (int64_t)(tu_uniform(&rng) * (t % 3 == 0 ? 100000.0 : t % 3 == 1 ? 12.0 : 300.0));
    const int n = kda__plan_runs(count, 8, KDA__PLAN_GREEDY_RUNS, runs, &packed);
    most = n > most ? n : most;
    int64_t placed[KDA__PLAN_MAX_NG] = {0};
    for (int r = 0; r < n; ++r)
      for (int k = 1; k < 8; ++k) placed[k] += runs[r].reps * runs[r].m[k];
    for (int k = 1; k < 8; ++k) assert_int_equal(placed[k], count[k]);
  }
  printf("  most runs over 200000 random size counts: %d\n", most);
  assert_true(most <= 16);
  /* Every count of up to 7 per size (2M): within the proven 19 runs
   * (plan_pack.c), so the limit of 64 is never reached. */
  int64_t count[KDA__PLAN_MAX_NG] = {0}, packed;
  for (int64_t code = 0; code < (INT64_C(1) << 21); ++code) {
    for (int k = 1; k < 8; ++k) count[k] = code >> (3 * (k - 1)) & 7;
    const int n = kda__plan_runs(count, 8, KDA__PLAN_GREEDY_RUNS, runs, &packed);
    most = n > most ? n : most;
  }
  printf("  most runs over every count up to 7 per size: %d\n", most);
  assert_true(most <= 19);
  static batch b;
  b.chunk = 64;
  ragged(&b, &rng, 500, 300, 1);
  const int64_t cap = kda_chunk_indices_capacity(b.T, b.N, b.chunk);
  uint32_t *p = malloc(kda__plan_bytes(cap, b.chunk));
  for (int limit = 0; limit <= 2; ++limit) {
    const int64_t used = kda__plan_pack(b.cu, KDA_DTYPE_I64, b.N, b.T, b.chunk, limit, p, cap);
    check_plan(&b, p, cap, used, 1);
  }
  free(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(plans_match_first_fit_decreasing),
      cmocka_unit_test(malformed_batches_are_clamped_and_capped),
      cmocka_unit_test(runs_stay_few_and_the_limit_still_covers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
