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
