"""The simulator's habit knobs (issue 31 part 4): another API's ways, so the benchmark does not
measure only this simulator's — a task that waits in `pending` before its render, progress told
coarsely or not at all, round-trip jitter, a create answered after its task started."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest

from batchgen.simulator.tasks import Task
from conftest import run_args, run_cli, wait_for, write_csv_manifest


def _task(**kw) -> Task:
    base = dict(id="task-unified-1-aaaaaaaa", model="m", body_sha256="x", created=100.0, render=10.0, estimate=10.0,
                outcome="completed", fail_code=None, credits=1.0, file_size=10)
    return Task(**{**base, **kw})


@pytest.mark.parametrize("progress, told", [("linear", 47), ("coarse", 25), ("none", 0)])
def test_progress_is_told_as_the_api_tells_it(progress, told):
    doc = _task().view(104.7, "http://x", True, progress)
    assert doc["status"] == "processing" and doc["progress"] == told


def test_a_task_waiting_in_pending_renders_later_than_its_estimate_says():
    t = _task(wait=3.0)
    assert t.view(105.0, "http://x", True)["status"] == "processing"  # 2 s into its render
    assert t.view(102.0, "http://x", True)["status"] == "pending"
    assert not t.ready(112.5) and t.ready(113.0) and t.ready_at == 113.0
    assert t.view(113.0, "http://x", True)["status"] == "completed"


def test_habits_reach_the_api_and_a_run_still_finishes(sim_factory, tmp_path):
    sim = sim_factory(jitter=0.05, latency_after=0.2, pending_s=0.2, progress="none", estimate_noise=0.0)
    req = urllib.request.Request(sim.url + "/v1/videos/generations", method="POST",
                                 data=json.dumps({"model": "grok-imagine-text-to-video", "prompt": "a lighthouse"}).encode(),
                                 headers={"Authorization": "Bearer k", "Content-Type": "application/json"})
    t0 = time.monotonic()
    with urllib.request.urlopen(req, timeout=10) as r:
        doc = json.loads(r.read())
    assert time.monotonic() - t0 >= 0.2  # answered after its task started
    (task,) = [c for c in sim.truth()["creates"] if c["task_id"] == doc["id"]]
    assert task["ready_at"] > task["created"] + task["render_s"]  # it waited in pending first
    m = write_csv_manifest(tmp_path / "m.csv", 6)
    r = run_cli(run_args(sim, m, tmp_path, "--json", "--no-verify"))
    assert r.exit_code == 0 and json.loads(r.stdout)["counts"] == {"done": 6}


@pytest.mark.parametrize("knob", ["latency", "latency_after"])
def test_lowering_a_latency_releases_the_answers_already_waiting(sim_factory, knob):
    """A test's hold (tests/test_fleet_night.py) ends on an event: the answers held by a long
    latency leave once it is lowered, not when the latency they arrived under has passed."""
    import threading

    sim = sim_factory(**{knob: 30.0})
    body = json.dumps({"model": "grok-imagine-text-to-video", "prompt": "a lighthouse"}).encode()
    req = urllib.request.Request(sim.url + "/v1/videos/generations", method="POST", data=body,
                                 headers={"Authorization": "Bearer k", "Content-Type": "application/json"})
    answered: list[int] = []
    t = threading.Thread(target=lambda: answered.append(len(urllib.request.urlopen(req, timeout=60).read())))
    t0 = time.monotonic()
    t.start()
    wait_for(lambda: sim.truth()["counters"]["requests"] == 1)  # it reached the API, which holds it
    assert not answered
    sim.set(**{knob: 0.0})
    t.join(20)
    assert answered and time.monotonic() - t0 < 20  # far sooner than the 30 s it arrived under


def test_habits_change_no_task_of_the_same_seed(sim_factory):
    """The habits' delays come from a generator of their own: with or without them, a seed gives
    the same tasks (render times, outcomes, files). Drawn from the one generator, every
    request's jitter moved the render times of the tasks after it, and the benchmark compared an
    API with habits to one without on two different nights (issue 31 part 4)."""

    def night(**habits: Any) -> list[tuple[float, str, float, float]]:
        sim = sim_factory(seed=11, render_min=3.0, render_max=8.0, p_fail=0.2, **habits)
        body = json.dumps({"model": "grok-imagine-text-to-video", "prompt": "a lighthouse"}).encode()
        for _ in range(8):
            req = urllib.request.Request(sim.url + "/v1/videos/generations", method="POST", data=body,
                                         headers={"Authorization": "Bearer k", "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                task_id = json.loads(r.read())["id"]
            poll = urllib.request.Request(sim.url + f"/v1/tasks/{task_id}", headers={"Authorization": "Bearer k"})
            for _ in range(3):  # polls in between: each one's jitter is a draw
                urllib.request.urlopen(poll, timeout=10).read()
        return [(c["render_s"], c["outcome"], c["media"]["seconds"],
                 round(c["ready_at"] - c["created"] - c["render_s"], 9)) for c in sim.truth()["creates"]]

    plain = night()
    assert len(plain) == 8 and len({t[0] for t in plain}) == 8 and {t[1] for t in plain} == {"completed", "failed"}
    habits = night(jitter=0.01, pending_s=0.01, latency_after=0.01, progress="none")
    assert [t[:3] for t in habits] == [t[:3] for t in plain]
    assert all(0.005 <= t[3] <= 0.015 for t in habits)  # the waits in `pending`, drawn apart…
    assert night(pending_s=0.01) == habits  # …so the jitter's draws change none of them either
