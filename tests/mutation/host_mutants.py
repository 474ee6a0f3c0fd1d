#!/usr/bin/env python3
"""Mutation testing of the host code: do the CPU tests fail when the
library's validation, table builders, planning, tuner selection, the
store's fault handling and leases, or the module cache is wrong?

Each mutant is one plausible bug in src/ or tuner/, written as in
kernel_mutants.py (one exact replacement). `run` copies the tree once,
builds it with ASan and UBSan (a write past a buffer is a failure too),
then per mutant: applies it, rebuilds the tests it names, runs them
(ctest, so each gets its usual environment) and, if all pass, every CPU
test; then restores the file. No GPU is needed: the GPU tests report
themselves skipped and count for nothing. A mutant whose effect only a GPU
can see says so (`gpu_only`: prewarm_inputs_aligned, since the stand-in
driver cannot tune and only a tuning run stores its row; the one that was
before, packed_granules_floor, turned out to crash test_validation) and is
left out unless named with --only, or run with --gpu.

--gpu (on a GPU machine) runs the mutants that name GPU tests
(`gpu_tests`: the kernel decodes what they break) against their CPU and
GPU tests, so the GPU tests are shown to see them too, in a Release build
without sanitizers (ASan's shadow memory and the CUDA driver's mappings do
not mix); the control refuses to count a GPU test that skipped.

  host_mutants.py check                 every anchor occurs as its entry says
  host_mutants.py list
  host_mutants.py run [--work DIR] [--only a,b] [--no-full] [--gpu]

Writes WORK/results.txt and WORK/results.json.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
from kernel_mutants import Mutant, occurrences, check as check_anchors  # noqa: E402


class HostMutant(Mutant):
    def __init__(self, name, file, old, new, why, tests, gpu_only=None, gpu_tests=(), **kw):
        super().__init__(name, file, old, new, why, **kw)
        self.tests = tests
        self.gpu_only = gpu_only  # why only a GPU run can see it, if so
        self.gpu_tests = list(gpu_tests)  # the GPU tests that should see it (--gpu)
        assert not gpu_only or self.gpu_tests, name


GA = "src/gate_args.c"
CI = "src/chunk_indices.c"
SP = "src/spec.c"
PP = "src/plan_pack.c"
TS = "tuner/tuner_select.c"
SC = "tuner/store_cubins.c"
ARGS_TESTS = ["test_validation", "test_hostile_args", "test_fake_driver", "test_concurrent_api"]
TABLE_TESTS = ["test_chunk_indices_host", "test_validation", "test_hostile_args", "test_fake_driver"]
SPEC_TESTS = ["test_spec", "test_tuner_select", "test_validation"]
PLAN_TESTS = ["test_plan_pack", "test_fake_driver", "test_validation"]
SELECT_TESTS = ["test_tuner_select", "test_tuning_timing"]
STORE_TESTS = ["test_store", "test_db_api"]
SF = "tuner/store_faults.c"
ST = "tuner/store.c"
SL = "tuner/store_lease.c"
PA = "tuner/store_path.c"
MC = "src/module_cache.c"
FAULT_TESTS = ["test_store", "test_db_api", "test_hostile_args", "test_kda_tune_cli"]
LEASE_TESTS = ["test_store", "test_tuning_timing", "test_tune_compile", "test_concurrent_api"]
CACHE_TESTS = ["test_module_cache", "test_fake_driver", "test_concurrent_api"]
TU = "tuner/tuner.c"
TUNER_TESTS = ["test_tuner_slot", "test_fake_driver", "test_tuner_keys", "test_tune_compile",
               "test_tuning_timing", "test_cubin_other_builds", "test_kda_tune_cli"]

MUTANTS = [
    # --- kda_gate_args validation (src/gate_args.c) ------------------------
    HostMutant("overlap_adjacent_refused", GA, "return x < y + bn && y < x + an;",
               "return x <= y + bn && y <= x + an;", "g and out side by side taken as overlapping",
               ARGS_TESTS),
    HostMutant("overlap_accepted", GA, "KDA__REQUIRE(!ranges_overlap(",
               "KDA__REQUIRE(1 || !ranges_overlap(", "out overlapping g accepted", ARGS_TESTS),
    HostMutant("head_dim_max_refused", GA, "a->head_dim <= KDA_MAX_HEAD_DIM",
               "a->head_dim < KDA_MAX_HEAD_DIM", "head_dim = KDA_MAX_HEAD_DIM refused", ARGS_TESTS),
    HostMutant("heads_max_refused", GA, "a->num_heads <= KDA_MAX_HEADS",
               "a->num_heads < KDA_MAX_HEADS", "num_heads = KDA_MAX_HEADS refused", ARGS_TESTS),
    HostMutant("size_overflow_unchecked", GA, "KDA__REQUIRE(a->batch <= (INT64_C(1) << 40) / a->seq_len &&",
               "KDA__REQUIRE(", "B*T past 2^40 (B*T*H*K may overflow) accepted", ARGS_TESTS),
    HostMutant("softplus_without_alog", GA, "a->gate != KDA_GATE_SOFTPLUS || a->A_log != NULL",
               "1", "softplus accepted without A_log", ARGS_TESTS),
    HostMutant("plan_with_num_chunks", GA, "a->chunk_indices == NULL && a->num_chunks == 0 &&",
               "a->chunk_indices == NULL &&", "a chunk plan accepted beside num_chunks", ARGS_TESTS),
    HostMutant("host_seqlens_past_t", GA, "KDA__REQUIRE(y >= x && y <= T, KDA_ERROR_BAD_SEQLENS,",
               "KDA__REQUIRE(y >= x, KDA_ERROR_BAD_SEQLENS,",
               "cu_seqlens_host passing seq_len inside the batch accepted", ARGS_TESTS),
    HostMutant("host_seqlens_decreasing", GA, "KDA__REQUIRE(y >= x && y <= T, KDA_ERROR_BAD_SEQLENS,",
               "KDA__REQUIRE(y <= T, KDA_ERROR_BAD_SEQLENS,", "a decreasing cu_seqlens_host accepted",
               ARGS_TESTS),
    HostMutant("host_seqlens_end", GA, "KDA__REQUIRE(kda__seqlen_at(cu, dt, N) == T,",
               "KDA__REQUIRE(1 || kda__seqlen_at(cu, dt, N) == T,",
               "cu_seqlens_host ending short of seq_len accepted", ARGS_TESTS),
    HostMutant("host_seqlens_start", GA, "KDA__REQUIRE(kda__seqlen_at(cu, dt, 0) == 0, KDA_ERROR_BAD_SEQLENS,\n"
               "               \"%s: cu_seqlens_host[0]",
               "KDA__REQUIRE(1, KDA_ERROR_BAD_SEQLENS,\n               \"%s: cu_seqlens_host[0]",
               "cu_seqlens_host not starting at 0 accepted", ARGS_TESTS),
    HostMutant("host_rows_limit", GA, "*fits = chunks <= KDA_MAX_HOST_ROWS &&",
               "*fits = chunks < KDA_MAX_HOST_ROWS &&",
               "a batch of exactly KDA_MAX_HOST_ROWS chunks needs a table", ARGS_TESTS),
    HostMutant("table_rows_unbounded", GA, "a->num_chunks >= 0 && a->num_chunks <= cap",
               "a->num_chunks >= 0", "num_chunks past the capacity accepted", ARGS_TESTS),
    HostMutant("vec_ignores_out", GA,
               "||\n          ((uintptr_t)a->out % ((uintptr_t)s->cfg.vec * dtype_size(a->out_dtype))) != 0",
               "", "the vector width ignores out's alignment", ARGS_TESTS),
    HostMutant("vec_ignores_g", GA,
               "(((uintptr_t)a->g % ((uintptr_t)s->cfg.vec * dtype_size(a->g_dtype))) != 0 ||",
               "(0 ||", "the vector width ignores g's alignment", ARGS_TESTS),
    HostMutant("grid_unbounded", GA, "KDA__REQUIRE(plan->grid <= INT32_MAX,",
               "KDA__REQUIRE(1,", "a grid past 2^31 - 1 blocks accepted", ARGS_TESTS),
    HostMutant("dense_last_chunk_dropped", GA,
               "plan->chunks_per_seq = (a->seq_len + s->chunk - 1) / s->chunk;\n      plan->num_chunks = a->batch",
               "plan->chunks_per_seq = a->seq_len / s->chunk;\n      plan->num_chunks = a->batch",
               "a dense partial last chunk gets no block", ARGS_TESTS),
    HostMutant("packed_granules_floor", GA, "granules[i] = (uint8_t)((lens[i] + G - 1) / G);",
               "granules[i] = (uint8_t)(lens[i] / G);", "launch rows: a short chunk's granules rounded down",
               ARGS_TESTS, gpu_tests=["test_gpu_kernels", "test_gpu_random"]),
    # --- the chunk table (src/chunk_indices.c) ------------------------------
    HostMutant("capacity_one_short", CI, "return (total_tokens + chunk_size - 1) / chunk_size + num_seqs;",
               "return (total_tokens + chunk_size - 1) / chunk_size + num_seqs - 1;",
               "the table's capacity one row short", TABLE_TESTS),
    HostMutant("host_table_decreasing", CI, "KDA__REQUIRE(b >= a, KDA_ERROR_BAD_SEQLENS,",
               "KDA__REQUIRE(1, KDA_ERROR_BAD_SEQLENS,", "a decreasing cu_seqlens accepted by the host builder",
               TABLE_TESTS),
    HostMutant("host_table_start", CI, "KDA__REQUIRE(kda__seqlen_at(cu_seqlens, dt, 0) == 0,",
               "KDA__REQUIRE(1 || kda__seqlen_at(cu_seqlens, dt, 0) == 0,",
               "cu_seqlens not starting at 0 accepted by the host builder", TABLE_TESTS),
    HostMutant("host_table_capacity", CI, "KDA__REQUIRE(chunks <= capacity - n,",
               "KDA__REQUIRE(chunks <= capacity - n + 1,", "the host builder writes one row past capacity",
               TABLE_TESTS),
    HostMutant("host_table_round", CI, "((b - a) % chunk_size != 0)", "((b - a) % chunk_size > 1)",
               "a last chunk of one token dropped", TABLE_TESTS),
    HostMutant("device_table_capacity", CI, "KDA__REQUIRE(capacity >= need,",
               "KDA__REQUIRE(capacity >= need - 1,", "the device builder given one row too few",
               TABLE_TESTS),
    # --- configs (src/spec.c) ----------------------------------------------
    HostMutant("config_vec_divides", SP, "KDA__REQUIRE(hk % c->vec == 0,", "KDA__REQUIRE(1,",
               "a vector width that does not divide H*K accepted", SPEC_TESTS),
    HostMutant("config_seg_chunk", SP, "c->seg <= spec->chunk", "c->seg <= 2 * spec->chunk",
               "more segments than rows accepted", SPEC_TESTS),
    HostMutant("config_threads", SP, "c->tx * c->seg <= 1024,", "c->tx * c->seg <= 2048,",
               "blocks of 2048 threads accepted", SPEC_TESTS),
    HostMutant("config_values", SP, "rows * c->vec <= KDA__MAX_VALUES_PER_THREAD,",
               "rows * c->vec <= 2 * KDA__MAX_VALUES_PER_THREAD,", "128 values per thread accepted",
               SPEC_TESTS),
    HostMutant("config_wide_totals", SP, "c->tx * c->seg * c->vec <= KDA__MAX_WIDE_TOTALS,",
               "c->tx * c->seg * c->vec <= 2 * KDA__MAX_WIDE_TOTALS,",
               "the plain cumsum's double totals past 32 KB accepted", SPEC_TESTS),
    HostMutant("config_granule", SP, "rows <= kda__host_granule(spec->chunk),",
               "rows <= 2 * kda__host_granule(spec->chunk),",
               "a packed varlen segment longer than a granule accepted", SPEC_TESTS),
    HostMutant("heuristic_wide_access", SP, "while (vec > 1 && vec * dtype_bytes(spec->in_dtype) > 16) vec >>= 1;",
               "while (vec > 1 && vec * dtype_bytes(spec->in_dtype) > 32) vec >>= 1;",
               "the heuristic picks 32-byte loads", SPEC_TESTS),
    HostMutant("sums_in_double_gate", SP, "spec->cumsum && spec->gate == KDA_GATE_NONE;",
               "spec->cumsum;", "the fused kernels held to the plain cumsum's shared-memory limit",
               SPEC_TESTS),
    # --- the chunk plan's host packing (src/plan_pack.c) ---------------------
    HostMutant("plan_place_last_granules", PP, "*g1 = smallest == k && j == r->m[k] - 1 ? ng : *g0 + k;",
               "*g1 = *g0 + k;", "a slot's last chunk does not own the free granules", PLAN_TESTS),
    HostMutant("plan_whole_len", PP, "put(out, cap, ng, packed + w++, 0, ng, r0, s.b - r0 < chunk ? s.b - r0 : chunk);",
               "put(out, cap, ng, packed + w++, 0, ng, r0, chunk);", "a whole chunk's rows not clamped",
               PLAN_TESTS),
    HostMutant("plan_runs_fill", PP, "while (c[k] - r->m[k] > 0 && fill + k <= ng) {",
               "while (c[k] - r->m[k] > 0 && fill + k < ng) {", "a slot's pattern never fills the slot",
               PLAN_TESTS),
    HostMutant("plan_put_capacity", PP, "if (slot < 0 || slot >= cap) return;", "if (slot < 0) return;",
               "slots past the capacity written", PLAN_TESTS),
    HostMutant("plan_granules_floor", PP, "s.k = s.nc > 0 ? (int)((s.last + G - 1) / G) : 0;",
               "s.k = s.nc > 0 ? (int)(s.last / G) : 0;", "a short chunk's granules rounded down",
               PLAN_TESTS),
    # --- the tuner's choice (tuner/tuner_select.c) --------------------------
    HostMutant("usable_ignores_status", TS, "return t->status == KDA__TRIAL_OK && t->measured &&",
               "return t->measured &&", "a rejected candidate with a time can win", SELECT_TESTS),
    HostMutant("pick_tie_break", TS, "trials[i].config_id < trials[win].config_id",
               "trials[i].config_id > trials[win].config_id",
               "within the band, the highest config id wins, not the lowest", SELECT_TESTS),
    HostMutant("pick_keep_band", TS, "trials[ref].median_us <= best * (1.0 + band)",
               "trials[ref].median_us <= best * (1.0 + 2 * band)", "the kept config gets twice the band",
               SELECT_TESTS),
    HostMutant("median_even", TS, "m = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);",
               "m = v[n / 2];", "the median of an even count is its upper middle", SELECT_TESTS),
    HostMutant("rank_floor", TS, "size_t r = (size_t)ceil(q * (double)n);",
               "size_t r = (size_t)floor(q * (double)n);", "p10 and p90 one rank low", SELECT_TESTS),
    HostMutant("bucket_boundary", TS, "tokens >= bucket_start[b + 1]", "tokens > bucket_start[b + 1]",
               "1024 tokens fall in the first bucket", SELECT_TESTS),
    # --- the store (tuner/store_cubins.c) ----------------------------------
    HostMutant("cubin_sha_ignored", SC,
               "int good = strcmp(got, stored_sha) == 0 && stored_size == (int64_t)n && n > 0;",
               "int good = stored_size == (int64_t)n && n > 0;", "a tampered cubin of the right size loaded",
               STORE_TESTS),
    # --- damaged, full and read-only databases (tuner/store_faults.c, store.c)
    HostMutant("header_short_trusted", SF, "if (size < (sqlite3_int64)sizeof h) {",
               "if (0 && size < (sqlite3_int64)sizeof h) {", "a file shorter than a header not suspected",
               FAULT_TESTS),
    HostMutant("header_magic_trusted", SF, 'if (memcmp(h, "SQLite format 3", 16) != 0) {',
               'if (0 && memcmp(h, "SQLite format 3", 16) != 0) {', "a file that is not SQLite not suspected",
               FAULT_TESTS),
    HostMutant("header_pages_trusted", SF, "if (valid_for == change && pages > 0 && (uint64_t)pages * page > (uint64_t)size &&",
               "if (0 && valid_for == change && pages > 0 && (uint64_t)pages * page > (uint64_t)size &&",
               "a truncated file (header counts more pages than it has) not suspected", FAULT_TESTS),
    HostMutant("header_wal_ignored", SF, "(uint64_t)pages * page > (uint64_t)size &&\n      !has_wal(path)) {",
               "(uint64_t)pages * page > (uint64_t)size &&\n      1) {",
               "a healthy file whose pages are still in its WAL taken for a suspect", FAULT_TESTS,
               equivalent="a suspect file is only verified (quick_check) before SQLite's own answer "
                          "moves it; a healthy file with a WAL passes, so the mutant costs a check, "
                          "nothing a caller can see"),
    HostMutant("notadb_not_corrupt", SF, "return (rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB;",
               "return (rc & 0xff) == SQLITE_CORRUPT;", "SQLITE_NOTADB not taken for damage", FAULT_TESTS),
    HostMutant("aside_overwritten", SF, "(size_t)n < aside_size && access(aside, F_OK) == 0 && i < 100;",
               "(size_t)n < aside_size && 0 && i < 100;",
               "a second damaged file of the same second overwrites the first one moved aside", FAULT_TESTS),
    HostMutant("wal_not_kept", ST, "    if (suspect) kda__store_keep_wal(s->path, kept, sizeof kept);\n", "",
               "a suspect file's -wal not kept before SQLite opens it (SQLite deletes it)", FAULT_TESTS),
    HostMutant("kept_wal_dropped", SF, "if (kept_wal != NULL && kept_wal[0] != '\\0' && rename(kept_wal, to) == 0) {",
               "if (0) {", "the -wal kept before SQLite opened the damaged file not moved beside it",
               FAULT_TESTS),
    HostMutant("aside_other_inode", SF, "if (mine.st_ino != seen->st_ino || mine.st_dev != seen->st_dev) {",
               "if (0) {", "a database another process already replaced moved aside again", FAULT_TESTS),
    HostMutant("full_disk_fails", ST, "    case SQLITE_FULL:\n", "",
               "a full disk fails the call instead of keeping results in memory", FAULT_TESTS),
    HostMutant("readonly_fails", ST, "    case SQLITE_READONLY:\n", "",
               "a database that turned read-only fails the call instead of degrading", FAULT_TESTS),
    HostMutant("busy_degrades", ST, "      return 0; /* busy, constraint, misuse: not a property of the file */",
               "      break;", "a busy database (another writer) degrades the store to memory for good",
               FAULT_TESTS),
    # --- tuning leases (tuner/store_lease.c) --------------------------------
    HostMutant("lease_never_expires", SL, "if (exists && !mine && out->expires_at > now) return KDA_OK;",
               "if (exists && !mine) return KDA_OK;", "a crashed tuner's lease blocks the key for good",
               LEASE_TESTS),
    HostMutant("lease_shared", SL, "if (exists && !mine && out->expires_at > now) return KDA_OK;",
               "if (0) return KDA_OK;", "two processes both take one key's lease", LEASE_TESTS),
    HostMutant("lease_release_any", SL, "DELETE FROM leases WHERE key = ?1 AND holder = ?2",
               "DELETE FROM leases WHERE key = ?1 AND (holder = ?2 OR 1)",
               "a release frees another holder's lease", LEASE_TESTS),
    # --- the default database path (tuner/store_path.c) ---------------------
    HostMutant("xdg_relative_taken", PA, "(v = nonempty_env(\"XDG_CACHE_HOME\")) != NULL && v[0] == '/') {",
               "(v = nonempty_env(\"XDG_CACHE_HOME\")) != NULL) {", "a relative XDG_CACHE_HOME used", STORE_TESTS),
    HostMutant("cache_dir_ignored", PA, "if ((v = nonempty_env(\"KDA_CACHE_DIR\")) != NULL) {",
               "if (0) {", "KDA_CACHE_DIR ignored", STORE_TESTS),
    # --- the module cache (src/module_cache.c) ------------------------------
    HostMutant("failed_build_cached", MC,
               "    atomic_store_explicit(&e->state, KDA__ENTRY_BUILDING, memory_order_relaxed);\n"
               "    s = build_entry(cache, e, b, function, config);",
               "    s = kda__fail(e->fail_status, \"%s\", strip_status(e->fail_message, e->fail_status));",
               "a failed build is never retried (a transient NVRTC or load failure sticks)", CACHE_TESTS),
    HostMutant("peek_sees_building", MC, "const kda__cache_entry *e = find_ready(cache, spec, kda__spec_hash(spec));",
               "const kda__cache_entry *e = find(cache, spec, kda__spec_hash(spec));",
               "a peek reports an entry still building (or failed) as loaded", CACHE_TESTS),
    HostMutant("waiter_any_build", MC, "while (e->builds_done == seen) pthread_cond_wait(&e->done, &cache->lock);",
               "while (atomic_load_explicit(&e->state, memory_order_relaxed) == KDA__ENTRY_BUILDING) "
               "pthread_cond_wait(&e->done, &cache->lock);",
               "a waiter on a failed build's retry waits for the wrong build", CACHE_TESTS,
               equivalent="differs only when a retry starts between a failed build's broadcast and "
                          "the waiter's wake-up; the waiter then returns the retry's outcome instead "
                          "of the failure, and a call made during both builds may answer either"),
    # --- what a tuning slot does with the database (tuner/tuner.c) ----------
    HostMutant("stored_winner_outside_space", TU, "    if (same_config(&j->space[i], &c)) {",
               "    if (1) {", "a stored winner no longer in the search space used", TUNER_TESTS),
    HostMutant("force_keeps_stored", TU, "if (!rq->force && stored_winner(j, &rec, &cfg)) {\n    atomic_fetch_add",
               "if (stored_winner(j, &rec, &cfg)) {\n    atomic_fetch_add",
               "prewarm --force serves the stored winner instead of tuning again", TUNER_TESTS),
    HostMutant("cached_mode_tunes", TU, "} else if (rq->mode == KDA_TUNE_CACHED) {", "} else if (0) {",
               "KDA_TUNE_CACHED tunes a key with no stored winner", TUNER_TESTS),
    HostMutant("offline_heuristic_ignored", TU,
               "if (!cubin_stored(j, cfg) && kda__tune_offline_heuristic(&j->slot, j->heuristic, &plain) &&\n        cubin_stored(j, plain)) {",
               "if (0) {", "cached mode compiles instead of loading the offline heuristic's stored cubin",
               TUNER_TESTS),
    HostMutant("lease_wait_none", TU, "const double deadline = kda__job_now_ms() + 2.0 * ctx->tune_budget_ms + 3000.0;",
               "const double deadline = kda__job_now_ms();",
               "a key another process is tuning is not waited for (the heuristic at once)", TUNER_TESTS),
    HostMutant("lease_never_retried", TU, "if (poll % 8 == 0 && take_lease(j, holder, sizeof holder)) {",
               "if (0) {", "a waiter never takes over the lease of a tuner that died", TUNER_TESTS),
    # --- the twenty-seventh session's fixes, each as the bug it removed ----
    HostMutant("readonly_wal_dropped", ST, "static int needs_immutable(int rc) {\n  return",
               "static int needs_immutable(int rc) {\n  return (rc & 0xff) == SQLITE_CANTOPEN;\n  return",
               "another user's WAL database in an unwritable folder falls back to memory, not immutable",
               ["test_store"]),
    HostMutant("touch_waits", ST, "  sqlite3_busy_timeout(db, 0);\n  const int rc = sqlite3_exec(db, \"BEGIN IMMEDIATE\"",
               "  sqlite3_busy_timeout(db, KDA__STORE_BUSY_MS);\n  const int rc = sqlite3_exec(db, \"BEGIN IMMEDIATE\"",
               "a warm call's last_used refresh waits for another writer", ["test_store"]),
    HostMutant("write_wait_unbounded", ST, "if (monotonic_ms() - start >= KDA__STORE_WRITE_WAIT_MS) break;",
               "if (monotonic_ms() - start < 0) break;",
               "a write waits 20 busy timeouts (100 s) for a writer that never lets go", ["test_store"]),
    HostMutant("view_bucket_ranges", "tuner/store_schema.c", "WHEN 1 THEN '1024-4095'",
               "WHEN 1 THEN '1024-4096'", "the readable view's token range off by one", ["test_store"]),
    HostMutant("log_under_store_lock", "src/context.c",
               "  pthread_mutex_lock(&ctx->store_lock);\n  kda__log_hold();",
               "  pthread_mutex_lock(&ctx->store_lock);", "a log callback runs with the store lock held (one that asks for "
               "the database path hangs)", ["test_fake_driver"]),
    HostMutant("dead_context_leaks", "src/context.c", "      kda__tune_kit_abandon(ctx);",
               "      (void)0;", "a context whose CUDA context is gone keeps its tuning kit (and its "
               "lock-file descriptor)", ["test_fake_driver"]),
    HostMutant("capture_not_relaxed", "src/driver.c",
               "  if (d->cuThreadExchangeStreamCaptureMode == NULL ||\n      d->cuThreadExchangeStreamCaptureMode(&mode)",
               "  if (1 ||\n      d->cuThreadExchangeStreamCaptureMode(&mode)",
               "cold work's allocations and module loads stay in the global capture mode (refused "
               "during another thread's capture, which they invalidate)", ["test_fake_driver"],
               gpu_tests=["test_gpu_server"]),
    HostMutant("prewarm_legacy_stream", "tuner/tuner_api.c", "    rq.stream = b.stream;",
               "    rq.stream = NULL;", "a prewarm's tuning waits on the legacy stream (which waits for "
               "another thread's blocking capture)", ["test_fake_driver"]),
    HostMutant("prewarm_shape_unchecked", "tuner/tuner_api.c",
               "  kda_status st = kda__plan_gate_op(op, &f, &fp);\n  if (st != KDA_OK) {\n    free(host_seqlens);",
               "  kda_status st = (kda__plan_gate_op(op, &f, &fp), KDA_OK);\n  if (st != KDA_OK) {\n    free(host_seqlens);",
               "kda_prewarm sizes its inputs from a shape no call would accept", ["test_tuner_slot"]),
    HostMutant("destroy_waits_for_lease", TU, "kda__job_now_ms() < deadline && !atomic_load(&ctx->stopping)",
               "kda__job_now_ms() < deadline", "kda_context_destroy waits out a background run's wait "
               "for another process's lease", ["test_tuner_slot"]),
    HostMutant("lease_holder_per_process", TU,
               "\"%s#%llu\", self,\n             (unsigned long long)atomic_fetch_add(&jobs, 1) + 1);",
               "\"%s%.0llu\", self,\n             0ull * atomic_fetch_add(&jobs, 1));",
               "two jobs of one process share a lease holder (each takes the other's lease as its own)",
               ["test_tuner_slot"]),
    HostMutant("missing_db_read_as_empty", "tools/kda_tune.c",
               "  if (file[0] == '\\0' || access(file, F_OK) == 0 || errno != ENOENT) return 0;",
               "  if (1 || file[0] == '\\0' || access(file, F_OK) == 0 || errno != ENOENT) return 0;",
               "kda-tune reads a path with no database as an empty one", ["test_kda_tune_cli"]),
    HostMutant("entry_point_filter_ignored", "src/db_api.c", "      strcmp(entry_of(r), f->kernel) != 0)",
               "      1)", "--kernel gate_chunk_cumsum matches nothing", ["test_db_api", "test_kda_tune_cli"]),
    HostMutant("result_nvrtc_stale", "src/db_api.c",
               "   * PyTorch wheel ships another NVRTC still reads it. */\n}",
               "   * PyTorch wheel ships another NVRTC still reads it. */\n"
               "  if (strcmp(o->nvrtc_version, v->nvrtc_version) != 0) o->stale |= KDA_DB_STALE_NVRTC;\n}",
               "a result tuned under another NVRTC build is called stale (purge --stale deletes it)",
               ["test_db_api", "test_kda_tune_cli"]),
    HostMutant("json_numbers_in_process_locale", "src/db_json.c",
               "  return c_numeric != (locale_t)0 ? uselocale(c_numeric) : (locale_t)0;",
               "  return (locale_t)0;",
               "export writes 10,25 and import reads 10 under a comma locale", ["test_db_api"]),
    HostMutant("json_number_grammar_from_strtod", "src/db_json.c",
               "    const char *end = json_number_end(ps->p);",
               "    char *end = NULL;\n    strtod(ps->p, &end);\n    if (end == ps->p) end = NULL;",
               "import reads hex, 1. and 01 as numbers", ["test_db_api"]),
    # The twenty-eighth session's fixes, each written back as the bug it removed.
    HostMutant("layer_fwd_plan_builds_a_table", "src/launch.c",
               "a.chunk_indices == NULL &&\n      a.chunk_plan == NULL) {",
               "a.chunk_indices == NULL) {",
               "kda_layer_gate_fwd refuses a chunk-plan call that also passes cu_seqlens",
               ["test_fake_driver"]),
    HostMutant("plan_of_another_cuda_context_launched", "src/launch.c",
               "KDA__REQUIRE(cp->ctx->cu == ctx->cu, KDA_ERROR_INVALID_ARGUMENT,",
               "KDA__REQUIRE(1 || cp->ctx->cu == ctx->cu, KDA_ERROR_INVALID_ARGUMENT,",
               "a chunk plan of another CUDA context is read as garbage", ["test_fake_driver"]),
    HostMutant("db_path_names_a_memory_store", "src/context.c",
               "kda__store_get_mode(ctx->store) != KDA__STORE_MODE_MEMORY",
               "1", "kda_context_db_path names a file the store fell back from",
               ["test_fake_driver"]),
    HostMutant("offline_store_into_memory", "tuner/tuner_api.c",
               "KDA__REQUIRE(db_path == NULL || (db_path[0] != '\\0' && strcmp(db_path, \":memory:\") != 0),",
               "KDA__REQUIRE(1,",
               "kda_compile_offline_store returns OK and keeps nothing", ["test_hostile_args"]),
    HostMutant("budget_unbounded", "src/context.c",
               "KDA__REQUIRE(isfinite(o.tune_budget_ms) && o.tune_budget_ms <= KDA__TUNE_BUDGET_MAX_MS,",
               "KDA__REQUIRE(1,",
               "an infinite tuning budget makes leases that never expire", ["test_validation"]),
    HostMutant("no_device_reported_as_no_driver", "src/driver.c",
               "    if (r == CUDA_ERROR_NO_DEVICE)\n", "    if (0)\n",
               "a driver that sees no GPU reads as a missing driver", ["test_no_device"]),
    HostMutant("logs_under_the_timing_lock", "tuner/tuner_kit.c",
               "  /* Held for the whole timing: what it logs waits until the release. */\n  kda__log_hold();",
               "  /* (not held) */",
               "a log callback that tunes on another context waits for its own thread's lock",
               ["test_fake_driver"]),
    HostMutant("turn_wait_ignores_destroy", "tuner/tuner_kit.c",
               "    if (atomic_load(&ctx->stopping)) return 0;",
               "    (void)0;",
               "destroy waits for another context's run's wait on another process",
               ["test_tuner_slot"]),
    HostMutant("background_host_rows_from_the_args", "src/background.c",
               "s.cu_seqlens_host = plan->spec.varlen == 2 ? (const void *)(uintptr_t)1 : NULL;",
               "s.cu_seqlens_host = a->cu_seqlens_host ? (const void *)(uintptr_t)1 : NULL;",
               "background tuning tunes host rows for a call that read a table",
               ["test_fake_driver"]),
    HostMutant("lookup_ignores_the_views_alignment", "tuner/tuner_call.c",
               "f->g = (const void *)(uintptr_t)((UINT64_C(1) << 40) + kda__view_offset(a->g));",
               "f->g = (const void *)(uintptr_t)(UINT64_C(1) << 40);",
               "kda_db_lookup and kda_prewarm's skip take the aligned call's row for a view at an offset",
               ["test_db_lookup", "test_tuner_slot"]),
    HostMutant("prewarm_inputs_aligned", "tuner/tuner_api.c",
               "const uintptr_t g_off = kda__view_offset(a->g), out_off = kda__view_offset(a->out);",
               "const uintptr_t g_off = 0, out_off = 0;",
               "kda_prewarm of a view tunes the aligned tensor's key", ["test_tuner_slot"],
               gpu_only="the stand-in driver cannot tune: only a tuning run stores a row",
               gpu_tests=["test_gpu_tuner"]),
    HostMutant("lookup_keeps_a_row_outside_the_space", "src/db_lookup.c",
               "kda__config_parse(rec.config, &c) == 0 && kda__tune_call_has(call, &c)",
               "kda__config_parse(rec.config, &c) == 0",
               "kda_db_lookup says a call uses a row it ignores", ["test_db_lookup"]),
    HostMutant("foreign_stream_unnamed", "src/kernel_launch.c",
               "if (r != CUDA_SUCCESS && stream_of_another_context(ctx, stream))",
               "if (0 && stream_of_another_context(ctx, stream))",
               "a launch on another device's stream reports the driver's code only",
               ["test_fake_driver"]),
    HostMutant("views_merged_in_the_shape_list", "tools/shapes_file.c",
               "(x->chunk_plan != NULL) == (y->chunk_plan != NULL) && x->g == y->g && x->out == y->out;",
               "(x->chunk_plan != NULL) == (y->chunk_plan != NULL);",
               "a view's shape line is dropped as a duplicate of the aligned one",
               ["test_kda_tune_cli"]),
    HostMutant("element_alignment_unchecked", "src/gate_args.c",
               "KDA__REQUIRE((uintptr_t)a->g % (uintptr_t)dtype_size(a->g_dtype) == 0 &&",
               "KDA__REQUIRE(1 ||",
               "a bf16 g at an odd address reaches the kernel (a misaligned access, a lost context)",
               ["test_validation", "test_tuner_slot"]),
    HostMutant("background_view_tuned_aligned", "src/background.c",
               "  s.g = (const void *)kda__view_offset(a->g);",
               "  s.g = NULL;",
               "background tuning of a view tunes the aligned key and installs nothing",
               ["test_tuner_slot"]),
    HostMutant("foreign_stream_found_at_launch_only", "src/context.c",
               "  KDA__TRY(kda__context_check_stream(\n      ctx, stream,",
               "  if (0) KDA__TRY(kda__context_check_stream(\n      ctx, stream,",
               "a cold call on another device's stream compiles and tunes before its launch fails",
               ["test_fake_driver"]),
    HostMutant("lookup_table_heuristic_unfitted", "tuner/tuner_call.c",
               "      f->num_chunks = kda_chunk_indices_capacity(f->seq_len, f->num_seqs, f->chunk_size);",
               "      f->num_chunks = 0;",
               "kda_db_lookup names a table call's heuristic fitted to 0 rows",
               ["test_db_lookup"]),
    HostMutant("lookup_without_offline_heuristic", "src/db_lookup.c",
               "  if (!out->found && out->cubin_stored == 0 &&\n      kda__tune_offline_heuristic(",
               "  if (0 &&\n      kda__tune_offline_heuristic(",
               "kda_db_lookup says compile where a cached call loads the offline heuristic",
               ["test_db_lookup"]),
    HostMutant("build_logs_before_the_entry_is_ready", "src/context.c",
               "  kda__log_hold();\n  const kda_status st = kda__cache_get_cfg(",
               "  const kda_status st = kda__cache_get_cfg(",
               "a log_fn calling the shape being built waits for its own thread",
               ["test_fake_driver"]),
    HostMutant("provenance_not_written", "tuner/store_results.c",
               "  if (rc == SQLITE_OK && with_provenance) {", "  if (0) {",
               "results are stored without where they were tuned",
               ["test_store", "test_db_api"]),
    HostMutant("provenance_columns_never_added", "tuner/store_schema.c",
               "  if (has_provenance(db)) return;\n  if (kda__store_begin_now",
               "  if (1) return;\n  if (kda__store_begin_now",
               "a writable file of before never gets the provenance columns",
               ["test_store", "test_db_api", "test_kda_tune_cli"]),
    HostMutant("import_does_not_name_itself", "src/db_export.c",
               "    snprintf(rec.source, sizeof rec.source, \"import of %s: %s\", file, was);",
               "    snprintf(rec.source, sizeof rec.source, \"%s\", src ? src : \"\");",
               "an imported row reads as tuned here", ["test_db_api", "test_kda_tune_cli"]),
    HostMutant("provenance_dropped_when_busy_at_open", "tuner/store_results.c",
               "  if (no_such_column(db, rc) && kda__store_add_provenance(db) == SQLITE_OK)",
               "  if (0)", "a put on a file opened busy writes rows without provenance",
               ["test_store"]),
    HostMutant("utf8_cut_mid_character", "tuner/store_results.c",
               "    if (k < n || ((unsigned char)text[n] & 0xC0) == 0x80) n = k;",
               "    (void)k;", "an import cuts a character in half: exports are not UTF-8",
               ["test_db_api"]),
    # A lost CUDA context (thirtieth session).
    HostMutant("context_lost_not_named", "src/driver.c",
               "  const int lost = kda__cu_context_lost(r);",
               "  const int lost = 0;",
               "a fault is KDA_ERROR_CUDA: a server cannot tell it must restart",
               ["test_status", "test_lost_context"]),
    HostMutant("illegal_address_not_lost", "src/driver.c",
               "    case CUDA_ERROR_ILLEGAL_ADDRESS:\n", "",
               "the commonest fault is not recognised as a lost context",
               ["test_status", "test_lost_context"]),
    HostMutant("stored_cubin_blamed_for_a_lost_context", "tuner/tuner.c",
               "    if (st == KDA_ERROR_CONTEXT_LOST) return st;\n", "",
               "a warm start on a lost context warns the stored cubin was refused and recompiles",
               ["test_lost_context"]),
    HostMutant("lost_context_recompiles_after_the_batch", "tuner/tuner_run.c",
               "    if (st != KDA_OK && st != KDA_ERROR_CONTEXT_LOST) {",
               "    if (st != KDA_OK) {",
               "a tuning run that lost the context at its load compiles the heuristic again",
               ["test_lost_context"]),
    HostMutant("lost_context_recompiles_after_the_bench", "tuner/tuner_run.c",
               "st != KDA_OK && st != KDA_ERROR_CONTEXT_LOST && r.fns != NULL",
               "st != KDA_OK && r.fns != NULL",
               "a tuning run that lost the context in its bench compiles the heuristic again",
               ["test_lost_context"]),
    HostMutant("verify_goes_on_after_a_lost_context", "tools/kda_tune_gpu.c",
               "  return j->lost; /* nothing after a lost context can run: stop */",
               "  return 0;",
               "kda-tune verify blames every result after the one that faulted",
               ["test_verify_lost_context"]),
    HostMutant("copy_bandwidth_ignores_a_lost_context", "tuner/tuner_copy_bw.c",
               "  if (kda__cu_context_lost(bad)) return", "  if (0) return",
               "a fault met measuring the copy bandwidth lets the run store its winner",
               ["test_lost_context"]),
    HostMutant("load_cubins_blames_every_cubin", "src/db_maint.c",
               "      if (st == KDA_ERROR_CONTEXT_LOST) {", "      if (0) {",
               "kda_db_load_cubins on a lost context reports every cubin refused, and KDA_OK",
               ["test_lost_context"]),
    HostMutant("prewarm_goes_on_after_a_lost_context", "tools/kda_tune_prewarm.c",
               "    if (lost) break;\n", "",
               "kda-tune prewarm lists every shape after the fault as failed",
               ["test_prewarm_lost_context"]),
]


def check():
    return check_anchors(MUTANTS, ROOT, "host mutants")


def sh(cmd, cwd, timeout=900):
    try:
        p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout)
        return p.returncode, p.stdout.decode("utf-8", "replace")
    except subprocess.TimeoutExpired as e:
        return "timeout", (e.stdout or b"").decode("utf-8", "replace")


def ctest(build, tests, jobs, gpu=False):
    regex = "^(%s)$" % "|".join(tests) if tests else None
    cmd = ["ctest", "--test-dir", build, "-j", str(jobs), "--output-on-failure"]
    if not gpu:
        cmd += ["-LE", "gpu"]
    if regex:
        cmd += ["-R", regex]
    return sh(cmd, build)


# ctest names that are scripts, and the build targets they run.
SCRIPT_TARGETS = {"test_kda_tune_cli": ["kda-tune", "make_test_db"],
                  "test_verify_lost_context": ["kda-tune", "make_test_db", "kda_fake_cuda"],
                  "test_prewarm_lost_context": ["kda-tune", "kda_fake_cuda"]}


def targets(tests):
    """The build targets behind a list of ctest names."""
    out = []
    for t in tests:
        for x in SCRIPT_TARGETS.get(t, [t]):
            if x not in out:
                out.append(x)
    return out


def skipped(out):
    """The tests ctest reports skipped ("  3/4 Test  #7: test_gpu_kernels ...***Skipped")."""
    return [l.split(":")[1].split()[0] for l in out.splitlines() if "***Skipped" in l and "Test" in l]


def copy_tree(dest):
    """The project's source files into dest: git's list where ROOT is a
    checkout's top, else everything but build outputs (a copy of the tree
    on a lent GPU machine has no .git of its own)."""
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    if top.returncode == 0 and os.path.realpath(top.stdout.decode().strip()) == os.path.realpath(ROOT):
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                               stdout=subprocess.PIPE, check=True).stdout.decode().split("\n")
        for f in filter(None, files):
            os.makedirs(os.path.dirname(os.path.join(dest, f)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, f), os.path.join(dest, f))
    else:
        def outputs(folder, names):
            top = os.path.realpath(folder) == os.path.realpath(ROOT)
            return [n for n in names if n == "__pycache__" or top and (
                n in (".git", ".deps", ".debs", "mutants-out") or
                n.startswith("build") and os.path.isdir(os.path.join(folder, n)))]
        shutil.copytree(ROOT, dest, dirs_exist_ok=True, symlinks=True, ignore=outputs)


def run(args):
    src = os.path.join(args.work, "src")
    build = os.path.join(args.work, "build-gpu" if args.gpu else "build")
    if not os.path.isdir(build):
        copy_tree(src)
        env_cuda = "/usr/local/cuda/bin"
        os.environ["PATH"] = env_cuda + ":" + os.environ["PATH"]
        kind = ["-DCMAKE_BUILD_TYPE=Release"] if args.gpu else ["-DCMAKE_BUILD_TYPE=Debug", "-DKDA_SANITIZE=ON"]
        rc, out = sh(["cmake", "-B", build, "-S", src, "-DKDA_WERROR=OFF"] + kind, args.work)
        if rc != 0:
            print(out[-3000:])
            return 2
    mutants = MUTANTS
    if args.only:
        wanted = set(args.only.split(","))
        mutants = [m for m in MUTANTS if m.name in wanted]
    elif args.gpu:
        mutants = [m for m in MUTANTS if m.gpu_tests and not m.equivalent]
    else:
        mutants = [m for m in MUTANTS if not m.gpu_only and not m.equivalent]
    for m in mutants:
        m.tests = m.tests + (m.gpu_tests if args.gpu else [])
    tests = sorted({t for m in mutants for t in m.tests})
    # With --gpu only the listed tests are built (and no mutant runs the
    # whole CPU suite): the CPU run covers the rest.
    target = ["--target"] + targets(tests) if args.gpu else []
    rc, out = sh(["cmake", "--build", build, "-j", str(args.jobs)] + target, args.work, timeout=3600)
    if rc != 0:
        print("the unchanged tree does not build:\n" + out[-3000:])
        return 2
    rc, out = ctest(build, tests, args.jobs, args.gpu)
    idle = skipped(out)
    print("control (%s): %s" % (", ".join(tests), "passed" if rc == 0 and not idle else "FAILED"), flush=True)
    if rc != 0 or idle:
        print(out[-3000:])
        if idle:
            print("these tests skipped, so a mutant could not fail them: " + ", ".join(idle))
        return 2
    results = []
    txt = open(os.path.join(args.work, "results.txt"), "w")
    for m in mutants:
        path = os.path.join(src, m.file)
        with open(path) as fh:
            original = fh.read()
        at = occurrences(original, m.old)[m.nth - 1]
        t0 = time.time()
        rec = {"name": m.name, "file": m.file, "why": m.why}
        try:
            with open(path, "w") as fh:
                fh.write(original[:at] + m.new + original[at + len(m.old):])
            rc, out = sh(["cmake", "--build", build, "-j", str(args.jobs), "--target"] + targets(m.tests),
                         args.work)
            if rc != 0:
                rec.update(status="stillborn", evidence=[l for l in out.splitlines() if "error" in l][:2])
            else:
                rc, out = ctest(build, m.tests, args.jobs, args.gpu)
                stage = "listed"
                if rc == 0 and args.full and not args.gpu:
                    rc, out = sh(["cmake", "--build", build, "-j", str(args.jobs)], args.work, 3600)
                    if rc == 0:
                        rc, out = ctest(build, [], args.jobs)
                    stage = "all"
                if rc == 0:
                    rec["status"] = "survived"
                else:
                    # ctest's summary names each failing test: "  5 - test_spec (Failed)".
                    rec.update(status="killed", killed_by=stage,
                               evidence=[l.strip() for l in out.splitlines()
                                         if " - test" in l and "(" in l][:3])
        finally:
            with open(path, "w") as fh:
                fh.write(original)
            os.utime(path, None)
        rec["seconds"] = round(time.time() - t0, 1)
        results.append(rec)
        line = "%-28s %-9s %-7s %6.1f s  %s" % (m.name, rec["status"], rec.get("killed_by", "-"),
                                               rec["seconds"], " | ".join(rec.get("evidence", []))[:120])
        print(line, flush=True)
        txt.write(line + "\n")
        txt.flush()
    counts = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    with open(os.path.join(args.work, "results.json"), "w") as fh:
        json.dump({"counts": counts, "mutants": results}, fh, indent=1)
    print("; ".join("%s %d" % kv for kv in sorted(counts.items())))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["check", "list", "run"])
    ap.add_argument("--work", default="/tmp/kda-host-mutants")
    ap.add_argument("--only", default="")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--no-full", dest="full", action="store_false",
                    help="a mutant that passes its listed tests is not run against every CPU test")
    ap.add_argument("--gpu", action="store_true",
                    help="on a GPU: the mutants that name GPU tests, against their CPU and GPU tests "
                         "(Release build)")
    args = ap.parse_args()
    if args.command == "check":
        return check()
    if args.command == "list":
        for m in MUTANTS:
            gpu = "GPU only" if m.gpu_only else "GPU too" if m.gpu_tests else ""
            print("%-28s %-22s %s%s" % (m.name, m.file, m.why,
                                        " (%s: %s)" % (gpu, ", ".join(m.gpu_tests)) if gpu else ""))
        return 0
    if check():
        return 2
    args.work = os.path.abspath(args.work)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
