/* The GPU kernel tests' cases (gpu_case.h): each run against the float64
 * CPU reference with its output poisoned first. */
#include "gpu_case.h"

#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "chunk_plan.h"
#include "context_internal.h"
#include "gate_args.h"
#include "gpu_util.h"
#include "nvrtc_compile.h"
#include "reference.h"
#include "test_util.h"

/* Poisoned bytes after out, checked for stray writes. */
#define GUARD_BYTES 64

kda_context *g_ctx;
const kda__driver *g_drv;
int g_cases;
int g_sm_count;

void case_data_release(case_data *d) {
  free(d->g_host);
  free(d->g_d);
  free(d->ref);
  free(d->bias);
  memset(d, 0, sizeof *d);
}

void describe(const gcase *c, char *buf, size_t n) {
  char cfg[48] = "heuristic";
  if (c->cfg) snprintf(cfg, sizeof cfg, "vec=%d,tx=%d,seg=%d", c->cfg->vec, c->cfg->tx, c->cfg->seg);
  snprintf(buf, n,
           "op=%d in=%d out=%d H=%d K=%d chunk=%d gate=%d bias=%d alog=%d scale=%d rev=%d B=%d "
           "T=%lld nseq=%d idx=%d devtable=%d layer=%d host_rows=%d plan=%d stddev=%g seed=%llu "
           "config=%s g_offset=%d out_offset=%d",
           c->op, c->in, c->out, c->H, c->K, c->chunk, c->gate, c->bias, c->alog, c->scale,
           c->reverse, c->B, (long long)c->T, c->lens ? c->nseq : 0, c->idx, c->device_table,
           c->layer, c->host_rows, c->chunk_plan, c->stddev > 0 ? c->stddev : 1.0,
           (unsigned long long)c->seed, cfg, c->g_offset, c->out_offset);
}

/* Runs one case and returns the number of elements outside the budget. */
size_t run_case(const gcase *c) {
  tu_rng rng;
  tu_rng_seed(&rng, c->seed ? c->seed : 0x5eed + (uint64_t)g_cases);
  ++g_cases;
  const int varlen = c->lens != NULL;
  int64_t T = c->T, B = c->B;
  int64_t *cu = NULL;
  if (varlen) {
    B = 1;
    cu = calloc((size_t)c->nseq + 1, sizeof *cu);
    for (int i = 0; i < c->nseq; ++i) cu[i + 1] = cu[i] + c->lens[i];
    T = cu[c->nseq];
  }
  const size_t hk = (size_t)c->H * c->K, n = (size_t)B * (size_t)T * hk;
  const size_t in_sz = tu_dtype_size(c->in), out_sz = tu_dtype_size(c->out);
  case_data own;
  memset(&own, 0, sizeof own);
  case_data *d = c->reuse ? c->reuse : &own;
  const int fresh = !d->ready;
  if (fresh) {
    d->g_host = malloc(n * in_sz);
    d->g_d = malloc(n * sizeof(double));
    d->ref = malloc(n * sizeof(double));
    d->bias = malloc(hk * sizeof(float));
    tu_fill_random_input(&rng, c->in, d->g_host, d->g_d, n, c->stddev > 0 ? c->stddev : 1.0);
    for (int h = 0; h < c->H; ++h) d->A_log[h] = (float)log(1.0 + 15.0 * tu_uniform(&rng));
    for (size_t i = 0; i < hk; ++i) d->bias[i] = (float)tu_normal(&rng);
  }
  void *g_host = d->g_host;
  double *g_d = d->g_d, *ref = d->ref;
  float *A_log = d->A_log, *bias = d->bias;

  kda_gate_args a = kda_gate_args_default();
  a.g_dtype = c->in;
  a.out_dtype = c->out;
  a.batch = B;
  a.seq_len = T;
  a.num_heads = c->H;
  a.head_dim = c->K;
  a.chunk_size = c->chunk;
  a.gate = c->gate;
  a.lower_bound = -5.0f;
  a.has_scale = c->scale;
  a.scale = 1.4426950408889634f;
  a.reverse = c->reverse;

  /* Host copy of args for the reference. */
  kda_gate_args h = a;
  h.A_log = c->alog ? A_log : NULL;
  h.dt_bias = c->bias ? bias : NULL;
  int32_t *cu32 = NULL;
  if (varlen) {
    h.num_seqs = c->nseq;
    h.cu_seqlens_dtype = c->idx;
    if (c->idx == KDA_DTYPE_I32) {
      cu32 = malloc(((size_t)c->nseq + 1) * sizeof *cu32);
      for (int i = 0; i <= c->nseq; ++i) cu32[i] = (int32_t)cu[i];
      h.cu_seqlens = cu32;
    } else {
      h.cu_seqlens = cu;
    }
  }
  if (fresh) {
    int rc = c->op == KDA__OP_GATE                 ? kda_ref_gate(&h, g_d, ref)
             : c->op == KDA__OP_CHUNK_LOCAL_CUMSUM ? kda_ref_chunk_local_cumsum(&h, g_d, ref)
                                                   : kda_ref_gate_chunk_cumsum(&h, g_d, ref);
    assert_int_equal(rc, 0);
    d->ready = 1;
  }

  /* g and out start g_offset and out_offset elements into their
   * allocations, as views into a larger tensor do; the bytes before out and
   * GUARD_BYTES after it stay poisoned, and are checked. */
  const size_t g_off = (size_t)c->g_offset * in_sz, o_off = (size_t)c->out_offset * out_sz;
  const size_t out_total = o_off + n * out_sz + GUARD_BYTES;
  char *d_g_base = gu_alloc(g_off + n * in_sz), *d_out_base = gu_alloc(out_total);
  void *d_g = d_g_base + g_off, *d_out = d_out_base + o_off;
  gu_copy_to(d_g, g_host, n * in_sz);
  void *d_alog = gu_upload(A_log, (size_t)c->H * sizeof(float));
  void *d_bias = gu_upload(bias, hk * sizeof(float));
  void *d_cu = NULL, *d_table = NULL, *d_ws = NULL;
  kda_chunk_plan *cplan = NULL;
  a.g = d_g;
  a.out = d_out;
  a.A_log = c->alog ? d_alog : NULL;
  a.dt_bias = c->bias ? d_bias : NULL;
  if (varlen) {
    a.num_seqs = c->nseq;
    a.cu_seqlens_dtype = c->idx;
    d_cu = gu_upload(h.cu_seqlens, ((size_t)c->nseq + 1) * tu_dtype_size(c->idx));
    a.cu_seqlens = d_cu;
    if (c->host_rows) a.cu_seqlens_host = h.cu_seqlens;
    const int64_t cap = kda_chunk_indices_capacity(T, c->nseq, c->chunk);
    if (c->chunk_plan) {
      /* The plan stands for cu_seqlens: the kernel must not need it. */
      GU_CHECK(kda_chunk_plan_create(g_ctx, T, c->nseq, c->chunk, &cplan));
      GU_CHECK(kda_chunk_plan_build(cplan, d_cu, c->idx, c->nseq, T, NULL));
      a.chunk_plan = cplan;
      a.cu_seqlens = NULL;
    } else if (c->host_rows == 1) {
      /* No table and, through the layer entry, no workspace: the rows
       * travel in the launch. */
    } else if (c->layer) {
      size_t ws = kda_layer_workspace_size(T, c->nseq, c->chunk);
      d_ws = gu_alloc(ws);
      gu_poison(d_ws, ws & ~(size_t)3, 0x7fc00000u);
    } else if (c->device_table) {
      d_table = gu_alloc((size_t)cap * 8 + 4);
      int32_t *count = (int32_t *)d_table + cap * 2;
      GU_CHECK(kda_chunk_indices_build_device(g_ctx, d_cu, c->idx, c->nseq, T, c->chunk,
                                              d_table, cap, count, NULL));
      a.chunk_indices = d_table;
      a.num_chunks = cap;
      a.num_chunks_device = count;
    } else {
      int32_t *table = malloc((size_t)cap * 8);
      int64_t nc = 0;
      GU_CHECK(kda_chunk_indices_build_host(h.cu_seqlens, c->idx, c->nseq, c->chunk, table, cap,
                                            &nc));
      d_table = gu_upload(table, (size_t)(nc > 0 ? nc : 1) * 8);
      a.chunk_indices = d_table;
      a.num_chunks = nc;
      free(table);
    }
  }
  const uint32_t poison = out_sz == 4 ? 0x7fc00000u : 0x7fc07fc0u;
  gu_poison(d_out_base, out_total & ~(size_t)3, poison);
  if (c->host_rows) {
    kda__launch_plan pl;
    assert_int_equal(kda__plan_gate_op(c->op, &a, &pl), KDA_OK);
    assert_int_equal(pl.spec.varlen, c->expect_varlen);
  }

  kda_status st;
  if (c->cfg) {
    kda__launch_plan plan;
    st = kda__plan_gate_op(c->op, &a, &plan);
    assert_int_equal(st, KDA_OK);
    if (c->spec_out) *c->spec_out = plan.spec;
    plan.spec.cfg = *c->cfg;
    plan.grid = kda__spec_grid(&plan.spec, plan.num_chunks);
    CUfunction fn;
    GU_CHECK(kda__context_function(g_ctx, &plan.spec, NULL, &fn));
    long long Tk = plan.seq_len, cps = plan.chunks_per_seq;
    const void *cu_p = NULL, *ci_p = NULL, *nd_p = NULL;
    kda__plan_table_args(&plan, &a, &cu_p, &ci_p, &nd_p);
    void *params[] = {&a.g, &a.out, &a.A_log, &a.dt_bias, &a.scale, &a.lower_bound,
                      &cu_p, &ci_p, &nd_p, &Tk, &cps, (void *)kda__plan_rows_arg(&plan)};
    assert_int_equal(g_drv->cuLaunchKernel(fn, (unsigned)plan.grid, 1, 1,
                                           (unsigned)kda__config_threads(&plan.spec), 1, 1, 0,
                                           NULL, params, NULL),
                     CUDA_SUCCESS);
    st = KDA_OK;
  } else if (c->layer) {
    st = kda_layer_gate_fwd(g_ctx, &a, d_ws, kda_layer_workspace_size(T, c->nseq, c->chunk),
                            NULL);
  } else if (c->op == KDA__OP_GATE) {
    st = kda_gate(g_ctx, &a, NULL);
  } else if (c->op == KDA__OP_CHUNK_LOCAL_CUMSUM) {
    st = kda_chunk_local_cumsum(g_ctx, &a, NULL);
  } else {
    st = kda_gate_chunk_cumsum(g_ctx, &a, NULL);
  }
  if (st != KDA_OK) {
    char d[512];
    describe(c, d, sizeof d);
    fprintf(stderr, "launch failed [%s]: %s\n", d, kda_last_error());
  }
  assert_int_equal(st, KDA_OK);

  unsigned char *whole = malloc(out_total);
  gu_download(whole, d_out_base, out_total);
  const void *got = whole + o_off;
  double max_err = 0;
  size_t first = 0;
  size_t bad = out_sz == 4 ? tu_check_close(got, ref, n, TOL_F32, &max_err, &first)
                           : tu_check_rounded_bf16(got, ref, n, TOL_F32, &max_err, &first);
  /* Bytes outside out: a write there is counted as one bad element each. */
  size_t strays = 0;
  const size_t end = o_off + n * out_sz, poisoned = out_total & ~(size_t)3;
  for (size_t i = 0; i < o_off; ++i) strays += whole[i] != (unsigned char)(poison >> (8 * (i % 4)));
  for (size_t i = end; i < poisoned; ++i)
    strays += whole[i] != (unsigned char)(poison >> (8 * (i % 4)));
  if (strays) {
    char d[512];
    describe(c, d, sizeof d);
    fprintf(stderr, "FAILED [%s]: %zu bytes written outside out\n", d, strays);
    bad += strays;
  }
  if (bad) {
    char d[512];
    describe(c, d, sizeof d);
    fprintf(stderr, "FAILED [%s]: %zu of %zu elements out of budget, max rel err %.3g\n", d, bad,
            n, max_err);
  }
  free(whole);
  gu_free(d_g_base);
  gu_free(d_out_base);
  gu_free(d_alog);
  gu_free(d_bias);
  gu_free(d_cu);
  gu_free(d_table);
  gu_free(d_ws);
  kda_chunk_plan_destroy(cplan);
  case_data_release(&own);
  free(cu);
  free(cu32);
  return bad;
}

/* Compiles specs on every CPU (the module cache builds different
 * specializations at once), so that the cases after find them warm. One
 * after another, at about 0.35 s each on the lent H100, the sweeps' 417
 * would take some 2.5 minutes; ahead on 16 threads they took 10.6 s
 * (2026-11-28). */
typedef struct precompile {
  const kda__spec *specs;
  size_t n, next;
  pthread_mutex_t lock;
  int failed;
} precompile;

static void *precompile_worker(void *p) {
  precompile *w = p;
  int pushed = 0;
  if (kda__context_enter(g_ctx, &pushed) != KDA_OK) return NULL;
  for (;;) {
    pthread_mutex_lock(&w->lock);
    const size_t i = w->next++;
    pthread_mutex_unlock(&w->lock);
    if (i >= w->n) break;
    CUfunction fn;
    /* A failure shows again, with its message, when its case runs. */
    if (kda__context_function(g_ctx, &w->specs[i], NULL, &fn) != KDA_OK) {
      pthread_mutex_lock(&w->lock);
      w->failed++;
      pthread_mutex_unlock(&w->lock);
    }
  }
  kda__context_leave(g_ctx, pushed);
  return NULL;
}

double seconds_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

double g_ahead_s;

void precompile_specs(const kda__spec *specs, size_t n) {
  const double t0 = seconds_now();
  precompile w = {specs, n, 0, PTHREAD_MUTEX_INITIALIZER, 0};
  pthread_t th[16];
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  const int nth = cpus < 1 ? 1 : cpus > 16 ? 16 : (int)cpus;
  int started = 0;
  for (int t = 0; t < nth; ++t)
    if (pthread_create(&th[started], NULL, precompile_worker, &w) == 0) ++started;
  precompile_worker(&w); /* this thread too, so it works with no thread at all */
  for (int t = 0; t < started; ++t) pthread_join(th[t], NULL);
  if (w.failed) fprintf(stderr, "  %d of %zu specializations failed to build ahead\n", w.failed, n);
  g_ahead_s += seconds_now() - t0;
}

/* spec with each of cfgs. */
void precompile_configs(const kda__spec *spec, const kda__config *cfgs, size_t n) {
  kda__spec *specs = malloc((n ? n : 1) * sizeof *specs);
  for (size_t i = 0; i < n; ++i) {
    specs[i] = *spec;
    specs[i].cfg = cfgs[i];
  }
  precompile_specs(specs, n);
  free(specs);
}

/* The specializations run_case(c) will launch, planned from the case's
 * shape alone: stand-in device pointers (aligned as the real ones, far
 * apart), the real host bounds for cu_seqlens_host; and the builder of
 * its table or plan, if it builds one on the device. A wrong guess only
 * costs a compile when the case runs. Returns how many it wrote to out[0,
 * 2): 0 when the case does not plan (it fails again, with its message,
 * when it runs). */
int case_spec(const gcase *c, kda__spec *out) {
  kda_gate_args a = kda_gate_args_default();
  a.g_dtype = c->in;
  a.out_dtype = c->out;
  a.batch = c->B;
  a.seq_len = c->T;
  a.num_heads = c->H;
  a.head_dim = c->K;
  a.chunk_size = c->chunk;
  a.gate = c->gate;
  a.has_scale = c->scale;
  a.reverse = c->reverse;
  a.g = (void *)(uintptr_t)((UINT64_C(1) << 44) + (uint64_t)c->g_offset * tu_dtype_size(c->in));
  a.out = (void *)(uintptr_t)((UINT64_C(1) << 45) + (uint64_t)c->out_offset * tu_dtype_size(c->out));
  a.A_log = c->alog ? a.g : NULL;
  a.dt_bias = c->bias ? a.g : NULL;
  int64_t cu[4097];
  if (c->lens) {
    if (c->nseq > 4096) return 0;
    cu[0] = 0;
    for (int i = 0; i < c->nseq; ++i) cu[i + 1] = cu[i] + c->lens[i];
    a.batch = 1;
    a.seq_len = cu[c->nseq];
    a.num_seqs = c->nseq;
    a.cu_seqlens_dtype = KDA_DTYPE_I64; /* the host copy's; the spec takes c->idx below */
    a.cu_seqlens = a.g;
    if (c->host_rows) a.cu_seqlens_host = cu;
    if (c->chunk_plan) {
      a.chunk_plan = (const kda_chunk_plan *)a.g;
      a.cu_seqlens = NULL;
    } else if (c->host_rows != 1) {
      /* The table's row count as run_case passes it: its capacity for a
       * table built on the device, else the count of chunks. */
      int64_t rows = 0;
      for (int i = 0; i < c->nseq; ++i) rows += (c->lens[i] + c->chunk - 1) / c->chunk;
      a.chunk_indices = a.g;
      a.num_chunks = c->device_table || c->layer
                         ? kda_chunk_indices_capacity(a.seq_len, c->nseq, c->chunk)
                         : rows;
    }
  }
  kda__launch_plan plan;
  const kda__op op = c->layer && c->gate == KDA_GATE_NONE ? KDA__OP_CHUNK_LOCAL_CUMSUM : c->op;
  if (kda__plan_gate_op(op, &a, &plan) != KDA_OK) return 0;
  *out = plan.spec;
  if (c->lens && !c->chunk_plan) out->idx_dtype = c->idx;
  /* As the call does (launch.c, run_plan), and not for a case's own config. */
  out->cfg = c->cfg ? *c->cfg
                    : kda__config_fit_grid(out, out->cfg, plan.num_chunks, g_sm_count);
  if (c->chunk_plan) {
    out[1] = kda__chunk_builder_spec(c->idx, c->chunk, 1);
    return 2;
  }
  if (c->lens && (c->device_table || c->layer) && plan.spec.varlen == 1) {
    out[1] = kda__chunk_builder_spec(c->idx, c->chunk, 0);
    return 2;
  }
  return 1;
}

/* Runs cases[0, n) after compiling their specializations ahead; returns
 * the elements out of budget, summed. */
size_t run_cases(const gcase *cases, size_t n) {
  kda__spec *specs = malloc((2 * n + 1) * sizeof *specs);
  size_t m = 0;
  for (size_t i = 0; i < n; ++i) m += (size_t)case_spec(&cases[i], &specs[m]);
  const double t0 = seconds_now();
  precompile_specs(specs, m);
  const double t1 = seconds_now();
  free(specs);
  kda_stats before = {.struct_size = sizeof before}, after = {.struct_size = sizeof after};
  kda_context_get_stats(g_ctx, &before);
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) bad += run_case(&cases[i]);
  kda_context_get_stats(g_ctx, &after);
  /* ctest runs these tests with KDA_TUNE=off; run directly they tune, and
   * a case whose tuning slot is new compiles the tuner's candidates while
   * it runs. Any other compile while running is a case_spec guess gone
   * wrong. */
  printf("%zu cases: compiled ahead in %.1f s, ran in %.1f s (%llu tuning runs, %.1f s); "
         "%llu compiled while running\n",
         n, t1 - t0, seconds_now() - t1,
         (unsigned long long)(after.tuning_runs - before.tuning_runs),
         (after.tune_ms_total - before.tune_ms_total) / 1000.0,
         (unsigned long long)(after.nvrtc_compiles - before.nvrtc_compiles));
  return bad;
}

gcase base_case(void) {
  gcase c;
  memset(&c, 0, sizeof c);
  c.op = KDA__OP_GATE_CHUNK_CUMSUM;
  c.in = KDA_DTYPE_BF16;
  c.out = KDA_DTYPE_F32;
  c.H = 4;
  c.K = 64;
  c.chunk = 64;
  c.gate = KDA_GATE_SOFTPLUS;
  c.bias = 1;
  c.alog = 1;
  c.B = 2;
  c.T = 200;
  c.idx = KDA_DTYPE_I32;
  return c;
}

const int64_t RAGGED[7] = {1, 17, 63, 64, 65, 1000, 4097};
const int64_t RAGGED_SHORT[7] = {1, 17, 63, 64, 65, 130, 257};

int gpu_case_setup(void **state) {
  (void)state;
  g_ctx = gu_context();
  kda_device_info info = {.struct_size = sizeof info};
  kda_context_get_device_info(g_ctx, &info);
  g_sm_count = info.sm_count;
  printf("device: %s (sm_%d%d, %d SMs, L2 %d bytes, PCI id 0x%04x, driver %d, NVRTC %d.%d)\n",
         info.name, info.cc_major, info.cc_minor, info.sm_count, info.l2_bytes,
         info.pci_device_id, info.driver_version, info.nvrtc_major, info.nvrtc_minor);
  return 0;
}

int gpu_case_teardown(void **state) {
  (void)state;
  kda_stats s = {.struct_size = sizeof s};
  kda_context_get_stats(g_ctx, &s);
  printf("cases: %d, NVRTC compiles: %llu (%.1f ms total, %.1f ms each), launches: %llu\n",
         g_cases, (unsigned long long)s.nvrtc_compiles, s.compile_ms_total,
         s.nvrtc_compiles ? s.compile_ms_total / (double)s.nvrtc_compiles : 0.0,
         (unsigned long long)s.launches);
  kda_context_destroy(g_ctx);
  return 0;
}
