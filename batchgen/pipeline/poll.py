"""The poll stage: a task at the provider is followed until it completes, fails, or is given up
on (``--task-timeout``: the id stays recorded for the next run).

It owns the poll schedule (``pace.poll_delay`` with this run's ``PaceBook`` — what it learns
of each model's render times), the poll count, what a poll's answer means (``rendering``,
``completed`` with its result URL, failed — retryable or not — or an unknown status, still
polled), the grace of a 404 right after a create, and ``fresh_url``: the one extra poll that asks
the provider for a fresh result URL when a download found the old one gone.

May not touch: creates, files, verification, delivery. States move only through ``moves``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .pace import PaceBook, poll_delay
from ..budget import Need
from ..client import TaskInfo
from ..errors import ApiError, ErrorClass
from ..jobs import JobState
from ..ledger import RETRYABLE_TASK_CODES
from .context import Context
from .moves import LiveJob


class Poller:
    """Polls tasks on a schedule that learns, per model, how long tasks take."""

    def __init__(self, ctx: Context, expecting: Callable[[LiveJob], None] | None = None) -> None:
        self.ctx = ctx
        # Told before each poll of a task holding a render slot: the slot may free with its answer
        # (the conductor writes the next job's intent meanwhile).
        self.expecting = expecting
        self.pace = PaceBook()  # what this run learns of each model's render times
        self.polls = 0

    def _next_delay(self, job: LiveJob) -> float:
        opts = self.ctx.opts
        return poll_delay(job, time.time(), poll_min=opts.poll_min, poll_max=opts.poll_max, book=self.pace,
                          thrifty=self.ctx.budget.binding)

    async def follow(self, job: LiveJob) -> None:
        """Poll until the task is terminal (or polling it must stop)."""
        ctx = self.ctx
        assert job.task_id is not None
        while True:
            delay = self._next_delay(job)
            due = time.monotonic() + delay  # a short budget serves polls earliest-due first
            if await ctx.sleep(delay):
                return
            elapsed = time.time() - (job.submitted_at or time.time())
            if elapsed > ctx.opts.task_timeout:
                ctx.unfinished = True
                ctx.log(f"job {job.name}: task {job.task_id} unfinished after {elapsed:.0f}s; "
                        "stopped polling (the id is kept; re-run to resume)")
                return
            if self.expecting is not None and job.holds_slot:
                self.expecting(job)
            await ctx.budget.acquire(Need.POLL, due)
            stuck = job.estimated_time is not None and elapsed > max(600.0, 3 * job.estimated_time)
            sent = time.time()
            try:
                info = await ctx.client.get_task(job.task_id, sync_upstream=stuck and job.polls % 5 == 4)
            except ApiError as e:
                if await self._failed(job, e, elapsed):
                    return
                continue
            answered = time.time()
            self.polls += 1
            job.polls += 1
            job.poll_errors = 0
            if info.estimated_time is not None:
                job.estimated_time = info.estimated_time
            job.progress = info.progress
            if info.status in ("completed", "pending", "processing") and job.submitted_at is not None:
                # how long this model's tasks take
                self.pace.observe_poll(job.model, job.estimated_time, done=info.status == "completed",
                                       create=(job.create_sent or job.submitted_at, job.submitted_at),
                                       poll=(sent, answered), progress=info.progress)
            if await self._observe(job, info):
                return

    async def _failed(self, job: LiveJob, e: ApiError, elapsed: float) -> bool:
        """Returns True when polling this job must stop."""
        ctx = self.ctx
        if e.klass is ErrorClass.FATAL_RUN:
            ctx.key_refused(e, "polling")
            return True
        if e.klass is ErrorClass.CONFIG:  # the task stays recorded: the next run polls it
            ctx.config_refused(e, "polling")
            return True
        if e.klass is ErrorClass.FATAL and not (e.status == 404 and elapsed < ctx.opts.poll_404_grace):
            await ctx.moves.failed(job, "task_not_found" if e.status == 404 else e.code, str(e),
                                   detail="poll failed: " + str(e), values={"polls": job.polls})
            return True
        ctx.refused(job, e)
        job.poll_errors += 1
        return False

    async def _observe(self, job: LiveJob, info: TaskInfo) -> bool:
        """Record what a poll saw. Returns True when the task is terminal."""
        ctx = self.ctx
        base: dict[str, Any] = {"remote_status": info.status, "progress": info.progress, "polls": job.polls}
        if info.credits is not None:
            base["credits"] = info.credits
            ctx.saw_credits(job, info.credits)
        if info.status == "completed":
            if not info.urls:
                await ctx.moves.failed(job, "no_result_url", "completed without a result URL",
                                       detail="completed without results", values=base)
                return True
            job.result_url, job.result_at = info.urls[0], time.time()
            # The poll count is the row's `polls`: the event says only what the row cannot (ledger size).
            extra = f"+{len(info.urls) - 1} more URL(s) not downloaded" if len(info.urls) > 1 else None
            ctx.moves.completed(job, base, extra)
            return True
        if info.status in ("failed", "cancelled"):
            code = info.error_code or ("cancelled_remotely" if info.status == "cancelled" else "unknown_error")
            await ctx.moves.failed(job, code, info.error_message or info.status, detail=f"task {info.status}: {code}",
                                   retryable=code in RETRYABLE_TASK_CODES or info.status == "cancelled", values=base)
            return True
        if info.status not in ("pending", "processing"):
            ctx.log(f"task {job.task_id}: unknown status {info.status!r}, still polling")
        if job.state == JobState.SUBMITTED and info.status != "pending":
            ctx.moves.rendering(job, base, info.status)
        return False

    async def fresh_url(self, job: LiveJob) -> bool | None:
        """Re-poll a completed task once; True when it now serves another result URL, None when
        the API could not be asked (unreachable, throttled, misconfigured: no verdict)."""
        ctx = self.ctx
        assert job.task_id is not None
        await ctx.budget.acquire()
        try:
            info = await ctx.client.get_task(job.task_id, sync_upstream=True)
        except ApiError as e:
            if e.klass is ErrorClass.CONFIG:
                ctx.config_refused(e, "polling")
            if e.klass is ErrorClass.FATAL_RUN:
                ctx.key_refused(e, "polling")
            return False if e.klass is ErrorClass.FATAL else None
        self.polls += 1
        if info.status == "completed" and info.urls and info.urls[0] != job.result_url:
            job.result_url, job.result_at = info.urls[0], time.time()
            return True
        return False
