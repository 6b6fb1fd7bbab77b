"""Whether a job of a model may start now: its model under its limit (``limits.Slots``) and its
breaker closed, or open and ready for its one probe (``breaker.Breakers``). The conductor asks
before every create (a queued job, or a render again) and tells it each task's verdict."""

from __future__ import annotations

import time

from .breaker import Breakers
from .failures import classify
from .jobs import JobState
from .limits import Slots
from .pipeline import LiveJob, RunOptions

S = JobState


class Gate:
    """The limits and breakers of a run, and which jobs in flight are probes."""

    def __init__(self, opts: RunOptions) -> None:
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

    def verdict(self, job: LiveJob) -> str | None:
        """A task's verdict for its model's breaker: completed, or failed for a reason that is
        not the request's own (a permanent failure says nothing about the model). Returns a
        message when the breaker opened."""
        self._probes.discard(job.id)
        if job.state == S.COMPLETED or job.state == S.FAILED and classify(job.error_code) != "permanent":
            return self.breakers.record(job.model, job.state == S.FAILED, job.error_code, time.monotonic())
        return None

    def next_probe_in(self) -> float | None:
        return self.breakers.next_probe_in(time.monotonic())
