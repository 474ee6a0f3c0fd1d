"""The package gives bit-identical results to a direct C API call on the
same inputs, same context and stream."""

import ctypes

import pytest

import kda
from kda import _capi as C

torch = pytest.importorskip("torch")


def _direct(fn, g, out, **fields):
    lib = kda.load_library()
    a = C.gate_args()
    a.g = g.data_ptr()
    a.g_dtype = {torch.float32: C.KDA_DTYPE_F32, torch.bfloat16: C.KDA_DTYPE_BF16,
                 torch.float16: C.KDA_DTYPE_F16}[g.dtype]
    a.out = out.data_ptr()
    a.out_dtype = C.KDA_DTYPE_F32 if out.dtype == torch.float32 else C.KDA_DTYPE_BF16
    for k, v in fields.items():
        setattr(a, k, v)
    ctx = kda.context(g.device)
    stream = torch.cuda.current_stream(g.device).cuda_stream
    st = getattr(lib, fn)(ctx, ctypes.byref(a), stream)
    assert st == C.KDA_OK, lib.kda_last_error()
    return out


def test_gate_chunk_cumsum_identical(cuda):
    B, T, H, K = 2, 1000, 4, 64
    g = torch.randn(B, T, H, K, device=cuda, dtype=torch.bfloat16)
    A_log = torch.empty(H, device=cuda).uniform_(1, 16).log()
    b = torch.randn(H * K, device=cuda)
    pkg = kda.gate_chunk_cumsum(g, A_log, 64, scale=0.7, dt_bias=b)
    ref = _direct("kda_gate_chunk_cumsum", g, torch.empty_like(pkg), batch=B, seq_len=T,
                  num_heads=H, head_dim=K, chunk_size=64, gate=C.KDA_GATE_SOFTPLUS,
                  A_log=A_log.data_ptr(), dt_bias=b.data_ptr(), scale=0.7, has_scale=1)
    assert torch.equal(pkg, ref)


def test_varlen_identical(cuda):
    lengths = [1, 17, 63, 64, 65, 1000, 4097]
    T, N, H, K = sum(lengths), len(lengths), 4, 64
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32,
                      device=cuda)
    g = torch.randn(1, T, H, K, device=cuda, dtype=torch.bfloat16)
    A_log = torch.empty(H, device=cuda).uniform_(1, 16).log()
    pkg = kda.gate_chunk_cumsum(g, A_log, 64, cu_seqlens=cu, lower_bound=-5.0,
                                output_dtype=torch.bfloat16)
    lib = kda.load_library()
    cap = lib.kda_chunk_indices_capacity(T, N, 64)
    table = torch.empty(cap, 2, dtype=torch.int32, device=cuda)
    count = torch.empty(1, dtype=torch.int32, device=cuda)
    st = lib.kda_chunk_indices_build_device(kda.context(cuda), cu.data_ptr(), C.KDA_DTYPE_I32,
                                            N, T, 64, table.data_ptr(), cap, count.data_ptr(),
                                            torch.cuda.current_stream().cuda_stream)
    assert st == C.KDA_OK
    ref = _direct("kda_gate_chunk_cumsum", g, torch.empty_like(pkg), batch=1, seq_len=T,
                  num_heads=H, head_dim=K, chunk_size=64, gate=C.KDA_GATE_LOWER_BOUND,
                  A_log=A_log.data_ptr(), lower_bound=-5.0, cu_seqlens=cu.data_ptr(),
                  cu_seqlens_dtype=C.KDA_DTYPE_I32, num_seqs=N, chunk_indices=table.data_ptr(),
                  num_chunks=cap, num_chunks_device=count.data_ptr())
    assert torch.equal(pkg, ref)
    assert torch.equal(kda.prepare_chunk_indices(cu, 64, total_tokens=T), table)


def test_chunk_local_cumsum_and_gate_identical(cuda):
    g = torch.randn(3, 200, 8, device=cuda)
    pkg = kda.chunk_local_cumsum(g, 32, reverse=True)
    ref = _direct("kda_chunk_local_cumsum", g, torch.empty_like(pkg), batch=3, seq_len=200,
                  num_heads=8, head_dim=1, chunk_size=32, reverse=1)
    assert torch.equal(pkg, ref)
    g = torch.randn(2, 50, 4, 64, device=cuda, dtype=torch.float16)
    A_log = torch.zeros(4, device=cuda)
    pkg = kda.gate(g, A_log)
    ref = _direct("kda_gate", g, torch.empty_like(pkg), batch=1, seq_len=100, num_heads=4,
                  head_dim=64, gate=C.KDA_GATE_SOFTPLUS, A_log=A_log.data_ptr())
    assert torch.equal(pkg, ref)
    # A_log=None means a decay scale of 1, i.e. A_log = 0.
    assert torch.equal(kda.gate(g), ref)
