"""The package imports and fails clearly without torch, a GPU or the library."""

import os
import subprocess
import sys

import pytest

from conftest import PKG_ROOT

import kda


def _run(code, env_extra=None, drop=("KDA_LIBRARY",)):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = PKG_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120)


def test_import_without_torch_and_call_gives_clear_error():
    code = (
        "import sys; sys.modules['torch'] = None\n"  # makes 'import torch' fail
        "import kda\n"
        "assert kda._ops.torch is None\n"
        "try:\n"
        "    kda.gate_chunk_cumsum(None, None, 64)\n"
        "except kda.KdaError as e:\n"
        "    print('ERR', type(e).__name__, e)\n"
    )
    r = _run(code, drop=())
    assert r.returncode == 0, r.stderr
    assert "ERR KdaDeviceError" in r.stdout
    assert "torch is not installed" in r.stdout


def test_import_does_not_load_library():
    # A bogus KDA_LIBRARY must not break the import, only the first call.
    code = "import kda; print('OK', kda.library_path())"
    r = _run(code, {"KDA_LIBRARY": "/nonexistent/libkda.so"})
    assert r.returncode == 0, r.stderr
    assert "OK None" in r.stdout


def test_default_signature_mentions_float32():
    import inspect
    sig = inspect.signature(kda.gate_chunk_cumsum)
    assert list(sig.parameters)[:9] == ["g", "A_log", "chunk_size", "scale", "dt_bias",
                                        "cu_seqlens", "output_dtype", "chunk_indices",
                                        "lower_bound"]
    assert "float32" in str(sig.parameters["output_dtype"].default)
    sig = inspect.signature(kda.chunk_local_cumsum)
    assert list(sig.parameters)[:8] == ["g", "chunk_size", "reverse", "scale", "cu_seqlens",
                                        "head_first", "output_dtype", "chunk_indices"]
    sig = inspect.signature(kda.gate)
    assert list(sig.parameters) == ["g", "A_log", "dt_bias", "lower_bound", "output_dtype"]
    assert kda.fused_kda_gate is kda.gate and kda.kda_gate_fwd is kda.gate
    assert kda.kda_gate_chunk_cumsum is kda.gate_chunk_cumsum


def test_no_gpu_call_is_clear(torch_mod, lib):
    """With torch but without CUDA (or with CPU tensors), calls say why."""
    torch = torch_mod
    g = torch.randn(1, 64, 2, 8)
    with pytest.raises(kda.KdaDeviceError, match="CUDA tensors only"):
        kda.gate_chunk_cumsum(g, torch.zeros(2), 64)
    with pytest.raises(kda.KdaDeviceError, match="CUDA tensors only"):
        kda.chunk_local_cumsum(g, 64)
    with pytest.raises(kda.KdaDeviceError, match="CUDA tensors only"):
        kda.gate(g)
    if not torch.cuda.is_available():
        with pytest.raises(kda.KdaDeviceError):
            kda.context(0)
