"""kda.ChunkPlan where no GPU is: a clean error, and the C prototypes the
binding declares match the library's (called with a NULL context)."""

import ctypes

import pytest

import kda


def test_chunk_plan_without_a_gpu_raises_cleanly():
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: tests/test_gpu_chunk_plan.py covers it")
    with pytest.raises(kda.KdaDeviceError):
        kda.ChunkPlan(1024, 4, 64)


def test_chunk_plan_prototypes(lib):
    assert len(lib.kda_chunk_plan_create.argtypes) == 5
    assert len(lib.kda_chunk_plan_build.argtypes) == 6
    out = ctypes.c_void_p(1234)
    st = lib.kda_chunk_plan_create(None, 1024, 4, 64, ctypes.byref(out))
    assert lib.kda_status_name(st).decode() == "KDA_ERROR_NULL_POINTER"
    st = lib.kda_chunk_plan_build(None, None, 3, 4, 1024, None)
    assert lib.kda_status_name(st).decode() == "KDA_ERROR_NULL_POINTER"
    lib.kda_chunk_plan_destroy(None)  # a no-op
