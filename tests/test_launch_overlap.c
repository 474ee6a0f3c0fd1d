/* kda_options.launch_overlap on the stand-in driver (tests/fake_cuda):
 * which launches carry the programmatic-serialization attribute, the
 * option and its environment override, a driver that refuses the
 * attribute, and the struct size of callers built before the field. What
 * the attribute does on a GPU is covered by the GPU tests (every kernel
 * check runs with it on) and measured by kda-bench. */
#include <dlfcn.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kda/kda.h"

static long (*fake_launches)(void);
static long (*fake_overlap_launches)(void);
static long (*fake_refused_launches)(void);

typedef struct warnings {
  int refused;
  int bad_env;
} warnings;

static void grab_log(void *user, kda_log_level level, const char *message) {
  warnings *w = user;
  if (level != KDA_LOG_WARN) return;
  if (strstr(message, "refused programmatic dependent launch")) w->refused++;
  if (strstr(message, "KDA_LAUNCH_OVERLAP=")) w->bad_env++;
}

typedef struct call {
  kda_gate_args a;
  void *g, *out;
  float A_log[4];
} call;

static void call_init(call *c) {
  memset(c, 0, sizeof *c);
  const size_t n = (size_t)256 * 4 * 64;
  c->g = aligned_alloc(256, n * 2);
  c->out = aligned_alloc(256, n * 4);
  memset(c->g, 0x3f, n * 2);
  c->a = kda_gate_args_default();
  c->a.g = c->g;
  c->a.g_dtype = KDA_DTYPE_BF16;
  c->a.out = c->out;
  c->a.batch = 1;
  c->a.seq_len = 256;
  c->a.num_heads = 4;
  c->a.head_dim = 64;
  c->a.chunk_size = 64;
  c->a.gate = KDA_GATE_SOFTPLUS;
  c->a.A_log = c->A_log;
}

static kda_options options(warnings *w) {
  kda_options o = kda_options_default();
  o.tune_mode = KDA_TUNE_OFF;
  o.log_fn = grab_log;
  o.log_user = w;
  return o;
}

/* n warm calls on a fresh context; returns how many of the launches (the
 * first call's included) carried the attribute. */
static long overlap_of_calls(const kda_options *o, int n, long *launches) {
  call c;
  call_init(&c);
  kda_context *ctx = NULL;
  assert_int_equal(kda_context_create(o, &ctx), KDA_OK);
  const long l0 = fake_launches(), o0 = fake_overlap_launches();
  for (int i = 0; i < n; ++i) assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, NULL), KDA_OK);
  kda_stats s = {.struct_size = sizeof s};
  assert_int_equal(kda_context_get_stats(ctx, &s), KDA_OK);
  assert_int_equal((long)s.launches, n);
  kda_context_destroy(ctx);
  free(c.g);
  free(c.out);
  *launches = fake_launches() - l0;
  const long overlapped = fake_overlap_launches() - o0;
  /* The stats say whether the context still launches with the attribute:
   * it does exactly when its last call did. */
  assert_int_equal(s.launch_overlap_active, n > 0 && overlapped == n ? 1 : 0);
  return overlapped;
}

static void default_launches_with_the_attribute_on_sm90(void **state) {
  (void)state;
  warnings w = {0, 0};
  kda_options o = options(&w);
  long launches = 0;
  assert_int_equal(overlap_of_calls(&o, 10, &launches), 10);
  assert_int_equal(launches, 10);
  assert_int_equal(w.refused, 0);
}

static void option_off_and_environment_override(void **state) {
  (void)state;
  warnings w = {0, 0};
  kda_options o = options(&w);
  long launches = 0;
  o.launch_overlap = KDA_LAUNCH_OVERLAP_OFF;
  assert_int_equal(overlap_of_calls(&o, 7, &launches), 0);
  assert_int_equal(launches, 7);
  /* The environment wins over the option, both ways. */
  setenv("KDA_LAUNCH_OVERLAP", "auto", 1);
  assert_int_equal(overlap_of_calls(&o, 3, &launches), 3);
  o.launch_overlap = KDA_LAUNCH_OVERLAP_AUTO;
  setenv("KDA_LAUNCH_OVERLAP", "OFF", 1);
  assert_int_equal(overlap_of_calls(&o, 3, &launches), 0);
  /* A word it does not know is ignored with a warning. */
  setenv("KDA_LAUNCH_OVERLAP", "sometimes", 1);
  assert_int_equal(overlap_of_calls(&o, 2, &launches), 2);
  assert_int_equal(w.bad_env, 1);
  unsetenv("KDA_LAUNCH_OVERLAP");
  /* A value outside the enum is a bad option. */
  kda_context *ctx = NULL;
  o.launch_overlap = 2;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_ERROR_BAD_OPTIONS);
  assert_non_null(strstr(kda_last_error(), "launch_overlap"));
  o.launch_overlap = -1;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_ERROR_BAD_OPTIONS);
  assert_null(ctx);
}

/* A driver that refuses the attribute: the call still runs (plainly), the
 * context warns once and stops asking. */
static void refused_attribute_falls_back_to_a_plain_launch_once(void **state) {
  (void)state;
  warnings w = {0, 0};
  kda_options o = options(&w);
  setenv("FAKE_CUDA_REFUSE_LAUNCH_EX", "1", 1);
  const long r0 = fake_refused_launches();
  long launches = 0;
  assert_int_equal(overlap_of_calls(&o, 5, &launches), 0);
  unsetenv("FAKE_CUDA_REFUSE_LAUNCH_EX");
  assert_int_equal(launches, 5);
  assert_int_equal(fake_refused_launches() - r0, 1);
  assert_int_equal(w.refused, 1);
  /* The device chunk-table builder goes the same way. */
  kda_context *ctx = NULL;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  int32_t cu[3] = {0, 100, 130};
  int32_t *table = aligned_alloc(256, 256), *count = table + 32;
  const long o0 = fake_overlap_launches();
  assert_int_equal(kda_chunk_indices_build_device(ctx, cu, KDA_DTYPE_I32, 2, 130, 64, table, 16,
                                                  count, NULL),
                   KDA_OK);
  assert_int_equal(fake_overlap_launches() - o0, 1);
  kda_context_destroy(ctx);
  free(table);
}

/* The first refusal may come from a tuning run's own launches (its
 * reference launch runs before any of the caller's): the context warns
 * once, says so in its stats, and launches plainly from then on. (With the
 * stand-in driver the run then stops at validation, which it cannot do.) */
static void refusal_seen_by_a_tuning_run_is_reported(void **state) {
  (void)state;
  warnings w = {0, 0};
  kda_options o = options(&w);
  o.tune_mode = KDA_TUNE_ON;
  o.db_path = ":memory:";
  setenv("FAKE_CUDA_REFUSE_LAUNCH_EX", "1", 1);
  call c;
  call_init(&c);
  kda_context *ctx = NULL;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  const long o0 = fake_overlap_launches();
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, NULL), KDA_OK);
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, NULL), KDA_OK);
  unsetenv("FAKE_CUDA_REFUSE_LAUNCH_EX");
  kda_stats s = {.struct_size = sizeof s};
  assert_int_equal(kda_context_get_stats(ctx, &s), KDA_OK);
  assert_int_equal(s.launch_overlap_active, 0);
  assert_int_equal(w.refused, 1);
  assert_int_equal(fake_overlap_launches() - o0, 0);
  kda_context_destroy(ctx);
  free(c.g);
  free(c.out);
}

/* A caller built before launch_overlap passes the older size; whatever
 * lies past it (here garbage) is not read and the default applies. */
static void older_struct_size_keeps_the_default(void **state) {
  (void)state;
  warnings w = {0, 0};
  kda_options o = options(&w);
  o.struct_size = (uint32_t)offsetof(kda_options, launch_overlap);
  o.reserved1 = 0x5a5a5a5a;
  o.launch_overlap = 0x5a5a5a5a;
  long launches = 0;
  assert_int_equal(overlap_of_calls(&o, 4, &launches), 4);
}

/* A chunk plan's launches: its builder goes plainly (nothing before it may
 * still read the old plan); the first gate call on the build stream after a
 * build goes plainly (it starts after the build has completed); the later
 * ones overlap (they read the plan before their wait, which is safe only
 * behind that plain one); a call on another stream overlaps (the caller
 * orders streams with events, a full dependency); a rebuild starts over.
 * And the calls a plan must refuse. */
static void chunk_plan_launches_plainly_where_its_reads_need_it(void **state) {
  (void)state;
  warnings w = {0, 0};
  kda_options o = options(&w);
  call c;
  call_init(&c);
  kda_context *ctx = NULL;
  assert_int_equal(kda_context_create(&o, &ctx), KDA_OK);
  kda_chunk_plan *plan = NULL;
  assert_int_equal(kda_chunk_plan_create(ctx, 1024, 8, 64, &plan), KDA_OK);
  int32_t *cu = aligned_alloc(256, 256);
  cu[0] = 0;
  cu[1] = 100;
  cu[2] = 256;
  kda_stream s1 = (kda_stream)(uintptr_t)0x1000, s2 = (kda_stream)(uintptr_t)0x2000;
  c.a.num_seqs = 2;
  c.a.chunk_plan = plan;
  /* Not built yet. */
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, s1), KDA_ERROR_INVALID_ARGUMENT);
  assert_non_null(strstr(kda_last_error(), "not been built"));

  long l0 = fake_launches(), o0 = fake_overlap_launches();
  assert_int_equal(kda_chunk_plan_build(plan, cu, KDA_DTYPE_I32, 2, 256, s1), KDA_OK);
  assert_int_equal(fake_launches() - l0, 1);
  assert_int_equal(fake_overlap_launches() - o0, 0);
  /* First read on the build stream: plain. Then overlapped. */
  const int expect_overlap[4] = {0, 1, 1, 1};
  for (int i = 0; i < 4; ++i) {
    l0 = fake_launches();
    o0 = fake_overlap_launches();
    assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, s1), KDA_OK);
    assert_int_equal(fake_launches() - l0, 1);
    assert_int_equal(fake_overlap_launches() - o0, expect_overlap[i]);
  }
  /* A rebuild, then a call on another stream first: it overlaps, and the
   * build stream's first call is still plain. */
  assert_int_equal(kda_chunk_plan_build(plan, cu, KDA_DTYPE_I32, 2, 256, s1), KDA_OK);
  o0 = fake_overlap_launches();
  kda_gate_args plain_cumsum = c.a;
  plain_cumsum.gate = KDA_GATE_NONE;
  plain_cumsum.A_log = NULL;
  assert_int_equal(kda_chunk_local_cumsum(ctx, &plain_cumsum, s2), KDA_OK);
  assert_int_equal(fake_overlap_launches() - o0, 1);
  assert_int_equal(kda_chunk_local_cumsum(ctx, &plain_cumsum, s1), KDA_OK);
  assert_int_equal(fake_overlap_launches() - o0, 1);
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &c.a, s1), KDA_OK);
  assert_int_equal(fake_overlap_launches() - o0, 2);

  /* A batch other than the plan's last build. */
  kda_gate_args bad = c.a;
  bad.num_seqs = 3;
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &bad, s1), KDA_ERROR_BAD_SHAPE);
  assert_non_null(strstr(kda_last_error(), "chunk_plan's last build"));
  bad = c.a;
  bad.chunk_size = 32;
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &bad, s1), KDA_ERROR_BAD_SHAPE);
  /* The plan replaces the table: both is ambiguous. */
  bad = c.a;
  bad.chunk_indices = cu;
  bad.num_chunks = 1;
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &bad, s1), KDA_ERROR_INVALID_ARGUMENT);
  bad = c.a;
  bad.batch = 2; /* as many elements as the buffers hold: no overlap of g and out */
  bad.seq_len = 128;
  assert_int_equal(kda_gate_chunk_cumsum(ctx, &bad, s1), KDA_ERROR_BAD_SHAPE);
  assert_non_null(strstr(kda_last_error(), "batch must be 1 with a chunk_plan"));
  /* Builds past the plan's maxima, and plans no int32 row can address. */
  assert_int_equal(kda_chunk_plan_build(plan, cu, KDA_DTYPE_I32, 9, 256, s1), KDA_ERROR_BAD_SHAPE);
  assert_int_equal(kda_chunk_plan_build(plan, cu, KDA_DTYPE_I32, 2, 1025, s1), KDA_ERROR_BAD_SHAPE);
  assert_int_equal(kda_chunk_plan_build(plan, cu, KDA_DTYPE_F32, 2, 256, s1),
                   KDA_ERROR_UNSUPPORTED_DTYPE);
  assert_int_equal(kda_chunk_plan_build(plan, NULL, KDA_DTYPE_I32, 2, 256, s1),
                   KDA_ERROR_NULL_POINTER);
  kda_chunk_plan *p2 = (kda_chunk_plan *)(uintptr_t)1;
  assert_int_equal(kda_chunk_plan_create(ctx, INT64_C(1) << 31, 8, 64, &p2), KDA_ERROR_BAD_SHAPE);
  assert_null(p2);
  assert_int_equal(kda_chunk_plan_create(ctx, 1024, 8, 48, &p2), KDA_ERROR_BAD_CHUNK_SIZE);
  assert_int_equal(kda_chunk_plan_create(NULL, 1024, 8, 64, &p2), KDA_ERROR_NULL_POINTER);
  kda_chunk_plan_destroy(NULL);
  kda_chunk_plan_destroy(plan);
  kda_context_destroy(ctx);
  free(cu);
  free(c.g);
  free(c.out);
}

int main(void) {
  unsetenv("KDA_TUNE");
  unsetenv("KDA_LAUNCH_OVERLAP");
  const char *path = getenv("KDA_LIBCUDA");
  void *h = path ? dlopen(path, RTLD_NOW) : NULL;
  if (h) {
    *(void **)&fake_launches = dlsym(h, "fake_cuda_launches");
    *(void **)&fake_overlap_launches = dlsym(h, "fake_cuda_overlap_launches");
    *(void **)&fake_refused_launches = dlsym(h, "fake_cuda_refused_launches");
  }
  if (!fake_launches || !fake_overlap_launches || !fake_refused_launches) {
    fprintf(stderr, "KDA_LIBCUDA must name the stand-in driver (tests/fake_cuda); got %s\n",
            path ? path : "(unset)");
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(default_launches_with_the_attribute_on_sm90),
      cmocka_unit_test(option_off_and_environment_override),
      cmocka_unit_test(refused_attribute_falls_back_to_a_plain_launch_once),
      cmocka_unit_test(refusal_seen_by_a_tuning_run_is_reported),
      cmocka_unit_test(older_struct_size_keeps_the_default),
      cmocka_unit_test(chunk_plan_launches_plainly_where_its_reads_need_it),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
