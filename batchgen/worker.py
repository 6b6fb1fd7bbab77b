"""A worker of a cooperative (PostgreSQL) ledger, beside the conductor: the request budget
split by the workers alive, and the heartbeat — the lease renewed, dead workers' jobs taken
over (their tasks are handed to the conductor to collect), the manifest-wide counts refreshed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from .errors import LedgerError
from .files import remove_stale_temp_files
from .jobs import JobState, short_key
from .ledger import Scope, Writer
from .pipeline import Context, LiveJob

S = JobState


class FleetWorker:
    """This process as one worker of a fleet; ``spawn`` hands an adopted job to the conductor."""

    def __init__(self, writer: Writer, ctx: Context, stop: asyncio.Event, spawn: Callable[[LiveJob], None]) -> None:
        self.w = writer
        self.worker = writer.owner
        self.ctx = ctx
        self.stop = stop
        self.spawn = spawn
        self.given_up: list[int] = []  # queued jobs whose create kept failing here: left to the others

    async def let_go(self, job: LiveJob) -> None:
        """Hand back a job this worker gave up on tonight: a failed task with no render retry,
        or a queued job it does not create (its create kept failing; out of budget, stopped,
        past the deadline, its breaker open). Held, it kept every other worker waiting for it
        (``pending_elsewhere``) where none could claim it — two workers each holding one waited
        on each other until stopped. One whose create kept failing here is not claimed again
        by this worker."""
        assert self.worker is not None
        if job.state == S.QUEUED and job.given_up:
            self.given_up.append(job.id)
        try:
            await self.w.read(self.w.ledger.let_go, self.worker, job.id)
        except LedgerError as e:  # not this job's failure: its lease goes when this worker leaves or dies
            self.ctx.log(f"job {job.name} ({job.short}): its lease could not be handed back yet ({e})")

    async def share_budget(self, first: bool = False) -> None:
        """Workers split the key's rate evenly by the number alive. A joining worker waits one
        heartbeat before its first request so that every other worker has cut its share by then.
        ``--rpm auto``: the rate itself is the fleet's, the lowest a live worker holds (written
        with each heartbeat): learned once for the key, not by each worker against the others."""
        opts, budget, led = self.ctx.opts, self.ctx.budget, self.w.ledger
        if not (opts.rpm or opts.rpm_auto):
            return
        n = max(1, await self.w.read(led.live_workers, opts.lease))
        budget.set_workers(n)
        if opts.rpm_auto:
            budget.adopt(await self.w.read(led.fleet_rate, opts.lease), joining=first)
            if first and self.worker is not None:  # the others see this worker's rate from its first request on
                await self.w.read(led.heartbeat, self.worker, budget.view())
        if first and n > 1:
            budget.hold(opts.heartbeat)

    async def heartbeat(self, total: int, scope: Scope) -> None:
        """Renew this worker's lease, re-split the budget, take over dead workers' jobs and
        refresh the manifest-wide counts the display shows."""
        assert self.worker is not None
        led, ctx = self.w.ledger, self.ctx
        last_ok = time.monotonic()
        while not self.stop.is_set():
            await asyncio.sleep(self.ctx.opts.heartbeat)
            try:
                if not await self.w.read(led.heartbeat, self.worker, ctx.budget.view() if ctx.opts.rpm_auto else None):
                    ctx.stop_submitting("this worker's lease was taken over (its heartbeat went stale); stopping",
                                        unfinished=True)
                    self.stop.set()
                    return
                last_ok = time.monotonic()
                await self.share_budget()
                adopted, doubt = await self.w.read(led.reclaim, self.worker, self.ctx.opts.lease)
                counts = with_skipped_done(await self.w.read(led.scope_counts, scope), total)
            except LedgerError as e:
                self.ctx.log(f"heartbeat failed: {e}")
                if time.monotonic() - last_ok > self.ctx.opts.lease / 2:
                    # Others will soon call this worker dead and take its jobs: stop creating.
                    ctx.stop_submitting("cannot renew this worker's lease; submission stopped", unfinished=True)
                continue
            for j in doubt:
                self.ctx.log(f"job {j['name']} ({short_key(j['key'])}) is IN DOUBT: its worker died mid-create — "
                         "settle with `batchgen resolve`")
            if adopted:
                self.ctx.log(f"took over {len(adopted)} job(s) with tasks from a worker that stopped")
            if adopted or doubt:  # a worker died: its half-written downloads (if on this host) go
                await asyncio.to_thread(remove_stale_temp_files, self.ctx.opts.out_dir)
            # Counts first: adopted jobs are already in them, _spawn does not move them.
            ctx.moves.show_counts(counts)
            for row in adopted:
                self.spawn(LiveJob.from_row(row))


def with_skipped_done(counts: dict[str, int], total: int) -> dict[str, int]:
    """The upsert leaves jobs that were already done in their earlier run (see Ledger._upsert):
    every job of the manifest not counted in this run is one of them."""
    skipped = total - sum(counts.values())
    if skipped > 0:
        counts = {**counts, S.DONE: counts.get(S.DONE, 0) + skipped}
    return counts
