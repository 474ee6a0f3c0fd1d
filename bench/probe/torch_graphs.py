"""CUDA graph helpers shared by the PyTorch probes (torch_trigger.py,
torch_states.py, torch_prewarm.py): a capture through the driver API,
which does not count toward the slow state's trigger, and the four
torch.cuda.CUDAGraph captures that start it (docs/perf-notes.md,
nineteenth session)."""
import ctypes

import torch

cu = ctypes.CDLL("libcuda.so.1")


def driver_capture(stream, record, mode=2, flags=0):
    """record() captured on `stream` with cuStreamBeginCapture (mode 2:
    relaxed), instantiated with cuGraphInstantiateWithFlags(flags) and
    launched once. Returns (graph, exec) as ctypes handles."""
    graph, exe = ctypes.c_void_p(), ctypes.c_void_p()
    h = ctypes.c_void_p(stream.cuda_stream)
    torch.cuda.synchronize()
    with torch.cuda.stream(stream):
        assert cu.cuStreamBeginCapture_v2(h, mode) == 0
        record()
        assert cu.cuStreamEndCapture(h, ctypes.byref(graph)) == 0
    assert cu.cuGraphInstantiateWithFlags(ctypes.byref(exe), graph, ctypes.c_ulonglong(flags)) == 0
    assert cu.cuGraphLaunch(exe, h) == 0
    torch.cuda.synchronize()
    return graph, exe


def four_torch_captures(replay):
    """Four one-add torch.cuda.CUDAGraph captures (each replayed once when
    `replay`): the fourth starts the state. Returns what keeps them alive."""
    keep = []
    for _ in range(4):
        x = torch.zeros(1 << 20, device="cuda")
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            x.add_(1.0)
        if replay:
            g.replay()
        keep.append((x, g))
    torch.cuda.synchronize()
    return keep
