"""Running a manifest: the library's front door.

``run(manifest, …)`` does everything ``batchgen run`` does and returns a ``RunResult``: it opens
the ledger, validates and records the manifest (``prepare``), starts the embedded simulator when
asked, opens the HTTP client, installs the signal handlers and drives the scheduler
(``execute``). The command line is a thin layer over it; so are the benchmarks.

This module holds the program's only ``asyncio.run`` (``_sync``): everything below it is
asynchronous, everything above it is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from . import logs, metrics, notify, preflight, signals
from .client import DEFAULT_API_BASE, Api, Client, Secret, api_key_from_env
from .deliver import Destination, Store, open_store
from .errors import (
    EXIT_DELIVERY, EXIT_FAILED, EXIT_OK, EXIT_UNFINISHED, BatchgenError, ManifestError, OutputFailed, OutputRefused,
    Problem, UsageError,
)
from .files import OutputDir, remove_stale_temp_files
from .jobs import Job, JobRow, JobState, RunStatus, short_key
from .ledger import Ledger, Scope, Writer, safe_ledger_url
from .manifest import Manifest
from .progress import Display
from .scheduler import RunOptions, Scheduler, with_skipped_done
from .simulator import SimConfig, Simulator
from .specs import Catalog

T = TypeVar("T")
S = JobState
log = logs.log


@dataclass
class Prepared:
    """A run recorded in the ledger, its manifest validated, ready to execute."""

    run_id: int
    total: int
    in_doubt_found: list[JobRow]
    requeued: int
    scope: Scope = Scope("", "")  # what the manifest asks for (its jobs, whatever run recorded them)
    cooperative: bool = False  # one of several workers on a PostgreSQL ledger; run_id is its worker id
    reused_from: int | None = None  # the earlier run whose validated expansion of these same inputs was reused
    warnings: list[str] = field(default_factory=list)  # what the manifest's expansion warned about
    started_at: float = field(default_factory=time.time)

    @property
    def manifest(self) -> str:
        """The manifest's resolved path."""
        return self.scope.manifest


@dataclass
class RunResult:
    """How a run ended: per-state counts of its manifest, the jobs that need a human, why it
    stopped early (if it did) and the exit code ``batchgen run`` returns for it."""

    run_id: int
    counts: dict[str, int]
    in_doubt: list[JobRow]
    failed: list[JobRow]
    reason: str | None  # why the run stopped early, if it did
    exit_code: int
    requests: int = 0
    polls: int = 0
    throttled: int = 0
    commits: int = 0
    elapsed: float = 0.0
    credits_estimated: float = 0.0
    credits_reserved: float = 0.0  # usage.credits_reserved of the tasks this run saw
    verified: dict[str, int] = field(default_factory=dict)  # the manifest's clips per verification outcome
    not_as_asked: list[JobRow] = field(default_factory=list)  # clips verification found wrong
    delivery: dict[str, Any] = field(default_factory=dict)  # --deliver: destination, delivered, undelivered, error
    manifest: str = ""
    started_at: float = 0.0  # wall clock
    credits_at_risk: float = 0.0  # estimated credits of in-doubt jobs
    expiring: int = 0  # completed results not downloaded yet (their URL expires 24 h after completion)

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "counts": self.counts, "reason": self.reason, "exit_code": self.exit_code,
                "requests": self.requests, "polls": self.polls, "throttled": self.throttled,
                "ledger_commits": self.commits, "elapsed_s": round(self.elapsed, 3),
                "credits_estimated": round(self.credits_estimated, 4),
                "credits_reserved": round(self.credits_reserved, 4),
                "in_doubt": [{"id": j["id"], "key": j["key"], "name": j["name"], "error": j["error_code"]}
                             for j in self.in_doubt],
                "verified": self.verified,
                "not_as_asked": [{"id": j["id"], "key": j["key"], "name": j["name"], "verify": j["verify"],
                                  "detail": j["verify_detail"], "output_path": j["output_path"]}
                                 for j in self.not_as_asked],
                "failed": [{"id": j["id"], "key": j["key"], "name": j["name"], "error": j["error_code"],
                            "message": j["error_message"]} for j in self.failed],
                "manifest": self.manifest, "credits_at_risk": round(self.credits_at_risk, 4),
                "expiring": self.expiring, "delivery": self.delivery}


# ------------------------------------------------------------------------------ preparation
def prepare(ledger: Ledger, manifest: Manifest, opts: RunOptions) -> Prepared:
    """Take the single-writer lock (SQLite), expand and validate the whole manifest while
    recording the run and its jobs in one transaction (rolled back — nothing recorded — if the
    manifest has any problem), and turn jobs a dead process left mid-create into ``in_doubt``.
    On a cooperative (PostgreSQL) ledger the run is this worker: "dead process" means a worker
    whose heartbeat is stale, and only its jobs are touched. Synchronous: runs before the event
    loop starts, so no create can precede validation."""
    ledger.acquire_lock()
    ledger.close_dead_runs()
    foreign = ledger.foreign_tasks(opts.api) if opts.api else None
    if foreign is not None:
        ledger.release_lock()
        other, n = foreign
        raise UsageError(
            f"this ledger holds {n} job(s) whose tasks or files belong to another API ({_shown(other)}); a run "
            f"against {_shown(opts.api)} would take them as its own or poll task ids that do not exist there. "
            "Use another --ledger (runs with --simulate default to ./batchgen-sim.db)")
    digest = manifest.sha256()
    options = {"out": str(opts.out_dir), "concurrency": opts.concurrency, "rpm": opts.rpm}
    inputs = manifest.inputs_sha256()
    reused_from = None

    outputs = OutputChecks(manifest, opts.out_dir)

    def finish() -> dict[str, Any]:
        outputs.raise_with(manifest)
        # Reusable by a later run only if nothing but the hashed inputs shaped the jobs.
        return {} if manifest.local_files else {"inputs_sha256": inputs}

    try:
        # Resuming an unchanged manifest (the nightly retry) skips expanding and re-recording
        # 100k rows: an earlier run validated exactly these inputs and recorded their jobs.
        reused = ledger.reuse_run(str(manifest.path.resolve()), digest, inputs, options, outputs.check_all)
        if reused is not None:
            run_id, total, reused_from = reused
        else:
            jobs = (outputs.checked(job) for job in manifest.expand())
            run_id, total = ledger.record_run(str(manifest.path.resolve()), digest, options, jobs, finish)
    except BaseException:
        ledger.release_lock()
        raise
    if ledger.cooperative:
        _adopted, in_doubt = ledger.reclaim(run_id, opts.lease)  # adopted jobs are loaded by run()
    else:
        in_doubt = ledger.orphans_to_in_doubt()
    requeued = ledger.requeue_retryable_failures(run_id, opts.max_attempts) if opts.retry_failed else 0
    opts.local_files = dict(manifest.local_files)
    opts.catalog = manifest.catalog
    opts.prices.catalog = manifest.catalog
    scope = Scope(str(manifest.path.resolve()), digest)
    if opts.deliver_owed is not None:  # the manifest's clips are owed there, even on a --no-deliver night
        ledger.owe_delivery(scope, opts.deliver_owed)
    remove_stale_temp_files(opts.out_dir)
    return Prepared(run_id, total, in_doubt, requeued, scope, ledger.cooperative, reused_from,
                    list(manifest.warnings))


class OutputChecks:
    """Every clip's path resolved (symlinked folders included) inside ``--out`` before the run
    records anything, so no task is paid for a clip that could not be written where asked.
    Each distinct folder is resolved once (``OutputDir``)."""

    LIMIT = 50  # problems listed; the rest counted

    def __init__(self, manifest: Manifest, out_dir: Path) -> None:
        self.file = manifest.path.name
        self.out = OutputDir(out_dir)
        self.problems: list[Problem] = []
        self.more = 0

    def check(self, output: str, source: str) -> None:
        try:
            self.out.path(output)
        except (ValueError, RuntimeError, OSError) as e:  # escapes, a symlink loop, an unreadable folder
            if len(self.problems) < self.LIMIT:
                where = source.removeprefix(self.file + " ")  # CSV rows name their file: "shots.csv row 12"
                self.problems.append(Problem(self.file, where, "output",
                                             f"{output!r} would not land inside --out {self.out.root}: {e}"))
            else:
                self.more += 1

    def checked(self, job: Job) -> Job:
        self.check(job.output, job.source)
        return job

    def check_all(self, outputs: Iterable[tuple[str, str]]) -> None:
        for output, source in outputs:
            self.check(output, source)
        if self.problems:
            raise ManifestError(self.problems, truncated=self.more)

    def raise_with(self, manifest: Manifest) -> None:
        """The manifest's own problems and these, in one list (or nothing to say)."""
        try:
            manifest.check()
        except ManifestError as e:
            if not self.problems:
                raise
            raise ManifestError(e.problems + self.problems, truncated=e.truncated + self.more) from None
        if self.problems:
            raise ManifestError(self.problems, truncated=self.more)


# ------------------------------------------------------------------------------ execution
async def execute(ledger: Ledger, prepared: Prepared, opts: RunOptions, api: Api, stop: asyncio.Event,
                  *, log: Callable[[str], None] | None = None, display: Display | None = None) -> RunResult:
    """Run a prepared run to completion (or until stopped) against ``api`` and summarise it."""
    started = time.monotonic()
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    coop = prepared.cooperative
    async with Writer(ledger, owner=prepared.run_id if coop else None) as w:
        sched = Scheduler(w, api, opts, stop, log=log, display=display)
        watch = asyncio.create_task(_write_metrics_while(sched, prepared, opts)) if opts.metrics_file else None

        async def settle() -> None:  # a second signal: half-written downloads go, queued records commit
            await sched.quiesce()
            await w.flush()

        try:
            with signals.before_exit(settle):
                await sched.run(prepared.run_id, prepared.total, prepared.scope)
        finally:
            if watch is not None:
                watch.cancel()
        await w.flush()
        if coop:  # the outcome of the whole manifest, whichever worker did each job
            await w.call(ledger.release, prepared.run_id)
            await asyncio.to_thread(remove_stale_temp_files, opts.out_dir)  # of workers that died meanwhile
            counts = with_skipped_done(await w.call(ledger.scope_counts, prepared.scope), prepared.total)
            in_doubt = await w.call(ledger.jobs_in_state, S.IN_DOUBT, prepared.scope)
            failed = await w.call(ledger.jobs_in_state, S.FAILED, prepared.scope)
        else:
            counts = with_skipped_done(await w.call(ledger.counts, prepared.run_id), prepared.total)
            in_doubt = [j for j in await w.call(ledger.jobs_in_state, S.IN_DOUBT) if j["run_id"] == prepared.run_id]
            failed = [j for j in await w.call(ledger.jobs_in_state, S.FAILED) if j["run_id"] == prepared.run_id]
        active_left = sum(counts.get(s, 0) for s in (S.QUEUED, S.SUBMITTING, S.SUBMITTED, S.RENDERING, S.COMPLETED))
        verdict = sched.ctx  # the run-wide verdicts (halt code, unfinished, reason)
        if verdict.halt_code is not None:
            code = verdict.halt_code
        elif active_left or verdict.unfinished:
            code = EXIT_UNFINISHED
            verdict.reason = verdict.reason or ("stopped by signal" if stop.is_set() else "some jobs are unfinished")
        elif in_doubt or failed:
            code = EXIT_FAILED
        else:
            code = EXIT_OK
        verified = await w.call(ledger.verify_counts, prepared.scope)
        wrong = await w.call(ledger.not_as_asked, prepared.scope, 200)
        if code == EXIT_OK and wrong:
            code = EXIT_FAILED  # every job ended, but not every clip is what was asked
        delivery: dict[str, Any] = {}
        if opts.deliver is not None:
            left = await w.call(ledger.delivery_counts, prepared.scope)
            delivery = {"destination": str(opts.deliver.destination), "delivered": left["delivered"],
                        "undelivered": left["undelivered"], "delivered_now": sched.deliverer.delivered,
                        "error": sched.deliverer.broken}
            if code == EXIT_OK and (left["undelivered"] or sched.deliverer.broken):
                code = EXIT_DELIVERY  # every clip rendered and kept locally; not all of them delivered
        status = {EXIT_OK: RunStatus.FINISHED, EXIT_FAILED: RunStatus.FINISHED, EXIT_DELIVERY: RunStatus.FINISHED,
                  EXIT_UNFINISHED: RunStatus.INTERRUPTED}.get(code, RunStatus.STOPPED)
        await w.call(ledger.finish_run, prepared.run_id, status, code)
        result = RunResult(prepared.run_id, counts, in_doubt, failed, verdict.reason, code, requests=verdict.budget.used,
                         polls=sched.poller.polls, throttled=verdict.budget.throttled, commits=w.commits,
                         elapsed=time.monotonic() - started, credits_estimated=sched.submitter.committed_credits,
                         credits_reserved=verdict.credits_seen, verified=verified, not_as_asked=wrong,
                         delivery=delivery, manifest=prepared.manifest, started_at=prepared.started_at,
                         credits_at_risk=sum(opts.prices.estimate(json.loads(j["request"])) or 0.0 for j in in_doubt),
                         expiring=counts.get(S.COMPLETED, 0))
        if opts.metrics_file is not None:
            last_ok = await w.call(ledger.last_success, prepared.manifest)
            await asyncio.to_thread(_write_metrics, opts.metrics_file, _final_metrics(result, opts, last_ok))
        return result


def _live_metrics(sched: Scheduler, prepared: Prepared, opts: RunOptions,
                  delivery: dict[str, int]) -> metrics.RunMetrics:
    snap = sched.snapshot()
    return metrics.RunMetrics(
        manifest=prepared.manifest, run_id=prepared.run_id, running=True, started_at=prepared.started_at,
        states=dict(snap.states), requests=sched.ctx.budget.used, polls=sched.poller.polls,
        throttled=sched.ctx.budget.throttled, credits_reserved=sched.ctx.credits_seen,
        credits_estimated=sched.submitter.committed_credits, max_credits=opts.max_credits,
        in_doubt=snap.states.get(S.IN_DOUBT, 0), verified=dict(sched.checker.verified),
        delivered=delivery["delivered"] if opts.deliver is not None else None,
        undelivered=delivery["undelivered"] if opts.deliver is not None else None, models=dict(snap.models))


def _final_metrics(r: RunResult, opts: RunOptions, last_success: float | None) -> metrics.RunMetrics:
    return metrics.RunMetrics(
        manifest=r.manifest, run_id=r.run_id, running=False, started_at=r.started_at, states=dict(r.counts),
        requests=r.requests, polls=r.polls, throttled=r.throttled, credits_reserved=r.credits_reserved,
        credits_estimated=r.credits_estimated, max_credits=opts.max_credits, in_doubt=len(r.in_doubt),
        exit_code=r.exit_code, finished_at=time.time(), last_success=last_success, verified=dict(r.verified),
        delivered=r.delivery.get("delivered"), undelivered=r.delivery.get("undelivered"))


_metrics_failing: set[Path] = set()


def _write_metrics(path: Path, m: metrics.RunMetrics) -> None:
    try:
        metrics.write(path, m)
        _metrics_failing.discard(path)
    except (OSError, OutputRefused, OutputFailed) as e:  # monitoring never fails the run; said once
        if path not in _metrics_failing:
            _metrics_failing.add(path)
            log.warning(str(e) if not isinstance(e, OSError) else f"cannot write --metrics-file {path}: {e.strerror or e}")


async def _write_metrics_while(sched: Scheduler, prepared: Prepared, opts: RunOptions) -> None:
    assert opts.metrics_file is not None
    while True:
        # The ledger's count (the one the summary shows), not this run's tally: clips earlier
        # runs delivered or left behind are in the bucket, or owed to it, too.
        delivery = (await sched.w.read(sched.w.ledger.delivery_counts, prepared.scope) if opts.deliver is not None
                    else {"delivered": 0, "undelivered": 0})
        await asyncio.to_thread(_write_metrics, opts.metrics_file, _live_metrics(sched, prepared, opts, delivery))
        await asyncio.sleep(opts.metrics_every)


# ------------------------------------------------------------------------------ one call
def run(manifest: str | Path | Manifest, *, out_dir: str | Path = "out", ledger: str | Ledger | None = None,
        api_base: str | None = None, api_key: Secret | str | None = None, simulate: SimConfig | bool | None = None,
        options: RunOptions | None = None, display: Display | None = None,
        handle_signals: bool = True, deliver: str | Store | bool | None = None, deliver_endpoint: str | None = None,
        notify_urls: Sequence[str] = (), report: str | Path | None = None, catalog: Catalog | None = None) -> RunResult:
    """Submit, poll and download every job of ``manifest``; resume whatever an earlier run of it
    left in the ledger. Returns how the run ended (``RunResult.exit_code`` is what ``batchgen
    run`` exits with).

    ``ledger``: a path, a SQLAlchemy URL or an open ``Ledger`` (default: BATCHGEN_LEDGER, else
    ``./batchgen.db``). ``api_key``: default the environment variable BATCHGEN_API_KEY.
    ``simulate``: run against the embedded simulator (``True`` or a ``SimConfig``) — nothing is
    billed. ``options``: concurrency, request budget, credit cap… (``out_dir`` fills its
    ``out_dir`` when it is not given). ``deliver``: an ``s3://bucket/prefix/`` URL (default: the
    manifest's ``deliver:``; ``False``: not even that) or a ``Store``; checked before anything is
    submitted. Raises
    ``ManifestError`` (nothing recorded) for a bad manifest, ``UsageError`` without an API key,
    ``DeliveryError`` when the destination refuses, ``LedgerError`` when the ledger cannot be used.
    ``report``: write the HTML report there when the run ends. ``notify_urls``: apprise URLs
    that get one message when the run ends (or cannot start); a failed message is only logged.
    ``catalog``: the models to validate against (default the shipped catalog; see
    ``operations.catalog`` for adding a models file)."""
    where = _safe_ledger(ledger, simulated=bool(simulate))
    # SIGINT/SIGTERM are handled from here to the last notification (signals.py): a signal while
    # the manifest is read stops the run before it submits anything; one while the simulator or
    # the client shut down, or the report is written, does not tear them down mid-way.
    with signals.guard(quiet=display is None or display.quiet, enabled=handle_signals):
        try:
            result = _run(manifest, out_dir=out_dir, ledger=ledger, api_base=api_base, api_key=api_key,
                          simulate=simulate, options=options, display=display, handle_signals=handle_signals,
                          deliver=deliver, deliver_endpoint=deliver_endpoint, report=report, catalog=catalog,
                          notify_urls=notify_urls)
        except BatchgenError as e:  # the run could not start (or the ledger failed): say so too
            usable = [u for u in notify_urls if not notify.check([u])]  # the preflight named the others
            if usable:
                summary = {"exit_code": e.exit_code, "error": (str(e).splitlines() or [""])[0][:500],
                           "manifest": str(manifest), "started": e.run_started}
                notify.run_ended(usable, summary, ledger=where)
            raise
        # Never raises: a notification cannot change the run's exit code.
        notify.run_ended(notify_urls, result.as_dict(), ledger=where, report=str(report) if report else None,
                         max_credits=options.max_credits if options else None)
        return result

def _safe_ledger(ledger: str | Ledger | None, *, simulated: bool) -> str:
    """The ledger as a message may name it (a database URL without its password)."""
    if isinstance(ledger, Ledger):
        return str(ledger)
    return safe_ledger_url(ledger, simulated=simulated)


def _run(manifest: str | Path | Manifest, *, out_dir: str | Path, ledger: str | Ledger | None, api_base: str | None,
         api_key: Secret | str | None, simulate: SimConfig | bool | None, options: RunOptions | None,
         display: Display | None, handle_signals: bool, deliver: str | Store | bool | None, deliver_endpoint: str | None,
         report: str | Path | None, catalog: Catalog | None, notify_urls: Sequence[str] = ()) -> RunResult:
    sim_cfg = SimConfig() if simulate is True else (simulate or None)
    key = Secret(api_key) if isinstance(api_key, str) else api_key or api_key_from_env()
    opts = options or RunOptions(out_dir=Path(out_dir))
    api_base = api_base or DEFAULT_API_BASE
    m = manifest if isinstance(manifest, Manifest) else Manifest(manifest, catalog)
    opts.limits = {**m.limits, **opts.limits}  # run --limit overrides the manifest's `limits:`
    if deliver is None or deliver is True:
        deliver = m.deliver
    # Everything that needs neither the network nor the ledger, all at once, before either.
    preflight.require(preflight.Plan(
        out_dir=opts.out_dir, api_base=None if sim_cfg is not None else api_base, simulated=sim_cfg is not None,
        ledger="" if isinstance(ledger, Ledger) else ledger, report=Path(report) if report is not None else None,
        metrics_file=opts.metrics_file, notify_urls=notify_urls,
        deliver_to=deliver if isinstance(deliver, str) else None, deliver_endpoint=deliver_endpoint,
        missing=["set BATCHGEN_API_KEY in the environment (it is never read from the command line)"]
        if key is None and sim_cfg is None else []))
    key = key or Secret("sk-simulated")
    opts.api = api_identity(api_base, sim_cfg is not None)
    if deliver is not None and deliver is not False:
        store = open_store(deliver, endpoint_url=deliver_endpoint) if isinstance(deliver, str) else deliver
        store.check()  # credentials and bucket, before anything is paid for
        opts.deliver = store
        opts.deliver_owed = str(store.destination)
    elif m.deliver:  # --no-deliver: not tonight, but the manifest's clips are still owed there
        opts.deliver_owed = str(Destination.parse(m.deliver))
    if opts.prune_local and opts.deliver is None:
        raise UsageError("--prune-local only with --deliver (or `deliver:` in the manifest): local files are "
                         "removed only once the store holds them")
    absent = [] if isinstance(ledger, Ledger) else _absent_ledger_files(ledger, simulated=sim_cfg is not None)
    led = ledger if isinstance(ledger, Ledger) else Ledger(ledger, simulated=sim_cfg is not None)
    try:
        try:
            prepared = prepare(led, m, opts)
        except BaseException:
            if absent and led.created:
                _discard_new_ledger(led, absent)  # refused before anything was recorded: leave nothing
            raise
        _announce(prepared, m, led)
        try:
            result = _sync(_execute(led, prepared, opts, api_base, key, sim_cfg, display, handle_signals))
        except BatchgenError as e:
            e.run_started = True
            raise
        if report is not None:
            from . import operations

            try:
                operations.report(led, Path(report))
            except BatchgenError as e:  # the run paid and ended: its outcome stands, the report is a warning
                log.warning(f"warning: the report was not written: {e}")
        return result
    finally:
        if not isinstance(ledger, Ledger):
            led.close()


_SQLITE_SIDE_FILES = ("", "-journal", "-wal", "-shm", ".lock")


def _absent_ledger_files(ledger: str | None, *, simulated: bool) -> list[Path]:
    """The files of a SQLite ledger (and its lock) that do not exist yet: the ones a refused run
    must remove again. Empty when the ledger file exists (or is not a file)."""
    from .ledger import ledger_url, sqlite_file

    path = sqlite_file(ledger_url(ledger, simulated=simulated))
    if path is None or os.path.lexists(path):
        return []
    db = str(path)
    absent = [Path(db + suffix) for suffix in _SQLITE_SIDE_FILES if not os.path.lexists(db + suffix)]
    folder = Path(db).parent
    while not folder.exists() and folder.parent != folder:  # folders the ledger's open creates
        absent.append(folder)
        folder = folder.parent
    return absent


def _discard_new_ledger(led: Ledger, files: list[Path]) -> None:
    """Remove the ledger this run created and refused to use (nothing recorded: ``prepare``
    rolled back), with its lock file. Only while holding its lock: a process that opened the
    new ledger meanwhile keeps it."""
    try:
        led.acquire_lock()
    except BatchgenError:
        return
    try:
        led.engine.dispose()
        for f in files:  # files first, then the folders they were in (innermost first)
            with contextlib.suppress(FileNotFoundError):
                if f.is_dir() and not f.is_symlink():
                    f.rmdir()
                else:
                    f.unlink()
    except OSError as e:
        log.warning(f"could not remove the new, empty ledger {led}: {e.strerror}")
    finally:
        led.release_lock()


def api_identity(api_base: str, simulated: bool) -> str:
    """Which API a task belongs to, as recorded per job: the embedded simulator, or the
    normalised base URL (scheme and host lower-cased, no trailing slash)."""
    if simulated:
        return "simulator"
    u = urlsplit(api_base.strip())
    netloc = u.netloc.rpartition("@")[2].lower()  # recorded per job: never a user:password
    return f"{u.scheme.lower()}://{netloc}{u.path.rstrip('/')}"


def _shown(api: str) -> str:
    return "the embedded simulator (--simulate)" if api == "simulator" else api


def _announce(p: Prepared, m: Manifest, led: Ledger) -> None:
    """What a person (or cron's log) should know before the run starts spending."""
    if led.created:
        log.warning(f"new ledger {led}: nothing recorded yet, every job is new")
    worker = " (worker on a shared PostgreSQL ledger)" if p.cooperative else ""
    log.info(f"run {p.run_id}{worker}: {p.total} job(s) in {m.path}")
    for w in p.warnings:
        log.warning(f"warning: {w}")
    if p.reused_from is not None:
        log.info(f"  manifest unchanged since run {p.reused_from}: its validated jobs are reused")
    if p.requeued:
        log.info(f"  {p.requeued} failed job(s) requeued by --retry-failed")
    for j in p.in_doubt_found:
        log.warning(f"  IN DOUBT: job {j['name']} ({short_key(j['key'])}) was mid-create when the last run stopped")


async def _execute(led: Ledger, prepared: Prepared, opts: RunOptions, api_base: str, key: Secret,
                   sim_cfg: SimConfig | None, display: Display | None, handle_signals: bool) -> RunResult:
    sim = None
    if sim_cfg is not None:
        # Its tasks persist next to a SQLite ledger, so an interrupted --simulate run resumes.
        state = led.path.with_name(led.path.name + ".sim.jsonl") if led.path is not None else None
        sim = Simulator(sim_cfg, state_file=state)
        try:
            api_base = await sim.start(port=sim.saved_port or 0)  # its result URLs name the port
        except OSError:
            api_base = await sim.start()
    stop = asyncio.Event()
    quiet = display is None or display.quiet
    try:
        with signals.stop_on_signals(stop, quiet=quiet, enabled=handle_signals):
            async with Client(api_base, key, limit=max(10, opts.concurrency * 2)) as client:
                return await execute(led, prepared, opts, client, stop, display=display)
    finally:
        if sim is not None:
            await sim.stop()


def serve_simulator(config: SimConfig, host: str = "127.0.0.1", port: int = 0,
                    on_ready: Callable[[str], None] | None = None) -> None:
    """Run the simulator until SIGINT/SIGTERM; ``on_ready`` gets its base URL."""

    async def serve() -> None:
        sim = Simulator(config)
        url = await sim.start(host, port)
        if on_ready is not None:
            on_ready(url)
        stop = asyncio.Event()
        with signals.stop_on_signals(stop, quiet=True):
            await stop.wait()
        await sim.stop()

    _sync(serve())


def demo(manifest: str | Path, out_dir: str | Path) -> tuple[RunResult, dict[str, Any]]:
    """Run ``manifest`` against the embedded simulator into ``out_dir``: videos under
    ``videos/``, the ledger ``batchgen.db``, ``results.csv`` and ``report.html``."""
    from . import operations

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ledger = str(out / "batchgen.db")
    opts = RunOptions(out_dir=out / "videos", concurrency=8, rpm=600, poll_min=0.2)
    cfg = SimConfig(seed=7, render_min=2.0, render_max=6.0, p429=0.03, retry_after=0.5)
    result = run(manifest, ledger=ledger, simulate=cfg, api_key=Secret("sk-demo"), options=opts,
                 display=Display(every=5.0))
    rows = operations.export(ledger, out / "results.csv")
    operations.report(ledger, out / "report.html", title="batchgen demo")
    return result, {"videos": sum(1 for _ in (out / "videos").rglob("*.mp4")), "rows": rows,
                    "csv": out / "results.csv", "report": out / "report.html", "ledger": ledger}


def _sync(coro: Coroutine[Any, Any, T]) -> T:
    """The program's only ``asyncio.run``."""
    return asyncio.run(coro)


__all__ = ["DEFAULT_API_BASE", "Prepared", "RunResult", "api_identity", "demo", "execute", "prepare", "run", "serve_simulator"]
