"""What every stage of a run shares: the options, the watched API, the request budget, the
ledger door, the stop event, and the run-wide verdicts.

``RunOptions`` is a run's configuration. ``ApiWatch`` is the ``Api`` the stages call: the real
one, watched for an outage (the conductor decides what an outage means). ``Context`` carries
the shared services and the verdicts any stage may reach: stop submitting (and why), a run-wide
refusal (401 → exit 6, an unusable configuration → exit 2, 402 → exit 5), something left for
the next run (``unfinished``), and the stop-aware sleep every retry uses.

May not touch: a job's state (``moves``), any stage's pool or counters, the feed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import deliver
from ..budget import RequestBudget
from ..client import Api, TaskInfo
from ..cost import PriceTable
from ..errors import EXIT_KEY_REFUSED, EXIT_NO_FUNDS, EXIT_USAGE, ApiError
from ..jobs import DEFAULT_MAX_ATTEMPTS, JobRow
from ..ledger import Writer
from ..specs import Catalog
from .moves import LiveJob, Moves


@dataclass
class RunOptions:
    out_dir: Path
    concurrency: int = 8  # jobs in flight (from create until downloaded)
    rpm: float | None = 60.0  # API requests per minute (creates + polls); with rpm_auto, a ceiling or None
    rpm_auto: bool = False  # learn the API's rate limit from its answers (ratelearn.RateControl)
    poll_min: float = 2.0
    poll_max: float = 60.0
    task_timeout: float = 2 * 3600.0  # stop polling a task after this (its id stays recorded)
    submit_retries: int = 8  # SAFE create failures before a job is left queued for the next run
    download_retries: int = 6
    poll_404_grace: float = 60.0
    retry_base: float = 1.0  # seconds: base of the jittered exponential backoff of create/download retries
    retry_failed: bool = False
    max_attempts: int = DEFAULT_MAX_ATTEMPTS  # creates per job, for --retry-failed
    breaker: bool = True  # a breaker per model (breaker.py)
    breaker_cooloff: float = 300.0  # seconds an open breaker waits before its probe
    render_retries: int = 0  # a task the provider failed for a retryable reason: created again tonight, N times
    max_credits: float | None = None  # stop submitting before this run's estimated spend passes it
    prices: PriceTable = field(default_factory=PriceTable.load)
    stop_check_every: float = 2.0  # seconds between looks at the ledger's stop flag
    local_files: dict[str, Path] = field(default_factory=dict)  # sha256 → path, from the manifest
    upload_reuse: float = 6 * 3600.0  # reuse an uploaded file's URL for this long
    heartbeat: float = 5.0  # cooperative (PostgreSQL) ledgers: seconds between lease renewals
    lease: float = 30.0  # a worker silent this long is dead: its jobs are taken over
    outage_window: float = 180.0  # no answer from the API for this long: stop, keep task ids for the next run
    api: str = ""  # identity of the API tasks are created on (runner.api_identity), recorded per job
    verify: bool = True  # inspect every delivered clip (media.py) in a worker process
    on_mismatch: str = "keep"  # keep (and flag) | fail (retryable: --retry-failed renders it again)
    pictures: bool = True  # a poster frame and a contact sheet per clip, under <out>/.batchgen/
    deliver: deliver.Store | None = None  # upload each finished clip (and its pictures) there
    # Where this manifest's clips are owed (recorded per job): the store's destination, or the
    # manifest's `deliver:` on a --no-deliver night (delivered by a later run or `batchgen deliver`).
    deliver_owed: str | None = None
    # `--deliver-only approved`: a clip is delivered only once a reviewer approved it (never the
    # night it renders: it waits for review; `batchgen deliver` or the next run delivers it).
    deliver_only: str | None = None
    deliver_threads: int = 4  # uploads in flight
    prune_local: bool = False  # remove the local clip (and its pictures) once it is delivered
    metrics_file: Path | None = None  # Prometheus textfile, rewritten every metrics_every seconds
    metrics_every: float = 30.0
    catalog: Catalog | None = None  # the manifest's model catalog (verification); None: the shipped one
    limits: dict[str, int] = field(default_factory=dict)  # model → tasks in flight at most (limits.py)
    # run --finish-by (deadline.py): epoch seconds by which every clip started must be in place;
    # a job that cannot be is not started (it stays queued for the next night). None: no deadline.
    finish_by: float | None = None
    finish_by_source: str = "--finish-by"  # who set it: --finish-by, or the manifest's `finish_by:`


@dataclass
class Outage:
    """The API unreachable: since the first request that got no answer, up to the latest."""

    since: float
    latest: float
    cause: str


class ApiWatch(Api):
    """The ``Api`` the scheduler uses: the real one, watched. Any HTTP answer (even an error)
    means the API is there; a request that got no answer at all (refused, DNS, TLS, timeout)
    starts an outage, or continues one. ``outage`` is the first and the latest unanswered
    request while nothing answers.

    How long the API has been silent is measured between failed requests (``silent_for``), never
    by the clock alone: a process that was paused or starved of CPU after one failure (a
    suspended laptop, a loaded machine, SIGSTOP) has not seen the API fail for that time, and
    must try again before it calls an outage."""

    def __init__(self, inner: Api, on_outage: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.on_outage = on_outage
        self.clock = clock
        self.outage: Outage | None = None

    def silent_for(self) -> float:
        """Seconds from the first to the latest request that got no answer (0 while answers come)."""
        return 0.0 if self.outage is None else self.outage.latest - self.outage.since

    def _saw(self, e: ApiError | None) -> None:
        if e is None or e.unreachable is None:
            self.outage = None
            return
        now = self.clock()
        if self.outage is None:
            self.outage = Outage(now, now, e.unreachable)
            self.on_outage(e.unreachable)
        else:
            self.outage.latest, self.outage.cause = now, e.unreachable

    async def create(self, request: dict[str, Any]) -> TaskInfo:
        try:
            info = await self.inner.create(request)
        except ApiError as e:
            self._saw(e)
            raise
        self._saw(None)
        return info

    async def get_task(self, task_id: str, *, sync_upstream: bool = False) -> TaskInfo:
        try:
            info = await self.inner.get_task(task_id, sync_upstream=sync_upstream)
        except ApiError as e:
            self._saw(e)
            raise
        self._saw(None)
        return info

    async def upload(self, path: Path, file_name: str) -> str:
        try:
            url = await self.inner.upload(path, file_name)
        except ApiError as e:
            self._saw(e)
            raise
        self._saw(None)
        return url

    async def download(self, url: str, final: Path) -> tuple[int, str]:
        return await self.inner.download(url, final)  # the CDN, not the API: says nothing of its health


class Context:
    """The services and verdicts the stages share (one per run)."""

    def __init__(self, writer: Writer, client: ApiWatch, opts: RunOptions, stop: asyncio.Event,
                 log: Callable[[str], None]) -> None:
        self.w = writer
        self.client = client
        self.opts = opts
        self.stop = stop
        self.log = log
        self.budget = RequestBudget(opts.rpm, auto=opts.rpm_auto)
        self.moves = Moves(writer, opts.api)
        self.credits_seen = 0.0
        self.reason: str | None = None
        self.no_submit = False  # no new creates (402, 401, credit cap, ledger failure)
        self.halt_code: int | None = None  # exit code of a run-wide refusal (402, 401)
        self.unfinished = False  # something was left for the next run (retries exhausted, timeout)
        self._sleepers: set[asyncio.Future[None]] = set()
        self._on_no_submit: list[Callable[[], None]] = []

    def on_no_submit(self, wake: Callable[[], None]) -> None:
        """Called whenever submission is stopped for a reason (e.g. to wake jobs waiting for credit)."""
        self._on_no_submit.append(wake)

    @property
    def submitting(self) -> bool:
        """New creates are still allowed."""
        return not (self.stop.is_set() or self.no_submit)

    # -------------------------------------------------------------- verdicts
    def stop_submitting(self, reason: str, *, unfinished: bool = False) -> None:
        """No new creates from now on; tasks in flight are still collected. The first reason is
        the one reported."""
        self.unfinished = self.unfinished or unfinished
        if self.no_submit:
            return
        self.no_submit = True
        self.reason = reason
        self.log(reason)
        for wake in self._on_no_submit:
            wake()

    def key_refused(self, e: ApiError, while_: str) -> None:
        """401: nothing can succeed with this key, so the whole run stops (exit 6)."""
        self._halt(EXIT_KEY_REFUSED, f"API key refused while {while_} ({e}); stopping")

    def config_refused(self, e: ApiError, while_: str) -> None:
        """The configuration cannot work (a request URL aiohttp refuses: a bad --api-base): no
        request was sent and none can be, so the run stops (exit 2) and every job stays where it
        is — queued, or polled again by the next run. Never a job failure: the next run with the
        right configuration just goes on."""
        self._halt(EXIT_USAGE, f"the API cannot be used as configured while {while_}: {e} — check --api-base; stopping")

    def _halt(self, code: int, reason: str) -> None:
        """A run-wide refusal: no more creates, the run stops with ``code`` (said once per code)."""
        if self.halt_code == code:
            return
        self.no_submit = True
        self.halt_code = code
        self.reason = reason
        self.log(self.reason)
        self.stop.set()

    def no_funds(self) -> None:
        """402: no new creates (in-flight tasks are still polled); exit 5 unless a refusal came first."""
        if self.halt_code is None:
            self.no_submit = True
            self.halt_code = EXIT_NO_FUNDS
            self.reason = "insufficient balance (HTTP 402): submission stopped; in-flight tasks are still polled"
            self.log(self.reason)

    def refused(self, job: LiveJob, e: ApiError) -> None:
        """A request the API turned away without doing anything: a 429 slows every caller down
        (Retry-After honoured), and this job waits at least its Retry-After before trying again."""
        if e.status == 429:
            self.budget.throttle(e.retry_after)
        job.retry_after = e.retry_after

    def saw_credits(self, job: LiveJob, credits: float | None) -> None:
        if credits is not None:
            self.credits_seen = round(self.credits_seen + credits - job.credits, 9)  # no float noise in sums
            job.credits = credits

    # -------------------------------------------------------------- waiting
    async def sleep(self, seconds: float) -> bool:
        """Sleep unless stopped (``wake_sleepers`` ends every sleep at once). True when stopped."""
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

    def wake_sleepers(self) -> None:
        for fut in list(self._sleepers):
            _resolve(fut)


def track(tasks: set[asyncio.Task[None]], coro: Coroutine[object, object, None], name: str | None = None) -> None:
    """Run ``coro`` as a task held in ``tasks`` until it ends (the end of the run waits for them)."""
    t = asyncio.create_task(coro, name=name)
    tasks.add(t)
    t.add_done_callback(tasks.discard)


SWEEP_PAGE = 500  # rows a start-of-run sweep reads at a time, and the tasks it lets run at once


async def sweep_pages(w: Writer, read: Callable[..., list[JobRow]], *args: object,
                      tasks: set[asyncio.Task[None]], **kw: object) -> AsyncIterator[list[JobRow]]:
    """The rows of a ledger read (``after_id``/``limit`` paged), one page at a time, each asked
    for only once ``tasks`` (what the sweep started) has room for it: a sweep over a million
    clips holds a page and a bounded number of tasks, never the million."""
    after = 0
    while True:
        while len(tasks) >= SWEEP_PAGE:
            await asyncio.wait(set(tasks), return_when=asyncio.FIRST_COMPLETED)
        rows = await w.read(read, *args, after_id=after, limit=SWEEP_PAGE, **kw)
        if not rows:
            return
        yield rows
        after = rows[-1]["id"]


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
