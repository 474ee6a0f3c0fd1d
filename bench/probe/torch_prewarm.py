"""kda_prewarm run inside a PyTorch process, optionally after the process has
entered its slow state (nineteenth session: the state starts at the
fourth torch.cuda.CUDAGraph capture; bench/probe/torch_trigger.py). The
tuner's timings then see what a server process sees. Same budget as
`kda-tune prewarm` (15000 ms per specialization), force = 1.

    KDA_LIBRARY=... PYTHONPATH=python python3 bench/probe/torch_prewarm.py DB \\
        [T x H ...]    (TORCH_PW_TRIP=1: four torch graph captures first)
"""
import ctypes
import os
import sys

import torch

from kda import _capi as C

import torch_graphs as G


class PrewarmResult(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("outcome", ctypes.c_int32),
                ("config", ctypes.c_char * 64), ("median_us", ctypes.c_double),
                ("heuristic_us", ctypes.c_double), ("compile_ms", ctypes.c_double),
                ("tune_ms", ctypes.c_double), ("candidates", ctypes.c_int32),
                ("rejected", ctypes.c_int32), ("bucket", ctypes.c_int32)]


def main():
    db = sys.argv[1]
    shapes = [tuple(int(v) for v in s.split("x")) for s in sys.argv[2:]]
    torch.cuda.init()
    keep = G.four_torch_captures(replay=False) if os.environ.get("TORCH_PW_TRIP") == "1" else []
    lib = C.load_library()
    o = C.options_default(0)
    o.db_path = db.encode()
    o.tune_budget_ms = 15000.0
    ctx = ctypes.c_void_p()
    st = lib.kda_context_create(ctypes.byref(o), ctypes.byref(ctx))
    if st:
        raise SystemExit("kda_context_create: %d" % st)
    lib.kda_prewarm.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int32,
                                ctypes.c_void_p]
    for T, H in shapes:
        a = C.KdaGateArgs.from_buffer_copy(C.GATE_ARGS_DEFAULT)
        a.g_dtype, a.out_dtype = C.KDA_DTYPE_BF16, C.KDA_DTYPE_F32
        a.batch, a.seq_len, a.num_heads, a.head_dim, a.chunk_size = 1, T, H, 128, 64
        a.gate = C.KDA_GATE_SOFTPLUS
        a.A_log = a.dt_bias = 1  # non-NULL: the specialization with A_log and dt_bias
        r = PrewarmResult(struct_size=ctypes.sizeof(PrewarmResult))
        st = lib.kda_prewarm(ctx, C.KDA_KERNEL_GATE_CHUNK_CUMSUM, ctypes.byref(a), 1,
                             ctypes.byref(r))
        print("T=%5d H=%2d %s %s %.3f us (heuristic %.3f)" % (
            T, H, "tuned" if st == 0 else "status %d" % st, r.config.decode(), r.median_us,
            r.heuristic_us), flush=True)
    lib.kda_context_destroy(ctx)
    del keep


if __name__ == "__main__":
    main()
