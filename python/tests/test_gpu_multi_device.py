"""Several GPUs in one process (tensor parallelism, or tensors on cuda:1
while torch's current device is cuda:0): every function runs on its
tensors' device, with that device's libkda context and current stream,
whatever device is current, and leaves the current device alone; mixed
devices are refused. Needs torch with at least two CUDA devices (skipped
otherwise); a few seconds of GPU time."""

import threading

import pytest

import kda

torch = pytest.importorskip("torch")
from gpu_reference import assert_close, ref_chunk_cumsum, ref_gate  # noqa: E402

LENGTHS = [1, 63, 64, 65, 300]  # ragged, 493 tokens
T_VAR = sum(LENGTHS)
H, K = 4, 64


@pytest.fixture
def devs(cuda):
    """(cuda:0, cuda:1) with cuda:0 current; checks that the test left it so."""
    n = torch.cuda.device_count()
    if n < 2:
        pytest.skip("needs 2 CUDA devices; torch.cuda.device_count() is %d" % n)
    torch.cuda.set_device(0)
    yield torch.device("cuda", 0), torch.device("cuda", 1)
    assert torch.cuda.current_device() == 0, "a kda call changed torch's current device"


def _inputs(dev, shape, dtype=torch.bfloat16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(shape, generator=gen).to(dtype).to(dev)
    A_log = torch.empty(shape[2]).uniform_(1, 16, generator=gen).log().to(dev)
    dt_bias = torch.randn(shape[2] * shape[3], generator=gen).to(dev)
    return g, A_log, dt_bias


def _cu(dev, lengths=LENGTHS, dtype=torch.int32):
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    return torch.tensor(cu, dtype=dtype, device=dev)


def _cases(dev, seed=0):
    """(name, call, float64 reference) for each function and path, on dev."""
    g, A_log, b = _inputs(dev, (2, 300, H, K), seed=seed)
    gv, Av, bv = _inputs(dev, (1, T_VAR, H, K), seed=seed + 1)
    cu = _cu(dev)
    act = ref_gate(gv, Av, bv).float()
    plan = kda.ChunkPlan(T_VAR, len(LENGTHS), 64, device=dev).build(cu, T_VAR)
    table = kda.prepare_chunk_indices(cu, 64, total_tokens=T_VAR)
    return [
        ("gate_chunk_cumsum dense",
         lambda: kda.gate_chunk_cumsum(g, A_log, 64, scale=0.5, dt_bias=b),
         lambda: ref_chunk_cumsum(ref_gate(g, A_log, b), 64, scale=0.5)),
        ("gate_chunk_cumsum dense, no A_log",
         lambda: kda.gate_chunk_cumsum(g, None, 64, dt_bias=b),
         lambda: ref_chunk_cumsum(ref_gate(g, None, b), 64)),
        ("gate_chunk_cumsum varlen",
         lambda: kda.gate_chunk_cumsum(gv, Av, 64, dt_bias=bv, cu_seqlens=cu),
         lambda: ref_chunk_cumsum(ref_gate(gv, Av, bv), 64, cu_seqlens=cu)),
        ("gate_chunk_cumsum varlen, prepare_chunk_indices",
         lambda: kda.gate_chunk_cumsum(gv, Av, 64, dt_bias=bv, cu_seqlens=cu,
                                       chunk_indices=table),
         lambda: ref_chunk_cumsum(ref_gate(gv, Av, bv), 64, cu_seqlens=cu)),
        ("gate_chunk_cumsum varlen, cu_seqlens_cpu",
         lambda: kda.gate_chunk_cumsum(gv, Av, 64, dt_bias=bv, cu_seqlens=cu,
                                       cu_seqlens_cpu=cu.cpu()),
         lambda: ref_chunk_cumsum(ref_gate(gv, Av, bv), 64, cu_seqlens=cu)),
        ("gate_chunk_cumsum ChunkPlan",
         lambda: kda.gate_chunk_cumsum(gv, Av, 64, dt_bias=bv, chunk_plan=plan),
         lambda: ref_chunk_cumsum(ref_gate(gv, Av, bv), 64, cu_seqlens=cu)),
        ("chunk_local_cumsum dense",
         lambda: kda.chunk_local_cumsum(act, 64, reverse=True),
         lambda: ref_chunk_cumsum(act, 64, reverse=True)),
        ("chunk_local_cumsum varlen",
         lambda: kda.chunk_local_cumsum(act, 64, cu_seqlens=cu),
         lambda: ref_chunk_cumsum(act, 64, cu_seqlens=cu)),
        ("chunk_local_cumsum ChunkPlan",
         lambda: kda.chunk_local_cumsum(act, 64, chunk_plan=plan),
         lambda: ref_chunk_cumsum(act, 64, cu_seqlens=cu)),
        ("gate", lambda: kda.gate(g, A_log, b), lambda: ref_gate(g, A_log, b)),
        ("gate, no A_log", lambda: kda.gate(g, None, b), lambda: ref_gate(g, None, b)),
    ]


def test_every_function_on_cuda1_while_cuda0_is_current(devs):
    d0, d1 = devs
    cases = _cases(d1)
    launches0, launches1 = kda.stats(0)["launches"], kda.stats(1)["launches"]
    outs = []
    for name, call, _ in cases:
        out = call()
        assert out.device == d1, name
        assert torch.cuda.current_device() == 0, name
        outs.append(out)
    torch.cuda.synchronize(d1)
    for (name, _, ref), out in zip(cases, outs):
        try:
            assert_close(out, ref(), torch.float32)
        except AssertionError as e:
            raise AssertionError("%s: %s" % (name, e)) from None
    assert kda.stats(1)["launches"] >= launches1 + len(cases)
    assert kda.stats(0)["launches"] == launches0, "calls on cuda:1 launched on cuda:0"
    # What kda keeps per device: the context's device, the zero A_log buffer.
    info = kda.device_info(d1)
    assert info["ordinal"] == 1 and info["name"] == torch.cuda.get_device_name(1)
    assert kda.context(d1) != kda.context(d0)
    assert kda._ops._zero_alog[(1, H)].device == d1
    table = kda.prepare_chunk_indices(_cu(d1), 64, total_tokens=T_VAR)
    assert table.device == d1 and kda.num_chunks_of(table).device == d1
    assert torch.cuda.current_device() == 0


def test_the_call_runs_on_the_current_stream_of_the_tensors_device(devs):
    """cuda:1's current stream is a side stream, busy for a while, then
    writing g; the call, made with cuda:0 current, must queue behind that
    write on that stream (on any other stream it would read the old g)."""
    d0, d1 = devs
    g, A_log, b = _inputs(d1, (2, 300, H, K), torch.float32, seed=3)
    new = torch.randn_like(g)
    kda.gate_chunk_cumsum(g, A_log, 64, dt_bias=b)  # warm
    torch.cuda.synchronize(d1)
    side = torch.cuda.Stream(device=d1)
    with torch.cuda.stream(side):                  # (makes cuda:1 current meanwhile)
        torch.cuda._sleep(200_000_000)             # ~0.1 s on an H200
        g.copy_(new)
        with torch.cuda.device(d0):
            assert torch.cuda.current_device() == 0
            assert torch.cuda.current_stream(d1) == side
            out = kda.gate_chunk_cumsum(g, A_log, 64, dt_bias=b)
        done = torch.cuda.Event()
        done.record(side)
    assert not done.query(), "the sleep ended before the call was queued: no test"
    side.synchronize()
    assert_close(out, ref_chunk_cumsum(ref_gate(new, A_log, b), 64), torch.float32)


def test_two_threads_two_devices_at_once(devs):
    """The same calls on both devices from two threads at once (each
    thread with torch's default current device, cuda:0)."""
    cases = {d.index: _cases(d, seed=10 + d.index) for d in devs}
    for d in devs:  # warm each device's specializations
        for _, call, _ in cases[d.index]:
            call()
        torch.cuda.synchronize(d)
    go = threading.Barrier(2)
    outs, errors = {}, []

    def worker(d):
        try:
            assert torch.cuda.current_device() == 0
            go.wait(timeout=60)
            res = [[call() for _, call, _ in cases[d.index]] for _ in range(20)]
            torch.cuda.synchronize(d)
            outs[d.index] = res
        except Exception as e:  # reported below
            errors.append((d, e))

    ts = [threading.Thread(target=worker, args=(d,)) for d in devs]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert not errors, errors
    for d in devs:
        for (name, _, ref), *reps in zip(cases[d.index], *outs[d.index]):
            r = ref()
            for out in reps:
                assert out.device == d, name
                try:
                    assert_close(out, r, torch.float32)
                except AssertionError as e:
                    raise AssertionError("%s on %s: %s" % (name, d, e)) from None


def test_cuda_graph_on_cuda1(devs):
    """Captured on cuda:1 (warm first), replayed with new inputs and new
    cu_seqlens contents while cuda:0 is current."""
    d0, d1 = devs
    T = 2000
    g, A_log, b = _inputs(d1, (1, T, H, K), torch.float32, seed=7)
    cu = torch.tensor([0, 1, 100, 1999, 2000], dtype=torch.int32, device=d1)
    plan = kda.ChunkPlan(T, 4, 64, device=d1)

    def step():
        a = kda.gate_chunk_cumsum(g, A_log, 64, dt_bias=b, cu_seqlens=cu)  # table in the graph
        plan.build(cu, T)
        c = kda.chunk_local_cumsum(g, 64, reverse=True, chunk_plan=plan)
        e = kda.gate(g, A_log, b)
        return a, c, e

    step()  # warm-up: compiles outside capture
    cu_cpu = cu.cpu()
    # (warm too: else the library would refuse it in capture as a cold one)
    kda.gate_chunk_cumsum(g, A_log, 64, dt_bias=b, cu_seqlens=cu, cu_seqlens_cpu=cu_cpu)
    torch.cuda.synchronize(d1)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=torch.cuda.Stream(device=d1)):
        a, c, e = step()
        # cuda:0 made current inside cuda:1's capture: a call on cuda:1 is
        # still captured, so host rows (baked into the graph) are refused.
        with torch.cuda.device(d0):
            assert not torch.cuda.is_current_stream_capturing()
            with pytest.raises(kda.KdaValueError, match="capture"):
                kda.gate_chunk_cumsum(g, A_log, 64, dt_bias=b, cu_seqlens=cu,
                                      cu_seqlens_cpu=cu_cpu)
    assert torch.cuda.current_device() == 0
    for lens in ([500, 500, 500, 500], [1, 1, 1, 1997], [0, 2000, 0, 0]):
        cu.copy_(torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32))
        g.copy_(torch.randn_like(g))
        graph.replay()
        torch.cuda.synchronize(d1)
        assert_close(a, ref_chunk_cumsum(ref_gate(g, A_log, b), 64, cu_seqlens=cu),
                     torch.float32)
        assert_close(c, ref_chunk_cumsum(g, 64, True, None, cu), torch.float32)
        assert_close(e, ref_gate(g, A_log, b), torch.float32)
    del graph
    plan.close()


def test_mixed_devices_are_refused_before_any_launch(devs):
    d0, d1 = devs
    g1, A1, b1 = _inputs(d1, (1, T_VAR, H, K), seed=4)
    g0, A0, b0 = _inputs(d0, (1, T_VAR, H, K), seed=4)
    cu0, cu1 = _cu(d0), _cu(d1)
    t0 = kda.prepare_chunk_indices(cu0, 64, total_tokens=T_VAR)
    t1 = kda.prepare_chunk_indices(cu1, 64, total_tokens=T_VAR)
    p0 = kda.ChunkPlan(T_VAR, len(LENGTHS), 64, device=d0).build(cu0, T_VAR)
    p1 = kda.ChunkPlan(T_VAR, len(LENGTHS), 64, device=d1).build(cu1, T_VAR)
    torch.cuda.synchronize(d0)
    torch.cuda.synchronize(d1)
    before = (kda.stats(0)["launches"], kda.stats(1)["launches"])
    cases = [
        ("A_log", lambda: kda.gate_chunk_cumsum(g1, A0, 64)),
        ("dt_bias", lambda: kda.gate_chunk_cumsum(g1, A1, 64, dt_bias=b0)),
        ("A_log", lambda: kda.gate(g1, A0, b1)),
        ("dt_bias", lambda: kda.gate(g1, A1, b0)),
        ("cu_seqlens", lambda: kda.gate_chunk_cumsum(g1, A1, 64, cu_seqlens=cu0)),
        ("cu_seqlens", lambda: kda.chunk_local_cumsum(g1, 64, cu_seqlens=cu0)),
        ("chunk_indices", lambda: kda.gate_chunk_cumsum(g1, A1, 64, cu_seqlens=cu1,
                                                        chunk_indices=t0)),
        ("num_chunks_device", lambda: kda.chunk_local_cumsum(
            g1, 64, cu_seqlens=cu1, chunk_indices=t1, num_chunks_device=kda.num_chunks_of(t0))),
        ("ChunkPlan", lambda: kda.gate_chunk_cumsum(g1, A1, 64, chunk_plan=p0)),
        ("ChunkPlan", lambda: kda.chunk_local_cumsum(g0, 64, chunk_plan=p1)),
        ("cu_seqlens", lambda: kda.gate_chunk_cumsum(g1, A1, 64, cu_seqlens=cu0, chunk_plan=p1)),
        ("cu_seqlens", lambda: p1.build(cu0, T_VAR)),
    ]
    for what, f in cases:
        with pytest.raises(kda.KdaDeviceError, match=what) as e:
            f()
        assert "cuda:0" in str(e.value) and "cuda:1" in str(e.value), e.value
    assert (kda.stats(0)["launches"], kda.stats(1)["launches"]) == before
    p0.close()
    p1.close()
