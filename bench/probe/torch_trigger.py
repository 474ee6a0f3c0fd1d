"""What starts the small rows' slow state in a PyTorch process? (nineteenth
session; the eighteenth found the state global to the process and sticky:
a graph fast two steps before turned slow after another row was built).

Row A (T=512 H=16, libkda only) is built and timed first; then each step of
TORCH_TRIG_STEPS runs in turn, and A's own graph (same buffers, same graph)
is timed after every step. The first step after which A reads slow is the
trigger's candidate. Steps:
  rowB     a T=512 H=32 row built and timed (kept)
  rowA2    a T=512 H=16 row built and timed (kept): what tripped call 10
  rowfree  a T=512 H=16 row built, timed, then freed with empty_cache
  alloc    a row's buffers alone (21 sets of bf16 2 MiB + 2 x f32 4 MiB), filled, kept
  allocfree the same, then freed with empty_cache
  ref      the float64 reference of A's first set (temporaries only)
  graph    one more captured graph of A's libkda launches (kept)
  tgraph   a captured graph of 64 torch adds (kept)
  drvgraph a graph of 64 torch adds captured through the driver API (ctypes),
           not torch.cuda.CUDAGraph: no generator or memory pool registration;
           instantiated with the flags of TORCH_TRIG_FLAGS (default 0; PyTorch
           uses 9: auto-free on launch and use node priority) and the capture
           mode of TORCH_TRIG_MODE (default 2, relaxed; PyTorch's default is 0,
           global)
  tgraph1  a captured torch graph of one add (kept)
  tgraphnr the same, never replayed
  tgraphraw the same through CUDAGraph.capture_begin/capture_end on a side
           stream, without torch.cuda.graph's synchronize and empty_cache
  streams  32 new torch streams
  big      8 GiB allocated, filled, kept
  empty    torch.cuda.empty_cache()
  sleep    one second of nothing (a control)
  b2b      A's graph replayed 16 times back to back, an event between
           replays and no host wait (the tuner's way), median per call
  time     nothing (a control)
A leading "B0" step builds the H=32 row before A (call 10's order).
TORCH_TRIG_STREAM=side times every replay on a side stream (a torch pool
stream) instead of the legacy default stream.

    KDA_LIBRARY=... KDA_CACHE_DIR=<db dir> PYTHONPATH=python:bench/probe \\
        TORCH_TRIG_STEPS=rowB,rowA2 python3 bench/probe/torch_trigger.py
"""
import os
import time

import torch

import bench_vs_triton as B
import torch_graphs as G
import kda

L2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 << 20)
keep = []
SIDE = torch.cuda.Stream() if os.environ.get("TORCH_TRIG_STREAM") == "side" else None


def timed(graph):
    if SIDE is None:
        return B.time_graphs([graph])[0]
    with torch.cuda.stream(SIDE):
        return B.time_graphs([graph])[0]


def build(T, H):
    row = B.Row(T, H, 0, L2, with_triton=False)
    graph = B.capture(row.lk)
    keep.append((row, graph))
    return row, graph


def row_buffers():
    n = 512 * 16 * 128
    sets = [(torch.randn(n, device="cuda").to(torch.bfloat16), torch.randn(n, device="cuda"),
             torch.randn(n, device="cuda")) for _ in range(21)]
    torch.cuda.synchronize()
    return sets


def driver_graph():
    """64 torch adds captured on a side stream through the driver API, with
    TORCH_TRIG_MODE and TORCH_TRIG_FLAGS, and launched once."""
    x = torch.randn(1 << 20, device="cuda")
    s = torch.cuda.Stream()

    def record():
        for _ in range(64):
            x.add_(1.0)
    graph, exe = G.driver_capture(s, record, int(os.environ.get("TORCH_TRIG_MODE", "2")),
                                  int(os.environ.get("TORCH_TRIG_FLAGS", "0")))
    return (x, s, graph, exe)


def back_to_back(graph, n=16):
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(n + 1)]
    graph.replay()
    ev[0].record()
    for i in range(n):
        graph.replay()
        ev[i + 1].record()
    ev[n].synchronize()
    return sorted(ev[i].elapsed_time(ev[i + 1]) * 1e3 / B.GRAPH_LAUNCHES for i in range(n))[n // 2]


def step(name, a_row, a_graph):
    """Runs one step; returns a note for the log line."""
    if name in ("rowB", "rowA2", "rowfree"):
        T, H = (512, 32) if name == "rowB" else (512, 16)
        _, graph = build(T, H)
        us = timed(graph)
        if name == "rowfree":
            keep.pop()
            torch.cuda.empty_cache()
        return "its own graph %.2f us" % us
    if name == "b2b":
        return "back to back %.2f us" % back_to_back(a_graph)
    if name == "alloc":
        keep.append(row_buffers())
    elif name == "allocfree":
        sets = row_buffers()
        del sets
        torch.cuda.empty_cache()
    elif name == "ref":
        B.reference(a_row.gs[0], a_row.A_log, a_row.dt_bias, [0, a_row.T])
        torch.cuda.synchronize()
    elif name == "graph":
        keep.append(B.capture(a_row.lk))
    elif name == "tgraph":
        x = torch.randn(1 << 20, device="cuda")
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(64):
                x.add_(1.0)
        g.replay()
        torch.cuda.synchronize()
        keep.append((x, g))
    elif name == "tgraph1":
        x = torch.randn(1 << 20, device="cuda")
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            x.add_(1.0)
        g.replay()
        torch.cuda.synchronize()
        keep.append((x, g))
    elif name in ("tgraphnr", "tgraphraw"):
        x = torch.randn(1 << 20, device="cuda")
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        if name == "tgraphnr":
            with torch.cuda.graph(g):
                x.add_(1.0)
        else:
            s = torch.cuda.Stream()
            with torch.cuda.stream(s):
                g.capture_begin()
                x.add_(1.0)
                g.capture_end()
        torch.cuda.synchronize()
        keep.append((x, g))
    elif name == "drvgraph":
        keep.append(driver_graph())
    elif name == "streams":
        keep.append([torch.cuda.Stream() for _ in range(32)])
    elif name == "big":
        t = torch.empty(8 << 30, dtype=torch.uint8, device="cuda")
        t.fill_(1)
        torch.cuda.synchronize()
        keep.append(t)
    elif name == "empty":
        torch.cuda.empty_cache()
    elif name == "sleep":
        time.sleep(1.0)
    elif name != "time":
        raise SystemExit("unknown step %r" % name)
    return ""


def main():
    steps = [s for s in os.environ.get("TORCH_TRIG_STEPS", "").split(",") if s]
    if steps and steps[0] == "B0":
        _, g = build(512, 32)
        print("B0 (T=512 H=32) first: %.2f us" % timed(g), flush=True)
        steps = steps[1:]
    a_row, a_graph = build(512, 16)
    print("A  (T=512 H=16):        %.2f us  reserved %4d MiB" %
          (timed(a_graph), torch.cuda.memory_reserved() >> 20), flush=True)
    for i, name in enumerate(steps):
        note = step(name, a_row, a_graph)
        print("%2d %-9s -> A %.2f us  reserved %5d MiB  %s" %
              (i + 1, name, timed(a_graph), torch.cuda.memory_reserved() >> 20, note), flush=True)
    st = kda.stats()
    print("libkda: tuning_runs %s nvrtc_compiles %s db_result_hits %s" %
          (st.get("tuning_runs"), st.get("nvrtc_compiles"), st.get("db_result_hits")))


if __name__ == "__main__":
    main()
