"""Two races of a fleet's own code, one worker against another on one PostgreSQL ledger (seen
at load 15-20 by tests/test_fleet_night.py), each pinned down here without the timing:

* a breaker opening and a gated intent cross: the intent read the breakers before the opening
  committed and committed after its ``opened_at`` — a create paid "after the trip"; and a job
  claimed while the breaker was closed went out as an (ungated) probe once this worker's own
  verdict opened it during the claim;
* a worker left while another was busy with a render retry (its job ``failed`` between the
  failure and the retry) or a probe of a model the leaving worker had given up on, and said
  "some jobs are unfinished" because of which worker finished last."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import func, select, text

from batchgen.breaker import IN_A_ROW
from batchgen.gate import Gate
from batchgen.jobs import Job, JobState
from batchgen.ledger import Ledger, Scope, Transition
from batchgen.ledger.sql import BREAKER_LOCK
from batchgen.pipeline import LiveJob, RunOptions
from batchgen.schema import breakers
from conftest import wait_for

A, B = "grok-imagine-text-to-video", "happyhorse-1.0-text-to-video"
S = JobState


def _fleet(pg_url: str, n: int, digest: str) -> tuple[list[Ledger], list[int], Scope]:
    """Two workers (two Ledger objects, as two processes hold) of one manifest of ``n`` jobs,
    A and B alternating."""
    leds = [Ledger(pg_url) for _ in range(2)]
    jobs = [Job(f"{i:064x}", i, f"j{i}", "r", A if i % 2 else B, {"i": i}, f"j{i}.mp4") for i in range(1, n + 1)]
    workers = [led.record_run("m.csv", digest, {}, jobs, lambda: None)[0] for led in leds]
    return leds, workers, Scope("", digest)


@pytest.mark.postgres
def test_a_gated_intent_waits_for_a_breaker_opening_in_progress_and_is_refused(pg_url):
    """An opening holds the breaker lock from before its ``opened_at`` to its commit: a gated
    intent of that model meanwhile waits, then sees the breaker and is refused (its lease
    handed back) — it neither slips in unseen nor commits later than ``opened_at``."""
    leds, (w1, _), scope = _fleet(pg_url, 4, "1" * 64)
    try:
        job = next(r for r in leds[0].claim(w1, scope, 4) if r["model"] == A)
        intent = Transition(job["id"], S.SUBMITTING, (S.QUEUED,), owner=w1, breaker_gated=True)
        with leds[1].engine.connect() as c, ThreadPoolExecutor(1) as pool:
            tx = c.begin()
            c.execute(select(func.pg_advisory_xact_lock(BREAKER_LOCK)))  # as trip_breaker takes it
            fut = pool.submit(leds[0].apply, [intent])

            def waiting() -> bool:
                with leds[1].engine.connect() as q:
                    return bool(q.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                               "AND NOT granted")).scalar())
            wait_for(lambda: fut.done() or waiting(), 30)
            assert not fut.done(), fut.result()  # the intent waits for the opening to commit
            now = time.time()
            c.execute(breakers.insert().values(model=A, why="5 failures in a row", opened_at=now, reopens_at=now + 60))
            tx.commit()
            assert fut.result(timeout=30) == [False]
        row = leds[0].job(job["id"])
        assert row["state"] == "queued" and row["worker_id"] is None  # handed back to the fleet
    finally:
        for led in leds:
            led.close()


def test_a_fleet_job_claimed_before_its_breaker_opened_is_not_its_probe(tmp_path):
    """This worker's own verdict opens A's breaker while its claim of an A job is on its way:
    that job is not the probe (only a job claimed through ``take_probe`` is), so its intent is
    gated — refused by the ledger, where the breaker is open — and no local probe is counted."""
    writer: Any = SimpleNamespace(owner=7, ledger=None)
    gate = Gate(RunOptions(out_dir=tmp_path, rpm=None), writer)
    for i in range(IN_A_ROW):
        gate.breakers.record(A, True, "service_error", now=float(i))
    assert gate.breakers.is_open(A)
    claimed = LiveJob(id=1, key="k1", name="j1", model=A, state=S.QUEUED, request={}, output="j1.mp4", attempts=0)
    gate.starting(claimed)
    assert claimed.breaker_gated and not gate.breakers.models[A].probing and gate.breakers.models[A].probes == 0
    gate._taken.add(2)  # claimed through take_probe (Gate.probes)
    probe = LiveJob(id=2, key="k2", name="j2", model=A, state=S.QUEUED, request={}, output="j2.mp4", attempts=0)
    gate.starting(probe)
    assert not probe.breaker_gated and gate.breakers.models[A].probing


@pytest.mark.postgres
def test_a_worker_stays_while_another_holds_a_failed_job_or_a_probe_of_an_idle_model(pg_url):
    """``pending_elsewhere`` counts a failed job another live worker still holds (its render
    retry being decided) until it lets go, and a queued job of an idle model another live
    worker holds (its probe, claimed): the fleet's outcome must not depend on who ends last."""
    leds, (w1, w2), scope = _fleet(pg_url, 6, "2" * 64)
    try:
        rows = leds[0].claim(w1, scope, 6)
        a1, a2 = [r["id"] for r in rows if r["model"] == A][:2]
        for to, before, task in ((S.SUBMITTING, S.QUEUED, None), (S.SUBMITTED, S.SUBMITTING, "t-1"),
                                 (S.FAILED, S.SUBMITTED, None)):
            assert leds[0].apply([Transition(a1, to, (before,), task_id=task, owner=w1)]) == [True]
        leds[0].release(w1)  # every other job w1 claimed goes back: queued, unheld
        leds[0].claim(w1, scope, 1, None, (), A)  # w1's probe of A: queued, held
        probe = leds[0].job(a2)
        assert probe["worker_id"] == w1 and probe["state"] == "queued"
        # A is idle for w2 (its breaker given up): its unheld queued jobs keep nobody, but w1's
        # failed job and w1's probe do.
        assert leds[1].pending_elsewhere(w2, scope, [A, B]) == 2
        leds[0].let_go(w1, a1)  # w1 decided: no render retry of it tonight
        assert leds[1].pending_elsewhere(w2, scope, [A, B]) == 1
        assert leds[0].job(a1)["state"] == "failed"
        leds[0].finish_run(w1, "finished", 0)  # w1 left: what it held keeps nobody
        assert leds[1].pending_elsewhere(w2, scope, [A, B]) == 0
        assert leds[1].pending_elsewhere(w2, scope) == 5  # queued jobs of models that still start
    finally:
        for led in leds:
            led.close()
