"""kda.prewarm and `python -m kda prewarm` without a GPU: argument checks,
the shapes it asks for, a missing driver, and (on the tests' stand-in
driver, where no kernel runs and so every tuning run fails) that a failed
shape reports the library's message and the others still run."""

import json
import os
import subprocess
import sys

import pytest

import kda
from kda import _capi as C
from kda import _prewarm
from conftest import stand_in_driver_path

PKG_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, **env):
    e = dict(os.environ, PYTHONPATH=PKG_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    e.pop("KDA_TUNE", None)  # conftest's KDA_TUNE=off would forbid tuning
    e.update(env)
    return subprocess.run([sys.executable, "-m", "kda", "prewarm"] + args, env=e,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("kw", [dict(heads=0), dict(heads="32"), dict(heads=[32, -1]),
                                dict(tokens=[]), dict(gate="relu"), dict(dtype="int8"),
                                dict(kernel="attention"), dict(budget_ms=0),
                                dict(head_dim=True)])
def test_bad_arguments_raise_before_any_device_is_touched(kw):
    args = dict(heads=32, tokens=512)
    args.update(kw)
    heads, tokens = args.pop("heads"), args.pop("tokens")
    with pytest.raises(kda.KdaValueError):
        kda.prewarm(heads, tokens, **args)


def test_host_rows_fit_is_the_library_rule():
    # 8 sequences of 1024 tokens: 128 chunks of 64, in the launch.
    assert _prewarm.host_rows_fit(8192, 8, 64)
    # 512 chunks: more than KDA_MAX_HOST_ROWS (256), so the table.
    assert not _prewarm.host_rows_fit(32768, 8, 64)
    # Exactly 256 chunks fit; one token more makes a 257th.
    assert _prewarm.host_rows_fit(16384, 1, 64)
    assert not _prewarm.host_rows_fit(16385, 1, 64)
    # Sequences of one token each: one chunk per sequence.
    assert _prewarm.host_rows_fit(256, 256, 64) and not _prewarm.host_rows_fit(257, 257, 64)
    # 2^24 tokens never pass their rows in the launch, whatever the chunks.
    assert not _prewarm.host_rows_fit(1 << 24, 1, 1 << 20)


def test_shapes_name_the_path_a_call_would_take(lib):
    def path(**kw):
        a = dict(kernel=0, gate=1, H=16, T=8192, head_dim=128, chunk_size=64, dtype=2,
                 out_dtype=0, bias=True, varlen=True, num_seqs=8, host_rows=False,
                 chunk_plan=False)
        a.update(kw)
        return _prewarm._shape(**a)
    a, p = path(varlen=False)
    assert p == "dense" and a.num_seqs == 0 and a.dt_bias and a.A_log and not a.cu_seqlens_host
    a, p = path()
    assert p == "table" and a.num_seqs == 8 and not a.cu_seqlens_host and not a.chunk_plan
    assert path(host_rows=True)[1] == "host-rows"
    assert path(host_rows=True, T=32768)[1] == "table"  # too many chunks for the launch
    assert path(chunk_plan=True, host_rows=True)[1] == "plan"
    a, _ = path(gate=0, bias=True)  # no activation: no bias, no A_log
    assert not a.dt_bias and not a.A_log
    a, _ = path(gate=2)
    assert a.lower_bound == -5.0
    assert path(T=4, num_seqs=8)[0].num_seqs == 4  # no more sequences than tokens


def test_no_driver_is_a_clear_error_and_exit_status_2():
    r = _run(["--heads", "4", "--tokens", "512"], KDA_LIBCUDA="/nonexistent/libcuda.so.1")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "KDA_ERROR_NO_DRIVER" in r.stderr
    # What to do without a GPU, with what a pip install has: this command on
    # a machine with the server's GPU, its database shipped; kda-tune only
    # from a source build.
    assert "python -m kda prewarm" in r.stderr and "--db" in r.stderr
    assert "kda-tune prewarm --compile-only" in r.stderr and "source build" in r.stderr


def test_usage_error_is_exit_status_2():
    r = _run(["--heads", "x"])
    assert r.returncode == 2 and "comma-separated" in r.stderr


def test_each_shape_runs_and_a_failure_carries_the_library_message(tmp_path):
    db = str(tmp_path / "tune.db")
    r = _run(["--heads", "4,8", "--tokens", "512,32768", "--varlen", "--host-rows",
              "--budget-ms", "200", "--db", db, "--json"], KDA_LIBCUDA=stand_in_driver_path())
    assert r.returncode == 1, r.stdout + r.stderr
    rows = json.loads(r.stdout)
    assert [(x["heads"], x["tokens"]) for x in rows] == [(4, 512), (4, 32768), (8, 512),
                                                         (8, 32768)]
    assert [x["path"] for x in rows] == ["host-rows", "table"] * 2
    assert [x["bucket"] for x in rows] == [0, 3] * 2
    for x in rows:
        assert x["outcome"] == "failed" and x["db_path"] == db
        # The stand-in runs no kernel, so the tuner cannot validate anything.
        assert "KDA_ERROR_INTERNAL" in x["error"] and "compare kernel did not run" in x["error"]


def test_tuning_off_in_the_environment_is_reported(tmp_path):
    r = _run(["--heads", "4", "--tokens", "512", "--db", str(tmp_path / "t.db")],
             KDA_LIBCUDA=stand_in_driver_path(), KDA_TUNE="off")
    assert r.returncode == 1
    assert "KDA_ERROR_INVALID_ARGUMENT" in r.stdout and "KDA_TUNE=off" in r.stdout


# ---- the shapes kda_prewarm is asked for, on a recording stand-in library --


class _RecordingLib:
    """Takes the place of libkda in kda.prewarm: records each kda_prewarm
    shape and reports it tuned, so the shapes asked for can be read back."""

    def __init__(self):
        self.shapes, self.contexts, self.devices = [], 0, []

    def kda_context_create(self, opts, ctx):
        self.contexts += 1
        self.devices.append(opts._obj.device)
        ctx._obj.value = 1
        return C.KDA_OK

    def kda_prewarm(self, ctx, kernel, shape, force, result):
        self.shapes.append((kernel, C.KdaGateArgs.from_buffer_copy(shape._obj)))
        result._obj.outcome = C.KDA_PREWARM_TUNED
        return C.KDA_OK

    def kda_token_bucket(self, tokens):
        return 0

    def kda_context_db_path(self, ctx):
        return b"/stand-in/tune.db"

    def kda_context_destroy(self, ctx):
        pass


@pytest.fixture
def rec(monkeypatch):
    lib = _RecordingLib()
    monkeypatch.setattr(C, "load_library", lambda *a, **k: lib)
    return lib


def _flags(rec):
    return [(a.has_scale, a.reverse, bool(a.A_log), a.cu_seqlens_dtype) for _, a in rec.shapes]


def test_default_scale_is_upstreams_call(rec):
    """fla's chunk_kda_fwd calls the gate cumsum with scale=RCP_LN2, and
    kda's functions set has_scale whenever scale is not None: that is the
    default shape of both cumsum kernels; the activation alone has none."""
    kda.prewarm(16, 512)
    kda.prewarm(16, 512, gate="none")
    kda.prewarm(16, 512, kernel="gate")
    assert [k for k, _ in rec.shapes] == [C.KDA_KERNEL_GATE_CHUNK_CUMSUM,
                                          C.KDA_KERNEL_CHUNK_LOCAL_CUMSUM, C.KDA_KERNEL_GATE]
    assert _flags(rec) == [(1, 0, True, C.KDA_DTYPE_I32), (1, 0, False, C.KDA_DTYPE_I32),
                           (0, 0, True, C.KDA_DTYPE_I32)]


def test_scale_reverse_a_log_and_seqlens_dtype_are_asked_for(rec):
    rows = kda.prewarm(16, 512, scale="both")
    assert _flags(rec) == [(0, 0, True, C.KDA_DTYPE_I32), (1, 0, True, C.KDA_DTYPE_I32)]
    assert [r["scale"] for r in rows] == [False, True]
    rec.shapes.clear()
    rows = kda.prewarm(16, 512, gate="none", scale=False, reverse="both")
    assert _flags(rec) == [(0, 0, False, C.KDA_DTYPE_I32), (0, 1, False, C.KDA_DTYPE_I32)]
    assert [r["reverse"] for r in rows] == [False, True]
    rec.shapes.clear()
    rows = kda.prewarm(16, 512, gate="lower_bound", a_log="both")
    assert _flags(rec) == [(1, 0, False, C.KDA_DTYPE_I32), (1, 0, True, C.KDA_DTYPE_I32)]
    assert [r["a_log"] for r in rows] == [False, True]
    rec.shapes.clear()
    rows = kda.prewarm(16, 512, varlen=True, chunk_plan=True, seqlens_dtype="both")
    assert _flags(rec) == [(1, 0, True, C.KDA_DTYPE_I32), (1, 0, True, C.KDA_DTYPE_I64)]
    assert [r["seqlens_dtype"] for r in rows] == ["int32", "int64"]
    assert all(a.chunk_plan and a.num_seqs == 8 for _, a in rec.shapes)


def test_cli_options_reach_the_shapes(rec, capsys):
    from kda.__main__ import main
    assert main(["prewarm", "--heads", "16", "--tokens", "512", "--scale", "no", "--varlen",
                 "--seqlens-dtype", "int64", "--gate", "lower_bound", "--a-log", "no"]) == 0
    assert main(["prewarm", "--heads", "16", "--tokens", "512", "--gate", "none", "--reverse",
                 "yes", "--scale", "both"]) == 0
    assert _flags(rec) == [(0, 0, False, C.KDA_DTYPE_I64), (0, 1, False, C.KDA_DTYPE_I32),
                           (1, 1, False, C.KDA_DTYPE_I32)]
    out = capsys.readouterr().out
    assert "int64" in out and "no A_log" in out and " scale reverse " in out


def test_views_ask_for_their_alignment(rec, capsys):
    """A view's g and out reach kda_prewarm as addresses within 256 bytes
    (what it reads them for); whole tensors as NULL (256-byte aligned)."""
    rows = kda.prewarm(16, 512, g_align=8, out_align=16)
    kda.prewarm(16, 512)
    (_, view), (_, whole) = rec.shapes
    assert (view.g, view.out) == (8, 16) and not whole.g and not whole.out
    assert (rows[0]["g_align"], rows[0]["out_align"]) == (8, 16)
    from kda.__main__ import main
    assert main(["prewarm", "--heads", "16", "--tokens", "512", "--g-align", "4"]) == 0
    assert (rec.shapes[-1][1].g, rec.shapes[-1][1].out) == (4, None)
    assert "g-align=4 out-align=256" in capsys.readouterr().out
    for bad in (0, 3, 512, True, 8.0, "8"):
        with pytest.raises(kda.KdaValueError):
            kda.prewarm(16, 512, g_align=bad)
        with pytest.raises(kda.KdaValueError):
            kda.prewarm(16, 512, out_align=bad)


BAD = [
    (["--g-align", "12"], "g_align must be a power of two"),
    (["--chunk", "48"], "power of two in [%d, %d]" % (C.KDA_MIN_CHUNK, C.KDA_MAX_CHUNK)),
    (["--chunk", "512"], "power of two in [%d, %d]" % (C.KDA_MIN_CHUNK, C.KDA_MAX_CHUNK)),
    (["--head-dim", "512"], "head_dim must be in [1, %d]" % C.KDA_MAX_HEAD_DIM),
    (["--heads", "5000"], "heads must be in [1, %d]" % C.KDA_MAX_HEADS),
    (["--gate", "none", "--kernel", "gate_chunk_cumsum"], "needs gate softplus or lower_bound"),
    (["--gate", "none", "--kernel", "gate"], "needs gate softplus or lower_bound"),
    (["--kernel", "chunk_local_cumsum"], "takes an activated gate (gate none)"),
    (["--host-rows"], "needs varlen=True (--varlen)"),
    (["--chunk-plan"], "needs varlen=True (--varlen)"),
    (["--seqlens-dtype", "int64"], "needs varlen=True (--varlen)"),
    (["--varlen", "--host-rows", "--chunk-plan"], "one or the other"),
    (["--budget-ms", "nan"], "budget_ms must be a positive finite"),
    (["--budget-ms", "inf"], "budget_ms must be a positive finite"),
    (["--budget-ms", "-1"], "budget_ms must be a positive finite"),
    (["--out-dtype", "f16"], "output_dtype must be f32 or bf16"),
    (["--kernel", "gate", "--varlen"], "no varlen form"),
    (["--kernel", "gate", "--scale", "yes"], "no cumsum"),
    (["--reverse", "yes"], "reverse"),
    (["--a-log", "no"], "softplus gate always reads A_log"),
    (["--gate", "none", "--a-log", "yes"], "reads no A_log"),
    (["--scale", "maybe"], "yes, no or both"),
    (["--seqs", "0"], "num_seqs must be a positive int"),
]


@pytest.mark.parametrize("args,msg", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_cli_bad_arguments_exit_2_before_any_device(rec, capsys, args, msg):
    """Each of these used to prewarm something (a failed row, exit 1, or a
    shape no call makes); the limits are kda.h's (mirrored in kda._capi and
    checked against the header by test_cpu_header_layout)."""
    from kda.__main__ import main
    assert main(["prewarm", "--heads", "16", "--tokens", "512"] + args) == 2
    err = capsys.readouterr().err
    assert msg in err, err
    assert rec.contexts == 0 and rec.shapes == []


def test_limits_themselves_are_accepted(rec):
    kda.prewarm(C.KDA_MAX_HEADS, 512, head_dim=C.KDA_MAX_HEAD_DIM, chunk_size=C.KDA_MAX_CHUNK)
    kda.prewarm(1, 512, head_dim=1, chunk_size=C.KDA_MIN_CHUNK)
    assert [(a.num_heads, a.head_dim, a.chunk_size) for _, a in rec.shapes] == [
        (C.KDA_MAX_HEADS, C.KDA_MAX_HEAD_DIM, C.KDA_MAX_CHUNK), (1, 1, C.KDA_MIN_CHUNK)]


class _Device:
    """What prewarm reads of a torch.device (no torch needed here)."""

    def __init__(self, type, index):
        self.type, self.index = type, index


def test_device_forms_name_the_ordinal(rec, monkeypatch):
    monkeypatch.setattr(_prewarm, "_default_device", lambda: 3)
    for device, ordinal in ((1, 1), (0, 0), ("cuda:1", 1), (_Device("cuda", 2), 2),
                            (None, 3), ("cuda", 3), (_Device("cuda", None), 3)):
        kda.prewarm(16, 512, device=device)
        assert rec.devices[-1] == ordinal, (device, rec.devices)
    from kda.__main__ import main
    assert main(["prewarm", "--heads", "16", "--tokens", "512", "--device", "1"]) == 0
    assert rec.devices[-1] == 1


@pytest.mark.parametrize("device", [-1, True, 1.0, "cpu", "cuda:x", "cuda:-1", "1",
                                    _Device("cpu", None), _Device("cuda", -1)])
def test_bad_devices_raise_before_any_device_is_touched(rec, device):
    # -1 would be "the context current on this thread" to libkda.
    with pytest.raises(kda.KdaValueError, match="device must be a CUDA ordinal"):
        kda.prewarm(16, 512, device=device)
    assert rec.contexts == 0


def test_cli_negative_device_exits_2(rec, capsys):
    from kda.__main__ import main
    assert main(["prewarm", "--heads", "16", "--tokens", "512", "--device", "-1"]) == 2
    assert "device must be a CUDA ordinal" in capsys.readouterr().err
    assert rec.contexts == 0
