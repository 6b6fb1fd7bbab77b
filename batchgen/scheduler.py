"""The conductor of a run: the only module that knows both the client and the ledger's writer,
through the stages of ``pipeline/``.

Per job: ``queued → submitting`` (intent, committed durably *before* the POST) ``→ submitted``
(task id, committed right after the response) ``→ rendering → completed`` (result URL)
``→ done`` (file renamed into place, sha256 recorded). Side exits: ``failed``, ``in_doubt``
(the create's outcome is unknowable: never resubmitted automatically) and ``cancelled``.

The stages do the work (``pipeline.submit``, ``poll``, ``fetch``, ``check``, ``delivery``;
every state move through ``pipeline.moves``). The conductor feeds them jobs — pages of the
run's queued jobs, or leases claimed on a cooperative ledger — holds the render slots (create →
result ready), drives each job through the stages, and watches the run: stop (a signal or
`batchgen stop`), an API outage, the worker heartbeat, the live display. It writes no state.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable

from . import logs
from .ahead import Ahead
from .client import Api
from .failures import classify
from .gate import Gate
from .feed import Feed
from .jobs import JobRow, JobState
from .ledger import Scope, Writer
from .pipeline import ApiWatch, Checker, Context, Deliverer, Fetcher, LiveJob, Poller, RunOptions, Submitter, track
from .pipeline.moves import POLLED
from .progress import Display, Snapshot
from .watch import RunWatch
from .worker import FleetWorker, with_skipped_done

__all__ = ["ApiWatch", "LiveJob", "RunOptions", "Scheduler", "Snapshot", "with_skipped_done"]

S = JobState


class Scheduler:
    """Feeds jobs through the stages within the render slots, and watches the run."""

    def __init__(self, writer: Writer, client: Api, opts: RunOptions, stop: asyncio.Event,
                 *, log: Callable[[str], None] | None = None, display: Display | None = None) -> None:
        self.w = writer
        self.worker = writer.owner  # this worker's id on a cooperative ledger, else None
        self.opts = opts
        self.stop = stop
        self.log = log or logs.log.warning
        self.display = display or Display(quiet=True)
        self.watch = RunWatch(writer, opts, stop, self.log)  # `batchgen stop` and the API's silence
        self.ctx = Context(writer, ApiWatch(client, self.watch.outage_started), opts, stop, self.log)
        self.submitter = Submitter(self.ctx)
        self.poller = Poller(self.ctx, lambda job: self.ahead.expecting(job))  # a slot may free: arm the next
        self.deliverer = Deliverer(self.ctx)
        self.checker = Checker(self.ctx, self.deliverer.start)
        self.fetcher = Fetcher(self.ctx, self.poller.fresh_url,
                               self.checker.start if opts.verify else self.deliverer.start)
        self._started = time.monotonic()
        self._inflight = 0  # tasks holding a render slot (see _free_slot)
        self.gate = Gate(opts, writer, self.log)  # per model: limits (the slots again), breakers, the deadline
        self.slots, self.breakers = self.gate.slots, self.gate.breakers
        self._frees = 0  # slots freed so far: a wait for one never misses one freed meanwhile
        self._slot_freed = asyncio.Event()
        self._feed_closed = False  # no queued job may start any more tonight (deadline, breakers)
        self._tasks: set[asyncio.Task[None]] = set()
        self.fleet = None if self.worker is None else FleetWorker(writer, self.ctx, stop, self._spawn)
        self.ahead = Ahead(self.ctx, self.submitter, self.gate, slots_full=lambda: self._inflight >= opts.concurrency,
                           wake=self._slot_freed.set, enabled=self.worker is None)

    # -------------------------------------------------------------- orchestration
    async def run(self, run_id: int, total: int, scope: Scope) -> None:
        led = self.w.ledger
        if self.worker is not None:  # cooperative: what this worker holds, counts of the whole manifest
            active = await self.w.read(led.held, self.worker)
            counts = with_skipped_done(await self.w.read(led.scope_counts, scope), total)
        else:
            active = await self.w.call(led.active_jobs)
            counts = with_skipped_done(await self.w.call(led.counts, run_id), total)
        states = self.ctx.moves.states
        self.ctx.moves.show_counts(counts)
        for row in active:
            if row["run_id"] != run_id and self.worker is None:  # paid tasks of earlier runs, collected by this one
                states[row["state"]] += 1
        # Results closest to their 24 h expiry are downloaded first, before anything new is sent.
        active.sort(key=lambda r: (r["state"] != S.COMPLETED, r["result_at"] or 0.0, r["id"]))
        for row in active:
            self._spawn(LiveJob.from_row(row))
        # Leftovers of earlier runs, looked for beside the feed (never before the first create):
        # clips a crash left unverified, and clips not yet at the delivery destination. Tracked
        # with the verifications and deliveries, which the end of the run waits for.
        if self.opts.verify:
            track(self.checker.tasks, self._sweep(scope))
        elif self.opts.deliver is not None:
            track(self.deliverer.tasks, self.deliverer.sweep(scope))
        await self.gate.join_deadline(run_id, scope, self.worker is not None)
        self.display.start()
        helpers = [asyncio.create_task(self._report()), asyncio.create_task(self._watch_stop()),
                   asyncio.create_task(self.watch.ledger_stop(self.ctx, run_id)),
                   asyncio.create_task(self.watch.outage(self.ctx))]
        try:
            if self.fleet is not None:
                await self.fleet.share_budget(first=True)
                helpers.append(asyncio.create_task(self.fleet.heartbeat(total, scope)))
                await self._feed_claims(scope)
            else:
                await self._feed_pages(run_id)
                await self.ahead.release()  # armed jobs of a run that stopped submitting: none was sent
            while self._tasks:
                await asyncio.wait(set(self._tasks))
            while self.checker.tasks or self.deliverer.tasks:  # a clip's verdict belongs in this run's summary;
                # uploads finish even after a stop (short, idempotent). Verifications may start deliveries.
                await asyncio.wait(set(self.checker.tasks) | set(self.deliverer.tasks))
            await self.checker.pictures_done()  # contact sheets: waited for a few seconds at most
        finally:
            for t in helpers:
                t.cancel()
            self.checker.shutdown()
            self.deliverer.shutdown()
            self.display.stop(self.snapshot())

    async def _sweep(self, scope: Scope) -> None:
        """Verify the clips a crash left unverified, then deliver what earlier runs left
        undelivered (verified clips only)."""
        await self.checker.sweep(scope)
        if self.opts.deliver is not None:
            await self.deliverer.sweep(scope)

    async def _drive(self, job: LiveJob) -> None:
        await self._stages(job)
        if self.fleet is not None and job.state in (S.FAILED, S.QUEUED):
            await self.fleet.let_go(job)  # given up on tonight: the other workers may take it at once

    async def _stages(self, job: LiveJob) -> None:
        """One job through the stages; its render slot is freed once its result is ready. A
        task the provider failed for a retryable reason is created again, in the same slot,
        while --render-retries allows (each a new paid task, through the submit stage's intent
        and credit cap like any create)."""
        while True:
            if job.state == S.QUEUED or job.armed is not None:
                if not await self.submitter.submit(job):
                    await self.gate.no_task(job)
                    return
            if job.state in POLLED:
                await self.poller.follow(job)
                await self._verdict(job)
            if job.state == S.COMPLETED:
                self._free_slot(job)
                await self.fetcher.fetch(job)
                return
            if not await self._render_again(job):
                return

    async def _verdict(self, job: LiveJob) -> None:
        msg = await self.gate.verdict(job)
        if msg:
            self.log(msg)

    async def _render_again(self, job: LiveJob) -> bool:
        """Whether ``job`` goes back to the submit stage tonight: only a task the API answered
        as failed with a retryable code (never an ambiguous create: that is in doubt, never
        failed; never a permanent failure: the request itself is refused)."""
        opts = self.opts
        if (job.state != S.FAILED or classify(job.error_code) != "retryable" or job.render_retries >= opts.render_retries
                or not self.ctx.submitting or self.breakers.is_open(job.model)
                or not self.gate.may_start(job.model, holding=job.holds_slot)):
            return False  # while its breaker is open, a queued job is the probe (on a fleet, the one taken)
        self.gate.starting(job)
        detail = f"--render-retries: {job.error_code}, rendering again ({job.render_retries + 1} of {opts.render_retries})"
        while (ok := await self.ctx.moves.render_again(job, detail, self.gate.fleet_limit(job.model))) is None:
            if await self.ctx.sleep(0.5) or not self.ctx.submitting:  # the fleet has no room for its model yet
                return False
        return ok

    # -------------------------------------------------------------- feed and slots
    async def _wait_for_slot(self) -> None:
        while self._inflight >= self.opts.concurrency and not self.stop.is_set():
            self._slot_freed.clear()
            await self._slot_freed.wait()

    async def _feed_pages(self, run_id: int) -> None:
        """Single-process ledger: this run's queued jobs, highest priority first, then in
        manifest order (``feed.Feed``)."""
        led = self.w.ledger
        models = await self.w.call(led.queued_models, run_id)
        await self.gate.sync()  # breakers an earlier night left open: their first task is the probe

        async def page(model: str, after: tuple[int, int] | None, limit: int) -> list[JobRow]:
            return await self.w.call(led.queued_page, run_id, model, after, limit)

        feed = Feed(models, page)
        while self.ctx.submitting:
            if await self.ahead.turn(feed, self._inflight >= self.opts.concurrency, self._slot_freed, self._spawn):
                continue  # every slot busy (the next job armed, or a wait), or an armed job started
            frees = self._frees
            row = await feed.take(self.gate.may_start)
            if row is None:
                if feed.exhausted:
                    return
                if self.gate.idle([m for m, left in feed.waiting().items() if left], alone=not self._inflight):
                    self._cut_off()
                    return  # nothing left may start tonight (deadline, breakers): in-flight tasks are collected
                # Every model with jobs left is at its limit or its breaker is open: wait for a
                # task to end (unless one ended while the feed read its pages) or for a probe.
                probe_in = self.gate.next_probe_in()
                if not self._inflight and probe_in is None:
                    return  # only models whose breaker gave up are left: their jobs stay queued
                if frees == self._frees:
                    self._slot_freed.clear()
                    try:
                        await asyncio.wait_for(self._slot_freed.wait(), probe_in)
                    except asyncio.TimeoutError:
                        pass
                continue
            job = LiveJob.from_row(row)
            self.gate.starting(job)
            self._spawn(job)

    async def _feed_claims(self, scope: Scope) -> None:
        """Cooperative ledger: lease queued jobs as slots free up (never more than can start now,
        so other workers get the rest), and stay while other workers still hold unfinished jobs
        of this manifest: if one dies, its tasks are ours to collect (see worker.FleetWorker)."""
        assert self.worker is not None and self.fleet is not None
        led = self.w.ledger
        while self.ctx.submitting:
            await self._wait_for_slot()
            if not self.ctx.submitting:
                return
            free = self.opts.concurrency - self._inflight
            blocked = await self.gate.sync(self.worker, scope)  # open breakers, whichever worker opened them
            cut = self.gate.cut()  # models past the (fleet's) deadline: none of their jobs starts tonight
            skip = tuple(self.fleet.given_up)  # let go of: left to the other workers
            rows = await self.gate.probes([m for m in blocked if m not in cut], self.worker, scope, skip)
            rows += await self.w.read(led.claim, self.worker, scope, max(0, min(free, 256) - len(rows)), self.slots.limits,
                                      sorted(set(blocked) | set(cut)), None, skip)
            for row in rows:
                job = LiveJob.from_row(row)
                self.gate.starting(job)
                self._spawn(job)
            if rows:
                continue
            idle, gone = self.gate.idle_models(alone=not self._inflight), tuple(self.fleet.given_up)  # as now
            if not self._inflight and not await self.w.read(led.pending_elsewhere, self.worker, scope, idle, gone):
                self._cut_off()
                return
            self._slot_freed.clear()
            try:  # a slot freeing up, or time for another look (other workers finishing, a dead
                # worker's jobs freed by the heartbeat); short, since the manifest's end is seen here
                await asyncio.wait_for(self._slot_freed.wait(), min(self.opts.heartbeat, 0.5))
            except asyncio.TimeoutError:
                pass

    def _cut_off(self) -> None:
        """Nothing queued may start any more tonight: said once, with the models the deadline cut."""
        self._feed_closed = True
        d = self.gate.deadline
        if d is not None and d.cut:
            self.log(f"finish-by {d.when()}: no more jobs of {', '.join(sorted(d.cut))} start tonight — they could "
                     "not be rendered, downloaded and verified by then; they stay queued for the next run")

    def _spawn(self, job: LiveJob) -> None:
        self._inflight += 1
        self.slots.take(job.model)
        job.holds_slot = True
        t = asyncio.create_task(self._drive(job), name=f"job-{job.id}")
        self._tasks.add(t)
        t.add_done_callback(functools.partial(self._done, job))

    def _free_slot(self, job: LiveJob) -> None:
        """A render slot is a task rendering at the provider (create → result ready): once the
        result is ready, the next task starts while this one is downloaded."""
        if job.holds_slot:
            job.holds_slot = False
            self._inflight -= 1
            self.slots.give(job.model)
            self._frees += 1
            self.ahead.freed(self._spawn)  # wakes the feed; an armed job's create goes now, not on its next turn

    def _done(self, job: LiveJob, t: asyncio.Task[None]) -> None:
        self._tasks.discard(t)
        self._free_slot(job)
        if not t.cancelled() and t.exception() is not None:
            exc = t.exception()
            self.log(f"internal error in {t.get_name()}: {exc!r}")
            self.ctx.unfinished = True

    # -------------------------------------------------------------- stop, display
    async def _watch_stop(self) -> None:
        await self.stop.wait()
        self.submitter.cap.wake()  # jobs waiting for room under --max-credits stop waiting
        self.ctx.wake_sleepers()
        self._slot_freed.set()
        self.fetcher.cancel()  # the temp files are removed; the jobs stay `completed` for the next run

    async def quiesce(self, timeout: float = 1.0) -> None:
        """Before the process exits at once (a second signal): downloads in progress are
        cancelled and their temporary files removed (the jobs stay `completed`)."""
        self.stop.set()
        tasks = self.fetcher.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(self.display.interval)
            self.display.update(self.snapshot())

    def snapshot(self) -> Snapshot:
        now, ctx, budget = time.monotonic(), self.ctx, self.ctx.budget
        snap = Snapshot(states=dict(ctx.moves.states), elapsed=now - self._started,
                        done_last_minute=ctx.moves.done_last_minute(now),
                        requests_last_minute=budget.last_minute(), budget_rpm=budget.current_rpm,
                        throttled=budget.throttled, credits=ctx.credits_seen, in_flight=self._inflight,
                        delivered=self.deliverer.delivered if self.opts.deliver is not None else None,
                        undelivered=self.deliverer.undelivered, models=self.slots.view(),
                        breakers=self.breakers.view(now), armed=len(self.ahead.jobs))
        snap.deadline = self.gate.outlook(snap, self._feed_closed)
        return snap
