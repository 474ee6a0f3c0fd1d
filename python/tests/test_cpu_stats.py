"""kda.stats() against libraries that know only a prefix of kda_stats: the
library accepts only its own sizeof(kda_stats), so every earlier layout
must be tried (no torch, GPU or library needed: a stand-in library)."""

import pytest

from kda import _capi as C
from kda import _ops


class _FakeLib:
    """kda_context_get_stats of a library whose kda_stats is `size` bytes."""

    def __init__(self, size):
        self.size = size
        self.asked = []

    def kda_context_get_stats(self, ctx, ref):
        s = ref._obj
        self.asked.append(s.struct_size)
        if s.struct_size != self.size:
            return C.KDA_ERROR_BAD_OPTIONS
        s.launches = 7
        if self.size > C.STATS_V1_SIZE:
            s.tuning_runs = 3
        return C.KDA_OK

    def kda_status_name(self, st):
        return C.STATUS_NAMES[st].encode()

    def kda_last_error(self):
        return b"kda_stats.struct_size is wrong"

    def kda_status_string(self, st):
        return b"bad struct_size"


@pytest.fixture
def fake(monkeypatch):
    def make(size):
        lib = _FakeLib(size)
        monkeypatch.setattr(_ops, "_library", lambda: lib)
        monkeypatch.setattr(_ops, "context", lambda device=None: 1234)
        return lib
    return make


def test_current_layout_has_every_field(fake):
    fake(C.ctypes.sizeof(C.KdaStats))
    d = _ops.stats(0)
    assert d["launches"] == 7 and d["tuning_runs"] == 3 and "background_jobs" in d
    assert "launch_overlap_active" in d and "tuning_timing_waits" in d
    assert "db_cubin_other_nvrtc_hits" in d


def test_library_before_other_nvrtc_builds(fake):
    # kda_stats ended after tuning_timing_wait_ms_total before
    # db_cubin_other_nvrtc_hits.
    lib = fake(C.STATS_V5_SIZE)
    d = _ops.stats(0)
    assert "tuning_timing_wait_ms_total" in d and "db_cubin_other_nvrtc_hits" not in d
    assert lib.asked[-1] == C.STATS_V5_SIZE


def test_library_before_timing_lock(fake):
    # kda_stats ended after launch_overlap_active (and its padding) before
    # tuning_timing_waits.
    lib = fake(C.STATS_V4_SIZE)
    d = _ops.stats(0)
    assert "launch_overlap_active" in d and "tuning_timing_waits" not in d
    assert lib.asked[-1] == C.STATS_V4_SIZE


def test_library_before_launch_overlap(fake):
    # kda_stats ended after background_jobs before launch_overlap_active.
    lib = fake(C.STATS_V3_SIZE)
    d = _ops.stats(0)
    assert "background_jobs" in d and "launch_overlap_active" not in d
    assert lib.asked[-1] == C.STATS_V3_SIZE


def test_library_before_background_tuning(fake):
    # kda_stats ended after tune_ms_total before KDA_TUNE_BACKGROUND.
    lib = fake(C.KdaStats.background_jobs.offset)
    d = _ops.stats(0)
    assert d["tuning_runs"] == 3 and "tune_ms_total" in d
    assert "background_jobs" not in d
    assert lib.asked[-1] == C.KdaStats.background_jobs.offset


def test_library_before_autotuning(fake):
    fake(C.STATS_V1_SIZE)
    d = _ops.stats(0)
    assert d["launches"] == 7 and "tuning_runs" not in d


def test_unknown_layout_raises_with_the_library_message(fake):
    fake(8)
    with pytest.raises(C.KdaValueError, match="struct_size"):
        _ops.stats(0)
