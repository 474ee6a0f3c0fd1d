#!/usr/bin/env python3
"""Mutation testing of the kernel templates: do the GPU tests fail when a
kernel is wrong?

Each mutant below is one plausible bug, written as a replacement of one
exact piece of a template (kernel_templates/). `run` copies the templates,
applies one mutant, and runs GPU tests on the copy through KDA_KERNEL_DIR
(no rebuild: the library compiles what it reads there) until one fails.
A mutant no test fails on "survived": either a test is missing, or the
mutant changes nothing a caller can observe, which its entry must then
say (`equivalent`).

  kernel_mutants.py check               every anchor occurs as its entry
                                        says (no GPU; a ctest test)
  kernel_mutants.py list
  kernel_mutants.py run --build DIR --out DIR [--jobs N] [--only a,b]
                        [--seed S] [--cases N]

`run` first runs every stage on the unchanged templates (the control),
which must pass: otherwise a "killed" would mean nothing. It writes
OUT/results.json, OUT/results.txt and one log per mutant.
"""
import argparse
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = os.path.join(HERE, "..", "..", "kernel_templates")


class Mutant:
    def __init__(self, name, file, old, new, why, nth=1, occurs=1, stages=None, equivalent=None):
        self.name, self.file, self.old, self.new, self.why = name, file, old, new, why
        # `old` occurs exactly `occurs` times in the file (check() demands
        # it, so that an edit elsewhere cannot silently move the mutant);
        # the mutant changes occurrence `nth` (1-based).
        self.nth, self.occurs = nth, occurs
        self.stages = stages
        self.equivalent = equivalent  # why no caller can observe it, if so


G, C, I, T = "gate_cumsum.cu", "kda_common.cuh", "chunk_indices.cu", "tune_compare.cuh"

MUTANTS = [
    # --- the gate's arithmetic -------------------------------------------
    Mutant("dt_bias_within_head", G, "bias[j] = dt_bias[c + j];",
           "bias[j] = dt_bias[(c + j) % K];", "dt_bias indexed by k, not h*K+k"),
    Mutant("alog_wrong_head", G, "expf(A_log[c / K])", "expf(A_log[c % H])",
           "A_log of another head (one head per thread)"),
    Mutant("alog_first_channel_head", G, "expf(A_log[(c + j) / K])", "expf(A_log[c / K])",
           "when K % VEC != 0, every channel of a thread takes its first channel's head"),
    Mutant("bias_not_in_base2", G, "in_add[j] = bias[j] * m;", "in_add[j] = bias[j];",
           "the bias added after the base-2 scaling, not before"),
    Mutant("sigmoid_without_alog", G, "GATE == GATE_LOWER_BOUND ? a_exp[j] * KDA_LOG2E",
           "GATE == GATE_LOWER_BOUND ? KDA_LOG2E", "the sigmoid's exp(A_log) factor lost"),
    Mutant("lower_bound_halved", G, "GATE == GATE_LOWER_BOUND ? lower_bound : 1.0f",
           "GATE == GATE_LOWER_BOUND ? lower_bound * 0.5f : 1.0f", "the lower bound misapplied"),
    Mutant("softplus_factor_sign", G, "-a_exp[j] * KDA_LN2", "a_exp[j] * KDA_LN2",
           "softplus gate with the wrong sign"),
    Mutant("scale_dropped_gate", G, "post[j] = HAS_SCALE && !WIDE ? p * scale : p;",
           "post[j] = p;", "the scale ignored by the gate kernels"),
    Mutant("scale_dropped_plain", G, "const double sc = HAS_SCALE ? (double)scale : 1.0;",
           "const double sc = 1.0;", "the scale ignored by the plain cumsum"),
    Mutant("scale_twice_plain", G, "post[j] = HAS_SCALE && !WIDE ? p * scale : p;",
           "post[j] = HAS_SCALE ? p * scale : p;", "the plain cumsum scaled twice"),
    Mutant("plain_sums_in_float", G, "typedef typename pick<WIDE, double, float>::type acc_t;",
           "typedef float acc_t;", "the plain cumsum back to fp32 sums (before b1cd61a)"),
    Mutant("softplus_relu_term", C, "return fmaf(e, log2_1p_ratio(e), fmaxf(y, 0.0f));",
           "return fmaf(e, log2_1p_ratio(e), fmaxf(-y, 0.0f));", "softplus's max(y, 0) of -y"),
    Mutant("softplus_coefficient", C, "p = fmaf(p, e, 4.800124466e-01f);",
           "p = fmaf(p, e, 4.900124466e-01f);", "one coefficient of log2(1+e)/e off by 0.01"),
    Mutant("softplus_exp_sign", C, "const float e = exp2_ftz(-fabsf(y));",
           "const float e = exp2_ftz(fabsf(y));", "2^|y| in place of 2^-|y|"),
    Mutant("sigmoid_exp_sign", C, "1.0f + exp2_ftz(-y)", "1.0f + exp2_ftz(y)",
           "sigmoid(-z) in place of sigmoid(z)"),
    Mutant("bf16_in_shift", C, "((unsigned)v) << 16", "((unsigned)v) << 15",
           "bf16 widened wrongly"),
    Mutant("bf16_out_truncates", C, "cvt.rn.bf16.f32", "cvt.rz.bf16.f32",
           "bf16 output rounded toward zero, not to nearest"),
    Mutant("f16_in_as_bf16", C, 'asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v));',
           "f = __uint_as_float(((unsigned)v) << 16);", "f16 input read as bf16"),
    # --- the cumsum -------------------------------------------------------
    Mutant("reverse_ignored_in_segment", G, "const int i = REVERSE ? L - 1 - ii : ii;",
           "const int i = ii;", "a segment's rows summed forward in a reverse cumsum", occurs=2),
    Mutant("reverse_ignored_plain", G, "const int i = REVERSE ? L - 1 - ii : ii;",
           "const int i = ii;", "the plain cumsum's rows summed forward in reverse", nth=2, occurs=2),
    Mutant("reverse_tail_not_masked", G, "constexpr bool MASK_TAIL = CUMSUM && REVERSE;",
           "constexpr bool MASK_TAIL = false;",
           "a reverse sum takes the repeated rows past a partial chunk's end"),
    Mutant("segment_offsets_dropped", G, "v[i][j] += float(offset[j]);", "v[i][j] += 0.0f;",
           "the earlier segments' totals not added (fp32 sums)"),
    Mutant("form0_includes_own", G, "if ((REVERSE ? q > s : q < s) && q >= cb && q < ce)",
           "if ((REVERSE ? q >= s : q <= s) && q >= cb && q < ce)",
           "form 0 adds the thread's own segment total"),
    Mutant("form0_ignores_chunk_start", G,
           "if ((REVERSE ? q > s : q < s) && q >= cb && q < ce)",
           "if ((REVERSE ? q > s : q < s) && q < ce)",
           "form 0 adds totals of an earlier chunk packed in the block"),
    Mutant("form1_includes_own", G, "if ((REVERSE ? q > me : q < me) && q >= lo && q < hi)",
           "if ((REVERSE ? q >= me : q <= me) && q >= lo && q < hi)",
           "forms 1 and 3 add the thread's own total"),
    Mutant("form1_ignores_chunk_end", G,
           "if ((REVERSE ? q > me : q < me) && q >= lo && q < hi)",
           "if ((REVERSE ? q > me : q < me) && q >= lo)",
           "a reverse sum adds totals of a later chunk packed in the block"),
    Mutant("form2_inclusive", G,
           "totals[(REVERSE ? SEG - 1 - q0 - b : q0 + b) * CW + col] = run;\n"
           "          run += t[b];",
           "run += t[b];\n"
           "          totals[(REVERSE ? SEG - 1 - q0 - b : q0 + b) * CW + col] = run;",
           "form 2's column scan inclusive, not exclusive"),
    Mutant("form2_no_barrier", G,
           "    __syncthreads();\n    const vec<T, VEC> got = totals_v[s * TX + tx];",
           "    const vec<T, VEC> got = totals_v[s * TX + tx];",
           "form 2 reads its offsets before the scan has finished (a race)"),
    Mutant("form3_exclusive_as_inclusive", G,
           "offset[j] = (REVERSE ? sl + 1 < W : sl >= 1) ? t : T(0);",
           "offset[j] = (REVERSE ? sl + 1 < W : sl >= 1) ? t : incl[j];",
           "form 3: a warp's first segment takes its own total"),
    Mutant("form3_scan_step", G, "if (REVERSE ? sl + d < W : sl >= d) incl[j] += t;",
           "if (REVERSE ? sl + d < W : sl > d) incl[j] += t;", "form 3's shuffle scan drops a step"),
    Mutant("form3_warp_total_lane", G, "if (sl == (REVERSE ? 0 : W - 1))",
           "if (sl == (REVERSE ? W - 1 : 0))", "form 3 shares a warp's first, not last, sum"),
    Mutant("segmented_form2", G, "static constexpr int value = SEGMENTED                                               ? (VEC % 4 != 0 ? 0 : 1)",
           "static constexpr int value = SEGMENTED                                               ? 2",
           "packed blocks (modes 2, 3) take form 2, which ignores chunk bounds"),
    Mutant("pdl_wait_removed", C, 'asm volatile("griddepcontrol.wait;" ::: "memory");', "",
           "kernels read before the kernel ahead of them has finished (tools/gpu_check.sh's overlap mutant)"),
    # --- where a block reads and writes -----------------------------------
    Mutant("dense_batch_ignored", G, "row0 = b * T + t0;", "row0 = t0;",
           "every sequence of a dense batch at the first's rows"),
    Mutant("dense_last_chunk_full", G,
           "const long long left = T - t0;\n    len = left > BT ? BT : (int)left;",
           "const long long left = T - t0;\n    len = BT;",
           "a dense partial last chunk written to BT rows"),
    Mutant("cvalid_always", G, "const bool cvalid = HK % CHANNELS_PER_BLOCK == 0 || c < HK;",
           "const bool cvalid = true;", "threads past H*K read and write"),
    Mutant("tail_loads_unclamped", G, "const int rr = r < len ? r : len - 1;",
           "const int rr = r;", "rows past a chunk's end loaded (out of bounds at the end)"),
    Mutant("varlen_start_unclamped", G, "bos = bos < 0 ? 0 : (bos > T ? T : bos);",
           "bos = bos < 0 ? 0 : bos;", "a table sequence starting past T not clamped"),
    Mutant("varlen_end_unclamped", G, "eos = eos > T ? T : eos;", "eos = eos;",
           "a table sequence ending past T not clamped"),
    Mutant("varlen_count_ignored", G, "const bool skip = n >= count || seq < 0",
           "const bool skip = seq < 0", "rows past a device table's count are used"),
    Mutant("varlen_bad_seq_used", G, "|| seq >= num_seqs;", ";",
           "a table row naming a sequence past the batch is used"),
    Mutant("varlen_few_threshold", G, "const bool few = num_seqs < LANES;",
           "const bool few = num_seqs <= LANES;",
           "a batch of exactly LANES sequences takes the shuffle path (its last bound unloaded)"),
    Mutant("varlen_few_last_bound", G, "if (few && lane <= num_seqs) bound = cu_seqlens[lane];",
           "if (few && lane < num_seqs) bound = cu_seqlens[lane];",
           "the shuffle path does not load the batch's last bound"),
    Mutant("varlen_few_end", G, "bound, src + 1);", "bound, src);",
           "the shuffle path's sequence end taken from its start"),
    Mutant("varlen_chunk_stride", G, "row0 = bos + (long long)chunk * BT;",
           "row0 = bos + (long long)chunk * (BT - 1);", "a chunk's first row off"),
    Mutant("rows_granule_mask", G, "const unsigned upto = starts & ((2u << (s / SPG)) - 1u);",
           "const unsigned upto = starts & ((1u << (s / SPG)) - 1u);",
           "launch rows: a granule's own chunk start not counted"),
    Mutant("rows_len_off_by_one", G, "const int l = (int)(e & 255u) + 1 + seg_lo * L;",
           "const int l = (int)(e & 255u) + seg_lo * L;", "launch rows: a chunk one row short"),
    Mutant("rows_later_chunk", G, "seg_hi = (later != 0u ? __ffs(later) - 1 : NG) * SPG;",
           "seg_hi = NG * SPG;", "launch rows: a chunk's segments run into the next chunk's"),
    Mutant("plan_rows_granule", G, "g0 = g0 > q ? q : g0;", "g0 = q;",
           "a chunk plan's segment takes its granule, not its chunk, as the start"),
    Mutant("plan_g0_unclamped", G, "g0 = g0 > q ? q : g0;", "",
           "a damaged plan's first granule past the thread's moves its rows before row 0"),
    Mutant("plan_len_unclamped", G, "const int clen = left < (long long)l ? (int)left : l;",
           "const int clen = l;", "a chunk plan's rows not clamped to T"),
    Mutant("pair_halves_swapped", G, "first.v[j] = odd ? got : a;", "first.v[j] = odd ? a : got;",
           "paired fp32 stores: the odd lane keeps its own first half"),
    Mutant("pair_odd_offset", G, "row + (odd ? -4 : 0)", "row + (odd ? 4 : 0)",
           "paired fp32 stores: the odd lane's first store misplaced"),
    Mutant("load8_words_swapped", C,
           '"ld.global.cs.v2.u32 {%0, %1}, [%2];" : "=r"(u[0]), "=r"(u[1])',
           '"ld.global.cs.v2.u32 {%0, %1}, [%2];" : "=r"(u[1]), "=r"(u[0])',
           "8-byte loads with their words swapped"),
    Mutant("store4_dropped", C,
           'asm volatile("st.global.cs.u32 [%0], %1;" :: "l"(p), "r"(u[0]) : "memory");', "",
           "4-byte stores dropped"),
    # --- the chunk table's builder ----------------------------------------
    Mutant("table_chunks_floor", I, "if (b > a) nc = (b - a + BT - 1) / BT;",
           "if (b > a) nc = (b - a) / BT;", "a sequence's partial last chunk not counted"),
    Mutant("table_start_unclamped", I,
           "a = a < 0 ? 0 : (a > total_tokens ? total_tokens : a);", "a = a < 0 ? 0 : a;",
           "the table's sequence start not clamped to T",
           equivalent="a start past T meets an end clamped to T: b <= a, no rows either way "
                      "(the clamp keeps the code to kda.h's model of a sequence)"),
    Mutant("table_warp_scan", I, "if (lane >= d) incl += y;", "if (lane > d) incl += y;",
           "the table's warp scan drops a step", occurs=2),
    Mutant("table_warp_totals", I, "if (lane < NW) warp_sums[lane] = x - w;",
           "if (lane < NW) warp_sums[lane] = x;", "the table's warp offsets inclusive", occurs=2),
    Mutant("table_search", I, "if (offs[mid] <= e) lo = mid; else hi = mid - 1;",
           "if (offs[mid] < e) lo = mid; else hi = mid - 1;",
           "a row's sequence: the first, not the last, sequence with its offset", occurs=2),
    Mutant("plan_warp_scan", I, "if (lane >= d) incl += y;", "if (lane > d) incl += y;",
           "the plan's warp scan of whole chunks drops a step", nth=2, occurs=2),
    Mutant("plan_search", I, "if (offs[mid] <= e) lo = mid; else hi = mid - 1;",
           "if (offs[mid] < e) lo = mid; else hi = mid - 1;",
           "a whole chunk's sequence in a plan: the first with its offset", nth=2, occurs=2),
    Mutant("table_tiles_restart", I, "const long long pos = carry + e;",
           "const long long pos = e;", "each tile of THREADS sequences writes from row 0"),
    Mutant("table_fill_zero", I, "out[2 * p] = -1;", "out[2 * p] = 0;",
           "rows past the count name sequence 0, not -1"),
    Mutant("table_count_unclamped", I, "if (tid == 0) *count = (int)(carry < capacity ? carry : capacity);",
           "if (tid == 0) *count = (int)carry;", "the device count past the table's capacity"),
    # --- the chunk plan's builder -----------------------------------------
    Mutant("plan_granules_floor", I, "k = nc > 0 ? (int)((last + G - 1) / G) : 0;",
           "k = nc > 0 ? (int)(last / G) : 0;", "a short chunk's granules rounded down"),
    Mutant("plan_fill_short", I, "while (c[k] - r.m[k] > 0 && fill + k <= NG)",
           "while (c[k] - r.m[k] > 0 && fill + k < NG)", "a slot's pattern never fills the slot"),
    Mutant("plan_last_granule", I, "const int g1 = smallest == k && j == run.m[k] - 1 ? NG : g0 + k;",
           "const int g1 = g0 + k;", "a slot's last chunk does not take the slot's free granules"),
    Mutant("plan_whole_rows", I, "r0, left < BT ? left : BT);", "r0, BT);",
           "a whole chunk's rows not clamped to its sequence"),
    Mutant("plan_unused_kept", I,
           "for (long long p = first_unused * NG + tid; p < capacity * NG; p += THREADS)",
           "for (long long p = capacity * NG + tid; p < capacity * NG; p += THREADS)",
           "a rebuilt plan keeps the previous batch's slots past its own"),
    Mutant("plan_rank_carry", I, "for (int w = 0; w < NW; ++w) rank_carry[tid] += size_in_warp[tid][w];",
           "", "short chunks ranked within their tile only"),
    # --- the tuner's comparison -------------------------------------------
    Mutant("compare_tolerance_ignored", T, "if (!(e <= tol)) ++bad;",
           "if (!(e <= tol * 1e6f)) ++bad;", "the tuner accepts a candidate far off the reference",
           stages=["tuner"]),
    Mutant("compare_unwritten_ignored", T, "++unwritten;\n      continue;", "continue;",
           "the tuner accepts a candidate that leaves elements unwritten", stages=["tuner"]),
    Mutant("compare_seen_dropped", T, "    ++seen;\n", "",
           "the comparison does not count what it visited (the tuner must stop, not trust it)",
           stages=["tuner"]),
    Mutant("compare_half_warp", T, "for (int d = 16; d > 0; d >>= 1)",
           "for (int d = 8; d > 0; d >>= 1)",
           "the comparison's warp sums miss half of each warp's counts", stages=["tuner"]),
]


def occurrences(text, old):
    return [m.start() for m in re.finditer(re.escape(old), text)]


def copy_templates(src_dir, dst_dir):
    for f in os.listdir(src_dir):
        shutil.copy(os.path.join(src_dir, f), os.path.join(dst_dir, f))


def apply(mutant, src_dir, dst_dir):
    """Copies src_dir's templates into dst_dir with the mutant applied."""
    copy_templates(src_dir, dst_dir)
    path = os.path.join(dst_dir, mutant.file)
    with open(path) as fh:
        text = fh.read()
    at = occurrences(text, mutant.old)
    if len(at) < mutant.nth:
        raise ValueError("%s: '%s' occurs %d times in %s, needs occurrence %d"
                         % (mutant.name, mutant.old[:60], len(at), mutant.file, mutant.nth))
    i = at[mutant.nth - 1]
    with open(path, "w") as fh:
        fh.write(text[:i] + mutant.new + text[i + len(mutant.old):])


def check(mutants, base=TEMPLATES, what="mutants"):
    """Every mutant's anchor occurs as its entry says in base/file; names
    are unique. Returns 1 when one does not (printing it), else 0."""
    bad = 0
    names = set()
    for m in mutants:
        if m.name in names:
            print("duplicate mutant name", m.name)
            bad += 1
        names.add(m.name)
        with open(os.path.join(base, m.file)) as fh:
            text = fh.read()
        n = len(occurrences(text, m.old))
        if n != m.occurs or not 1 <= m.nth <= m.occurs or m.old == m.new:
            print("%s: anchor occurs %d times in %s, not %d: %r" % (m.name, n, m.file, m.occurs, m.old[:80]))
            bad += 1
    print("%d %s, %d with a broken anchor" % (len(mutants), what, bad))
    return 1 if bad else 0


# Stages: name -> (test binary under BUILD/tests, extra environment[,
# command ahead of it]). A mutant runs them in this order until one fails;
# its `stages` (or --stages) replace the list.
SANITIZER = os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "compute-sanitizer")


def stage_table(seed, cases):
    return {
        "bad_seqlens": ("test_gpu_bad_seqlens", {"KDA_TUNE": "off"}),
        "random": ("test_gpu_random", {"KDA_TUNE": "off", "KDA_TEST_SEED": str(seed),
                                       "KDA_TEST_RANDOM_CASES": str(cases)}),
        "kernels": ("test_gpu_kernels", {"KDA_TUNE": "off"}),
        "overlap": ("test_gpu_overlap", {}),
        "tuner": ("test_gpu_tuner", {}),
        # Last: an access out of bounds that changes no checked value (a
        # read past a buffer's end) shows only here, as in tools/gpu_check.sh.
        "memcheck": ("test_gpu_random", {"KDA_TUNE": "off", "KDA_TEST_SEED": str(seed),
                                         "KDA_TEST_RANDOM_CASES": "48"},
                     [SANITIZER, "--tool", "memcheck", "--error-exitcode", "9"]),
        # No GPU needed: every specialization of the NVRTC matrix compiles.
        # `run --stages compile` finds mutants that are typos, not bugs.
        "compile": ("test_nvrtc_matrix", {}),
    }


DEFAULT_STAGES = ["bad_seqlens", "random", "kernels", "overlap", "memcheck"]
# What a failing log says, for the summary (first match).
EVIDENCE = re.compile(r"out of budget|unwritten|stray|mismatch|KDA_ERROR_\w+|FAILED|Assertion|"
                      r"error:|timed out", re.I)


def run_one(mutant, args, table):
    """Runs a mutant's stages; returns its result record."""
    work = tempfile.mkdtemp(prefix="kda-mutant-")
    kdir = os.path.join(work, "kernels")
    os.mkdir(kdir)
    rec = {"name": mutant.name, "file": mutant.file, "why": mutant.why, "stages": []}
    if args.deadline and time.time() > args.deadline:
        rec["status"] = "not run"  # past --deadline: a later run takes it (--only)
        return rec
    if mutant.name != "control":
        apply(mutant, TEMPLATES, kdir)
    else:
        copy_templates(TEMPLATES, kdir)
    log_path = os.path.join(args.out, mutant.name + ".log")
    t0 = time.time()
    status = "survived"
    with open(log_path, "w") as log:
        for stage in args.stages.split(",") if args.stages else mutant.stages or DEFAULT_STAGES:
            binary, extra = table[stage][:2]
            prefix = table[stage][2] if len(table[stage]) > 2 else []
            env = dict(os.environ, KDA_KERNEL_DIR=kdir, HOME=work, TMPDIR=work, **extra)
            log.write("=== stage %s (%s) ===\n" % (stage, binary))
            log.flush()
            s0 = time.time()
            try:
                p = subprocess.run(prefix + [os.path.join(args.build, "tests", binary)], env=env, cwd=work,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   timeout=args.timeout)
                rc, text = p.returncode, p.stdout.decode("utf-8", "replace")
            except subprocess.TimeoutExpired as e:
                rc, text = "timeout", (e.stdout or b"").decode("utf-8", "replace") + "\ntimed out\n"
            log.write(text)
            log.write("=== stage %s: rc %s, %.1f s ===\n" % (stage, rc, time.time() - s0))
            rec["stages"].append({"stage": stage, "rc": rc, "s": round(time.time() - s0, 1)})
            if rc == 77:
                status = "skipped"  # no GPU: nothing was tested
                break
            if rc != 0:
                # A template that no longer compiles is a typo in the mutant,
                # not a bug a test found.
                compile_error = "KDA_ERROR_COMPILE" in text or "NVRTC compilation failed" in text
                # A timeout may be a hang the mutant caused or a slow stage:
                # its own status, for a look at the log.
                status = ("stillborn" if stage == "compile" or compile_error
                          else "timeout" if rc == "timeout" else "killed")
                rec["killed_by"] = stage
                rec["evidence"] = [l.strip() for l in text.splitlines() if EVIDENCE.search(l)][:3]
                break
    rec["status"] = status
    rec["seconds"] = round(time.time() - t0, 1)
    if mutant.equivalent:
        rec["equivalent"] = mutant.equivalent
    shutil.rmtree(work, ignore_errors=True)
    return rec


def run(mutants, args):
    os.makedirs(args.out, exist_ok=True)
    table = stage_table(args.seed, args.cases)
    if args.only:
        wanted = set(args.only.split(","))
        mutants = [m for m in mutants if m.name in wanted]
        missing = wanted - {m.name for m in mutants}
        if missing:
            print("no such mutant:", ", ".join(sorted(missing)))
            return 2
    elif not args.all:
        # An equivalent mutant survives by design: its entry says why.
        mutants = [m for m in mutants if not m.equivalent]
    all_stages = args.stages.split(",") if args.stages else sorted(
        {s for m in mutants for s in (m.stages or DEFAULT_STAGES)}, key=lambda s: list(table).index(s))
    unknown = [s for s in all_stages if s not in table]
    if unknown:
        print("no such stage:", ", ".join(unknown))
        return 2
    # The control runs beside the mutants (device time is scarce), and the
    # run counts for nothing unless it passed.
    control_m = Mutant("control", G, "", "", "the templates unchanged", stages=all_stages)
    results, control = [], None
    with open(os.path.join(args.out, "results.txt"), "w") as txt, \
            concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_one, m, args, table) for m in [control_m] + mutants]
        for f in concurrent.futures.as_completed(futures):
            rec = f.result()
            if rec["name"] == "control":
                control = rec
                line = "control (%s): %s in %.0f s" % (
                    ",".join(all_stages), "passed" if rec["status"] == "survived" else rec["status"],
                    rec.get("seconds", 0))
            else:
                results.append(rec)
                line = "%-30s %-9s %-12s %6.1f s  %s" % (
                    rec["name"], rec["status"], rec.get("killed_by", "-"), rec.get("seconds", 0),
                    " | ".join(rec.get("evidence", [])[:1])[:110])
            print(line, flush=True)
            txt.write(line + "\n")
            txt.flush()
    order = {m.name: i for i, m in enumerate(mutants)}
    results.sort(key=lambda r: order[r["name"]])
    counts = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    valid = control["status"] == "survived"
    summary = {"seed": args.seed, "cases": args.cases, "valid": valid, "control": control,
               "counts": counts, "mutants": results}
    with open(os.path.join(args.out, "results.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    print("; ".join("%s %d" % kv for kv in sorted(counts.items())))
    if not valid:
        print("the unchanged templates did not pass: no mutant result means anything")
        return 2
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["check", "list", "run"])
    ap.add_argument("--build", default="build/release")
    ap.add_argument("--out", default="mutants-out")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated mutant names")
    ap.add_argument("--all", action="store_true", help="equivalent mutants too")
    ap.add_argument("--seed", type=int, default=20261129)
    ap.add_argument("--cases", type=int, default=256)
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--stages", default="", help="comma-separated stages for every mutant")
    ap.add_argument("--minutes", type=float, default=0,
                    help="start no mutant after this many minutes (0: no limit)")
    args = ap.parse_args()
    if args.command == "check":
        return check(MUTANTS)
    if args.command == "list":
        for m in MUTANTS:
            print("%-30s %-18s %s%s" % (m.name, m.file, m.why,
                                        " (equivalent: %s)" % m.equivalent if m.equivalent else ""))
        return 0
    if check(MUTANTS):
        return 2
    args.build, args.out = os.path.abspath(args.build), os.path.abspath(args.out)
    args.deadline = time.time() + 60 * args.minutes if args.minutes else 0
    return run(MUTANTS, args)


if __name__ == "__main__":
    sys.exit(main())
