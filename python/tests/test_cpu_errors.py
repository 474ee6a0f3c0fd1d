"""Library statuses become exceptions carrying kda_last_error(); Python-side
argument validation (where upstream asserts) gives clear messages."""

import ctypes

import pytest

import kda
from kda import _capi as C
from kda import _ops


def test_status_maps_to_exception_with_library_message(lib):
    a = C.gate_args()
    st = lib.kda_gate_chunk_cumsum(None, ctypes.byref(a), None)
    assert st == C.KDA_ERROR_NULL_POINTER
    e = C.error_from_status(lib, st, "kda_gate_chunk_cumsum")
    assert isinstance(e, kda.KdaValueError) and isinstance(e, ValueError)
    assert e.status == st and e.status_name == "KDA_ERROR_NULL_POINTER"
    assert lib.kda_last_error().decode() in str(e)


def test_capture_cold_message(lib):
    e = C.error_from_status(lib, C.KDA_ERROR_CAPTURE_COLD, "kda_gate")
    assert isinstance(e, kda.KdaCaptureColdError)
    assert "warm" in str(e) and "torch.cuda.graph" in str(e)


def test_exception_classes(lib):
    cases = {
        C.KDA_ERROR_UNSUPPORTED_DTYPE: (kda.KdaTypeError, TypeError),
        C.KDA_ERROR_BAD_SHAPE: (kda.KdaValueError, ValueError),
        C.KDA_ERROR_BAD_CHUNK_SIZE: (kda.KdaValueError, ValueError),
        C.KDA_ERROR_NO_DRIVER: (kda.KdaDeviceError,),
        C.KDA_ERROR_NO_DEVICE: (kda.KdaDeviceError,),
        C.KDA_ERROR_OUT_OF_MEMORY: (kda.KdaOutOfMemoryError, MemoryError),
        C.KDA_ERROR_CONTEXT_LOST: (kda.KdaContextLostError, kda.KdaDeviceError),
        C.KDA_ERROR_COMPILE: (kda.KdaError,),
    }
    for st, classes in cases.items():
        e = C.error_from_status(lib, st, "f")
        for cls in classes:
            assert isinstance(e, cls), (st, cls)
        assert isinstance(e, RuntimeError)


def test_library_validation_reaches_python(lib):
    """A library-side check (here: chunk size) surfaces with its message."""
    a = C.gate_args()
    st = lib.kda_chunk_indices_build_host(None, C.KDA_DTYPE_I32, 1, 64, None, 0, None)
    assert st == C.KDA_ERROR_NULL_POINTER
    cu = (ctypes.c_int32 * 3)(0, 5, 3)  # decreasing
    out = (ctypes.c_int32 * 64)()
    n = ctypes.c_int64()
    st = lib.kda_chunk_indices_build_host(cu, C.KDA_DTYPE_I32, 2, 16, out, 32, ctypes.byref(n))
    e = C.error_from_status(lib, st, "kda_chunk_indices_build_host")
    assert isinstance(e, kda.KdaValueError) and "decreases" in str(e)
    del a


def test_chunk_size_checks():
    for bad, msg in ((48, "power of 2"), (0, "power of 2"), (8, r"\[16, 256\]"),
                     (512, r"\[16, 256\]")):
        with pytest.raises(kda.KdaValueError, match=msg):
            _ops._check_chunk_size(bad)
    with pytest.raises(kda.KdaTypeError):
        _ops._check_chunk_size(64.0)
    _ops._check_chunk_size(64)


def test_context_create_without_driver_or_bad_device(lib, monkeypatch):
    """kda_context_create on a bad ordinal (or a machine with no driver)
    fails with a KdaDeviceError naming the reason."""
    with pytest.raises(kda.KdaDeviceError) as ei:
        C.context_create(lib, 4095)
    assert ei.value.status in (C.KDA_ERROR_NO_DRIVER, C.KDA_ERROR_NO_DEVICE)
    assert "kda_context_create" in str(ei.value)


# ---- torch-dependent validation (CPU tensors: no GPU needed) -------------


@pytest.fixture
def t(torch_mod):
    return torch_mod


def test_validation_batch_with_cu_seqlens(t):
    g = t.randn(2, 64, 2, 8)
    cu = t.tensor([0, 64], dtype=t.int32)
    with pytest.raises(kda.KdaValueError, match="Only batch size 1 is supported"):
        kda.gate_chunk_cumsum(g, t.zeros(2), 64, cu_seqlens=cu)
    with pytest.raises(kda.KdaValueError, match="Only batch size 1 is supported"):
        kda.chunk_local_cumsum(g, 64, cu_seqlens=cu)


def test_validation_shapes(t):
    with pytest.raises(kda.KdaValueError, match="4-D"):
        kda.gate_chunk_cumsum(t.randn(64, 2, 8), t.zeros(2), 64)
    with pytest.raises(kda.KdaValueError, match="Unsupported input shape"):
        kda.chunk_local_cumsum(t.randn(64, 8), 64)
    with pytest.raises(kda.KdaValueError, match="head_first"):
        kda.chunk_local_cumsum(t.randn(1, 64, 2, 8), 64, head_first=True)
    with pytest.raises(kda.KdaValueError, match="power of 2"):
        kda.chunk_local_cumsum(t.randn(1, 64, 2, 8), 48)
    with pytest.raises(kda.KdaValueError, match=r"\.\.\., H, K"):
        kda.gate(t.randn(8))


def test_validation_dtypes(t):
    with pytest.raises(kda.KdaTypeError, match="float32, float16, bfloat16"):
        kda.gate_chunk_cumsum(t.randn(1, 64, 2, 8, dtype=t.float64), t.zeros(2), 64)
    with pytest.raises(kda.KdaTypeError, match="output_dtype"):
        kda.gate_chunk_cumsum(t.randn(1, 64, 2, 8), t.zeros(2), 64, output_dtype=t.float16)
    with pytest.raises(kda.KdaTypeError, match="output_dtype"):
        # None means g's dtype (upstream): float16 output is not supported
        kda.chunk_local_cumsum(t.randn(1, 64, 2, 8, dtype=t.float16), 64, output_dtype=None)
    with pytest.raises(kda.KdaTypeError, match="torch.Tensor"):
        kda.gate([1.0, 2.0])


def test_validation_contiguity(t):
    g = t.randn(1, 8, 64, 2).transpose(1, 2)  # [1, 64, 8, 2] non-contiguous
    with pytest.raises(kda.KdaValueError, match="contiguous"):
        kda.chunk_local_cumsum(g, 64)
    with pytest.raises(kda.KdaValueError, match="contiguous"):
        kda.gate(g)


def test_validation_device(t):
    with pytest.raises(kda.KdaDeviceError, match="is on cpu"):
        kda.gate_chunk_cumsum(t.randn(1, 64, 2, 8), t.zeros(2), 64)
