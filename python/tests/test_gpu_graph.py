"""CUDA graph capture: warm specializations replay correctly; a cold one
raises KdaCaptureColdError telling the user to warm up."""

import pytest

import kda

torch = pytest.importorskip("torch")
from gpu_reference import assert_close, ref_chunk_cumsum, ref_gate  # noqa: E402


def _warm_then_capture(fn):
    fn()  # warm-up: compiles the specialization(s) outside capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


def test_dense_graph_replays(cuda):
    B, T, H, K = 2, 333, 4, 64
    g = torch.randn(B, T, H, K, device=cuda, dtype=torch.bfloat16)
    A_log = torch.empty(H, device=cuda).uniform_(1, 16).log()
    b = torch.randn(H * K, device=cuda)
    graph, out = _warm_then_capture(
        lambda: kda.gate_chunk_cumsum(g, A_log, 64, scale=0.5, dt_bias=b))
    for _ in range(3):
        g.copy_(torch.randn_like(g))
        graph.replay()
        torch.cuda.synchronize()
        assert_close(out, ref_chunk_cumsum(ref_gate(g, A_log, b), 64, scale=0.5), torch.float32)


def test_varlen_graph_replays_with_new_lengths(cuda):
    """The chunk table is built inside the graph, so new cu_seqlens contents
    (same N and T) are picked up by every replay."""
    T, H, K = 2000, 4, 32
    cu = torch.tensor([0, 1, 100, 1999, 2000], dtype=torch.int32, device=cuda)
    g = torch.randn(1, T, H, K, device=cuda)
    A_log = torch.empty(H, device=cuda).uniform_(1, 16).log()

    def step():
        table = kda.prepare_chunk_indices(cu, 64, total_tokens=T)
        a = kda.gate_chunk_cumsum(g, A_log, 64, cu_seqlens=cu, chunk_indices=table)
        c = kda.chunk_local_cumsum(g, 64, reverse=True, cu_seqlens=cu)  # builds its own
        return a, c

    graph, (a, c) = _warm_then_capture(step)
    for lens in ([500, 500, 500, 500], [1, 1, 1, 1997], [0, 2000, 0, 0]):
        cu.copy_(torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32))
        g.copy_(torch.randn_like(g))
        graph.replay()
        torch.cuda.synchronize()
        assert_close(a, ref_chunk_cumsum(ref_gate(g, A_log), 64, cu_seqlens=cu), torch.float32)
        assert_close(c, ref_chunk_cumsum(g, 64, True, None, cu), torch.float32)


def test_cold_specialization_in_capture_raises(cuda):
    # A head count no other test uses: never compiled in this process.
    g = torch.randn(1, 64, 13, 24, device=cuda)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(kda.KdaCaptureColdError, match="warm"):
        with torch.cuda.graph(graph):
            kda.chunk_local_cumsum(g, 64)
    torch.cuda.synchronize()
    # Warm it, then the same capture works.
    out0 = kda.chunk_local_cumsum(g, 64)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = kda.chunk_local_cumsum(g, 64)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, out0)


def test_host_rows_are_refused_in_capture_and_the_capture_goes_on(cuda):
    """cu_seqlens_cpu would bake this batch's rows into the graph; the
    refusal comes before any CUDA call, so the capture stays usable."""
    T, H, K = 1000, 4, 32
    cu = torch.tensor([0, 10, 600, 1000], dtype=torch.int32, device=cuda)
    g = torch.randn(1, T, H, K, device=cuda)
    A_log = torch.empty(H, device=cuda).uniform_(1, 16).log()
    cu_cpu = cu.cpu()
    kda.gate_chunk_cumsum(g, A_log, 64, cu_seqlens=cu, cu_seqlens_cpu=cu_cpu)  # warm
    kda.gate_chunk_cumsum(g, A_log, 64, cu_seqlens=cu)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        with pytest.raises(kda.KdaValueError, match="ChunkPlan"):
            kda.gate_chunk_cumsum(g, A_log, 64, cu_seqlens=cu, cu_seqlens_cpu=cu_cpu)
        out = kda.gate_chunk_cumsum(g, A_log, 64, cu_seqlens=cu)
    cu.copy_(torch.tensor([0, 500, 501, 1000], dtype=torch.int32))
    graph.replay()
    torch.cuda.synchronize()
    assert_close(out, ref_chunk_cumsum(ref_gate(g, A_log), 64, cu_seqlens=cu), torch.float32)


def test_plan_collected_in_capture_waits_for_the_capture_to_end(cuda):
    import gc
    T, H, K = 1000, 4, 32
    cu = torch.tensor([0, 10, 600, 1000], dtype=torch.int32, device=cuda)
    g = torch.randn(1, T, H, K, device=cuda)
    plan = kda.ChunkPlan(T, 3, 64, device=cuda).build(cu, T)
    kda.chunk_local_cumsum(g, 64, chunk_plan=plan)  # warm
    doomed = kda.ChunkPlan(T, 3, 64, device=cuda).build(cu, T)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = kda.chunk_local_cumsum(g, 64, chunk_plan=plan)
        del doomed
        gc.collect()  # no synchronize here: that would invalidate the capture
    assert len(kda._ops._deferred_plans) == 1
    graph.replay()
    torch.cuda.synchronize()
    assert_close(out, ref_chunk_cumsum(g, 64, cu_seqlens=cu), torch.float32)
    plan.build(cu, T)  # outside capture: the collected plan is destroyed now
    assert kda._ops._deferred_plans == []
    plan.close()
