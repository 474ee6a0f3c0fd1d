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
import itertools
import math
import operator

from . import _capi as C

_KERNELS = {"gate_chunk_cumsum": C.KDA_KERNEL_GATE_CHUNK_CUMSUM,
            "chunk_local_cumsum": C.KDA_KERNEL_CHUNK_LOCAL_CUMSUM,
            "gate": C.KDA_KERNEL_GATE}
_DTYPES = {"f32": C.KDA_DTYPE_F32, "float32": C.KDA_DTYPE_F32, "f16": C.KDA_DTYPE_F16,
           "float16": C.KDA_DTYPE_F16, "bf16": C.KDA_DTYPE_BF16, "bfloat16": C.KDA_DTYPE_BF16}
_GATES = {"softplus": C.KDA_GATE_SOFTPLUS, "lower_bound": C.KDA_GATE_LOWER_BOUND,
          "lower-bound": C.KDA_GATE_LOWER_BOUND, "none": C.KDA_GATE_NONE}
_YES_NO = {"yes": (True,), "no": (False,), "both": (False, True), True: (True,),
           False: (False,)}
_SEQLENS = {"int32": (C.KDA_DTYPE_I32,), "int64": (C.KDA_DTYPE_I64,),
            "both": (C.KDA_DTYPE_I32, C.KDA_DTYPE_I64)}
_IDX_NAMES = {C.KDA_DTYPE_I32: "int32", C.KDA_DTYPE_I64: "int64"}
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


def _variants(name, v):
    """yes / no / both (or a bool) as the flag values to prewarm."""
    key = v if isinstance(v, bool) else str(v).lower()
    if key not in _YES_NO:
        raise C.KdaValueError("%s must be yes, no or both (or a bool), got %r" % (name, v))
    return _YES_NO[key]


def _in_range(name, vals, hi, macro):
    # kda.h's limits (mirrored in _capi, checked against the header by
    # tests/test_cpu_header_layout.py): outside them every shape would fail.
    for x in vals:
        if x > hi:
            raise C.KdaValueError("%s must be in [1, %d] (kda.h %s), got %d" % (name, hi, macro, x))


def _check_chunk(chunk):
    if chunk & (chunk - 1) or not C.KDA_MIN_CHUNK <= chunk <= C.KDA_MAX_CHUNK:
        raise C.KdaValueError("chunk_size must be a power of two in [%d, %d] (kda.h), got %d"
                              % (C.KDA_MIN_CHUNK, C.KDA_MAX_CHUNK, chunk))


def _check_budget(budget_ms):
    # NaN compares false with everything: the library would take it for
    # "unset" and tune with its own 1 s budget.
    try:
        ok = math.isfinite(budget_ms) and budget_ms > 0
    except TypeError:
        ok = False
    if not ok:
        raise C.KdaValueError("budget_ms must be a positive finite number of milliseconds, got %r"
                              % (budget_ms,))


def _kernel_for(gate, kernel):
    """The kernel of a gate: the kda function the shapes stand for must be
    able to make the call."""
    k = _choice("kernel", _KERNELS, kernel if kernel is not None else
                ("chunk_local_cumsum" if gate == C.KDA_GATE_NONE else "gate_chunk_cumsum"))
    if k == C.KDA_KERNEL_CHUNK_LOCAL_CUMSUM and gate != C.KDA_GATE_NONE:
        raise C.KdaValueError("kernel chunk_local_cumsum takes an activated gate (gate none)")
    if k != C.KDA_KERNEL_CHUNK_LOCAL_CUMSUM and gate == C.KDA_GATE_NONE:
        raise C.KdaValueError("kernel %s needs gate softplus or lower_bound (gate none is the "
                              "activated gate of chunk_local_cumsum)" % kernel)
    return k


def _flag_variants(k, gate, scale, reverse, a_log):
    """(scale, reverse, A_log) values to prewarm, as kda's functions set
    has_scale, reverse and A_log."""
    cumsum = k != C.KDA_KERNEL_GATE
    # Default scale: fla's chunk_kda_fwd calls both cumsums with
    # scale=RCP_LN2, and kda's functions set has_scale for any scale not None.
    scales = _variants("scale", "yes" if cumsum else "no") if scale is None else \
        _variants("scale", scale)
    if not cumsum and True in scales:
        raise C.KdaValueError("kernel gate has no cumsum to scale (scale must be no)")
    revs = _variants("reverse", reverse)
    if True in revs and k != C.KDA_KERNEL_CHUNK_LOCAL_CUMSUM:
        raise C.KdaValueError("only chunk_local_cumsum takes reverse (kda.gate_chunk_cumsum has "
                              "no reverse argument, as upstream's has none)")
    return scales, revs, _alog_variants(gate, a_log)


def _alog_variants(gate, a_log):
    if gate == C.KDA_GATE_NONE:
        if a_log is not None:
            raise C.KdaValueError("gate none reads no A_log (a_log applies to lower_bound)")
        return (None,)
    alogs = _variants("a_log", "yes" if a_log is None else a_log)
    if gate == C.KDA_GATE_SOFTPLUS and False in alogs:
        raise C.KdaValueError("the softplus gate always reads A_log (kda passes a zero A_log "
                              "for A_log=None): a_log=no applies to lower_bound")
    return alogs


def _varlen_variants(k, Ts, varlen, host_rows, chunk_plan, seqlens_dtype):
    """cu_seqlens dtypes to prewarm (None: dense); refuses varlen options
    that no call combines."""
    for name, v in (("host_rows", host_rows), ("chunk_plan", chunk_plan),
                    ("seqlens_dtype", seqlens_dtype)):
        if v not in (None, False) and not varlen:
            raise C.KdaValueError("%s describes varlen calls: it needs varlen=True (--varlen)"
                                  % name)
    if not varlen:
        return (None,)
    if k == C.KDA_KERNEL_GATE:
        raise C.KdaValueError("kernel gate has no varlen form (kda.gate takes no cu_seqlens)")
    if host_rows and chunk_plan:
        raise C.KdaValueError("host_rows and chunk_plan are different calls (a plan replaces "
                              "cu_seqlens_cpu): prewarm one or the other per run")
    if chunk_plan and max(Ts) >= 1 << 31:
        raise C.KdaValueError("a chunk plan holds fewer than 2^31 tokens (kda.h), got %d"
                              % max(Ts))
    return _choice("seqlens_dtype", _SEQLENS, "int32" if seqlens_dtype is None else seqlens_dtype)


def host_rows_fit(tokens, num_seqs, chunk_size):
    """Whether a batch of num_seqs near-equal sequences of `tokens` tokens in
    all passes its rows in the launch (kda.h: at most KDA_MAX_HOST_ROWS
    chunks, fewer than 2^24 tokens); otherwise a call with cu_seqlens_cpu
    reads a chunk table, and that is the specialization to prewarm."""
    n = min(num_seqs, tokens)
    chunks = sum(-(-((i + 1) * tokens // n - i * tokens // n) // chunk_size) for i in range(n))
    return chunks <= C.KDA_MAX_HOST_ROWS and tokens < (1 << 24)


def _shape(kernel, gate, H, T, head_dim, chunk_size, dtype, out_dtype, bias, varlen, num_seqs,
           host_rows, chunk_plan, scale=False, reverse=False, a_log=True,
           seqlens_dtype=C.KDA_DTYPE_I32, g_align=256, out_align=256):
    """(kda_gate_args, path name) of one shape, as kda-tune prewarm builds it.
    Only the flags are keys: has_scale (scale's value is not), reverse,
    A_log present or not, the cu_seqlens dtype of a varlen call, and the
    alignment of g and out (a view's address within 256 bytes, which
    kda_prewarm reads from g and out; None: 256-byte aligned)."""
    a = C.gate_args()
    a.g = g_align if g_align < 256 else None
    a.out = out_align if out_align < 256 else None
    a.g_dtype = dtype
    a.out_dtype = out_dtype
    a.batch = 1
    a.seq_len = T
    a.num_heads = H
    a.head_dim = head_dim
    a.chunk_size = chunk_size
    a.gate = gate
    a.has_scale = 1 if scale else 0
    a.reverse = 1 if reverse else 0
    if bias and gate != C.KDA_GATE_NONE:
        a.dt_bias = _PRESENT_BIAS
    if gate != C.KDA_GATE_NONE and a_log:
        a.A_log = _PRESENT_ALOG
    if gate == C.KDA_GATE_LOWER_BOUND:
        a.lower_bound = -5.0
    path = "dense"
    if varlen:
        a.num_seqs = min(num_seqs, T)
        a.cu_seqlens_dtype = seqlens_dtype
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
            varlen=False, num_seqs=8, host_rows=False, chunk_plan=False, scale=None,
            reverse="no", a_log=None, seqlens_dtype=None, g_align=256, out_align=256,
            force=False, device=None, budget_ms=15000.0, db_path=None):
    """Tunes and stores every (heads, tokens) specialization a server will
    meet, so that no request compiles or tunes; returns one dict per shape.

    heads, tokens: an int or a list (each token count stands for its token
    bucket, see kda.h). dtype / output_dtype: "bf16", "f16", "f32" (or torch
    dtypes; output f32 or bf16). gate: "softplus", "lower_bound" or "none"
    (chunk_local_cumsum). kernel: "gate_chunk_cumsum" (default),
    "chunk_local_cumsum" (gate none) or "gate".
    varlen: packed batches of ``num_seqs`` sequences, read through a chunk
    table; with ``chunk_plan`` through a kda.ChunkPlan; with ``host_rows``
    (calls passing ``cu_seqlens_cpu``) their rows in the launch where the
    batch fits, else the table, as such a call would run (one or the other).
    seqlens_dtype: "int32" (default), "int64" or "both", cu_seqlens' dtype.
    scale, reverse, a_log: "yes", "no" or "both" (or a bool), as the calls
    pass them. scale (a scale not None): default yes for the cumsum kernels,
    since fla's chunk_kda_fwd calls them with scale=RCP_LN2; give "no" or
    "both" for calls without one; the gate kernel has none. reverse (default
    no): chunk_local_cumsum only. a_log (default yes): "no" or "both" for
    lower_bound calls with A_log=None (softplus always reads one).
    g_align, out_align (bytes, a power of two up to 256, default 256): the
    alignment of the calls' g and out. A view into a larger tensor at an
    offset (g[..., 4:] of bf16: 8 bytes) caps the kernel's vector width, so
    its calls have specializations of their own; torch's allocator aligns
    whole tensors, which need nothing here.
    device: the GPU to tune on: a CUDA ordinal, "cuda:N" or a torch.device
    (default, or "cuda" without an index: torch's current device if torch is
    imported, else 0); the database is keyed by the GPU model, so on a
    server of one model any of its GPUs will do. db_path: the tuning
    database (default: the library's, see README.md).

    Each dict has the shape's fields (``scale``, ``reverse``, ``a_log``,
    ``seqlens_dtype`` among them), ``path`` (dense, table, host-rows,
    plan), ``bucket``, ``outcome`` ("tuned", "skipped": already stored, or
    "failed"), ``config``, ``median_us``, ``heuristic_us``, ``compile_ms``,
    ``tune_ms``, ``candidates``, ``rejected``, ``error`` (the library's
    message for a failed shape, else None) and ``db_path``. A failed shape
    does not stop the others. Raises KdaValueError for bad arguments (kda.h's
    limits, combinations no call makes) before touching a device, and
    KdaDeviceError without a usable driver or device.
    """
    Hs, Ts = _ints("heads", heads), _ints("tokens", tokens)
    (K,), (chunk,), (seqs,) = (_ints("head_dim", head_dim), _ints("chunk_size", chunk_size),
                               _ints("num_seqs", num_seqs))
    _in_range("heads", Hs, C.KDA_MAX_HEADS, "KDA_MAX_HEADS")
    _in_range("head_dim", [K], C.KDA_MAX_HEAD_DIM, "KDA_MAX_HEAD_DIM")
    _check_chunk(chunk)
    g = _choice("gate", _GATES, gate)
    k = _kernel_for(g, kernel)
    dt, odt = _choice("dtype", _DTYPES, dtype), _choice("output_dtype", _DTYPES, output_dtype)
    if odt == C.KDA_DTYPE_F16:
        raise C.KdaValueError("output_dtype must be f32 or bf16 (what libkda writes)")
    scales, revs, alogs = _flag_variants(k, g, scale, reverse, a_log)
    idxs = _varlen_variants(k, Ts, varlen, host_rows, chunk_plan, seqlens_dtype)
    _check_budget(budget_ms)
    ga, oa = _alignment("g_align", g_align), _alignment("out_align", out_align)
    device = _device_ordinal(device)
    lib = C.load_library()
    o = C.options_default(device)
    o.tune_mode = C.KDA_TUNE_ON
    o.tune_budget_ms = float(budget_ms)
    path_bytes = db_path.encode() if isinstance(db_path, str) else db_path
    o.db_path = path_bytes
    ctx = ctypes.c_void_p()
    st = lib.kda_context_create(ctypes.byref(o), ctypes.byref(ctx))
    if st != C.KDA_OK:
        raise C.error_from_status(lib, st, "kda_context_create(device=%d)" % device)
    results = []
    try:
        for H, T, idx, alog, sc, rev in itertools.product(Hs, Ts, idxs, alogs, scales, revs):
            a, path = _shape(k, g, H, T, K, chunk, dt, odt, bias, varlen, seqs, host_rows,
                             chunk_plan, sc, rev, alog, idx, ga, oa)
            row = _run_one(lib, ctx, k, a, force)
            row.update(heads=H, tokens=T, head_dim=K, chunk_size=chunk, varlen=bool(varlen),
                       num_seqs=a.num_seqs, path=path, scale=sc, reverse=rev, a_log=alog,
                       seqlens_dtype=_IDX_NAMES.get(idx), bucket=int(lib.kda_token_bucket(T)),
                       g_align=ga, out_align=oa)
            results.append(row)
    finally:
        lib.kda_context_destroy(ctx)
    return results


def _run_one(lib, ctx, k, a, force):
    """kda_prewarm of one shape as a result dict (without the shape's fields)."""
    r = C.KdaPrewarmResult()
    r.struct_size = ctypes.sizeof(r)
    st = lib.kda_prewarm(ctx, k, ctypes.byref(a), 1 if force else 0, ctypes.byref(r))
    err = None
    if st != C.KDA_OK:
        err = str(C.error_from_status(lib, st, "kda_prewarm"))
    return {
        "kernel": [n for n, v in _KERNELS.items() if v == k][0],
        "outcome": "failed" if st != C.KDA_OK else _OUTCOMES.get(r.outcome, "failed"),
        "config": r.config.decode(errors="replace"), "median_us": r.median_us,
        "heuristic_us": r.heuristic_us, "compile_ms": r.compile_ms, "tune_ms": r.tune_ms,
        "candidates": r.candidates, "rejected": r.rejected, "error": err,
        "db_path": (lib.kda_context_db_path(ctx) or b"").decode(errors="replace"),
    }


def _alignment(name, v):
    """A g_align / out_align value: an int power of two from 1 to 256."""
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 256 or v & (v - 1):
        raise C.KdaValueError("%s must be a power of two from 1 to 256 (bytes), got %r"
                              % (name, v))
    return v


def _device_ordinal(device):
    """The CUDA ordinal of prewarm's ``device`` argument, checked before any
    device is touched: -1 would mean "the context current on this thread"
    to libkda, and int() of "cuda:1" or a torch.device would raise a bare
    Python error."""
    if device is None:
        return _default_device()
    if isinstance(device, bool):
        idx = None
    elif not isinstance(device, str) and not hasattr(device, "type") and \
            hasattr(device, "__index__"):  # an int (numpy's too)
        idx = operator.index(device)
    else:
        kind = getattr(device, "type", None)
        idx = getattr(device, "index", None)
        if isinstance(device, str):
            kind, _, num = device.strip().partition(":")
            idx = int(num) if num.isdigit() else (None if num == "" else -1)
        if kind != "cuda":
            idx = -1
        elif idx is None:
            return _default_device()
    if not isinstance(idx, int) or idx < 0:
        raise C.KdaValueError("device must be a CUDA ordinal (0, 1, ...), \"cuda:N\" or a CUDA "
                              "torch.device, got %r" % (device,))
    return idx


def _default_device():
    import sys
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.current_device()
    return 0
