"""kda.ChunkPlan (libkda's kda_chunk_plan) against the float64 reference:
ragged batches, rebuilds between batches, CUDA graphs, and the refusals.
Needs torch with CUDA (skipped otherwise)."""

import pytest

import kda

torch = pytest.importorskip("torch")
from gpu_reference import assert_close, ref_chunk_cumsum, ref_gate  # noqa: E402

LENGTHS = [1, 17, 63, 64, 65, 1000, 4097]


def _cu(dev, lengths, dtype=torch.int32):
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    return torch.tensor(cu, dtype=dtype, device=dev)


def _inputs(dev, T, H, K, dtype, seed):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    g = torch.randn((1, T, H, K), generator=gen).to(dtype).to(dev)
    A_log = torch.empty(H).uniform_(1, 16, generator=gen).log().to(dev)
    dt_bias = torch.randn(H * K, generator=gen).to(dev)
    return g, A_log, dt_bias


@pytest.mark.parametrize("idx_dt", [torch.int32, torch.int64])
@pytest.mark.parametrize("lengths", [LENGTHS, [0, 5, 0, 130, 64, 0]])
@pytest.mark.parametrize("chunk", [16, 64, 256])
@pytest.mark.parametrize("out_dt", [torch.float32, torch.bfloat16])
def test_chunk_plan_matches_reference(cuda, idx_dt, lengths, chunk, out_dt):
    T = sum(lengths)
    g, A_log, dt_bias = _inputs(cuda, T, 4, 64, torch.bfloat16, seed=chunk + len(lengths))
    cu = _cu(cuda, lengths, idx_dt)
    with kda.ChunkPlan(T, len(lengths), chunk, device=cuda) as plan:
        plan.build(cu, T)
        out = kda.gate_chunk_cumsum(g, A_log, chunk, scale=2.0, dt_bias=dt_bias, cu_seqlens=cu,
                                    output_dtype=out_dt, chunk_plan=plan)
        ref = ref_chunk_cumsum(ref_gate(g, A_log, dt_bias), chunk, scale=2.0, cu_seqlens=cu)
        assert_close(out, ref, out_dt)
        # cu_seqlens is not read with a plan: None gives the same result.
        out = kda.gate_chunk_cumsum(g, A_log, chunk, scale=2.0, dt_bias=dt_bias,
                                    output_dtype=out_dt, chunk_plan=plan)
        assert_close(out, ref, out_dt)
        act = ref_gate(g, A_log, dt_bias).float()
        for shape in ((1, T, 4, 64), (1, T, 4)):
            x = act if len(shape) == 4 else act[..., 0].contiguous()
            out = kda.chunk_local_cumsum(x, chunk, reverse=True, cu_seqlens=cu, chunk_plan=plan)
            assert_close(out, ref_chunk_cumsum(x, chunk, reverse=True, cu_seqlens=cu),
                         torch.float32)


def test_chunk_plan_rebuilt_between_batches(cuda):
    """One plan, five batches of new lengths in the same cu_seqlens buffer,
    three layers each, nothing synchronised until the end."""
    T, N, chunk = 6000, 40, 64
    g, A_log, dt_bias = _inputs(cuda, T, 2, 128, torch.bfloat16, seed=5)
    gen = torch.Generator().manual_seed(6)
    cu = torch.empty(N + 1, dtype=torch.int32, device=cuda)
    plan = kda.ChunkPlan(T, N, chunk, device=cuda)
    results = []
    for batch in range(5):
        cuts = torch.sort(torch.randint(0, T + 1, (N - 1,), generator=gen)).values
        host = torch.cat([torch.tensor([0]), cuts, torch.tensor([T])]).to(torch.int32)
        cu.copy_(host, non_blocking=False)
        plan.build(cu, T)
        outs = [kda.gate_chunk_cumsum(g, A_log, chunk, dt_bias=dt_bias, chunk_plan=plan)
                for _ in range(3)]
        results.append((host.clone(), outs))
    torch.cuda.synchronize()
    for host, outs in results:
        ref = ref_chunk_cumsum(ref_gate(g, A_log, dt_bias), chunk, cu_seqlens=host)
        for out in outs:
            assert_close(out, ref, torch.float32)
    plan.close()
    assert "closed" in repr(plan)


def test_chunk_plan_in_a_cuda_graph(cuda):
    """The build and the calls captured together: each replay describes the
    batch that cu_seqlens holds then."""
    T, H, K, chunk = 3000, 4, 32, 64
    cu = torch.tensor([0, 1, 100, 2999, 3000], dtype=torch.int32, device=cuda)
    g, A_log, dt_bias = _inputs(cuda, T, H, K, torch.float32, seed=8)
    plan = kda.ChunkPlan(T, 4, chunk, device=cuda)

    def step():
        plan.build(cu, T)
        return kda.gate_chunk_cumsum(g, A_log, chunk, dt_bias=dt_bias, chunk_plan=plan)

    step()  # warm-up: compiles the builder and the kernel outside capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    for cuts in ([0, 1, 100, 2999, 3000], [0, 1500, 1500, 1501, 3000], [0, 0, 0, 64, 3000]):
        cu.copy_(torch.tensor(cuts, dtype=torch.int32))
        graph.replay()
        torch.cuda.synchronize()
        assert_close(out, ref_chunk_cumsum(ref_gate(g, A_log, dt_bias), chunk, cu_seqlens=cu),
                     torch.float32)
    plan.close()


def test_chunk_plan_refusals(cuda):
    T = 500
    g, A_log, _ = _inputs(cuda, T, 2, 16, torch.float32, seed=1)
    cu = _cu(cuda, [100, 400])
    plan = kda.ChunkPlan(T, 2, 64, device=cuda)
    assert "not built" in repr(plan)
    with pytest.raises(kda.KdaValueError, match="never built"):
        kda.gate_chunk_cumsum(g, A_log, 64, chunk_plan=plan)
    plan.build(cu, T)
    assert "2 sequences, 500 tokens" in repr(plan)
    with pytest.raises(kda.KdaTypeError, match="ChunkPlan"):
        kda.gate_chunk_cumsum(g, A_log, 64, chunk_plan=object())
    with pytest.raises(kda.KdaValueError, match="replaces chunk_indices"):
        kda.gate_chunk_cumsum(g, A_log, 64, cu_seqlens=cu, chunk_plan=plan,
                              chunk_indices=kda.prepare_chunk_indices(cu, 64, total_tokens=T))
    with pytest.raises(kda.KdaValueError, match="batch"):
        kda.gate_chunk_cumsum(g.expand(2, -1, -1, -1).contiguous(), A_log, 64, chunk_plan=plan)
    # Another token count or chunk size than the build's: the library refuses.
    with pytest.raises(kda.KdaError, match="plan"):
        kda.gate_chunk_cumsum(g[:, :400].contiguous(), A_log, 64, chunk_plan=plan)
    with pytest.raises(kda.KdaError, match="plan"):
        kda.gate_chunk_cumsum(g, A_log, 32, chunk_plan=plan)
    # A batch over the plan's capacity.
    with pytest.raises(kda.KdaError):
        plan.build(_cu(cuda, [100, 400, 1]), T + 1)
    with pytest.raises(kda.KdaValueError):
        kda.ChunkPlan(T, 2, 48, device=cuda)
    with pytest.raises(kda.KdaTypeError):
        kda.ChunkPlan(float(T), 2, 64, device=cuda)
    plan.close()
    plan.close()  # twice is a no-op
    with pytest.raises(kda.KdaValueError, match="closed"):
        kda.gate_chunk_cumsum(g, A_log, 64, chunk_plan=plan)
    with pytest.raises(kda.KdaValueError, match="closed"):
        plan.build(cu, T)
