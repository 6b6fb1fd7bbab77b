"""The poll schedule (scheduler.poll_delay): first poll just before the task's estimate, then from its
reported progress, then geometric; backoff after errors; bounded; jittered by at most 10 %."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.jobs import JobState
from batchgen.scheduler import FIRST_POLL_AT, LiveJob, RunOptions, poll_delay

NOW = 1_000_000.0
OPTS = RunOptions(out_dir=Path("out"), poll_min=2.0, poll_max=60.0)


def job(**kw) -> LiveJob:
    base = dict(id=1, key="k" * 64, name="a", model="grok-imagine-text-to-video", state=JobState.SUBMITTED, request={}, output="a.mp4", attempts=1,
                task_id="task-1", submitted_at=NOW)
    return LiveJob(**{**base, **kw})


def delay(j: LiveJob, now: float = NOW, opts: RunOptions = OPTS) -> float:
    return poll_delay(j, opts, now, jitter=lambda: 1.0)


def test_first_poll_comes_just_before_the_estimate():
    assert delay(job(estimated_time=40.0), NOW + 10) == pytest.approx(40 * FIRST_POLL_AT - 10)
    assert FIRST_POLL_AT < 1.0  # then progress times the second poll


def test_progress_extrapolates_the_remaining_time():
    # 25 % after 20 s: 60 s left, +5 % = 63 s, capped at poll_max
    assert delay(job(estimated_time=40.0, polls=1, progress=25), NOW + 20) == 60.0
    assert delay(job(estimated_time=40.0, polls=1, progress=50), NOW + 20) == pytest.approx(21.0)


def test_past_the_estimate_without_progress_it_grows_geometrically_up_to_poll_max():
    late = [delay(job(estimated_time=10.0, polls=n), NOW + 100) for n in (1, 2, 3, 4)]
    assert late == pytest.approx([2 * 1.5, 2 * 1.5 ** 2, 2 * 1.5 ** 3, 2 * 1.5 ** 4])
    assert delay(job(estimated_time=10.0, polls=30), NOW + 100) == 60.0


def test_never_below_the_floor_a_short_estimate_lowers_it():
    assert delay(job(estimated_time=40.0), NOW + 100) == 2.0  # overdue: poll-min
    assert delay(job(estimated_time=0.2), NOW + 5) == pytest.approx(0.05)  # a quarter of a 0.2 s estimate
    assert delay(job(estimated_time=None, polls=0), NOW) == 2.0


def test_errors_back_off_and_honour_retry_after():
    for _ in range(50):
        d = poll_delay(job(poll_errors=3), OPTS, NOW)
        assert 0 <= d <= min(60.0, 2.0 * 2 ** 3)
    assert poll_delay(job(poll_errors=1, retry_after=30.0), OPTS, NOW) >= 30.0


def test_jitter_stays_within_ten_percent():
    ds = [poll_delay(job(estimated_time=40.0), OPTS, NOW + 10) for _ in range(200)]
    base = 40 * FIRST_POLL_AT - 10
    assert all(base <= d <= base * 1.1 for d in ds) and len(set(ds)) > 100
