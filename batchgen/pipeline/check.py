"""The check stage: every done clip is read back and compared with what was asked (and gets its
poster frame and contact sheet), off the event loop.

It owns the verification: its own process pool (``media.pool()``: started by the first clip to
verify, its workers forked as the work needs them from the process's fork server, tied to the
run's life), the verifications in progress (the end of the run waits for them: a verdict belongs in
the run's summary), this run's outcome counts (``verified``), what a mismatch means
(``--on-mismatch``: kept and flagged, or failed and retryable), and the start-of-run sweep of
clips a crash (or a --no-verify night) left unverified, whose files are first checked to be the
ones recorded (sha256): a file replaced since (an edited row with the same output name, a hand
edit) is recorded ``changed``, never blessed as the job's clip. A clip that cannot be read (a broken pool, an OS error) stays
unverified: the next run (or ``batchgen verify``) checks it; this run counts it (``unverified``)
and its summary says so (exit 1). A pool that cannot even be started is said once, not per clip.

Contact sheets are drawn in a lane of their own, after the verdict (unless the clip is delivered:
its sheet goes with it, drawn in its verification): worker processes of their own, one per core,
niced below the verification's (``media.SHEET_NICE``), so that no verdict queues behind a sheet
nor waits for its CPU; oldest clip first. A
one-keyframe clip's sheet decodes most of the clip (~0.26 s of CPU for 6 s of 720p, 5x its
verification): on a night of short renders the clips come faster than that, and a sheet drawn in
the verification made the run's end wait for minutes of them. The run's end waits for the lane
at most ``PICTURES_GRACE_S``, and only when all its sheets would be drawn by then at the pace it
has kept (never after a stop); the sheets not drawn are counted (``sheets_left``) and left to
the next run or `batchgen verify --sheets-only` (``batchgen.sheets``), and the report says so per
clip. The lane also draws the sheets earlier runs of the manifest left, a page at a time from the
ledger, drawn whenever none of this run's clips is waiting for one (``SheetLane.sweep``): the
end of the run waits for those by the same rule, and stops reading more once it comes.

Hands a checked clip on through ``Handoff`` (to delivery). May not touch: creates, polls,
downloads, the object store. States and verdicts are written only through ``moves``.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import os
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from .. import crash, media
from ..ledger import Scope
from .context import SWEEP_PAGE, Context, sweep_pages, track
from .moves import Handoff, LiveJob

PICTURES_GRACE_S = 10.0  # the longest the end of a run waits for contact sheets still to draw


async def started_pool(workers: int | None = None, nice: int = media.WORKER_NICE, *, name: str) -> ProcessPoolExecutor:
    """A ``media.pool`` whose first worker has started, waited for off the event loop: a no-op
    in a thread of its own (the fork waits for the fork server; the loop's default threads may be
    busy: the simulator encodes there). If that breaks, or the run is torn down meanwhile, the
    pool is shut down and the error raised."""
    pool: ProcessPoolExecutor = media.pool(workers, nice=nice)
    starter = ThreadPoolExecutor(1, thread_name_prefix=name)
    try:
        await asyncio.shield(asyncio.wrap_future(starter.submit(lambda: pool.submit(os.getpid).result())))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        starter.shutdown(wait=False)
    return pool


class Checker:
    """Verifies done clips in worker processes; neither submitting nor polling waits for it."""

    def __init__(self, ctx: Context, handoff: Handoff) -> None:
        self.ctx = ctx
        self.handoff = handoff
        self.tasks: set[asyncio.Task[None]] = set()  # verifications in progress
        self.verified: collections.Counter[str] = collections.Counter()  # this run's outcomes
        self._pool: ProcessPoolExecutor | None = None
        self.unverified = 0  # this run's clips left unverified (their verification could not run)
        self._no_pool: str | None = None  # why the pool could not be started: said once, not per clip
        self._starting = asyncio.Lock()  # one start, however many clips arrive meanwhile
        self.lane = SheetLane(ctx)  # contact sheets, after the verdicts

    @property
    def sheets_left(self) -> int:
        return self.lane.left

    def start(self, job: LiveJob, final: Path, *, recheck: bool = False) -> None:
        """Inspect the clip off the event loop; neither submitting nor polling waits for it.
        ``recheck``: the file was written before this run, so it is first compared with the
        recorded sha256 (a file this run just downloaded was hashed on the way in)."""
        track(self.tasks, self._verify(job, final, recheck), f"verify-{job.id}")

    async def sweep(self, scope: Scope) -> None:
        """Verify the clips a crash left unverified (renamed into place, never inspected)."""
        w = self.ctx.w
        async for page in sweep_pages(w, w.ledger.unverified, scope, tasks=self.tasks):
            for row in page:
                if row["output_path"]:
                    self.start(LiveJob.from_row(row), Path(row["output_path"]), recheck=True)
        if self.ctx.opts.pictures:
            self.lane.sweep(scope)

    def shutdown(self) -> None:
        self.lane.shutdown()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    async def pictures_done(self) -> None:
        await self.lane.done()

    async def _started(self) -> ProcessPoolExecutor | None:
        """The pool, started by the first clip to verify (a run may verify none); None when it
        cannot be, said once. Its first worker is waited for off the event loop: forked from the
        fork server, which imports PyAV first (about 0.2 s once per process), while the loop goes
        on polling and downloading."""
        async with self._starting:
            if self._pool is None and self._no_pool is None:
                try:
                    self._pool = await started_pool(name="verify-pool-start")
                # Any reason (no process, no memory, a broken install): said once, and the run's end says it too.
                except Exception as e:  # noqa: BLE001
                    self._no_pool = f"{type(e).__name__}: {e}"
                    self.ctx.log(f"verification could not start its worker processes ({self._no_pool}): this run's "
                                 "clips stay unverified; the next run or `batchgen verify` checks them")
        return self._pool

    async def _verify(self, job: LiveJob, final: Path, recheck: bool) -> None:
        ctx, opts = self.ctx, self.ctx.opts
        crash.point("before_verify")  # the file is in place and recorded, its verdict not yet
        pool = await self._started()
        if pool is None:
            self.unverified += 1
            return
        poster, sheet = media.picture_paths(str(final), job.output) if opts.pictures else (None, None)
        later = sheet if opts.deliver is None else None  # a delivered clip's sheet goes with it: drawn now
        now = None if later else sheet
        look = (functools.partial(media.check_file, str(final), job.sha256, None, poster, now) if recheck
                else functools.partial(media.inspect, str(final), poster, now))
        try:
            measured = await asyncio.get_running_loop().run_in_executor(pool, look)
        except (BrokenProcessPool, OSError, RuntimeError) as e:  # left unverified: the next run retries
            ctx.log(f"job {job.name}: could not verify {final.name} ({e}); the next run will")
            self.unverified += 1
            return
        if "gone" in measured:  # not the file recorded: `batchgen recover` gets the clip back
            outcome = measured["gone"]
            self.verified[outcome] += 1
            ctx.log(f"job {job.name} ({job.short}): {outcome}: {measured['detail']}")
            ctx.moves.note(job, {"verify": outcome, "verify_detail": measured["detail"], "verified_at": time.time()},
                           detail=f"verification: {outcome}")
            return
        outcome, diffs = media.compare(measured, job.request, job.model, opts.catalog)
        self.verified[outcome] += 1
        values = media.record(measured, outcome, diffs)
        job.poster, job.sheet = measured["poster"], measured["sheet"]
        if later and (outcome == media.OK or (outcome == media.MISMATCH and opts.on_mismatch != "fail")):
            self.lane.add(job, final, later)  # a clip kept (a failed one is rendered again)
        if outcome == media.OK:
            ctx.moves.note(job, values, event=False)
            self.handoff(job, final)
            return
        ctx.log(f"job {job.name} ({job.short}): {outcome}: {'; '.join(diffs)}")
        if opts.on_mismatch == "fail":
            if ctx.w.owner is not None:  # no render retry follows: keeps no other worker waiting
                values = {**values, "worker_id": None}
            await ctx.moves.failed(job, f"verify_{outcome}", f"the delivered clip is {outcome}: {'; '.join(diffs)}",
                                   detail=f"verification: {outcome}", retryable=True, values=values)
        else:
            ctx.moves.note(job, values, detail=f"verification: {outcome}")
            self.handoff(job, final)  # kept and flagged: delivered too, the ledger says what it is


class SheetLane:
    """Contact sheets drawn after the verdicts, in worker processes of their own (one per core,
    niced below the verification's): the clips waiting, oldest first; one task per worker drawing
    them one at a time, each sheet recorded once drawn. Nothing waits for it but the end of the
    run, and that briefly (``done``)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.workers = max(1, os.cpu_count() or 1)
        self.waiting: collections.deque[tuple[LiveJob, str, str]] = collections.deque()
        self.drawing = 0  # sheets in a worker now
        self.left = 0  # sheets the end of the run did not wait for, or that no worker could draw
        self._tasks: set[asyncio.Task[None]] = set()
        self._pool: ProcessPoolExecutor | None = None
        self._broken = False  # no worker could be started: said once, every sheet after it counted as left
        self._starting = asyncio.Lock()
        self._drawn, self._seconds = 0, 0.0  # sheets drawn, and a worker's seconds for them: the pace
        # Sheets earlier runs left (``sweep``): read from the ledger a page at a time, after the
        # last id read, only when none is waiting; drawn when none of this run's waits (this
        # night's clips are the ones looked at in the morning); never read once the run's end came.
        self.earlier: collections.deque[tuple[LiveJob, str, str]] = collections.deque()
        self._scope: Scope | None = None
        self._after = 0
        self._closing = False
        self._reading = asyncio.Lock()
        # Ids of this run's clips a page still to read could return (above the pages' cursor, while
        # pages are left), so that none is drawn twice from a page read before its record; a set of
        # every clip taken grew with the night (a million verified clips: ~60 MB).
        self._seen: set[int] = set()
        self._read_all = False

    def add(self, job: LiveJob, final: Path, sheet: str) -> None:
        if not self._read_all and job.id > self._after:
            self._seen.add(job.id)
        if self._broken:
            self.left += 1
            return
        self.waiting.append((job, str(final), sheet))
        self._more_hands()

    def sweep(self, scope: Scope) -> None:
        """Draw the sheets earlier runs of this manifest left (``Ledger.sheets_left``), at the
        lane's priority: read a page at a time whenever this run's own sheets are all drawn."""
        if not self._broken and self._scope is None:
            self._scope = scope
            self._more_hands()

    def _more_hands(self) -> None:
        while len(self._tasks) < self.workers:
            task = asyncio.create_task(self._draw(), name="contact-sheets")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def done(self) -> None:
        """The end of the run: waits for the sheets still to draw at most ``PICTURES_GRACE_S``, and
        only when all of them would be drawn by then at the pace kept so far (waiting for a part
        of a backlog would delay the exit and still leave sheets to the next run); never after a
        stop. Those left are counted and said once."""
        stopping = self.ctx.stop.is_set()
        if self._scope is not None and not stopping and not self._broken:
            # Earlier runs' sheets not read yet (a run with little to do ends before its lane
            # reads them): one page more, so the rule below sees them all — or knows it does not.
            async with self._reading:
                if self._scope is not None:
                    await self._read_page()
            self._more_hands()
        everything = self._scope is None  # else more pages wait in the ledger: not all drawn in time
        self._closing = True  # no page read from now on
        if self._tasks and not stopping and everything:
            pace = self._seconds / self._drawn / self.workers if self._drawn else 0.0
            if (len(self.waiting) + len(self.earlier) + self.drawing) * pace <= PICTURES_GRACE_S:
                await asyncio.wait(set(self._tasks), timeout=PICTURES_GRACE_S)
        self.left += len(self.waiting) + len(self.earlier) + self.drawing  # one being drawn is not recorded either
        self.waiting.clear()
        self.earlier.clear()
        for task in self._tasks:
            task.cancel()
        if self.left:
            self.ctx.log(f"{self.left} contact sheet(s) not drawn: the run does not wait for pictures; "
                         "`batchgen verify --sheets-only` (or the next run) draws them")

    def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._pool is not None:
            # The workers are ended, not waited for: the interpreter's exit would wait for the
            # sheets being drawn (seconds on a loaded machine). A sheet's temp file a kill leaves
            # goes with the next run's stale temp files (``files.remove_stale_temp_files``).
            workers = list(self._pool._processes.values())
            self._pool.shutdown(wait=False, cancel_futures=True)
            for worker in workers:
                worker.kill()

    async def _started(self) -> ProcessPoolExecutor | None:
        """The pool, its first worker forked off the event loop (``started_pool``)."""
        async with self._starting:
            if self._pool is None and not self._broken:
                try:
                    self._pool = await started_pool(self.workers, media.SHEET_NICE, name="sheet-pool-start")
                except Exception as e:  # noqa: BLE001 - no worker: no sheets tonight, said once
                    self._broken = True
                    self.ctx.log(f"contact sheets could not start their workers ({type(e).__name__}: {e}); "
                                 "`batchgen verify --sheets-only` (or the next run) draws them")
        return self._pool

    async def _draw(self) -> None:
        if not self.waiting and not self.earlier and not await self._read_earlier():
            return  # nothing to draw: no worker started for it
        pool = await self._started()
        if pool is None:
            self.left += len(self.waiting) + len(self.earlier)
            self.waiting.clear()
            self.earlier.clear()
            return
        loop = asyncio.get_running_loop()
        while self.waiting or await self._read_earlier():
            job, path, sheet = (self.waiting or self.earlier).popleft()
            began = time.monotonic()
            self.drawing += 1
            try:
                made = await loop.run_in_executor(pool, media.contact_sheet, path, sheet)
            except (BrokenProcessPool, OSError, RuntimeError):  # no sheet: `batchgen verify --sheets-only` draws it
                made = None
            finally:
                self.drawing -= 1
            self._drawn += 1
            self._seconds += time.monotonic() - began
            if made:
                job.sheet = made
                self.ctx.moves.note(job, {"sheet": made}, event=False)
            else:
                self.left += 1

    async def _read_earlier(self) -> bool:
        """Whether an earlier run's sheet waits, reading pages of them into ``earlier`` until one
        holds any; False when none is left (or the run's end came)."""
        async with self._reading:
            while not self.earlier and self._scope is not None and not self._closing:
                await self._read_page()
            return bool(self.earlier or self.waiting)

    async def _read_page(self) -> None:
        """One page more of the sheets earlier runs left, into ``earlier`` (those this lane took
        already skipped); ``_scope`` None once the last page is read."""
        assert self._scope is not None
        w = self.ctx.w
        rows = await w.read(w.ledger.sheets_left, self._scope, after_id=self._after, limit=SWEEP_PAGE)
        if len(rows) < SWEEP_PAGE:
            self._scope, self._read_all = None, True
        seen = self._seen
        if rows:
            self._after = rows[-1]["id"]
        # no later page returns an id at or below the cursor, nor any once the last is read
        self._seen = set() if self._read_all else {i for i in seen if i > self._after}
        for row in rows:
            if row["id"] in seen or not row["output_path"]:
                continue
            _poster, sheet = media.picture_paths(row["output_path"], row["output"])
            if sheet is not None:
                self.earlier.append((LiveJob.from_row(row), row["output_path"], sheet))
