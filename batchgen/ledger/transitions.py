"""Job transitions: the only code that changes a job's state once it is recorded.

A job is recorded ``queued`` (``recording.py``); every later move — submitting, submitted,
rendering, completed, done, failed, in doubt, cancelled, back to queued — is a ``Transition``
applied here by ``Transitions.apply`` (or ``apply_in``, inside a caller's transaction), which
checks the job's current state (and, on cooperative ledgers, its lease) and writes an event row.
``jobs.TRANSITIONS`` lists the moves allowed; a ``Transition`` refuses any other when built."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..jobs import JobState, allowed
from ..schema import jobs

S = JobState
RETRYABLE_TASK_CODES = frozenset({"timeout", "generation_failed", "model_unavailable", "generation_timeout",
                                  "service_error", "service_unavailable", "resource_exhausted",
                                  "generation_failed_no_content"})
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
