"""``Ledger``: the one object callers open. It holds the rooms of this package and only
delegates to them; each method below names the room that owns it.

Every public method raises only ``LedgerError`` for database, driver and file-system failures:
the rooms are ``error_boundary`` classes (``Room`` applies it to every subclass), and so is
this facade, so a method added later to either is covered."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, cast, overload

from sqlalchemy import case, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from ..errors import UsageError
from ..files import pid_alive
from ..jobs import Job, JobRow, JobState, RunStatus, canonical_json
from ..schema import events, jobs, manifest_jobs, runs, uploads
from .database import Database, Room
from .leases import Leases
from .scope import Scope, of_manifest
from .sql import ACTIVE_STATES, UNFINISHED_STATES, is_owed, job_row, placeholder, plain
from .transitions import Transition, Transitions

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
S = JobState


class _Forward(Generic[T, P, R]):
    """A facade method that calls the method of the same name on one room (an attribute of
    the facade), with that method's exact signature for the type checker."""

    def __init__(self, room: str, method: Callable[Concatenate[T, P], R]) -> None:
        self.room = room
        self.name = method.__name__
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, obj: None, owner: type) -> _Forward[T, P, R]: ...
    @overload
    def __get__(self, obj: object, owner: type) -> Callable[P, R]: ...

    def __get__(self, obj: object | None, owner: type) -> _Forward[T, P, R] | Callable[P, R]:
        if obj is None:
            return self
        bound: Callable[P, R] = getattr(getattr(obj, self.room), self.name)
        return bound


class Ledger(Room):
    """The ledger at ``url`` (see ``ledger_url``), migrated to the current schema on open.
    ``create=False`` (what commands that only read use) refuses a ledger that does not exist
    (``LedgerMissing``) instead of creating an empty one; ``readonly`` opens it so that nothing
    can be written. Every public method raises ``LedgerError`` for database, driver and
    file-system failures (``error_boundary``)."""

    def __init__(self, url: str | None = None, *, migrate: bool = True, create: bool = True,
                 simulated: bool = False, readonly: bool = False) -> None:
        super().__init__(Database(url, migrate=migrate, create=create, simulated=simulated, readonly=readonly))
        self.database = self.db
        self.transitions = Transitions(self.database)
        self.leases = Leases(self.database)

    @property
    def path(self) -> Path | None:
        """The ledger's file (SQLite), for files kept beside it; None for a server database."""
        return self.database.path

    @property
    def created(self) -> bool:
        """This open made a new, empty ledger."""
        return self.database.created

    @property
    def cooperative(self) -> bool:
        """Any number of workers share it (PostgreSQL); a SQLite ledger has one run at a time."""
        return self.database.cooperative

    @property
    def readonly(self) -> bool:
        return self.database.readonly

    def __repr__(self) -> str:
        return f"Ledger({self._safe_url!r})"

    def __str__(self) -> str:
        """The file's path (SQLite) or the URL without its password: for messages."""
        return str(self.database)

    def close(self) -> None:
        self.database.close()

    acquire_lock = _Forward("database", Database.acquire_lock)
    release_lock = _Forward("database", Database.release_lock)
    check_integrity = _Forward("database", Database.check_integrity)
    apply = _Forward("transitions", Transitions.apply)
    orphans_to_in_doubt = _Forward("transitions", Transitions.orphans_to_in_doubt)
    requeue_retryable_failures = _Forward("transitions", Transitions.requeue_retryable_failures)
    cancel_queued = _Forward("transitions", Transitions.cancel_queued)
    heartbeat = _Forward("leases", Leases.heartbeat)
    live_workers = _Forward("leases", Leases.live_workers)
    claim = _Forward("leases", Leases.claim)
    reclaim = _Forward("leases", Leases.reclaim)
    release = _Forward("leases", Leases.release)
    held = _Forward("leases", Leases.held)
    pending_elsewhere = _Forward("leases", Leases.pending_elsewhere)

    def start_run(self, manifest: str, manifest_sha256: str, options: dict[str, Any], total: int) -> int:
        with self.engine.begin() as c:
            return self._insert_run(c, manifest, manifest_sha256, options, total)

    def _insert_run(self, c: Connection, manifest: str, manifest_sha256: str, options: dict[str, Any], total: int) -> int:
        key = c.execute(insert(runs).values(
            manifest=manifest, manifest_sha256=manifest_sha256, started_at=time.time(), status=RunStatus.RUNNING,
            host=socket.gethostname(), pid=os.getpid(), options=json.dumps(options, sort_keys=True), jobs_total=total,
            heartbeat_at=self._now(),
        )).inserted_primary_key
        assert key is not None
        return int(key[0])

    def finish_run(self, run_id: int, status: str, exit_code: int | None = None) -> None:
        with self.engine.begin() as c:
            c.execute(update(runs).where(runs.c.id == run_id).values(finished_at=time.time(), status=status,
                                                                     exit_code=exit_code))

    def last_success(self, manifest: str | None = None) -> float | None:
        """When a run (of this manifest path) last ended with exit code 0."""
        q = select(func.max(runs.c.finished_at)).where(runs.c.exit_code == 0)
        if manifest is not None:
            q = q.where(runs.c.manifest == manifest)
        with self._read() as c:
            v = c.execute(q).scalar()
        return None if v is None else float(v)

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest runs, each with its per-state job counts."""
        with self._read() as c:
            rows = [plain(r) for r in c.execute(select(runs).order_by(runs.c.id.desc()).limit(limit))]
            ids = [r["id"] for r in rows]
            counts: dict[int, dict[str, int]] = {}
            if ids:
                q = select(jobs.c.run_id, jobs.c.state, func.count()).where(jobs.c.run_id.in_(ids)).group_by(
                    jobs.c.run_id, jobs.c.state)
                for run_id, state, n in c.execute(q):
                    counts.setdefault(run_id, {})[state] = int(n)
            held: dict[int, int] = {}
            if ids:
                q = select(jobs.c.worker_id, func.count()).where(jobs.c.worker_id.in_(ids)).group_by(jobs.c.worker_id)
                held = {w: int(n) for w, n in c.execute(q)}
            now: Any = c.execute(select(self._now())).scalar() if not self.is_sqlite else time.time()
        for r in rows:
            r["counts"] = counts.get(r["id"], {})
            r["held"] = held.get(r["id"], 0)  # jobs leased to this run (cooperative ledgers)
            r["heartbeat_age_s"] = None if r["heartbeat_at"] is None else round(float(now) - r["heartbeat_at"], 1)
        return rows

    def close_dead_runs(self) -> int:
        """With the writer lock held, no other run can be alive: any still marked ``running``
        died (kill -9, power loss). Mark them so `status` and `stop` stay truthful. (Cooperative
        ledgers find dead workers by their heartbeat instead: ``reclaim``.)"""
        if not self.db.locked:
            return 0
        with self.engine.begin() as c:
            return c.execute(update(runs).where(runs.c.status == RunStatus.RUNNING)
                             .values(status=RunStatus.DIED, finished_at=time.time())).rowcount

    def reap_dead_runs(self) -> int:
        """Runs still marked ``running`` whose process is gone, found without the writer lock:
        on SQLite a run's process is on this machine (the ledger is a local file), so a pid
        that no longer exists is a run that crashed. Marked ``died`` so `status` and `stop`
        tell the truth. (PostgreSQL workers are judged by their heartbeat: ``reclaim``.)"""
        if not self.is_sqlite:
            return 0
        host = socket.gethostname()
        with self._read() as c:
            rows = c.execute(select(runs.c.id, runs.c.pid).where(runs.c.status == RunStatus.RUNNING,
                                                                  runs.c.host == host)).all()
        dead = [i for i, pid in rows if not pid_alive(pid)]
        if not dead:
            return 0
        with self.engine.begin() as c:
            return c.execute(update(runs).where(runs.c.id.in_(dead), runs.c.status == RunStatus.RUNNING)
                             .values(status=RunStatus.DIED, finished_at=time.time())).rowcount

    def foreign_tasks(self, api: str) -> tuple[str, int] | None:
        """(the other API, how many jobs) when this ledger holds tasks or files that belong to
        another API than ``api`` — a simulated run's placeholders seen from a real one, say."""
        q = (select(jobs.c.api, func.count()).where(
            jobs.c.api.is_not(None), jobs.c.api != api,
            jobs.c.state.in_([S.SUBMITTING, *ACTIVE_STATES, S.DONE, S.IN_DOUBT]))
            .group_by(jobs.c.api).order_by(func.count().desc()).limit(1))
        with self._read() as c:
            row = c.execute(q).first()
        return None if row is None else (str(row[0]), int(row[1]))

    def unverified(self, scope: Scope) -> list[JobRow]:
        """Done jobs of this manifest whose file was never inspected (a crash between the
        rename and the verification): the next run verifies them."""
        q = (select(jobs).where(jobs.c.state == S.DONE, jobs.c.verify.is_(None), jobs.c.output_path.is_not(None),
                                of_manifest(scope)).order_by(jobs.c.id))
        with self._read() as c:
            return [job_row(r) for r in c.execute(q)]

    def owe_delivery(self, scope: Scope | None, destination: str) -> int:
        """Record that this manifest's clips are owed to ``destination`` (an ``s3://`` URL without
        credentials): done or not, each is delivered there once done, by the next run of any
        manifest that contains it or by ``batchgen deliver``. Clips already delivered keep
        where they went."""
        q = update(jobs).where(jobs.c.delivered_url.is_(None),
                               or_(jobs.c.deliver_to.is_(None), jobs.c.deliver_to != destination))
        if scope is not None:
            q = q.where(of_manifest(scope))
        with self.engine.begin() as c:
            return c.execute(q.values(deliver_to=destination)).rowcount

    def lost_candidates(self) -> list[JobRow]:
        """Done clips that should be on local disk (not removed after delivery on purpose)."""
        q = (select(jobs).where(jobs.c.state == S.DONE, jobs.c.output_path.is_not(None), jobs.c.pruned_at.is_(None))
             .order_by(jobs.c.seq, jobs.c.id))
        with self._read() as c:
            return [job_row(r) for r in c.execute(q)]

    def undelivered(self, scope: Scope | None = None, *, verified_only: bool) -> list[JobRow]:
        """Done clips owed to a destination that the store does not hold yet (of this manifest,
        or of the whole ledger), kept locally: delivered from the local file, never fetched
        from the API again. With verification on, only clips already verified (the others are
        delivered once verified)."""
        q = (select(jobs).where(is_owed(), jobs.c.pruned_at.is_(None), jobs.c.output_path.is_not(None))
             .order_by(jobs.c.id))
        if scope is not None:
            q = q.where(of_manifest(scope))
        if verified_only:
            q = q.where(jobs.c.verify.is_not(None))
        with self._read() as c:
            return [job_row(r) for r in c.execute(q)]

    def unpruned(self, scope: Scope) -> list[JobRow]:
        """Delivered clips of this manifest whose local copy is still recorded as present: a
        ``--prune-local`` run killed between recording the delivery and removing the file."""
        q = (select(jobs).where(jobs.c.state == S.DONE, jobs.c.delivered_url.is_not(None), jobs.c.pruned_at.is_(None),
                                jobs.c.output_path.is_not(None), of_manifest(scope)).order_by(jobs.c.id))
        with self._read() as c:
            return [job_row(r) for r in c.execute(q)]

    def delivery_counts(self, scope: Scope | None = None) -> dict[str, int]:
        """Done clips delivered to object storage, and clips owed to a destination but not (yet)
        there — of one manifest or the whole ledger. The one count that the run's summary,
        ``status``, the report, notifications and metrics show."""
        delivered = func.sum(case((jobs.c.delivered_url.is_not(None), 1), else_=0))
        owed = func.sum(case((is_owed(), 1), else_=0))
        q = select(delivered, owed).where(jobs.c.state == S.DONE)
        if scope is not None:
            q = q.where(of_manifest(scope))
        with self._read() as c:
            d, n = c.execute(q).one()
        return {"delivered": int(d or 0), "undelivered": int(n or 0)}

    def last_run_of(self, manifest: str) -> dict[str, Any] | None:
        """The newest run of this manifest path (id, times, status, exit code, jobs)."""
        with self._read() as c:
            r = c.execute(select(runs.c.id, runs.c.started_at, runs.c.finished_at, runs.c.status, runs.c.exit_code,
                                 runs.c.jobs_total).where(runs.c.manifest == manifest)
                          .order_by(runs.c.id.desc()).limit(1)).first()
        return None if r is None else plain(r)

    def delivery_problems(self, limit: int = 20) -> list[JobRow]:
        """Done clips owed to a destination and not there (a run could not deliver them, or no
        run delivered yet: ``--no-deliver``), newest first."""
        q = select(jobs).where(is_owed()).order_by(jobs.c.updated_at.desc()).limit(limit)
        with self._read() as c:
            return [job_row(r) for r in c.execute(q)]

    def manifest_members(self, manifest: str) -> list[JobRow] | None:
        """The jobs this manifest path expanded to when last recorded (None: not known — a
        ledger written before batchgen recorded it)."""
        q = (select(jobs).join(manifest_jobs, manifest_jobs.c.key == jobs.c.key)
             .where(manifest_jobs.c.manifest == manifest).order_by(jobs.c.seq, jobs.c.id))
        with self._read() as c:
            rows = [job_row(r) for r in c.execute(q)]
            if rows:
                return rows
            last = c.execute(select(runs.c.manifest_sha256).where(runs.c.manifest == manifest)
                             .order_by(runs.c.id.desc()).limit(1)).scalar()
            if last is None:
                return None
            # Older ledgers: the jobs recorded by runs of that manifest's last version.
            return [job_row(r) for r in c.execute(select(jobs).where(of_manifest(Scope(manifest, last)))
                                                .order_by(jobs.c.seq, jobs.c.id))]

    def not_as_asked(self, scope: Scope | None = None, limit: int = 1000) -> list[JobRow]:
        """Delivered clips whose verification found them wrong (mismatch, undecodable, missing,
        changed), newest first."""
        q = (select(jobs).where(jobs.c.verify.in_(["mismatch", "undecodable", "missing", "changed"]))
             .order_by(jobs.c.verified_at.desc()).limit(limit))
        if scope is not None:
            q = q.where(of_manifest(scope))
        with self._read() as c:
            return [job_row(r) for r in c.execute(q)]

    def verify_counts(self, scope: Scope | None = None) -> dict[str, int]:
        """Delivered clips per verification outcome (of one manifest, or the whole ledger)."""
        q = select(jobs.c.verify, func.count()).where(jobs.c.verify.is_not(None)).group_by(jobs.c.verify)
        if scope is not None:
            q = q.where(of_manifest(scope))
        with self._read() as c:
            return {str(v): int(n) for v, n in c.execute(q)}

    def request_stop(self, run_id: int) -> bool:
        with self.engine.begin() as c:
            return c.execute(update(runs).where(runs.c.id == run_id, runs.c.status == RunStatus.RUNNING)
                             .values(stop_requested=True)).rowcount == 1

    def stop_requested(self, run_id: int) -> bool:
        with self._read() as c:
            return bool(c.execute(select(runs.c.stop_requested).where(runs.c.id == run_id)).scalar())

    def unfinished(self, limit: int = 10) -> list[JobRow]:
        """Oldest jobs that are neither finished nor waiting for a human."""
        with self._read() as c:
            q = (select(jobs).where(jobs.c.state.in_(UNFINISHED_STATES))
                 .order_by(func.coalesce(jobs.c.submitted_at, jobs.c.created_at), jobs.c.id).limit(limit))
            return [job_row(r) for r in c.execute(q)]

    def expiring(self, within_s: float, ttl_s: float) -> list[JobRow]:
        """Completed jobs whose result URL expires within ``within_s`` and that are not downloaded."""
        cutoff = time.time() - ttl_s + within_s
        with self._read() as c:
            q = select(jobs).where(jobs.c.state == S.COMPLETED, jobs.c.result_at <= cutoff).order_by(jobs.c.result_at)
            return [job_row(r) for r in c.execute(q)]

    def upload_url(self, sha256: str, newer_than: float) -> str | None:
        with self._read() as c:
            url = c.execute(select(uploads.c.url).where(uploads.c.sha256 == sha256,
                                                        uploads.c.uploaded_at > newer_than)).scalar()
            return None if url is None else str(url)

    def record_upload(self, sha256: str, path: str, size: int, url: str) -> None:
        stmt = self._insert_into(uploads).values(sha256=sha256, path=path, size=size, url=url, uploaded_at=time.time())
        stmt = stmt.on_conflict_do_update(index_elements=[uploads.c.sha256], set_={
            "path": stmt.excluded.path, "size": stmt.excluded.size, "url": stmt.excluded.url,
            "uploaded_at": stmt.excluded.uploaded_at})
        with self.engine.begin() as c:
            c.execute(stmt)

    def run(self, run_id: int | None = None) -> dict[str, Any] | None:
        """One run by id, or the newest when ``run_id`` is None."""
        q = select(runs).order_by(runs.c.id.desc()).limit(1)
        if run_id is not None:
            q = q.where(runs.c.id == run_id)
        with self._read() as c:
            r = c.execute(q).first()
            return plain(r) if r else None

    def record_run(self, manifest: str, manifest_sha256: str, options: dict[str, Any], jobs_: Iterable[Job],
                   check: Any, batch: int = 2000) -> tuple[int, int]:
        """Record a run and its jobs in ONE transaction while the manifest streams by, then call
        ``check()`` (which raises on any problem found during expansion): a bad manifest rolls
        everything back, so nothing is recorded for it, and a good one is expanded only once.
        ``check()`` may return options to add to the run's (known only after expansion)."""
        with self.engine.begin() as c:
            run_id = self._insert_run(c, manifest, manifest_sha256, options, 0)
            c.execute(manifest_jobs.delete().where(manifest_jobs.c.manifest == manifest))
            n = 0
            chunk: list[Job] = []
            for job in jobs_:
                chunk.append(job)
                if len(chunk) >= batch:
                    self._upsert(c, run_id, chunk)
                    self._add_members(c, manifest, chunk)
                    n += len(chunk)
                    chunk = []
            self._upsert(c, run_id, chunk)
            self._add_members(c, manifest, chunk)
            n += len(chunk)
            extra = check() or {}
            # Stamped again at commit: recording a huge manifest may take longer than a lease.
            c.execute(update(runs).where(runs.c.id == run_id).values(
                jobs_total=n, heartbeat_at=self._now(), options=json.dumps({**options, **extra}, sort_keys=True)))
        return run_id, n

    def reuse_run(self, manifest: str, manifest_sha256: str, inputs_sha256: str, options: dict[str, Any],
                  check_outputs: Callable[[Iterable[tuple[str, str]]], None] | None = None,
                  ) -> tuple[int, int, int] | None:
        """Start a run of a manifest whose exact inputs (``inputs_sha256``: its bytes, its rows
        CSV, the expansion code) an earlier run already validated and recorded, without expanding
        it again: the jobs are the same, so only the unfinished ones move to the new run.
        ``check_outputs`` sees (output, source) of every job still to be written, inside the
        transaction: it raises to refuse the run (the output folder changed since). Returns
        (run id, jobs, earlier run id), or None to take the full path — no earlier run with these
        inputs, or the manifest's jobs in the ledger no longer number what it recorded (some
        moved to another manifest's run since)."""
        with self.engine.begin() as c:
            earlier = c.execute(select(runs.c.id, runs.c.jobs_total, runs.c.options).where(
                runs.c.manifest_sha256 == manifest_sha256).order_by(runs.c.id.desc()).limit(50)).all()
            match = next((r for r in earlier if json.loads(r.options).get("inputs_sha256") == inputs_sha256), None)
            if match is None:
                return None
            # This path's recorded membership must be of these bytes too (it was edited and
            # edited back: record it again, or its scope would be the other version's jobs).
            last = c.execute(select(runs.c.manifest_sha256).where(runs.c.manifest == manifest)
                             .order_by(runs.c.id.desc()).limit(1)).scalar()
            if last not in (None, manifest_sha256):
                return None
            scope = of_manifest(Scope(manifest, manifest_sha256))
            n = int(c.execute(select(func.count()).select_from(jobs).where(scope)).scalar() or 0)
            if n != match.jobs_total:
                return None
            run_id = self._insert_run(c, manifest, manifest_sha256, {**options, "inputs_sha256": inputs_sha256}, n)
            c.execute(update(jobs).where(scope, jobs.c.run_id != run_id, jobs.c.state != S.DONE)
                      .values(run_id=run_id, updated_at=time.time()))
            if check_outputs is not None:  # raises on a problem: nothing of this run is recorded
                check_outputs((r.output, r.source) for r in c.execution_options(yield_per=5000).execute(
                    select(jobs.c.output, jobs.c.source).where(scope, jobs.c.state.in_(UNFINISHED_STATES))))
        return run_id, n, int(match.id)

    def _add_members(self, c: Connection, manifest: str, batch: Sequence[Job]) -> None:
        """This manifest's job set (`batchgen diff`) as recorded now; the caller deleted the old."""
        if batch:
            ph = placeholder(c)
            c.exec_driver_sql(f"INSERT INTO manifest_jobs (manifest, key) VALUES ({ph('manifest')}, {ph('key')}) "
                              "ON CONFLICT DO NOTHING", [{"manifest": manifest, "key": j.key} for j in batch])

    def upsert_jobs(self, run_id: int, batch: Sequence[Job]) -> None:
        with self.engine.begin() as c:
            self._upsert(c, run_id, batch)

    def _upsert(self, c: Connection, run_id: int, batch: Sequence[Job]) -> None:
        """Insert new jobs as ``queued``; known keys only move to this run (their state, task id
        and files are untouched: that is what makes re-running a manifest safe). Jobs already
        ``done`` are not rewritten at all: resuming a mostly finished 100k-job manifest then
        costs an index lookup per row, not a row rewrite."""
        if not batch:
            return
        now = time.time()
        ph = placeholder(c)
        cols = ("key", "run_id", "seq", "name", "source", "model", "request", "output", "take", "state",
                "created_at", "updated_at")
        moved = ("run_id", "seq", "name", "source", "output", "updated_at")
        # Driver-level executemany: SQLAlchemy's per-row parameter handling cost more than SQLite
        # itself here (100k rows on resume). Same SQL on SQLite and PostgreSQL.
        sql = (f"INSERT INTO jobs ({', '.join(cols)}) VALUES ({', '.join(ph(k) for k in cols)}) "
               f"ON CONFLICT (key) DO UPDATE SET {', '.join(f'{k} = excluded.{k}' for k in moved)} "
               f"WHERE jobs.state <> '{S.DONE.value}'")
        rows = [{"key": j.key, "run_id": run_id, "seq": j.seq, "name": j.name, "source": j.source,
                 "model": j.model, "request": j.request_json or canonical_json(j.request),
                 "output": j.output, "take": j.take, "state": S.QUEUED, "created_at": now, "updated_at": now}
                for j in batch]
        c.exec_driver_sql(sql, rows)

    def states_by_key(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """What the ledger knows of these job keys: state, task id, attempts, error, file."""
        out: dict[str, dict[str, Any]] = {}
        keys = list(keys)
        cols = (jobs.c.key, jobs.c.state, jobs.c.task_id, jobs.c.attempts, jobs.c.error_code, jobs.c.retryable,
                jobs.c.output_path, jobs.c.verify, jobs.c.pruned_at)
        with self._read() as c:
            for i in range(0, len(keys), 500):
                for r in c.execute(select(*cols).where(jobs.c.key.in_(keys[i : i + 500]))):
                    out[r.key] = plain(r)
        return out

    def queued_page(self, run_id: int, after_seq: int, limit: int) -> list[JobRow]:
        with self._read() as c:
            rows = c.execute(select(jobs).where(jobs.c.run_id == run_id, jobs.c.state == S.QUEUED,
                                                jobs.c.seq > after_seq).order_by(jobs.c.seq).limit(limit))
            return [job_row(r) for r in rows]

    def active_jobs(self) -> list[JobRow]:
        with self._read() as c:
            return [job_row(r) for r in c.execute(select(jobs).where(jobs.c.state.in_(ACTIVE_STATES)).order_by(jobs.c.id))]

    def job(self, ref: str | int) -> JobRow | None:
        """A job by id, full key, key prefix (≥ 6 chars) or task id."""
        with self._read() as c:
            if isinstance(ref, int) or str(ref).isdigit():
                r = c.execute(select(jobs).where(jobs.c.id == int(ref))).first()
                if r:
                    return job_row(r)
            s = str(ref)
            r = c.execute(select(jobs).where(jobs.c.task_id == s)).first()
            if r:
                return job_row(r)
            if len(s) >= 6:
                found = c.execute(select(jobs).where(jobs.c.key.like(s.lower() + "%")).limit(2)).all()
                if len(found) == 1:
                    return job_row(found[0])
                if len(found) > 1:
                    raise UsageError(f"job key prefix {s!r} matches more than one job; give more characters")
        return None

    def jobs_in_state(self, state: str, scope: Scope | None = None) -> list[JobRow]:
        q = select(jobs).where(jobs.c.state == state).order_by(jobs.c.id)
        if scope is not None:
            q = q.where(of_manifest(scope))
        with self._read() as c:
            return [job_row(r) for r in c.execute(q)]

    def counts(self, run_id: int | None = None) -> dict[str, int]:
        q = select(jobs.c.state, func.count()).group_by(jobs.c.state)
        if run_id is not None:
            q = q.where(jobs.c.run_id == run_id)
        with self._read() as c:
            return {s: int(n) for s, n in c.execute(q)}

    def iter_export(self, run_id: int | None = None, batch: int = 2000) -> Iterator[JobRow]:
        """Every job (or one run's) in manifest order, streamed; plain dicts built from the
        driver's tuples (100k rows: the ORM-free path is several times faster)."""
        names = list(jobs.c.keys())
        with self._read() as c:
            ph = placeholder(c)
            sql = f"SELECT {', '.join(names)} FROM jobs"
            params: dict[str, Any] = {}
            if run_id is not None:
                sql += f" WHERE run_id = {ph('run_id')}"
                params["run_id"] = run_id
            result = c.execution_options(stream_results=True).exec_driver_sql(
                sql + " ORDER BY run_id, seq, id", params)
            for chunk in result.partitions(batch):
                for r in chunk:
                    yield cast(JobRow, dict(zip(names, r)))

    def events_for(self, job_id: int) -> list[dict[str, Any]]:
        with self._read() as c:
            return [plain(r) for r in c.execute(select(events).where(events.c.job_id == job_id).order_by(events.c.id))]

    def known_task_ids(self) -> set[str]:
        """Every task id the ledger ever recorded (current and superseded by a retry)."""
        with self._read() as c:
            ids = {t for (t,) in c.execute(select(events.c.task_id).where(events.c.task_id.is_not(None)))}
            ids.update(t for (t,) in c.execute(select(jobs.c.task_id).where(jobs.c.task_id.is_not(None))))
        return ids

    def scope_counts(self, scope: Scope) -> dict[str, int]:
        """Per-state counts of every job recorded for this manifest (by any worker's run)."""
        q = (select(jobs.c.state, func.count()).where(of_manifest(scope))
             .group_by(jobs.c.state))
        with self._read() as c:
            return {s: int(n) for s, n in c.execute(q)}
