/* kda_db_lookup (kda-tune lookup) answers for a call what the call itself
 * does, on the stand-in driver (tests/fake_cuda): for dense, varlen (a
 * table, host rows, a chunk plan), gate-only and cumsum-only calls, views at
 * an offset and several token counts, the row stored under the key the
 * lookup names is the row the call reads (the context counts a database
 * hit), and the cubin the lookup says is stored is the one a fresh context
 * loads without NVRTC. Then what it refuses and what it ignores. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "kda/kda.h"
#include "kda/kda_db.h"
#include "store.h"
#include "tuner_rows.h"

typedef struct fixture {
  char dir[64], db[96];
  char gpu[128];
} fixture;

static kda_context *context_make(const fixture *f) {
  kda_options o = kda_options_default();
  o.tune_mode = KDA_TUNE_CACHED; /* a row is read, nothing is tuned */
  o.db_path = f->db;
  o.log_level = KDA_LOG_ERROR;
  kda_context *ctx = NULL;
  if (kda_context_create(&o, &ctx) != KDA_OK) fail_msg("%s", kda_last_error());
  return ctx;
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (f == NULL) return -1;
  snprintf(f->dir, sizeof f->dir, "/tmp/kda_db_lookup_XXXXXX");
  if (mkdtemp(f->dir) == NULL) return -1;
  snprintf(f->db, sizeof f->db, "%s/tune.db", f->dir);
  kda_context *ctx = context_make(f);
  kda_device_info info;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  if (kda_context_get_device_info(ctx, &info) != KDA_OK ||
      kda_db_gpu_key(&info, f->gpu, sizeof f->gpu) < 0)
    return -1;
  kda_context_destroy(ctx);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
  if (system(cmd) != 0) return -1;
  free(f);
  return 0;
}

/* One call: its arguments on stand-in memory (host memory the stand-in
 * driver takes as device memory). */
typedef struct call {
  const char *what;
  kda_kernel kernel;
  kda_gate_args a;
  int64_t T;
  int seqs;         /* 0: dense */
  int host_rows;    /* varlen: pass cu_seqlens_host */
  int plan;         /* varlen: pass a kda_chunk_plan */
  size_t g_offset;  /* elements: a view at an offset */
  void *g, *out, *table;
  int32_t *cu;
  float A_log[64], dt_bias[64 * 128];
  kda_chunk_plan *chunk_plan;
} call;

static void call_make(call *c, kda_context *ctx) {
  kda_gate_args *a = &c->a;
  const size_t n = (size_t)c->T * a->num_heads * a->head_dim;
  c->g = aligned_alloc(256, n * 4 + 512);
  c->out = aligned_alloc(256, n * 4 + 512);
  assert_non_null(c->g);
  assert_non_null(c->out);
  memset(c->g, 0x3f, n * 4 + 512);
  a->g = (char *)c->g + c->g_offset * (a->g_dtype == KDA_DTYPE_F32 ? 4 : 2);
  a->out = (char *)c->out + c->g_offset * (a->out_dtype == KDA_DTYPE_F32 ? 4 : 2);
  a->batch = 1;
  a->seq_len = c->T;
  if (a->gate == KDA_GATE_SOFTPLUS || a->gate == KDA_GATE_LOWER_BOUND) a->A_log = c->A_log;
  if (c->seqs == 0) return;
  c->cu = calloc((size_t)c->seqs + 1, sizeof *c->cu);
  assert_non_null(c->cu);
  for (int i = 0; i <= c->seqs; i++) c->cu[i] = (int32_t)(c->T * i / c->seqs);
  a->cu_seqlens = c->cu;
  a->cu_seqlens_dtype = KDA_DTYPE_I32;
  a->num_seqs = c->seqs;
  if (c->kernel == KDA_KERNEL_GATE) return;
  if (c->host_rows) {
    a->cu_seqlens_host = c->cu;
  } else if (c->plan) {
    assert_int_equal(kda_chunk_plan_create(ctx, c->T, c->seqs, a->chunk_size, &c->chunk_plan),
                     KDA_OK);
    assert_int_equal(kda_chunk_plan_build(c->chunk_plan, c->cu, KDA_DTYPE_I32, c->seqs, c->T, NULL),
                     KDA_OK);
    a->chunk_plan = c->chunk_plan;
  } else {
    const int64_t cap = kda_chunk_indices_capacity(c->T, c->seqs, a->chunk_size);
    c->table = calloc((size_t)cap * 2, sizeof(int32_t));
    assert_non_null(c->table);
    int64_t rows = 0;
    assert_int_equal(kda_chunk_indices_build_host(c->cu, KDA_DTYPE_I32, c->seqs, a->chunk_size,
                                                  c->table, cap, &rows),
                     KDA_OK);
    a->chunk_indices = c->table;
    a->num_chunks = rows;
  }
}

static void call_free(call *c) {
  kda_chunk_plan_destroy(c->chunk_plan);
  c->chunk_plan = NULL;
  free(c->g);
  free(c->out);
  free(c->table);
  free(c->cu);
  c->g = c->out = c->table = NULL;
  c->cu = NULL;
}

static kda_status run(kda_context *ctx, const call *c) {
  switch (c->kernel) {
    case KDA_KERNEL_GATE_CHUNK_CUMSUM: return kda_gate_chunk_cumsum(ctx, &c->a, NULL);
    case KDA_KERNEL_CHUNK_LOCAL_CUMSUM: return kda_chunk_local_cumsum(ctx, &c->a, NULL);
    case KDA_KERNEL_GATE: return kda_gate(ctx, &c->a, NULL);
    default: fail_msg("not a gate kernel");
  }
  return KDA_ERROR_INTERNAL;
}

static kda_db_lookup_result lookup(const fixture *f, const call *c) {
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(f->db, KDA_DB_READ_ONLY, &db), KDA_OK);
  kda_db_lookup_result r;
  memset(&r, 0, sizeof r);
  r.struct_size = sizeof r;
  if (kda_db_lookup(db, f->gpu, c->kernel, &c->a, &r) != KDA_OK)
    fail_msg("%s: %s", c->what, kda_last_error());
  kda_db_close(db);
  return r;
}

/* A winner row of config under the lookup's key, written as a tuning run
 * writes it. */
static void put_row(kda_context *ctx, const fixture *f, const kda_db_lookup_result *r,
                    const char *config) {
  kda__tune_keys keys;
  memset(&keys, 0, sizeof keys);
  snprintf(keys.gpu, sizeof keys.gpu, "%s", f->gpu);
  snprintf(keys.kernel, sizeof keys.kernel, "gate_cumsum");
  snprintf(keys.spec, sizeof keys.spec, "%.319s", r->spec);
  keys.bucket = r->bucket;
  snprintf(keys.template_hash, sizeof keys.template_hash, "%s", r->template_hash);
  snprintf(keys.space_hash, sizeof keys.space_hash, "%s", r->space_hash);
  kda__config cfg;
  assert_int_equal(kda__config_parse(config, &cfg), 0);
  tr_put_winner(ctx, &keys, &cfg, 3.5);
}

static void lookup_names_the_row_and_cubin_the_call_uses(const fixture *f, call *c) {
  /* Nothing stored for this call yet: it would run the heuristic, compiled. */
  kda_context *ctx = context_make(f);
  call_make(c, ctx);
  kda_db_lookup_result before = lookup(f, c);
  assert_int_equal(before.found, 0);
  assert_int_equal(before.ignored, 0);
  assert_int_equal(before.cubin_stored, 0);
  assert_string_equal(before.config, before.heuristic);
  assert_int_equal(before.bucket, kda_token_bucket(c->T));
  assert_true(before.tokens_lo <= c->T && (before.tokens_hi < 0 || c->T <= before.tokens_hi));

  /* Without a row the call runs the heuristic the lookup names: it
   * compiles and stores that cubin, which the lookup then finds. */
  if (run(ctx, c) != KDA_OK) fail_msg("%s: %s", c->what, kda_last_error());
  kda_db_lookup_result mid = lookup(f, c);
  assert_int_equal(mid.found, 0);
  if (mid.cubin_stored != 1)
    fail_msg("%s: the call without a row stored a cubin, not of %s (the lookup's heuristic)",
             c->what, mid.config);
  call_free(c);
  kda_context_destroy(ctx);

  /* The row under the lookup's key is the one the call reads. */
  ctx = context_make(f);
  call_make(c, ctx);
  put_row(ctx, f, &before, before.heuristic);
  if (run(ctx, c) != KDA_OK) fail_msg("%s: %s", c->what, kda_last_error());
  const kda_stats s = tr_stats(ctx);
  if (s.db_result_hits != 1)
    fail_msg("%s: the call did not read the row under the lookup's key [%s]", c->what,
             before.spec);
  /* That call compiled the winner and stored its cubin: the lookup says
   * so, and a fresh context loads it without NVRTC. */
  kda_db_lookup_result after = lookup(f, c);
  call_free(c);
  kda_context_destroy(ctx);
  assert_int_equal(after.found, 1);
  assert_string_equal(after.config, before.heuristic);
  assert_string_equal(after.record.spec, before.spec);
  assert_true(after.record.median_us == 3.5);
  assert_int_equal(after.cubin_stored, 1);
  assert_true(after.cubin_nvrtc[0] != '\0');
  ctx = context_make(f);
  call_make(c, ctx);
  assert_int_equal(run(ctx, c), KDA_OK);
  const kda_stats s2 = tr_stats(ctx);
  assert_int_equal(s2.db_result_hits, 1);
  /* (A chunk plan's builder is loaded from the database too.) */
  if (s2.db_cubin_hits < 1 || s2.nvrtc_compiles != 0)
    fail_msg("%s: lookup said the cubin is stored; the call loaded %llu, compiled %llu", c->what,
             (unsigned long long)s2.db_cubin_hits, (unsigned long long)s2.nvrtc_compiles);
  call_free(c);
  kda_context_destroy(ctx);
}

static call base(const char *what, kda_kernel kernel, int H, int K, int chunk, int64_t T) {
  call c;
  memset(&c, 0, sizeof c);
  c.what = what;
  c.kernel = kernel;
  c.T = T;
  c.a = kda_gate_args_default();
  c.a.g_dtype = KDA_DTYPE_BF16;
  c.a.num_heads = H;
  c.a.head_dim = K;
  c.a.chunk_size = chunk;
  c.a.batch = 1;
  c.a.seq_len = T;
  c.a.out_dtype = KDA_DTYPE_F32;
  c.a.gate = kernel == KDA_KERNEL_CHUNK_LOCAL_CUMSUM ? KDA_GATE_NONE : KDA_GATE_SOFTPLUS;
  if (kernel == KDA_KERNEL_CHUNK_LOCAL_CUMSUM) c.a.g_dtype = KDA_DTYPE_F32;
  for (int i = 0; i < 64; i++) c.A_log[i] = 0.5f;
  return c;
}

static void every_kind_of_call_reads_the_row_the_lookup_names(void **state) {
  const fixture *f = *state;
  call cases[10];
  size_t n = 0;
  cases[n++] = base("dense H=4 K=64 T=3000", KDA_KERNEL_GATE_CHUNK_CUMSUM, 4, 64, 64, 3000);
  cases[n] = base("dense H=8 K=128 T=100 dt_bias", KDA_KERNEL_GATE_CHUNK_CUMSUM, 8, 128, 64, 100);
  cases[n].a.dt_bias = cases[n].dt_bias;
  n++;
  cases[n] = base("dense view at +4 elements", KDA_KERNEL_GATE_CHUNK_CUMSUM, 4, 64, 64, 3000);
  cases[n++].g_offset = 4;
  cases[n] = base("dense view at +1 element, lower bound", KDA_KERNEL_GATE_CHUNK_CUMSUM, 2, 64, 32,
                  700);
  cases[n].a.gate = KDA_GATE_LOWER_BOUND;
  cases[n].a.lower_bound = -5.0f;
  cases[n++].g_offset = 1;
  cases[n] = base("varlen table 8 seqs T=9000", KDA_KERNEL_GATE_CHUNK_CUMSUM, 4, 64, 64, 9000);
  cases[n++].seqs = 8;
  cases[n] = base("varlen host rows 3 seqs T=500", KDA_KERNEL_GATE_CHUNK_CUMSUM, 4, 64, 64, 500);
  cases[n].seqs = 3;
  cases[n++].host_rows = 1;
  cases[n] = base("varlen chunk plan 5 seqs T=1500", KDA_KERNEL_GATE_CHUNK_CUMSUM, 4, 64, 64, 1500);
  cases[n].seqs = 5;
  cases[n++].plan = 1;
  cases[n++] = base("gate only T=2000", KDA_KERNEL_GATE, 4, 64, 64, 2000);
  cases[n] = base("chunk_local_cumsum f32 varlen reverse", KDA_KERNEL_CHUNK_LOCAL_CUMSUM, 4, 64, 64,
                  5000);
  cases[n].a.reverse = 1;
  cases[n++].seqs = 4;
  cases[n++] = base("dense H=1 K=128 T=70000", KDA_KERNEL_GATE_CHUNK_CUMSUM, 1, 128, 64, 70000);
  for (size_t i = 0; i < n; i++) {
    print_message("  %s\n", cases[i].what);
    lookup_names_the_row_and_cubin_the_call_uses(f, &cases[i]);
  }
}

/* The key depends on the bucket and on the pointers' alignment, not on the
 * token count within a bucket. */
static void a_row_serves_its_bucket_and_alignment_only(void **state) {
  const fixture *f = *state;
  call c = base("dense H=4 K=64", KDA_KERNEL_GATE_CHUNK_CUMSUM, 4, 64, 64, 3000);
  kda_db_lookup_result r = lookup(f, &c);
  kda_context *ctx = context_make(f);
  put_row(ctx, f, &r, r.heuristic);
  kda_context_destroy(ctx);
  assert_int_equal(r.vec_cap, 8);

  call same = c;
  same.a.seq_len = r.tokens_lo == 0 ? 1 : r.tokens_lo; /* another count of the bucket */
  same.a.batch = 1;
  assert_int_equal(lookup(f, &same).found, 1);
  call other = c;
  other.a.seq_len = r.tokens_hi + 1; /* the next bucket */
  kda_db_lookup_result o = lookup(f, &other);
  assert_int_equal(o.found, 0);
  assert_int_equal(o.bucket, r.bucket + 1);
  call view = c;
  view.a.g = (const void *)(uintptr_t)0x10008; /* bf16 at +4 elements: 8-byte aligned */
  view.a.out = (void *)(uintptr_t)0x20000;
  o = lookup(f, &view);
  assert_int_equal(o.vec_cap, 4);
  assert_int_equal(o.found, 0);
  assert_string_not_equal(o.spec, r.spec);
}

/* A KDA_TUNE=cached context without a row runs the heuristic that
 * `kda-tune prewarm --compile-only` stored (before its fit to the SMs) when
 * the fitted one's cubin is missing: the lookup names it and its cubin,
 * and the call compiles nothing. H=32 K=128 at 3000 tokens is a grid of 6
 * blocks per SM or more, fitted to 8 rows per thread (16 unfitted). */
static void lookup_names_the_offline_heuristic_a_cached_call_runs(void **state) {
  const fixture *f = *state;
  call c = base("dense H=32 K=128 T=3000", KDA_KERNEL_GATE_CHUNK_CUMSUM, 32, 128, 64, 3000);
  kda_db_lookup_result r = lookup(f, &c);
  assert_int_equal(r.found, 0);
  assert_true(r.offline_config[0] != '\0'); /* the fit changed the heuristic */
  assert_string_not_equal(r.offline_config, r.heuristic);
  assert_int_equal(r.offline_cubin_stored, 0);
  assert_int_equal(kda_compile_offline_store(c.kernel, &c.a, 90, f->db, NULL), KDA_OK);
  r = lookup(f, &c);
  assert_int_equal(r.cubin_stored, 0);
  assert_int_equal(r.offline_cubin_stored, 1);
  kda_context *ctx = context_make(f);
  call_make(&c, ctx);
  assert_int_equal(run(ctx, &c), KDA_OK);
  const kda_stats s = tr_stats(ctx);
  assert_int_equal(s.nvrtc_compiles, 0);
  assert_int_equal(s.db_cubin_hits, 1);
  call_free(&c);
  kda_context_destroy(ctx);
}

static void a_row_outside_the_space_is_reported_ignored(void **state) {
  const fixture *f = *state;
  call c = base("dense H=4 K=64", KDA_KERNEL_GATE_CHUNK_CUMSUM, 4, 64, 64, 3000);
  kda_db_lookup_result r = lookup(f, &c);
  kda_context *ctx = context_make(f);
  put_row(ctx, f, &r, "vec=8,tx=1024,seg=64"); /* no space holds it */
  kda_context_destroy(ctx);
  r = lookup(f, &c);
  assert_int_equal(r.found, 0);
  assert_int_equal(r.ignored, 1);
  assert_string_equal(r.record.config, "vec=8,tx=1024,seg=64");
  assert_string_equal(r.config, r.heuristic);
}

static void lookup_refuses_what_no_call_makes(void **state) {
  const fixture *f = *state;
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(f->db, KDA_DB_READ_ONLY, &db), KDA_OK);
  call c = base("dense H=4 K=64", KDA_KERNEL_GATE_CHUNK_CUMSUM, 4, 64, 64, 3000);
  c.a.batch = 1;
  c.a.seq_len = 3000;
  kda_db_lookup_result r;
  memset(&r, 0, sizeof r);
  r.struct_size = sizeof r;
  static const char *const bad_keys[] = {"", "H100", "sm90-pci2330-sms132-l2_52428800x",
                                         "sm90-pci2330-sms0-l2_52428800",
                                         "sm90-pci02330-sms132-l2_52428800"};
  for (size_t i = 0; i < sizeof bad_keys / sizeof bad_keys[0]; i++) {
    assert_int_equal(kda_db_lookup(db, bad_keys[i], c.kernel, &c.a, &r), KDA_ERROR_INVALID_ARGUMENT);
    assert_non_null(strstr(kda_last_error(), "is not a GPU key"));
  }
  assert_int_equal(kda_db_lookup(db, f->gpu, KDA_KERNEL_CHUNK_INDICES, &c.a, &r),
                   KDA_ERROR_INVALID_ARGUMENT);
  call zero = c;
  zero.a.num_heads = 0;
  assert_int_equal(kda_db_lookup(db, f->gpu, c.kernel, &zero.a, &r), KDA_ERROR_BAD_SHAPE);
  call wrapped = c;
  wrapped.a.batch = INT64_C(1) << 62;
  wrapped.a.seq_len = 2;
  assert_int_equal(kda_db_lookup(db, f->gpu, c.kernel, &wrapped.a, &r), KDA_ERROR_BAD_SHAPE);
  r.struct_size = 8;
  assert_int_equal(kda_db_lookup(db, f->gpu, c.kernel, &c.a, &r), KDA_ERROR_BAD_OPTIONS);
  r.struct_size = sizeof r;
  assert_int_equal(kda_db_lookup(NULL, f->gpu, c.kernel, &c.a, &r), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_db_lookup(db, NULL, c.kernel, &c.a, &r), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_db_lookup(db, f->gpu, c.kernel, &c.a, NULL), KDA_ERROR_NULL_POINTER);
  assert_int_equal(kda_db_lookup(db, f->gpu, c.kernel, &c.a, &r), KDA_OK);
  kda_db_close(db);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(every_kind_of_call_reads_the_row_the_lookup_names, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_row_serves_its_bucket_and_alignment_only, setup, teardown),
      cmocka_unit_test_setup_teardown(a_row_outside_the_space_is_reported_ignored, setup, teardown),
      cmocka_unit_test_setup_teardown(lookup_names_the_offline_heuristic_a_cached_call_runs, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(lookup_refuses_what_no_call_makes, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
