"""Small rows before and after a PyTorch process's slow state (nineteenth
session: the state starts at the process's fourth torch.cuda.CUDAGraph
capture, bench/probe/torch_trigger.py). Every row's 64 libkda launches are
captured through the driver API (cuStreamBeginCapture on a torch side
stream), which does not count toward the trigger; each row is timed, then
four one-node torch graphs are captured, and each row is timed again.

    KDA_LIBRARY=... KDA_CACHE_DIR=<db dir> PYTHONPATH=python:bench/probe \\
        TORCH_STATES_ROWS=512x16,2048x4 python3 bench/probe/torch_states.py
"""
import ctypes
import os
import statistics

import torch

import bench_vs_triton as B
import torch_graphs as G

cu = G.cu
L2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 << 20)
STREAM = torch.cuda.Stream()


def driver_graph(launches):
    """The row's launches captured on STREAM through the driver API."""
    def record():
        for i in range(B.GRAPH_LAUNCHES):
            launches[i % len(launches)]()
    return G.driver_capture(STREAM, record)[1]


def timed(exe):
    h = ctypes.c_void_p(STREAM.cuda_stream)
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    with torch.cuda.stream(STREAM):
        for _ in range(B.REPLAYS):
            e0.record()
            assert cu.cuGraphLaunch(exe, h) == 0
            e1.record()
            e1.synchronize()
            ts.append(e0.elapsed_time(e1) * 1e3 / B.GRAPH_LAUNCHES)
    return statistics.median(ts)


def main():
    shapes = [tuple(int(v) for v in s.split("x"))
              for s in os.environ.get("TORCH_STATES_ROWS", "512x16").split(",")]
    rows, exes = [], []
    for T, H in shapes:
        row = B.Row(T, H, 0, L2, with_triton=False)
        if row.bad_k:
            raise SystemExit("libkda failed the float64 check at T=%d H=%d" % (T, H))
        rows.append(row)
        exes.append(driver_graph(row.lk))
    before = [timed(e) for e in exes]
    before2 = [timed(e) for e in exes]
    keep = G.four_torch_captures(replay=True)
    after = [timed(e) for e in exes]
    after2 = [timed(e) for e in exes]
    print("%6s %3s %10s %10s" % ("T", "H", "before_us", "after_us"))
    for (T, H), b, b2, a, a2 in zip(shapes, before, before2, after, after2):
        print("%6d %3d %5.2f/%4.2f %5.2f/%4.2f" % (T, H, b, b2, a, a2), flush=True)
    del keep


if __name__ == "__main__":
    main()
