/* Cases drawn at random from a seed, against the float64 CPU reference on a
 * real GPU: every kernel, input and output dtype, head count 1-64, head
 * dimension 1-256, chunk 16-256, every option, dense batches and ragged
 * varlen ones (empty sequences among them) through every path (host table,
 * device table, layer entry, rows in the launch, chunk plan), and for some
 * a block shape of the tuner's space instead of the heuristic's, or input
 * and output views that start off the allocation's alignment. Every output
 * element is checked, and so are the poisoned bytes around the output.
 *
 * The fixed sweeps of test_gpu_kernels cover what was thought of; these
 * cover what was not. Each run draws new cases unless KDA_TEST_SEED fixes
 * the seed; the seed is printed first, and a failure prints its case, so
 * KDA_TEST_SEED=<seed> replays the same cases. KDA_TEST_RANDOM_CASES sets
 * how many (default 256). Skips (exit 77) without a GPU. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "gpu_case.h"
#include "gpu_util.h"
#include "test_util.h"

#define MAX_SEQS 400
/* Elements of one case, at most: its float64 reference is built on the CPU. */
#define MAX_ELEMENTS 6000000

typedef struct drawn {
  gcase c;
  int64_t lens[MAX_SEQS];
  kda__config cfg;
} drawn;

/* The varlen paths run_case knows. */
enum path { HOST_TABLE, DEVICE_TABLE, LAYER, LAYER_HOST_ROWS, HOST_ROWS, HOST_ROWS_AND_TABLE,
            CHUNK_PLAN, NPATHS };
static const char *const PATH_NAMES[NPATHS] = {
    "host table", "device table", "layer", "layer, rows in launch", "rows in launch",
    "rows in launch + table", "chunk plan"};

static int pick(tu_rng *rng, const int *values, int n) {
  return values[tu_uniform_int(rng, 0, n - 1)];
}

static uint64_t mix(uint64_t x) { /* splitmix64's finalizer */
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static int64_t chunks_of(const drawn *d) {
  int64_t n = 0;
  for (int s = 0; s < d->c.nseq; ++s) n += (d->lens[s] + d->c.chunk - 1) / d->c.chunk;
  return n;
}

/* Sequence lengths: empty, shorter than a chunk, whole chunks, or anything
 * up to twice the mean; then halved until the batch fits MAX_ELEMENTS. */
static void draw_lengths(tu_rng *rng, drawn *d, int64_t tokens) {
  gcase *c = &d->c;
  const double u = tu_uniform(rng);
  c->nseq = (int)(u < 0.3 ? tu_uniform_int(rng, 1, 8)
                  : u < 0.7 ? tu_uniform_int(rng, 9, 64)
                            : tu_uniform_int(rng, 65, MAX_SEQS));
  const int64_t mean = tokens / c->nseq > 1 ? tokens / c->nseq : 1;
  int64_t total = 0;
  for (int s = 0; s < c->nseq; ++s) {
    const double v = tu_uniform(rng);
    int64_t len = v < 0.1    ? 0
                  : v < 0.35 ? tu_uniform_int(rng, 1, c->chunk - 1)
                  : v < 0.5  ? c->chunk * tu_uniform_int(rng, 1, 4)
                             : tu_uniform_int(rng, 1, 2 * mean);
    d->lens[s] = len;
    total += len;
  }
  if (total == 0) d->lens[0] = total = tu_uniform_int(rng, 1, 3 * c->chunk);
  const int64_t hk = (int64_t)c->H * c->K;
  while (total * hk > MAX_ELEMENTS) {
    total = 0;
    for (int s = 0; s < c->nseq; ++s) total += d->lens[s] /= 2;
    if (total == 0) d->lens[0] = total = 1;
  }
  c->lens = d->lens;
}

static void draw_varlen_path(tu_rng *rng, drawn *d, int *path_out) {
  gcase *c = &d->c;
  int path = (int)tu_uniform_int(rng, 0, NPATHS - 1);
  const int64_t chunks = chunks_of(d);
  /* Rows travel in the launch up to KDA_MAX_HOST_ROWS chunks; past it the
   * call needs a table, which these paths then build on the device. */
  const int fits = chunks <= KDA_MAX_HOST_ROWS;
  if (path == LAYER_HOST_ROWS && !fits) path = LAYER;
  if (path == HOST_ROWS && !fits) path = HOST_ROWS_AND_TABLE;
  c->device_table = path == DEVICE_TABLE || (path == HOST_ROWS_AND_TABLE && tu_uniform(rng) < 0.5);
  c->layer = path == LAYER || path == LAYER_HOST_ROWS;
  c->host_rows = path == HOST_ROWS || path == LAYER_HOST_ROWS ? 1
                 : path == HOST_ROWS_AND_TABLE                ? 2
                                                              : 0;
  c->expect_varlen = fits ? 2 : 1;
  c->chunk_plan = path == CHUNK_PLAN;
  *path_out = path;
}

/* One case; path_out gets its varlen path, or -1 when dense. */
static void draw_case(tu_rng *rng, drawn *d, uint64_t seed, int *path_out) {
  static const int chunks[] = {16, 32, 64, 128, 256};
  static const int common_h[] = {1, 2, 4, 8, 16, 32, 64};
  static const int common_k[] = {16, 32, 64, 128, 256};
  static const int odd_k[] = {1, 2, 3, 7, 12, 100, 129, 200, 255};
  gcase *c = &d->c;
  *c = base_case();
  c->seed = seed;
  const double op = tu_uniform(rng);
  c->op = op < 0.7 ? KDA__OP_GATE_CHUNK_CUMSUM : op < 0.85 ? KDA__OP_CHUNK_LOCAL_CUMSUM : KDA__OP_GATE;
  const double in = tu_uniform(rng);
  c->in = in < 0.6 ? KDA_DTYPE_BF16 : in < 0.8 ? KDA_DTYPE_F16 : KDA_DTYPE_F32;
  c->out = tu_uniform(rng) < 0.8 ? KDA_DTYPE_F32 : KDA_DTYPE_BF16;
  c->H = tu_uniform(rng) < 0.5 ? pick(rng, common_h, 7) : (int)tu_uniform_int(rng, 1, 48);
  const double k = tu_uniform(rng);
  c->K = k < 0.5 ? pick(rng, common_k, 5) : k < 0.8 ? (int)tu_uniform_int(rng, 1, 256)
                                                    : pick(rng, odd_k, 9);
  c->chunk = pick(rng, chunks, 5);
  if (c->op == KDA__OP_CHUNK_LOCAL_CUMSUM) {
    c->gate = KDA_GATE_NONE;
    c->bias = c->alog = 0;
  } else {
    c->gate = tu_uniform(rng) < 0.5 ? KDA_GATE_SOFTPLUS : KDA_GATE_LOWER_BOUND;
    c->alog = c->gate == KDA_GATE_SOFTPLUS || tu_uniform(rng) < 0.7;
    c->bias = tu_uniform(rng) < 0.7;
  }
  c->scale = c->op != KDA__OP_GATE && tu_uniform(rng) < 0.4;
  c->reverse = c->op != KDA__OP_GATE && tu_uniform(rng) < 0.3;
  c->stddev = tu_uniform(rng) < 0.1 ? 8.0 : 1.0;
  c->idx = tu_uniform(rng) < 0.5 ? KDA_DTYPE_I32 : KDA_DTYPE_I64;

  /* Tokens: log-uniform from one to the element budget. */
  const int64_t hk = (int64_t)c->H * c->K;
  const double elems = exp(log(1e3) + tu_uniform(rng) * (log((double)MAX_ELEMENTS) - log(1e3)));
  int64_t tokens = (int64_t)(elems / (double)hk);
  if (tokens < 1) tokens = 1;
  *path_out = -1;
  if (c->op == KDA__OP_GATE || tu_uniform(rng) < 0.45) {
    c->B = (int)tu_uniform_int(rng, 1, 4);
    c->T = tu_uniform(rng) < 0.2 ? tu_uniform_int(rng, 1, 70)
                                 : (tokens / c->B > 1 ? tokens / c->B : 1);
    c->layer = c->op != KDA__OP_GATE && tu_uniform(rng) < 0.15;
  } else {
    draw_lengths(rng, d, tokens);
    draw_varlen_path(rng, d, path_out);
  }

  /* A quarter of the cases run a random block shape of the tuner's space. */
  if (c->op != KDA__OP_GATE && !c->layer && tu_uniform(rng) < 0.25) {
    kda__spec specs[2];
    static kda__config space[2048];
    if (case_spec(c, specs) > 0) {
      const size_t n = kda__config_space(&specs[0], space, 2048);
      if (n > 0 && n <= 2048) {
        d->cfg = space[tu_uniform_int(rng, 0, (int64_t)n - 1)];
        c->cfg = &d->cfg;
      }
    }
  }
  /* A quarter of the others read and write views that start past an
   * aligned allocation (a slice of a larger tensor): narrower vectors. */
  if (c->cfg == NULL && tu_uniform(rng) < 0.25) {
    if (tu_uniform(rng) < 0.6) c->g_offset = (int)tu_uniform_int(rng, 1, 7);
    if (tu_uniform(rng) < 0.6) c->out_offset = (int)tu_uniform_int(rng, 1, 7);
  }
}

static uint64_t env_u64(const char *name, uint64_t fallback) {
  const char *v = getenv(name);
  if (v == NULL || *v == '\0') return fallback;
  char *end = NULL;
  const unsigned long long x = strtoull(v, &end, 0);
  return end && *end == '\0' ? (uint64_t)x : fallback;
}

static void random_cases_match_reference(void **state) {
  (void)state;
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  const uint64_t seed =
      env_u64("KDA_TEST_SEED", mix((uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec));
  const size_t n = (size_t)env_u64("KDA_TEST_RANDOM_CASES", 256);
  printf("seed %llu (KDA_TEST_SEED=%llu replays these %zu cases)\n", (unsigned long long)seed,
         (unsigned long long)seed, n);
  drawn *d = calloc(n ? n : 1, sizeof *d);
  gcase *cases = calloc(n ? n : 1, sizeof *cases);
  assert_non_null(d);
  assert_non_null(cases);
  tu_rng rng;
  tu_rng_seed(&rng, seed);
  int per_path[NPATHS] = {0}, dense = 0, tuned_shape = 0, offset = 0, ops[3] = {0};
  int64_t elements = 0;
  for (size_t i = 0; i < n; ++i) {
    int path;
    draw_case(&rng, &d[i], mix(seed + i) | 1, &path);
    cases[i] = d[i].c;
    if (path < 0) ++dense;
    else ++per_path[path];
    tuned_shape += cases[i].cfg != NULL;
    offset += cases[i].g_offset || cases[i].out_offset;
    ++ops[cases[i].op == KDA__OP_GATE_CHUNK_CUMSUM ? 0 : cases[i].op == KDA__OP_GATE ? 1 : 2];
    int64_t tokens = cases[i].T * cases[i].B;
    if (cases[i].lens) {
      tokens = 0;
      for (int s = 0; s < cases[i].nseq; ++s) tokens += cases[i].lens[s];
    }
    elements += tokens * cases[i].H * cases[i].K;
  }
  printf("%zu cases, %.1fM elements: %d fused, %d gate only, %d cumsum only; %d dense", n,
         (double)elements / 1e6, ops[0], ops[1], ops[2], dense);
  for (int p = 0; p < NPATHS; ++p) printf(", %d %s", per_path[p], PATH_NAMES[p]);
  printf("; %d with a block shape of the tuner's space, %d with views off alignment\n",
         tuned_shape, offset);
  const size_t bad = run_cases(cases, n);
  if (bad) fprintf(stderr, "%zu elements out of budget; replay with KDA_TEST_SEED=%llu\n", bad,
                   (unsigned long long)seed);
  free(cases);
  free(d);
  assert_int_equal(bad, 0);
}

int main(void) {
  g_drv = gu_require_gpu("test_gpu_random");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(random_cases_match_reference),
  };
  return cmocka_run_group_tests(tests, gpu_case_setup, gpu_case_teardown);
}
