"""`python -m kda prewarm` on a GPU, then a server process on the same
database: the prewarmed shapes run with no NVRTC compile and no tuning,
their outputs checked against float64."""

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

PKG_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Calls as fla's chunk_kda_fwd makes them: scale=RCP_LN2 (prewarm's default).
SERVER = r"""
import json, math, torch, kda
torch.manual_seed(5)
H, K, bad, S = 4, 128, 0, 1 / math.log(2)
A = torch.log(torch.rand(H, device="cuda") * 15 + 1)
b = torch.randn(H * K, device="cuda")
def ref(g, cu):
    x = g[0].double() + b.double().view(H, K)
    act = -torch.exp(A.double()).view(H, 1) * torch.nn.functional.softplus(x)
    out = torch.empty_like(act)
    for s, e in zip(cu[:-1], cu[1:]):
        for c in range(s, e, 64):
            out[c:min(c + 64, e)] = act[c:min(c + 64, e)].cumsum(0)
    return out * S
def check(out, r):
    return int(((out[0].double() - r).abs() > 2e-5 * (1 + r.abs())).sum())
g = torch.randn(1, 512, H, K, device="cuda", dtype=torch.bfloat16)
bad += check(kda.gate_chunk_cumsum(g, A, 64, scale=S, dt_bias=b), ref(g, [0, 512]))
cu = [0, 300, 301, 1000, 1100, 1500, 1700, 1999, 2048]
g = torch.randn(1, 2048, H, K, device="cuda", dtype=torch.bfloat16)
cu_t = torch.tensor(cu, dtype=torch.int32)
out = kda.gate_chunk_cumsum(g, A, 64, scale=S, dt_bias=b, cu_seqlens=cu_t.cuda(),
                            cu_seqlens_cpu=cu_t)
bad += check(out, ref(g, cu))
print(json.dumps(dict(kda.stats(), out_of_budget=bad)))
"""


def _env(tmp_path, **extra):
    e = dict(os.environ, PYTHONPATH=PKG_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             KDA_CACHE_DIR=str(tmp_path))
    e.pop("KDA_TUNE", None)  # conftest's KDA_TUNE=off would forbid tuning
    e.update(extra)
    return e


def _prewarm(tmp_path, *extra):
    r = subprocess.run([sys.executable, "-m", "kda", "prewarm", "--heads", "4", "--json"]
                       + list(extra), env=_env(tmp_path), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def test_prewarmed_shapes_run_in_a_server_without_compiling(cuda, tmp_path):
    shapes = (["--tokens", "512"], ["--tokens", "2048", "--varlen", "--host-rows"])
    for extra in shapes:
        (row,) = _prewarm(tmp_path, *extra)
        print(row)
        assert row["outcome"] == "tuned" and row["config"].startswith("vec=")
        assert row["median_us"] > 0 and row["candidates"] > 1
        assert row["db_path"] == str(tmp_path / "tune.db")
        assert row["path"] == ("host-rows" if "--varlen" in extra else "dense")
        assert row["scale"] and not row["reverse"] and row["a_log"]
    for extra in shapes:  # stored: skipped
        assert _prewarm(tmp_path, *extra)[0]["outcome"] == "skipped"
    r = subprocess.run([sys.executable, "-c", SERVER], env=_env(tmp_path, KDA_TUNE="cached"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads(r.stdout.strip().splitlines()[-1])
    print(s)
    assert s["out_of_budget"] == 0
    assert s["nvrtc_compiles"] == 0 and s["tuning_runs"] == 0
    assert s["db_result_hits"] == 2 and s["db_cubin_hits"] == 2


# A view 4 bf16 elements (8 bytes) into a larger buffer, as a slice of a
# fused projection's output can be: 4-wide vectors at most.
VIEW_SERVER = r"""
import json, math, torch, kda
torch.manual_seed(6)
H, K, S = 4, 128, 1 / math.log(2)
A = torch.log(torch.rand(H, device="cuda") * 15 + 1)
b = torch.randn(H * K, device="cuda")
flat = torch.randn(512 * H * K + 4, device="cuda", dtype=torch.bfloat16)
g = flat[4:].view(1, 512, H, K)
assert g.data_ptr() % 16 == 8
out = kda.gate_chunk_cumsum(g, A, 64, scale=S, dt_bias=b)
x = g[0].double() + b.double().view(H, K)
act = -torch.exp(A.double()).view(H, 1) * torch.nn.functional.softplus(x)
r = torch.cat([act[c:c + 64].cumsum(0) for c in range(0, 512, 64)]) * S
bad = int(((out[0].double() - r).abs() > 2e-5 * (1 + r.abs())).sum())
print(json.dumps(dict(kda.stats(), out_of_budget=bad)))
"""


def test_a_prewarmed_view_runs_in_a_server_without_compiling(cuda, tmp_path):
    (row,) = _prewarm(tmp_path, "--tokens", "512", "--g-align", "8")
    print(row)
    assert row["outcome"] == "tuned" and row["g_align"] == 8 and row["out_align"] == 256
    vec = int(row["config"].split(",")[0].split("=")[1])
    assert vec <= 4  # the view's calls cannot take 8-wide vectors
    r = subprocess.run([sys.executable, "-c", VIEW_SERVER], env=_env(tmp_path, KDA_TUNE="cached"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads(r.stdout.strip().splitlines()[-1])
    print(s)
    assert s["out_of_budget"] == 0
    assert s["nvrtc_compiles"] == 0 and s["tuning_runs"] == 0
    assert s["db_result_hits"] == 1 and s["db_cubin_hits"] == 1
