/* What a tuning slot does with the database row of its key, on the
 * stand-in driver (tests/fake_cuda): a stored winner that is not in the
 * slot's candidate space (a hand-edited or imported row) is ignored;
 * kda_prewarm with force tunes a key that already has a winner; a key
 * another process is tuning is waited for, and its lease taken over once
 * that process stops renewing it. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cmocka.h>

#include "kda/kda.h"
#include "kda/kda_db.h"
#include "stand_in_call.h"
#include "store.h"
#include "tuner_rows.h"

typedef struct fixture {
  char dir[64], db[96];
  stand_in_call call;
  kda_gate_args a; /* its H=4 K=64 T=4096 bf16 softplus call */
  int not_in_space; /* info messages saying a stored winner was ignored */
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (f == NULL) return -1;
  snprintf(f->dir, sizeof f->dir, "/tmp/kda_tuner_slot_XXXXXX");
  if (mkdtemp(f->dir) == NULL) return -1;
  snprintf(f->db, sizeof f->db, "%s/tune.db", f->dir);
  stand_in_call_init(&f->call, 4, 64, 64, 4096, KDA_DTYPE_BF16, KDA_GATE_SOFTPLUS);
  if (f->call.g == NULL || f->call.out == NULL) return -1;
  f->a = f->call.a;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  const char *const files[] = {"", "-wal", "-shm", "-journal"};
  char path[128];
  for (size_t i = 0; i < sizeof files / sizeof files[0]; ++i) {
    snprintf(path, sizeof path, "%s%s", f->db, files[i]);
    remove(path);
  }
  rmdir(f->dir);
  stand_in_call_free(&f->call);
  free(f);
  return 0;
}

static void note_ignored(void *user, kda_log_level level, const char *message) {
  (void)level;
  if (strstr(message, "is not in the space; ignored") != NULL) ++((fixture *)user)->not_in_space;
}

static kda_context *context_make(fixture *f, int tune_mode) {
  kda_options o = kda_options_default();
  o.tune_mode = tune_mode;
  o.db_path = f->db;
  o.log_level = KDA_LOG_INFO;
  o.log_fn = note_ignored;
  o.log_user = f;
  kda_context *ctx = NULL;
  if (kda_context_create(&o, &ctx) != KDA_OK) fail_msg("%s", kda_last_error());
  return ctx;
}

static kda_status prewarm(kda_context *ctx, const fixture *f, int force, kda_prewarm_result *r) {
  memset(r, 0, sizeof *r);
  r->struct_size = sizeof *r;
  return kda_prewarm(ctx, KDA_KERNEL_GATE_CHUNK_CUMSUM, &f->a, force, r);
}

/* The key's row names a block shape the space does not have (here one no
 * space holds: 1024 threads across channels): the call runs the heuristic,
 * says why at info level, and counts no database hit. A config the space
 * has, stored the same way, is used. */
static void a_stored_winner_outside_the_space_is_ignored(void **state) {
  fixture *f = *state;
  kda_context *ctx = context_make(f, KDA_TUNE_CACHED);
  kda__tune_keys keys;
  kda__config in_space;
  tr_slot_keys(ctx, KDA__OP_GATE_CHUNK_CUMSUM, &f->a, &keys, &in_space, NULL);
  const kda__config outside = {8, 1024, 64};
  tr_put_winner(ctx, &keys, &outside, 1.0);
  if (kda_gate_chunk_cumsum(ctx, &f->a, NULL) != KDA_OK) fail_msg("%s", kda_last_error());
  assert_int_equal(tr_stats(ctx).db_result_hits, 0);
  assert_int_equal(f->not_in_space, 1);
  kda_context_destroy(ctx);

  ctx = context_make(f, KDA_TUNE_CACHED);
  tr_put_winner(ctx, &keys, &in_space, 1.0);
  if (kda_gate_chunk_cumsum(ctx, &f->a, NULL) != KDA_OK) fail_msg("%s", kda_last_error());
  assert_int_equal(tr_stats(ctx).db_result_hits, 1);
  assert_int_equal(f->not_in_space, 1);
  kda_context_destroy(ctx);
}

/* force = 0 reports the stored winner (skipped); force = 1 tunes the key
 * again, which on the stand-in ends KDA_PREWARM_FAILED (its kernels write
 * nothing, so validation cannot run) and leaves the stored row as it was. */
static void prewarm_with_force_tunes_a_key_that_has_a_winner(void **state) {
  fixture *f = *state;
  kda_context *ctx = context_make(f, KDA_TUNE_ON);
  kda__tune_keys keys;
  kda__config in_space;
  tr_slot_keys(ctx, KDA__OP_GATE_CHUNK_CUMSUM, &f->a, &keys, &in_space, NULL);
  tr_put_winner(ctx, &keys, &in_space, 7.0);
  char stored[64];
  kda__config_text(&in_space, stored, sizeof stored);

  kda_prewarm_result r;
  assert_int_equal(prewarm(ctx, f, 0, &r), KDA_OK);
  assert_int_equal(r.outcome, KDA_PREWARM_SKIPPED);
  assert_string_equal(r.config, stored);
  assert_int_equal(tr_stats(ctx).tuning_runs, 0);
  kda_context_destroy(ctx);

  ctx = context_make(f, KDA_TUNE_ON);
  assert_int_not_equal(prewarm(ctx, f, 1, &r), KDA_OK);
  assert_int_equal(r.outcome, KDA_PREWARM_FAILED);
  assert_int_equal(tr_stats(ctx).db_result_hits, 0);
  kda_context_destroy(ctx);

  ctx = context_make(f, KDA_TUNE_ON);
  assert_int_equal(prewarm(ctx, f, 0, &r), KDA_OK);
  assert_int_equal(r.outcome, KDA_PREWARM_SKIPPED);
  assert_string_equal(r.config, stored);
  kda_context_destroy(ctx);
}

/* A view's calls (g 4 bf16 elements past an aligned address: 4-wide
 * vectors at most) have keys of their own, and kda_prewarm reads g and out
 * as such addresses: given the view, it skips on the view's row and a
 * cached context's call on the view runs it; given the aligned tensor, it
 * does not take the view's row for its own (it tunes, which on the
 * stand-in ends KDA_PREWARM_FAILED), nor does the aligned call. */
static void prewarm_of_a_view_reads_the_views_row(void **state) {
  fixture *f = *state;
  kda_gate_args view = f->a;
  view.g = (const char *)f->call.g + 8;
  kda_context *ctx = context_make(f, KDA_TUNE_ON);
  kda__tune_keys keys;
  kda__config in_space;
  tr_slot_keys(ctx, KDA__OP_GATE_CHUNK_CUMSUM, &view, &keys, &in_space, NULL);
  assert_non_null(strstr(keys.spec, " veccap=4"));
  assert_true(in_space.vec <= 4);
  tr_put_winner(ctx, &keys, &in_space, 7.0);
  char stored[64];
  kda__config_text(&in_space, stored, sizeof stored);

  kda_prewarm_result r = {.struct_size = sizeof r};
  assert_int_equal(kda_prewarm(ctx, KDA_KERNEL_GATE_CHUNK_CUMSUM, &view, 0, &r), KDA_OK);
  assert_int_equal(r.outcome, KDA_PREWARM_SKIPPED);
  assert_string_equal(r.config, stored);
  /* Only the address's offset within 256 bytes counts. */
  kda_gate_args far = view;
  far.g = (const void *)(uintptr_t)(((uintptr_t)1 << 36) + 8);
  assert_int_equal(kda_prewarm(ctx, KDA_KERNEL_GATE_CHUNK_CUMSUM, &far, 0, &r), KDA_OK);
  assert_int_equal(r.outcome, KDA_PREWARM_SKIPPED);
  assert_int_not_equal(prewarm(ctx, f, 0, &r), KDA_OK);
  assert_int_equal(r.outcome, KDA_PREWARM_FAILED);
  kda_context_destroy(ctx);

  ctx = context_make(f, KDA_TUNE_CACHED);
  if (kda_gate_chunk_cumsum(ctx, &view, NULL) != KDA_OK) fail_msg("%s", kda_last_error());
  assert_int_equal(tr_stats(ctx).db_result_hits, 1);
  if (kda_gate_chunk_cumsum(ctx, &f->a, NULL) != KDA_OK) fail_msg("%s", kda_last_error());
  assert_int_equal(tr_stats(ctx).db_result_hits, 1);
  kda_context_destroy(ctx);

  /* And kda_db_lookup, given the view's address, names that row. */
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(f->db, KDA_DB_READ_ONLY, &db), KDA_OK);
  kda_device_info info = {.struct_size = sizeof info};
  ctx = context_make(f, KDA_TUNE_CACHED);
  assert_int_equal(kda_context_get_device_info(ctx, &info), KDA_OK);
  kda_context_destroy(ctx);
  char gpu[128];
  assert_true(kda_db_gpu_key(&info, gpu, sizeof gpu) > 0);
  kda_db_lookup_result lr = {.struct_size = sizeof lr};
  assert_int_equal(kda_db_lookup(db, gpu, KDA_KERNEL_GATE_CHUNK_CUMSUM, &view, &lr), KDA_OK);
  assert_int_equal(lr.found, 1);
  assert_int_equal(lr.vec_cap, 4);
  assert_string_equal(lr.config, stored);
  lr = (kda_db_lookup_result){.struct_size = sizeof lr};
  assert_int_equal(kda_db_lookup(db, gpu, KDA_KERNEL_GATE_CHUNK_CUMSUM, &f->a, &lr), KDA_OK);
  assert_int_equal(lr.found, 0);
  kda_db_close(db);
}

static void note_installed(void *user, kda_log_level level, const char *message) {
  (void)level;
  if (strstr(message, "background tuning installed") != NULL) ++*(int *)user;
}

/* Background mode, a call on a view (g 4 bf16 elements in): the worker
 * prewarms the view's key, not the aligned tensor's. With the view's row
 * stored it finds that row (no tuning run, which on the stand-in would
 * fail) and installs it for the view's calls. */
static void background_tunes_a_views_own_key(void **state) {
  fixture *f = *state;
  kda_gate_args view = f->a;
  view.g = (const char *)f->call.g + 8;
  kda_context *ctx = context_make(f, KDA_TUNE_CACHED);
  kda__tune_keys keys;
  kda__config in_space;
  tr_slot_keys(ctx, KDA__OP_GATE_CHUNK_CUMSUM, &view, &keys, &in_space, NULL);
  tr_put_winner(ctx, &keys, &in_space, 7.0);
  kda_context_destroy(ctx);

  int installed = 0;
  kda_options o = kda_options_default();
  o.tune_mode = KDA_TUNE_BACKGROUND;
  o.db_path = f->db;
  o.log_level = KDA_LOG_INFO;
  o.log_fn = note_installed;
  o.log_user = &installed;
  if (kda_context_create(&o, &ctx) != KDA_OK) fail_msg("%s", kda_last_error());
  if (kda_gate_chunk_cumsum(ctx, &view, NULL) != KDA_OK) fail_msg("%s", kda_last_error());
  struct timespec nap = {0, 20 * 1000000L};
  for (int i = 0; i < 500 && tr_stats(ctx).background_jobs == 0; ++i) nanosleep(&nap, NULL);
  assert_int_equal(tr_stats(ctx).background_jobs, 1);
  assert_int_equal(tr_stats(ctx).tuning_runs, 0);
  assert_int_equal(installed, 1);
  kda_context_destroy(ctx);
}

/* An offset no tensor of the dtype can start at (a bf16 g one byte in, an
 * f32 out two): kda_prewarm would place its inputs there and fault the
 * tuning kernels. Refused before anything is made or run. */
static void prewarm_refuses_a_view_offset_its_dtype_cannot_have(void **state) {
  fixture *f = *state;
  kda_context *ctx = context_make(f, KDA_TUNE_ON);
  kda_gate_args odd_g = f->a, odd_out = f->a, ok = f->a;
  odd_g.g = (const void *)(uintptr_t)1;  /* bf16 */
  odd_out.out = (void *)(uintptr_t)2;    /* f32 */
  kda_prewarm_result r = {.struct_size = sizeof r};
  assert_int_equal(kda_prewarm(ctx, KDA_KERNEL_GATE_CHUNK_CUMSUM, &odd_g, 0, &r),
                   KDA_ERROR_INVALID_ARGUMENT);
  assert_non_null(strstr(kda_last_error(), "aligned for their element types"));
  assert_int_equal(r.outcome, KDA_PREWARM_FAILED);
  assert_int_equal(kda_prewarm(ctx, KDA_KERNEL_GATE_CHUNK_CUMSUM, &odd_out, 0, &r),
                   KDA_ERROR_INVALID_ARGUMENT);
  assert_int_equal(tr_stats(ctx).tuning_runs, 0);
  /* An element-aligned view is a key like any other (here: tuned, which
   * the stand-in cannot finish, so not refused as an argument). */
  ok.g = (const void *)(uintptr_t)2;
  ok.out = (void *)(uintptr_t)4;
  assert_int_not_equal(kda_prewarm(ctx, KDA_KERNEL_GATE_CHUNK_CUMSUM, &ok, 0, &r),
                       KDA_ERROR_INVALID_ARGUMENT);
  kda_context_destroy(ctx);
}

/* Takes the key's lease for another holder ("another process"), for ttl_s
 * seconds, through ctx's store. */
static void hold_lease_as(kda_context *ctx, const kda__tune_keys *keys, const char *holder,
                          double ttl_s) {
  kda__lease lease;
  kda__store *store = kda__context_store_lock(ctx);
  assert_non_null(store);
  const kda_status st = kda__store_lease_acquire(store, keys->lease, holder, ttl_s, &lease);
  kda__context_store_unlock(ctx);
  assert_int_equal(st, KDA_OK);
  assert_int_equal(lease.acquired, 1);
}

static void hold_lease(kda_context *ctx, const kda__tune_keys *keys, double ttl_s) {
  hold_lease_as(ctx, keys, "4242@another-host", ttl_s);
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct late_winner {
  fixture *f;
  const kda__tune_keys *keys;
  kda__config cfg;
} late_winner;

/* "The other process" stores its winner 300 ms later, from its own context. */
static void *store_late(void *p) {
  late_winner *w = p;
  struct timespec nap = {0, 300 * 1000000L};
  nanosleep(&nap, NULL);
  kda_context *other = context_make(w->f, KDA_TUNE_CACHED);
  tr_put_winner(other, w->keys, &w->cfg, 4.0);
  kda_context_destroy(other);
  return NULL;
}

/* The key's lease is held by holder, which stores its winner 300 ms later:
 * prewarm waits for that row and reports it, tuning nothing. */
static void waits_for_the_row_of(fixture *f, const char *holder) {
  kda_context *ctx = context_make(f, KDA_TUNE_ON);
  kda__tune_keys keys;
  late_winner w = {f, &keys, {0, 0, 0}};
  tr_slot_keys(ctx, KDA__OP_GATE_CHUNK_CUMSUM, &f->a, &keys, &w.cfg, NULL);
  hold_lease_as(ctx, &keys, holder, 60.0);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, store_late, &w), 0);
  kda_prewarm_result r;
  const kda_status st = prewarm(ctx, f, 0, &r);
  pthread_join(t, NULL);
  assert_int_equal(st, KDA_OK);
  assert_int_equal(r.outcome, KDA_PREWARM_SKIPPED);
  char stored[64];
  kda__config_text(&w.cfg, stored, sizeof stored);
  assert_string_equal(r.config, stored);
  assert_int_equal(tr_stats(ctx).tuning_runs, 0);
  kda_context_destroy(ctx);
}

/* Another process holds the key's lease. */
static void a_key_another_process_tunes_is_waited_for(void **state) {
  waits_for_the_row_of(*state, "4242@another-host");
}

/* Another job of this very process holds it (another context on the GPU,
 * or a prewarm beside a call): its holder names this process too
 * ("pid@host" and more), yet it is not this job's lease. The holder was
 * "pid@host" alone: a job took any lease of its process as its own and
 * tuned the key a second time (tuning_runs 1, not 0). */
static void a_key_another_job_of_this_process_tunes_is_waited_for(void **state) {
  char self[256];
  kda__store_default_holder(self, sizeof self);
  waits_for_the_row_of(*state, self);
}

/* The other process stopped (its lease expires after 0.3 s, no row): the
 * waiter takes the lease over (it retries every 8 polls) and tunes the key
 * itself; on the stand-in the run ends KDA_PREWARM_FAILED. */
static void a_dead_tuners_lease_is_taken_over(void **state) {
  fixture *f = *state;
  kda_context *ctx = context_make(f, KDA_TUNE_ON);
  kda__tune_keys keys;
  tr_slot_keys(ctx, KDA__OP_GATE_CHUNK_CUMSUM, &f->a, &keys, NULL, NULL);
  hold_lease(ctx, &keys, 0.3);
  const double t0 = now_s();
  kda_prewarm_result r;
  assert_int_not_equal(prewarm(ctx, f, 0, &r), KDA_OK);
  const double took = now_s() - t0;
  assert_int_equal(r.outcome, KDA_PREWARM_FAILED);
  /* A waiter that never retried the lease would give up at its deadline
   * and run the heuristic: KDA_OK, not a tuning run's failure. */
  print_message("lease taken over and the key tuned in %.2f s\n", took);
  kda_context_destroy(ctx);
}

/* Background mode: the worker's run for a key another process holds (a
 * lease that would last a minute; with a 20 s budget the worker would wait
 * 43 s for its row) is cut short by kda_context_destroy, which returns in
 * well under a second instead. */
static void destroy_cuts_a_background_wait_for_another_process_short(void **state) {
  fixture *f = *state;
  kda_options o = kda_options_default();
  o.tune_mode = KDA_TUNE_BACKGROUND;
  o.db_path = f->db;
  o.tune_budget_ms = 20000;
  o.log_level = KDA_LOG_ERROR;
  kda_context *ctx = NULL;
  if (kda_context_create(&o, &ctx) != KDA_OK) fail_msg("%s", kda_last_error());
  kda__tune_keys keys;
  tr_slot_keys(ctx, KDA__OP_GATE_CHUNK_CUMSUM, &f->a, &keys, NULL, NULL);
  hold_lease(ctx, &keys, 60.0);
  if (kda_gate_chunk_cumsum(ctx, &f->a, NULL) != KDA_OK) fail_msg("%s", kda_last_error());
  struct timespec nap = {0, 300 * 1000000L}; /* the worker is waiting by now */
  nanosleep(&nap, NULL);
  const double t0 = now_s();
  kda_context_destroy(ctx);
  const double took = now_s() - t0;
  print_message("destroy during a wait for another process's lease: %.3f s\n", took);
  if (took > 3.0) fail_msg("destroy waited %.1f s", took);
}

typedef struct tuning_call {
  kda_context *ctx;
  const kda_gate_args *a;
  kda_status st;
} tuning_call;

static void *call_on_thread(void *p) {
  tuning_call *t = p;
  t->st = kda_gate_chunk_cumsum(t->ctx, t->a, NULL);
  return NULL;
}

/* Another context of this process times on the GPU and waits (up to 10 s)
 * for another process's timing lock, holding the process's turn: a
 * background context whose job waits for that turn is destroyed at once,
 * not when the other context's wait ends. */
static void destroy_cuts_a_wait_behind_another_contexts_run_short(void **state) {
  fixture *f = *state;
  setenv("KDA_TIMING_LOCK_DIR", f->dir, 1);
  kda_options o = kda_options_default();
  o.db_path = ":memory:";
  o.tune_budget_ms = 3000;
  o.log_level = KDA_LOG_ERROR;
  kda_context *a = NULL, *b = NULL;
  if (kda_context_create(&o, &a) != KDA_OK) fail_msg("%s", kda_last_error());
  /* "Another process" holds the GPU's timing lock. */
  char bus[64], lock[160];
  assert_int_equal(a->drv->cuDeviceGetPCIBusId(bus, (int)sizeof bus, a->device), CUDA_SUCCESS);
  snprintf(lock, sizeof lock, "%s/kda-timing-%s.lock", f->dir, bus);
  const int fd = open(lock, O_RDONLY | O_CREAT, 0444);
  assert_true(fd >= 0);
  assert_int_equal(flock(fd, LOCK_EX), 0);
  tuning_call ta = {a, &f->a, KDA_ERROR_INTERNAL};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, call_on_thread, &ta), 0);
  struct timespec nap = {0, 20 * 1000000L};
  for (int i = 0; i < 500 && tr_stats(a).tuning_timing_waits == 0; ++i) nanosleep(&nap, NULL);
  assert_int_equal(tr_stats(a).tuning_timing_waits, 1); /* a's run waits for the file lock */

  o.tune_mode = KDA_TUNE_BACKGROUND;
  if (kda_context_create(&o, &b) != KDA_OK) fail_msg("%s", kda_last_error());
  kda_gate_args cold = f->a;
  cold.num_heads = 2;
  if (kda_gate_chunk_cumsum(b, &cold, NULL) != KDA_OK) fail_msg("%s", kda_last_error());
  for (int i = 0; i < 500 && tr_stats(b).tuning_timing_waits == 0; ++i) nanosleep(&nap, NULL);
  assert_int_equal(tr_stats(b).tuning_timing_waits, 1); /* b's job waits for a's turn */
  const double t0 = now_s();
  kda_context_destroy(b);
  const double took = now_s() - t0;
  print_message("destroy while its job waits behind another context's run: %.3f s\n", took);
  flock(fd, LOCK_UN);
  close(fd);
  unlink(lock);
  pthread_join(th, NULL);
  assert_int_equal(ta.st, KDA_OK);
  kda_context_destroy(a);
  unsetenv("KDA_TIMING_LOCK_DIR");
  if (took > 2.0) fail_msg("destroy waited %.1f s", took);
}

/* What a tuning run stores about where it ran: this machine, the driver
 * (its release where /proc/driver/nvidia/version says it; the CUDA
 * version always) and what ran it. */
static void a_tuned_row_says_where_it_was_tuned(void **state) {
  fixture *f = *state;
  kda_context *ctx = context_make(f, KDA_TUNE_ON);
  kda__store_record rec;
  memset(&rec, 0, sizeof rec);
  kda__tune_provenance(ctx, 1, &rec);
  char host[64];
  assert_int_equal(gethostname(host, sizeof host), 0);
  host[sizeof host - 1] = '\0';
  assert_string_equal(rec.host, host);
  assert_string_equal(rec.source, "kda_prewarm");
  assert_non_null(strstr(rec.driver, "CUDA "));
  kda__tune_provenance(ctx, 0, &rec);
  assert_string_equal(rec.source, "a kernel call");
  kda_context_destroy(ctx);
  /* Both kernel modules' wording (the open one's was read as "for" on an
   * H200 before). */
  char release[32];
  assert_int_equal(kda__driver_release_of("NVRM version: NVIDIA UNIX x86_64 Kernel Module  "
                                          "580.159.04  Sun Nov  2 00:00:00 UTC 2025\n",
                                          release, sizeof release), 0);
  assert_string_equal(release, "580.159.04");
  assert_int_equal(kda__driver_release_of("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64"
                                          "  580.159.04  Release Build  (nixbld@)  \n",
                                          release, sizeof release), 0);
  assert_string_equal(release, "580.159.04");
  assert_int_equal(kda__driver_release_of("no version here\n", release, sizeof release), -1);
  assert_string_equal(release, "");
}

/* kda_prewarm sizes its random inputs from the shape: an impossible shape
 * is refused as a call would refuse it, before anything is allocated. The
 * first one's element count wraps to 0 bytes in size_t (it wrote past a
 * 4-byte buffer before the check); the others are zeros, a sequence count
 * past the limit and a host-rows shape whose seq_len overflows the equal
 * split. Each is BAD_SHAPE with and without force, and nothing is stored. */
static void prewarm_refuses_impossible_shapes(void **state) {
  fixture *f = *state;
  kda_context *ctx = context_make(f, KDA_TUNE_ON);
  kda_gate_args bad[5];
  for (size_t i = 0; i < 5; ++i) bad[i] = f->a;
  bad[0].batch = INT64_C(1) << 62, bad[0].seq_len = 2, bad[0].num_heads = 1, bad[0].head_dim = 1;
  bad[1].num_heads = 0;
  bad[2].seq_len = 0;
  bad[3].num_seqs = INT64_C(1) << 40;
  static const int64_t host[2] = {0, 0};
  bad[4].num_seqs = 3, bad[4].seq_len = INT64_C(1) << 62, bad[4].cu_seqlens_host = host;
  for (size_t i = 0; i < 5; ++i) {
    for (int force = 0; force <= 1; ++force) {
      kda_prewarm_result r;
      memset(&r, 0, sizeof r);
      r.struct_size = sizeof r;
      const kda_status st = kda_prewarm(ctx, KDA_KERNEL_GATE_CHUNK_CUMSUM, &bad[i], force, &r);
      if (st != KDA_ERROR_BAD_SHAPE)
        fail_msg("shape %zu force %d: %s (%s)", i, force, kda_status_string(st), kda_last_error());
      assert_int_equal(r.outcome, KDA_PREWARM_FAILED);
    }
  }
  kda_context_destroy(ctx);
  kda_db *db = NULL;
  assert_int_equal(kda_db_open(f->db, KDA_DB_READ_ONLY, &db), KDA_OK);
  kda_db_stats st;
  memset(&st, 0, sizeof st);
  st.struct_size = sizeof st;
  assert_int_equal(kda_db_stats_get(db, &st, NULL, NULL), KDA_OK);
  assert_int_equal(st.results + st.cubins, 0);
  kda_db_close(db);
}

int main(void) {
  if (getenv("KDA_LIBCUDA") == NULL) {
    fprintf(stderr, "test_tuner_slot: needs the stand-in driver (KDA_LIBCUDA, set by ctest)\n");
    return 77;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(a_stored_winner_outside_the_space_is_ignored, setup, teardown),
      cmocka_unit_test_setup_teardown(prewarm_with_force_tunes_a_key_that_has_a_winner, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_key_another_process_tunes_is_waited_for, setup, teardown),
      cmocka_unit_test_setup_teardown(a_key_another_job_of_this_process_tunes_is_waited_for, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_dead_tuners_lease_is_taken_over, setup, teardown),
      cmocka_unit_test_setup_teardown(prewarm_of_a_view_reads_the_views_row, setup, teardown),
      cmocka_unit_test_setup_teardown(prewarm_refuses_a_view_offset_its_dtype_cannot_have, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(background_tunes_a_views_own_key, setup, teardown),
      cmocka_unit_test_setup_teardown(prewarm_refuses_impossible_shapes, setup, teardown),
      cmocka_unit_test_setup_teardown(a_tuned_row_says_where_it_was_tuned, setup, teardown),
      cmocka_unit_test_setup_teardown(destroy_cuts_a_wait_behind_another_contexts_run_short, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(destroy_cuts_a_background_wait_for_another_process_short, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
