"""libkda's fused gate + chunk cumsum against a Triton kernel, side by side
on one GPU, in one process, with the same timing method as kda-bench.

    KDA_LIBRARY=build-gpu/libkda.so KDA_CACHE_DIR=<dir with a prewarmed tune.db> \\
        PYTHONPATH=python python3 python/bench_vs_triton.py [--json PATH] [--rows N]

The Triton kernel is written here after the structure of flash-linear-
attention's kda_gate_chunk_cumsum_vector_kernel (one program per [64, BS]
tile of one head and chunk, autotuned over BS in {32, 64} and 2, 4 or 8
warps, keyed by H, K and varlen; a varlen program reads its table row, then
its sequence's bounds), with a softplus of fast base-2 units like upstream's
(ex2, add, lg2, here scaled to the natural softplus). It is not upstream's
code: its timings show what a Triton kernel of that design reaches on the
card and VM at hand, beside the issue's fixed figures for the original.

Both kernels are checked against a float64 reference (every element within
2e-5 * (1 + |ref|)) on random inputs before anything is timed. Steady state
as in kda-bench: 64 calls captured in one CUDA graph, rotating over enough
input/output sets that a replay streams more than 2.5x L2; the two graphs
of a row are replayed in turn, 15 rounds, and the median per call is
reported with the share of the measured copy bandwidth (a 1 GiB device
copy, bytes read plus written). libkda runs with the tuning database of
KDA_CACHE_DIR (run `kda-tune prewarm` for these shapes first, in another
process, as a deployment does; see docs/PERFORMANCE.md).
"""

import argparse
import datetime
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

import kda  # noqa: E402
from kda import _capi as C  # noqa: E402
from kda import _ops  # noqa: E402

GRAPH_LAUNCHES = 64
REPLAYS = 15
K = 128
CHUNK = 64

# The issue's figures for the Triton original (H100 80GB HBM3, steady state).
ISSUE_TRITON_US = {
    (512, 32): 7.11, (512, 16): 5.18, (512, 8): 3.99, (512, 4): 3.25,
    (2048, 32): 20.97, (2048, 16): 12.00, (2048, 8): 6.97, (2048, 4): 5.17,
    (8192, 32): 76.14, (8192, 16): 39.71, (8192, 8): 22.05, (8192, 4): 12.69,
    (32768, 32): 296.74, (32768, 16): 150.25, (32768, 8): 79.93, (32768, 4): 42.26,
}

# A deployment's state: every row's winner loaded from the database, nothing
# compiled or tuned in this process.
STATS_SHOWN = ("tuning_runs", "nvrtc_compiles", "db_result_hits", "db_cubin_hits")


@triton.autotune(
    configs=[triton.Config({"BS": bs}, num_warps=w) for bs in (32, 64) for w in (2, 4, 8)],
    key=["H", "S", "VARLEN"],
)
@triton.jit(do_not_specialize=["T"])
def _triton_gate_cumsum(g, A_log, dt_bias, out, cu_seqlens, chunk_indices, T, H: tl.constexpr,
                        S: tl.constexpr, BT: tl.constexpr, BS: tl.constexpr,
                        VARLEN: tl.constexpr):
    ns = tl.cdiv(S, BS)
    pid = tl.program_id(0).to(tl.int64)
    tile_s = pid % ns
    chunk = pid // ns
    head_row = tl.program_id(1).to(tl.int64)
    b = head_row // H
    h = head_row % H
    if VARLEN:
        seq = tl.load(chunk_indices + chunk * 2).to(tl.int64)
        chunk = tl.load(chunk_indices + chunk * 2 + 1).to(tl.int64)
        start = tl.load(cu_seqlens + seq).to(tl.int64)
        T = tl.load(cu_seqlens + seq + 1).to(tl.int64) - start
    else:
        start = b * T
    rows = chunk * BT + tl.arange(0, BT)
    cols = tile_s * BS + tl.arange(0, BS)
    mask = (rows[:, None] < T) & (cols[None, :] < S)
    offs = (start * H + h) * S + rows[:, None] * (H * S) + cols[None, :]
    x = tl.load(g + offs, mask=mask, other=0.0).to(tl.float32)
    x = x + tl.load(dt_bias + h * S + cols, mask=cols < S, other=0.0)[None, :]
    # softplus(x) = ln2 * log2(1 + 2^(x * log2 e)), linear past 15 * ln2.
    y2 = x * 1.4426950408889634
    sp = tl.where(y2 > 15.0, x, 0.6931471805599453 * tl.math.log2(1.0 + tl.math.exp2(y2)))
    a = tl.exp(tl.load(A_log + h))
    y = tl.cumsum(-a * sp, axis=0)
    tl.store(out + offs, y, mask=mask)


def triton_call(g, A_log, dt_bias, out, B, T, H, cu=None, table=None):
    nchunks = triton.cdiv(T, CHUNK) if table is None else table.shape[0]

    def grid(meta):
        return (triton.cdiv(K, meta["BS"]) * nchunks, B * H)

    _triton_gate_cumsum[grid](g, A_log, dt_bias, out, cu if cu is not None else g,
                              table if table is not None else g, T, H=H, S=K, BT=CHUNK,
                              VARLEN=table is not None)


def ragged_lengths(total, nseq):
    """kda-bench's ragged batch (tools/bench_rows.c, bench_row_lengths):
    weights 3 17 5 11 1 13 7 7 over the sequences, neighbours moved 13
    tokens apart so that no length is a multiple of the chunk."""
    w = (3, 17, 5, 11, 1, 13, 7, 7)
    per = 8 * nseq
    cu = [0]
    for i in range(nseq):
        if i == nseq - 1:
            n = total - cu[-1]
        else:
            base = total * w[i % 8] // per
            even = total * w[(i - 1) % 8] // per if i % 2 else base
            shift = min(even // 2, 13)
            n = max(1, base + (shift if i % 2 else -shift))
        cu.append(cu[-1] + n)
    return cu


def chunk_table(cu):
    rows = []
    for s in range(len(cu) - 1):
        for c in range(triton.cdiv(cu[s + 1] - cu[s], CHUNK)):
            rows.append((s, c))
    return rows


def reference(g, A_log, dt_bias, cu):
    """float64 gate + chunk-local cumsum; cu: sequence bounds (dense: every
    batch row is one sequence of g's rows)."""
    B, T, H, _ = g.shape
    x = g.double().reshape(B * T, H, K) + dt_bias.double().view(H, K)
    y = -torch.exp(A_log.double()).view(H, 1) * torch.nn.functional.softplus(x)
    ref = torch.empty_like(y)
    for s in range(len(cu) - 1):
        a, e = cu[s], cu[s + 1]
        n = e - a
        if n == 0:
            continue
        pad = triton.cdiv(n, CHUNK) * CHUNK
        seg = torch.zeros(pad, H, K, dtype=torch.float64, device=g.device)
        seg[:n] = y[a:e]
        ref[a:e] = seg.view(-1, CHUNK, H, K).cumsum(1).view(pad, H, K)[:n]
    return ref.view(B, T, H, K)


def check(name, got, ref):
    err = (got.double() - ref).abs()
    bound = 2e-5 * (1 + ref.abs())
    bad = int((err > bound).sum())
    worst = float((err / (1 + ref.abs())).max())
    if bad:
        print("  %s: %d of %d elements outside 2e-5 * (1 + |ref|) (worst %.3g)" %
              (name, bad, got.numel(), worst))
    return bad, worst


def copy_bandwidth():
    n = 1 << 29  # 1 GiB of bf16
    src = torch.empty(n, dtype=torch.bfloat16, device="cuda").normal_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(REPLAYS):
        e0.record()
        dst.copy_(src)
        e1.record()
        e1.synchronize()
        ts.append(e0.elapsed_time(e1) / 1e3)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * (n * 2) / statistics.median(ts) / 1e9


def capture(launches):
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(GRAPH_LAUNCHES):
            launches[i % len(launches)]()
    graph.replay()
    torch.cuda.synchronize()
    return graph


def time_graphs(graphs):
    """Median per call of each graph, the graphs replayed in turn."""
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = [[] for _ in graphs]
    for _ in range(REPLAYS):
        for k, gr in enumerate(graphs):
            e0.record()
            gr.replay()
            e1.record()
            e1.synchronize()
            ts[k].append(e0.elapsed_time(e1) * 1e3 / GRAPH_LAUNCHES)
    return [statistics.median(t) for t in ts]


class Row:
    """One shape's inputs and outputs (enough sets to rotate over), and the
    launches of each kernel on each set; checked against float64."""

    def __init__(self, T, H, nseq, l2_bytes, with_triton=True):
        B = 1
        self.T, self.H, self.nseq = T, H, nseq
        self.n = n = B * T * H * K
        cu = ragged_lengths(T, nseq) if nseq else [0, T]
        dev = torch.device("cuda")
        nsets = min(GRAPH_LAUNCHES, int(2.5 * l2_bytes / (6 * n)) + 1)
        torch.manual_seed(T * 131 + H * 7 + nseq)
        self.A_log = A_log = torch.empty(H, device=dev).uniform_(1, 16).log()
        self.dt_bias = dt_bias = torch.randn(H * K, device=dev)
        self.gs = gs = [torch.randn(B, T, H, K, device=dev).to(torch.bfloat16) for _ in range(nsets)]
        self.outs_k = outs_k = [torch.empty(B, T, H, K, device=dev) for _ in range(nsets)]
        self.outs_t = outs_t = [torch.empty(B, T, H, K, device=dev) for _ in range(nsets)]
        self.cu_d = cu_d = torch.tensor(cu, dtype=torch.int32, device=dev) if nseq else None
        self.table = table = (torch.tensor(chunk_table(cu), dtype=torch.int32, device=dev)
                              if nseq else None)
        ctx = kda.context()
        fn = _ops._functions()[0]
        size = _ops._ARGS_SIZE

        def libkda(i):
            head = (size, gs[i].data_ptr(), C.KDA_DTYPE_BF16, outs_k[i].data_ptr(), C.KDA_DTYPE_F32,
                    B, T, H, K, CHUNK, C.KDA_GATE_SOFTPLUS, A_log.data_ptr(), dt_bias.data_ptr(),
                    0.0, 1.0, 0, 0)
            if nseq:
                blob = _ops._ARGS.pack(*head, cu_d.data_ptr(), C.KDA_DTYPE_I32, nseq,
                                       table.data_ptr(), table.shape[0], 0, 0, 0)
            else:
                blob = _ops._ARGS.pack(*head, 0, C.KDA_DTYPE_I32, 0, 0, 0, 0, 0, 0)

            def call():
                st = fn(ctx, blob, torch.cuda.current_stream().cuda_stream)
                if st:
                    _ops._raise(_ops._lib, st, "kda_gate_chunk_cumsum")
            return call

        def trit(i):
            return lambda: triton_call(gs[i], A_log, dt_bias, outs_t[i], B, T, H, cu_d, table)

        self.lk = [libkda(i) for i in range(nsets)]
        self.lt = [trit(i) for i in range(nsets)]
        # Correctness first, on outputs poisoned with NaN.
        outs_k[0].fill_(float("nan"))
        outs_t[0].fill_(float("nan"))
        self.lk[0]()
        if with_triton:
            self.lt[0]()  # also runs Triton's autotuning, outside any capture
        torch.cuda.synchronize()
        ref = reference(gs[0], A_log, dt_bias, cu)
        self.bad_k, self.err_k = check("libkda", outs_k[0], ref)
        self.bad_t, self.err_t = check("triton", outs_t[0], ref) if with_triton else (0, 0.0)


def run_row(T, H, nseq, l2_bytes, bw):
    wall_start = time.time()
    row = Row(T, H, nseq, l2_bytes)
    n = row.n
    gk, gt = capture(row.lk), capture(row.lt)
    timed_from = time.time()
    us_k, us_t = time_graphs([gk, gt])
    floor_us = 6 * n / (bw * 1e3)
    r = {
        "kernel": "gate_chunk_cumsum", "T": T, "H": H, "K": K, "chunk": CHUNK, "seqs": nseq,
        "elements": n, "libkda_us": round(us_k, 3), "triton_us": round(us_t, 3),
        "speedup": round(us_t / us_k, 3),
        "libkda_pct_of_copy_bw": round(100 * floor_us / us_k, 1),
        "triton_pct_of_copy_bw": round(100 * floor_us / us_t, 1),
        "triton_config": str(_triton_gate_cumsum.best_config),
        "libkda_max_rel_err": row.err_k, "triton_max_rel_err": row.err_t,
        "libkda_bad": row.bad_k, "triton_bad": row.bad_t,
        "issue_triton_us": ISSUE_TRITON_US.get((T, H)) if not nseq else None,
        # Wall clock (Unix seconds): the row's start and its timed replays,
        # to line up with a GPU clock log (nvidia-smi -lms).
        "wall_start": round(wall_start, 3), "wall_timed": [round(timed_from, 3), round(time.time(), 3)],
    }
    # The graphs go before the buffers they use.
    del gk, gt, row
    torch.cuda.empty_cache()
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", help="write the rows here (default bench/results/<gpu>-<date>-vs-triton.json)")
    ap.add_argument("--rows", type=int, default=0, help="only the first N rows (a quick check)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_vs_triton: no CUDA device visible to torch; nothing to time")
        return 2
    name = torch.cuda.get_device_name()
    props = torch.cuda.get_device_properties(0)
    l2 = getattr(props, "L2_cache_size", 50 << 20)
    bw = copy_bandwidth()
    print("%s, copy %.0f GB/s, triton %s, torch %s, libkda %s" %
          (name, bw, triton.__version__, torch.__version__, kda.library_version()))
    shapes = [(T, H, 0) for T in (512, 2048, 8192, 32768) for H in (32, 16, 8, 4)]
    shapes += [(T, H, 8) for T in (8192, 32768) for H in (32, 16)]
    if args.rows:
        shapes = shapes[:args.rows]
    hdr = "%6s %3s %4s %10s %9s %7s %9s %9s %10s  %s" % (
        "T", "H", "seqs", "libkda_us", "triton_us", "speedup", "libkda%", "triton%", "issue_tri",
        "triton config")
    print(hdr)
    rows, failed = [], 0
    for T, H, nseq in shapes:
        r = run_row(T, H, nseq, l2, bw)
        rows.append(r)
        failed += r["libkda_bad"] > 0
        print("%6d %3d %4d %10.2f %9.2f %6.2fx %8.1f%% %8.1f%% %10s  %s" % (
            T, H, nseq, r["libkda_us"], r["triton_us"], r["speedup"], r["libkda_pct_of_copy_bw"],
            r["triton_pct_of_copy_bw"],
            "%.2f" % r["issue_triton_us"] if r["issue_triton_us"] else "-",
            r["triton_config"]), flush=True)
    st = kda.stats()
    print("libkda in this process: " + ", ".join("%s %s" % (k, st[k]) for k in STATS_SHOWN if k in st))
    doc = {"gpu": name, "copy_bw_gbps": round(bw, 1), "triton": triton.__version__,
           "torch": torch.__version__, "libkda": kda.library_version(),
           "date": datetime.date.today().isoformat(), "graph_launches": GRAPH_LAUNCHES,
           "replays": REPLAYS, "libkda_stats": {k: st[k] for k in STATS_SHOWN if k in st},
           "rows": rows}
    path = args.json or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "results",
        "%s-%s-vs-triton.json" % (name.replace(" ", "-"), doc["date"]))
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    print("wrote %s" % path)
    if failed:
        print("bench_vs_triton: libkda failed the float64 check on %d rows" % failed)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
