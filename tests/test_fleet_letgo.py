"""A fleet worker that gives up on a queued job it claimed lets it go at once (``Leases.let_go``).

Held, the job was claimable by no other worker while it counted as pending for each of them
(``pending_elsewhere``): two workers that each gave up on one waited on each other until they
were stopped. Here two real workers (the scheduler's ``execute``, in one event loop) share a
PostgreSQL ledger and an API that refuses every create with a 503 (nothing created); the first
two refusals wait until both workers have their create out, so each gives up on its own job
while it holds it — the mutual wait, pinned down by an event instead of timing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from batchgen.client.task import Api, TaskInfo
from batchgen.errors import ApiError, ErrorClass
from batchgen.jobs import JobState
from batchgen.ledger import Ledger
from batchgen.manifest import Manifest
from batchgen.pipeline import RunOptions
from batchgen.runner import execute, prepare
from conftest import write_csv_manifest

pytestmark = pytest.mark.postgres


class Refusing(Api):
    """Every create refused as a 503 (SAFE: nothing was created); the first ``together`` wait
    for each other, so their workers hold their jobs at the same time."""

    def __init__(self, together: int) -> None:
        self.together = together
        self.creates: list[str] = []  # the prompt of every create, in order
        self.arrived = asyncio.Event()

    async def create(self, request: dict[str, Any]) -> TaskInfo:
        self.creates.append(request["prompt"])
        if len(self.creates) >= self.together:
            self.arrived.set()
        await self.arrived.wait()
        raise ApiError(ErrorClass.SAFE, "HTTP 503", status=503, code="service_unavailable_error")

    async def get_task(self, task_id: str, *, sync_upstream: bool = False) -> TaskInfo:
        raise AssertionError("no task was ever created")

    async def upload(self, path: Path, file_name: str) -> str:
        raise AssertionError("nothing to upload")

    async def download(self, url: str, final: Path) -> tuple[int, str]:
        raise AssertionError("nothing to download")


def test_two_workers_that_each_gave_up_on_a_job_neither_wait_on_each_other(pg_url, tmp_path):
    m = write_csv_manifest(tmp_path / "m.csv", 2)
    prompts = sorted(j.request["prompt"] for j in Manifest(m).expand())
    # One slot each: each worker claims one job, and its create is given up after one refusal.
    opts = [RunOptions(out_dir=tmp_path / "out", concurrency=1, rpm=None, submit_retries=1, retry_base=0.001,
                       heartbeat=0.2, verify=False, poll_min=0.01) for _ in range(2)]
    leds = [Ledger(pg_url) for _ in range(2)]
    api = Refusing(together=2)
    try:
        prepared = [prepare(led, Manifest(m), o) for led, o in zip(leds, opts)]

        async def fleet() -> list[Any]:
            runs = [execute(led, p, o, api, asyncio.Event()) for led, p, o in zip(leds, prepared, opts)]
            # Bounded only should the two wait on each other (they did before the fix): the night
            # itself takes a second or two.
            return await asyncio.wait_for(asyncio.gather(*runs), 120)

        results = asyncio.run(fleet())
        rows = list(leds[0].iter_export())
    finally:
        for led in leds:
            led.close()
    # Each worker gave up on the job it held, let it go, and took the other's at once: each
    # job's create was tried by both workers, once each, and neither worker tried one twice.
    assert sorted(api.creates) == sorted(prompts * 2), api.creates
    assert sorted(api.creates[:2]) == prompts  # the first two: one job each, held together
    assert [r.exit_code for r in results] == [3, 3], [r.reason for r in results]  # unfinished: left queued
    assert [(j["state"], j["worker_id"]) for j in rows] == [(JobState.QUEUED, None)] * 2  # nobody holds them


@pytest.mark.postgres
def test_a_queued_job_let_go_is_claimable_by_another_worker_at_once(pg_url):
    """The ledger's half: a queued job its holder let go of is claimed by the next worker's
    claim, and no longer counts as pending for the holder once it passes it as given up."""
    from batchgen.jobs import Job
    from batchgen.ledger import Scope

    leds = [Ledger(pg_url) for _ in range(2)]
    jobs = [Job(f"{i:064x}", i, f"j{i}", "r", "grok-imagine-text-to-video", {"i": i}, f"j{i}.mp4") for i in (1, 2)]
    try:
        w1, w2 = [led.record_run("m.csv", "3" * 64, {}, jobs, lambda: None)[0] for led in leds]
        scope = Scope("", "3" * 64)
        (j1,) = leds[0].claim(w1, scope, 1)
        (j2,) = leds[1].claim(w2, scope, 1)
        assert leds[1].claim(w2, scope, 1) == []  # held by a live worker: nobody else's
        assert leds[1].pending_elsewhere(w2, scope) == 1  # ... while it keeps w2 waiting
        leds[0].let_go(w1, j1["id"])
        assert leds[0].pending_elsewhere(w1, scope, (), (j1["id"],)) == 1  # only j2, held by w2
        assert [r["id"] for r in leds[0].claim(w1, scope, 1, skip=(j1["id"],))] == []
        assert [r["id"] for r in leds[1].claim(w2, scope, 1)] == [j1["id"]]  # at once, by the other worker
        assert leds[0].pending_elsewhere(w1, scope, (), (j1["id"],)) == 2  # w2 holds both now
        leds[1].let_go(w2, j1["id"])
        leds[1].let_go(w2, j2["id"])
        assert leds[0].pending_elsewhere(w1, scope, (), (j1["id"],)) == 1  # j2: never given up by w1
        assert leds[0].pending_elsewhere(w1, scope, (), (j1["id"], j2["id"])) == 0
    finally:
        for led in leds:
            led.close()
