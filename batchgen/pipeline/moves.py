"""The live job and every move of it: **the only code of the pipeline that writes a job's state**.

``LiveJob`` is the run's working copy of one job in flight, built from its ledger row. ``Moves``
holds one method per move of the life cycle (intent, task id, in doubt, back to the queue,
rendering, completed, done, failed) and the notes a finished clip gets without changing state
(verification, delivery, pruning). Each builds the ``ledger.Transition`` (the target state and
the states it may come from), hands it to the ledger writer — awaited, queued in order, or as a
future, as the invariants ask — and moves the live per-state counts the display shows, with one
event record. The stages decide *when* a job moves; this module decides *how*.

May not touch: the API, files, pools, retries. It knows nothing of the stages.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..client import TaskInfo
from ..jobs import JobRow, JobState, short_key
from ..ledger import Transition, Writer
from ..logs import events

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
    submitted_at: float | None = None  # when the create was answered (recorded)
    create_sent: float | None = None  # when the create was sent (this process only; see pace.observe_poll)
    result_url: str | None = None
    result_at: float | None = None
    poll_errors: int = 0
    retry_after: float | None = None
    credits: float = 0.0
    sha256: str | None = None  # of the downloaded file
    poster: str | None = None
    sheet: str | None = None
    holds_slot: bool = False  # counted in the scheduler's render slots (create → result ready)
    error_code: str | None = None  # why it failed (set with the move to failed)
    render_retries: int = 0  # tasks created again tonight after a retryable failure (--render-retries)
    # Its intent is refused while its model's breaker is open in the ledger (not a probe; see gate.Gate)
    breaker_gated: bool = False
    # Its create kept failing tonight (--submit-retries): left queued for the next run, or on a
    # fleet for the other workers (this one lets it go and does not claim it again)
    given_up: bool = False
    # An intent written ahead of its render slot (``Submitter.arm``): the request to send (uploads
    # in place); None when the job is not armed.
    armed: dict[str, Any] | None = None

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


# How one stage hands a finished clip to the next (fetch → check → deliver).
Handoff = Callable[[LiveJob, Path], None]
# Columns a move writes besides the state (``Transition.values``).
Values = dict[str, object]


class Moves:
    """Every state change of a live job: the ledger record and the live counts, together."""

    def __init__(self, writer: Writer, api: str) -> None:
        self.w = writer
        self.api = api  # identity of the API tasks are created on, recorded with each intent
        self.states: collections.Counter[str] = collections.Counter()  # display state → jobs
        self._done_times: collections.deque[float] = collections.deque()

    # -------------------------------------------------------------- live counts
    def show_counts(self, counts: dict[str, int]) -> None:
        """Replace the live per-state counts of the display by counts read from the ledger."""
        self.states.clear()
        self.states.update(counts)

    def done_last_minute(self, now: float) -> int:
        while self._done_times and self._done_times[0] < now - 60:
            self._done_times.popleft()
        return len(self._done_times)

    def _move(self, job: LiveJob, state: JobState) -> None:
        """Every local state change: live counts for the display and one event record."""
        self.states[job.state] -= 1
        self.states[state] += 1
        if state == S.DONE:
            self._done_times.append(time.monotonic())
        if events.isEnabledFor(logging.INFO):
            events.info("%s %s → %s", job.name, job.state, state, extra={"event": {
                "event": "state", "job": job.key, "name": job.name, "from": job.state, "to": state,
                "task_id": job.task_id, "attempts": job.attempts, "polls": job.polls}})
        job.state = state

    # -------------------------------------------------------------- submit
    async def intent(self, job: LiveJob, *, ahead: bool = False) -> bool:
        """``queued → submitting``, awaited: invariant 1 (durable before any byte of the create
        is sent). ``ahead``: written while every render slot is busy (``Submitter.arm``); its
        event says so, for whoever settles it in doubt after a crash. False when someone else
        moved the job meanwhile (e.g. cancelled), or its model's breaker is open in the ledger
        and the job is not the probe (it stays queued, its lease handed back)."""
        # The first attempt needs no words (the row's `attempts` and the event order say it; 17
        # bytes a job at a million): a retry is worth a line in the history.
        detail = f"create attempt {job.attempts + 1}" if job.attempts else None
        if ahead:
            detail = f"{detail}, ahead of slot" if detail else "ahead of slot"  # short: a line per job
        if not await self.w.apply(Transition(job.id, S.SUBMITTING, (S.QUEUED,), {
                "attempts": job.attempts + 1, "error_code": None, "error_message": None, "api": self.api},
                detail=detail, breaker_gated=job.breaker_gated)):
            return False
        job.attempts += 1
        self._move(job, S.SUBMITTING)
        return True

    async def disarmed(self, job: LiveJob) -> None:
        """``submitting → queued`` for an intent written ahead of its slot and never sent (the
        run stopped, or its model may not start now): nothing reached the API, so the attempt
        it counted is taken back."""
        await self.w.apply(Transition(job.id, S.QUEUED, (S.SUBMITTING,), {"attempts": job.attempts - 1},
                                      detail="intent written ahead of its slot, never sent: back to the queue"))
        job.attempts -= 1
        job.armed = None
        self._move(job, S.QUEUED)

    def submitted(self, job: LiveJob, info: TaskInfo) -> asyncio.Future[bool]:
        """``submitting → submitted`` with the task id. Queued at once, not awaited: the writer
        applies it before anything later of this job, and waiting would add a commit to every
        job's latency without making a crash safer. The future says whether it was recorded."""
        fut = self.w.submit(Transition(job.id, S.SUBMITTED, (S.SUBMITTING,), {
            "remote_status": info.status, "progress": info.progress, "estimated_time": info.estimated_time,
            "credits": info.credits, "submitted_at": job.submitted_at}, task_id=info.task_id))
        self._move(job, S.SUBMITTED)
        return fut

    async def in_doubt(self, job: LiveJob, err: Values, detail: str) -> None:
        """``submitting → in_doubt``: the create's outcome is unknowable; never resubmitted."""
        await self.w.apply(Transition(job.id, S.IN_DOUBT, (S.SUBMITTING,), err, detail=detail))
        self._move(job, S.IN_DOUBT)

    async def requeued(self, job: LiveJob, err: Values, detail: str) -> None:
        """``submitting → queued``: the API created nothing."""
        await self.w.apply(Transition(job.id, S.QUEUED, (S.SUBMITTING,), err, detail=detail))
        self._move(job, S.QUEUED)

    # -------------------------------------------------------------- poll
    def rendering(self, job: LiveJob, values: Values, detail: str) -> None:
        self.w.record(Transition(job.id, S.RENDERING, (S.SUBMITTED,), values, detail=detail))
        self._move(job, S.RENDERING)

    def completed(self, job: LiveJob, values: Values, detail: str | None) -> None:
        """The result is ready (``job.result_url``, ``job.result_at`` set by the caller).
        ``detail``: only what the row does not hold (the poll count is its ``polls``)."""
        self.w.record(Transition(job.id, S.COMPLETED, POLLED, {
            **values, "result_url": job.result_url, "result_at": job.result_at,
            "completed_at": job.result_at}, detail=detail))
        self._move(job, S.COMPLETED)

    # -------------------------------------------------------------- fetch
    def done(self, job: LiveJob, final: Path, size: int, sha: str) -> None:
        """``completed → done``: the file is renamed into place; its sha256 is recorded."""
        self.w.record(Transition(job.id, S.DONE, (S.COMPLETED,), {
            "output_path": str(final), "sha256": sha, "bytes": size, "done_at": time.time(),
            "error_code": None, "error_message": None}))  # no detail: size and sha256 are in the row
        self._move(job, S.DONE)
        job.sha256 = sha

    # -------------------------------------------------------------- any stage
    async def failed(self, job: LiveJob, code: str | None, message: str, *, detail: str, retryable: bool = False,
                     values: Values | None = None) -> None:
        """The job failed for good (until an operator or --retry-failed says otherwise)."""
        expect = POLLED if job.state in POLLED else (job.state,)
        await self.w.apply(Transition(job.id, S.FAILED, expect, {
            **(values or {}), "error_code": code, "error_message": message[:500], "retryable": retryable},
            detail=detail[:220]))
        job.error_code = code
        self._move(job, S.FAILED)

    async def render_again(self, job: LiveJob, detail: str, limit: int | None = None) -> bool | None:
        """``failed → queued`` within the night (``--render-retries``): the provider failed the
        task, and the job is to be created again — a new paid task, through the same intent as
        any create. The failed task's id stays in the job's events. False when someone else
        moved the job meanwhile. ``limit``: on a fleet, its model's limit, checked against every
        worker's tasks in the move's transaction (``Ledger.requeue_within_limit``; its failure
        is committed already); None when the fleet has no room for it now."""
        t = Transition(job.id, S.QUEUED, (S.FAILED,), {
            "task_id": None, "retryable": None, "remote_status": None, "progress": 0, "estimated_time": None,
            "submitted_at": None}, detail=detail[:220], owner=self.w.owner)
        ok = await self.w.apply(t) if limit is None else await self.w.read(self.w.ledger.requeue_within_limit, t, limit)
        if not ok:
            return ok
        self._move(job, S.QUEUED)
        job.render_retries += 1
        job.task_id = job.result_url = job.result_at = job.submitted_at = job.create_sent = None
        job.estimated_time, job.progress, job.poll_errors, job.retry_after = None, 0, 0, None
        return True

    # -------------------------------------------------------------- a done clip's notes (no move)
    def note(self, job: LiveJob, values: Values, *, detail: str | None = None, event: bool = True) -> None:
        """Record facts about a done clip (verification, delivery error, pruning), queued in order."""
        self.w.record(Transition(job.id, S.DONE, (S.DONE,), values, detail=detail, event=event))

    async def note_now(self, job: LiveJob, values: Values, *, detail: str | None = None) -> bool:
        """The same, awaited (a delivery must be durable before its local copy may go)."""
        return await self.w.apply(Transition(job.id, S.DONE, (S.DONE,), values, detail=detail))
