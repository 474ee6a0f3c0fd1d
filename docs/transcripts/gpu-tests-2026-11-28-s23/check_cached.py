# Dense calls in a KDA_TUNE=cached process on a database made without a GPU
# (kda-tune prewarm --compile-only --arch sm_90): how many NVRTC compiles?
import sys, torch, kda
torch.manual_seed(7)
H, K = 32, 128
for T in (2048, 8192, 32768):
    g = torch.randn(1, T, H, K, device="cuda", dtype=torch.bfloat16)
    A = torch.log(torch.rand(H, device="cuda") * 15 + 1)
    b = torch.randn(H * K, device="cuda")
    out = kda.gate_chunk_cumsum(g, A, 64, dt_bias=b)
    x = g.double() + b.double().view(H, K)
    ref = -torch.exp(A.double()).view(H, 1) * torch.nn.functional.softplus(x)
    ref = ref.view(1, T // 64, 64, H, K).cumsum(2).view(1, T, H, K)
    bad = ((out.double() - ref).abs() > 2e-5 * (1 + ref.abs())).sum().item()
    s = kda.stats()
    print(f"T={T} H={H}: out of budget {bad}; nvrtc_compiles {s['nvrtc_compiles']} "
          f"db_cubin_hits {s.get('db_cubin_hits')}", flush=True)
print("stats", kda.stats())
