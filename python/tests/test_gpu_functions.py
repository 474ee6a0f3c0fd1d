"""Every function against a float64 torch reference on random inputs: dense
and ragged varlen, all options. Needs torch with CUDA (skipped otherwise)."""

import pytest

import kda

torch = pytest.importorskip("torch")
from gpu_reference import (assert_close, ref_chunk_cumsum, ref_chunk_indices,  # noqa: E402
                           ref_gate)

LENGTHS = [1, 17, 63, 64, 65, 1000, 4097]
DT = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def _inputs(dev, shape, dtype, seed=0):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    H, K = shape[2], shape[3] if len(shape) > 3 else 1
    g = torch.randn(shape, generator=gen).to(dtype).to(dev)
    A_log = torch.empty(H).uniform_(1, 16, generator=gen).log().to(dev)
    dt_bias = torch.randn(H * K, generator=gen).to(dev)
    return g, A_log, dt_bias


def _cu(dev, lengths, dtype=torch.int32):
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    return torch.tensor(cu, dtype=dtype, device=dev)


# ---------------------------------------------------------------- gate_chunk_cumsum

@pytest.mark.parametrize("shape", [(2, 100, 4, 64), (1, 4097, 2, 128), (3, 17, 3, 32),
                                   (1, 64, 1, 256), (2, 33, 5, 7)])
@pytest.mark.parametrize("in_dt", ["bf16", "f32", "f16"])
@pytest.mark.parametrize("out_dt", ["f32", "bf16"])
def test_gate_chunk_cumsum_dense(cuda, shape, in_dt, out_dt):
    g, A_log, dt_bias = _inputs(cuda, shape, DT[in_dt])
    out = kda.gate_chunk_cumsum(g, A_log, 64, dt_bias=dt_bias, output_dtype=DT[out_dt])
    ref = ref_chunk_cumsum(ref_gate(g, A_log, dt_bias), 64)
    assert_close(out, ref, DT[out_dt])


@pytest.mark.parametrize("chunk", [16, 32, 64, 128, 256])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("scale", [None, 0.5])
@pytest.mark.parametrize("lower_bound", [None, -5.0])
@pytest.mark.parametrize("with_alog", [True, False])
def test_gate_chunk_cumsum_options(cuda, chunk, bias, scale, lower_bound, with_alog):
    g, A_log, dt_bias = _inputs(cuda, (2, 300, 4, 64), torch.bfloat16, seed=chunk)
    A = A_log if with_alog else None
    b = dt_bias if bias else None
    out = kda.gate_chunk_cumsum(g, A, chunk, scale=scale, dt_bias=b, lower_bound=lower_bound)
    ref = ref_chunk_cumsum(ref_gate(g, A, b, lower_bound), chunk, scale=scale)
    assert_close(out, ref, torch.float32)


@pytest.mark.parametrize("idx_dt", [torch.int32, torch.int64])
@pytest.mark.parametrize("table", ["none", "kda", "kda_exact", "upstream_int64"])
@pytest.mark.parametrize("lower_bound", [None, -5.0])
@pytest.mark.parametrize("out_dt", ["f32", "bf16"])
def test_gate_chunk_cumsum_varlen(cuda, idx_dt, table, lower_bound, out_dt):
    T = sum(LENGTHS)
    g, A_log, dt_bias = _inputs(cuda, (1, T, 4, 64), torch.bfloat16, seed=3)
    cu = _cu(cuda, LENGTHS, idx_dt)
    ci = None
    if table == "kda":
        ci = kda.prepare_chunk_indices(cu, 64, total_tokens=T)
    elif table == "kda_exact":
        ci = kda.prepare_chunk_indices(cu, 64, exact=True)
    elif table == "upstream_int64":
        ci = torch.tensor(ref_chunk_indices(cu, 64), dtype=torch.int64, device=cuda)
    out = kda.gate_chunk_cumsum(g, A_log, 64, scale=2.0, dt_bias=dt_bias, cu_seqlens=cu,
                                output_dtype=DT[out_dt], chunk_indices=ci,
                                lower_bound=lower_bound)
    ref = ref_chunk_cumsum(ref_gate(g, A_log, dt_bias, lower_bound), 64, scale=2.0,
                           cu_seqlens=cu)
    assert_close(out, ref, DT[out_dt])


def test_gate_chunk_cumsum_varlen_empty_sequences(cuda):
    lengths = [0, 5, 0, 0, 130, 0]
    T = sum(lengths)
    g, A_log, dt_bias = _inputs(cuda, (1, T, 2, 16), torch.float32, seed=9)
    cu = _cu(cuda, lengths)
    out = kda.gate_chunk_cumsum(g, A_log, 32, dt_bias=dt_bias, cu_seqlens=cu)
    assert_close(out, ref_chunk_cumsum(ref_gate(g, A_log, dt_bias), 32, cu_seqlens=cu),
                 torch.float32)


@pytest.mark.parametrize("idx_dt", [torch.int32, torch.int64])
@pytest.mark.parametrize("lengths", [LENGTHS, [0, 5, 0, 130, 64, 0]])
def test_varlen_rows_in_the_launch(cuda, idx_dt, lengths):
    # cu_seqlens_cpu: the rows travel in the launch (no chunk table) for a
    # batch of at most 256 chunks; LENGTHS at chunk 16 has 338 and takes the
    # table. Same values as the reference either way.
    T = sum(lengths)
    g, A_log, dt_bias = _inputs(cuda, (1, T, 4, 64), torch.bfloat16, seed=11)
    cu = _cu(cuda, lengths, idx_dt)
    for chunk in (16, 64):
        out = kda.gate_chunk_cumsum(g, A_log, chunk, dt_bias=dt_bias, cu_seqlens=cu,
                                    cu_seqlens_cpu=cu.cpu())
        assert_close(out, ref_chunk_cumsum(ref_gate(g, A_log, dt_bias), chunk, cu_seqlens=cu),
                     torch.float32)
        act = ref_gate(g, A_log, dt_bias).float()
        out = kda.chunk_local_cumsum(act, chunk, reverse=True, cu_seqlens=cu,
                                     cu_seqlens_cpu=cu.cpu())
        assert_close(out, ref_chunk_cumsum(act, chunk, reverse=True, cu_seqlens=cu),
                     torch.float32)
    with pytest.raises(kda.KdaValueError):
        kda.gate_chunk_cumsum(g, A_log, 64, cu_seqlens=cu, cu_seqlens_cpu=cu.cpu()[:-1])
    with pytest.raises(kda.KdaDeviceError):
        kda.gate_chunk_cumsum(g, A_log, 64, cu_seqlens=cu, cu_seqlens_cpu=cu)


def _view_at(t, offset):
    """A contiguous copy of t that starts offset elements into a larger
    tensor, as a slice of a bigger buffer does: its address is off the
    allocation's alignment."""
    big = torch.empty(t.numel() + offset, dtype=t.dtype, device=t.device)
    big[offset:] = t.flatten()
    v = big[offset:].view(t.shape)
    assert v.is_contiguous() and v.storage_offset() == offset
    return v


@pytest.mark.parametrize("offset", [1, 2, 3, 5, 7])
@pytest.mark.parametrize("in_dt", ["bf16", "f32"])
@pytest.mark.parametrize("varlen", [False, True])
def test_views_off_alignment(cuda, offset, in_dt, varlen):
    # g, A_log and dt_bias as slices of larger tensors: the kernel takes
    # narrower loads (the vector width follows the pointers' alignment),
    # the values are the same.
    lengths = [1, 63, 64, 65, 300]
    shape = (1, sum(lengths), 4, 64) if varlen else (2, 300, 4, 64)
    g, A_log, dt_bias = _inputs(cuda, shape, DT[in_dt], seed=offset)
    cu = _cu(cuda, lengths) if varlen else None
    gv, Av, bv = _view_at(g, offset), _view_at(A_log, offset), _view_at(dt_bias, offset)
    assert gv.data_ptr() % 16 != 0
    out = kda.gate_chunk_cumsum(gv, Av, 64, dt_bias=bv, cu_seqlens=cu)
    assert_close(out, ref_chunk_cumsum(ref_gate(g, A_log, dt_bias), 64, cu_seqlens=cu),
                 torch.float32)
    act = _view_at(ref_gate(g, A_log, dt_bias).float(), offset)
    out = kda.chunk_local_cumsum(act, 64, reverse=True, cu_seqlens=cu)
    assert_close(out, ref_chunk_cumsum(act, 64, reverse=True, cu_seqlens=cu), torch.float32)


# ---------------------------------------------------------------- chunk_local_cumsum

@pytest.mark.parametrize("shape", [(2, 100, 4, 64), (1, 4097, 2, 128), (3, 65, 3),
                                   (2, 1000, 16), (1, 1, 1)])
@pytest.mark.parametrize("in_dt", ["f32", "bf16", "f16"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("scale", [None, 0.25])
def test_chunk_local_cumsum_dense(cuda, shape, in_dt, reverse, scale):
    g = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(DT[in_dt]).to(cuda)
    out = kda.chunk_local_cumsum(g, 64, reverse=reverse, scale=scale)
    assert_close(out, ref_chunk_cumsum(g, 64, reverse, scale), torch.float32)


@pytest.mark.parametrize("chunk", [16, 256])
@pytest.mark.parametrize("out_dt", ["f32", "bf16"])
def test_chunk_local_cumsum_chunks(cuda, chunk, out_dt):
    g = torch.randn(2, 600, 4, 32, device=cuda)
    out = kda.chunk_local_cumsum(g, chunk, output_dtype=DT[out_dt])
    assert_close(out, ref_chunk_cumsum(g, chunk), DT[out_dt])


@pytest.mark.parametrize("vector", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("idx_dt", [torch.int32, torch.int64])
@pytest.mark.parametrize("table", ["none", "kda", "upstream_int64"])
def test_chunk_local_cumsum_varlen(cuda, vector, reverse, idx_dt, table):
    T = sum(LENGTHS)
    shape = (1, T, 4, 64) if vector else (1, T, 4)
    g = torch.randn(shape, generator=torch.Generator().manual_seed(2)).to(cuda)
    cu = _cu(cuda, LENGTHS, idx_dt)
    ci = None
    if table == "kda":
        ci = kda.prepare_chunk_indices(cu, 64, cu_seqlens_cpu=cu.cpu())
    elif table == "upstream_int64":
        ci = torch.tensor(ref_chunk_indices(cu, 64), dtype=torch.int64, device=cuda)
    out = kda.chunk_local_cumsum(g, 64, reverse=reverse, scale=-1.5, cu_seqlens=cu,
                                 chunk_indices=ci)
    assert_close(out, ref_chunk_cumsum(g, 64, reverse, -1.5, cu), torch.float32)


# ---------------------------------------------------------------- gate

@pytest.mark.parametrize("shape", [(2, 33, 4, 64), (5, 3, 16), (1, 4097, 2, 128), (7, 256)])
@pytest.mark.parametrize("in_dt", ["bf16", "f32", "f16"])
@pytest.mark.parametrize("out_dt", ["f32", "bf16"])
def test_gate_shapes(cuda, shape, in_dt, out_dt):
    H, K = shape[-2:]
    gen = torch.Generator().manual_seed(4)
    g = torch.randn(shape, generator=gen).to(DT[in_dt]).to(cuda)
    A_log = torch.empty(H).uniform_(1, 16, generator=gen).log().to(cuda)
    b = torch.randn(H * K, generator=gen).to(cuda)
    out = kda.gate(g, A_log, b, output_dtype=DT[out_dt])
    assert out.shape == g.shape
    assert_close(out, ref_gate(g, A_log, b), DT[out_dt])


@pytest.mark.parametrize("with_alog", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lower_bound", [None, -5.0])
def test_gate_options(cuda, with_alog, bias, lower_bound):
    g, A_log, dt_bias = _inputs(cuda, (2, 77, 4, 64), torch.bfloat16, seed=5)
    A = A_log if with_alog else None
    b = dt_bias if bias else None
    out = kda.fused_kda_gate(g, A, b, lower_bound=lower_bound)
    assert_close(out, ref_gate(g, A, b, lower_bound), torch.float32)


def test_gate_param_dtypes_converted(cuda):
    g, A_log, dt_bias = _inputs(cuda, (1, 64, 4, 64), torch.bfloat16, seed=6)
    out = kda.gate(g, A_log.bfloat16(), dt_bias.bfloat16())
    assert_close(out, ref_gate(g, A_log.bfloat16(), dt_bias.bfloat16()), torch.float32)


# ---------------------------------------------------------------- prepare_chunk_indices

@pytest.mark.parametrize("idx_dt", [torch.int32, torch.int64])
@pytest.mark.parametrize("chunk", [16, 64, 256])
def test_prepare_chunk_indices(cuda, idx_dt, chunk):
    lengths = LENGTHS + [0, 3, 0]
    cu = _cu(cuda, lengths, idx_dt)
    ref = ref_chunk_indices(cu, chunk)
    T, N = sum(lengths), len(lengths)
    table = kda.prepare_chunk_indices(cu, chunk, total_tokens=T)
    cap = (T + chunk - 1) // chunk + N
    assert table.dtype == torch.int32 and table.device == cu.device
    assert table.shape == (cap, 2)
    count = kda.num_chunks_of(table)
    assert count is not None and int(count.item()) == len(ref)
    assert table[:len(ref)].tolist() == ref
    assert (table[len(ref):] == -1).all()
    # Token count taken from cu_seqlens (one sync) or cu_seqlens_cpu: same table.
    assert torch.equal(kda.prepare_chunk_indices(cu, chunk), table)
    assert torch.equal(kda.prepare_chunk_indices(cu, chunk, cu_seqlens_cpu=cu.cpu()), table)
    exact = kda.prepare_chunk_indices(cu, chunk, exact=True)
    assert exact.dtype == idx_dt and exact.tolist() == ref
    host = kda.prepare_chunk_indices(cu.cpu(), chunk)
    assert host.device.type == "cpu" and host.tolist() == ref


def test_other_device_tensor_rejected(cuda):
    g, A_log, dt_bias = _inputs(cuda, (1, 64, 2, 8), torch.float32)
    with pytest.raises(kda.KdaDeviceError, match="same CUDA device"):
        kda.gate_chunk_cumsum(g, A_log.cpu(), 64)
    with pytest.raises(kda.KdaValueError, match="elements"):
        kda.gate_chunk_cumsum(g, A_log[:1], 64)
    with pytest.raises(kda.KdaValueError, match="contiguous"):
        kda.gate_chunk_cumsum(g.transpose(1, 2).contiguous().transpose(1, 2), A_log, 64)


def test_library_errors_surface(cuda):
    g = torch.randn(1, 64, 2, 300, device=cuda)  # K above the maximum (256)
    with pytest.raises(kda.KdaValueError, match="KDA_ERROR_UNSUPPORTED_HEAD_DIM"):
        kda.chunk_local_cumsum(g, 64)


def test_empty_input(cuda):
    g = torch.empty(1, 0, 2, 8, device=cuda)
    out = kda.chunk_local_cumsum(g, 64)
    assert out.shape == g.shape and out.dtype == torch.float32


def test_stats_and_info(cuda):
    info = kda.device_info(cuda)
    assert info["ordinal"] == cuda.index and info["name"]
    s = kda.stats(cuda)
    assert s["launches"] > 0
