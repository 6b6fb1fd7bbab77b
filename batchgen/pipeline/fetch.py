"""The fetch stage: a completed task's result is downloaded into ``--out`` and recorded ``done``.

It owns the downloads: their own bounded pool (a semaphore, apart from the render slots, so the
next task starts while this one downloads), the tasks in progress (cancelled on a stop: the temp
file goes, the job stays ``completed`` for the next run), the retry policy (jittered backoff,
``--download-retries``, then left for the next run: the URL lives 24 h), the result's expiry,
and the refetch: a URL answering gone gets one fresh URL from the poll stage, then the paid
result is lost (failed, retryable). A full or read-only disk stops submission.

Hands a done clip on through ``Handoff`` (to the check stage, or to delivery without
verification). May not touch: creates, polls (it asks the poll stage for a fresh URL through
``Refresh``), verification, delivery. States move only through ``moves``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from .. import crash
from ..budget import backoff
from ..errors import DownloadError
from ..files import OutputDir
from ..jobs import RESULT_TTL
from .context import Context
from .moves import Handoff, LiveJob

# Download answers meaning the result is gone (expired link, removed file).
_GONE = frozenset({"download_http_403", "download_http_404", "download_http_410"})
# Asks for a fresh result URL: True (got one), False (none: the result is lost), None (no verdict).
Refresh = Callable[[LiveJob], Awaitable[bool | None]]


class Fetcher:
    """Downloads finished results, a bounded number at a time."""

    def __init__(self, ctx: Context, refresh: Refresh, handoff: Handoff) -> None:
        self.ctx = ctx
        self.refresh = refresh
        self.handoff = handoff
        self._slots = asyncio.Semaphore(max(4, ctx.opts.concurrency))
        self._out = OutputDir(ctx.opts.out_dir)
        self._downloading: set[asyncio.Task[object]] = set()

    async def fetch(self, job: LiveJob) -> None:
        async with self._slots:  # downloads in their own bounded pool
            await self._download(job)

    def cancel(self) -> set[asyncio.Task[object]]:
        """Cancel the downloads in progress (their temp files are removed; the jobs stay
        ``completed`` for the next run). Returns them, to wait for."""
        tasks = set(self._downloading)
        for task in tasks:
            task.cancel()
        return tasks

    async def _download(self, job: LiveJob) -> None:
        ctx, opts = self.ctx, self.ctx.opts
        assert job.result_url is not None
        try:
            final = self._out.path(job.output)
        except ValueError as e:
            await ctx.moves.failed(job, "bad_output_path", str(e), detail="download: " + str(e))
            return
        repolled = False
        for attempt in range(opts.download_retries):
            if job.result_at is not None and time.time() - job.result_at > RESULT_TTL:
                await self._result_lost(job, "the result URL is older than 24 h")
                return
            if ctx.stop.is_set():
                return
            me = asyncio.current_task()
            assert me is not None
            self._downloading.add(me)
            try:
                size, sha = await ctx.client.download(job.result_url, final)
            except asyncio.CancelledError:
                if ctx.stop.is_set():
                    return  # stopped: the temp file is gone, the job stays `completed`
                raise
            except DownloadError as e:
                if e.code in _GONE and not repolled:
                    # Expired or removed: the task may serve a fresh URL (sync_upstream asks
                    # the API to refresh it from the provider). One look, then it is lost.
                    repolled = True
                    fresh = await self.refresh(job)
                    if fresh is None:  # the API did not answer: not a verdict on the result
                        ctx.unfinished = True
                        ctx.log(f"job {job.name}: its result URL answered {e} and the API could not be asked "
                                "for a fresh one; left for the next run")
                        return
                    if fresh:
                        continue
                    await self._result_lost(job, f"the result URL answered {e}")
                    return
                if e.permanent:
                    await ctx.moves.failed(job, e.code, str(e), detail="download: " + str(e))
                    return
                if e.code == "disk_error":
                    # A full or read-only disk does not heal within a backoff, and every new
                    # task would be paid for with nowhere to put it: stop submitting, keep the
                    # result `completed` (URL valid 24 h) for the next run.
                    ctx.stop_submitting(f"cannot write to the output folder ({e}); submission stopped",
                                        unfinished=True)
                    return
                ctx.log(f"job {job.name}: download attempt {attempt + 1} failed: {e}")
                if await ctx.sleep(backoff(attempt + 1, opts.retry_base, 30.0)):
                    return
                continue
            finally:
                self._downloading.discard(me)
            crash.point("after_rename_before_record")
            ctx.moves.done(job, final, size, sha)
            self.handoff(job, final)
            return
        ctx.unfinished = True
        ctx.log(f"job {job.name}: download still failing; left for the next run (URL valid 24 h)")

    async def _result_lost(self, job: LiveJob, why: str) -> None:
        """A paid result that can no longer be fetched: failed, but retryable — `run
        --retry-failed` renders it again as a new paid task."""
        await self.ctx.moves.failed(job, "result_expired", f"{why}; the paid result is lost — `batchgen run "
                                    "--retry-failed` renders it again (a new paid task)",
                                    detail="download: " + why, retryable=True)
