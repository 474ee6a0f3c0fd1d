"""ctypes mirror of include/kda/kda.h and the loader of libkda.so.

Nothing here needs torch or a GPU. The library itself is loaded lazily, on
the first call that needs it (``load_library()``), so ``import kda`` works on
any machine.

The structures below mirror the C structs field for field;
tests/test_cpu_header_layout.py parses the header and fails when they drift.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from ctypes import (
    POINTER,
    Structure,
    c_char,
    c_char_p,
    c_double,
    c_float,
    c_int,
    c_int32,
    c_int64,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)

# --------------------------------------------------------------------------
# Version this package was written against (KDA_VERSION_* of kda.h).
# The loaded library must have the same MAJOR.MINOR (any PATCH).
# --------------------------------------------------------------------------
EXPECTED_VERSION_MAJOR = 0
EXPECTED_VERSION_MINOR = 1
EXPECTED_VERSION_PATCH = 0
EXPECTED_VERSION_NUMBER = (
    EXPECTED_VERSION_MAJOR * 10000 + EXPECTED_VERSION_MINOR * 100 + EXPECTED_VERSION_PATCH
)

# --------------------------------------------------------------------------
# Status codes (KDA_STATUS_MAP; appended only, never renumbered)
# --------------------------------------------------------------------------
KDA_OK = 0
KDA_ERROR_INVALID_ARGUMENT = 1
KDA_ERROR_NULL_POINTER = 2
KDA_ERROR_BAD_SHAPE = 3
KDA_ERROR_BAD_CHUNK_SIZE = 4
KDA_ERROR_UNSUPPORTED_HEAD_DIM = 5
KDA_ERROR_UNSUPPORTED_DTYPE = 6
KDA_ERROR_BAD_OPTIONS = 7
KDA_ERROR_NO_DRIVER = 8
KDA_ERROR_NO_DEVICE = 9
KDA_ERROR_CUDA = 10
KDA_ERROR_COMPILE = 11
KDA_ERROR_OUT_OF_MEMORY = 12
KDA_ERROR_CAPTURE_COLD = 13
KDA_ERROR_BUFFER_TOO_SMALL = 14
KDA_ERROR_BAD_SEQLENS = 15
KDA_ERROR_KERNEL_SOURCE = 16
KDA_ERROR_INTERNAL = 17
KDA_ERROR_STORE = 18
KDA_ERROR_READ_ONLY = 19
KDA_ERROR_CONTEXT_LOST = 20

STATUS_NAMES = {
    v: k for k, v in list(globals().items()) if k == "KDA_OK" or k.startswith("KDA_ERROR_")
}

# kda_dtype
KDA_DTYPE_F32 = 0
KDA_DTYPE_F16 = 1
KDA_DTYPE_BF16 = 2
KDA_DTYPE_I32 = 3
KDA_DTYPE_I64 = 4

# kda_gate_kind
KDA_GATE_NONE = 0
KDA_GATE_SOFTPLUS = 1
KDA_GATE_LOWER_BOUND = 2

# kda_tune_mode / kda_log_level (kda_options fields added with autotuning)
KDA_TUNE_ON = 0
KDA_TUNE_OFF = 1
KDA_TUNE_CACHED = 2
KDA_TUNE_BACKGROUND = 3
KDA_LOG_ERROR = 0
KDA_LOG_WARN = 1
KDA_LOG_INFO = 2
KDA_LOG_DEBUG = 3

# kda_kernel
KDA_KERNEL_GATE_CHUNK_CUMSUM = 0
KDA_KERNEL_CHUNK_LOCAL_CUMSUM = 1
KDA_KERNEL_GATE = 2
KDA_KERNEL_CHUNK_INDICES = 3

KDA_MAX_HEAD_DIM = 256
KDA_MAX_HEADS = 4096
KDA_MIN_CHUNK = 16
KDA_MAX_CHUNK = 256

# C enums are int-sized on every ABI the library supports.
c_enum = c_int

# --------------------------------------------------------------------------
# Structures (field names, order and types exactly as in kda.h)
# --------------------------------------------------------------------------


class KdaOptions(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("device", c_int32),
        ("kernel_dir", c_char_p),
        # Fields below were added with autotuning.
        ("tune_mode", c_int32),
        ("db_path", c_char_p),
        ("tune_budget_ms", c_double),
        ("log_fn", c_void_p),  # kda_log_fn (function pointer)
        ("log_user", c_void_p),
        ("log_level", c_int32),
        ("reserved0", c_int32),
        # Fields below were added with parallel tuning compiles.
        ("compile_threads", c_int32),
        ("reserved1", c_int32),
        # Fields below were added with programmatic dependent launch.
        ("launch_overlap", c_int32),  # kda_launch_overlap
    ]


class KdaDeviceInfo(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("name", c_char * 256),
        ("ordinal", c_int32),
        ("cc_major", c_int32),
        ("cc_minor", c_int32),
        ("sm_count", c_int32),
        ("l2_bytes", c_int32),
        ("pci_device_id", c_int32),
        ("driver_version", c_int32),
        ("nvrtc_major", c_int32),
        ("nvrtc_minor", c_int32),
    ]


class KdaStats(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("nvrtc_compiles", c_uint64),
        ("modules_loaded", c_uint64),
        ("cache_hits", c_uint64),
        ("cache_misses", c_uint64),
        ("launches", c_uint64),
        ("compile_ms_total", c_double),
        # Fields below were added with autotuning.
        ("tuning_runs", c_uint64),
        ("db_result_hits", c_uint64),
        ("db_cubin_hits", c_uint64),
        ("memory_hits", c_uint64),
        ("persist_failures", c_uint64),
        ("rejected_candidates", c_uint64),
        ("tune_ms_total", c_double),
        ("background_jobs", c_uint64),
        # Fields below were added with launch overlap.
        ("launch_overlap_active", c_int32),
        # Fields below were added with the tuning timing lock.
        ("tuning_timing_waits", c_uint64),
        ("tuning_timing_wait_ms_total", c_double),
        # Fields below were added with cubins of other NVRTC builds.
        ("db_cubin_other_nvrtc_hits", c_uint64),
    ]


class KdaPrewarmResult(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("outcome", c_int32),
        ("config", c_char * 64),
        ("median_us", c_double),
        ("heuristic_us", c_double),
        ("compile_ms", c_double),
        ("tune_ms", c_double),
        ("candidates", c_int32),
        ("rejected", c_int32),
        ("bucket", c_int32),
    ]


KDA_PREWARM_TUNED = 0
KDA_PREWARM_SKIPPED = 1
KDA_PREWARM_FAILED = 2
KDA_MAX_HOST_ROWS = 256


class KdaGateArgs(Structure):
    _fields_ = [
        ("struct_size", c_uint32),
        ("g", c_void_p),
        ("g_dtype", c_enum),
        ("out", c_void_p),
        ("out_dtype", c_enum),
        ("batch", c_int64),
        ("seq_len", c_int64),
        ("num_heads", c_int32),
        ("head_dim", c_int32),
        ("chunk_size", c_int32),
        ("gate", c_enum),
        ("A_log", c_void_p),  # const float *
        ("dt_bias", c_void_p),  # const float *
        ("lower_bound", c_float),
        ("scale", c_float),
        ("has_scale", c_int32),
        ("reverse", c_int32),
        ("cu_seqlens", c_void_p),
        ("cu_seqlens_dtype", c_enum),
        ("num_seqs", c_int64),
        ("chunk_indices", c_void_p),  # const int32_t *
        ("num_chunks", c_int64),
        ("num_chunks_device", c_void_p),  # const int32_t *
        ("cu_seqlens_host", c_void_p),  # const void * (host)
        ("chunk_plan", c_void_p),  # const kda_chunk_plan * (kda.ChunkPlan)
    ]


# Prefix sizes of structs that grew: an older library knows only a prefix.
# (kda_options before autotuning ended after kernel_dir.)
OPTIONS_V1_SIZE = ctypes.sizeof(c_uint32) + ctypes.sizeof(c_int32) + ctypes.sizeof(c_char_p)
# (kda_options before parallel tuning compiles ended after log_level and its
# padding, where reserved0 now is.)
OPTIONS_V2_SIZE = KdaOptions.compile_threads.offset
# (kda_options before programmatic dependent launch ended after
# compile_threads and its padding, where reserved1 now is.)
OPTIONS_V3_SIZE = KdaOptions.launch_overlap.offset
STATS_V1_SIZE = KdaStats.tuning_runs.offset
# (kda_stats before background tuning ended after tune_ms_total.)
STATS_V2_SIZE = KdaStats.background_jobs.offset
# (kda_stats before launch overlap ended after background_jobs.)
STATS_V3_SIZE = KdaStats.launch_overlap_active.offset
# (kda_stats before the tuning timing lock ended after launch_overlap_active
# and its padding.)
STATS_V4_SIZE = KdaStats.tuning_timing_waits.offset
# (kda_stats before cubins of other NVRTC builds ended after
# tuning_timing_wait_ms_total.)
STATS_V5_SIZE = KdaStats.db_cubin_other_nvrtc_hits.offset
# Sizes kda_context_get_stats is tried with, newest layout first: the
# library accepts only its own sizeof(kda_stats).
STATS_SIZES = (ctypes.sizeof(KdaStats), STATS_V5_SIZE, STATS_V4_SIZE, STATS_V3_SIZE,
               STATS_V2_SIZE, STATS_V1_SIZE)

# --------------------------------------------------------------------------
# Exceptions
# --------------------------------------------------------------------------


class KdaError(RuntimeError):
    """A libkda call failed. ``status`` is the kda_status code, ``status_name``
    its symbolic name and ``message`` the library's kda_last_error() text."""

    def __init__(self, message, status=None, status_name=None):
        super().__init__(message)
        self.status = status
        self.status_name = status_name
        self.message = message


class KdaLibraryNotFoundError(KdaError, OSError):
    """libkda.so could not be loaded from any of the places tried."""


class KdaVersionError(KdaError, ImportError):
    """The loaded libkda has a MAJOR.MINOR this package was not written for."""


class KdaValueError(KdaError, ValueError):
    """Invalid argument (shape, chunk size, head dim, seqlens...)."""


class KdaTypeError(KdaError, TypeError):
    """Unsupported dtype or a non-tensor where a tensor is needed."""


class KdaDeviceError(KdaError):
    """No CUDA driver, no such device, torch/CUDA unavailable, or a tensor on
    the wrong device."""


class KdaCaptureColdError(KdaError):
    """A specialization that is not compiled yet was met inside CUDA graph
    capture (KDA_ERROR_CAPTURE_COLD). Call the function once with the same
    shapes, dtypes and flags outside capture to warm it, then capture."""


class KdaOutOfMemoryError(KdaError, MemoryError):
    """The library ran out of host or device memory."""


class KdaContextLostError(KdaDeviceError):
    """A kernel faulted on the device (libkda's, or any other in the process:
    KDA_ERROR_CONTEXT_LOST): the CUDA context is lost, every later CUDA call
    of the process on that device fails, and only a restart recovers. No
    tuning result of the interrupted run was stored."""


_STATUS_EXC = {
    KDA_ERROR_INVALID_ARGUMENT: KdaValueError,
    KDA_ERROR_NULL_POINTER: KdaValueError,
    KDA_ERROR_BAD_SHAPE: KdaValueError,
    KDA_ERROR_BAD_CHUNK_SIZE: KdaValueError,
    KDA_ERROR_UNSUPPORTED_HEAD_DIM: KdaValueError,
    KDA_ERROR_UNSUPPORTED_DTYPE: KdaTypeError,
    KDA_ERROR_BAD_OPTIONS: KdaValueError,
    KDA_ERROR_NO_DRIVER: KdaDeviceError,
    KDA_ERROR_NO_DEVICE: KdaDeviceError,
    KDA_ERROR_OUT_OF_MEMORY: KdaOutOfMemoryError,
    KDA_ERROR_CONTEXT_LOST: KdaContextLostError,
    KDA_ERROR_CAPTURE_COLD: KdaCaptureColdError,
    KDA_ERROR_BUFFER_TOO_SMALL: KdaValueError,
    KDA_ERROR_BAD_SEQLENS: KdaValueError,
}

_CAPTURE_HINT = (
    " -- this shape/dtype/flag combination has not been compiled yet and cannot be "
    "compiled during CUDA graph capture: call the function once with the same "
    "arguments outside torch.cuda.graph() (warm-up), then capture"
)


def error_from_status(lib, status, what):
    """Builds the exception for a failed call; the message is kda_last_error()."""
    try:
        name = lib.kda_status_name(status).decode()
        msg = lib.kda_last_error().decode(errors="replace")
        if not msg:
            msg = lib.kda_status_string(status).decode()
    except Exception:  # pragma: no cover - defensive
        name, msg = STATUS_NAMES.get(status, "KDA_ERROR_%d" % status), ""
    text = "%s failed: %s" % (what, msg) if msg.startswith(name) else \
        "%s failed: %s: %s" % (what, name, msg)
    if status == KDA_ERROR_CAPTURE_COLD:
        text += _CAPTURE_HINT
    return _STATUS_EXC.get(status, KdaError)(text, status, name)


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------

_PKG_LIB_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_lib")
_load_lock = threading.Lock()
_lib = None
_lib_path = None


def package_library_candidates(lib_dir=None):
    """libkda.so* files shipped inside the package folder, best first."""
    d = _PKG_LIB_DIR if lib_dir is None else lib_dir
    try:
        names = os.listdir(d)
    except OSError:
        return []
    names = [n for n in names if n == "libkda.so" or n.startswith("libkda.so.")]
    # Prefer the unversioned link, then the SONAME, then the full version.
    names.sort(key=lambda n: (n.count("."), n))
    return [os.path.join(d, n) for n in names]


def library_search_order(environ=None, lib_dir=None):
    """The places load_library() tries, in order, as (origin, path_or_name)."""
    env = os.environ if environ is None else environ
    explicit = env.get("KDA_LIBRARY")
    if explicit:
        return [("KDA_LIBRARY", explicit)]
    order = [("package folder", p) for p in package_library_candidates(lib_dir)]
    if not order:
        order.append(("package folder", os.path.join(_PKG_LIB_DIR if lib_dir is None else lib_dir,
                                                     "libkda.so*")))
    found = ctypes.util.find_library("kda")
    if found:
        order.append(("loader path (ctypes.util.find_library)", found))
    for name in ("libkda.so.0", "libkda.so"):
        if name != found:
            order.append(("loader path", name))
    return order


def _try_open(path):
    if path.endswith("*"):
        raise OSError("no such file")
    return ctypes.CDLL(path)


def _declare(lib):
    """Prototypes of every function the package uses."""
    P = POINTER

    def fn(name, restype, *argtypes):
        f = getattr(lib, name)
        f.restype = restype
        f.argtypes = list(argtypes)
        return f

    fn("kda_version", c_char_p)
    fn("kda_version_number", c_uint32)
    fn("kda_status_string", c_char_p, c_int)
    fn("kda_status_name", c_char_p, c_int)
    fn("kda_last_error", c_char_p)
    fn("kda_context_create", c_int, c_void_p, P(c_void_p))
    fn("kda_context_destroy", None, c_void_p)
    fn("kda_context_get_device_info", c_int, c_void_p, P(KdaDeviceInfo))
    fn("kda_context_get_stats", c_int, c_void_p, c_void_p)
    for name in ("kda_gate_chunk_cumsum", "kda_chunk_local_cumsum", "kda_gate"):
        fn(name, c_int, c_void_p, P(KdaGateArgs), c_void_p)
    fn("kda_chunk_indices_capacity", c_int64, c_int64, c_int64, c_int32)
    fn("kda_chunk_indices_build_host", c_int, c_void_p, c_int, c_int64, c_int32, c_void_p,
       c_int64, P(c_int64))
    fn("kda_chunk_indices_build_device", c_int, c_void_p, c_void_p, c_int, c_int64, c_int64,
       c_int32, c_void_p, c_int64, c_void_p, c_void_p)
    fn("kda_chunk_plan_create", c_int, c_void_p, c_int64, c_int64, c_int32, P(c_void_p))
    fn("kda_chunk_plan_build", c_int, c_void_p, c_void_p, c_int, c_int64, c_int64, c_void_p)
    fn("kda_chunk_plan_destroy", None, c_void_p)
    fn("kda_layer_workspace_size", c_size_t, c_int64, c_int64, c_int32)
    fn("kda_layer_gate_fwd", c_int, c_void_p, P(KdaGateArgs), c_void_p, c_size_t, c_void_p)
    # kda_gate_args_default() is read through a 1 KiB buffer so that a newer
    # library with a bigger struct cannot write past our memory (structs over
    # 16 bytes are returned through a caller-provided pointer on x86-64 and
    # AArch64; kda_gate_args always was). kda_options_default() is not
    # called: kda_options was 16 bytes before autotuning, returned in
    # registers, so its return convention changed with the library version.
    fn("kda_gate_args_default", _Big)
    fn("kda_prewarm", c_int, c_void_p, c_int, P(KdaGateArgs), c_int32, P(KdaPrewarmResult))
    fn("kda_token_bucket", c_int32, c_int64)
    fn("kda_context_db_path", c_char_p, c_void_p)


class _Big(Structure):
    """Return buffer for kda_*_default(): 1 KiB, larger than any struct."""

    _fields_ = [("struct_size", c_uint32), ("_rest", c_char * 1020)]


def check_version(number, path="libkda"):
    major, minor = number // 10000, (number // 100) % 100
    if (major, minor) != (EXPECTED_VERSION_MAJOR, EXPECTED_VERSION_MINOR):
        raise KdaVersionError(
            "%s is version %d.%d.%d (kda_version_number() = %d); this kda package expects "
            "%d.%d.x (%d). Rebuild the library or install the matching package."
            % (path, major, minor, number % 100, number, EXPECTED_VERSION_MAJOR,
               EXPECTED_VERSION_MINOR, EXPECTED_VERSION_NUMBER))


def load_library(environ=None, lib_dir=None, force=False):
    """Loads libkda once (thread-safe) and returns the ctypes handle.

    Search order: $KDA_LIBRARY if set (and nothing else), else libkda.so* in
    the package's _lib folder, else the dynamic loader's path
    (ctypes.util.find_library("kda"), "libkda.so.0", "libkda.so").
    Raises KdaLibraryNotFoundError listing every place tried.
    """
    global _lib, _lib_path
    if _lib is not None and not force:
        return _lib
    with _load_lock:
        if _lib is not None and not force:
            return _lib
        tried = []
        for origin, path in library_search_order(environ, lib_dir):
            try:
                lib = _try_open(path)
            except OSError as e:
                tried.append("  %s: %s (%s)" % (origin, path, e))
                continue
            try:
                _declare(lib)
            except AttributeError as e:
                tried.append("  %s: %s (not libkda: %s)" % (origin, path, e))
                continue
            check_version(int(lib.kda_version_number()), path)
            _init_layouts(lib)
            if force:
                return lib
            _lib, _lib_path = lib, path
            return lib
        env = os.environ if environ is None else environ
        hint = ("KDA_LIBRARY is set, so no other place was tried; fix or unset it."
                if env.get("KDA_LIBRARY") else
                "Build the library (cmake -B build -S . && cmake --build build), then set "
                "KDA_LIBRARY=/path/to/libkda.so, or reinstall the package with "
                "KDA_BUILD_DIR=/path/to/build, or put libkda.so.0 on LD_LIBRARY_PATH.")
        raise KdaLibraryNotFoundError(
            "cannot load libkda; tried, in order:\n%s\n%s" % ("\n".join(tried), hint))


def library_path():
    """Path (or loader name) of the loaded library, None before loading."""
    return _lib_path


# --------------------------------------------------------------------------
# Struct sizes the loaded library knows, and default templates
# --------------------------------------------------------------------------

GATE_ARGS_DEFAULT = None  # bytes of kda_gate_args_default()
LIB_GATE_ARGS_SIZE = None


def _init_layouts(lib):
    global LIB_GATE_ARGS_SIZE, GATE_ARGS_DEFAULT
    a = lib.kda_gate_args_default()
    LIB_GATE_ARGS_SIZE = int(a.struct_size)
    if LIB_GATE_ARGS_SIZE != ctypes.sizeof(KdaGateArgs):
        raise KdaVersionError(
            "kda_gate_args is %d bytes in the loaded library but %d in this package: "
            "header and package disagree (update kda/_capi.py)"
            % (LIB_GATE_ARGS_SIZE, ctypes.sizeof(KdaGateArgs)))
    GATE_ARGS_DEFAULT = ctypes.string_at(ctypes.addressof(a), LIB_GATE_ARGS_SIZE)


def options_default(device=0):
    """kda_options as kda_options_default() fills it, built here: the
    function itself returns a struct whose size (and so its return
    convention) depends on the library's version."""
    o = KdaOptions()
    o.struct_size = ctypes.sizeof(KdaOptions)
    o.device = device
    o.kernel_dir = None
    o.tune_mode = KDA_TUNE_ON
    o.db_path = None
    o.tune_budget_ms = 1000.0
    o.log_fn = None
    o.log_user = None
    o.log_level = KDA_LOG_WARN
    o.reserved0 = 0
    o.compile_threads = 0
    o.reserved1 = 0
    o.launch_overlap = 0  # KDA_LAUNCH_OVERLAP_AUTO
    return o


# Sizes kda_context_create is tried with: this package's layout, then the
# layout before autotuning (a library built before those fields existed
# rejects the larger size with KDA_ERROR_BAD_OPTIONS and reads only the
# prefix it knows when given its own size).
OPTIONS_SIZES = (ctypes.sizeof(KdaOptions), OPTIONS_V3_SIZE, OPTIONS_V2_SIZE, OPTIONS_V1_SIZE)


def context_create(lib, device):
    """kda_context_create for a device ordinal (or -1). Returns the context
    pointer (int) or raises."""
    out = c_void_p()
    st = KDA_ERROR_BAD_OPTIONS
    for size in OPTIONS_SIZES:
        o = options_default(device)
        o.struct_size = size
        st = lib.kda_context_create(ctypes.byref(o), ctypes.byref(out))
        if st != KDA_ERROR_BAD_OPTIONS:
            break
    if st != KDA_OK:
        raise error_from_status(lib, st, "kda_context_create(device=%d)" % device)
    return out.value


def gate_args():
    """A fresh kda_gate_args filled with kda_gate_args_default()."""
    return KdaGateArgs.from_buffer_copy(GATE_ARGS_DEFAULT)
