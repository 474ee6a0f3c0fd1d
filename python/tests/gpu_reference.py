"""Float64 torch references of the KDA gate functions (upstream semantics)."""

import torch
import torch.nn.functional as F


def ref_gate(g, A_log=None, dt_bias=None, lower_bound=None):
    H, K = g.shape[-2:]
    x = g.double()
    if dt_bias is not None:
        x = x + dt_bias.double().view(H, K)
    a = A_log.double().view(H, 1).exp() if A_log is not None else 1.0
    if lower_bound is None:
        return -a * F.softplus(x)
    return lower_bound * torch.sigmoid(a * x)


def ref_chunk_cumsum(x, chunk_size, reverse=False, scale=None, cu_seqlens=None):
    """x: [B, T, H(, K)] float64; per-chunk (per-sequence when varlen) cumsum."""
    x = x.double()
    out = torch.zeros_like(x)
    B, T = x.shape[:2]
    if cu_seqlens is None:
        spans = [(b, 0, T) for b in range(B)]
    else:
        cu = [int(v) for v in cu_seqlens.cpu().tolist()]
        spans = [(0, cu[i], cu[i + 1]) for i in range(len(cu) - 1)]
    for b, s, e in spans:
        for c in range(s, e, chunk_size):
            blk = x[b, c:min(c + chunk_size, e)]
            if reverse:
                cs = blk.flip(0).cumsum(0).flip(0)
            else:
                cs = blk.cumsum(0)
            out[b, c:c + blk.shape[0]] = cs
    if scale is not None:
        out = out * scale
    return out


def ref_chunk_indices(cu_seqlens, chunk_size):
    cu = [int(v) for v in cu_seqlens.cpu().tolist()]
    rows = []
    for i in range(len(cu) - 1):
        n = (cu[i + 1] - cu[i] + chunk_size - 1) // chunk_size
        rows += [[i, c] for c in range(n)]
    return rows


def bf16_half_ulp(x):
    """Half the spacing of bfloat16 values at magnitude x (a double tensor):
    the most rounding to nearest can move a value of that magnitude."""
    _, e = torch.frexp(x)  # x = m * 2^e, m in [0.5, 1)
    half = torch.pow(2.0, (e - 9).double())
    return torch.where(x >= 2.0 ** -126, half, torch.full_like(x, 2.0 ** -134))


def assert_close(out, ref, out_dtype):
    """fp32: within 2e-5 * (1 + |ref|). bf16: the fp32 result rounded to
    nearest, so that plus half a bf16 ulp (of the larger of |out| and |ref|,
    as tests/test_util.c checks): an output rounded toward zero fails."""
    assert out.dtype == out_dtype
    assert out.shape == ref.shape
    err = (out.double() - ref).abs()
    bound = 2e-5 * (1 + ref.abs())
    if out_dtype != torch.float32:
        bound = bound + bf16_half_ulp(torch.maximum(out.double().abs(), ref.abs()))
    bad = err > bound
    if bad.any():
        i = bad.nonzero()[0].tolist()
        raise AssertionError("%d/%d elements out of tolerance; first at %s: out=%r ref=%r "
                             "(max rel err %.3g)" % (int(bad.sum()), out.numel(), i,
                                                     float(out.double()[tuple(i)]),
                                                     float(ref[tuple(i)]),
                                                     float((err / (1 + ref.abs())).max())))
