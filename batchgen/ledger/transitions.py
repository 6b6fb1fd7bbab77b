"""Job transitions: the only code that changes a job's state once it is recorded.

A job is recorded ``queued`` (``recording.py``); every later move — submitting, submitted,
rendering, completed, done, failed, in doubt, cancelled, back to queued — is a ``Transition``
applied here, by ``Transitions.apply`` or, inside a caller's transaction (a lease takeover),
by ``apply_in``: each checks the job's current state (and, on cooperative ledgers, its lease)
and writes an event row. ``jobs.TRANSITIONS`` lists the moves allowed; a ``Transition``
refuses any other when it is built. The scheduler reaches ``apply`` through ``Writer``."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from .. import crash
from ..errors import LedgerError
from ..failures import retry_verdict
from ..jobs import JobRow, JobState, allowed, raw_digest
from ..schema import breakers, jobs
from .database import Room
from .sql import BREAKER_LOCK, in_chunks, job_row, job_select, placeholder

S = JobState
_JOB_COLUMNS = frozenset(jobs.c.keys())


@dataclass(slots=True)
class Transition:
    """One state change of one job: ``UPDATE … WHERE state IN expect`` plus an event row.
    ``ok`` is False afterwards when the job was not in an expected state (someone else moved it).
    A move that ``jobs.TRANSITIONS`` does not allow is refused here, when it is built."""

    job_id: int
    to: JobState
    expect: tuple[JobState, ...]
    values: dict[str, Any] = field(default_factory=dict)
    detail: str | None = None
    task_id: str | None = None
    event: bool = True
    owner: int | None = None  # cooperative ledgers: the move only applies if this worker holds the job
    # An intent that is not a breaker's probe: refused while the job's model has an open breaker
    # in the ledger (whichever worker opened it), and the job's lease handed back to the fleet.
    breaker_gated: bool = False

    def __post_init__(self) -> None:
        for before in self.expect:
            if not allowed(before, self.to):
                raise ValueError(f"job {self.job_id}: {before} → {self.to} is not an allowed move")


def interrupted_create(ids: Iterable[int], who: str, detail: str) -> list[Transition]:
    """``submitting`` → ``in_doubt`` for jobs whose creator stopped mid-create: the POST may or
    may not have made a (billed) task and nothing can tell, so they are never resubmitted."""
    return [Transition(i, S.IN_DOUBT, (S.SUBMITTING,), {
        "error_code": "interrupted_create", "worker_id": None,
        "error_message": f"{who} stopped between recording the intent and recording the task id"},
        detail=detail) for i in ids]


def apply_in(c: Connection, batch: Sequence[Transition]) -> list[bool]:
    """Check every job's current state once, then write each job once and every event row:
    one driver-level executemany per shape of UPDATE plus one for the events. Per-statement
    overhead, not per-job work, dominates a busy run, so this is the hot path's shape.

    Several moves of one job in a batch are checked in order and merged into one UPDATE (its
    final state and values); each still gets its own event row. Runs inside the caller's
    transaction: BEGIN IMMEDIATE on SQLite, and the states are read FOR UPDATE on PostgreSQL,
    so they cannot change before the writes. A transition with an ``owner`` also requires
    the job's lease to be that worker's (cooperative ledgers)."""
    now = time.time()
    # Sorted: workers locking overlapping rows in one order cannot deadlock each other.
    ids = sorted(set(t.job_id for t in batch))
    current: dict[int, str] = {}
    holder: dict[int, int | None] = {}
    model: dict[int, str] = {}
    for chunk in in_chunks(ids):
        q = select(jobs.c.id, jobs.c.state, jobs.c.worker_id, jobs.c.model).where(jobs.c.id.in_(chunk))
        if c.dialect.name == "postgresql":
            q = q.order_by(jobs.c.id).with_for_update()
        for job_id, state, worker, job_model in c.execute(q):
            current[job_id] = state
            holder[job_id] = worker
            model[job_id] = job_model
    # Read in the intents' own transaction: a breaker committed before it is seen, so no
    # worker creates a task of a model another worker has just stopped (see breakers.py).
    stopped: set[str] = set()
    if any(t.breaker_gated for t in batch):
        if c.dialect.name == "postgresql":  # shared: intents do not wait for each other, only for an opening
            c.execute(select(func.pg_advisory_xact_lock_shared(BREAKER_LOCK)))
        stopped = set(c.execute(select(breakers.c.model).where(breakers.c.closed_at.is_(None))).scalars())
    handed_back: list[int] = []
    results: list[bool] = []
    merged: dict[int, dict[str, Any]] = {}
    event_rows: list[dict[str, Any]] = []
    for t in batch:
        before = current.get(t.job_id)
        ok = before in t.expect and (t.owner is None or holder.get(t.job_id) == t.owner)
        if ok and t.breaker_gated and model[t.job_id] in stopped:
            ok = False
            if t.owner is not None:
                handed_back.append(t.job_id)
        results.append(ok)
        if not ok:
            continue
        current[t.job_id] = t.to
        vals = merged.setdefault(t.job_id, {})
        vals.update(t.values)
        vals["state"] = t.to
        vals["updated_at"] = now
        if t.task_id is not None:
            vals["task_id"] = t.task_id
        if t.event:
            event_rows.append({"job_id": t.job_id, "at": now, "from_state": before, "to_state": t.to,
                               "task_id": t.task_id, "detail": t.detail})
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for job_id, vals in merged.items():
        if vals.get("sha256") is not None:  # stored as its raw bytes (schema.Digest)
            vals["sha256"] = raw_digest(vals["sha256"])
        groups.setdefault(tuple(sorted(vals)), []).append({**vals, "_id": job_id})
    ph = placeholder(c)
    for cols, rows in groups.items():
        unknown = set(cols) - _JOB_COLUMNS
        if unknown:
            raise LedgerError(f"unknown job column(s) {sorted(unknown)}")
        c.exec_driver_sql(f"UPDATE jobs SET {', '.join(f'{k} = {ph(k)}' for k in cols)} WHERE id = {ph('_id')}", rows)
    if handed_back:  # queued still, for whichever worker claims it once the breaker closes
        c.execute(update(jobs).where(jobs.c.id.in_(handed_back)).values(worker_id=None))
    if event_rows:
        cols = ("job_id", "at", "from_state", "to_state", "task_id", "detail")
        c.exec_driver_sql(f"INSERT INTO events ({', '.join(cols)}) VALUES ({', '.join(ph(k) for k in cols)})",
                          event_rows)
    return results


class Transitions(Room):
    """Applies transitions (group commits) and the bulk moves built from them."""

    def apply(self, batch: Sequence[Transition]) -> list[bool]:
        """Apply transitions in one transaction (group commit). If one of them violates a
        constraint the batch is retried one by one, so a bad one cannot sink the others."""
        try:
            results = self._retrying(apply_in, batch)
            crash.point("after_commit")
            return results
        except IntegrityError:
            if len(batch) == 1:
                raise
        out = []
        for t in batch:
            try:
                out.extend(self._retrying(apply_in, [t]))
            except IntegrityError as e:
                raise LedgerError(f"job {t.job_id} → {t.to}: {str(e.orig).splitlines()[0]}") from None
        return out

    def orphans_to_in_doubt(self) -> list[JobRow]:
        """Jobs left in ``submitting`` by a process that died mid-create: the POST may or may not
        have made a (billed) task and nothing can tell, so they are never resubmitted silently."""
        with self._read() as c:
            q = job_select().where(jobs.c.state == S.SUBMITTING).order_by(jobs.c.id)
            stuck = [job_row(r) for r in c.execute(q)]
        if stuck:
            self.apply(interrupted_create((j["id"] for j in stuck), "the process", "found in submitting at start-up"))
        return stuck

    def requeue_retryable_failures(self, run_id: int, max_attempts: int) -> tuple[int, int]:
        """--retry-failed: this run's retryable failures back to the queue; (requeued, left failed
        because they had their ``max_attempts`` creates already: the run says so). Which ones is
        ``retry_verdict``'s to say, the rule `plan --retry-failed` counts by."""
        with self._read() as c:
            rows = c.execute(select(jobs.c.id, jobs.c.state, jobs.c.task_id, jobs.c.error_code, jobs.c.retryable,
                                    jobs.c.attempts).where(jobs.c.run_id == run_id, jobs.c.state == S.FAILED)
                             ).mappings().all()
        verdicts = [(r, retry_verdict(r, max_attempts)) for r in rows]
        ts = [Transition(r["id"], S.QUEUED, (S.FAILED,), {"task_id": None, "retryable": None},
                         detail=f"--retry-failed after {r['error_code']}") for r, v in verdicts if v == "retry"]
        if ts:
            self.apply(ts)
        return len(ts), sum(v == "spent" for _, v in verdicts)

    def cancel_queued(self, run_id: int) -> int:
        """Mark the run's never-submitted jobs cancelled (in batches; each gets an event)."""
        with self._read() as c:
            ids = [i for (i,) in c.execute(select(jobs.c.id).where(jobs.c.run_id == run_id, jobs.c.state == S.QUEUED))]
        done = 0
        for i in range(0, len(ids), 1000):
            done += sum(self.apply([Transition(j, S.CANCELLED, (S.QUEUED,), {"error_code": "cancelled",
                        "error_message": "cancelled by operator before submission"}, detail="batchgen cancel")
                        for j in ids[i : i + 1000]]))
        return done
