"""Reads of jobs: what the scheduler feeds from, and what status, report, export, diff and
plan query. Nothing here writes."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import func, select

from ..errors import UsageError
from ..jobs import JobRow, JobState, hex_digest
from ..schema import Digest, decisions, events, jobs, manifest_jobs, runs
from .database import Room
from .decisions import LATEST_COLUMNS, LATEST_JOIN
from .scope import Scope, manifest_id, of_manifest
from .shapes import SHAPE_SQL, as_job
from .sql import ACTIVE_STATES, UNFINISHED_STATES, in_chunks, job_row, job_select, placeholder, plain

S = JobState


class Reads(Room):
    """Every read of the ``jobs`` and ``events`` tables callers make."""

    def job(self, ref: str | int) -> JobRow | None:
        """A job by id, full key, key prefix (≥ 6 chars) or task id."""
        with self._read() as c:
            if isinstance(ref, int) or str(ref).isdigit():
                r = c.execute(job_select().where(jobs.c.id == int(ref))).first()
                if r:
                    return job_row(r)
            s = str(ref)
            r = c.execute(job_select().where(jobs.c.task_id == s)).first()
            if r:
                return job_row(r)
            prefix = s.lower()
            if 6 <= len(prefix) <= 64 and all(ch in "0123456789abcdef" for ch in prefix):
                # Keys are stored as raw bytes: a hex prefix is the range of keys it can start.
                lo, hi = prefix.ljust(64, "0"), prefix.ljust(64, "f")
                found = c.execute(job_select().where(jobs.c.key.between(lo, hi)).limit(2)).all()
                if len(found) == 1:
                    return job_row(found[0])
                if len(found) > 1:
                    raise UsageError(f"job key prefix {s!r} matches more than one job; give more characters")
        return None

    def jobs_in_state(self, state: str, scope: Scope | None = None) -> list[JobRow]:
        q = job_select().where(jobs.c.state == state).order_by(jobs.c.id)
        if scope is not None:
            q = q.where(of_manifest(scope))
        with self._read() as c:
            return [job_row(r) for r in c.execute(q)]

    def queued_models(self, run_id: int) -> list[str]:
        """The models this run still has queued jobs of (the feed reads each on its own)."""
        with self._read() as c:
            q = select(jobs.c.model).where(jobs.c.run_id == run_id, jobs.c.state == S.QUEUED).distinct()
            return sorted(m for (m,) in c.execute(q))

    def render_history(self, models: Iterable[str], limit: int = 2000) -> dict[str, dict[str, Any]]:
        """What the ledger saw of each model's latest ``limit`` rendered clips: render times
        (result ready − create answered), polls per task, result ready → file in place
        (``fetch``, median) and file in place → verified (``check``, median; None when no clip
        of it was verified)."""
        out: dict[str, dict[str, Any]] = {}
        with self._read() as c:
            for model in models:
                rows = c.execute(select(jobs.c.completed_at - jobs.c.submitted_at, jobs.c.polls,
                                        jobs.c.done_at - jobs.c.completed_at, jobs.c.verified_at - jobs.c.done_at)
                                 .where(jobs.c.model == model, jobs.c.completed_at.is_not(None),
                                        jobs.c.submitted_at.is_not(None), jobs.c.state.in_([S.DONE, S.COMPLETED]))
                                 .order_by(jobs.c.completed_at.desc()).limit(limit)).all()
                if rows:
                    fetch = sorted(r[2] for r in rows if r[2] is not None)
                    check = sorted(max(0.0, r[3]) for r in rows if r[3] is not None)
                    out[model] = {"renders": [max(0.0, float(r[0])) for r in rows],
                                  "polls": sum(r[1] or 0 for r in rows) / len(rows),
                                  "fetch": fetch[len(fetch) // 2] if fetch else None,
                                  "check": check[len(check) // 2] if check else None}
        return out

    def queued_page(self, run_id: int, model: str, after: tuple[int, int] | None, limit: int) -> list[JobRow]:
        """The next ``limit`` queued jobs of ``model`` in this run after ``after`` (the
        (priority, seq) of the last one read; None from the start): highest priority first,
        then in manifest order. Read one priority at a time, each an ascending scan of the
        partial index ``ix_jobs_queued``, so a page costs its rows, not the run's."""
        queued = (jobs.c.run_id == run_id, jobs.c.model == model, jobs.c.state == S.QUEUED)
        out: list[JobRow] = []
        with self._read() as c:
            if after is None:
                level = c.execute(select(func.max(jobs.c.priority)).where(*queued)).scalar()
                seq = 0
            else:
                level, seq = after
            while level is not None and len(out) < limit:
                q = (job_select().where(*queued, jobs.c.priority == level, jobs.c.seq > seq)
                     .order_by(jobs.c.seq).limit(limit - len(out)))
                out += [job_row(r) for r in c.execute(q)]
                if len(out) < limit:  # this priority is exhausted: the next lower one
                    level = c.execute(select(func.max(jobs.c.priority)).where(*queued, jobs.c.priority < level)).scalar()
                    seq = 0
        return out

    def active_jobs(self) -> list[JobRow]:
        with self._read() as c:
            q = job_select().where(jobs.c.state.in_(ACTIVE_STATES)).order_by(jobs.c.id)
            return [job_row(r) for r in c.execute(q)]

    def unfinished(self, limit: int = 10) -> list[JobRow]:
        """Oldest jobs that are neither finished nor waiting for a human."""
        with self._read() as c:
            q = (job_select().where(jobs.c.state.in_(UNFINISHED_STATES))
                 .order_by(func.coalesce(jobs.c.submitted_at, jobs.c.created_at), jobs.c.id).limit(limit))
            return [job_row(r) for r in c.execute(q)]

    def expiring(self, within_s: float, ttl_s: float) -> list[JobRow]:
        """Completed jobs whose result URL expires within ``within_s`` and that are not downloaded."""
        cutoff = time.time() - ttl_s + within_s
        with self._read() as c:
            q = job_select().where(jobs.c.state == S.COMPLETED, jobs.c.result_at <= cutoff).order_by(jobs.c.result_at)
            return [job_row(r) for r in c.execute(q)]

    def counts(self, run_id: int | None = None) -> dict[str, int]:
        q = select(jobs.c.state, func.count()).group_by(jobs.c.state)
        if run_id is not None:
            q = q.where(jobs.c.run_id == run_id)
        with self._read() as c:
            return {s: int(n) for s, n in c.execute(q)}

    def scope_counts(self, scope: Scope) -> dict[str, int]:
        """Per-state counts of every job recorded for this manifest (by any worker's run)."""
        q = (select(jobs.c.state, func.count()).where(of_manifest(scope))
             .group_by(jobs.c.state))
        with self._read() as c:
            return {s: int(n) for s, n in c.execute(q)}

    def states_by_key(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """What the ledger knows of these job keys: state, task id, attempts, error, file."""
        out: dict[str, dict[str, Any]] = {}
        keys = list(keys)
        cols = (jobs.c.key, jobs.c.state, jobs.c.task_id, jobs.c.attempts, jobs.c.error_code, jobs.c.retryable,
                jobs.c.output_path, jobs.c.verify, jobs.c.pruned_at)
        with self._read() as c:
            for chunk in in_chunks(keys):
                for r in c.execute(select(*cols).where(jobs.c.key.in_(chunk))):
                    out[r.key] = plain(r)
        return out

    def manifest_members(self, manifest: str) -> list[JobRow] | None:
        """The jobs this manifest path expanded to when last recorded (None: not known — a
        ledger written before batchgen recorded it)."""
        q = (job_select().join(manifest_jobs, manifest_jobs.c.job_id == jobs.c.id)
             .where(manifest_jobs.c.manifest_id == manifest_id(manifest)).order_by(jobs.c.seq, jobs.c.id))
        with self._read() as c:
            rows = [job_row(r) for r in c.execute(q)]
            if rows:
                return rows
            last = c.execute(select(runs.c.manifest_sha256).where(runs.c.manifest == manifest)
                             .order_by(runs.c.id.desc()).limit(1)).scalar()
            if last is None:
                return None
            # Older ledgers: the jobs recorded by runs of that manifest's last version.
            return [job_row(r) for r in c.execute(job_select().where(of_manifest(Scope(manifest, last)))
                                                .order_by(jobs.c.seq, jobs.c.id))]

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

    def iter_export(self, run_id: int | None = None, batch: int = 2000, manifest: str | None = None,
                    review: bool = False) -> Iterator[JobRow]:
        """Every job (or one run's, and/or the jobs ``manifest`` expanded to when last recorded:
        the rows ``manifest_members`` returns, never held) by run and in manifest order within a run, streamed; plain dicts
        built from the driver's tuples (100k rows: the ORM-free path is several times faster)."""
        names = list(jobs.c.keys())
        with self._read() as c:
            ph = placeholder(c)
            where: list[str] = []
            params: dict[str, Any] = {}
            if run_id is not None:
                where.append(f"jobs.run_id = {ph('run_id')}")
                params["run_id"] = run_id
            if manifest is not None:
                params["manifest"] = manifest
                if c.execute(select(manifest_jobs.c.job_id).where(manifest_jobs.c.manifest_id == manifest_id(manifest))
                             .limit(1)).first() is not None:
                    where.append(f"jobs.id IN (SELECT job_id FROM manifest_jobs WHERE manifest_id = "
                                 f"(SELECT id FROM manifests WHERE path = {ph('manifest')}))")
                else:  # older ledgers: the runs of that manifest's last version (see manifest_members)
                    where.append(f"jobs.run_id IN (SELECT id FROM runs WHERE manifest_sha256 = (SELECT manifest_sha256 "
                                 f"FROM runs WHERE manifest = {ph('manifest')} ORDER BY id DESC LIMIT 1))")
            # ``review``: each job's latest review decision too (export and report), joined only
            # when anyone decided anything: a ledger nobody reviewed streams as fast as before.
            reviewed = review and c.execute(select(decisions.c.id).limit(1)).first() is not None
            verdicts = ", ".join(LATEST_COLUMNS) if reviewed else "NULL, NULL, NULL, NULL"
            sql = (f"SELECT {', '.join('jobs.' + n for n in names)}, {verdicts}, {SHAPE_SQL} FROM jobs"
                   + (f" {LATEST_JOIN}" if reviewed else "")
                   + (" WHERE " + " AND ".join(where) if where else ""))
            result = c.execution_options(stream_results=True).exec_driver_sql(
                sql + " ORDER BY jobs.run_id, jobs.seq, jobs.id", params)
            # Raw driver rows: the hex that Digest gives typed reads, the whole request (as_job).
            digests = [n for n in names if isinstance(jobs.c[n].type, Digest)]
            first = len(names)
            for chunk in result.partitions(batch):
                for r in chunk:
                    row = dict(zip(names, r))
                    for n in digests:
                        row[n] = hex_digest(row[n])
                    if review:
                        row.update(review=r[first], review_note=r[first + 1], reviewer=r[first + 2],
                                   pick=bool(r[first + 3]))
                    yield as_job(row, r[-1])

    def knows_manifest(self, manifest: str) -> bool:
        """Whether any run of this manifest path is recorded."""
        with self._read() as c:
            return c.execute(select(runs.c.id).where(runs.c.manifest == manifest).limit(1)).first() is not None

    def events_for(self, job_id: int) -> list[dict[str, Any]]:
        with self._read() as c:
            return [plain(r) for r in c.execute(select(events).where(events.c.job_id == job_id).order_by(events.c.id))]

    def known_task_ids(self) -> set[str]:
        """Every task id the ledger ever recorded (current and superseded by a retry)."""
        with self._read() as c:
            ids = {t for (t,) in c.execute(select(events.c.task_id).where(events.c.task_id.is_not(None)))}
            ids.update(t for (t,) in c.execute(select(jobs.c.task_id).where(jobs.c.task_id.is_not(None))))
        return ids
