#include "test_util.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* PRNG                                                                      */
/* ------------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void tu_rng_seed(tu_rng *rng, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; ++i) rng->s[i] = splitmix64(&x);
}

uint64_t tu_next_u64(tu_rng *rng) {
  uint64_t *s = rng->s;
  const uint64_t result = rotl64(s[1] * 5, 7) * 9;
  const uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl64(s[3], 45);
  return result;
}

double tu_uniform(tu_rng *rng) { return (double)(tu_next_u64(rng) >> 11) * 0x1.0p-53; }

int64_t tu_uniform_int(tu_rng *rng, int64_t lo, int64_t hi) {
  if (hi <= lo) return lo;
  const uint64_t range = (uint64_t)hi - (uint64_t)lo + 1u;
  if (range == 0) return (int64_t)tu_next_u64(rng); /* the full 64-bit range */
  /* Rejection sampling: no modulo bias. */
  const uint64_t limit = UINT64_MAX - UINT64_MAX % range;
  uint64_t r;
  do {
    r = tu_next_u64(rng);
  } while (r >= limit);
  return (int64_t)((uint64_t)lo + r % range);
}

double tu_normal(tu_rng *rng) {
  const double u1 = 1.0 - tu_uniform(rng); /* (0, 1]: log is finite */
  const double u2 = tu_uniform(rng);
  return sqrt(-2.0 * log(u1)) * cos(2.0 * 3.14159265358979323846 * u2);
}

/* ------------------------------------------------------------------------ */
/* 16-bit float formats                                                      */
/* ------------------------------------------------------------------------ */

static uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static float bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

uint16_t tu_f32_to_bf16(float f) {
  const uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* quiet NaN */
  const uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(rounded >> 16);
}

float tu_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t tu_f32_to_f16(float f) {
  const uint32_t u = f32_bits(f);
  const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  const int exp = (int)((u >> 23) & 0xffu);
  const uint32_t mant = u & 0x7fffffu;
  if (exp == 0xff) {
    if (mant != 0) return (uint16_t)(sign | 0x7e00u | (mant >> 13)); /* quiet NaN */
    return (uint16_t)(sign | 0x7c00u);
  }
  const int e = exp - 127;
  if (e > 15) return (uint16_t)(sign | 0x7c00u);
  if (e >= -14) {
    uint32_t r = ((uint32_t)(e + 15) << 10) | (mant >> 13);
    const uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r; /* may carry into inf: right */
    return (uint16_t)(sign | r);
  }
  if (e >= -25) {
    /* Subnormal half: value in units of 2^-24 is m * 2^(e + 1). */
    const uint32_t m = mant | 0x800000u;
    const int shift = -(e + 1); /* 14 .. 24 */
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return (uint16_t)(sign | r);
  }
  return sign;
}

float tu_f16_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    const float v = ldexpf((float)mant, -24);
    return sign ? -v : v;
  }
  if (exp == 31) return bits_f32(sign | 0x7f800000u | (mant << 13));
  return bits_f32(sign | ((exp - 15u + 127u) << 23) | (mant << 13));
}

/* ------------------------------------------------------------------------ */
/* Tolerance checks                                                          */
/* ------------------------------------------------------------------------ */

/* Half the spacing of bfloat16 values at magnitude x (8 significant bits):
 * the most round-to-nearest can move a value of that magnitude. */
static double bf16_half_ulp(double x) {
  int e;
  if (!(x >= 0x1p-126)) return 0x1p-134; /* subnormal spacing 2^-133 */
  (void)frexp(x, &e);                   /* x in [2^(e-1), 2^e) */
  return ldexp(1.0, e - 1 - 8);
}

/* bf16: got_bf16 is the kernel's fp32 result rounded to nearest; that
 * result is within rel * (1 + |ref|) of ref, and the rounding adds at most
 * half an ulp of the larger of |got| and |ref| (a value rounded up to the
 * next power of two has the wider spacing). */
static size_t check_close_impl(const float *got_f32, const uint16_t *got_bf16, const double *ref,
                               size_t n, double rel, double *max_err, size_t *first_bad) {
  size_t bad = 0, first = n;
  double worst = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double g = got_f32 ? (double)got_f32[i] : (double)tu_bf16_to_f32(got_bf16[i]);
    const double r = ref[i];
    const double diff = fabs(g - r);
    const double rounding = got_f32 ? 0.0 : bf16_half_ulp(fmax(fabs(g), fabs(r)));
    const double norm = (diff - rounding > 0 ? diff - rounding : 0.0) / (1.0 + fabs(r));
    if (isnan(diff)) {
      worst = INFINITY;
    } else if (norm > worst) {
      worst = norm;
    }
    const double allowed = rounding + rel * (1.0 + fabs(r));
    if (!(diff <= allowed)) {
      if (bad < 5) {
        printf("  mismatch at %zu: got %.9g ref %.9g (|diff| %.3g, allowed %.3g)\n", i, g, r, diff,
               allowed);
      }
      if (first == n) first = i;
      ++bad;
    }
  }
  if (bad > 5) printf("  ... %zu mismatches in all of %zu elements\n", bad, n);
  if (max_err) *max_err = worst;
  if (first_bad) *first_bad = first;
  return bad;
}

size_t tu_check_close(const float *got, const double *ref, size_t n, double rel,
                      double *max_err, size_t *first_bad) {
  return check_close_impl(got, NULL, ref, n, rel, max_err, first_bad);
}

size_t tu_check_rounded_bf16(const uint16_t *got, const double *ref, size_t n, double rel,
                             double *max_err, size_t *first_bad) {
  return check_close_impl(NULL, got, ref, n, rel, max_err, first_bad);
}

/* ------------------------------------------------------------------------ */
/* Random inputs                                                             */
/* ------------------------------------------------------------------------ */

size_t tu_dtype_size(kda_dtype dt) {
  switch (dt) {
    case KDA_DTYPE_F32: return 4;
    case KDA_DTYPE_F16: return 2;
    case KDA_DTYPE_BF16: return 2;
    case KDA_DTYPE_I32: return 4;
    case KDA_DTYPE_I64: return 8;
  }
  return 0;
}

/* Stores x rounded to dt at dst[i] and returns the stored value exactly. */
static double put_rounded(kda_dtype dt, void *dst, size_t i, double x) {
  switch (dt) {
    case KDA_DTYPE_F32: {
      const float v = (float)x;
      ((float *)dst)[i] = v;
      return (double)v;
    }
    case KDA_DTYPE_F16: {
      const uint16_t h = tu_f32_to_f16((float)x);
      ((uint16_t *)dst)[i] = h;
      return (double)tu_f16_to_f32(h);
    }
    case KDA_DTYPE_BF16: {
      const uint16_t h = tu_f32_to_bf16((float)x);
      ((uint16_t *)dst)[i] = h;
      return (double)tu_bf16_to_f32(h);
    }
    case KDA_DTYPE_I32: {
      const int32_t v = (int32_t)lround(x);
      ((int32_t *)dst)[i] = v;
      return (double)v;
    }
    case KDA_DTYPE_I64: {
      const int64_t v = (int64_t)llround(x);
      ((int64_t *)dst)[i] = v;
      return (double)v;
    }
  }
  return 0.0;
}

typedef struct fill_job {
  uint64_t base;
  kda_dtype dt;
  void *dst;
  double *as_double;
  size_t n;
  double stddev;
} fill_job;

enum { FILL_BLOCK = 65536 };

static void fill_blocks(void *ctx, size_t b0, size_t b1) {
  const fill_job *j = ctx;
  for (size_t b = b0; b < b1; ++b) {
    tu_rng rng;
    tu_rng_seed(&rng, j->base + (uint64_t)b * 0x9e3779b97f4a7c15ull);
    const size_t end = (b + 1) * FILL_BLOCK < j->n ? (b + 1) * FILL_BLOCK : j->n;
    for (size_t i = b * FILL_BLOCK; i < end; ++i) {
      const double exact = put_rounded(j->dt, j->dst, i, tu_normal(&rng) * j->stddev);
      if (j->as_double) j->as_double[i] = exact;
    }
  }
}

void tu_fill_random_input(tu_rng *rng, kda_dtype dt, void *dst, double *as_double, size_t n,
                          double stddev) {
  fill_job j = {tu_next_u64(rng), dt, dst, as_double, n, stddev};
  tu_parallel_for((n + FILL_BLOCK - 1) / FILL_BLOCK, 4, fill_blocks, &j);
}

/* ------------------------------------------------------------------------ */
/* Threads                                                                   */
/* ------------------------------------------------------------------------ */

int tu_threads(void) {
  const char *env = getenv("KDA_TEST_THREADS");
  long n = env && *env ? strtol(env, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : n > 16 ? 16 : (int)n;
}

typedef struct part {
  void (*fn)(void *ctx, size_t lo, size_t hi);
  void *ctx;
  size_t lo, hi;
} part;

static void *run_part(void *p) {
  const part *w = p;
  w->fn(w->ctx, w->lo, w->hi);
  return NULL;
}

void tu_parallel_for(size_t n, size_t grain, void (*fn)(void *ctx, size_t lo, size_t hi),
                     void *ctx) {
  if (n == 0) return;
  size_t parts = grain ? n / grain : n;
  const size_t most = (size_t)tu_threads();
  parts = parts < 1 ? 1 : parts > most ? most : parts;
  part w[16];
  pthread_t th[16];
  int started[16] = {0};
  for (size_t i = 0; i < parts; ++i) {
    w[i] = (part){fn, ctx, n * i / parts, n * (i + 1) / parts};
    /* Part 0 runs here; a thread that cannot start runs here too. */
    if (i > 0) started[i] = pthread_create(&th[i], NULL, run_part, &w[i]) == 0;
  }
  run_part(&w[0]);
  for (size_t i = 1; i < parts; ++i) {
    if (started[i])
      pthread_join(th[i], NULL);
    else
      run_part(&w[i]);
  }
}
