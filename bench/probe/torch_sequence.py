"""Is the small rows' slow state in a PyTorch process global to the process,
or tied to the buffers and graphs made after another row ran? (eighteenth
session). One process, T=512 rows, libkda's graph only:
  1. row A (T=512 H=16) built and timed: a fresh process's first row;
  2. row B (T=512 H=32) built and timed;
  3. row A's graph timed again: same buffers and graph, after B;
  4. row A2 (T=512 H=16 again) built and timed: new buffers and graph;
  5. row A's graph timed once more.
TORCH_SEQ_ORDER=b-first-kept / b-first-freed: a T=512 H=32 row is built
and timed first (and freed, graph and buffers, as bench_vs_triton.py
frees each row). TORCH_SEQ_TRITON=0 leaves the Triton kernel out entirely. Before step 1,
TORCH_SEQ_START=copy measures the copy bandwidth as bench_vs_triton.py
does first (1 GiB copied 16 times, then freed); =alloc allocates and
frees the same 2 GiB without copying.

    KDA_LIBRARY=... KDA_CACHE_DIR=<db dir> PYTHONPATH=python:bench/probe python3 bench/probe/torch_sequence.py
"""
import os

import torch

import bench_vs_triton as B


def timed(graph):
    """Median per call of one graph (bench_vs_triton.py's timing)."""
    return B.time_graphs([graph])[0]


def main():
    props = torch.cuda.get_device_properties(0)
    l2 = getattr(props, "L2_cache_size", 50 << 20)
    rows, graphs = {}, {}
    start = os.environ.get("TORCH_SEQ_START", "")
    if start == "copy":
        print("0. copy bandwidth %.0f GB/s" % B.copy_bandwidth(), flush=True)
    elif start == "alloc":
        a = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
        b = torch.empty_like(a)
        torch.cuda.synchronize()
        del a, b
        torch.cuda.empty_cache()
        print("0. 2 GiB allocated and freed", flush=True)

    def build(name, T, H):
        # TORCH_SEQ_TRITON=0: no Triton kernel is compiled or run at all.
        rows[name] = B.Row(T, H, 0, l2, with_triton=os.environ.get("TORCH_SEQ_TRITON", "1") != "0")
        graphs[name] = B.capture(rows[name].lk)
        return timed(graphs[name])

    order = os.environ.get("TORCH_SEQ_ORDER", "")
    if order in ("b-first-freed", "b-first-kept"):
        # bench_vs_triton.py's order: the H=32 row first; then (freed) its
        # graph and buffers released as run_row releases them.
        print("0. B  (T=512 H=32) first row:   %.2f us" % build("B0", 512, 32), flush=True)
        if order == "b-first-freed":
            del graphs["B0"], rows["B0"]
            torch.cuda.empty_cache()
    print("1. A  (T=512 H=16):             %.2f us" % build("A", 512, 16), flush=True)
    print("2. B  (T=512 H=32):             %.2f us" % build("B", 512, 32), flush=True)
    print("3. A  again, same graph:        %.2f us" % timed(graphs["A"]), flush=True)
    print("4. A2 (T=512 H=16), new buffers: %.2f us" % build("A2", 512, 16), flush=True)
    print("5. A  once more:                %.2f us" % timed(graphs["A"]), flush=True)
    print("6. A2 again:                    %.2f us" % timed(graphs["A2"]), flush=True)


if __name__ == "__main__":
    main()
