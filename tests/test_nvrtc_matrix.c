/* NVRTC (no GPU needed) compiles a covering set of gate_cumsum
 * specializations for sm_80 and sm_90, and every chunk_indices
 * specialization, through the library's internal API. Any NVRTC error or
 * warning fails the test.
 *
 * The matrix is built in two layers:
 *  1. Flag rows: every combination of the flag factors (in dtype, out dtype,
 *     gate, cumsum, dt_bias, A_log, scale, reverse, dense / varlen-i32 /
 *     varlen-i64 / either with host rows) that the library can produce,
 *     reduced greedily to a set in which every pair of factor values that
 *     can occur together does occur together (pairwise coverage).
 *  2. Specializations: the flag rows, cycled, each given a shape (chunk, K,
 *     H) and a block config (vec, tx, seg) picked greedily to cover every
 *     parameter value and knob value (and a few knob interactions), plus one
 *     row per flag row with the built-in heuristic config.
 * Coverage is then asserted on the specializations that pass
 * kda__config_check, i.e. on exactly those compiled, so the test fails if
 * the generator (or the config space it draws from) regresses.
 *
 * NVRTC serialises compilations across the threads of a process, so the
 * programs are compiled by NUM_WORKERS forked worker processes. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "kda/kda.h"
#include "kernel_source.h"
#include "nvrtc_compile.h"
#include "spec.h"

/* ------------------------------------------------------------------------ */
/* Parameter values                                                          */
/* ------------------------------------------------------------------------ */

static const int kArchs[] = {80, 90};
#define NUM_ARCHS 2

static const int kInDtypes[] = {KDA_DTYPE_F32, KDA_DTYPE_F16, KDA_DTYPE_BF16};
static const int kOutDtypes[] = {KDA_DTYPE_F32, KDA_DTYPE_BF16};
static const int kChunks[] = {16, 32, 64, 128, 256};
static const int kHeadDims[] = {16, 32, 64, 100, 128, 256};
static const int kHeads[] = {1, 3, 4, 16, 32};
static const int kVecs[] = {1, 2, 4, 8};
static const int kTxs[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
static const int kSegs[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
static const int kIndexThreads[] = {32, 256, 1024};
#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define NCHUNK COUNT(kChunks)
#define NK COUNT(kHeadDims)
#define NH COUNT(kHeads)
#define NVEC COUNT(kVecs)
#define NTX COUNT(kTxs)
#define NSEG COUNT(kSegs)

/* Names per NVRTC program: large enough to amortise NVRTC's start-up cost,
 * small enough to give two workers several programs each. */
#define NAMES_PER_PROGRAM 48
#ifndef NUM_WORKERS
#define NUM_WORKERS 2
#endif

static int index_of(const int *values, int n, int v) {
  for (int i = 0; i < n; ++i)
    if (values[i] == v) return i;
  return -1;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------------ */
/* Layer 1: flag rows with pairwise coverage                                 */
/* ------------------------------------------------------------------------ */

enum { F_IN, F_OUT, F_GATE, F_CUMSUM, F_BIAS, F_ALOG, F_SCALE, F_REVERSE, F_SEQ, NF };
static const int kFactorValues[NF] = {3, 2, 3, 2, 2, 2, 2, 2, 6};
static const char *const kFactorNames[NF] = {"in_dtype", "out_dtype", "gate",    "cumsum", "bias",
                                             "alog",     "scale",     "reverse", "seqmode"};
#define MAXV 6
/* F_SEQ: 0 dense, 1 varlen with int32 cu_seqlens, 2 varlen with int64; 3
 * and 4 the same with the chunk rows in the launch (varlen mode 2); 5 a
 * chunk plan (varlen mode 3, which reads no cu_seqlens). */

typedef struct flag_row {
  int v[NF];
} flag_row;

/* The flag combinations the library produces (src/gate_args.c): gate NONE
 * is the plain cumsum (no A_log, no dt_bias); softplus needs A_log; the
 * activation-only kernel (cumsum 0) has a gate and no scale, reverse or
 * varlen. */
static int flags_valid(const int *v) {
  if (v[F_GATE] == KDA_GATE_NONE && (!v[F_CUMSUM] || v[F_BIAS] || v[F_ALOG])) return 0;
  if (v[F_GATE] == KDA_GATE_SOFTPLUS && !v[F_ALOG]) return 0;
  if (!v[F_CUMSUM] && (v[F_SCALE] || v[F_REVERSE] || v[F_SEQ] != 0)) return 0;
  return 1;
}

typedef struct pair_table {
  unsigned char hit[NF][NF][MAXV][MAXV]; /* [f1][f2] with f1 < f2 */
} pair_table;

static void pairs_add(pair_table *t, const int *v) {
  for (int a = 0; a < NF; ++a)
    for (int b = a + 1; b < NF; ++b) t->hit[a][b][v[a]][v[b]] = 1;
}

static int pairs_new(const pair_table *covered, const pair_table *required, const int *v) {
  int n = 0;
  for (int a = 0; a < NF; ++a)
    for (int b = a + 1; b < NF; ++b)
      n += required->hit[a][b][v[a]][v[b]] && !covered->hit[a][b][v[a]][v[b]];
  return n;
}

/* Decodes combination number c (mixed radix over the factors). */
static void decode_combo(int c, int *v) {
  for (int f = NF - 1; f >= 0; --f) {
    v[f] = c % kFactorValues[f];
    c /= kFactorValues[f];
  }
}

static int num_combos(void) {
  int n = 1;
  for (int f = 0; f < NF; ++f) n *= kFactorValues[f];
  return n;
}

/* Every pair of values occurring together in some valid combination. */
static void required_pairs(pair_table *req) {
  memset(req, 0, sizeof *req);
  int v[NF];
  for (int c = 0; c < num_combos(); ++c) {
    decode_combo(c, v);
    if (flags_valid(v)) pairs_add(req, v);
  }
}

static int count_pairs(const pair_table *t) {
  int n = 0;
  for (int a = 0; a < NF; ++a)
    for (int b = a + 1; b < NF; ++b)
      for (int x = 0; x < MAXV; ++x)
        for (int y = 0; y < MAXV; ++y) n += t->hit[a][b][x][y];
  return n;
}

/* Greedy: repeatedly take the valid combination covering the most pairs
 * not yet covered (the first such in combination order), until none is
 * left. Returns the number of rows written (at most cap). */
static int generate_flag_rows(flag_row *rows, int cap) {
  pair_table req, cov;
  required_pairs(&req);
  memset(&cov, 0, sizeof cov);
  int n = 0;
  while (n < cap) {
    int best = -1, best_gain = 0, v[NF];
    for (int c = 0; c < num_combos(); ++c) {
      decode_combo(c, v);
      if (!flags_valid(v)) continue;
      const int gain = pairs_new(&cov, &req, v);
      if (gain > best_gain) {
        best_gain = gain;
        best = c;
      }
    }
    if (best < 0) break;
    decode_combo(best, rows[n].v);
    pairs_add(&cov, rows[n].v);
    ++n;
  }
  return n;
}

/* ------------------------------------------------------------------------ */
/* Layer 2: specializations                                                  */
/* ------------------------------------------------------------------------ */

static void spec_from_flags(kda__spec *s, const flag_row *r) {
  memset(s, 0, sizeof *s);
  s->kernel = KDA__KERNEL_GATE_CUMSUM;
  s->in_dtype = kInDtypes[r->v[F_IN]];
  s->out_dtype = kOutDtypes[r->v[F_OUT]];
  s->gate = r->v[F_GATE];
  s->cumsum = r->v[F_CUMSUM];
  s->has_bias = r->v[F_BIAS];
  s->has_alog = r->v[F_ALOG];
  s->has_scale = r->v[F_SCALE];
  s->reverse = r->v[F_REVERSE];
  s->varlen = r->v[F_SEQ] == 0 ? 0 : (r->v[F_SEQ] <= 2 ? 1 : r->v[F_SEQ] <= 4 ? 2 : 3);
  s->idx_dtype = r->v[F_SEQ] % 2 == 0 && r->v[F_SEQ] > 0 && r->v[F_SEQ] < 5 ? KDA_DTYPE_I64
                                                                            : KDA_DTYPE_I32;
}

static void flags_of_spec(const kda__spec *s, flag_row *r) {
  r->v[F_IN] = index_of(kInDtypes, 3, s->in_dtype);
  r->v[F_OUT] = index_of(kOutDtypes, 2, s->out_dtype);
  r->v[F_GATE] = s->gate;
  r->v[F_CUMSUM] = s->cumsum;
  r->v[F_BIAS] = s->has_bias;
  r->v[F_ALOG] = s->has_alog;
  r->v[F_SCALE] = s->has_scale;
  r->v[F_REVERSE] = s->reverse;
  r->v[F_SEQ] = !s->varlen        ? 0
                : s->varlen == 3 ? 5
                                 : (s->idx_dtype == KDA_DTYPE_I64 ? 2 : 1) + (s->varlen == 2 ? 2 : 0);
}

/* Values (rows x channels) a thread holds: what drives compile time. */
static int values_per_thread(const kda__spec *s) { return s->chunk / s->cfg.seg * s->cfg.vec; }

static int threads_class(const kda__spec *s) {
  const int t = s->cfg.tx * s->cfg.seg;
  return t < 32 ? 0 : (t < 1024 ? 1 : 2);
}

/* Knob targets: what layer 2 must cover, besides the flag pairs. */
typedef struct knob_table {
  unsigned char chunk[NCHUNK], k[NK], h[NH], vec[NVEC], tx[NTX], seg[NSEG];
  unsigned char vec_in[NVEC][3], vec_out[NVEC][2];
  unsigned char chunk_seg_rev[NCHUNK][NSEG][2]; /* cumsum specs: chunk x seg x reverse */
  unsigned char gate_only_seg[NSEG];            /* activation-only specs: seg */
  unsigned char flag_chunk[NF][MAXV][NCHUNK];   /* cumsum specs: every flag value x chunk */
  unsigned char vec_gate[NVEC][3];
  unsigned char k_vec[NK][NVEC];
  unsigned char k_chunk[NK][NCHUNK], h_chunk[NH][NCHUNK];
  unsigned char partial_block[2];               /* H*K not a multiple of tx*vec: no / yes */
  unsigned char threads[3];                     /* < 32, 32..512, 1024 threads */
} knob_table;

#define KNOB_BYTES ((int)sizeof(knob_table))

static void knobs_add(knob_table *t, const kda__spec *s) {
  const int ic = index_of(kChunks, NCHUNK, s->chunk), ik = index_of(kHeadDims, NK, s->head_dim);
  const int ih = index_of(kHeads, NH, s->heads), iv = index_of(kVecs, NVEC, s->cfg.vec);
  const int it = index_of(kTxs, NTX, s->cfg.tx), is = index_of(kSegs, NSEG, s->cfg.seg);
  const int ii = index_of(kInDtypes, 3, s->in_dtype), io = index_of(kOutDtypes, 2, s->out_dtype);
  if (ic < 0 || ik < 0 || ih < 0 || iv < 0 || it < 0 || is < 0 || ii < 0 || io < 0) return;
  if (s->gate < 0 || s->gate > 2) return;
  t->chunk[ic] = t->k[ik] = t->h[ih] = t->vec[iv] = t->tx[it] = t->seg[is] = 1;
  t->vec_in[iv][ii] = t->vec_out[iv][io] = 1;
  t->vec_gate[iv][s->gate] = 1;
  t->k_vec[ik][iv] = 1;
  t->k_chunk[ik][ic] = t->h_chunk[ih][ic] = 1;
  if (s->cumsum) {
    flag_row r;
    flags_of_spec(s, &r);
    t->chunk_seg_rev[ic][is][s->reverse != 0] = 1;
    for (int f = 0; f < NF; ++f) t->flag_chunk[f][r.v[f]][ic] = 1;
  } else {
    t->gate_only_seg[is] = 1;
  }
  t->partial_block[(s->heads * s->head_dim) % (s->cfg.tx * s->cfg.vec) != 0] = 1;
  t->threads[threads_class(s)] = 1;
}

static int knobs_new(const knob_table *covered, const knob_table *required,
                     const knob_table *with) {
  const unsigned char *c = (const unsigned char *)covered, *r = (const unsigned char *)required,
                      *w = (const unsigned char *)with;
  int n = 0;
  for (int i = 0; i < KNOB_BYTES; ++i) n += r[i] && w[i] && !c[i];
  return n;
}

static int knobs_missing(const knob_table *covered, const knob_table *required, int print) {
  const unsigned char *c = (const unsigned char *)covered, *r = (const unsigned char *)required;
  int n = 0;
  for (int i = 0; i < KNOB_BYTES; ++i) {
    if (r[i] && !c[i]) {
      if (print && n < 20) printf("  knob target byte %d of knob_table is not covered\n", i);
      ++n;
    }
  }
  return n;
}

/* The legal configs of one shape: every (vec, tx, seg) of the value lists
 * that kda__config_check accepts. */
typedef struct shape_configs {
  int chunk, k, h;
  int n;
  kda__config cfg[NVEC * NTX * NSEG];
} shape_configs;

static int spec_legal(kda__spec *s) { return kda__config_check(s) == KDA_OK; }

static void shape_configs_build(shape_configs *sc, int chunk, int k, int h) {
  kda__spec s;
  memset(&s, 0, sizeof s);
  s.kernel = KDA__KERNEL_GATE_CUMSUM;
  s.chunk = chunk;
  s.head_dim = k;
  s.heads = h;
  s.cumsum = 1;
  s.in_dtype = KDA_DTYPE_F32;
  s.out_dtype = KDA_DTYPE_F32;
  s.idx_dtype = KDA_DTYPE_I32;
  sc->chunk = chunk;
  sc->k = k;
  sc->h = h;
  sc->n = 0;
  for (int v = 0; v < NVEC; ++v)
    for (int t = 0; t < NTX; ++t)
      for (int g = 0; g < NSEG; ++g) {
        s.cfg = (kda__config){kVecs[v], kTxs[t], kSegs[g]};
        if (spec_legal(&s)) sc->cfg[sc->n++] = s.cfg;
      }
}

#define NSHAPES (NCHUNK * NK * NH)
#define MAX_SPECS 512

typedef struct matrix {
  flag_row rows[64];
  int num_rows;
  shape_configs *shapes; /* NSHAPES */
  kda__spec specs[MAX_SPECS];
  int num_specs;   /* generated */
  int num_skipped; /* failed kda__config_check */
  knob_table required;
} matrix;

/* Required knob targets: every parameter and knob value, and each
 * interaction in knob_table that at least one legal config of some shape
 * (and flag row) reaches. The value lists themselves are always required:
 * a config check that made a value unreachable fails the test. */
static void required_knobs(matrix *m, knob_table *req) {
  memset(req, 0, sizeof *req);
  memset(req->chunk, 1, sizeof req->chunk);
  memset(req->k, 1, sizeof req->k);
  memset(req->h, 1, sizeof req->h);
  memset(req->vec, 1, sizeof req->vec);
  memset(req->tx, 1, sizeof req->tx);
  memset(req->seg, 1, sizeof req->seg);
  memset(req->vec_in, 1, sizeof req->vec_in);
  memset(req->vec_out, 1, sizeof req->vec_out);
  memset(req->vec_gate, 1, sizeof req->vec_gate);
  memset(req->k_chunk, 1, sizeof req->k_chunk);
  memset(req->h_chunk, 1, sizeof req->h_chunk);
  /* Every flag value a cumsum specialization can take, with every chunk. */
  int v[NF];
  for (int c = 0; c < num_combos(); ++c) {
    decode_combo(c, v);
    if (!flags_valid(v) || !v[F_CUMSUM]) continue;
    for (int f = 0; f < NF; ++f) memset(req->flag_chunk[f][v[f]], 1, NCHUNK);
  }
  memset(req->partial_block, 1, sizeof req->partial_block);
  memset(req->threads, 1, sizeof req->threads);
  for (int i = 0; i < NSHAPES; ++i) {
    const shape_configs *sc = &m->shapes[i];
    for (int c = 0; c < sc->n; ++c) {
      const int is = index_of(kSegs, NSEG, sc->cfg[c].seg);
      const int ic = index_of(kChunks, NCHUNK, sc->chunk);
      req->k_vec[index_of(kHeadDims, NK, sc->k)][index_of(kVecs, NVEC, sc->cfg[c].vec)] = 1;
      req->chunk_seg_rev[ic][is][0] = req->chunk_seg_rev[ic][is][1] = 1;
      if (sc->chunk == 64) req->gate_only_seg[is] = 1; /* kda_gate tiles rows by 64 */
    }
  }
}

static const shape_configs *shape_at(const matrix *m, int ic, int ik, int ih) {
  return &m->shapes[(ic * NK + ik) * NH + ih];
}

/* Picks shape and config for flag row r covering the most new knob targets;
 * ties go to fewer values per thread (faster to compile), then to the
 * first. Returns the gain (0: nothing new). */
static int pick_spec(const matrix *m, const flag_row *r, const knob_table *covered,
                     kda__spec *out) {
  kda__spec s, best;
  spec_from_flags(&s, r);
  best = s;
  int best_gain = -1, best_cost = 1 << 30;
  for (int ic = 0; ic < NCHUNK; ++ic) {
    if (!s.cumsum && kChunks[ic] != 64) continue;
    for (int ik = 0; ik < NK; ++ik)
      for (int ih = 0; ih < NH; ++ih) {
        const shape_configs *sc = shape_at(m, ic, ik, ih);
        s.chunk = sc->chunk;
        s.head_dim = sc->k;
        s.heads = sc->h;
        for (int c = 0; c < sc->n; ++c) {
          s.cfg = sc->cfg[c];
          /* The shape's configs are legal without flags; varlen modes 2
           * and 3 also keep a segment within a granule. */
          if (!spec_legal(&s)) continue;
          knob_table with;
          memset(&with, 0, sizeof with);
          knobs_add(&with, &s);
          const int gain = knobs_new(covered, &m->required, &with);
          const int cost = values_per_thread(&s);
          if (gain > best_gain || (gain == best_gain && cost < best_cost)) {
            best_gain = gain;
            best_cost = cost;
            best = s;
          }
        }
      }
  }
  *out = best;
  return best_gain;
}

static int spec_equal(const kda__spec *a, const kda__spec *b) { return memcmp(a, b, sizeof *a) == 0; }

static int add_spec(matrix *m, const kda__spec *s) {
  for (int i = 0; i < m->num_specs; ++i)
    if (spec_equal(&m->specs[i], s)) return 0;
  if (m->num_specs >= MAX_SPECS) return 0;
  m->specs[m->num_specs++] = *s;
  return 1;
}

static void generate_matrix(matrix *m) {
  m->num_rows = generate_flag_rows(m->rows, COUNT(m->rows));
  m->shapes = calloc(NSHAPES, sizeof *m->shapes);
  assert_non_null(m->shapes);
  for (int ic = 0; ic < NCHUNK; ++ic)
    for (int ik = 0; ik < NK; ++ik)
      for (int ih = 0; ih < NH; ++ih)
        shape_configs_build(&m->shapes[(ic * NK + ik) * NH + ih], kChunks[ic], kHeadDims[ik],
                            kHeads[ih]);
  required_knobs(m, &m->required);

  /* Greedy knob rows, cycling through the flag rows; every flag row is used
   * at least once, and the loop stops once no flag row adds anything. */
  knob_table covered;
  memset(&covered, 0, sizeof covered);
  int idle = 0;
  for (int slot = 0; m->num_specs < MAX_SPECS; ++slot) {
    const flag_row *r = &m->rows[slot % m->num_rows];
    kda__spec s;
    const int gain = pick_spec(m, r, &covered, &s);
    if (slot >= m->num_rows && gain <= 0) {
      if (++idle >= m->num_rows) break;
      continue;
    }
    idle = 0;
    if (add_spec(m, &s)) knobs_add(&covered, &s);
  }

  /* One row per flag row with the built-in heuristic config, shapes cycled. */
  for (int i = 0; i < m->num_rows; ++i) {
    kda__spec s;
    spec_from_flags(&s, &m->rows[i]);
    s.chunk = s.cumsum ? kChunks[i % NCHUNK] : 64;
    s.head_dim = kHeadDims[(i + 2) % NK];
    s.heads = kHeads[(i * 3 + 1) % NH];
    s.cfg = kda__config_heuristic(&s);
    add_spec(m, &s);
  }
}

/* ------------------------------------------------------------------------ */
/* Compilation                                                               */
/* ------------------------------------------------------------------------ */

typedef struct program_job {
  int arch;
  const char *source_name;
  const char **names;
  size_t num_names;
  /* results */
  kda_status status;
  char *error;   /* kda_last_error() of the worker, on failure */
  char *log;     /* NVRTC log on success (a warning) */
  double compile_ms;
  size_t cubin_size;
  int lowered_ok; /* every lowered name is a mangled name */
} program_job;

/* What a worker reports for one job; lives in memory shared with the
 * worker processes, so it holds no pointers. */
typedef struct job_result {
  int done;
  int status;
  double compile_ms;
  size_t cubin_size;
  int lowered_ok;
  int has_log;
  char error[16384];
  char log[16384];
} job_result;

static void compile_into(const kda__source_set *sources, const program_job *j, job_result *r) {
  kda__compile_request req;
  memset(&req, 0, sizeof req);
  req.sources = sources;
  req.source_name = j->source_name;
  req.arch = j->arch;
  req.names = j->names;
  req.num_names = j->num_names;
  kda__compiled out;
  memset(&out, 0, sizeof out);
  const kda_status st = kda__nvrtc_compile(&req, &out);
  r->status = (int)st;
  r->compile_ms = out.compile_ms;
  if (st != KDA_OK) {
    snprintf(r->error, sizeof r->error, "%s", kda_last_error());
  } else {
    r->cubin_size = out.cubin_size;
    if (out.log) {
      r->has_log = 1;
      snprintf(r->log, sizeof r->log, "%s", out.log);
    }
    r->lowered_ok = out.num_names == j->num_names;
    for (size_t i = 0; i < out.num_names && r->lowered_ok; ++i)
      r->lowered_ok = out.lowered_names[i] && strncmp(out.lowered_names[i], "_Z", 2) == 0;
  }
  kda__compiled_free(&out);
  r->done = 1;
}

static void adopt_result(program_job *j, const job_result *r) {
  j->status = r->done ? (kda_status)r->status : KDA_ERROR_INTERNAL;
  j->compile_ms = r->compile_ms;
  j->cubin_size = r->cubin_size;
  j->lowered_ok = r->lowered_ok;
  j->error = NULL;
  j->log = NULL;
  if (!r->done) {
    j->error = strdup("the worker process compiling this program died (see its output above)");
  } else if (j->status != KDA_OK) {
    j->error = strdup(r->error);
  }
  if (r->has_log) j->log = strdup(r->log);
}

/* One job in this process. */
static void run_job(const kda__source_set *sources, program_job *j) {
  job_result *r = calloc(1, sizeof *r);
  assert_non_null(r);
  compile_into(sources, j, r);
  adopt_result(j, r);
  free(r);
}

/* NVRTC serialises compilations across the threads of one process (two
 * threads measured no faster than one), so the jobs run in NUM_WORKERS
 * forked processes that take jobs from a shared counter and write their
 * results to shared memory. Falls back to this process if fork fails. */
static void run_jobs(const kda__source_set *sources, program_job *jobs, size_t n) {
  const size_t bytes = sizeof(size_t) * 8 + n * sizeof(job_result);
  void *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    for (size_t i = 0; i < n; ++i) run_job(sources, &jobs[i]);
    return;
  }
  memset(mem, 0, bytes);
  size_t *next = (size_t *)mem;
  job_result *results = (job_result *)((char *)mem + sizeof(size_t) * 8);
  fflush(stdout);
  fflush(stderr);
  pid_t pids[NUM_WORKERS];
  int started = 0;
  for (int w = 0; w < NUM_WORKERS; ++w) {
    const pid_t pid = fork();
    if (pid == 0) {
      for (;;) {
        const size_t i = __atomic_fetch_add(next, 1, __ATOMIC_SEQ_CST);
        if (i >= n) break;
        compile_into(sources, &jobs[i], &results[i]);
      }
      fflush(stdout);
      _exit(0);
    }
    if (pid > 0) pids[started++] = pid;
  }
  if (started == 0) { /* no fork: do it here */
    for (;;) {
      const size_t i = __atomic_fetch_add(next, 1, __ATOMIC_SEQ_CST);
      if (i >= n) break;
      compile_into(sources, &jobs[i], &results[i]);
    }
  }
  for (int w = 0; w < started; ++w) {
    int wstatus = 0;
    pid_t got;
    do {
      got = waitpid(pids[w], &wstatus, 0);
    } while (got < 0 && errno == EINTR);
    if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0)
      printf("worker process %d ended abnormally (status 0x%x)\n", (int)pids[w], wstatus);
  }
  for (size_t i = 0; i < n; ++i) adopt_result(&jobs[i], &results[i]);
  munmap(mem, bytes);
}

/* Fails the test (after printing every problem) if a job failed, warned,
 * or lost a lowered name. */
static void check_jobs(const program_job *jobs, size_t n) {
  int bad = 0;
  for (size_t i = 0; i < n; ++i) {
    const program_job *j = &jobs[i];
    if (j->status != KDA_OK) {
      printf("program %zu (%s, sm_%d, %zu names) failed: %s\n%s\n", i, j->source_name, j->arch,
             j->num_names, kda_status_name(j->status), j->error ? j->error : "");
      ++bad;
    } else if (j->log != NULL) {
      printf("program %zu (%s, sm_%d) compiled with a non-empty NVRTC log:\n%s\n", i,
             j->source_name, j->arch, j->log);
      for (size_t k = 0; k < j->num_names && k < 8; ++k) printf("  %s\n", j->names[k]);
      ++bad;
    } else if (!j->lowered_ok || j->cubin_size == 0) {
      printf("program %zu (%s, sm_%d): missing lowered names or empty cubin\n", i, j->source_name,
             j->arch);
      ++bad;
    }
  }
  if (bad) fail_msg("%d of %zu NVRTC programs failed or warned", bad, n);
}

static void free_jobs(program_job *jobs, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    free(jobs[i].error);
    free(jobs[i].log);
  }
  free(jobs);
}

/* ------------------------------------------------------------------------ */
/* Fixture                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct fixture {
  kda__source_set sources;
  matrix *m;
  /* Compiled specs (those passing kda__config_check) and their names. */
  kda__spec *compiled;
  char (*names)[KDA__NAME_MAX];
  int num_compiled;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (f == NULL) return -1;
  if (kda__source_set_load(NULL, &f->sources) != KDA_OK) {
    printf("kda__source_set_load: %s\n", kda_last_error());
    free(f);
    return -1;
  }
  f->m = calloc(1, sizeof *f->m);
  f->compiled = calloc(MAX_SPECS, sizeof *f->compiled);
  f->names = calloc(MAX_SPECS, sizeof *f->names);
  if (!f->m || !f->compiled || !f->names) return -1;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  if (f == NULL) return 0;
  kda__source_set_free(&f->sources);
  if (f->m) free(f->m->shapes);
  free(f->m);
  free(f->compiled);
  free(f->names);
  free(f);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */
/* ------------------------------------------------------------------------ */

/* The greedy flag rows cover every pair of flag values that can occur
 * together, and no invalid combination is generated. */
static void flag_rows_cover_every_valid_pair_of_flag_values(void **state) {
  fixture *f = *state;
  matrix *m = f->m;
  generate_matrix(m);
  pair_table req, cov;
  required_pairs(&req);
  memset(&cov, 0, sizeof cov);
  for (int i = 0; i < m->num_rows; ++i) {
    assert_true(flags_valid(m->rows[i].v));
    pairs_add(&cov, m->rows[i].v);
  }
  int valid = 0, v[NF];
  for (int c = 0; c < num_combos(); ++c) {
    decode_combo(c, v);
    valid += flags_valid(v);
  }
  printf("flag rows: %d (of %d valid combinations), pairs required %d\n", m->num_rows, valid,
         count_pairs(&req));
  assert_true(m->num_rows > 0);
  assert_true(m->num_rows < valid);
  for (int a = 0; a < NF; ++a)
    for (int b = a + 1; b < NF; ++b)
      for (int x = 0; x < kFactorValues[a]; ++x)
        for (int y = 0; y < kFactorValues[b]; ++y)
          if (req.hit[a][b][x][y] && !cov.hit[a][b][x][y])
            fail_msg("flag pair %s=%d, %s=%d not covered", kFactorNames[a], x, kFactorNames[b], y);
  /* Every factor takes every value in some valid combination. */
  for (int a = 0; a < NF - 1; ++a)
    for (int x = 0; x < kFactorValues[a]; ++x) {
      int seen = 0;
      for (int y = 0; y < kFactorValues[NF - 1]; ++y) seen |= req.hit[a][NF - 1][x][y];
      if (!seen) fail_msg("%s=%d never valid", kFactorNames[a], x);
    }
}

/* The specializations that pass kda__config_check (the ones compiled) cover
 * every value of every parameter and knob, the knob interactions, and every
 * flag pair. */
static void compiled_specs_cover_every_parameter_and_knob_value(void **state) {
  fixture *f = *state;
  matrix *m = f->m;
  if (m->num_rows == 0) generate_matrix(m);
  f->num_compiled = 0;
  m->num_skipped = 0;
  for (int i = 0; i < m->num_specs; ++i) {
    kda__spec *s = &m->specs[i];
    if (kda__config_check(s) != KDA_OK) {
      ++m->num_skipped;
      continue;
    }
    const int len = kda__spec_name(s, f->names[f->num_compiled], KDA__NAME_MAX);
    assert_true(len > 0);
    assert_true(strncmp(f->names[f->num_compiled], "kda::gate_cumsum<", 17) == 0);
    assert_string_equal(kda__spec_source_name(s), "gate_cumsum.cu");
    f->compiled[f->num_compiled++] = *s;
  }
  /* Names are unique (so are the specs). */
  for (int i = 0; i < f->num_compiled; ++i)
    for (int j = i + 1; j < f->num_compiled; ++j)
      if (strcmp(f->names[i], f->names[j]) == 0) fail_msg("duplicate name %s", f->names[i]);

  pair_table req, cov;
  required_pairs(&req);
  memset(&cov, 0, sizeof cov);
  knob_table kcov;
  memset(&kcov, 0, sizeof kcov);
  for (int i = 0; i < f->num_compiled; ++i) {
    const kda__spec *s = &f->compiled[i];
    flag_row r;
    flags_of_spec(s, &r);
    assert_true(flags_valid(r.v));
    pairs_add(&cov, r.v);
    knobs_add(&kcov, s);
  }
  for (int a = 0; a < NF; ++a)
    for (int b = a + 1; b < NF; ++b)
      for (int x = 0; x < kFactorValues[a]; ++x)
        for (int y = 0; y < kFactorValues[b]; ++y)
          if (req.hit[a][b][x][y] && !cov.hit[a][b][x][y])
            fail_msg("compiled specs miss flag pair %s=%d, %s=%d", kFactorNames[a], x,
                     kFactorNames[b], y);

  /* Spelled out for readable failures; knobs_missing() then checks all. */
  for (int i = 0; i < NCHUNK; ++i)
    if (!kcov.chunk[i]) fail_msg("chunk %d not compiled", kChunks[i]);
  for (int i = 0; i < NK; ++i)
    if (!kcov.k[i]) fail_msg("K=%d not compiled", kHeadDims[i]);
  for (int i = 0; i < NH; ++i)
    if (!kcov.h[i]) fail_msg("H=%d not compiled", kHeads[i]);
  for (int i = 0; i < NVEC; ++i)
    if (!kcov.vec[i]) fail_msg("vec=%d not compiled", kVecs[i]);
  for (int i = 0; i < NTX; ++i)
    if (!kcov.tx[i]) fail_msg("tx=%d not compiled", kTxs[i]);
  for (int i = 0; i < NSEG; ++i)
    if (!kcov.seg[i]) fail_msg("seg=%d not compiled", kSegs[i]);
  int chunk_seg_required = 0;
  for (int c = 0; c < NCHUNK; ++c)
    for (int g = 0; g < NSEG; ++g)
      for (int r = 0; r < 2; ++r) {
        chunk_seg_required += m->required.chunk_seg_rev[c][g][r];
        if (m->required.chunk_seg_rev[c][g][r] && !kcov.chunk_seg_rev[c][g][r])
          fail_msg("chunk=%d seg=%d reverse=%d (legal) not compiled", kChunks[c], kSegs[g], r);
      }
  /* A floor independent of the config check: seg = chunk (one row per
   * thread) for every chunk, both directions. */
  for (int c = 0; c < NCHUNK; ++c)
    for (int r = 0; r < 2; ++r)
      assert_true(kcov.chunk_seg_rev[c][index_of(kSegs, NSEG, kChunks[c])][r]);
  assert_int_equal(knobs_missing(&kcov, &m->required, 1), 0);

  int counts[4] = {0, 0, 0, 0}; /* cumsum+gate, cumsum only, gate only, varlen */
  for (int i = 0; i < f->num_compiled; ++i) {
    const kda__spec *s = &f->compiled[i];
    counts[s->cumsum ? (s->gate ? 0 : 1) : 2]++;
    counts[3] += s->varlen != 0;
  }
  printf("specializations: %d generated, %d skipped by kda__config_check, %d to compile "
         "(%d fused, %d cumsum-only, %d gate-only, %d varlen); %d flag pairs, %d chunk x seg x "
         "reverse targets\n",
         m->num_specs, m->num_skipped, f->num_compiled, counts[0], counts[1], counts[2],
         counts[3], count_pairs(&req), chunk_seg_required);
}

/* Every compiled specialization, in programs of up to NAMES_PER_PROGRAM
 * names, for sm_80 and sm_90, in NUM_WORKERS processes. No error, no
 * warning, every lowered name present. */
static void gate_cumsum_matrix_compiles_without_warnings_for_sm80_and_sm90(void **state) {
  fixture *f = *state;
  if (f->num_compiled == 0) compiled_specs_cover_every_parameter_and_knob_value(state);
  const int n = f->num_compiled;
  const int per_arch = (n + NAMES_PER_PROGRAM - 1) / NAMES_PER_PROGRAM;
  const size_t num_jobs = (size_t)per_arch * NUM_ARCHS;
  program_job *jobs = calloc(num_jobs, sizeof *jobs);
  const char **names = calloc((size_t)n, sizeof *names);
  assert_non_null(jobs);
  assert_non_null(names);
  for (int i = 0; i < n; ++i) names[i] = f->names[i];
  /* Spread the names evenly over the programs (interleaved, so each program
   * gets a similar mix of costly and cheap specializations), and alternate
   * the architectures so both workers stay busy. */
  const char **sorted = calloc((size_t)n, sizeof *sorted);
  assert_non_null(sorted);
  size_t k = 0;
  for (int p = 0; p < per_arch; ++p)
    for (int i = p; i < n; i += per_arch) sorted[k++] = names[i];
  size_t start = 0;
  for (int p = 0; p < per_arch; ++p) {
    const size_t count = (size_t)(n / per_arch + (p < n % per_arch ? 1 : 0));
    for (int a = 0; a < NUM_ARCHS; ++a) {
      program_job *j = &jobs[(size_t)p * NUM_ARCHS + (size_t)a];
      j->arch = kArchs[a];
      j->source_name = "gate_cumsum.cu";
      j->names = sorted + start;
      j->num_names = count;
    }
    start += count;
  }
  assert_int_equal(start, (size_t)n);

  const double t0 = now_s();
  run_jobs(&f->sources, jobs, num_jobs);
  const double wall = now_s() - t0;
  for (int a = 0; a < NUM_ARCHS; ++a) {
    double ms = 0;
    int programs = 0;
    size_t bytes = 0;
    for (size_t i = 0; i < num_jobs; ++i)
      if (jobs[i].arch == kArchs[a]) {
        ms += jobs[i].compile_ms;
        bytes += jobs[i].cubin_size;
        ++programs;
      }
    printf("sm_%d: %d specializations in %d programs, %.1f s NVRTC time, %.1f MiB of cubin\n",
           kArchs[a], n, programs, ms / 1e3, (double)bytes / (1 << 20));
  }
  printf("gate_cumsum matrix: %.1f s wall in %d worker processes\n", wall, NUM_WORKERS);
  check_jobs(jobs, num_jobs);
  free_jobs(jobs, num_jobs);
  free(names);
  free(sorted);
}

/* build_chunk_indices<IDX, BT, THREADS> and build_chunk_plan<IDX, BT,
 * THREADS> for I32/I64, every chunk size and 32/256/1024 threads: one
 * program per architecture. */
static void chunk_indices_kernel_compiles_for_every_index_dtype_chunk_and_thread_count(
    void **state) {
  fixture *f = *state;
  enum { N = 2 * 2 * NCHUNK * 3 };
  static char names[N][KDA__NAME_MAX];
  const char *ptrs[N];
  int n = 0;
  const int idx[2] = {KDA_DTYPE_I32, KDA_DTYPE_I64};
  for (int plan = 0; plan < 2; ++plan)
  for (int d = 0; d < 2; ++d)
    for (int c = 0; c < NCHUNK; ++c)
      for (int t = 0; t < COUNT(kIndexThreads); ++t) {
        kda__spec s;
        memset(&s, 0, sizeof s);
        s.kernel = KDA__KERNEL_CHUNK_INDICES;
        s.varlen = plan ? 3 : 0;
        s.idx_dtype = idx[d];
        s.chunk = kChunks[c];
        s.cfg = (kda__config){1, kIndexThreads[t], 1};
        assert_int_equal(kda__config_check(&s), KDA_OK);
        assert_string_equal(kda__spec_source_name(&s), "chunk_indices.cu");
        assert_true(kda__spec_name(&s, names[n], KDA__NAME_MAX) > 0);
        assert_true(strncmp(names[n], plan ? "kda::build_chunk_plan<" : "kda::build_chunk_indices<",
                            plan ? 22 : 25) == 0);
        ptrs[n] = names[n];
        ++n;
      }
  /* The library's own choice is among the legal ones. */
  kda__spec h;
  memset(&h, 0, sizeof h);
  h.kernel = KDA__KERNEL_CHUNK_INDICES;
  h.idx_dtype = KDA_DTYPE_I32;
  h.chunk = 64;
  h.cfg = kda__config_heuristic(&h);
  assert_int_equal(kda__config_check(&h), KDA_OK);

  program_job jobs[NUM_ARCHS];
  memset(jobs, 0, sizeof jobs);
  for (int a = 0; a < NUM_ARCHS; ++a) {
    jobs[a].arch = kArchs[a];
    jobs[a].source_name = "chunk_indices.cu";
    jobs[a].names = ptrs;
    jobs[a].num_names = (size_t)n;
  }
  const double t0 = now_s();
  run_jobs(&f->sources, jobs, NUM_ARCHS);
  const double wall = now_s() - t0;
  for (int a = 0; a < NUM_ARCHS; ++a)
    printf("sm_%d: %d chunk_indices specializations in 1 program, %.1f s NVRTC time\n", kArchs[a],
           n, jobs[a].compile_ms / 1e3);
  printf("chunk_indices: %.1f s wall\n", wall);
  int bad = 0;
  for (int a = 0; a < NUM_ARCHS; ++a) {
    if (jobs[a].status != KDA_OK || jobs[a].log != NULL || !jobs[a].lowered_ok) {
      printf("sm_%d: %s\n%s%s\n", jobs[a].arch, kda_status_name(jobs[a].status),
             jobs[a].error ? jobs[a].error : "", jobs[a].log ? jobs[a].log : "");
      ++bad;
    }
    free(jobs[a].error);
    free(jobs[a].log);
  }
  if (bad) fail_msg("chunk_indices failed or warned on %d architectures", bad);
}

/* One specialization alone (a cold call's compile): the heuristic config of
 * a typical layer (bf16 in, fp32 out, H=16, K=128, chunk 64, softplus with
 * bias), timed per architecture. */
static void single_specialization_compiles_alone_for_sm80_and_sm90(void **state) {
  fixture *f = *state;
  kda__spec s;
  memset(&s, 0, sizeof s);
  s.kernel = KDA__KERNEL_GATE_CUMSUM;
  s.in_dtype = KDA_DTYPE_BF16;
  s.out_dtype = KDA_DTYPE_F32;
  s.heads = 16;
  s.head_dim = 128;
  s.chunk = 64;
  s.cumsum = 1;
  s.gate = KDA_GATE_SOFTPLUS;
  s.has_bias = 1;
  s.has_alog = 1;
  s.idx_dtype = KDA_DTYPE_I32;
  s.cfg = kda__config_heuristic(&s);
  assert_int_equal(kda__config_check(&s), KDA_OK);
  char name[KDA__NAME_MAX];
  assert_true(kda__spec_name(&s, name, sizeof name) > 0);
  const char *names[1] = {name};
  for (int a = 0; a < NUM_ARCHS; ++a) {
    program_job j;
    memset(&j, 0, sizeof j);
    j.arch = kArchs[a];
    j.source_name = "gate_cumsum.cu";
    j.names = names;
    j.num_names = 1;
    const double t0 = now_s();
    run_job(&f->sources, &j);
    const double wall = now_s() - t0;
    printf("sm_%d: one specialization (%s): %.2f s NVRTC, %.2f s wall\n", kArchs[a], name,
           j.compile_ms / 1e3, wall);
    const int ok = j.status == KDA_OK && j.log == NULL && j.lowered_ok;
    if (!ok) printf("%s\n%s\n", j.error ? j.error : "", j.log ? j.log : "");
    free(j.error);
    free(j.log);
    assert_true(ok);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(flag_rows_cover_every_valid_pair_of_flag_values),
      cmocka_unit_test(compiled_specs_cover_every_parameter_and_knob_value),
      cmocka_unit_test(single_specialization_compiles_alone_for_sm80_and_sm90),
      cmocka_unit_test(chunk_indices_kernel_compiles_for_every_index_dtype_chunk_and_thread_count),
      cmocka_unit_test(gate_cumsum_matrix_compiles_without_warnings_for_sm80_and_sm90),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
