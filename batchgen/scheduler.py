"""The scheduler: the only module that knows both the client and the ledger.

Per job: ``queued → submitting`` (intent, committed durably *before* the POST) ``→ submitted``
(task id, committed right after the response) ``→ rendering → completed`` (result URL)
``→ done`` (file renamed into place, sha256 recorded). Side exits: ``failed``, ``in_doubt``
(the create's outcome is unknowable: never resubmitted automatically) and ``cancelled``.

Polls are scheduled from the task's ``estimated_time`` and reported progress, not a fixed tight
loop. Creates and polls share one request budget; a 429 pauses every caller for Retry-After.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Literal

from . import crash, deliver, logs, media
from .budget import CreditCap, RequestBudget, backoff
from .client import Api, TaskInfo
from .errors import EXIT_KEY_REFUSED, EXIT_NO_FUNDS, EXIT_USAGE, ApiError, DeliveryError, DownloadError, ErrorClass, LedgerError
from .files import OutputDir, remove_stale_temp_files
from .jobs import JobState, plain, short_key
from .ledger import RETRYABLE_TASK_CODES, Scope, Transition, Writer
from .logs import events
from .pipeline import pace
from .pipeline.context import ApiWatch, RunOptions
from .pipeline.moves import POLLED, LiveJob
from .progress import Display, Snapshot
from .specs import UPLOAD_PREFIX

__all__ = ["ApiWatch", "LiveJob", "RunOptions", "Scheduler", "Snapshot", "with_skipped_done"]

S = JobState
RESULT_TTL = 24 * 3600.0
# Download answers meaning the result is gone (expired link, removed file).
_GONE = frozenset({"download_http_403", "download_http_404", "download_http_410"})
# What one create attempt came to (see Scheduler._attempt_create).
CreateOutcome = Literal["submitted", "in_doubt", "failed", "retry", "stopped", "gone"]
_POLLED = POLLED  # polled as `submitted`, maybe recorded `rendering` meanwhile (and vice versa)


# ------------------------------------------------------------------------------ scheduler
class Scheduler:
    def __init__(self, writer: Writer, client: Api, opts: RunOptions, stop: asyncio.Event,
                 *, log: Callable[[str], None] | None = None, display: Display | None = None) -> None:
        self.w = writer
        self.worker = writer.owner  # this worker's id on a cooperative ledger, else None
        self.opts = opts
        self.client = ApiWatch(client, self._outage_started)
        self.stop = stop
        self.budget = RequestBudget(opts.rpm)
        self.log = log or logs.log.warning
        self.display = display or Display(quiet=True)
        self.states: collections.Counter[str] = collections.Counter()  # display state → jobs
        self.credits_seen = 0.0
        self._done_times: collections.deque[float] = collections.deque()
        self._started = time.monotonic()
        self.reason: str | None = None
        self.no_submit = False  # no new creates (402, 401, credit cap, ledger failure)
        self.halt_code: int | None = None  # exit code of a run-wide refusal (402, 401)
        self.cap = CreditCap(opts.max_credits)  # estimated credits of the creates this run sent
        self.unfinished = False  # something was left for the next run (retries exhausted, timeout)
        self.polls = 0
        self.pace = pace.PaceBook()  # what this run learns of each model's render times
        self._inflight = 0  # tasks holding a render slot (see _free_slot)
        self._slot_freed = asyncio.Event()
        self._download_slots = asyncio.Semaphore(max(4, opts.concurrency))
        self._tasks: set[asyncio.Task[None]] = set()
        self._out = OutputDir(opts.out_dir)
        self._sleepers: set[asyncio.Future[None]] = set()
        self._uploads: dict[str, asyncio.Future[str]] = {}
        self._downloading: set[asyncio.Task[Any]] = set()
        self._verifying: set[asyncio.Task[None]] = set()
        self._media_pool: ProcessPoolExecutor | None = None
        self.verified: collections.Counter[str] = collections.Counter()  # this run's outcomes
        self._delivering: set[asyncio.Task[None]] = set()
        self._delivery_started: set[int] = set()  # job ids
        self._deliver_pool: ThreadPoolExecutor | None = None
        self._deliver_slots = asyncio.Semaphore(max(1, opts.deliver_threads))
        self.delivered = 0  # clips this run delivered (or found already there)
        self.undelivered = 0  # clips this run could not deliver (left for the next run)
        self.delivery_broken: str | None = None  # the destination refused everything: why

    # -------------------------------------------------------------- orchestration
    async def run(self, run_id: int, total: int, scope: Scope) -> None:
        led = self.w.ledger
        if self.worker is not None:  # cooperative: what this worker holds, counts of the whole manifest
            active = await self.w.read(led.held, self.worker)
            counts = with_skipped_done(await self.w.read(led.scope_counts, scope), total)
        else:
            active = await self.w.call(led.active_jobs)
            counts = with_skipped_done(await self.w.call(led.counts, run_id), total)
        self._show_counts(counts)
        for row in active:
            if row["run_id"] != run_id and self.worker is None:  # paid tasks of earlier runs, collected by this one
                self.states[row["state"]] += 1
        # Results closest to their 24 h expiry are downloaded first, before anything new is sent.
        active.sort(key=lambda r: (r["state"] != S.COMPLETED, r["result_at"] or 0.0, r["id"]))
        for row in active:
            self._spawn(LiveJob.from_row(row))
        # Leftovers of earlier runs, looked for beside the feed (never before the first create):
        # clips a crash left unverified, and clips not yet at the delivery destination. Tracked
        # with the verifications and deliveries, which the end of the run waits for.
        if self.opts.verify:
            self._track(self._verifying, self._sweep_unverified(scope))
        elif self.opts.deliver is not None:
            self._track(self._delivering, self._sweep_undelivered(scope))
        self.display.start()
        helpers = [asyncio.create_task(self._report()), asyncio.create_task(self._watch_stop()),
                   asyncio.create_task(self._watch_ledger_stop(run_id)), asyncio.create_task(self._watch_outage())]
        try:
            if self.worker is not None:
                await self._share_budget(first=True)
                helpers.append(asyncio.create_task(self._heartbeat(total, scope)))
                await self._feed_claims(scope)
            else:
                await self._feed_pages(run_id)
            while self._tasks:
                await asyncio.wait(set(self._tasks))
            while self._verifying or self._delivering:
                # A clip's verdict belongs in this run's summary; uploads finish even after a
                # stop (they are short and idempotent). Verifications may start deliveries.
                await asyncio.wait(set(self._verifying) | set(self._delivering))
        finally:
            for t in helpers:
                t.cancel()
            if self._media_pool is not None:
                self._media_pool.shutdown(wait=True, cancel_futures=True)
            if self._deliver_pool is not None:
                self._deliver_pool.shutdown(wait=True, cancel_futures=True)
            self.display.stop(self.snapshot())

    @staticmethod
    def _track(tasks: set[asyncio.Task[None]], coro: Coroutine[Any, Any, None], name: str | None = None) -> None:
        """Run ``coro`` as a task held in ``tasks`` until it ends (the end of the run waits for them)."""
        t = asyncio.create_task(coro, name=name)
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    async def _sweep_unverified(self, scope: Scope) -> None:
        """Verify the clips a crash left unverified (renamed into place, never inspected), then
        deliver what earlier runs left undelivered (verified clips only)."""
        for row in await self.w.read(self.w.ledger.unverified, scope):
            if row["output_path"]:
                self._start_verify(LiveJob.from_row(row), Path(row["output_path"]))
        if self.opts.deliver is not None:
            await self._sweep_undelivered(scope)

    async def _sweep_undelivered(self, scope: Scope) -> None:
        rows = await self.w.read(self.w.ledger.undelivered, scope, verified_only=self.opts.verify)
        for row in rows:
            if self.worker is None or Path(row["output_path"] or "").exists():
                self._start_delivery(LiveJob.from_row(row), Path(row["output_path"] or ""))
        if self.opts.prune_local:
            # Delivered and recorded, but the local copy outlived a kill before it was removed.
            for row in await self.w.read(self.w.ledger.unpruned, scope):
                await self._prune_delivered(LiveJob.from_row(row), Path(row["output_path"] or ""))

    async def _wait_for_slot(self) -> None:
        while self._inflight >= self.opts.concurrency and not self.stop.is_set():
            self._slot_freed.clear()
            await self._slot_freed.wait()

    async def _feed_pages(self, run_id: int) -> None:
        """Single-process ledger: page through this run's queued jobs in manifest order."""
        after = 0
        while not self.stop.is_set() and not self.no_submit:
            page = await self.w.call(self.w.ledger.queued_page, run_id, after, 500)
            if not page:
                return
            for row in page:
                after = row["seq"]
                await self._wait_for_slot()
                if self.stop.is_set() or self.no_submit:
                    return
                self._spawn(LiveJob.from_row(row))

    async def _feed_claims(self, scope: Scope) -> None:
        """Cooperative ledger: lease queued jobs as slots free up (never more than can start now,
        so other workers get the rest), and stay while other workers still hold unfinished jobs
        of this manifest: if one dies, its tasks are ours to collect (see _heartbeat)."""
        assert self.worker is not None
        led = self.w.ledger
        while not self.stop.is_set() and not self.no_submit:
            await self._wait_for_slot()
            if self.stop.is_set() or self.no_submit:
                return
            free = self.opts.concurrency - self._inflight
            rows = await self.w.read(led.claim, self.worker, scope, min(free, 256))
            for row in rows:
                self._spawn(LiveJob.from_row(row))
            if rows:
                continue
            if not self._inflight and not await self.w.read(led.pending_elsewhere, self.worker, scope):
                return
            self._slot_freed.clear()
            try:  # a slot freeing up, or time for another look (other workers finishing, a dead
                # worker's jobs freed by _heartbeat); short, since the manifest's end is seen here
                await asyncio.wait_for(self._slot_freed.wait(), min(self.opts.heartbeat, 0.5))
            except asyncio.TimeoutError:
                pass

    async def _share_budget(self, first: bool = False) -> None:
        """Workers split --rpm evenly by the number alive. A joining worker waits one heartbeat
        before its first request so that every other worker has cut its share by then."""
        if not self.opts.rpm:
            return
        n = max(1, await self.w.read(self.w.ledger.live_workers, self.opts.lease))
        self.budget.set_rpm(self.opts.rpm / n)
        if first and n > 1:
            self.budget.hold(self.opts.heartbeat)

    async def _heartbeat(self, total: int, scope: Scope) -> None:
        """Renew this worker's lease, re-split the budget, take over dead workers' jobs and
        refresh the manifest-wide counts the display shows."""
        assert self.worker is not None
        led = self.w.ledger
        last_ok = time.monotonic()
        while not self.stop.is_set():
            await asyncio.sleep(self.opts.heartbeat)
            try:
                if not await self.w.read(led.heartbeat, self.worker):
                    self._stop_submitting("this worker's lease was taken over (its heartbeat went stale); stopping",
                                          unfinished=True)
                    self.stop.set()
                    return
                last_ok = time.monotonic()
                await self._share_budget()
                adopted, doubt = await self.w.read(led.reclaim, self.worker, self.opts.lease)
                counts = with_skipped_done(await self.w.read(led.scope_counts, scope), total)
            except LedgerError as e:
                self.log(f"heartbeat failed: {e}")
                if time.monotonic() - last_ok > self.opts.lease / 2:
                    # Others will soon call this worker dead and take its jobs: stop creating.
                    self._stop_submitting("cannot renew this worker's lease; submission stopped", unfinished=True)
                continue
            for j in doubt:
                self.log(f"job {j['name']} ({short_key(j['key'])}) is IN DOUBT: its worker died mid-create — "
                         "settle with `batchgen resolve`")
            if adopted:
                self.log(f"took over {len(adopted)} job(s) with tasks from a worker that stopped")
            if adopted or doubt:  # a worker died: its half-written downloads (if on this host) go
                await asyncio.to_thread(remove_stale_temp_files, self.opts.out_dir)
            # Counts first: adopted jobs are already in them, _spawn does not move them.
            self._show_counts(counts)
            for row in adopted:
                self._spawn(LiveJob.from_row(row))

    def _show_counts(self, counts: dict[str, int]) -> None:
        """Replace the live per-state counts of the display by counts read from the ledger."""
        self.states.clear()
        self.states.update(counts)

    def _stop_submitting(self, reason: str, *, unfinished: bool = False) -> None:
        """No new creates from now on; tasks in flight are still collected. The first reason is
        the one reported."""
        self.unfinished = self.unfinished or unfinished
        if self.no_submit:
            return
        self.no_submit = True
        self.reason = reason
        self.log(reason)
        self.cap.wake()

    def _spawn(self, job: LiveJob) -> None:
        self._inflight += 1
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
            self._slot_freed.set()

    def _done(self, job: LiveJob, t: asyncio.Task[None]) -> None:
        self._tasks.discard(t)
        self._free_slot(job)
        if not t.cancelled() and t.exception() is not None:
            exc = t.exception()
            self.log(f"internal error in {t.get_name()}: {exc!r}")
            self.unfinished = True

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped (the stop watcher wakes every sleeper). True when stopped."""
        if self.stop.is_set():
            return True
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        handle = loop.call_later(max(0.0, seconds), _resolve, fut)
        self._sleepers.add(fut)
        try:
            await fut
        finally:
            self._sleepers.discard(fut)
            handle.cancel()
        return self.stop.is_set()

    @property
    def committed_credits(self) -> float:
        """Estimated credits of this run's creates (sent, and reserved by creates on their way)."""
        return round(self.cap.spent + self.cap.reserved, 9)

    async def _watch_stop(self) -> None:
        await self.stop.wait()
        self.cap.wake()  # jobs waiting for room under --max-credits stop waiting
        for fut in list(self._sleepers):
            _resolve(fut)
        self._slot_freed.set()
        for task in list(self._downloading):
            task.cancel()  # the temp file is removed; the job stays `completed` for the next run

    async def quiesce(self, timeout: float = 1.0) -> None:
        """Before the process exits at once (a second signal): downloads in progress are
        cancelled and their temporary files removed (the jobs stay `completed`)."""
        self.stop.set()
        tasks = set(self._downloading)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(self.display.interval)
            self.display.update(self.snapshot())

    async def _watch_ledger_stop(self, run_id: int) -> None:
        """`batchgen stop` sets a flag in the ledger (works from any terminal or machine)."""
        while not self.stop.is_set():
            await asyncio.sleep(self.opts.stop_check_every)
            if await self.w.read(self.w.ledger.stop_requested, run_id):
                self.log("stop requested through the ledger (batchgen stop): draining")
                self.reason = "stopped by `batchgen stop`"
                self.stop.set()

    def _outage_started(self, cause: str) -> None:
        self.log(f"the API does not answer: {cause}; retrying — the run stops if it stays silent for "
                 f"{self.opts.outage_window:g} s (task ids are kept)")

    async def _watch_outage(self) -> None:
        """Nothing answering for the whole outage window: more retries only burn the night.
        Stop (exit 3) with the cause; every task id is in the ledger for the next run."""
        every = min(1.0, self.opts.outage_window / 4)
        while not self.stop.is_set():
            await asyncio.sleep(every)
            outage = self.client.outage
            if outage is not None and time.monotonic() - outage[0] >= self.opts.outage_window:
                self._stop_submitting(f"no answer from the API for {self.opts.outage_window:g} s ({outage[1]}); "
                                      "stopped — re-run when it is back (task ids are kept)", unfinished=True)
                self.stop.set()
                return

    def _move(self, job: LiveJob, state: JobState) -> None:
        """Every local state change: live counts for the display and one event record."""
        self.states[job.state] -= 1
        self.states[state] += 1
        if state == S.DONE:
            self._done_times.append(time.monotonic())
        if events.isEnabledFor(logging.INFO):
            events.info("%s %s → %s", job.name, job.state, state, extra={"event": {
                "event": "state", "job": job.key, "name": job.name, "from": job.state, "to": state,
                "task_id": job.task_id, "attempts": job.attempts, "polls": job.polls}})
        job.state = state

    def snapshot(self) -> Snapshot:
        now = time.monotonic()
        while self._done_times and self._done_times[0] < now - 60:
            self._done_times.popleft()
        return Snapshot(states=dict(self.states), elapsed=now - self._started, done_last_minute=len(self._done_times),
                        requests_last_minute=self.budget.last_minute(), budget_rpm=self.budget.current_rpm,
                        throttled=self.budget.throttled, credits=self.credits_seen, in_flight=self._inflight,
                        delivered=self.delivered if self.opts.deliver is not None else None,
                        undelivered=self.undelivered)

    # -------------------------------------------------------------- one job
    async def _drive(self, job: LiveJob) -> None:
        if job.state == S.QUEUED:
            if not await self._submit(job):
                return
        if job.state in _POLLED:
            await self._poll_until_terminal(job)
        if job.state == S.COMPLETED:
            self._free_slot(job)
            async with self._download_slots:  # downloads in their own bounded pool
                await self._download(job)

    async def _fail(self, job: LiveJob, code: str | None, message: str, *, detail: str, retryable: bool = False,
                    values: dict[str, Any] | None = None) -> None:
        """The job failed for good (until an operator or --retry-failed says otherwise)."""
        expect = _POLLED if job.state in _POLLED else (job.state,)
        await self.w.apply(Transition(job.id, S.FAILED, expect, {
            **(values or {}), "error_code": code, "error_message": message[:500], "retryable": retryable},
            detail=detail[:220]))
        self._move(job, S.FAILED)

    def _refused(self, job: LiveJob, e: ApiError) -> None:
        """A request the API turned away without doing anything: a 429 slows every caller down
        (Retry-After honoured), and this job waits at least its Retry-After before trying again."""
        if e.status == 429:
            self.budget.throttle(e.retry_after)
        job.retry_after = e.retry_after

    async def _submit(self, job: LiveJob) -> bool:
        for attempt in range(self.opts.submit_retries):
            if self.w.error is not None:
                self._stop_submitting(f"the ledger cannot be written ({self.w.error}); submission stopped")
            if self.stop.is_set() or self.no_submit:
                return False
            est = self.opts.prices.estimate(job.request) or 0.0
            # Reserved before any await, so concurrent jobs see it; a job that does not fit
            # waits for the creates still holding reservations to be answered (see CreditCap).
            admitted = await self.cap.reserve(est, lambda: self.stop.is_set() or self.no_submit)
            if admitted is None:
                return False
            if not admitted:
                self._stop_submitting(f"credit cap reached: {plain(self.cap.spent)} estimated for this run's "
                                      f"creates, the next ({plain(est)}) would pass --max-credits "
                                      f"{plain(self.opts.max_credits)}", unfinished=True)
                return False
            try:
                outcome = await self._attempt_create(job)
            finally:  # spent once a task exists or may exist (sent, in doubt, or cancelled mid-create)
                self.cap.settle(est, spent=job.state not in (S.QUEUED, S.FAILED))
            if outcome != "retry":
                return outcome == "submitted"
            await self._sleep(max(job.retry_after or 0.0, backoff(attempt, self.opts.retry_base, 60.0)))
        self.unfinished = True
        self.log(f"job {job.name} ({job.short}): create kept failing; left queued for the next run")
        return False

    async def _attempt_create(self, job: LiveJob) -> CreateOutcome:
        try:
            request = await self._materialise(job.request)
        except ApiError as e:
            if e.klass is ErrorClass.FATAL:  # e.g. 413: this input cannot be uploaded
                await self._fail(job, e.code, str(e), detail="upload refused")
                return "failed"
            if e.klass is ErrorClass.FATAL_RUN:
                self._key_refused(e, "uploading")
                return "stopped"
            if e.klass is ErrorClass.CONFIG:
                self._config_refused(e, "uploading")
                return "stopped"
            self._refused(job, e)
            return "retry"
        await self.budget.acquire()
        if self.stop.is_set() or self.no_submit:
            return "gone"
        crash.point("before_intent")
        # Invariant 1: the intent is durable before any byte of the create is sent.
        if not await self.w.apply(Transition(job.id, S.SUBMITTING, (S.QUEUED,), {
                "attempts": job.attempts + 1, "error_code": None, "error_message": None, "api": self.opts.api},
                detail=f"create attempt {job.attempts + 1}")):
            return "gone"  # moved by someone else (e.g. cancelled)
        job.attempts += 1
        self._move(job, S.SUBMITTING)
        crash.point("after_intent")
        # Shielded: a stop request must never separate a create from the record of its outcome.
        return await asyncio.shield(self._create_and_record(job, request))

    async def _materialise(self, request: dict[str, Any]) -> dict[str, Any]:
        """Replace ``upload:sha256:`` placeholders by the URL of the uploaded file (uploaded once
        per content and reused while fresh; concurrent jobs share one upload)."""
        out = dict(request)
        for k, v in request.items():  # any media field of any catalog entry (the placeholder tells)
            if isinstance(v, list):
                out[k] = [await self._upload_url(x) if isinstance(x, str) and x.startswith(UPLOAD_PREFIX) else x for x in v]
            elif isinstance(v, str) and v.startswith(UPLOAD_PREFIX):
                out[k] = await self._upload_url(v)
        return out

    async def _upload_url(self, placeholder: str) -> str:
        sha = placeholder.split(":")[-1]
        fut = self._uploads.get(sha)
        if fut is None or (fut.done() and (fut.cancelled() or fut.exception() is not None)):
            fut = self._uploads[sha] = asyncio.ensure_future(self._upload_once(sha))
        return await asyncio.shield(fut)

    async def _upload_once(self, sha: str) -> str:
        url = await self.w.call(self.w.ledger.upload_url, sha, time.time() - self.opts.upload_reuse)
        if url:
            return url
        path = self.opts.local_files.get(sha)
        if path is None:
            raise ApiError(ErrorClass.FATAL, f"local input {short_key(sha)} is not in the current manifest",
                           code="input_missing")
        await self.budget.acquire()
        url = await self.client.upload(path, path.name)
        await self.w.call(self.w.ledger.record_upload, sha, str(path), path.stat().st_size, url)
        logs.log.info(f"uploaded {path.name} ({short_key(sha)})")
        return url

    async def _create_and_record(self, job: LiveJob, request: dict[str, Any]) -> CreateOutcome:
        try:
            info = await self.client.create(request)
        except ApiError as e:
            return await self._create_failed(job, e)
        job.task_id = info.task_id
        job.submitted_at = time.time()
        self._saw_credits(job, info.credits)
        job.estimated_time = info.estimated_time
        # Queued at once, not awaited: the writer applies it before anything later of this job,
        # and waiting would add a commit to every job's latency without making a crash safer.
        fut = self.w.submit(Transition(job.id, S.SUBMITTED, (S.SUBMITTING,), {
            "remote_status": info.status, "progress": info.progress, "estimated_time": info.estimated_time,
            "credits": info.credits, "submitted_at": job.submitted_at}, task_id=info.task_id,
            detail=f"estimated_time={info.estimated_time}"))
        fut.add_done_callback(functools.partial(self._task_recorded, job=job, task_id=info.task_id))
        self._move(job, S.SUBMITTED)
        return "submitted"

    def _task_recorded(self, fut: asyncio.Future[bool], *, job: LiveJob, task_id: str) -> None:
        exc = None if fut.cancelled() else fut.exception()
        if exc is None and fut.result():
            crash.point("after_record")  # the task id is durable
            return
        # The task exists and is paid for: make sure a human can adopt it.
        self.w.error = self.w.error or exc or RuntimeError("state changed under the scheduler")
        self.log(f"job {job.name} ({job.short}) got task {task_id} but recording it failed "
                 f"({exc or 'the job changed state meanwhile'}); it will be in doubt: "
                 f"batchgen resolve {job.short} --adopt {task_id}")

    def _key_refused(self, e: ApiError, while_: str) -> None:
        """401: nothing can succeed with this key, so the whole run stops (exit 6)."""
        if self.halt_code == EXIT_KEY_REFUSED:
            return
        self.no_submit = True
        self.halt_code = EXIT_KEY_REFUSED
        self.reason = f"API key refused while {while_} ({e}); stopping"
        self.log(self.reason)
        self.stop.set()

    def _config_refused(self, e: ApiError, while_: str) -> None:
        """The configuration cannot work (a request URL aiohttp refuses: a bad --api-base): no
        request was sent and none can be, so the run stops (exit 2) and every job stays where it
        is — queued, or polled again by the next run. Never a job failure: the next run with the
        right configuration just goes on."""
        if self.halt_code == EXIT_USAGE:
            return
        self.no_submit = True
        self.halt_code = EXIT_USAGE
        self.reason = f"the API cannot be used as configured while {while_}: {e} — check --api-base; stopping"
        self.log(self.reason)
        self.stop.set()

    def _saw_credits(self, job: LiveJob, credits: float | None) -> None:
        if credits is not None:
            self.credits_seen = round(self.credits_seen + credits - job.credits, 9)  # no float noise in sums
            job.credits = credits

    async def _create_failed(self, job: LiveJob, e: ApiError) -> CreateOutcome:
        err = {"error_code": e.code, "error_message": str(e)[:500]}
        if e.klass is ErrorClass.AMBIGUOUS:
            await self.w.apply(Transition(job.id, S.IN_DOUBT, (S.SUBMITTING,), err,
                                          detail="ambiguous create: " + str(e)[:200]))
            self._move(job, S.IN_DOUBT)
            self.log(f"job {job.name} ({job.short}) is IN DOUBT: {e} — settle with `batchgen resolve`")
            return "in_doubt"
        if e.klass is ErrorClass.FATAL:
            await self._fail(job, e.code, str(e), detail="create rejected: " + str(e))
            return "failed"
        # SAFE, NO_FUNDS, FATAL_RUN, CONFIG: the API did not create anything; back to the queue.
        await self.w.apply(Transition(job.id, S.QUEUED, (S.SUBMITTING,), err, detail="create refused: " + str(e)[:200]))
        self._move(job, S.QUEUED)
        if e.klass is ErrorClass.NO_FUNDS and self.halt_code is None:
            self.no_submit = True
            self.halt_code = EXIT_NO_FUNDS
            self.reason = "insufficient balance (HTTP 402): submission stopped; in-flight tasks are still polled"
            self.log(self.reason)
        elif e.klass is ErrorClass.FATAL_RUN:
            self._key_refused(e, "creating")
        elif e.klass is ErrorClass.CONFIG:
            self._config_refused(e, "creating")
        self._refused(job, e)
        return "retry" if e.klass is ErrorClass.SAFE else "stopped"

    # -------------------------------------------------------------- polling
    def _next_poll_delay(self, job: LiveJob) -> float:
        return pace.poll_delay(job, time.time(), poll_min=self.opts.poll_min, poll_max=self.opts.poll_max,
                              book=self.pace)

    async def _poll_until_terminal(self, job: LiveJob) -> None:
        assert job.task_id is not None
        while True:
            if await self._sleep(self._next_poll_delay(job)):
                return
            elapsed = time.time() - (job.submitted_at or time.time())
            if elapsed > self.opts.task_timeout:
                self.unfinished = True
                self.log(f"job {job.name}: task {job.task_id} unfinished after {elapsed:.0f}s; "
                         "stopped polling (the id is kept; re-run to resume)")
                return
            await self.budget.acquire()
            stuck = job.estimated_time is not None and elapsed > max(600.0, 3 * job.estimated_time)
            try:
                info = await self.client.get_task(job.task_id, sync_upstream=stuck and job.polls % 5 == 4)
            except ApiError as e:
                if await self._poll_failed(job, e, elapsed):
                    return
                continue
            self.polls += 1
            job.polls += 1
            job.poll_errors = 0
            if info.estimated_time is not None:
                job.estimated_time = info.estimated_time
            job.progress = info.progress
            if info.status in ("completed", "pending", "processing"):  # how long this model's tasks take
                self.pace.observe(job.model, job.estimated_time, time.time() - (job.submitted_at or time.time()),
                                  done=info.status == "completed", progress=info.progress)
            if await self._observe(job, info):
                return

    async def _poll_failed(self, job: LiveJob, e: ApiError, elapsed: float) -> bool:
        """Returns True when polling this job must stop."""
        if e.klass is ErrorClass.FATAL_RUN:
            self._key_refused(e, "polling")
            return True
        if e.klass is ErrorClass.CONFIG:  # the task stays recorded: the next run polls it
            self._config_refused(e, "polling")
            return True
        if e.klass is ErrorClass.FATAL and not (e.status == 404 and elapsed < self.opts.poll_404_grace):
            await self._fail(job, "task_not_found" if e.status == 404 else e.code, str(e),
                             detail="poll failed: " + str(e), values={"polls": job.polls})
            return True
        self._refused(job, e)
        job.poll_errors += 1
        return False

    async def _observe(self, job: LiveJob, info: TaskInfo) -> bool:
        """Record what a poll saw. Returns True when the task is terminal."""
        base: dict[str, Any] = {"remote_status": info.status, "progress": info.progress, "polls": job.polls}
        if info.credits is not None:
            base["credits"] = info.credits
            self._saw_credits(job, info.credits)
        if info.status == "completed":
            if not info.urls:
                await self._fail(job, "no_result_url", "completed without a result URL",
                                 detail="completed without results", values=base)
                return True
            job.result_url, job.result_at = info.urls[0], time.time()
            extra = f" (+{len(info.urls) - 1} more URL(s) not downloaded)" if len(info.urls) > 1 else ""
            self.w.record(Transition(job.id, S.COMPLETED, _POLLED, {
                **base, "result_url": job.result_url, "result_at": job.result_at,
                "completed_at": job.result_at}, detail=f"after {job.polls} poll(s){extra}"))
            self._move(job, S.COMPLETED)
            return True
        if info.status in ("failed", "cancelled"):
            code = info.error_code or ("cancelled_remotely" if info.status == "cancelled" else "unknown_error")
            await self._fail(job, code, info.error_message or info.status, detail=f"task {info.status}: {code}",
                             retryable=code in RETRYABLE_TASK_CODES or info.status == "cancelled", values=base)
            return True
        if info.status not in ("pending", "processing"):
            self.log(f"task {job.task_id}: unknown status {info.status!r}, still polling")
        if job.state == S.SUBMITTED and info.status != "pending":
            self.w.record(Transition(job.id, S.RENDERING, (S.SUBMITTED,), base, detail=info.status))
            self._move(job, S.RENDERING)
        return False

    # -------------------------------------------------------------- download
    async def _download(self, job: LiveJob) -> None:
        assert job.result_url is not None
        try:
            final = self._out.path(job.output)
        except ValueError as e:
            await self._fail(job, "bad_output_path", str(e), detail="download: " + str(e))
            return
        repolled = False
        for attempt in range(self.opts.download_retries):
            if job.result_at is not None and time.time() - job.result_at > RESULT_TTL:
                await self._result_lost(job, "the result URL is older than 24 h")
                return
            if self.stop.is_set():
                return
            me = asyncio.current_task()
            assert me is not None
            self._downloading.add(me)
            try:
                size, sha = await self.client.download(job.result_url, final)
            except asyncio.CancelledError:
                if self.stop.is_set():
                    return  # stopped: the temp file is gone, the job stays `completed`
                raise
            except DownloadError as e:
                if e.code in _GONE and not repolled:
                    # Expired or removed: the task may serve a fresh URL (sync_upstream asks
                    # the API to refresh it from the provider). One look, then it is lost.
                    repolled = True
                    fresh = await self._fresh_url(job)
                    if fresh is None:  # the API did not answer: not a verdict on the result
                        self.unfinished = True
                        self.log(f"job {job.name}: its result URL answered {e} and the API could not be asked "
                                 "for a fresh one; left for the next run")
                        return
                    if fresh:
                        continue
                    await self._result_lost(job, f"the result URL answered {e}")
                    return
                if e.permanent:
                    await self._fail(job, e.code, str(e), detail="download: " + str(e))
                    return
                if e.code == "disk_error":
                    # A full or read-only disk does not heal within a backoff, and every new
                    # task would be paid for with nowhere to put it: stop submitting, keep the
                    # result `completed` (URL valid 24 h) for the next run.
                    self._stop_submitting(f"cannot write to the output folder ({e}); submission stopped",
                                          unfinished=True)
                    return
                self.log(f"job {job.name}: download attempt {attempt + 1} failed: {e}")
                if await self._sleep(backoff(attempt + 1, self.opts.retry_base, 30.0)):
                    return
                continue
            finally:
                self._downloading.discard(me)
            crash.point("after_rename_before_record")
            self.w.record(Transition(job.id, S.DONE, (S.COMPLETED,), {
                "output_path": str(final), "sha256": sha, "bytes": size, "done_at": time.time(),
                "error_code": None, "error_message": None}, detail=f"{size} bytes sha256={sha[:16]}"))
            self._move(job, S.DONE)
            job.sha256 = sha
            if self.opts.verify:
                self._start_verify(job, final)
            else:
                self._start_delivery(job, final)
            return
        self.unfinished = True
        self.log(f"job {job.name}: download still failing; left for the next run (URL valid 24 h)")

    # -------------------------------------------------------------- verification
    def _start_verify(self, job: LiveJob, final: Path) -> None:
        """Inspect the clip off the event loop; neither submitting nor polling waits for it."""
        self._track(self._verifying, self._verify(job, final), f"verify-{job.id}")

    async def _verify(self, job: LiveJob, final: Path) -> None:
        crash.point("before_verify")  # the file is in place and recorded, its verdict not yet
        if self._media_pool is None:
            self._media_pool = media.pool()
        poster, sheet = media.picture_paths(str(final), job.output) if self.opts.pictures else (None, None)
        try:
            measured = await asyncio.get_running_loop().run_in_executor(
                self._media_pool, media.inspect, str(final), poster, sheet)
        except (BrokenProcessPool, OSError, RuntimeError) as e:  # left unverified: the next run retries
            self.log(f"job {job.name}: could not verify {final.name} ({e}); the next run will")
            return
        outcome, diffs = media.compare(measured, job.request, job.model, self.opts.catalog)
        self.verified[outcome] += 1
        values = media.record(measured, outcome, diffs)
        job.poster, job.sheet = measured["poster"], measured["sheet"]
        if outcome == media.OK:
            self.w.record(Transition(job.id, S.DONE, (S.DONE,), values, event=False))
            self._start_delivery(job, final)
            return
        self.log(f"job {job.name} ({job.short}): {outcome}: {'; '.join(diffs)}")
        if self.opts.on_mismatch == "fail":
            await self._fail(job, f"verify_{outcome}", f"the delivered clip is {outcome}: {'; '.join(diffs)}",
                             detail=f"verification: {outcome}", retryable=True, values=values)
        else:
            self.w.record(Transition(job.id, S.DONE, (S.DONE,), values, detail=f"verification: {outcome}"))
            self._start_delivery(job, final)  # kept and flagged: delivered too, the ledger says what it is

    # -------------------------------------------------------------- delivery
    def _start_delivery(self, job: LiveJob, final: Path) -> None:
        """Upload a finished clip off the event loop (a few at a time); nothing waits for it
        but the end of the run."""
        if self.opts.deliver is None or job.id in self._delivery_started:
            return  # (the start-of-run sweep and a verification finishing meanwhile may both ask)
        self._delivery_started.add(job.id)
        if self.delivery_broken:
            self._not_delivered(job, f"not attempted: {self.delivery_broken}")
            return
        self._track(self._delivering, self._deliver(job, final), f"deliver-{job.id}")

    def _not_delivered(self, job: LiveJob, why: str) -> None:
        """Left for the next run (which delivers from the local file); the reason is recorded."""
        self.undelivered += 1
        self.w.record(Transition(job.id, S.DONE, (S.DONE,), {"delivery_error": why[:1000]}, event=False))

    async def _deliver(self, job: LiveJob, final: Path) -> None:
        store = self.opts.deliver
        assert store is not None
        async with self._deliver_slots:
            if self.delivery_broken:
                self._not_delivered(job, f"not attempted: {self.delivery_broken}")
                return
            if job.sha256 is None:
                self._not_delivered(job, "no sha256 recorded for the file")
                return
            if self._deliver_pool is None:
                self._deliver_pool = ThreadPoolExecutor(max(1, self.opts.deliver_threads), thread_name_prefix="deliver")
            try:
                stored = await asyncio.get_running_loop().run_in_executor(
                    self._deliver_pool, deliver.deliver_clip, store, job.output, final, job.sha256,
                    (job.poster, job.sheet), lambda why: self.log(f"job {job.name}: picture not delivered: {why}"))
            except (DeliveryError, OSError) as e:
                why = str(e) if isinstance(e, DeliveryError) else f"cannot read {final}: {e}"
                self._not_delivered(job, why)
                if isinstance(e, DeliveryError) and e.fatal:
                    if not self.delivery_broken:
                        self.delivery_broken = why
                        self.log(f"{why}; no more clips are delivered by this run (they stay under "
                                 f"{self.opts.out_dir}; the next run delivers them)")
                else:
                    self.log(f"job {job.name}: not delivered: {why}")
                return
            crash.point("after_upload_before_record")
            # Awaited: a pruned local file must never be the only record of an undelivered clip.
            recorded = await self.w.apply(Transition(job.id, S.DONE, (S.DONE,), deliver.recorded(stored),
                                                     detail=deliver.recorded_detail(stored)))
            self.delivered += 1
            if self.opts.prune_local and recorded:
                await self._prune_delivered(job, final)

    async def _prune_delivered(self, job: LiveJob, final: Path) -> None:
        """Remove the local copy of a clip whose delivery is recorded (``--prune-local``)."""
        crash.point("before_prune")
        await asyncio.to_thread(deliver.prune_local, final, job.poster, job.sheet)
        self.w.record(Transition(job.id, S.DONE, (S.DONE,), {"pruned_at": time.time()},
                                 detail="local copy removed after delivery"))

    async def _fresh_url(self, job: LiveJob) -> bool | None:
        """Re-poll a completed task once; True when it now serves another result URL, None when
        the API could not be asked (unreachable, throttled, misconfigured: no verdict)."""
        assert job.task_id is not None
        await self.budget.acquire()
        try:
            info = await self.client.get_task(job.task_id, sync_upstream=True)
        except ApiError as e:
            if e.klass is ErrorClass.CONFIG:
                self._config_refused(e, "polling")
            if e.klass is ErrorClass.FATAL_RUN:
                self._key_refused(e, "polling")
            return False if e.klass is ErrorClass.FATAL else None
        self.polls += 1
        if info.status == "completed" and info.urls and info.urls[0] != job.result_url:
            job.result_url, job.result_at = info.urls[0], time.time()
            return True
        return False

    async def _result_lost(self, job: LiveJob, why: str) -> None:
        """A paid result that can no longer be fetched: failed, but retryable — `run
        --retry-failed` renders it again as a new paid task."""
        await self._fail(job, "result_expired", f"{why}; the paid result is lost — `batchgen run --retry-failed` "
                         "renders it again (a new paid task)", detail="download: " + why, retryable=True)


def with_skipped_done(counts: dict[str, int], total: int) -> dict[str, int]:
    """The upsert leaves jobs that were already done in their earlier run (see Ledger._upsert):
    every job of the manifest not counted in this run is one of them."""
    skipped = total - sum(counts.values())
    if skipped > 0:
        counts = {**counts, S.DONE: counts.get(S.DONE, 0) + skipped}
    return counts


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
