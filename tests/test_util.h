/* Helpers shared by the tests: a deterministic PRNG, host conversions of the
 * 16-bit float formats, tolerance checks and random inputs rounded to a
 * kernel dtype. Nothing here calls the library. */
#ifndef KDA_TESTS_TEST_UTIL_H
#define KDA_TESTS_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "kda/kda.h"

/* xoshiro256** seeded through splitmix64: the same seed gives the same
 * stream on every platform. */
typedef struct tu_rng {
  uint64_t s[4];
} tu_rng;

void tu_rng_seed(tu_rng *rng, uint64_t seed);
/* Next raw 64-bit output. */
uint64_t tu_next_u64(tu_rng *rng);
/* Uniform in [0, 1) with 53 random bits. */
double tu_uniform(tu_rng *rng);
/* Uniform integer in [lo, hi] (inclusive; hi >= lo). */
int64_t tu_uniform_int(tu_rng *rng, int64_t lo, int64_t hi);
/* Standard normal (Box-Muller). */
double tu_normal(tu_rng *rng);

/* float -> bfloat16 bits, round to nearest even; NaN stays a (quiet) NaN
 * with its sign, infinities stay infinities. */
uint16_t tu_f32_to_bf16(float f);
float tu_bf16_to_f32(uint16_t h);
/* float -> IEEE binary16 bits, round to nearest even, subnormals kept,
 * overflow to infinity, NaN stays a (quiet) NaN. */
uint16_t tu_f32_to_f16(float f);
float tu_f16_to_f32(uint16_t h);

/* Counts the elements with !(|got - ref| <= rel * (1 + |ref|)) (so a NaN in
 * either is bad) and prints the first 5 of them with index, got and ref.
 * max_err (optional): the largest |got - ref| / (1 + |ref|), +inf if a NaN
 * was met. first_bad (optional): index of the first bad element, n if none.
 * Returns the number of bad elements. */
size_t tu_check_close(const float *got, const double *ref, size_t n, double rel,
                      double *max_err, size_t *first_bad);
/* The same for got as bfloat16 bits of an fp32 result within rel * (1 +
 * |ref|) rounded to nearest: each element may be off by that plus half a
 * bf16 ulp (of the larger of |got| and |ref|). A bf16 output rounded toward
 * zero fails (tests/mutation/kernel_mutants.py, bf16_out_truncates).
 * max_err: the largest excess over the half ulp, / (1 + |ref|). */
size_t tu_check_rounded_bf16(const uint16_t *got, const double *ref, size_t n, double rel,
                             double *max_err, size_t *first_bad);

/* Size in bytes of one element of dt (0 for an unknown dtype). */
size_t tu_dtype_size(kda_dtype dt);

/* Fills dst (n elements of dt: F32, F16 or BF16) with normal(0, stddev)
 * values rounded to dt; as_double (optional) receives the exact rounded
 * values. For I32/I64 the values are rounded to integers. The values come
 * in blocks of 65536, each from its own stream seeded from one draw of rng,
 * so the fill runs on tu_threads() threads and gives the same values for
 * any number of them. */
void tu_fill_random_input(tu_rng *rng, kda_dtype dt, void *dst, double *as_double, size_t n,
                          double stddev);

/* Threads the helpers run on: KDA_TEST_THREADS if set (>= 1), else the
 * online CPUs, at most 16. A float64 reference of 100M elements takes
 * seconds on one core; the GPU machines have 16. */
int tu_threads(void);

/* Calls fn(ctx, lo, hi) over contiguous parts of [0, n), on up to
 * tu_threads() threads (the caller's included) of at least grain items
 * each, and returns when every part is done. The items must not depend on
 * one another, so that the result does not depend on the split. */
void tu_parallel_for(size_t n, size_t grain, void (*fn)(void *ctx, size_t lo, size_t hi),
                     void *ctx);

#endif
