"""Host overhead per call from Python (bench_overhead.py). The absolute
figures depend on the machine's CPU and how busy its neighbours are (on
lent VMs torch.empty_like alone read 2.1 to 4.5 us), so the table is
printed, not judged against a fixed number by default; what is asserted
holds on any machine:

- no call waits for the GPU (a call that synchronised would be the largest
  regression of all, and is deterministic to catch);
- measured in the same rounds, a call costs at most 4 times a bare ctypes
  call of the library with prebuilt arguments (2.0 to 2.7 times on the
  H100 and H200 VMs so far), and no more than a direct Triton launch of
  the same job where Triton is installed (0.43 to 0.6 times so far).

KDA_OVERHEAD_MAX_US=<us> adds an absolute bound on the main case, for a
quiet machine whose figures are known."""

import os
import sys
import time

import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bench_overhead  # noqa: E402

MAIN = "gate_chunk_cumsum (bf16 -> f32, bias)"
BARE = "baseline: bare ctypes kda_gate_chunk_cumsum"
TRITON = "baseline: Triton launch of the same job (empty_like + kernel[grid])"


def test_calls_do_not_wait_for_the_gpu(cuda):
    cases, sync = bench_overhead.make_cases()
    stream = torch.cuda.current_stream(cuda)
    for name, fn in cases.items():
        if name.startswith("baseline"):
            continue
        # A kernel that spins for about a second at the GPU's clock; every
        # call below is queued behind it on the same stream.
        torch.cuda._sleep(2_000_000_000)
        t0 = time.perf_counter()
        for _ in range(20):
            fn()
        waited = time.perf_counter() - t0
        busy = not stream.query()
        sync()
        assert busy, "%s: the GPU was idle after 20 calls (%.3f s): a call waited for it" % (
            name, waited)
        assert waited < 0.2, "%s: 20 calls took %.3f s behind a busy GPU" % (name, waited)


def test_host_overhead(cuda, capsys):
    results = bench_overhead.measure(int(os.environ.get("KDA_BENCH_CALLS", "10000")))
    with capsys.disabled():
        print()
        bench_overhead.report(results)
    med = results[MAIN]["median_us"]
    bare = results[BARE]["median_us"]
    assert med <= 4 * bare, "median host overhead %.2f us > 4 x the bare ctypes call (%.2f us)" % (
        med, bare)
    if TRITON in results:
        tri = results[TRITON]["median_us"]
        assert med <= tri, "median host overhead %.2f us > a direct Triton launch (%.2f us)" % (
            med, tri)
    limit = os.environ.get("KDA_OVERHEAD_MAX_US")
    if limit is not None:
        assert med <= float(limit), "median host overhead %.2f us > %s us" % (med, limit)
