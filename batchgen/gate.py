"""Whether a job of a model may start now: its model under its limit (``limits.Slots``) and its
breaker closed, or open and ready for its one probe (``breaker.Breakers``). The conductor asks
before every create (a queued job, or a render again) and tells it each task's verdict.

Breakers are also kept in the ledger (``Ledger.trip_breaker`` …): ``status`` shows them, the
next night starts with them (its first task of such a model is the probe), and on a PostgreSQL
fleet a breaker one worker opens stops the model on every worker (``sync`` before each claim;
an intent refused by the ledger while the breaker is open, ``breaker_gated``; ``probes``: the one
worker whose ``take_probe`` succeeds claims the probe, three for the fleet in all).

With ``run --finish-by`` a job also starts only if the forecast says one clip of its model is
in place by the deadline (``deadline.Deadline``); on a fleet the deadline is the fleet's, the
earliest a live worker of the manifest works to (``join_deadline``, again with each ``sync``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from . import forecast
from .breaker import MAX_PROBES, Breakers
from .deadline import Deadline, for_night, outlook, stamp
from .failures import classify
from .jobs import JobRow, JobState
from .ledger import Scope, Writer
from .limits import Slots
from .pipeline import LiveJob, RunOptions
from .progress import Snapshot

S = JobState


class Gate:
    """The limits and breakers of a run, and which jobs in flight are probes."""

    def __init__(self, opts: RunOptions, writer: Writer, log: Callable[[str], None] | None = None) -> None:
        self.w = writer
        self.opts = opts
        self.log = log or (lambda msg: None)
        self.cooloff = opts.breaker_cooloff
        self.slots = Slots(opts.limits)
        self.breakers = Breakers(opts.breaker_cooloff, enabled=opts.breaker)
        self.deadline: Deadline | None = None
        self.history: dict[str, dict[str, Any]] = {}  # the ledger's history of the manifest's models (deadline)
        self.pending: dict[str, dict[str, int]] = {}  # model → queued / in flight when the deadline was set
        self.forecast_end: float | None = None  # when the night ends by the forecast (epoch seconds)
        self._probes: set[int] = set()
        # On a fleet, the jobs claimed as their model's probe (``probes``: this worker's
        # ``take_probe`` succeeded): only these go out ungated while the breaker is open.
        self._taken: set[int] = set()
        self._fleet_checked = 0.0
        self._fleet_said = False  # "no deadline to join" is said once

    def may_start(self, model: str, holding: bool = False) -> bool:
        """Whether a task of ``model`` may be created now; ``holding``: the job holds a slot of
        its model already (a render retry keeps its slot), which its limit must not count against
        it (else a model at its limit, and at --limit MODEL=1 always, left a retryable failure
        failed with its retries unused)."""
        return (self.slots.allows(model, holding) and self.breakers.allows(model, time.monotonic())
                and (self.deadline is None or self.deadline.allows(model)))

    # -------------------------------------------------------------- the deadline (run --finish-by)
    async def join_deadline(self, run_id: int, scope: Scope, fleet: bool) -> None:
        """The deadline this run works to: its own --finish-by, or on a fleet the earliest one a
        live worker of this manifest holds (a worker started without --finish-by joins it).
        Recorded in the run's row, so the fleet keeps it while any worker holding it lives, and
        ``status`` can say whether the night is on track. Each model's cut-off comes from the
        ledger's history of it (``forecast.clip_seconds``)."""
        led, opts = self.w.ledger, self.opts
        at, source = opts.finish_by, opts.finish_by_source
        if fleet:
            self._fleet_checked = time.monotonic()
            shared = await self.w.read(led.fleet_finish_by, scope.manifest, opts.lease)
            if shared is not None and (at is None or shared[0] < at):
                if at is not None:
                    self.log(f"finish-by: your deadline {stamp(at)} is later than the fleet's {stamp(shared[0])} "
                             f"(worker {shared[1]}): the earliest holds for every worker of this manifest")
                else:
                    self.log(f"finish-by: joining the fleet's deadline {stamp(shared[0])} (worker {shared[1]})")
                at, source = shared[0], f"the fleet's deadline (worker {shared[1]})"
            elif at is None and not self._fleet_said:
                self._fleet_said = True
                self.log("finish-by: no deadline — no live worker of this manifest has one (--finish-by sets it "
                         "for the whole fleet)")
        if at is None:
            return
        pending = await self.w.read(led.pending_by_model, scope)
        history = await self.w.read(led.render_history, sorted(pending))
        # A model never rendered here: the catalog's typical render time of it (a guess, as plan says).
        typical = opts.catalog.typical_render_times(pending) if opts.catalog else {}
        self.deadline = for_night(at, pending, history, typical, source=source)
        self.history, self.pending = history, pending
        work = {m: p["queued"] + p["in_flight"] for m, p in pending.items()}
        self.forecast_end = time.time() + forecast.estimate(work, history, opts.concurrency, opts.rpm,
                                                            typical=typical).seconds
        await self.w.call(led.set_finish_by, run_id, at)

    async def _fleet_deadline(self, run_id: int, scope: Scope) -> None:
        """Once a heartbeat: a worker that joined since with an earlier deadline moves the fleet's."""
        if time.monotonic() - self._fleet_checked < self.opts.heartbeat:
            return
        if self.deadline is None:
            await self.join_deadline(run_id, scope, True)
            return
        self._fleet_checked = time.monotonic()
        shared = await self.w.read(self.w.ledger.fleet_finish_by, scope.manifest, self.opts.lease)
        if shared is not None and shared[0] < self.deadline.at - 0.5:
            self.log(f"finish-by: the fleet's deadline moved to {stamp(shared[0])} (worker {shared[1]})")
            self.deadline.move(shared[0], f"the fleet's deadline (worker {shared[1]})")
            await self.w.call(self.w.ledger.set_finish_by, run_id, shared[0])

    def outlook(self, snap: Snapshot, closed: bool) -> str:
        """The night against its deadline for the display (``deadline.outlook``): at the pace
        of the clips done lately, the forecast's until there is one; '' without a deadline.
        ``closed``: nothing queued may start any more tonight."""
        d = self.deadline
        if d is None:
            return ""
        now = time.time()
        eta = snap.eta_seconds()
        if eta is None and self.forecast_end is not None:
            eta = max(0.0, self.forecast_end - now)
        # Nothing queued starts any more: the feed said so, or every model is past its cut-off
        # (the feed may be waiting for a slot that frees only after the deadline).
        past = bool(d.needs) and d.past(list(d.needs))
        return outlook(d.at, now, remaining=snap.remaining, queued=snap.states.get(S.QUEUED, 0), eta_s=eta,
                       cut_off=closed or past)

    def cut(self) -> list[str]:
        """Models the deadline lets start nothing more tonight."""
        d = self.deadline
        return [] if d is None else sorted(m for m in d.needs if not d.allows(m))

    def idle(self, models: list[str], alone: bool) -> bool:
        """Whether none of ``models`` (those with queued jobs) will start anything more: each
        past its deadline cut-off, or its breaker given up — or, with nothing else left to do
        (``alone``), open after a failed probe (waiting out more cool-offs would only keep an
        idle run alive: the next night probes it again)."""
        now = time.monotonic()
        return bool(models) and all(
            (self.deadline is not None and not self.deadline.allows(m)) or self.breakers.done_for_tonight(m, alone, now)
            for m in models)

    def idle_models(self, alone: bool) -> list[str]:
        """Models of which no queued job starts tonight (``idle``), for a fleet's claim and wait."""
        now = time.monotonic()
        return sorted(set(self.cut()) | {m for m in self.breakers.open_models()
                                         if self.breakers.done_for_tonight(m, alone, now)})

    def fleet_limit(self, model: str) -> int | None:
        """``model``'s limit where the ledger must check it (a PostgreSQL fleet's render retry:
        ``Ledger.requeue_within_limit``); None where this process's slots are the whole count."""
        return self.slots.limits.get(model) if self.w.owner is not None else None

    def starting(self, job: LiveJob) -> None:
        """``job`` is about to be created: while its model's breaker is open, it is the probe.
        Any other create is refused at its intent if the ledger's breaker is open by then
        (another worker opened it since this one last looked): ``breaker_gated``.

        On a fleet a job is the probe only if it was claimed as one (``probes``): a job claimed
        while the breaker was closed, whose model's breaker this worker's own verdict opened
        during the claim's round trip, is not — sent as a probe it would be one create more
        than the fleet's ``take_probe`` allows, ungated."""
        if self.w.owner is None:
            probe = self.breakers.is_open(job.model)
        else:
            probe = job.id in self._taken
            self._taken.discard(job.id)
        if probe:
            self._probes.add(job.id)
            self.breakers.started(job.model)
        job.breaker_gated = self.breakers.enabled and not probe and self.w.owner is not None

    async def no_task(self, job: LiveJob) -> None:
        """``job``'s create came to no task (refused cleanly, stopped): if it was the probe,
        another may go (here, and on a fleet whichever worker takes it)."""
        if job.id in self._probes:
            self._probes.discard(job.id)
            self.breakers.abandoned(job.model)
            await self.w.read(self.w.ledger.give_back_probe, job.model)

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

    async def sync(self, run_id: int | None = None, scope: Scope | None = None) -> list[str]:
        """The ledger's open breakers adopted here, the ones closed elsewhere forgotten; returns
        the models whose breaker is open (not to be claimed but for a probe). On a fleet
        (``scope`` given) the fleet's deadline is looked at too, once a heartbeat."""
        if scope is not None and run_id is not None:
            await self._fleet_deadline(run_id, scope)
        if not self.breakers.enabled:
            return []
        fleet = await self.w.read(self.w.ledger.open_breakers)
        now = time.monotonic()
        for model, b in fleet.items():
            self.breakers.adopt(model, b["why"], b["probe_in"], now, b["probes"])
        for model in list(self.breakers.open_models()):
            if model not in fleet:
                self.breakers.forget(model)
        return list(fleet)

    async def probes(self, blocked: list[str], worker: int, scope: Scope, skip: Sequence[int] = ()) -> list[JobRow]:
        """For each open model whose cool-off is over: the probe job, if this worker is the one
        that takes the probe (``take_probe``: one at a time, ``MAX_PROBES`` for the fleet),
        claimed alone (never one of ``skip``: jobs this worker gave up on); a probe taken with
        no job to claim is given back."""
        rows: list[JobRow] = []
        led = self.w.ledger
        for model in blocked:
            if (self.breakers.allows(model, time.monotonic())
                    and await self.w.read(led.take_probe, model, self.cooloff, MAX_PROBES)):
                probe = await self.w.read(led.claim, worker, scope, 1, None, (), model, skip)
                if not probe:
                    await self.w.read(led.give_back_probe, model)
                self._taken.update(r["id"] for r in probe)
                rows += probe
        return rows

    def next_probe_in(self) -> float | None:
        return self.breakers.next_probe_in(time.monotonic())
