"""Query pieces several rooms of the ledger share: state lists, conditions, row conversion."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import Select, and_, exists, func, or_, select
from sqlalchemy.engine import Connection

from ..jobs import ACTIVE, JobRow, JobState, RunStatus, Verdict
from ..schema import decisions, jobs, request_shapes, runs
from .shapes import as_job

S = JobState
# SQL IN lists of states, in a fixed order (stable statements for the driver's cache).
ACTIVE_STATES = sorted(ACTIVE)
UNFINISHED_STATES = [S.QUEUED, S.SUBMITTING, *ACTIVE_STATES]
# The advisory lock between a breaker's opening (exclusive) and the intents it gates (shared) on
# PostgreSQL ("brkr"): an intent is committed either before the breaker's ``opened_at`` or after
# it, seeing it, never beside it unseen (READ COMMITTED alone lets the two cross).
BREAKER_LOCK = 0x62726B72
# The advisory lock a run's recording takes on PostgreSQL ("rcrd"): workers starting together (or
# restarted after a kill) record one after another. Each moves the manifest's unfinished jobs to
# its run and rewrites its membership; beside each other, two such transactions lock the same job
# rows in different orders and PostgreSQL aborts one (DeadlockDetected: that worker exited 7).
RECORD_LOCK = 0x7263726B
# The shape's text for the row being read (NULL for a request stored whole): ``shapes.SHAPE_SQL``
# as SQLAlchemy builds it, a column of every job select.
SHAPE = (select(request_shapes.c.body).where(request_shapes.c.id == jobs.c.shape_id)
         .scalar_subquery().label("shape"))


T = TypeVar("T")
IN_CHUNK = 500  # values in one ``IN (...)``: well under SQLite's and PostgreSQL's parameter limits


def in_chunks(values: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    """``values`` in slices of at most ``size``, one ``IN (...)`` query each."""
    for i in range(0, len(values), size):
        yield values[i : i + size]


def placeholder(c: Connection) -> Callable[[str], str]:
    """Named parameter syntax of the driver (sqlite3 takes :name, psycopg %(name)s)."""
    if c.dialect.paramstyle in ("pyformat", "format"):
        return lambda name: f"%({name})s"
    return lambda name: f":{name}"


def job_select() -> Select[Any]:
    """``SELECT`` of whole job rows: every column and the request's shape (``job_row``)."""
    return select(jobs, SHAPE)


def job_row(r: Any) -> JobRow:
    """A row of ``job_select`` (or a ``RETURNING`` of the same columns) as callers see a job:
    its whole request, without how it is stored."""
    row = dict(r._mapping)
    return as_job(row, row.pop("shape"))


def plain(r: Any) -> dict[str, Any]:
    return dict(r._mapping)


def is_owed() -> Any:
    """Done clips that a manifest asked to deliver and that the store does not hold (yet); with
    ``deliver_only`` approved, only once a reviewer approved them (see ``approved_to_deliver``)."""
    return and_(jobs.c.state == S.DONE, jobs.c.deliver_to.is_not(None), jobs.c.delivered_url.is_(None),
                or_(jobs.c.deliver_only.is_(None), approved_to_deliver()))


def latest_decision(job_id: Any) -> Any:
    """The id of the latest review decision of the job ``job_id`` names (a column of the enclosing query)."""
    x = decisions.alias("x")
    # Correlated to the job of the enclosing query, however deep (SQLAlchemy correlates only
    # to the immediately enclosing SELECT on its own).
    return select(func.max(x.c.id)).where(x.c.job_id == job_id).correlate_except(x).scalar_subquery()


def approved_to_deliver() -> Any:
    """The job's latest decision approves it, and it is its shot's pick or its shot (the same
    request: its other takes) has no pick: `--deliver-only approved`."""
    mine = decisions.alias("mine")
    other = jobs.alias("other")
    theirs = decisions.alias("theirs")
    approved = exists().where(mine.c.job_id == jobs.c.id, mine.c.id == latest_decision(jobs.c.id),
                              mine.c.verdict == Verdict.APPROVE)
    picked = exists().where(mine.c.job_id == jobs.c.id, mine.c.id == latest_decision(jobs.c.id), mine.c.pick.is_(True))
    sibling_picked = exists().where(
        other.c.id != jobs.c.id, other.c.model == jobs.c.model, other.c.request == jobs.c.request,
        other.c.shape_id.is_not_distinct_from(jobs.c.shape_id),
        theirs.c.job_id == other.c.id, theirs.c.id == latest_decision(other.c.id), theirs.c.pick.is_(True))
    return and_(approved, or_(picked, ~sibling_picked))


def holder_alive() -> Any:
    """The job's lease belongs to a run that is still running."""
    return exists().where(runs.c.id == jobs.c.worker_id, runs.c.status == RunStatus.RUNNING)
