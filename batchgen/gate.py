"""Whether a job of a model may start now: its model under its limit (``limits.Slots``) and its
breaker closed, or open and ready for its one probe (``breaker.Breakers``). The conductor asks
before every create (a queued job, or a render again) and tells it each task's verdict.

Breakers are also kept in the ledger (``Ledger.trip_breaker`` …): ``status`` shows them, the
next night starts with them (its first task of such a model is the probe), and on a PostgreSQL
fleet a breaker one worker opens stops the model on every worker (``sync`` before each claim;
``probes``: the one worker whose ``take_probe`` succeeds claims the probe)."""

from __future__ import annotations

import time

from .breaker import Breakers
from .failures import classify
from .jobs import JobRow, JobState
from .ledger import Scope, Writer
from .limits import Slots
from .pipeline import LiveJob, RunOptions

S = JobState


class Gate:
    """The limits and breakers of a run, and which jobs in flight are probes."""

    def __init__(self, opts: RunOptions, writer: Writer) -> None:
        self.w = writer
        self.cooloff = opts.breaker_cooloff
        self.slots = Slots(opts.limits)
        self.breakers = Breakers(opts.breaker_cooloff, enabled=opts.breaker)
        self._probes: set[int] = set()

    def may_start(self, model: str) -> bool:
        return self.slots.allows(model) and self.breakers.allows(model, time.monotonic())

    def starting(self, job: LiveJob) -> None:
        """``job`` is about to be created: while its model's breaker is open, it is the probe."""
        if self.breakers.is_open(job.model):
            self._probes.add(job.id)
        self.breakers.started(job.model)

    def no_task(self, job: LiveJob) -> None:
        """``job``'s create came to no task (refused cleanly, stopped): if it was the probe,
        another may go."""
        if job.id in self._probes:
            self._probes.discard(job.id)
            self.breakers.abandoned(job.model)

    async def verdict(self, job: LiveJob) -> str | None:
        """A task's verdict for its model's breaker: completed, or failed for a reason that is
        not the request's own (a permanent failure says nothing about the model). Returns a
        message when the breaker opened; the ledger learns every opening and closing."""
        self._probes.discard(job.id)
        if not (job.state == S.COMPLETED or job.state == S.FAILED and classify(job.error_code) != "permanent"):
            return None
        model, was_open = job.model, self.breakers.is_open(job.model)
        msg = self.breakers.record(model, job.state == S.FAILED, job.error_code, time.monotonic())
        if self.breakers.is_open(model) and msg:  # opened, or a probe failed: the cool-off starts again
            await self.w.call(self.w.ledger.trip_breaker, model, self.breakers.models[model].why, self.cooloff)
        elif was_open and not self.breakers.is_open(model):
            await self.w.call(self.w.ledger.close_breaker, model)
        return msg

    async def sync(self) -> list[str]:
        """The ledger's open breakers adopted here, the ones closed elsewhere forgotten; returns
        the models whose breaker is open (not to be claimed but for a probe)."""
        if not self.breakers.enabled:
            return []
        fleet = await self.w.read(self.w.ledger.open_breakers)
        now = time.monotonic()
        for model, b in fleet.items():
            self.breakers.adopt(model, b["why"], b["probe_in"], now)
        for model in list(self.breakers.open_models()):
            if model not in fleet:
                self.breakers.forget(model)
        return list(fleet)

    async def probes(self, blocked: list[str], worker: int, scope: Scope) -> list[JobRow]:
        """For each open model whose cool-off is over: the probe job, if this worker is the one
        that takes the probe (``take_probe``), claimed alone."""
        rows: list[JobRow] = []
        led = self.w.ledger
        for model in blocked:
            if self.breakers.allows(model, time.monotonic()) and await self.w.read(led.take_probe, model, self.cooloff):
                rows += await self.w.read(led.claim, worker, scope, 1, None, (), model)
        return rows

    def next_probe_in(self) -> float | None:
        return self.breakers.next_probe_in(time.monotonic())
