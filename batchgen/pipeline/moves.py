"""The live job: ``LiveJob``, a run's working copy of one job in flight, built from its ledger row.

May not touch: the API, files, pools, retries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..jobs import JobRow, JobState, short_key

S = JobState
# A job polled as `submitted` may have been recorded `rendering` meanwhile (and vice versa).
POLLED = (S.SUBMITTED, S.RENDERING)


@dataclass
class LiveJob:
    """The scheduler's working copy of one job in flight (built from its ledger row)."""

    id: int
    key: str
    name: str
    model: str
    state: JobState
    request: dict[str, Any]
    output: str
    attempts: int
    task_id: str | None = None
    polls: int = 0
    progress: int = 0
    estimated_time: float | None = None
    submitted_at: float | None = None
    result_url: str | None = None
    result_at: float | None = None
    poll_errors: int = 0
    retry_after: float | None = None
    credits: float = 0.0
    sha256: str | None = None  # of the downloaded file
    poster: str | None = None
    sheet: str | None = None
    holds_slot: bool = False  # counted in the scheduler's render slots (create → result ready)

    @property
    def short(self) -> str:
        return short_key(self.key)

    @classmethod
    def from_row(cls, r: JobRow) -> LiveJob:
        return cls(id=r["id"], key=r["key"], name=r["name"], model=r["model"], state=JobState(r["state"]),
                   request=json.loads(r["request"]),
                   output=r["output"], attempts=r["attempts"], task_id=r["task_id"], polls=r["polls"] or 0,
                   progress=r["progress"] or 0, estimated_time=r["estimated_time"], submitted_at=r["submitted_at"],
                   result_url=r["result_url"], result_at=r["result_at"], credits=r["credits"] or 0.0,
                   sha256=r["sha256"], poster=r["poster"], sheet=r["sheet"])
