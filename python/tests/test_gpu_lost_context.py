"""A PyTorch kernel faults in a server process (a device-side assert: an
index out of range): the CUDA context is lost for the whole process, and
the next libkda call raises KdaContextLostError saying to restart, not a
bare KdaError. In a process of its own: nothing after the fault can use
the GPU."""

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

PKG_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SERVER = r"""
import torch, kda
H, K = 4, 64
A = torch.zeros(H, device="cuda")
g = torch.randn(1, 256, H, K, device="cuda", dtype=torch.bfloat16)
kda.gate_chunk_cumsum(g, A, 64)  # warm
torch.cuda.synchronize()
x = torch.zeros(4, device="cuda")
try:
    x[torch.tensor([1 << 20], device="cuda")].sum().item()  # faults on the device
    print("NO FAULT")
except RuntimeError as e:
    print("torch:", str(e).splitlines()[0])
try:
    kda.gate_chunk_cumsum(g, A, 64)
    torch.cuda.synchronize()
    print("NO ERROR")
except kda.KdaContextLostError as e:
    assert isinstance(e, kda.KdaDeviceError) and e.status_name == "KDA_ERROR_CONTEXT_LOST"
    assert "restart the process" in str(e), str(e)
    print("LOST", str(e))
"""


def test_a_fault_of_a_torch_kernel_raises_context_lost(cuda, tmp_path):
    env = dict(os.environ, PYTHONPATH=PKG_ROOT, KDA_TUNE="off",
               KDA_CACHE_DIR=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-c", SERVER], env=env, capture_output=True, text=True,
                       timeout=300)
    print(r.stdout, r.stderr[-2000:])
    assert "NO FAULT" not in r.stdout and "NO ERROR" not in r.stdout
    assert "LOST" in r.stdout, r.stderr[-2000:]
