"""Host overhead per call from Python, measured and printed (the table goes
to the terminal even without -s). Fails only when the median of the main
case exceeds KDA_OVERHEAD_MAX_US (default 10 us, the project's target)."""

import os
import sys

import pytest

pytest.importorskip("torch")


def test_host_overhead(cuda, capsys):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import bench_overhead
    results = bench_overhead.measure(int(os.environ.get("KDA_BENCH_CALLS", "10000")))
    with capsys.disabled():
        print()
        bench_overhead.report(results)
    limit = float(os.environ.get("KDA_OVERHEAD_MAX_US", "10"))
    med = results["gate_chunk_cumsum (bf16 -> f32, bias)"]["median_us"]
    assert med <= limit, "median host overhead %.2f us > %.1f us" % (med, limit)
