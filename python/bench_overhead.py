"""Host overhead per call of the kda functions from Python.

    KDA_LIBRARY=build/release/libkda.so PYTHONPATH=python python3 python/bench_overhead.py

Times N calls of a warm small specialization one by one with
time.perf_counter_ns() around each call (the GPU work is tiny and runs
asynchronously; the stream is synchronised every 256 calls, outside the
timed region, so the launch queue never fills), the cases taken in turn in
rounds, and prints median, p10 and p90 in microseconds, next to the same
figure for a bare ctypes call of the library with prebuilt arguments and
for torch.empty_like (the output allocation every call makes).
"""

import ctypes
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kda  # noqa: E402
from kda import _capi as C  # noqa: E402


ROUNDS = 20


def _time_cases(cases, n, sync):
    """n calls of each case, timed one by one, in ROUNDS rounds that take
    the cases in turn: a drift of the machine over the run (seen on lent
    VMs: the same case 30% slower in one process than in the next one)
    then falls on every case alike, and their ratios stay comparable."""
    ts = {name: [] for name in cases}
    per_round = max(1, n // ROUNDS)
    for _ in range(ROUNDS):
        for name, fn in cases.items():
            t = ts[name]
            for i in range(per_round):
                if i % 256 == 0:
                    sync()
                t0 = time.perf_counter_ns()
                fn()
                t.append(time.perf_counter_ns() - t0)
            sync()
    results = {}
    for name, t in ts.items():
        t.sort()
        results[name] = {"median_us": statistics.median(t) / 1e3, "p10_us": t[len(t) // 10] / 1e3,
                         "p90_us": t[len(t) * 9 // 10] / 1e3}
    return results


def _triton_baseline(g, A_log, b):
    """A direct Triton launch of a gate + chunk-cumsum kernel written like
    upstream's kda_gate_chunk_cumsum_vector_kernel (plain @triton.jit, no
    autotune/heuristics wrappers, so a lower bound on upstream's per-call
    host cost). None when Triton is missing."""
    try:
        import triton
        import triton.language as tl
    except ImportError:
        return None
    import torch

    @triton.jit
    def gate_cumsum(s, A_log, bias, o, T, H: tl.constexpr, S: tl.constexpr, BT: tl.constexpr,
                    BS: tl.constexpr):
        i_s, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        i_b, i_h = i_bh // H, i_bh % H
        o_t = i_t * BT + tl.arange(0, BT)
        o_s = i_s * BS + tl.arange(0, BS)
        m = (o_t[:, None] < T) & (o_s[None, :] < S)
        p = (i_b * T * H + i_h) * S + o_t[:, None] * (H * S) + o_s[None, :]
        x = tl.load(s + p, mask=m, other=0.0).to(tl.float32)
        x += tl.load(bias + i_h * S + o_s, mask=o_s < S, other=0.0)[None, :]
        a = tl.exp(tl.load(A_log + i_h))
        y = -a * tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(x)))
        y = tl.cumsum(y, axis=0)
        tl.store(o + p, y, mask=m)

    B, T, H, K = g.shape

    def call():
        out = torch.empty_like(g, dtype=torch.float32)
        gate_cumsum[(triton.cdiv(K, 64), triton.cdiv(T, 64), B * H)](g, A_log, b, out, T, H=H,
                                                                     S=K, BT=64, BS=64)
        return out
    return call


def make_cases():
    """The timed calls, by name, each warm (its specialization compiled),
    and the synchronisation they are timed between."""
    import torch
    dev = torch.device("cuda", torch.cuda.current_device())
    B, T, H, K = 1, 64, 4, 64
    g = torch.randn(B, T, H, K, device=dev, dtype=torch.bfloat16)
    A_log = torch.empty(H, device=dev).uniform_(1, 16).log()
    b = torch.randn(H * K, device=dev)
    g3 = torch.randn(B, T, H, device=dev)
    cu = torch.tensor([0, 20, 64], dtype=torch.int32, device=dev)
    table = kda.prepare_chunk_indices(cu, 64, total_tokens=T)
    plan = kda.ChunkPlan(T, 2, 64, device=dev)
    plan.build(cu, T)
    sync = torch.cuda.synchronize

    cases = {
        "gate_chunk_cumsum (bf16 -> f32, bias)":
            lambda: kda.gate_chunk_cumsum(g, A_log, 64, dt_bias=b),
        "gate_chunk_cumsum varlen, prebuilt table":
            lambda: kda.gate_chunk_cumsum(g, A_log, 64, dt_bias=b, cu_seqlens=cu,
                                          chunk_indices=table),
        "gate_chunk_cumsum varlen, chunk plan":
            lambda: kda.gate_chunk_cumsum(g, A_log, 64, dt_bias=b, chunk_plan=plan),
        "gate_chunk_cumsum varlen, table built in the call":
            lambda: kda.gate_chunk_cumsum(g, A_log, 64, dt_bias=b, cu_seqlens=cu),
        "chunk_local_cumsum scalar [B,T,H]": lambda: kda.chunk_local_cumsum(g3, 64),
        "gate (activation only)": lambda: kda.gate(g, A_log, b),
        "prepare_chunk_indices (total_tokens)":
            lambda: kda.prepare_chunk_indices(cu, 64, total_tokens=T),
    }
    lib = kda.load_library()
    a = C.gate_args()
    out = torch.empty(B, T, H, K, device=dev)
    a.g, a.g_dtype, a.out, a.out_dtype = g.data_ptr(), C.KDA_DTYPE_BF16, out.data_ptr(), 0
    a.batch, a.seq_len, a.num_heads, a.head_dim = B, T, H, K
    a.gate, a.A_log, a.dt_bias = C.KDA_GATE_SOFTPLUS, A_log.data_ptr(), b.data_ptr()
    ctx = kda.context(dev)
    stream = torch.cuda.current_stream(dev).cuda_stream
    ref = ctypes.byref(a)
    cases["baseline: bare ctypes kda_gate_chunk_cumsum"] = \
        lambda: lib.kda_gate_chunk_cumsum(ctx, ref, stream)
    cases["baseline: torch.empty_like"] = lambda: torch.empty_like(g, dtype=torch.float32)
    tri = _triton_baseline(g, A_log, b)
    if tri is not None:
        ref_out = kda.gate_chunk_cumsum(g, A_log, 64, dt_bias=b)
        torch.testing.assert_close(tri(), ref_out, rtol=1e-4, atol=1e-3)
        cases["baseline: Triton launch of the same job (empty_like + kernel[grid])"] = tri

    for fn in cases.values():  # warm every specialization
        for _ in range(20):
            fn()
    sync()
    return cases, sync


def measure(n=10000):
    cases, sync = make_cases()
    return _time_cases(cases, n, sync)


def report(results, file=None):
    import platform

    import torch
    file = sys.stdout if file is None else file
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print("host overhead per call (%s; %s; torch %s; python %s; libkda %s)"
          % (torch.cuda.get_device_name(), cpu, torch.__version__, platform.python_version(),
             kda.library_version()[0]), file=file)
    for name, r in results.items():
        print("  %-52s median %6.2f us   p10 %6.2f   p90 %6.2f"
              % (name, r["median_us"], r["p10_us"], r["p90_us"]), file=file)


if __name__ == "__main__":
    n = int(os.environ.get("KDA_BENCH_CALLS", "10000"))
    report(measure(n))
