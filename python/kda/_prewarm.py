"""kda.prewarm: `kda-tune prewarm` from Python, in the server's own
environment.

A deployment that installs only this package has no kda-tune binary; and a
prewarm run in the server's Python environment compiles with the NVRTC that
the server will load (its PyTorch wheel's), so its cubins are the server's
own. Each shape is tuned with the whole candidate space (kda_prewarm with a
15 s budget, as kda-tune) and stored in the tuning database; what the
database already holds is skipped unless ``force``. Needs a GPU, not torch.
"""

from __future__ import annotations

import ctypes

from . import _capi as C

_KERNELS = {"gate_chunk_cumsum": C.KDA_KERNEL_GATE_CHUNK_CUMSUM,
            "chunk_local_cumsum": C.KDA_KERNEL_CHUNK_LOCAL_CUMSUM,
            "gate": C.KDA_KERNEL_GATE}
_DTYPES = {"f32": C.KDA_DTYPE_F32, "float32": C.KDA_DTYPE_F32, "f16": C.KDA_DTYPE_F16,
           "float16": C.KDA_DTYPE_F16, "bf16": C.KDA_DTYPE_BF16, "bfloat16": C.KDA_DTYPE_BF16}
_GATES = {"softplus": C.KDA_GATE_SOFTPLUS, "lower_bound": C.KDA_GATE_LOWER_BOUND,
          "lower-bound": C.KDA_GATE_LOWER_BOUND, "none": C.KDA_GATE_NONE}
_OUTCOMES = {C.KDA_PREWARM_TUNED: "tuned", C.KDA_PREWARM_SKIPPED: "skipped",
             C.KDA_PREWARM_FAILED: "failed"}
# Non-NULL stand-ins mean "present" to kda_prewarm (never dereferenced),
# aligned for the widest vector access, as kda-tune passes them.
_PRESENT_BIAS = 1 << 42
_PRESENT_ALOG = 1 << 43


def _ints(name, v):
    vals = [v] if isinstance(v, int) else list(v)
    if not vals or any(not isinstance(x, int) or isinstance(x, bool) or x < 1 for x in vals):
        raise C.KdaValueError("%s must be a positive int or a list of them, got %r" % (name, v))
    return vals


def _choice(name, table, v):
    key = str(v).replace("torch.", "").lower()
    if key not in table:
        raise C.KdaValueError("%s must be one of %s, got %r" % (name, ", ".join(sorted(table)), v))
    return table[key]


def host_rows_fit(tokens, num_seqs, chunk_size):
    """Whether a batch of num_seqs near-equal sequences of `tokens` tokens in
    all passes its rows in the launch (kda.h: at most KDA_MAX_HOST_ROWS
    chunks, fewer than 2^24 tokens); otherwise a call with cu_seqlens_cpu
    reads a chunk table, and that is the specialization to prewarm."""
    n = min(num_seqs, tokens)
    chunks = sum(-(-((i + 1) * tokens // n - i * tokens // n) // chunk_size) for i in range(n))
    return chunks <= C.KDA_MAX_HOST_ROWS and tokens < (1 << 24)


def _shape(kernel, gate, H, T, head_dim, chunk_size, dtype, out_dtype, bias, varlen, num_seqs,
           host_rows, chunk_plan):
    """(kda_gate_args, path name) of one shape, as kda-tune prewarm builds it."""
    a = C.gate_args()
    a.g_dtype = dtype
    a.out_dtype = out_dtype
    a.batch = 1
    a.seq_len = T
    a.num_heads = H
    a.head_dim = head_dim
    a.chunk_size = chunk_size
    a.gate = gate
    if bias and gate != C.KDA_GATE_NONE:
        a.dt_bias = _PRESENT_BIAS
    if gate != C.KDA_GATE_NONE:
        a.A_log = _PRESENT_ALOG
    if gate == C.KDA_GATE_LOWER_BOUND:
        a.lower_bound = -5.0
    path = "dense"
    if varlen:
        a.num_seqs = min(num_seqs, T)
        path = "table"
        if chunk_plan:
            a.chunk_plan = 1
            path = "plan"
        elif host_rows and host_rows_fit(T, num_seqs, chunk_size):
            a.cu_seqlens_host = 1
            path = "host-rows"
    return a, path


def prewarm(heads, tokens=(512, 2048, 8192, 32768, 65536), *, head_dim=128, chunk_size=64,
            dtype="bf16", output_dtype="f32", gate="softplus", bias=True, kernel=None,
            varlen=False, num_seqs=8, host_rows=False, chunk_plan=False, force=False,
            device=None, budget_ms=15000.0, db_path=None):
    """Tunes and stores every (heads, tokens) specialization a server will
    meet, so that no request compiles or tunes; returns one dict per shape.

    heads, tokens: an int or a list (each token count stands for its token
    bucket, see kda.h). dtype / output_dtype: "bf16", "f16", "f32" (or torch
    dtypes). gate: "softplus", "lower_bound" or "none" (chunk_local_cumsum).
    kernel: "gate_chunk_cumsum" (default), "chunk_local_cumsum" or "gate".
    varlen: packed batches of ``num_seqs`` sequences, read through a chunk
    table; with ``chunk_plan`` through a kda.ChunkPlan; with ``host_rows``
    (calls passing ``cu_seqlens_cpu``) their rows in the launch where the
    batch fits, else the table, as such a call would run. device: CUDA
    ordinal (default: torch's current device if torch is imported, else 0).
    db_path: the tuning database (default: the library's, see README.md).

    Each dict has the shape's fields, ``path`` (dense, table, host-rows,
    plan), ``bucket``, ``outcome`` ("tuned", "skipped": already stored, or
    "failed"), ``config``, ``median_us``, ``heuristic_us``, ``compile_ms``,
    ``tune_ms``, ``candidates``, ``rejected``, ``error`` (the library's
    message for a failed shape, else None) and ``db_path``. A failed shape
    does not stop the others. Raises KdaDeviceError without a usable driver
    or device, KdaValueError for bad arguments.
    """
    Hs, Ts = _ints("heads", heads), _ints("tokens", tokens)
    g = _choice("gate", _GATES, gate)
    k = _choice("kernel", _KERNELS, kernel if kernel is not None else
                ("chunk_local_cumsum" if g == C.KDA_GATE_NONE else "gate_chunk_cumsum"))
    dt, odt = _choice("dtype", _DTYPES, dtype), _choice("output_dtype", _DTYPES, output_dtype)
    (K,), (chunk,), (seqs,) = (_ints("head_dim", head_dim), _ints("chunk_size", chunk_size),
                               _ints("num_seqs", num_seqs))
    if budget_ms <= 0:
        raise C.KdaValueError("budget_ms must be positive, got %r" % (budget_ms,))
    if device is None:
        device = _default_device()
    lib = C.load_library()
    o = C.options_default(int(device))
    o.tune_mode = C.KDA_TUNE_ON
    o.tune_budget_ms = float(budget_ms)
    path_bytes = db_path.encode() if isinstance(db_path, str) else db_path
    o.db_path = path_bytes
    ctx = ctypes.c_void_p()
    st = lib.kda_context_create(ctypes.byref(o), ctypes.byref(ctx))
    if st != C.KDA_OK:
        raise C.error_from_status(lib, st, "kda_context_create(device=%d)" % int(device))
    results = []
    try:
        for H in Hs:
            for T in Ts:
                a, path = _shape(k, g, H, T, K, chunk, dt, odt, bias, varlen, seqs, host_rows,
                                 chunk_plan)
                r = C.KdaPrewarmResult()
                r.struct_size = ctypes.sizeof(r)
                st = lib.kda_prewarm(ctx, k, ctypes.byref(a), 1 if force else 0, ctypes.byref(r))
                err = None
                if st != C.KDA_OK:
                    err = str(C.error_from_status(lib, st, "kda_prewarm"))
                results.append({
                    "kernel": [n for n, v in _KERNELS.items() if v == k][0], "heads": H,
                    "tokens": T, "head_dim": K, "chunk_size": chunk, "varlen": bool(varlen),
                    "num_seqs": a.num_seqs, "path": path, "bucket": int(lib.kda_token_bucket(T)),
                    "outcome": "failed" if st != C.KDA_OK else _OUTCOMES.get(r.outcome, "failed"),
                    "config": r.config.decode(errors="replace"), "median_us": r.median_us,
                    "heuristic_us": r.heuristic_us, "compile_ms": r.compile_ms,
                    "tune_ms": r.tune_ms, "candidates": r.candidates, "rejected": r.rejected,
                    "error": err,
                    "db_path": (lib.kda_context_db_path(ctx) or b"").decode(errors="replace"),
                })
    finally:
        lib.kda_context_destroy(ctx)
    return results


def _default_device():
    import sys
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.current_device()
    return 0
