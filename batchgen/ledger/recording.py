"""Recording a manifest's jobs: a run and its jobs written in one transaction (new jobs are
inserted ``queued``; known ones only move to the new run), the manifest's membership
(``manifest_jobs``), and the shortcut that reuses an earlier run's validated expansion.
Nothing here changes the state of a job already recorded: that is ``transitions.py``'s."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from ..jobs import Job, JobState, canonical_json, raw_digest
from ..schema import jobs, manifest_jobs, manifests, request_shapes, runs
from .database import Room
from .decisions import retake_chains, rooted_in
from .runs import insert_run
from .scope import Scope, of_manifest
from .shapes import MAX_SHAPES, split
from .sql import RECORD_LOCK, UNFINISHED_STATES, in_chunks, placeholder

S = JobState


class Recorder(Room):
    """Writes what a manifest expands to: runs with their jobs and membership."""

    def record_run(self, manifest: str, manifest_sha256: str, options: dict[str, Any], jobs_: Iterable[Job],
                   check: Any, batch: int = 2000) -> tuple[int, int]:
        """Record a run and its jobs in ONE transaction while the manifest streams by, then call
        ``check()`` (which raises on any problem found during expansion): a bad manifest rolls
        everything back, so nothing is recorded for it, and a good one is expanded only once.
        ``check()`` may return options to add to the run's (known only after expansion)."""
        with self.engine.begin() as c:
            self._one_recorder(c)
            run_id = insert_run(c, self._now(), manifest, manifest_sha256, options, 0)
            members = self._manifest_id(c, manifest)
            c.execute(manifest_jobs.delete().where(manifest_jobs.c.manifest_id == members))
            n = 0
            chunk: list[Job] = []
            for job in jobs_:
                chunk.append(job)
                if len(chunk) >= batch:
                    self._upsert(c, run_id, chunk)
                    self._add_members(c, members, chunk)
                    n += len(chunk)
                    chunk = []
            self._upsert(c, run_id, chunk)
            self._add_members(c, members, chunk)
            n += len(chunk)
            n += self._carry_retakes(c, run_id, members)
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
            self._one_recorder(c)
            earlier = c.execute(select(runs.c.id, runs.c.jobs_total, runs.c.options).where(
                runs.c.manifest_sha256 == manifest_sha256).order_by(runs.c.id.desc()).limit(50)).all()
            match = next((r for r in earlier if json.loads(r.options).get("inputs_sha256") == inputs_sha256), None)
            if match is None:
                return None
            # This path's recorded membership must be of these inputs too (it was edited and
            # edited back — its bytes or only its rows CSV: record it again, or its scope would
            # be the other version's jobs, and retakes of its clips would not be its own).
            last = c.execute(select(runs.c.manifest_sha256, runs.c.options).where(runs.c.manifest == manifest)
                             .order_by(runs.c.id.desc()).limit(1)).first()
            if last is not None and (last.manifest_sha256 != manifest_sha256
                                     or json.loads(last.options).get("inputs_sha256") != inputs_sha256):
                return None
            scope = of_manifest(Scope(manifest, manifest_sha256))
            n = int(c.execute(select(func.count()).select_from(jobs).where(scope)).scalar() or 0)
            if n != match.jobs_total:
                return None
            run_id = insert_run(c, self._now(), manifest, manifest_sha256,
                                {**options, "inputs_sha256": inputs_sha256}, n)
            c.execute(update(jobs).where(scope, jobs.c.run_id != run_id, jobs.c.state != S.DONE)
                      .values(run_id=run_id, updated_at=time.time()))
            if check_outputs is not None:  # raises on a problem: nothing of this run is recorded
                check_outputs((r.output, r.source) for r in c.execution_options(yield_per=5000).execute(
                    select(jobs.c.output, jobs.c.source).where(scope, jobs.c.state.in_(UNFINISHED_STATES))))
        return run_id, n, int(match.id)

    def _one_recorder(self, c: Connection) -> None:
        """On PostgreSQL, wait for any other worker's recording to commit first (``RECORD_LOCK``)."""
        if not self.is_sqlite:
            c.execute(select(func.pg_advisory_xact_lock(RECORD_LOCK)))

    def _carry_retakes(self, c: Connection, run_id: int, members: int) -> int:
        """Retakes (``batchgen retake``) of this manifest's jobs belong to it although its file
        does not list them: those whose chain leads to a job of this expansion (``rooted_in``,
        the definition `plan` and `diff` count by) become members, and the queued ones move to
        this run, so the run renders exactly them. Returns how many were added."""
        parents = {int(i): int(p) for i, p in c.execute(
            select(jobs.c.id, jobs.c.retake_of).where(jobs.c.retake_of.is_not(None)))}
        chains = retake_chains(c, parents)
        # Membership holds this expansion's jobs alone here (the caller rewrote it).
        on_chains = sorted(set(parents) | {a for chain in chains.values() for a in chain})
        present: set[int] = set()
        for chunk in in_chunks(on_chains):
            present.update(int(j) for (j,) in c.execute(select(manifest_jobs.c.job_id).where(
                manifest_jobs.c.manifest_id == members, manifest_jobs.c.job_id.in_(chunk))))
        added = sorted(rooted_in(chains, present) - present)
        if added:
            c.execute(manifest_jobs.insert(), [{"manifest_id": members, "job_id": j} for j in added])
        c.execute(update(jobs).where(jobs.c.retake_of.is_not(None), jobs.c.state == S.QUEUED, jobs.c.run_id != run_id,
                                     jobs.c.id.in_(select(manifest_jobs.c.job_id)
                                                   .where(manifest_jobs.c.manifest_id == members)))
                  .values(run_id=run_id, updated_at=time.time()))
        return len(added)

    def record_retakes(self, retakes: Sequence[tuple[int, Job]]) -> int:
        """Record retakes in one transaction: each new ``Job`` (``retake_of`` set) queued in the
        run of the job it replaces, and a member of every manifest that job belongs to.
        Returns how many were recorded (a key already known is not recorded again)."""
        with self.engine.begin() as c:
            n = 0
            for run_id, job in retakes:
                if c.execute(select(jobs.c.id).where(jobs.c.key == job.key)).first() is not None:
                    continue
                self._upsert(c, run_id, [job])
                ph = placeholder(c)
                c.exec_driver_sql(f"INSERT INTO manifest_jobs (manifest_id, job_id) SELECT manifest_id, "
                                  f"(SELECT id FROM jobs WHERE key = {ph('key')}) FROM manifest_jobs WHERE job_id = "
                                  f"{ph('of')} ON CONFLICT DO NOTHING", {"key": raw_digest(job.key), "of": job.retake_of})
                # Owed where the clip it replaces was owed (and under the same `--deliver-only`).
                original = select(jobs.c.deliver_to, jobs.c.deliver_only).where(jobs.c.id == job.retake_of).subquery()
                c.execute(update(jobs).where(jobs.c.key == job.key).values(
                    deliver_to=select(original.c.deliver_to).scalar_subquery(),
                    deliver_only=select(original.c.deliver_only).scalar_subquery()))
                n += 1
        return n

    def _manifest_id(self, c: Connection, manifest: str) -> int:
        """This manifest path's id in ``manifests``, recorded now if it is new."""
        c.execute(self._insert_into(manifests).values(path=manifest).on_conflict_do_nothing(
            index_elements=[manifests.c.path]))
        return int(c.execute(select(manifests.c.id).where(manifests.c.path == manifest)).scalar_one())

    def _add_members(self, c: Connection, members: int, batch: Sequence[Job]) -> None:
        """This manifest's job set (`batchgen diff`) as recorded now; the caller deleted the old."""
        if batch:
            ph = placeholder(c)
            c.exec_driver_sql(f"INSERT INTO manifest_jobs (manifest_id, job_id) SELECT {ph('m')}, id FROM jobs "
                              f"WHERE key = {ph('key')} ON CONFLICT DO NOTHING",
                              [{"m": members, "key": raw_digest(j.key)} for j in batch])

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
        cols = ("key", "run_id", "seq", "name", "source", "model", "request", "shape_id", "output", "take", "priority",
                "retake_of", "state", "created_at", "updated_at")
        # A known job moves to this run with its place, name and priority as the manifest says
        # them now (none of them is part of its key).
        moved = ("run_id", "seq", "name", "source", "output", "priority", "updated_at")
        # Driver-level executemany: SQLAlchemy's per-row parameter handling cost more than SQLite
        # itself here (100k rows on resume). Same SQL on SQLite and PostgreSQL.
        sql = (f"INSERT INTO jobs ({', '.join(cols)}) VALUES ({', '.join(ph(k) for k in cols)}) "
               f"ON CONFLICT (key) DO UPDATE SET {', '.join(f'{k} = excluded.{k}' for k in moved)} "
               f"WHERE jobs.state <> '{S.DONE.value}'")
        # Each distinct shape once (shapes.py); the row keeps the prompt's text and the shape's id.
        texts = [j.request_json or canonical_json(j.request) for j in batch]
        parts = [split(j.request, t) for j, t in zip(batch, texts)]
        ids = shape_ids(c, (p[0] for p in parts if p is not None))
        rows = []
        for j, text, part in zip(batch, texts, parts):
            shape_id = None if part is None else ids.get(part[0])
            rows.append({"key": raw_digest(j.key), "run_id": run_id, "seq": j.seq, "name": j.name,
                         "source": j.source, "model": j.model, "shape_id": shape_id,
                         "request": text if part is None or shape_id is None else part[1],
                         "output": j.output, "take": j.take, "priority": j.priority, "retake_of": j.retake_of,
                         "state": S.QUEUED, "created_at": now, "updated_at": now})
        c.exec_driver_sql(sql, rows)


def shape_ids(c: Connection, shapes: Iterable[str]) -> dict[str, int]:
    """The ids of these shapes, recording the new ones while the ledger has room for them
    (inside the caller's transaction: an id is never known for a shape that was rolled back)."""
    wanted = set(shapes)
    if not wanted:
        return {}
    q = select(request_shapes.c.body, request_shapes.c.id)
    ids = {b: int(i) for b, i in c.execute(q.where(request_shapes.c.body.in_(sorted(wanted))))}
    missing = sorted(wanted - ids.keys())
    if missing:
        room = MAX_SHAPES - int(c.execute(select(func.count()).select_from(request_shapes)).scalar() or 0)
        if room > 0:
            # ON CONFLICT: another worker may record the same shape meanwhile (PostgreSQL).
            ins = (postgresql.insert if c.dialect.name == "postgresql" else sqlite.insert)(request_shapes)
            c.execute(ins.on_conflict_do_nothing(index_elements=[request_shapes.c.body]),
                      [{"body": b} for b in missing[:room]])
            ids.update((b, int(i)) for b, i in c.execute(q.where(request_shapes.c.body.in_(missing[:room]))))
    return ids
