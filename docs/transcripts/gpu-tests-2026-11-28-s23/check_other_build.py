# A server process on a prewarmed database: dense and varlen calls, each
# checked against float64; prints the library's counters.
import torch, kda
torch.manual_seed(11)
K = 128

def ref_of(g, A, b, cu, H):
    x = g[0].double() + b.double().view(H, K)
    act = -torch.exp(A.double()).view(H, 1) * torch.nn.functional.softplus(x)
    out = torch.empty_like(act)
    for s, e in zip(cu[:-1], cu[1:]):
        for c in range(s, e, 64):
            out[c:min(c + 64, e)] = act[c:min(c + 64, e)].cumsum(0)
    return out

worst_bad = 0
for H in (32, 16):
    A = torch.log(torch.rand(H, device="cuda") * 15 + 1)
    b = torch.randn(H * K, device="cuda")
    for T in (2048, 8192):
        g = torch.randn(1, T, H, K, device="cuda", dtype=torch.bfloat16)
        out = kda.gate_chunk_cumsum(g, A, 64, dt_bias=b)
        ref = ref_of(g, A, b, [0, T], H)
        bad = ((out[0].double() - ref).abs() > 2e-5 * (1 + ref.abs())).sum().item()
        worst_bad = max(worst_bad, bad)
        print(f"dense T={T} H={H}: out of budget {bad}", flush=True)
    T = 8192
    lens = [1500, 700, 64, 2100, 33, 1800, 995, 1000]
    cu = [0]
    for l in lens: cu.append(cu[-1] + l)
    cu_t = torch.tensor(cu, device="cuda", dtype=torch.int32)
    g = torch.randn(1, T, H, K, device="cuda", dtype=torch.bfloat16)
    ref = ref_of(g, A, b, cu, H)
    ci = kda.prepare_chunk_indices(cu_t, 64, total_tokens=T)
    for name, kw in (("table", dict(chunk_indices=ci)), ("no table", {})):
        out = kda.gate_chunk_cumsum(g, A, 64, dt_bias=b, cu_seqlens=cu_t, **kw)
        bad = ((out[0].double() - ref).abs() > 2e-5 * (1 + ref.abs())).sum().item()
        worst_bad = max(worst_bad, bad)
        print(f"varlen ({name}) T={T} H={H} 8 seqs: out of budget {bad}", flush=True)
s = kda.stats()
print("nvrtc_compiles", s["nvrtc_compiles"], "db_result_hits", s["db_result_hits"],
      "db_cubin_hits", s["db_cubin_hits"], "db_cubin_other_nvrtc_hits", s.get("db_cubin_other_nvrtc_hits"),
      "tuning_runs", s["tuning_runs"])
print("ALL IN BUDGET" if worst_bad == 0 else "OUT OF BUDGET")
