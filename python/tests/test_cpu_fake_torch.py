"""The tensor functions end to end without torch or a GPU: each test runs a
script on tests/fake_torch and the stand-in driver (conftest.run_fake_torch),
where a stream capture, a failing synchronisation or two racing threads can
be staged. What the kernels compute is the GPU tests' business."""

# Staged in every script: a warm dense shape and a ragged batch of 2.
SETUP = """
def dev(*shape, dtype=torch.float32):
    return torch.empty(*shape, dtype=dtype, device="cuda:0")

def raises(cls, match, f):
    try:
        f()
    except cls as e:
        assert match in str(e), "%s: %r lacks %r" % (cls.__name__, str(e), match)
        return e
    except Exception as e:
        raise AssertionError("expected %s, got %s: %s" % (cls.__name__, type(e).__name__, e))
    raise AssertionError("expected %s, nothing raised" % cls.__name__)

g, A = dev(1, 100, 4, 64), dev(4)
cu = torch.tensor([0, 5, 100], dtype=torch.int32, device="cuda:0")
cu_cpu = torch.tensor([0, 5, 100], dtype=torch.int32)
"""


def test_host_rows_are_refused_inside_capture(run_fake_torch):
    """cu_seqlens_cpu's rows are baked into the captured launch: replays with
    new cu_seqlens contents would compute the old batch."""
    run_fake_torch(SETUP, """
    kda.gate_chunk_cumsum(g, A, 64, cu_seqlens=cu, cu_seqlens_cpu=cu_cpu)  # warm, outside
    kda.chunk_local_cumsum(g, 64, cu_seqlens=cu, cu_seqlens_cpu=cu_cpu)
    torch.cuda.capturing = True
    for f in (lambda: kda.gate_chunk_cumsum(g, A, 64, cu_seqlens=cu, cu_seqlens_cpu=cu_cpu),
              lambda: kda.chunk_local_cumsum(g, 64, cu_seqlens=cu, cu_seqlens_cpu=cu_cpu)):
        e = raises(kda.KdaValueError, "cu_seqlens_cpu", f)
        assert "capture" in str(e) and "ChunkPlan" in str(e), e
    # Without the host copy the same call captures (the table is built in the graph).
    kda.gate_chunk_cumsum(g, A, 64, cu_seqlens=cu)
    """)


def test_plan_close_destroys_even_when_the_synchronize_fails(run_fake_torch):
    run_fake_torch(SETUP, """
    lib = C.load_library()
    destroyed, real = [], lib.kda_chunk_plan_destroy
    lib.kda_chunk_plan_destroy = lambda p: (destroyed.append(p), real(p))
    p = kda.ChunkPlan(1024, 8, 64).build(cu, 100)
    ptr = p._plan
    torch.cuda.sync_raises = True        # e.g. another thread captures in global mode
    raises(RuntimeError, "capturing", p.close)
    assert destroyed == [ptr], destroyed
    assert "closed" in repr(p)
    torch.cuda.sync_raises = False
    p.close()                            # closed already: nothing more
    assert destroyed == [ptr], destroyed
    """)


def test_plan_collected_during_capture_is_destroyed_after_it(run_fake_torch):
    run_fake_torch(SETUP, """
    import gc
    lib = C.load_library()
    destroyed, real = [], lib.kda_chunk_plan_destroy
    lib.kda_chunk_plan_destroy = lambda p: (destroyed.append(p), real(p))
    p = kda.ChunkPlan(1024, 8, 64).build(cu, 100)
    q = kda.ChunkPlan(1024, 8, 64)
    ptr = p._plan
    torch.LOG.clear()
    torch.cuda.capturing = True
    del p
    gc.collect()
    # No synchronize inside the capture (it would break it), no destroy yet.
    assert ("sync", "synchronize") not in torch.LOG, torch.LOG
    assert destroyed == [], destroyed
    q.build(cu, 100)                     # still capturing: still deferred
    assert destroyed == [], destroyed
    torch.cuda.capturing = False
    q.build(cu, 100)                     # outside capture: synchronised, then destroyed
    assert destroyed == [ptr], destroyed
    assert ("sync", "synchronize") in torch.LOG, torch.LOG
    # A plan collected while another thread's capture makes synchronize fail
    # is deferred too, and close() of any plan destroys it.
    # (Pointers may repeat once freed: count the destroys.)
    r = kda.ChunkPlan(1024, 8, 64)
    ptrs = [r._plan, q._plan]
    torch.cuda.sync_raises = True
    del r
    gc.collect()
    assert len(destroyed) == 1, destroyed
    torch.cuda.sync_raises = False
    q.close()
    assert sorted(destroyed[1:]) == sorted(ptrs) and q._plan is None, destroyed
    """)


def test_zero_alog_buffer_is_created_once_and_kept(run_fake_torch):
    run_fake_torch(SETUP, """
    import threading, time, weakref
    real_zeros, made = torch.zeros, []
    def slow_zeros(*a, **k):
        t = real_zeros(*a, **k)
        made.append(weakref.ref(t))
        time.sleep(0.05)                 # let the other thread reach the check
        return t
    torch.zeros = slow_zeros
    ptrs = {}
    def worker(name):
        ptrs[name] = _ops._zero_alog_ptr(0, 32)
    torch.LOG.clear()
    ts = [threading.Thread(target=worker, args=(n,)) for n in "AB"]
    [t.start() for t in ts]
    [t.join() for t in ts]
    kept = _ops._zero_alog[(0, 32)]
    assert len(made) == 1, "%d buffers created" % len(made)
    assert ptrs == {"A": kept.data_ptr(), "B": kept.data_ptr()}, ptrs
    # The fill ran on the creating thread's stream: waited for once, so a
    # call on another stream cannot read the buffer before it is zero.
    assert ("sync", "stream") in torch.LOG, torch.LOG
    torch.LOG.clear()
    assert _ops._zero_alog_ptr(0, 32) == kept.data_ptr()
    assert torch.LOG == [], torch.LOG    # later calls: no allocation, no wait
    torch.cuda.capturing = True          # a cold one still cannot be made in capture
    raises(kda.KdaCaptureColdError, "warm", lambda: _ops._zero_alog_ptr(0, 16))
    """)


def test_bad_scalar_arguments_are_kda_errors(run_fake_torch):
    run_fake_torch(SETUP, """
    kda.gate_chunk_cumsum(g, A, 64)      # warm
    for f in (lambda: kda.gate_chunk_cumsum(g, A, 64.0),
              lambda: kda.chunk_local_cumsum(g, 64.0),
              lambda: kda.gate_chunk_cumsum(g, A, 64.0, cu_seqlens=cu)):
        raises(kda.KdaTypeError, "chunk_size must be an int", f)
    for f in (lambda: kda.gate_chunk_cumsum(g, A, 64, scale="2"),
              lambda: kda.chunk_local_cumsum(g, 64, scale=[1.0]),
              lambda: kda.gate_chunk_cumsum(g, A, 64, scale=object(), cu_seqlens=cu)):
        raises(kda.KdaTypeError, "scale must be a number", f)
    for f in (lambda: kda.gate_chunk_cumsum(g, A, 64, lower_bound="-5"),
              lambda: kda.gate(g, A, lower_bound="x")):
        raises(kda.KdaTypeError, "lower_bound must be a number", f)
    # Numbers of any type are still numbers.
    kda.gate_chunk_cumsum(g, A, 64, scale=2, lower_bound=-5)
    g0 = dev()
    for f in (lambda: kda.gate_chunk_cumsum(g0, A, 64, cu_seqlens=cu),
              lambda: kda.chunk_local_cumsum(g0, 64, cu_seqlens=cu)):
        raises(kda.KdaValueError, "shape ()", f)
    """)


def test_kda_only_arguments_without_cu_seqlens_are_refused(run_fake_torch):
    run_fake_torch(SETUP, """
    count = dev(1, dtype=torch.int32)
    for f in (lambda: kda.gate_chunk_cumsum(g, A, 64, cu_seqlens_cpu=cu_cpu),
              lambda: kda.chunk_local_cumsum(g, 64, cu_seqlens_cpu=cu_cpu)):
        raises(kda.KdaValueError, "cu_seqlens_cpu is given without cu_seqlens", f)
    for f in (lambda: kda.gate_chunk_cumsum(g, A, 64, num_chunks_device=count),
              lambda: kda.chunk_local_cumsum(g, 64, num_chunks_device=count)):
        raises(kda.KdaValueError, "num_chunks_device is given without cu_seqlens", f)
    # Upstream ignores chunk_indices without cu_seqlens (a dense call): so does kda.
    table = kda.prepare_chunk_indices(cu, 64, total_tokens=100)
    kda.gate_chunk_cumsum(g, A, 64, chunk_indices=table)
    """)


def test_a_cpu_device_is_not_the_current_cuda_device(run_fake_torch):
    run_fake_torch(SETUP, """
    for f in (lambda: kda.stats("cpu"), lambda: kda.context(torch.device("cpu")),
              lambda: kda.device_info("cpu"), lambda: kda.ChunkPlan(1024, 8, device="cpu")):
        raises(kda.KdaValueError, "not a CUDA device", f)
    assert kda.stats("cuda")["launches"] >= 0 and kda.stats(0) and kda.stats("cuda:0")
    """)


# ---- several devices ------------------------------------------------------
# The stand-in torch has two devices (a per-thread current device, a raw
# handle per device's current stream); the stand-in driver has one, so
# cuda:1's libkda context is a second context on the driver's device 0:
# a distinct kda_context*, which is all these tests tell apart. Every
# library call that takes a context or a stream is recorded.
MULTI = """
import threading
lib = C.load_library()
_real_create, asked = C.context_create, []
def _create(lib_, ordinal):
    asked.append(ordinal)
    return _real_create(lib_, 0 if ordinal == 1 else ordinal)
C.context_create = _create
STREAM = {0: 0x7000, 1: 0x9000}                 # each device's current stream
torch.cuda.streams.update(STREAM)
ctx = {d: kda.context(d) for d in (0, 1)}
assert ctx[0] != ctx[1] and asked == [0, 1], (ctx, asked)

calls = []                                       # (function, context or None, stream)
_real_fns = _ops._functions()
def _recorder(i):
    f, name = _real_fns[i], (_ops._OP_NAMES + ("kda_layer_gate_fwd",))[i]
    def call(c, args, *rest):
        calls.append((name, c, rest[-1]))
        return f(c, args, *rest)
    return call
_ops._fns = tuple(_recorder(i) for i in range(4))
def _wrap(name, has_ctx, has_stream):
    real = getattr(lib, name)
    def call(*a):
        calls.append((name, a[0] if has_ctx else None, a[-1] if has_stream else None))
        return real(*a)
    setattr(lib, name, call)
_wrap("kda_chunk_indices_build_device", True, True)
_wrap("kda_chunk_plan_create", True, False)
_wrap("kda_chunk_plan_build", False, True)

def on(d, *shape, dtype=torch.float32):
    return torch.empty(*shape, dtype=dtype, device="cuda:%d" % d)

def cu_on(d, vals=(0, 5, 100), dtype=torch.int32):
    return torch.tensor(list(vals), dtype=dtype, device="cuda:%d" % d)

def every_op(d):
    # Each public entry point that launches, on tensors of cuda:d: name, call.
    g, A, b = on(d, 1, 100, 4, 64), on(d, 4), on(d, 256)
    cu = cu_on(d)
    cu64 = cu_on(d, dtype=torch.int64)
    cpu = torch.tensor([0, 5, 100], dtype=torch.int32)
    plan = kda.ChunkPlan(1024, 8, 64, device=d).build(cu, 100)
    return [
        ("gcc dense", lambda: kda.gate_chunk_cumsum(g, A, 64, dt_bias=b, scale=0.5)),
        ("gcc dense bf16 params", lambda: kda.gate_chunk_cumsum(
            g, on(d, 4, dtype=torch.bfloat16), 64, dt_bias=on(d, 256, dtype=torch.float16))),
        ("gcc softplus, no A_log", lambda: kda.gate_chunk_cumsum(g, None, 64)),
        ("gcc varlen, table in the call", lambda: kda.gate_chunk_cumsum(g, A, 64, cu_seqlens=cu)),
        ("gcc varlen, kda table", lambda: kda.gate_chunk_cumsum(
            g, A, 64, cu_seqlens=cu, chunk_indices=kda.prepare_chunk_indices(
                cu, 64, total_tokens=100))),
        ("gcc varlen, int64 table", lambda: kda.gate_chunk_cumsum(
            g, A, 64, cu_seqlens=cu64, chunk_indices=kda.prepare_chunk_indices(
                cu64, 64, exact=True))),
        ("gcc varlen, host rows", lambda: kda.gate_chunk_cumsum(
            g, A, 64, cu_seqlens=cu, cu_seqlens_cpu=cpu)),
        ("gcc plan", lambda: kda.gate_chunk_cumsum(g, A, 64, chunk_plan=plan)),
        ("clc dense", lambda: kda.chunk_local_cumsum(g, 64, reverse=True)),
        ("clc scalar varlen", lambda: kda.chunk_local_cumsum(on(d, 1, 100, 4), 64,
                                                             cu_seqlens=cu)),
        ("clc table", lambda: kda.chunk_local_cumsum(
            g, 64, cu_seqlens=cu, chunk_indices=kda.prepare_chunk_indices(
                cu, 64, cu_seqlens_cpu=cpu))),
        ("clc plan", lambda: kda.chunk_local_cumsum(g, 64, chunk_plan=plan)),
        ("gate", lambda: kda.gate(g, A, b)),
        ("gate lower_bound", lambda: kda.fused_kda_gate(g, None, b, lower_bound=-5.0)),
        ("gate softplus, no A_log, new H", lambda: kda.gate(on(d, 3, 7, 16))),
        ("plan build", lambda: kda.ChunkPlan(1024, 8, 64, device=d).build(cu, 100)),
        ("prepare_chunk_indices", lambda: kda.prepare_chunk_indices(cu, 16, total_tokens=100)),
    ]
"""


def test_each_op_uses_the_tensors_device_not_the_current_one(run_fake_torch):
    """Tensors on cuda:1 with cuda:0 current, and on cuda:0 with cuda:1
    current: every launch gets the context and the current stream of the
    tensors' device, every buffer kda allocates is there, every wait is
    there, and the current device is left as it was."""
    run_fake_torch(SETUP, MULTI, """
    for d, current in ((1, 0), (0, 1)):
        torch.cuda.set_device(current)
        for name, f in every_op(d):
            calls.clear()
            torch.DEV_LOG.clear()
            out = f()
            assert calls, name
            for fn, c, s in calls:
                assert c in (None, ctx[d]), (name, fn, "context of the wrong device")
                assert s in (None, STREAM[d]), (name, fn, "stream %#x of the wrong device" % s)
            devs = {dv for what, dv in torch.DEV_LOG}
            assert devs == {d}, (name, torch.DEV_LOG)
            if isinstance(out, torch.Tensor):
                assert out.get_device() == d, (name, out)
            assert torch.cuda.current_device() == current, name
        # The zero A_log buffers are per device.
        assert all(t.get_device() == dv for (dv, H), t in _ops._zero_alog.items())
        assert (d, 4) in _ops._zero_alog and (d, 7) in _ops._zero_alog
    assert sorted(asked) == [0, 1], asked       # one context per device, no other
    """)


def test_stats_count_the_tensors_device(run_fake_torch):
    run_fake_torch(SETUP, MULTI, """
    before = {d: kda.stats(d)["launches"] for d in (0, 1)}
    for name, f in every_op(1):
        f()
    after = {d: kda.stats(d)["launches"] for d in (0, 1)}
    assert after[0] == before[0] and after[1] > before[1], (before, after)
    # device arguments of context / stats / device_info / ChunkPlan
    assert kda.context("cuda:1") == kda.context(torch.device("cuda", 1)) == ctx[1]
    torch.cuda.set_device(1)
    assert kda.context() == kda.context("cuda") == ctx[1]
    assert kda.ChunkPlan(1024, 8).device == 1
    assert kda.stats()["launches"] == after[1]
    torch.cuda.set_device(0)
    assert kda.context() == ctx[0] and kda.device_info(1) and kda.ChunkPlan(1024, 8).device == 0
    raises(kda.KdaValueError, "not a CUDA device ordinal", lambda: kda.context(-1))
    raises(kda.KdaValueError, "not a CUDA device ordinal", lambda: kda.ChunkPlan(64, 1, device=-1))
    raises(kda.KdaTypeError, "device must be", lambda: kda.stats(True))
    assert sorted(asked) == [0, 1], asked
    """)


def test_mixed_devices_are_refused_before_anything_runs(run_fake_torch):
    """g on one device, any other argument on the other (or on the host):
    KdaDeviceError naming both devices, and no library call."""
    run_fake_torch(SETUP, MULTI, """
    g1, A1, b1, cu1 = on(1, 1, 100, 4, 64), on(1, 4), on(1, 256), cu_on(1)
    A0, b0, cu0 = on(0, 4), on(0, 256), cu_on(0)
    t1 = kda.prepare_chunk_indices(cu1, 64, total_tokens=100)
    t0 = kda.prepare_chunk_indices(cu0, 64, total_tokens=100)
    n0 = on(0, 1, dtype=torch.int32)
    p0 = kda.ChunkPlan(1024, 8, 64, device=0).build(cu0, 100)
    p1 = kda.ChunkPlan(1024, 8, 64, device=1).build(cu1, 100)
    g0 = on(0, 1, 100, 4, 64)
    cases = [
        ("A_log", lambda: kda.gate_chunk_cumsum(g1, A0, 64)),
        ("A_log", lambda: kda.gate(g1, A0)),
        ("dt_bias", lambda: kda.gate_chunk_cumsum(g1, A1, 64, dt_bias=b0)),
        ("dt_bias", lambda: kda.gate(g1, A1, b0)),
        ("cu_seqlens", lambda: kda.gate_chunk_cumsum(g1, A1, 64, cu_seqlens=cu0)),
        ("cu_seqlens", lambda: kda.chunk_local_cumsum(g1, 64, cu_seqlens=cu0)),
        ("cu_seqlens", lambda: kda.gate_chunk_cumsum(g1, A1, 64, cu_seqlens=cu0,
                                                     chunk_indices=t1)),
        ("cu_seqlens", lambda: kda.gate_chunk_cumsum(g1, A1, 64, cu_seqlens=cu0, chunk_plan=p1)),
        ("cu_seqlens", lambda: kda.chunk_local_cumsum(g1, 64, cu_seqlens=cu0, chunk_plan=p1)),
        ("chunk_indices", lambda: kda.gate_chunk_cumsum(g1, A1, 64, cu_seqlens=cu1,
                                                        chunk_indices=t0)),
        ("chunk_indices", lambda: kda.chunk_local_cumsum(g1, 64, cu_seqlens=cu1,
                                                         chunk_indices=t0)),
        ("num_chunks_device", lambda: kda.gate_chunk_cumsum(
            g1, A1, 64, cu_seqlens=cu1, chunk_indices=t1, num_chunks_device=n0)),
        ("ChunkPlan", lambda: kda.gate_chunk_cumsum(g1, A1, 64, chunk_plan=p0)),
        ("ChunkPlan", lambda: kda.chunk_local_cumsum(g1, 64, chunk_plan=p0)),
        ("ChunkPlan", lambda: kda.gate_chunk_cumsum(g0, A0, 64, chunk_plan=p1)),
        ("cu_seqlens", lambda: p1.build(cu0, 100)),
    ]
    for what, f in cases:
        calls.clear()
        e = raises(kda.KdaDeviceError, what, f)
        assert "cuda:0" in str(e) and "cuda:1" in str(e), e
        assert calls == [], (what, calls)
    e = raises(kda.KdaDeviceError, "but the ChunkPlan is on cuda:1", lambda: p1.build(cu0, 100))
    raises(kda.KdaDeviceError, "is on cpu but g is on cuda:1",
           lambda: kda.gate_chunk_cumsum(g1, torch.empty(4), 64))
    """)


def test_capture_is_asked_of_the_tensors_device(run_fake_torch):
    """cuda:1's current stream captures while cuda:0 is current (and is
    not capturing): what must not happen inside a capture is refused for
    calls on cuda:1, as it would be for a capture on the current device,
    and nothing on cuda:1 is synchronised. cuda:0's calls go on."""
    run_fake_torch(SETUP, MULTI, """
    import gc
    g1, A1, cu1 = on(1, 1, 100, 4, 64), on(1, 4), cu_on(1)
    g0, A0, cu0 = on(0, 1, 100, 4, 64), on(0, 4), cu_on(0)
    cpu = torch.tensor([0, 5, 100], dtype=torch.int32)
    kda.gate_chunk_cumsum(g1, A1, 64, cu_seqlens=cu1, cu_seqlens_cpu=cpu)  # warm
    doomed = kda.ChunkPlan(1024, 8, 64, device=1).build(cu1, 100)
    kept = kda.ChunkPlan(1024, 8, 64, device=1)
    ptr = doomed._plan
    destroyed, real_destroy = [], lib.kda_chunk_plan_destroy
    lib.kda_chunk_plan_destroy = lambda p: (destroyed.append(p), real_destroy(p))
    torch.DEV_LOG.clear()
    torch.cuda.capturing_devices = {1}
    for f in (lambda: kda.gate_chunk_cumsum(g1, A1, 64, cu_seqlens=cu1, cu_seqlens_cpu=cpu),
              lambda: kda.chunk_local_cumsum(g1, 64, cu_seqlens=cu1, cu_seqlens_cpu=cpu)):
        raises(kda.KdaValueError, "cu_seqlens_cpu cannot be used inside CUDA graph capture", f)
    raises(kda.KdaCaptureColdError, "warm", lambda: kda.gate(on(1, 2, 5, 8)))
    raises(kda.KdaCaptureColdError, "total_tokens", lambda: kda.prepare_chunk_indices(cu1, 64))
    del doomed
    gc.collect()                                 # collected in cuda:1's capture: deferred
    assert destroyed == [] and len(_ops._deferred_plans) == 1
    kept.build(cu1, 100)                         # (a build tries the deferred ones)
    assert destroyed == [] and len(_ops._deferred_plans) == 1
    assert ("synchronize", 1) not in torch.DEV_LOG and ("sync_stream", 1) not in torch.DEV_LOG
    assert torch.cuda.current_device() == 0
    # cuda:0 is not capturing: its calls are not refused.
    kda.gate_chunk_cumsum(g0, A0, 64, cu_seqlens=cu0, cu_seqlens_cpu=cpu)
    kda.prepare_chunk_indices(cu0, 64)
    # The current device capturing, a launch on cuda:1 with its rows on the
    # host is not captured (it goes to cuda:1's stream): not refused.
    torch.cuda.capturing_devices = {0}
    kda.gate_chunk_cumsum(g1, A1, 64, cu_seqlens=cu1, cu_seqlens_cpu=cpu)
    torch.cuda.capturing_devices = set()
    kda.ChunkPlan(1024, 8, 64, device=0).close()  # outside capture: destroyed now
    assert ptr in destroyed and _ops._deferred_plans == [], destroyed
    assert ("synchronize", 1) in torch.DEV_LOG, torch.DEV_LOG
    """)


def test_two_threads_on_two_devices(run_fake_torch):
    """A thread per device (each with cuda:0 current, torch's default):
    every call of each gets its own device's context and stream."""
    run_fake_torch(SETUP, MULTI, """
    errors = []
    def worker(d):
        try:
            ops = every_op(d)
            for _ in range(20):
                for name, f in ops:
                    f()
        except Exception as e:                   # pragma: no cover - reported below
            errors.append((d, repr(e)))
    ts = [threading.Thread(target=worker, args=(d,)) for d in (0, 1)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert not errors, errors
    pairs = {(c, s) for _, c, s in calls}
    assert pairs <= {(ctx[0], STREAM[0]), (ctx[1], STREAM[1]), (ctx[0], None), (ctx[1], None),
                     (None, STREAM[0]), (None, STREAM[1])}, pairs
    assert (ctx[0], STREAM[0]) in pairs and (ctx[1], STREAM[1]) in pairs
    """)
