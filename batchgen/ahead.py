"""Intents written ahead of their render slot: a freed slot's next create goes at once.

While every render slot is busy, the conductor takes the next job from the feed and has the
submit stage do everything a create needs before its POST (``Submitter.arm``: the credit
reserved, the uploads in place, the intent durable). The moment a slot frees, that job's create
is sent, with no ledger commit in between (issue 31 part 4: the commit and the feed's read were
most of a freed slot's refill). Invariant 1 holds: the POST still comes after its intent.

At most ``ARM_AHEAD`` job is armed, and only when a slot is about to free (a task holding one
is being polled), so an intent waits ahead of its slot for about one poll's round trip. A crash
meanwhile leaves that job ``submitting``, which the next start holds in doubt like any intent
whose create may have gone (its event says "ahead of slot": nothing was sent). An armed job that
will not be sent (the run stops submitting, its model reached its limit) goes back to the queue
(``Submitter.disarm``). Not on a cooperative (PostgreSQL) ledger, and not while requests wait for
tokens: then the token is what a freed slot waits for."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .feed import Feed
from .gate import Gate
from .jobs import JobRow
from .pipeline import Context, LiveJob, Submitter

ARM_AHEAD = 1


class Ahead:
    """The jobs armed ahead of their slot, for one single-process run."""

    def __init__(self, ctx: Context, submitter: Submitter, gate: Gate, *, slots_full: Callable[[], bool],
                 wake: Callable[[], None], enabled: bool) -> None:
        self.ctx = ctx
        self.submitter = submitter
        self.gate = gate
        self._slots_full = slots_full
        self._wake = wake
        self.enabled = enabled  # off for good once a job could not be armed (the usual path says why)
        self.jobs: list[tuple[LiveJob, JobRow]] = []
        self.wanted = False

    def expecting(self, job: LiveJob) -> None:
        """The poll stage is about to poll ``job``, which holds a render slot: its slot may free
        with the answer, so if every slot is busy, the next job is armed meanwhile."""
        if (self.enabled and len(self.jobs) < ARM_AHEAD and self.ctx.submitting and self._slots_full()
                and not self.ctx.budget.binding):
            self.wanted = True
            self._wake()

    async def turn(self, feed: Feed, busy: bool, freed: asyncio.Event, spawn: Callable[[LiveJob], None]) -> bool:
        """The feed's turn. Every slot ``busy``: arm the next job, or wait for a change; a slot
        free: start the first armed job. False: nothing was done here (take the next job)."""
        if busy:
            await self.while_busy(feed, freed)
            return True
        return await self.start_next(feed, spawn)

    async def while_busy(self, feed: Feed, freed: asyncio.Event) -> None:
        """Every slot is busy: arm the next job if one is about to free, else wait for a change
        (``freed``: a slot freed, a slot about to free, or the run stopping)."""
        if self.wanted and not feed.exhausted:
            await self.arm(feed)
        else:
            freed.clear()
            await freed.wait()

    def _may_go(self, model: str) -> bool:
        """Whether a job of ``model`` may be armed, or its armed create sent, now: its model may
        start and its breaker is closed (a probe is never armed)."""
        return self.gate.may_start(model) and not self.gate.breakers.is_open(model)

    async def arm(self, feed: Feed) -> None:
        """Take the next job (of a model that may start and whose breaker is closed: a probe is
        never armed) and write its intent ahead of its slot."""
        self.wanted = False
        row = await feed.take(self._may_go)
        if row is None:
            return
        job = LiveJob.from_row(row)
        outcome = await self.submitter.arm(job)
        if outcome == "armed":
            self.jobs.append((job, row))
        elif outcome == "not armed":  # whatever stopped it, the usual path meets it and says so
            feed.put_back(row)
            self.enabled = False
        # "gone": someone else moved the job (cancelled): nothing to start

    def freed(self, spawn: Callable[[LiveJob], None]) -> None:
        """A slot just freed: wake the feed, and start the first armed job right here, without
        waiting for the feed's next turn of the event loop (milliseconds, tens on a loaded
        machine). One that may not start now is left to ``start_next``."""
        self._wake()
        if self.jobs and self.ctx.submitting and not self._slots_full():
            job = self.jobs[0][0]
            if self._may_go(job.model):
                self.jobs.pop(0)
                self.gate.starting(job)
                spawn(job)

    async def start_next(self, feed: Feed, spawn: Callable[[LiveJob], None]) -> bool:
        """A slot is free: start the first armed job (False when none is armed). One whose model
        may not start now goes back to the queue and to the head of its feed."""
        if not self.jobs:
            return False
        job, row = self.jobs.pop(0)
        if self._may_go(job.model):
            self.gate.starting(job)
            spawn(job)
        else:
            await self.submitter.disarm(job)
            feed.put_back(row)
        return True

    async def release(self) -> None:
        """The run stopped submitting: every armed job goes back to the queue (none was sent)."""
        while self.jobs:
            await self.submitter.disarm(self.jobs.pop()[0])


__all__ = ["ARM_AHEAD", "Ahead"]
