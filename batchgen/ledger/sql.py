"""Query pieces several rooms of the ledger share: state lists, conditions, row conversion."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import Select, and_, exists, select
from sqlalchemy.engine import Connection

from ..jobs import ACTIVE, JobRow, JobState, RunStatus
from ..schema import jobs, runs
from .shapes import SHAPE, whole

S = JobState
# SQL IN lists of states, in a fixed order (stable statements for the driver's cache).
ACTIVE_STATES = sorted(ACTIVE)
UNFINISHED_STATES = [S.QUEUED, S.SUBMITTING, *ACTIVE_STATES]


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


def as_job(row: dict[str, Any], shape: str | None) -> JobRow:
    """``row`` (every column of ``jobs``) with its request made whole from ``shape`` and the
    storage detail dropped: what ``job_row`` and the driver-level export both hand out."""
    row["request"] = whole(shape, row["request"])
    del row["shape_id"]
    return cast(JobRow, row)


def plain(r: Any) -> dict[str, Any]:
    return dict(r._mapping)


def is_owed() -> Any:
    """Done clips that a manifest asked to deliver and that the store does not hold (yet)."""
    return and_(jobs.c.state == S.DONE, jobs.c.deliver_to.is_not(None), jobs.c.delivered_url.is_(None))


def holder_alive() -> Any:
    """The job's lease belongs to a run that is still running."""
    return exists().where(runs.c.id == jobs.c.worker_id, runs.c.status == RunStatus.RUNNING)
