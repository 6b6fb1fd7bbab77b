"""Intents written ahead of their render slot (``batchgen.ahead``, ``Submitter.arm``): the next
job's intent is durable before its slot frees, so the create goes at once — and invariant 1
still holds (the intent is committed before the POST leaves). An armed job that is never sent
goes back to the queue with nothing created and its attempt taken back; a crash while one is
armed is the crash sweep's ``armed`` point (tests/test_crash_sweep.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from batchgen.client import Client, Secret
from batchgen.jobs import JobState
from batchgen.ledger import Ledger, Writer
from batchgen.manifest import Manifest
from batchgen.pipeline import ApiWatch, Context, LiveJob, Submitter
from batchgen.runner import prepare
from batchgen.scheduler import RunOptions
from conftest import check_invariants, run_cli, write_csv_manifest

S = JobState


def test_armed_intents_are_durable_before_anything_is_sent_and_taken_back_when_never_sent(sim, tmp_path: Path):
    led = Ledger(str(tmp_path / "l.db"))
    opts = RunOptions(out_dir=tmp_path / "out", rpm=None)
    run_id = prepare(led, Manifest(write_csv_manifest(tmp_path / "m.csv", 3)), opts).run_id
    log: list[str] = []

    async def go() -> None:
        async with Writer(led) as w, Client(sim.url, Secret("sk-ahead")) as client:
            ctx = Context(w, ApiWatch(client, log.append), opts, asyncio.Event(), log.append)
            ctx.moves.show_counts({S.QUEUED: 3})
            sub = Submitter(ctx)
            (model,) = led.queued_models(run_id)
            first, second, third = (LiveJob.from_row(r) for r in await w.call(led.queued_page, run_id, model, None, 10))

            # Armed: durable `submitting`, an attempt counted — nothing sent, and no credit held
            # (reserved when sent: a reservation held ahead of a slot could keep the job in that
            # slot from ever fitting under --max-credits).
            assert await sub.arm(first) == "armed"
            row = led.job(first.id)
            assert row is not None and (row["state"], row["attempts"]) == (S.SUBMITTING, 1)
            assert led.events_for(first.id)[-1]["detail"] == "ahead of slot"
            assert sub.committed_credits == 0 and not sim.truth()["creates"]
            # Never sent (its model may not start, say): back to the queue, the attempt taken back.
            await sub.disarm(first)
            row = led.job(first.id)
            assert row is not None and (row["state"], row["attempts"]) == (S.QUEUED, 0)
            assert first.armed is None and sub.committed_credits == 0 and not sim.truth()["creates"]

            # Armed, then its slot frees: the create reaches the API after the intent's commit.
            assert await sub.arm(second) == "armed"
            intent_at = led.events_for(second.id)[-1]["at"]
            assert await sub.submit(second)
            await w.flush()
            (create,) = sim.truth()["creates"]
            assert create["received"] >= intent_at
            row = led.job(second.id)
            assert row is not None and (row["state"], row["task_id"], row["attempts"]) == (S.SUBMITTED, create["task_id"], 1)

            # Armed, and the run stops submitting before its slot frees: nothing is sent.
            assert await sub.arm(third) == "armed"
            ctx.stop_submitting("stopping for the test")
            assert not await sub.submit(third)
            row = led.job(third.id)
            assert row is not None and (row["state"], row["attempts"]) == (S.QUEUED, 0)
            assert len(sim.truth()["creates"]) == 1 and sub.committed_credits == round(sub.cap.spent, 9)
            # ...and nothing more is armed once it has stopped
            assert await sub.arm(third) == "not armed"

    try:
        asyncio.run(go())
    finally:
        led.close()


@pytest.mark.slow  # ~15 s: a busy night on the simulator
def test_a_busy_night_arms_the_next_job_and_every_create_follows_its_intent(sim_factory, tmp_path: Path):
    """End to end, every slot busy: jobs are armed ahead of their slot, each create reached the
    API after its intent was committed, one create per job, no job left `submitting`."""
    sim = sim_factory(render_min=0.2, render_max=0.4, estimate_noise=0.0)
    m = write_csv_manifest(tmp_path / "m.csv", 24)
    r = run_cli(["run", str(m), "--api-base", sim.url, "--ledger", str(tmp_path / "l.db"), "--out",
                 str(tmp_path / "out"), "--concurrency", "3", "--rpm", "0", "--poll-min", "0.05", "-q", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["counts"] == {"done": 24}
    truth = sim.truth()
    stats = check_invariants(truth, tmp_path / "l.db", tmp_path / "out")
    assert stats["creates"] == stats["done"] == 24 and stats["duplicates"] == 0
    received = {c["task_id"]: c["received"] for c in truth["creates"]}
    led = Ledger(str(tmp_path / "l.db"))
    try:
        armed = 0
        for job in led.iter_export():
            assert job["state"] == S.DONE and job["attempts"] == 1
            intent = [e for e in led.events_for(job["id"]) if e["to_state"] == S.SUBMITTING]
            assert len(intent) == 1 and intent[0]["at"] <= received[job["task_id"]]
            armed += intent[0]["detail"] == "ahead of slot"
        # The first 3 jobs start on free slots; most later ones were armed while every slot was busy
        assert 24 - 3 >= armed >= 10
    finally:
        led.close()
