"""The deliver stage: every finished clip (and its pictures) is uploaded to the ``--deliver``
object store, and the object recorded only after the store acknowledged it.

It owns the delivery: its own thread pool and semaphore (``--deliver-threads`` uploads in
flight), the deliveries in progress (the end of the run waits for them, even after a stop: they
are short and idempotent), which clips it has started (the start-of-run sweep and a
verification finishing meanwhile may both ask), this run's counts (``delivered``,
``undelivered``), **the retry policy of a clip's delivery** — each store request is retried by
the store itself (``deliver.S3Store``: botocore, 5 attempts with backoff); a clip still not
delivered is recorded with its reason (``delivery_error``), never retried within the run, and
delivered again from the local file by the next run's start-of-run ``sweep``; a destination that
refuses everything (``broken``) stops this run's deliveries — and
``--prune-local`` (the local copy goes only once the delivery is durably recorded).

May not touch: creates, polls, downloads, verification. Records go only through ``moves``.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .. import crash, deliver
from ..errors import DeliveryError
from ..ledger import Scope
from .context import Context, sweep_pages, track
from .moves import LiveJob


class Deliverer:
    """Uploads finished clips off the event loop, a few at a time."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.tasks: set[asyncio.Task[None]] = set()  # deliveries in progress
        self.delivered = 0  # clips this run delivered (or found already there)
        self.undelivered = 0  # clips this run could not deliver (left for the next run)
        self.broken: str | None = None  # the destination refused everything: why
        self._started: set[int] = set()  # job ids started and not yet delivered
        self._meanwhile: set[int] | None = None  # delivered while the sweep reads a page
        self._pool: ThreadPoolExecutor | None = None
        self._slots = asyncio.Semaphore(max(1, ctx.opts.deliver_threads))

    def start(self, job: LiveJob, final: Path, *, owed: bool = False) -> None:
        """Upload a finished clip off the event loop (a few at a time); nothing waits for it
        but the end of the run. ``owed``: the ledger says it is owed (the sweep's rows); a clip
        just rendered under `--deliver-only approved` is not (nobody approved it yet)."""
        if self.ctx.opts.deliver is None or job.id in self._started:
            return  # (the start-of-run sweep and a verification finishing meanwhile may both ask)
        if self.ctx.opts.deliver_only and not owed:
            return  # waits for review: `batchgen deliver` (or the next run) delivers it once approved
        self._started.add(job.id)
        if self.broken:
            self._not_delivered(job, f"not attempted: {self.broken}")
            return
        track(self.tasks, self._deliver(job, final), f"deliver-{job.id}")

    async def sweep(self, scope: Scope) -> None:
        """Deliver what earlier runs left undelivered (verified clips only, when verifying), and
        remove local copies a kill left behind after their delivery was recorded."""
        ctx = self.ctx
        self._meanwhile = set()
        try:
            async for page in sweep_pages(ctx.w, ctx.w.ledger.undelivered, scope, verified_only=ctx.opts.verify,
                                          tasks=self.tasks):
                for row in page:
                    if row["id"] in self._meanwhile:
                        continue  # read as owed, delivered (and forgotten) while the page was read
                    if ctx.w.owner is None or Path(row["output_path"] or "").exists():
                        self.start(LiveJob.from_row(row), Path(row["output_path"] or ""), owed=True)
                self._meanwhile.clear()  # the next page is read after this point
        finally:
            self._meanwhile = None
        if ctx.opts.prune_local:
            # Delivered and recorded, but the local copy outlived a kill before it was removed.
            for row in await ctx.w.read(ctx.w.ledger.unpruned, scope):
                await self._prune(LiveJob.from_row(row), Path(row["output_path"] or ""))

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _not_delivered(self, job: LiveJob, why: str) -> None:
        """Left for the next run (which delivers from the local file); the reason is recorded."""
        self.undelivered += 1
        self.ctx.moves.note(job, {"delivery_error": why[:1000]}, event=False)

    async def _deliver(self, job: LiveJob, final: Path) -> None:
        ctx, opts = self.ctx, self.ctx.opts
        store = opts.deliver
        assert store is not None
        async with self._slots:
            if self.broken:
                self._not_delivered(job, f"not attempted: {self.broken}")
                return
            if job.sha256 is None:
                self._not_delivered(job, "no sha256 recorded for the file")
                return
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max(1, opts.deliver_threads), thread_name_prefix="deliver")
            try:
                stored = await asyncio.get_running_loop().run_in_executor(
                    self._pool, deliver.deliver_clip, store, job.output, final, job.sha256,
                    (job.poster, job.sheet), lambda why: ctx.log(f"job {job.name}: picture not delivered: {why}"))
            except (DeliveryError, OSError) as e:
                why = str(e) if isinstance(e, DeliveryError) else f"cannot read {final}: {e}"
                self._not_delivered(job, why)
                if isinstance(e, DeliveryError) and e.fatal:
                    if not self.broken:
                        self.broken = why
                        ctx.log(f"{why}; no more clips are delivered by this run (they stay under "
                                f"{opts.out_dir}; the next run delivers them)")
                else:
                    ctx.log(f"job {job.name}: not delivered: {why}")
                return
            crash.point("after_upload_before_record")
            # Awaited: a pruned local file must never be the only record of an undelivered clip.
            recorded = await ctx.moves.note_now(job, deliver.recorded(stored), detail=deliver.recorded_detail(stored))
            self.delivered += 1
            # Recorded: no later read of what is owed returns it, so the guard against a double
            # start can forget it (a million deliveries must not leave a million ids behind).
            # A clip not delivered stays in the guard: it is retried by the next run, not this one.
            self._started.discard(job.id)
            if self._meanwhile is not None:
                self._meanwhile.add(job.id)
            if opts.prune_local and recorded:
                await self._prune(job, final)

    async def _prune(self, job: LiveJob, final: Path) -> None:
        """Remove the local copy of a clip whose delivery is recorded (``--prune-local``)."""
        crash.point("before_prune")
        await asyncio.to_thread(deliver.prune_local, final, job.poster, job.sheet)
        self.ctx.moves.note(job, {"pruned_at": time.time()}, detail="local copy removed after delivery")
