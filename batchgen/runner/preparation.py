"""Preparing a run, before the event loop starts: the ledger's lock, the manifest expanded and
validated while the run and its jobs are recorded in one transaction (``prepare``), every
clip's path checked inside ``--out`` (``OutputChecks``), and which API a task belongs to
(``api_identity``). Synchronous on purpose: no create can precede validation. Sends nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ManifestError, Problem, UsageError
from ..files import OutputDir, remove_stale_temp_files
from ..jobs import Job, JobRow
from ..ledger import Ledger, Scope
from ..manifest import Manifest
from ..scheduler import RunOptions


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
    retry_spent: int = 0  # --retry-failed: failed jobs left failed, their --max-attempts creates spent

    @property
    def manifest(self) -> str:
        """The manifest's resolved path."""
        return self.scope.manifest



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
            f"this ledger holds {n} job(s) whose tasks or files belong to another API ({shown_api(other)}); a run "
            f"against {shown_api(opts.api)} would take them as its own or poll task ids that do not exist there. "
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
    requeued, spent = ledger.requeue_retryable_failures(run_id, opts.max_attempts) if opts.retry_failed else (0, 0)
    opts.local_files = dict(manifest.local_files)
    opts.catalog = manifest.catalog
    opts.prices.catalog = manifest.catalog
    scope = Scope(str(manifest.path.resolve()), digest)
    if opts.deliver_owed is not None:  # the manifest's clips are owed there, even on a --no-deliver night
        ledger.owe_delivery(scope, opts.deliver_owed, opts.deliver_only)
    remove_stale_temp_files(opts.out_dir)
    return Prepared(run_id, total, in_doubt, requeued, scope, ledger.cooperative, reused_from,
                    list(manifest.warnings), retry_spent=spent)


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


def api_identity(api_base: str, simulated: bool) -> str:
    """Which API a task belongs to, as recorded per job: the embedded simulator, or the
    normalised base URL (scheme and host lower-cased, no trailing slash)."""
    if simulated:
        return "simulator"
    u = urlsplit(api_base.strip())
    netloc = u.netloc.rpartition("@")[2].lower()  # recorded per job: never a user:password
    return f"{u.scheme.lower()}://{netloc}{u.path.rstrip('/')}"


def shown_api(api: str) -> str:
    return "the embedded simulator (--simulate)" if api == "simulator" else api

