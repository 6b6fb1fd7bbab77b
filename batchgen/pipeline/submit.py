"""The submit stage: a queued job becomes a task at the provider, or stays queued, in doubt or
failed.

It owns the credit cap (``--max-credits``: a reservation per create, settled by its answer; on a
PostgreSQL fleet also reserved in the ledger against every worker's creates together),
the uploads of local inputs (one per content, shared by concurrent jobs, reused while fresh),
the create's retry policy (SAFE failures back off, honouring Retry-After, ``--submit-retries``
times, then the job is left queued for the next run) and the classification of a create's
failure (ambiguous → in doubt, never resubmitted; fatal → failed; the rest → back to the queue).
Invariant 1 lives here: the intent is awaited before the POST, the task id recorded right after,
and a stop never separates a create from the record of its outcome (``asyncio.shield``).

May not touch: polls, downloads, verification, delivery, render slots. States move only
through ``moves``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any, Literal

from .. import crash, logs
from ..budget import CreditCap, Need, backoff
from ..errors import ApiError, ErrorClass, LedgerError
from ..jobs import JobState, plain, short_key
from ..specs import UPLOAD_PREFIX
from .context import Context
from .moves import LiveJob, Values

S = JobState
# What one create attempt came to (see Submitter._attempt).
CreateOutcome = Literal["submitted", "in_doubt", "failed", "retry", "stopped", "gone"]
# What arming a job ahead of its render slot came to (see Submitter.arm).
ArmOutcome = Literal["armed", "not armed", "gone"]



class Submitter:
    """Creates tasks for queued jobs, within the credit cap."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.cap = CreditCap(ctx.opts.max_credits)  # estimated credits of the creates this run sent
        self._uploads: dict[str, asyncio.Future[str]] = {}
        ctx.on_no_submit(self.cap.wake)

    @property
    def committed_credits(self) -> float:
        """Estimated credits of this run's creates (sent, and reserved by creates on their way)."""
        return round(self.cap.spent + self.cap.reserved, 9)

    async def submit(self, job: LiveJob) -> bool:
        """Create ``job``'s task. True when it was created (the job is ``submitted``). An armed
        job (``arm``) has its intent durable already: its create goes once its credit fits."""
        ctx, opts = self.ctx, self.ctx.opts
        for attempt in range(opts.submit_retries):
            if ctx.w.error is not None:
                ctx.stop_submitting(f"the ledger cannot be written ({ctx.w.error}); submission stopped")
            if not ctx.submitting:
                if job.armed is not None:
                    await self._take_back(job)
                return False
            est = opts.prices.estimate(job.request) or 0.0
            # Reserved before any await, so concurrent jobs see it; a job that does not fit
            # waits for the creates still holding reservations to be answered (see CreditCap).
            # An armed job reserves here too, never while it waits ahead of its slot: a
            # reservation held there could keep the job in the slot from ever fitting.
            admitted = await self.cap.reserve(est, lambda: not ctx.submitting)
            if not admitted and job.armed is not None:
                await self._take_back(job)  # never sent: back to the queue
            if admitted is None:
                return False
            if not admitted:
                ctx.stop_submitting(f"credit cap reached: {plain(self.cap.spent)} estimated for this run's "
                                    f"creates, the next ({plain(est)}) would pass --max-credits "
                                    f"{plain(opts.max_credits)}", unfinished=True)
                return False
            if not await self._fleet_admits(est):
                self.cap.settle(est, spent=False)
                ctx.stop_submitting(f"credit cap reached: the estimate of the fleet's creates (every worker of "
                                    f"this manifest), with the next ({plain(est)}), would pass --max-credits "
                                    f"{plain(opts.max_credits)}", unfinished=True)
                return False
            try:
                outcome = await (self._send_armed(job) if job.armed is not None else self._attempt(job))
            finally:  # spent once a task exists or may exist (sent, in doubt, or cancelled mid-create)
                spent = job.state not in (S.QUEUED, S.FAILED)
                self.cap.settle(est, spent=spent)
                if not spent and self._fleet_capped and ctx.w.owner is not None:
                    await ctx.w.read(ctx.w.ledger.return_credits, ctx.w.owner, est)
            if outcome != "retry":
                return outcome == "submitted"
            await ctx.sleep(max(job.retry_after or 0.0, backoff(attempt, opts.retry_base, 60.0)))
        ctx.unfinished = True
        job.given_up = True
        ctx.log(f"job {job.name} ({job.short}): create kept failing; left queued for the next run")
        return False

    @property
    def _fleet_capped(self) -> bool:
        """A cooperative ledger with --max-credits: the cap is the fleet's (ledger.reserve_credits)."""
        return self.ctx.w.owner is not None and self.ctx.opts.max_credits is not None

    async def _fleet_admits(self, est: float) -> bool:
        """On a fleet, the create's estimate reserved against the cap for every worker of the
        manifest together (this run's own reservation, above, keeps its order and waits)."""
        ctx = self.ctx
        if not self._fleet_capped:
            return True
        assert ctx.w.owner is not None and ctx.opts.max_credits is not None
        return await ctx.w.read(ctx.w.ledger.reserve_credits, ctx.w.owner, est, ctx.opts.max_credits)

    # -------------------------------------------------------------- intents ahead of their slot
    async def arm(self, job: LiveJob) -> ArmOutcome:
        """What a create needs before its POST, done while every render slot is still busy: the
        uploads in place and the intent durable (invariant 1 holds: the POST still comes after
        the intent). A freed slot then costs no commit before its create reaches the API (issue
        31 part 4). Its credit is reserved when it is sent, like any create's. Anything unusual
        (a cap close to its end, an upload refused, a ledger that cannot be written) is left to
        ``submit``: "not armed", the job stays queued and takes the usual path. "gone": someone
        else moved the job."""
        ctx = self.ctx
        if ctx.w.error is not None or not ctx.submitting:
            return "not armed"
        if not self.cap.fits(2 * (ctx.opts.prices.estimate(job.request) or 0.0)):
            return "not armed"  # the cap is near: its jobs take the usual path, which says when it is reached
        try:
            request = await self._materialise(job.request)
        except ApiError:
            return "not armed"
        if not ctx.submitting:
            return "not armed"
        crash.point("before_intent")
        if not await ctx.moves.intent(job, ahead=True):
            return "gone"
        crash.point("after_intent")
        crash.point("armed")  # an intent durable ahead of its slot: on a restart it is in doubt
        job.armed = request
        return "armed"

    async def disarm(self, job: LiveJob) -> None:
        """An armed job that will not be sent (the run stops submitting, its model may not start
        now): back to the queue."""
        await self._take_back(job)

    async def _take_back(self, job: LiveJob) -> None:
        try:
            await self.ctx.moves.disarmed(job)
        except LedgerError as e:  # stays `submitting`: in doubt on the next start (fails closed)
            job.armed = None
            self.ctx.log(f"job {job.name} ({job.short}): its intent, written ahead and never sent, could not "
                         f"be taken back ({e}); the next run will hold it in doubt — nothing was sent")

    async def _send_armed(self, job: LiveJob) -> CreateOutcome:
        ctx = self.ctx
        request = job.armed
        assert request is not None
        await ctx.budget.acquire(Need.CREATE)
        if not ctx.submitting:
            await self._take_back(job)
            return "gone"
        job.armed = None
        # Shielded: a stop request must never separate a create from the record of its outcome.
        return await asyncio.shield(self._create_and_record(job, request))

    async def _attempt(self, job: LiveJob) -> CreateOutcome:
        ctx = self.ctx
        try:
            request = await self._materialise(job.request)
        except ApiError as e:
            if e.klass is ErrorClass.FATAL:  # e.g. 413: this input cannot be uploaded
                await ctx.moves.failed(job, e.code, str(e), detail="upload refused")
                return "failed"
            if e.klass is ErrorClass.FATAL_RUN:
                ctx.key_refused(e, "uploading")
                return "stopped"
            if e.klass is ErrorClass.CONFIG:
                ctx.config_refused(e, "uploading")
                return "stopped"
            ctx.refused(job, e)
            return "retry"
        await ctx.budget.acquire(Need.CREATE)
        if not ctx.submitting:
            return "gone"
        crash.point("before_intent")
        # Invariant 1: the intent is durable before any byte of the create is sent.
        if not await ctx.moves.intent(job):
            return "gone"  # moved by someone else (e.g. cancelled)
        crash.point("after_intent")
        # Shielded: a stop request must never separate a create from the record of its outcome.
        return await asyncio.shield(self._create_and_record(job, request))

    # -------------------------------------------------------------- uploads
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
        ctx = self.ctx
        url = await ctx.w.call(ctx.w.ledger.upload_url, sha, time.time() - ctx.opts.upload_reuse)
        if url:
            return url
        path = ctx.opts.local_files.get(sha)
        if path is None:
            raise ApiError(ErrorClass.FATAL, f"local input {short_key(sha)} is not in the current manifest",
                           code="input_missing")
        await ctx.budget.acquire(Need.CREATE)
        url = await ctx.client.upload(path, path.name)
        await ctx.w.call(ctx.w.ledger.record_upload, sha, str(path), path.stat().st_size, url)
        logs.log.info(f"uploaded {path.name} ({short_key(sha)})")
        return url

    # -------------------------------------------------------------- the create
    async def _create_and_record(self, job: LiveJob, request: dict[str, Any]) -> CreateOutcome:
        sent = time.time()
        try:
            info = await self.ctx.client.create(request)
        except ApiError as e:
            return await self._create_failed(job, e)
        job.task_id = info.task_id
        job.create_sent, job.submitted_at = sent, time.time()
        # A new task: what the job's earlier task reserved (a render retry, --retry-failed) was
        # counted already; the summary's credits are every task's, not the latest minus the last.
        job.credits = 0.0
        self.ctx.saw_credits(job, info.credits)
        job.estimated_time = info.estimated_time
        fut = self.ctx.moves.submitted(job, info)
        fut.add_done_callback(functools.partial(self._task_recorded, job=job, task_id=info.task_id))
        return "submitted"

    def _task_recorded(self, fut: asyncio.Future[bool], *, job: LiveJob, task_id: str) -> None:
        exc = None if fut.cancelled() else fut.exception()
        if exc is None and fut.result():
            crash.point("after_record")  # the task id is durable
            return
        # The task exists and is paid for: make sure a human can adopt it.
        w = self.ctx.w
        w.error = w.error or exc or RuntimeError("state changed under the scheduler")
        self.ctx.log(f"job {job.name} ({job.short}) got task {task_id} but recording it failed "
                     f"({exc or 'the job changed state meanwhile'}); it will be in doubt: "
                     f"batchgen resolve {job.short} --adopt {task_id}")

    async def _create_failed(self, job: LiveJob, e: ApiError) -> CreateOutcome:
        ctx = self.ctx
        err: Values = {"error_code": e.code, "error_message": str(e)[:500]}
        if e.klass is ErrorClass.AMBIGUOUS:
            await ctx.moves.in_doubt(job, err, "ambiguous create: " + str(e)[:200])
            ctx.log(f"job {job.name} ({job.short}) is IN DOUBT: {e} — settle with `batchgen resolve`")
            return "in_doubt"
        if e.klass is ErrorClass.FATAL:
            await ctx.moves.failed(job, e.code, str(e), detail="create rejected: " + str(e))
            return "failed"
        # SAFE, NO_FUNDS, FATAL_RUN, CONFIG: the API did not create anything; back to the queue.
        await ctx.moves.requeued(job, err, "create refused: " + str(e)[:200])
        if e.klass is ErrorClass.NO_FUNDS:
            ctx.no_funds()
        elif e.klass is ErrorClass.FATAL_RUN:
            ctx.key_refused(e, "creating")
        elif e.klass is ErrorClass.CONFIG:
            ctx.config_refused(e, "creating")
        ctx.refused(job, e)
        return "retry" if e.klass is ErrorClass.SAFE else "stopped"
