"""torch front end: flash-linear-attention compatible functions over libkda.

Every function validates its tensors in Python (the checks upstream makes
with ``assert``, plus the ones the C library cannot make because it only
sees pointers), then fills one kda_gate_args and makes one C call on the
tensor's device and that device's current stream. Library failures become
exceptions carrying kda_last_error().
"""

from __future__ import annotations

import ctypes
import operator
import struct
import threading
from ctypes import byref, c_int64, c_void_p

from . import _capi as C
from ._capi import (
    KdaCaptureColdError,
    KdaDeviceError,
    KdaTypeError,
    KdaValueError,
)

try:  # torch is optional at import time
    import torch
except ImportError:  # pragma: no cover - exercised by the CPU tests
    torch = None

_FLOAT32 = torch.float32 if torch is not None else "torch.float32"

if torch is not None:
    _IN_DTYPES = {torch.float32: C.KDA_DTYPE_F32, torch.float16: C.KDA_DTYPE_F16,
                  torch.bfloat16: C.KDA_DTYPE_BF16}
    _OUT_DTYPES = {torch.float32: C.KDA_DTYPE_F32, torch.bfloat16: C.KDA_DTYPE_BF16}
    _IDX_DTYPES = {torch.int32: C.KDA_DTYPE_I32, torch.int64: C.KDA_DTYPE_I64}
    _Tensor = torch.Tensor
    try:
        _raw_stream = torch._C._cuda_getCurrentRawStream
    except AttributeError:  # pragma: no cover - older/newer torch
        def _raw_stream(dev):
            return torch.cuda.current_stream(dev).cuda_stream
else:
    _IN_DTYPES = _OUT_DTYPES = _IDX_DTYPES = {}
    _Tensor = ()

_OP_GATE_CHUNK_CUMSUM = "kda_gate_chunk_cumsum"
_OP_CHUNK_LOCAL_CUMSUM = "kda_chunk_local_cumsum"
_OP_GATE = "kda_gate"

# --------------------------------------------------------------------------
# Library, contexts (one per device, shared by all threads)
# --------------------------------------------------------------------------

_lib = None
_contexts = {}
_ctx_lock = threading.Lock()
_zero_alog = {}
# (device, kda_chunk_plan*) of plans collected where their device could not
# be synchronised (in a capture): destroyed by the next close() or build().
_deferred_plans = []


def _require_torch():
    if torch is None:
        raise KdaDeviceError(
            "kda needs PyTorch for its tensor functions, and torch is not installed "
            "(pip install torch); the C library itself can be used through kda._capi")


def _library():
    global _lib
    if _lib is None:
        _lib = C.load_library()
    return _lib


def _create_context(dev):
    with _ctx_lock:
        ctx = _contexts.get(dev)
        if ctx is not None:
            return ctx
        lib = _library()
        if not torch.cuda.is_available():
            raise KdaDeviceError("torch.cuda.is_available() is False: no CUDA device or driver "
                                 "visible to PyTorch, so libkda has nothing to run on")
        # Make sure torch has set up CUDA (and the device's primary context,
        # which the library retains too: both then share one CUcontext).
        torch.cuda.init()
        ctx = C.context_create(lib, int(dev))
        _contexts[dev] = ctx
        return ctx


def context(device=None):
    """The libkda context (a kda_context* as int) of a CUDA device, created on
    first use. ``device``: None (torch's current device), an int or a
    torch.device."""
    _require_torch()
    dev = _device_index(device)
    ctx = _contexts.get(dev)
    return ctx if ctx is not None else _create_context(dev)


def stats(device=None):
    """kda_stats of the device's context as a dict."""
    lib = _library()
    ctx = context(device)
    s = C.KdaStats()
    # An older library knows only the first fields: ask with its size.
    for n in C.STATS_SIZES:
        s.struct_size = n
        st = lib.kda_context_get_stats(ctx, byref(s))
        if st == C.KDA_OK:
            names = [f for f, _ in C.KdaStats._fields_
                     if getattr(C.KdaStats, f).offset + getattr(C.KdaStats, f).size <= n]
            return {f: getattr(s, f) for f in names if f != "struct_size"}
        if st != C.KDA_ERROR_BAD_OPTIONS:
            break
    raise C.error_from_status(lib, st, "kda_context_get_stats")


def device_info(device=None):
    """kda_device_info of the device's context as a dict."""
    lib = _library()
    ctx = context(device)
    info = C.KdaDeviceInfo()
    info.struct_size = ctypes.sizeof(info)
    st = lib.kda_context_get_device_info(ctx, byref(info))
    if st != C.KDA_OK:
        raise C.error_from_status(lib, st, "kda_context_get_device_info")
    d = {f: getattr(info, f) for f, _ in C.KdaDeviceInfo._fields_ if f != "struct_size"}
    d["name"] = info.name.decode(errors="replace")
    return d


# --------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------


def _same_device(name, t, dev, owner="g"):
    """t is a tensor on CUDA device dev (the device of ``owner``: g, or a
    ChunkPlan); the message names both devices."""
    if not isinstance(t, _Tensor):
        raise KdaTypeError("%s must be a torch.Tensor, got %s" % (name, type(t).__name__))
    if t.get_device() != dev:
        raise KdaDeviceError("%s is on %s but %s is on cuda:%d; all tensors must be on the same "
                             "CUDA device" % (name, t.device, owner, dev))


def _check(name, t, dev, owner="g"):
    """t is a contiguous CUDA tensor on device dev."""
    _same_device(name, t, dev, owner)
    if not t.is_contiguous():
        raise KdaValueError("%s must be contiguous (got shape %s, stride %s); call "
                            ".contiguous() first" % (name, tuple(t.shape), t.stride()))


def _check_chunk_size(chunk_size):
    """chunk_size as a plain int, checked. Any integer type (numpy's too),
    never a float: 64.0 would reach the packed args, which take ints only."""
    try:
        if isinstance(chunk_size, bool):
            raise TypeError
        chunk_size = operator.index(chunk_size)
    except TypeError:
        raise KdaTypeError("chunk_size must be an int, got %r" % (chunk_size,)) from None
    if chunk_size <= 0 or chunk_size & (chunk_size - 1):
        raise KdaValueError("chunk_size must be a power of 2 (got %d)" % chunk_size)
    if not C.KDA_MIN_CHUNK <= chunk_size <= C.KDA_MAX_CHUNK:
        raise KdaValueError("chunk_size %d is not a power of two in [%d, %d] (libkda's range)"
                            % (chunk_size, C.KDA_MIN_CHUNK, C.KDA_MAX_CHUNK))
    return chunk_size


def _number(name, v):
    """v as a float for the packed args (None stays None). A str is refused
    although float() would parse it: upstream's kernels take no strings."""
    if v is None or type(v) is float:
        return v
    if not isinstance(v, (str, bytes)):
        try:
            return float(v)
        except (TypeError, ValueError):
            pass
    raise KdaTypeError("%s must be a number or None, got %r" % (name, v))


def _param_ptr(name, t, n, dev):
    """Device pointer of a float32 [n] parameter; converts other float dtypes
    (as upstream's kernels do when loading them). Returns (ptr, tensor)."""
    _check(name, t, dev)
    if t.numel() != n:
        raise KdaValueError("%s has %d elements, expected %d (shape %s)"
                            % (name, t.numel(), n, tuple(t.shape)))
    if t.dtype != torch.float32:
        if not t.is_floating_point():
            raise KdaTypeError("%s has dtype %s; expected a floating dtype" % (name, t.dtype))
        t = t.float()
    return t.data_ptr(), t


def _zero_alog_ptr(dev, H):
    """A_log = 0 (decay scale 1) for the softplus gate without A_log; the
    cache keeps the buffer alive for as long as any launch may read it."""
    t = _zero_alog.get((dev, H))
    return (t if t is not None else _make_zero_alog(dev, H)).data_ptr()


def _make_zero_alog(dev, H):
    if _capturing(dev):
        raise KdaCaptureColdError(
            "the softplus gate without A_log needs a zero A_log buffer of %d heads that "
            "is created on first use, which cannot happen during CUDA graph capture: "
            "call the function once outside torch.cuda.graph() first (warm-up)" % H,
            C.KDA_ERROR_CAPTURE_COLD, "KDA_ERROR_CAPTURE_COLD")
    with _ctx_lock:  # racing threads: one buffer, so no pointer outlives its tensor
        t = _zero_alog.get((dev, H))
        if t is None:
            t = torch.zeros(H, dtype=torch.float32, device="cuda:%d" % dev)
            # The fill runs on this thread's stream; a call on another stream
            # would read the buffer unordered with it: wait for it, once.
            torch.cuda.current_stream(dev).synchronize()
            t = _zero_alog.setdefault((dev, H), t)
    return t


def _seqlens(cu_seqlens, dev, owner="g"):
    _check("cu_seqlens", cu_seqlens, dev, owner)
    dt = _IDX_DTYPES.get(cu_seqlens.dtype)
    if dt is None:
        raise KdaTypeError("cu_seqlens has dtype %s; supported: int32, int64" % cu_seqlens.dtype)
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise KdaValueError("cu_seqlens must be 1-D with at least 2 entries (got shape %s)"
                            % (tuple(cu_seqlens.shape),))
    return dt, cu_seqlens.numel() - 1


def _chunk_table(chunk_indices, dev):
    """(int32 table tensor, rows, device count pointer or 0)."""
    _check("chunk_indices", chunk_indices, dev)
    if chunk_indices.dim() != 2 or chunk_indices.shape[1] != 2:
        raise KdaValueError("chunk_indices must be [num_chunks, 2] (got shape %s)"
                            % (tuple(chunk_indices.shape),))
    count = getattr(chunk_indices, "_kda_num_chunks", None)
    if chunk_indices.dtype == torch.int64:
        chunk_indices = chunk_indices.to(torch.int32)  # on the device, no sync
    elif chunk_indices.dtype != torch.int32:
        raise KdaTypeError("chunk_indices has dtype %s; supported: int32, int64"
                           % chunk_indices.dtype)
    return chunk_indices, chunk_indices.shape[0], count


def _raise(lib, st, what):
    raise C.error_from_status(lib, st, what)


# --------------------------------------------------------------------------
# The common launch path
# --------------------------------------------------------------------------

# kda_gate_args packed in one struct.pack call (native alignment, the same
# layout as C.KdaGateArgs: tests/test_cpu_header_layout.py checks it). The
# bytes object is passed as the const kda_gate_args * (the library only
# reads it), which costs far less than filling a ctypes.Structure.
_ARGS = struct.Struct("@IPiPiqqiiiiPPffiiPiqPqPPP")
_ARGS_SIZE = ctypes.sizeof(C.KdaGateArgs)
_VALID_CHUNKS = frozenset(1 << i for i in range(4, 9))

# Parameters (A_log, dt_bias) are the same tensors call after call: their
# checks are cached by identity (the entry holds the tensor, so its id
# stays unique) and revalidated when the data pointer moves.
_param_cache = {}
_PARAM_CACHE_MAX = 4096

_fns = None  # (gate_chunk_cumsum, chunk_local_cumsum, gate, layer_gate_fwd) with bytes args


def _functions():
    global _fns
    if _fns is None:
        lib = _library()
        fns = []
        for name in ("kda_gate_chunk_cumsum", "kda_chunk_local_cumsum", "kda_gate"):
            f = getattr(ctypes.CDLL(lib._name, handle=lib._handle), name)
            f.restype = ctypes.c_int
            f.argtypes = [c_void_p, ctypes.c_char_p, c_void_p]
            fns.append(f)
        f = ctypes.CDLL(lib._name, handle=lib._handle).kda_layer_gate_fwd
        f.restype = ctypes.c_int
        f.argtypes = [c_void_p, ctypes.c_char_p, c_void_p, ctypes.c_size_t, c_void_p]
        fns.append(f)
        _fns = tuple(fns)
    return _fns


def _param(name, t, n, dev):
    """(device pointer of a float32 [n] parameter, tensor to keep alive)."""
    e = _param_cache.get(id(t))
    if e is not None and e[0] is t and e[2] == dev and e[3] == n and t.data_ptr() == e[1]:
        return e[1], t
    ptr, conv = _param_ptr(name, t, n, dev)
    if conv is t:  # float32 already: nothing converted, safe to cache
        if len(_param_cache) >= _PARAM_CACHE_MAX:
            _param_cache.clear()
        _param_cache[id(t)] = (t, ptr, dev, n)
    return ptr, conv


def _host_seqlens(cu_seqlens_cpu, cu_seqlens, N, dev):
    """Pointer of the host copy of cu_seqlens (0 when None), checked against
    the device tensor's dtype and length; the library reads it during the call."""
    if cu_seqlens_cpu is None:
        return 0
    if _capturing(dev, current_too=False):  # only a launch on dev's stream is captured
        # The rows are packed into the launch on the host: every replay
        # would compute this batch, whatever cu_seqlens then holds.
        raise KdaValueError(
            "cu_seqlens_cpu cannot be used inside CUDA graph capture: its rows are baked into "
            "the captured launch, so replays with new cu_seqlens contents would silently "
            "compute the captured batch; pass cu_seqlens alone (the chunk table is then built "
            "inside the graph) or a kda.ChunkPlan built inside it")
    if not isinstance(cu_seqlens_cpu, _Tensor) or cu_seqlens_cpu.device.type != "cpu":
        raise KdaDeviceError("cu_seqlens_cpu must be a CPU tensor (the host copy of cu_seqlens)")
    if cu_seqlens_cpu.dtype != cu_seqlens.dtype or cu_seqlens_cpu.dim() != 1 or \
            cu_seqlens_cpu.numel() != N + 1 or not cu_seqlens_cpu.is_contiguous():
        raise KdaValueError("cu_seqlens_cpu must be a contiguous 1-D %s tensor of %d entries "
                            "(got %s %s)" % (cu_seqlens.dtype, N + 1, cu_seqlens_cpu.dtype,
                                             tuple(cu_seqlens_cpu.shape)))
    return cu_seqlens_cpu.data_ptr()


def _call(op, g, dev, g_dt, od, o_dt, B, T, H, K, chunk_size, gate, alog_ptr, bias_ptr,
          lower_bound, scale, reverse, cu_seqlens, chunk_indices, num_chunks_device,
          cu_seqlens_cpu=None, chunk_plan=None):
    fns = _fns if _fns is not None else _functions()
    ctx = _contexts.get(dev)
    if ctx is None:
        ctx = _create_context(dev)
    out = torch.empty_like(g, dtype=od)
    if B * T * H * K == 0:
        return out
    stream = _raw_stream(dev)
    if cu_seqlens is None and chunk_plan is None:
        # (chunk_indices alone is ignored, as upstream ignores it then.)
        if cu_seqlens_cpu is not None or num_chunks_device is not None:
            _refuse_without_seqlens(cu_seqlens_cpu, num_chunks_device)
        st = fns[op](ctx, _ARGS.pack(
            _ARGS_SIZE, g.data_ptr(), g_dt, out.data_ptr(), o_dt, B, T, H, K, chunk_size, gate,
            alog_ptr, bias_ptr, 0.0 if lower_bound is None else lower_bound,
            1.0 if scale is None else scale, scale is not None, reverse, 0, C.KDA_DTYPE_I32, 0,
            0, 0, 0, 0, 0), stream)
        if st:
            _raise(_lib, st, _OP_NAMES[op])
        return out
    if chunk_plan is not None:
        if cu_seqlens is not None:  # not read with a plan; another device's is still a bug
            _same_device("cu_seqlens", cu_seqlens, dev)
        return _call_with_plan(fns[op], op, ctx, g, dev, out, stream, g_dt, o_dt, B, T, H, K,
                               chunk_size, gate, alog_ptr, bias_ptr, lower_bound, scale, reverse,
                               chunk_plan, chunk_indices, num_chunks_device, cu_seqlens_cpu)
    idx_dt, N = _seqlens(cu_seqlens, dev)
    host_ptr = _host_seqlens(cu_seqlens_cpu, cu_seqlens, N, dev)
    head = (_ARGS_SIZE, g.data_ptr(), g_dt, out.data_ptr(), o_dt, B, T, H, K, chunk_size, gate,
            alog_ptr, bias_ptr, 0.0 if lower_bound is None else lower_bound,
            1.0 if scale is None else scale, scale is not None, reverse, cu_seqlens.data_ptr(),
            idx_dt, N)
    if chunk_indices is None:
        if num_chunks_device is not None:
            raise KdaValueError("num_chunks_device is given without chunk_indices: it counts "
                                "the rows of a table, and the call builds its own")
        # Build the chunk table on the device (no host sync) into a workspace
        # and launch, in one library call (kda_layer_gate_fwd).
        cap = (T + chunk_size - 1) // chunk_size + N
        ws = torch.empty(cap * 2 + 1, dtype=torch.int32, device=g.device)
        # (A batch whose rows go in the launch, cu_seqlens_cpu, leaves it unused.)
        st = fns[3](ctx, _ARGS.pack(*head, 0, 0, 0, host_ptr, 0), ws.data_ptr(), ws.numel() * 4,
                    stream)
        if st:
            _raise(_lib, st, _OP_NAMES[op])
        return out
    table, rows, count = _chunk_table(chunk_indices, dev)
    if num_chunks_device is not None:
        count = num_chunks_device
    count_ptr = 0
    if count is not None:
        _check("num_chunks_device", count, dev)
        if count.dtype != torch.int32 or count.numel() < 1:
            raise KdaTypeError("num_chunks_device must be an int32 device tensor with one "
                               "element (got %s %s)" % (count.dtype, tuple(count.shape)))
        count_ptr = count.data_ptr()
    st = fns[op](ctx, _ARGS.pack(*head, table.data_ptr(), rows, count_ptr, host_ptr, 0), stream)
    if st:
        _raise(_lib, st, _OP_NAMES[op])
    return out


def _refuse_without_seqlens(cu_seqlens_cpu, num_chunks_device):
    name = "cu_seqlens_cpu" if cu_seqlens_cpu is not None else "num_chunks_device"
    raise KdaValueError("%s is given without cu_seqlens: it belongs to a varlen batch, which a "
                        "dense call would silently ignore; pass cu_seqlens (or chunk_plan) "
                        "with it" % name)


def _call_with_plan(fn, op, ctx, g, dev, out, stream, g_dt, o_dt, B, T, H, K, chunk_size, gate,
                    alog_ptr, bias_ptr, lower_bound, scale, reverse, plan, chunk_indices,
                    num_chunks_device, cu_seqlens_cpu):
    """A varlen call through a ChunkPlan (kda_gate_args.chunk_plan): the plan
    replaces cu_seqlens (not read) and the chunk table."""
    if not isinstance(plan, ChunkPlan):
        raise KdaTypeError("chunk_plan must be a kda.ChunkPlan, got %s" % type(plan).__name__)
    if chunk_indices is not None or num_chunks_device is not None or cu_seqlens_cpu is not None:
        raise KdaValueError("chunk_plan replaces chunk_indices, num_chunks_device and "
                            "cu_seqlens_cpu: pass none of them with it")
    ptr = plan._ptr_for(dev)  # (the public functions checked that B is 1)
    st = fn(ctx, _ARGS.pack(
        _ARGS_SIZE, g.data_ptr(), g_dt, out.data_ptr(), o_dt, B, T, H, K, chunk_size, gate,
        alog_ptr, bias_ptr, 0.0 if lower_bound is None else lower_bound,
        1.0 if scale is None else scale, scale is not None, reverse, 0, C.KDA_DTYPE_I32,
        plan.num_seqs, 0, 0, 0, 0, ptr), stream)
    if st:
        _raise(_lib, st, _OP_NAMES[op])
    return out


class ChunkPlan:
    """libkda's chunk plan (``kda_chunk_plan``): a varlen batch description
    built on the device, which the gate kernels read faster than a chunk
    table (on the H100 at T=8192 H=16, 8 sequences: 95.5% of copy bandwidth
    against 94.6-94.8% through the table). Pass it as ``chunk_plan=`` to
    :func:`gate_chunk_cumsum` or :func:`chunk_local_cumsum` in place of
    ``chunk_indices``.

    ``ChunkPlan(max_tokens, max_seqs, chunk_size=64, device=None)`` allocates
    room for batches of up to ``max_tokens`` tokens (< 2**31) and
    ``max_seqs`` sequences. :meth:`build` describes one batch, on the
    device's current stream with no host synchronisation (legal in CUDA
    graph capture once the builder is compiled: build once outside capture
    first). Every call reading the plan must have ``g.shape[1]`` equal to
    the built ``total_tokens`` and the plan's ``chunk_size``.

    Rules (libkda's): do not rebuild or close a plan while a kernel that
    reads it may still run; use it on another stream only after an event
    or synchronisation that follows the build. :meth:`close` (also on
    ``with`` exit and garbage collection) synchronises the device first.
    A CUDA graph that captured calls reading the plan reads its memory at
    every replay: keep the plan alive, unclosed, as long as the graph. A
    plan collected during a capture (where no synchronisation may run) is
    destroyed by the next :meth:`close` or :meth:`build` outside capture.
    """

    def __init__(self, max_tokens, max_seqs, chunk_size=64, device=None):
        self._plan = None
        _require_torch()
        for name, v in (("max_tokens", max_tokens), ("max_seqs", max_seqs)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise KdaTypeError("%s must be an int, got %r" % (name, v))
        chunk_size = _check_chunk_size(chunk_size)
        self.device = _device_index(device)  # (None: torch's current device, read once)
        ctx = context(self.device)
        lib = _library()
        p = c_void_p()
        st = lib.kda_chunk_plan_create(ctx, max_tokens, max_seqs, chunk_size, byref(p))
        if st:
            _raise(lib, st, "kda_chunk_plan_create")
        self._plan = p.value
        self.max_tokens, self.max_seqs, self.chunk_size = max_tokens, max_seqs, chunk_size
        self.num_seqs = None
        self.total_tokens = None
        self._cu = None

    def build(self, cu_seqlens, total_tokens):
        """Describes the batch of ``cu_seqlens`` (int32/int64 [N+1] on the
        plan's device, from 0 to ``total_tokens`` without decreasing) for the
        calls that follow. ``total_tokens``: the batch's T (``g.shape[1]``),
        needed on the host. Returns the plan."""
        if self._plan is None:
            raise KdaValueError("this ChunkPlan is closed")
        if _deferred_plans:
            _destroy_deferred_plans()
        idx_dt, N = _seqlens(cu_seqlens, self.device, "the ChunkPlan")
        if not isinstance(total_tokens, int) or isinstance(total_tokens, bool):
            raise KdaTypeError("total_tokens must be an int, got %r" % (total_tokens,))
        lib = _library()
        st = lib.kda_chunk_plan_build(self._plan, cu_seqlens.data_ptr(), idx_dt, N, total_tokens,
                                      _raw_stream(self.device))
        if st:
            _raise(lib, st, "kda_chunk_plan_build")
        self.num_seqs, self.total_tokens = N, total_tokens
        self._cu = cu_seqlens  # read by the build on the stream
        return self

    def _ptr_for(self, dev):
        if self._plan is None:
            raise KdaValueError("this ChunkPlan is closed")
        if self.num_seqs is None:
            raise KdaValueError("this ChunkPlan was never built: call build(cu_seqlens, "
                                "total_tokens) first")
        if dev != self.device:
            raise KdaDeviceError("the ChunkPlan is on cuda:%d but g is on cuda:%d; a plan "
                                 "serves the calls of its own device (make one per device)"
                                 % (self.device, dev))
        return self._plan

    def close(self):
        """Frees the plan's device memory after synchronising its device (a
        kernel on any stream may still read it). Freed even when the
        synchronisation raises (inside a capture it does), which is then
        raised; a captured graph that reads the plan must not outlive it."""
        plan, self._plan = self._plan, None
        if plan is not None:
            try:
                torch.cuda.synchronize(self.device)
            finally:
                _library().kda_chunk_plan_destroy(plan)
                self._cu = None
        _destroy_deferred_plans()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            plan, self._plan = self._plan, None
            if plan is not None:
                _release_collected_plan(self.device, plan)
        except Exception:  # interpreter shutdown, a lost device: nothing to do
            pass

    def __repr__(self):
        state = "closed" if self._plan is None else (
            "not built" if self.num_seqs is None else
            "built for %d sequences, %d tokens" % (self.num_seqs, self.total_tokens))
        return "ChunkPlan(max_tokens=%d, max_seqs=%d, chunk_size=%d, device=%d; %s)" % (
            self.max_tokens, self.max_seqs, self.chunk_size, self.device, state)


def _release_collected_plan(dev, plan):
    """Destroys a garbage-collected plan after synchronising its device;
    never inside a capture (a synchronisation there invalidates it), nor
    when the synchronisation fails (another thread's capture): later."""
    ok = not _capturing(dev)
    if ok:
        try:
            torch.cuda.synchronize(dev)
        except Exception:
            ok = False
    if ok:
        _library().kda_chunk_plan_destroy(plan)
    else:
        _deferred_plans.append((dev, plan))


def _destroy_deferred_plans():
    """Destroys the plans collected during a capture, once outside it."""
    while _deferred_plans:
        try:
            dev, plan = _deferred_plans.pop()
        except IndexError:  # another thread took the last one
            return
        if _capturing(dev):
            _deferred_plans.append((dev, plan))
            return
        try:
            torch.cuda.synchronize(dev)
        except Exception:  # another thread still captures: the next time
            _deferred_plans.append((dev, plan))
            return
        _library().kda_chunk_plan_destroy(plan)


def _capturing(dev, current_too=True):
    """Whether this thread is capturing a CUDA graph on the current stream of
    device ``dev`` (where the call's work goes) or, with ``current_too``, of
    torch's current device. torch.cuda.is_current_stream_capturing() asks
    about the current device only, and a call on cuda:1 tensors runs on
    cuda:1's current stream whatever the current device is. An allocation
    or a synchronisation is unsafe during any capture of the thread (hence
    current_too); a launch is captured only on the stream it goes to."""
    if current_too and torch.cuda.is_current_stream_capturing():
        return True
    if torch.cuda.current_device() == dev:
        return torch.cuda.is_current_stream_capturing()
    with torch.cuda.device(dev):
        return torch.cuda.is_current_stream_capturing()


def _device_index(device):
    if device is None:
        return torch.cuda.current_device()
    if isinstance(device, int) and not isinstance(device, bool):
        if device < 0:  # libkda reads -1 as "the context current on this thread"
            raise KdaValueError("device %d is not a CUDA device ordinal (0, 1, ...)" % device)
        return device
    if isinstance(device, bool):
        raise KdaTypeError("device must be an int, a str or a torch.device, got %r" % (device,))
    d = torch.device(device)
    if d.type != "cuda":  # its index None would otherwise mean the current CUDA device
        raise KdaValueError("%s is not a CUDA device: libkda's contexts and plans live on "
                            "CUDA devices only" % (d,))
    return torch.cuda.current_device() if d.index is None else d.index


_OP_GCC, _OP_CLC, _OP_GATE = 0, 1, 2
_OP_NAMES = ("kda_gate_chunk_cumsum", "kda_chunk_local_cumsum", "kda_gate")


def _prologue(g, output_dtype):
    """Checks on g common to all functions, in an order that does not need a
    GPU (so they can be tested on CPU tensors): returns (dev, g_dt, od, o_dt)."""
    od = g.dtype if output_dtype is None else output_dtype
    o_dt = _OUT_DTYPES.get(od)
    g_dt = _IN_DTYPES.get(g.dtype)
    if g_dt is None:
        raise KdaTypeError("g has dtype %s; supported: float32, float16, bfloat16" % g.dtype)
    if o_dt is None:
        raise KdaTypeError("output_dtype %s is not supported; libkda writes float32 or "
                           "bfloat16" % (od,))
    if not g.is_contiguous():
        raise KdaValueError("g must be contiguous (got shape %s, stride %s); call "
                            ".contiguous() first" % (tuple(g.shape), g.stride()))
    dev = g.get_device()
    if dev < 0:
        raise KdaDeviceError("g is on %s; libkda runs on CUDA tensors only" % g.device)
    return dev, g_dt, od, o_dt


# --------------------------------------------------------------------------
# Public functions (flash-linear-attention signatures)
# --------------------------------------------------------------------------


def gate_chunk_cumsum(g, A_log, chunk_size, scale=None, dt_bias=None, cu_seqlens=None,
                      output_dtype=_FLOAT32, chunk_indices=None, lower_bound=None,
                      use_graph=False, num_chunks_device=None, cu_seqlens_cpu=None,
                      chunk_plan=None, **kwargs):
    """Fused KDA gate activation + chunk-local cumsum; drop-in for
    ``fla.ops.kda.gate.kda_gate_chunk_cumsum``.

    g: [B, T, H, K] raw gate (float32/float16/bfloat16), contiguous, CUDA.
    A_log: [H] (or None: decay scale 1). dt_bias: [H*K] or None.
    Activation: ``-exp(A_log[h]) * softplus(g + dt_bias)``; with
    ``lower_bound`` set, ``lower_bound * sigmoid(exp(A_log[h]) * (g + dt_bias))``.
    The result is summed cumulatively within each chunk of ``chunk_size``
    tokens (per sequence when ``cu_seqlens`` is given) and multiplied by
    ``scale`` when it is not None. Returns a new tensor of g's shape in
    ``output_dtype`` (float32 or bfloat16; None means g's dtype).

    Varlen: B must be 1; ``cu_seqlens`` int32/int64 [N+1] on g's device.
    ``chunk_indices`` (from :func:`prepare_chunk_indices` or upstream's, int32
    or int64) is optional; without it the table is built on the device with
    no host synchronisation. ``use_graph`` is accepted for upstream
    compatibility (padding rows of -1 are always skipped).
    ``num_chunks_device``: optional int32 [1] device tensor holding the real
    row count of a capacity-sized table (set automatically for tables from
    :func:`prepare_chunk_indices`).
    ``cu_seqlens_cpu``: optional host (CPU) copy of ``cu_seqlens``; a batch of
    at most 256 chunks then passes its rows in the launch and reads no table
    (the fastest varlen path; libkda's ``kda_gate_args.cu_seqlens_host``).
    ``chunk_plan``: a built :class:`ChunkPlan` in place of ``chunk_indices``
    (``cu_seqlens`` may then be None; it is not read).
    """
    if not isinstance(g, _Tensor):
        _require_torch()
        raise KdaTypeError("g must be a torch.Tensor, got %s" % type(g).__name__)
    shape = g.shape
    if len(shape) != 4:  # first: the batch check reads shape[0]
        raise KdaValueError("g must be 4-D [B, T, H, K], got shape %s" % (tuple(shape),))
    if (cu_seqlens is not None or chunk_plan is not None) and shape[0] != 1:
        raise KdaValueError("Only batch size 1 is supported when cu_seqlens are provided "
                            "(g has batch %d)" % shape[0])
    if type(chunk_size) is not int or chunk_size not in _VALID_CHUNKS:
        chunk_size = _check_chunk_size(chunk_size)
    if scale is not None and type(scale) is not float:  # (the common cases cost no call)
        scale = _number("scale", scale)
    if lower_bound is not None and type(lower_bound) is not float:
        lower_bound = _number("lower_bound", lower_bound)
    dev, g_dt, od, o_dt = _prologue(g, output_dtype)
    B, T, H, K = shape
    if A_log is not None:
        alog_ptr, A_log = _param("A_log", A_log, H, dev)
    else:
        alog_ptr = 0 if lower_bound is not None else _zero_alog_ptr(dev, H)
    bias_ptr = 0
    if dt_bias is not None:
        bias_ptr, dt_bias = _param("dt_bias", dt_bias, H * K, dev)
    return _call(_OP_GCC, g, dev, g_dt, od, o_dt, B, T, H, K, chunk_size,
                 C.KDA_GATE_SOFTPLUS if lower_bound is None else C.KDA_GATE_LOWER_BOUND,
                 alog_ptr, bias_ptr, lower_bound, scale, 0, cu_seqlens,
                 chunk_indices, num_chunks_device, cu_seqlens_cpu, chunk_plan)


def chunk_local_cumsum(g, chunk_size, reverse=False, scale=None, cu_seqlens=None,
                       head_first=False, output_dtype=_FLOAT32, chunk_indices=None,
                       num_chunks_device=None, cu_seqlens_cpu=None, chunk_plan=None,
                       **kwargs):
    """Chunk-local cumsum of an already activated gate; drop-in for
    ``fla.ops.utils.cumsum.chunk_local_cumsum`` (vector [B, T, H, K] and
    scalar [B, T, H] inputs). ``reverse``: suffix sums within each chunk.
    Sums in double and rounds once, so inputs of either sign whose partial
    sums dwarf the result stay within 2e-5 * (1 + |exact|) in float32.
    ``head_first=True`` is not supported (raises). Other arguments as in
    :func:`gate_chunk_cumsum`.
    """
    if not isinstance(g, _Tensor):
        _require_torch()
        raise KdaTypeError("g must be a torch.Tensor, got %s" % type(g).__name__)
    shape = g.shape
    if head_first:
        raise KdaValueError("head_first=True is not supported by libkda (use the [B, T, H(, K)] "
                            "layout)")
    nd = len(shape)
    if nd == 4:
        B, T, H, K = shape
    elif nd == 3:
        B, T, H = shape
        K = 1
    else:
        raise KdaValueError("Unsupported input shape %s, which should be [B, T, H] or "
                            "[B, T, H, K]" % (tuple(shape),))
    if (cu_seqlens is not None or chunk_plan is not None) and B != 1:
        raise KdaValueError("Only batch size 1 is supported when cu_seqlens are provided "
                            "(g has batch %d)" % B)
    if type(chunk_size) is not int or chunk_size not in _VALID_CHUNKS:
        chunk_size = _check_chunk_size(chunk_size)
    if scale is not None and type(scale) is not float:
        scale = _number("scale", scale)
    dev, g_dt, od, o_dt = _prologue(g, output_dtype)
    return _call(_OP_CLC, g, dev, g_dt, od, o_dt, B, T, H, K, chunk_size, C.KDA_GATE_NONE, 0, 0,
                 None, scale, 1 if reverse else 0, cu_seqlens, chunk_indices, num_chunks_device,
                 cu_seqlens_cpu, chunk_plan)


def gate(g, A_log=None, dt_bias=None, lower_bound=None, output_dtype=_FLOAT32):
    """The KDA gate activation alone (forward only); same signature as
    upstream ``fla.ops.kda.gate.fused_kda_gate`` / ``kda_gate_fwd``.

    g: [..., H, K]; A_log: H elements or None (decay scale 1); dt_bias: H*K
    elements or None. Returns ``-exp(A_log) * softplus(g + dt_bias)`` or, with
    ``lower_bound``, ``lower_bound * sigmoid(exp(A_log) * (g + dt_bias))``,
    in ``output_dtype`` (float32 or bfloat16; None means g's dtype). No
    autograd: the result never requires grad.
    """
    if not isinstance(g, _Tensor):
        _require_torch()
        raise KdaTypeError("g must be a torch.Tensor, got %s" % type(g).__name__)
    shape = g.shape
    if len(shape) < 2:
        raise KdaValueError("g must be [..., H, K], got shape %s" % (tuple(shape),))
    dev, g_dt, od, o_dt = _prologue(g, output_dtype)
    H, K = shape[-2], shape[-1]
    if lower_bound is not None and type(lower_bound) is not float:
        lower_bound = _number("lower_bound", lower_bound)
    rows = g.numel() // (H * K) if H * K else 0
    if A_log is not None:
        alog_ptr, A_log = _param("A_log", A_log, H, dev)
    else:
        alog_ptr = 0 if lower_bound is not None or not rows else _zero_alog_ptr(dev, H)
    bias_ptr = 0
    if dt_bias is not None:
        bias_ptr, dt_bias = _param("dt_bias", dt_bias, H * K, dev)
    return _call(_OP_GATE, g, dev, g_dt, od, o_dt, 1, rows, H, K, 64,
                 C.KDA_GATE_SOFTPLUS if lower_bound is None else C.KDA_GATE_LOWER_BOUND,
                 alog_ptr, bias_ptr, lower_bound, None, 0, None, None, None)


def prepare_chunk_indices(cu_seqlens, chunk_size, cu_seqlens_cpu=None, *, total_tokens=None,
                          exact=False):
    """The (sequence, chunk) table of a packed varlen batch, built by libkda.

    Default (``exact=False``): built on the device by
    kda_chunk_indices_build_device, with no host synchronisation when the
    token count is known on the host (``total_tokens``, or
    ``cu_seqlens_cpu``). Returns an int32 tensor of **capacity**
    ``ceil(T / chunk_size) + N`` rows; rows past the real count are -1 (every
    libkda kernel skips them). The real count is kept in an int32 [1] device
    tensor attached as ``table._kda_num_chunks`` (see :func:`num_chunks_of`),
    which gate_chunk_cumsum / chunk_local_cumsum use automatically.

    ``exact=True``: exactly upstream's result (``num_chunks`` rows, the dtype
    and device of ``cu_seqlens``), at the cost of one synchronisation, for
    tables fed to upstream Triton kernels that do not skip padding rows.

    Without ``total_tokens`` and ``cu_seqlens_cpu`` the token count is read
    from ``cu_seqlens[-1]`` (one synchronisation, like upstream); that is
    refused during CUDA graph capture. A CPU ``cu_seqlens`` gives a CPU table
    built on the host (exact rows).
    """
    _require_torch()
    chunk_size = _check_chunk_size(chunk_size)
    if not isinstance(cu_seqlens, _Tensor):
        raise KdaTypeError("cu_seqlens must be a torch.Tensor, got %s" % type(cu_seqlens).__name__)
    lib = _library()
    dev = cu_seqlens.get_device()
    if dev < 0:
        return _prepare_host(lib, cu_seqlens, chunk_size, exact)
    idx_dt, N = _seqlens(cu_seqlens, dev)
    if total_tokens is None:
        if cu_seqlens_cpu is not None:
            total_tokens = int(cu_seqlens_cpu[-1])
        else:
            if _capturing(dev):
                raise KdaCaptureColdError(
                    "prepare_chunk_indices needs the token count on the host: pass "
                    "total_tokens= (or cu_seqlens_cpu=) inside CUDA graph capture",
                    C.KDA_ERROR_CAPTURE_COLD, "KDA_ERROR_CAPTURE_COLD")
            total_tokens = int(cu_seqlens[-1].item())
    T = int(total_tokens)
    ctx = _contexts.get(dev)
    if ctx is None:
        ctx = _create_context(dev)
    if T <= 0:
        table = torch.empty(0, 2, dtype=torch.int32, device=cu_seqlens.device)
        table._kda_num_chunks = torch.zeros(1, dtype=torch.int32, device=cu_seqlens.device)
        return table.to(cu_seqlens.dtype) if exact else table
    cap = lib.kda_chunk_indices_capacity(T, N, chunk_size)
    if cap < 0:
        raise KdaValueError("kda_chunk_indices_capacity(%d, %d, %d) rejected its arguments"
                            % (T, N, chunk_size))
    buf = torch.empty(cap * 2 + 1, dtype=torch.int32, device=cu_seqlens.device)
    table = buf[:cap * 2].view(cap, 2)
    count = buf[cap * 2:]
    st = lib.kda_chunk_indices_build_device(ctx, cu_seqlens.data_ptr(), idx_dt, N, T, chunk_size,
                                            table.data_ptr(), cap, count.data_ptr(),
                                            _raw_stream(dev))
    if st != C.KDA_OK:
        _raise(lib, st, "kda_chunk_indices_build_device")
    if exact:
        return table[:int(count.item())].to(cu_seqlens.dtype)
    table._kda_num_chunks = count
    return table


def _prepare_host(lib, cu_seqlens, chunk_size, exact):
    dt = _IDX_DTYPES.get(cu_seqlens.dtype)
    if dt is None:
        raise KdaTypeError("cu_seqlens has dtype %s; supported: int32, int64" % cu_seqlens.dtype)
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise KdaValueError("cu_seqlens must be 1-D with at least 2 entries (got shape %s)"
                            % (tuple(cu_seqlens.shape),))
    cu = cu_seqlens.contiguous()
    N = cu.numel() - 1
    cap = lib.kda_chunk_indices_capacity(max(int(cu[-1]), 0), N, chunk_size)
    if cap < 0:
        raise KdaValueError("cu_seqlens[-1] = %d is out of range" % int(cu[-1]))
    out = torch.empty(max(cap, 1), 2, dtype=torch.int32)
    n = c_int64()
    st = lib.kda_chunk_indices_build_host(cu.data_ptr(), dt, N, chunk_size, out.data_ptr(),
                                          cap, byref(n))
    if st != C.KDA_OK:
        _raise(lib, st, "kda_chunk_indices_build_host")
    table = out[:n.value]
    return table.to(cu_seqlens.dtype) if exact else table.clone()


def num_chunks_of(chunk_indices):
    """The int32 [1] device tensor with the real row count of a table from
    :func:`prepare_chunk_indices` (None for any other tensor)."""
    return getattr(chunk_indices, "_kda_num_chunks", None)


# Upstream names.
kda_gate_chunk_cumsum = gate_chunk_cumsum
fused_kda_gate = gate
kda_gate_fwd = gate
