"""Why a tuned small row runs slower in a PyTorch process than in the tuner
(eighteenth session): one row, T=512 H=16, timed in several orders.

    KDA_LIBRARY=... KDA_CACHE_DIR=<db dir> PYTHONPATH=python:bench/probe python3 bench/probe/torch_state.py

Each case replays a 64-call graph 15 times (median per call), two rounds:
libkda's graph alone; libkda's right after a replay of the Triton
kernel's graph (bench_vs_triton.py's order); the Triton graph alone; and
the Triton graph right after libkda's.
"""
import statistics
import sys

import torch

import bench_vs_triton as B
import kda


def main():
    T, H = int(sys.argv[1]) if len(sys.argv) > 1 else 512, int(sys.argv[2]) if len(sys.argv) > 2 else 16
    props = torch.cuda.get_device_properties(0)
    l2 = getattr(props, "L2_cache_size", 50 << 20)
    row = B.Row(T, H, 0, l2)
    graphs = {"kda": B.capture(row.lk), "tri": B.capture(row.lt)}
    us_k, us_t = B.time_graphs([graphs["kda"], graphs["tri"]])
    print("T=%d H=%d: libkda %.2f us, triton %.2f us (the bench's order); libkda stats %s" % (
        T, H, us_k, us_t, {k: v for k, v in kda.stats().items() if k in B.STATS_SHOWN}))
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def once(g):
        e0.record(); g.replay(); e1.record(); e1.synchronize()
        return e0.elapsed_time(e1) * 1e3 / B.GRAPH_LAUNCHES

    for rnd in range(2):
        alone = [once(graphs["kda"]) for _ in range(B.REPLAYS)]
        after = []
        for _ in range(B.REPLAYS):
            graphs["tri"].replay()
            after.append(once(graphs["kda"]))
        tri_after_kda = []
        for _ in range(B.REPLAYS):
            graphs["kda"].replay()
            tri_after_kda.append(once(graphs["tri"]))
        tri_alone = [once(graphs["tri"]) for _ in range(B.REPLAYS)]
        print("round %d: libkda alone %.2f, after triton %.2f; triton alone %.2f, after libkda %.2f" % (
            rnd + 1, statistics.median(alone), statistics.median(after), statistics.median(tri_alone),
            statistics.median(tri_after_kda)), flush=True)


if __name__ == "__main__":
    main()
