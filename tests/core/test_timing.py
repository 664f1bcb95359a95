"""Tests of lib.core.timing with a fake clock and a recording device sync (no wall-time assertions)."""

import itertools

import numpy as np
import pytest

import lib.core.timing as timing
from lib.core.timing import Stopwatch, throughput


@pytest.fixture
def fake_clock(monkeypatch):
    """perf_counter returns 100, 101, 200, 204, 300, 309, ...: the k-th timed block lasts k² s; syncs are logged."""
    ticks = (t for k in itertools.count(1) for t in (100 * k, 100 * k + k * k))
    log = []
    monkeypatch.setattr(timing.time, "perf_counter", lambda: float(next(ticks)))
    monkeypatch.setattr(timing, "synchronize", lambda device: log.append(("sync", device)))
    return log


def test_stopwatch_sums_laps_and_synchronises_at_both_ends(fake_clock):
    clock = Stopwatch("cuda:1")
    assert clock.seconds == 0.0
    for _ in range(3):
        with clock as entered:
            fake_clock.append("work")
    assert entered is clock
    assert clock.laps == [1.0, 4.0, 9.0] and clock.last == 9.0 and clock.seconds == 14.0
    assert fake_clock == [("sync", "cuda:1"), "work", ("sync", "cuda:1")] * 3


def test_stopwatch_misuse_and_errors(fake_clock):
    clock = Stopwatch()
    with pytest.raises(RuntimeError, match="nothing timed yet"):
        clock.last
    with pytest.raises(RuntimeError, match="already timing"):
        with clock:
            with clock:
                pass
    fake_clock.clear()
    with pytest.raises(KeyError):
        with clock:
            raise KeyError("inside")
    assert fake_clock == [("sync", None)]           # no wait on a device after an error
    assert len(clock.laps) == 2                      # the block around the refused nesting, the failed block


def test_throughput_counts_and_median(fake_clock):
    calls = []
    result = throughput(lambda: calls.append(1), n_images=8, warmup=2, repeats=3, device="mps")
    assert len(calls) == 5 and result["times"] == [1.0, 4.0, 9.0]
    assert result["seconds"] == 4.0 == float(np.median(result["times"]))       # the median, not the mean
    assert result["images_per_s"] == 2.0
    assert fake_clock.count(("sync", "mps")) == 6


def test_throughput_real_clock():
    calls = []
    result = throughput(lambda: calls.append(1), n_images=8, warmup=0, repeats=3)
    assert len(calls) == 3 and len(result["times"]) == 3 and min(result["times"]) >= 0
    assert result["images_per_s"] == pytest.approx(8 / result["seconds"])


def test_throughput_errors():
    with pytest.raises(ValueError, match="fn must be a callable"):
        throughput(42, n_images=1)
    with pytest.raises(ValueError, match="n_images"):
        throughput(lambda: None, n_images=0)
    with pytest.raises(ValueError, match="repeats"):
        throughput(lambda: None, n_images=1, repeats=0)
    with pytest.raises(ValueError, match="warmup"):
        throughput(lambda: None, n_images=1, warmup=-1)
