"""The pipeline's shared rooms on a real SQLite ledger: ``moves.Moves`` (the only code of a run
that writes a job's state: the ledger row and the live counts move together, a move the ledger
refuses moves nothing) and ``context.Context`` (the run-wide verdicts: the first reason is the
one reported, a refusal halts once, and stopping submission wakes who waits for credit)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from batchgen.client import TaskInfo
from batchgen.errors import EXIT_KEY_REFUSED, ApiError, ErrorClass
from batchgen.jobs import JobState
from batchgen.ledger import Ledger, Transition, Writer
from batchgen.manifest import Manifest
from batchgen.pipeline import ApiWatch, Context, LiveJob, Moves
from batchgen.runner import prepare
from batchgen.scheduler import RunOptions
from conftest import write_csv_manifest

S = JobState


def _ledger(tmp_path: Path, n: int = 2) -> tuple[Ledger, int, RunOptions]:
    led = Ledger(str(tmp_path / "l.db"))
    opts = RunOptions(out_dir=tmp_path / "out", rpm=None)
    prepared = prepare(led, Manifest(write_csv_manifest(tmp_path / "m.csv", n)), opts)
    return led, prepared.run_id, opts


def _with_first_job(tmp_path: Path, n: int, body: Callable[[Ledger, Writer, Moves, LiveJob], Awaitable[None]]) -> None:
    """Run ``body`` with a ledger of ``n`` queued jobs, its writer, a ``Moves`` counting them
    and the first job, live."""
    led, run_id, _ = _ledger(tmp_path, n)

    async def go() -> None:
        async with Writer(led) as w:
            moves = Moves(w, "sim")
            (model,) = led.queued_models(run_id)
            rows = await w.call(led.queued_page, run_id, model, None, 10)
            moves.show_counts({S.QUEUED: len(rows)})
            await body(led, w, moves, LiveJob.from_row(rows[0]))
    try:
        asyncio.run(go())
    finally:
        led.close()


def _state(led: Ledger, job: LiveJob) -> str:
    row = led.job(job.id)
    assert row is not None
    return row["state"]


def test_every_move_writes_the_ledger_and_the_live_counts_together(tmp_path: Path) -> None:
    async def body(led: Ledger, w: Writer, moves: Moves, job: LiveJob) -> None:
        assert await moves.intent(job)
        assert (_state(led, job), job.attempts, moves.states[S.SUBMITTING]) == (S.SUBMITTING, 1, 1)
        job.task_id, job.submitted_at = "t-1", 1.0
        assert await moves.submitted(job, TaskInfo("t-1", "pending", estimated_time=5.0))
        assert (_state(led, job), led.job("t-1")["id"]) == (S.SUBMITTED, job.id)  # type: ignore[index]
        moves.rendering(job, {"remote_status": "processing", "progress": 10, "polls": 1}, "processing")
        job.result_url, job.result_at = "http://cdn/x.mp4", 2.0
        moves.completed(job, {"remote_status": "completed", "progress": 100, "polls": 2}, "after 2 poll(s)")
        moves.done(job, tmp_path / "out" / "x.mp4", 1234, "ab" * 32)
        await w.flush()
        row = led.job(job.id)
        assert row is not None
        assert (row["state"], row["result_url"], row["bytes"], row["sha256"]) == (S.DONE, job.result_url, 1234,
                                                                                  "ab" * 32)
        assert job.state == S.DONE and job.sha256 == "ab" * 32
        assert {k: v for k, v in moves.states.items() if v} == {S.QUEUED: 1, S.DONE: 1}
        assert moves.done_last_minute(time.monotonic()) == 1
        # A done clip's notes change no state and move no count.
        moves.note(job, {"delivery_error": "bucket full"}, event=False)
        assert await moves.note_now(job, {"pruned_at": 3.0}, detail="pruned")
        row = led.job(job.id)
        assert row is not None and (row["state"], row["delivery_error"]) == (S.DONE, "bucket full")
        assert {k: v for k, v in moves.states.items() if v} == {S.QUEUED: 1, S.DONE: 1}
        # One event per move, and one for the awaited note (the queued one asked for none).
        moved = [(e["from_state"], e["to_state"]) for e in led.events_for(job.id)]
        assert moved[-6:] == [(S.QUEUED, S.SUBMITTING), (S.SUBMITTING, S.SUBMITTED), (S.SUBMITTED, S.RENDERING),
                              (S.RENDERING, S.COMPLETED), (S.COMPLETED, S.DONE), (S.DONE, S.DONE)]
    _with_first_job(tmp_path, 2, body)


def test_an_intent_the_ledger_refuses_moves_nothing(tmp_path: Path) -> None:
    """Cancelled meanwhile (`batchgen cancel`): no intent, so no create may follow."""
    async def body(led: Ledger, w: Writer, moves: Moves, job: LiveJob) -> None:
        assert await w.apply(Transition(job.id, S.CANCELLED, (S.QUEUED,)))
        assert not await moves.intent(job)
        assert (job.state, job.attempts, moves.states[S.QUEUED]) == (S.QUEUED, 0, 1)
        assert _state(led, job) == S.CANCELLED
    _with_first_job(tmp_path, 1, body)


def test_a_failure_applies_whichever_polled_state_the_ledger_holds(tmp_path: Path) -> None:
    """Polled as `submitted` while the ledger already says `rendering` (a record still queued)."""
    async def body(led: Ledger, w: Writer, moves: Moves, job: LiveJob) -> None:
        assert await moves.intent(job)
        job.task_id = "t-9"
        assert await moves.submitted(job, TaskInfo("t-9", "pending"))
        assert await w.apply(Transition(job.id, S.RENDERING, (S.SUBMITTED,)))
        assert job.state == S.SUBMITTED
        await moves.failed(job, "content_policy", "refused", detail="task failed", retryable=False)
        row = led.job(job.id)
        assert row is not None and (row["state"], row["error_code"]) == (S.FAILED, "content_policy")
        assert job.state == S.FAILED
    _with_first_job(tmp_path, 1, body)


class _Silent:
    """An ``Api`` never called here (the verdicts need none)."""


def test_verdicts_first_reason_wins_and_a_refusal_halts_once(tmp_path: Path) -> None:
    led, _, opts = _ledger(tmp_path, 1)
    said: list[str] = []
    woken: list[int] = []

    async def go() -> None:
        async with Writer(led) as w:
            stop = asyncio.Event()
            ctx = Context(w, ApiWatch(_Silent(), said.append), opts, stop, said.append)  # type: ignore[arg-type]
            ctx.on_no_submit(lambda: woken.append(1))
            assert ctx.submitting
            ctx.stop_submitting("credit cap reached", unfinished=True)
            ctx.stop_submitting("disk full")
            assert (ctx.reason, ctx.unfinished, ctx.submitting, said, woken) == (
                "credit cap reached", True, False, ["credit cap reached"], [1])
            refusal = ApiError(ErrorClass.FATAL_RUN, "401 unauthorized", status=401)
            ctx.key_refused(refusal, "polling")
            ctx.key_refused(refusal, "creating")
            ctx.no_funds()  # a 402 after a 401: the 401 is what the run exits with
            assert ctx.halt_code == EXIT_KEY_REFUSED and stop.is_set()
            assert ctx.reason is not None and ctx.reason.startswith("API key refused while polling")
            assert len(said) == 2
            assert await ctx.sleep(60.0)  # stopped: returns at once, True
    asyncio.run(go())
    led.close()


class _Flaky:
    """An ``Api`` whose polls get no answer while ``down`` is set."""

    down = True

    async def get_task(self, task_id: str, *, sync_upstream: bool = False) -> TaskInfo:
        if self.down:
            raise ApiError(ErrorClass.SAFE, "poll: no answer", unreachable="connection refused by api:443")
        return TaskInfo(task_id=task_id, status="in_progress")


def test_an_outage_is_measured_between_unanswered_requests_not_by_the_clock() -> None:
    """One refused poll, then the process is paused (or starved of CPU) for longer than the
    outage window: that is not an API silent for the window — it must be asked again first.
    Failures that keep coming for the window are; any answer ends the outage."""
    now = [100.0]
    started: list[str] = []
    api = _Flaky()
    watch = ApiWatch(api, started.append, clock=lambda: now[0])  # type: ignore[arg-type]

    async def poll() -> None:
        try:
            await watch.get_task("t1")
        except ApiError:
            pass

    asyncio.run(poll())
    assert started == ["connection refused by api:443"] and watch.silent_for() == 0.0
    now[0] += 500.0  # paused: nothing was asked meanwhile
    assert watch.silent_for() == 0.0
    asyncio.run(poll())  # asked again after the pause, still nothing
    assert watch.silent_for() == 500.0 and started == ["connection refused by api:443"]
    api.down = False
    asyncio.run(poll())
    assert watch.outage is None and watch.silent_for() == 0.0


def test_a_create_retried_says_which_attempt_it_is(tmp_path: Path) -> None:
    async def body(led: Ledger, w: Writer, moves: Moves, job: LiveJob) -> None:
        assert await moves.intent(job)
        await moves.requeued(job, {"error_code": "rate_limited", "error_message": "429"}, "create refused: 429")
        assert await moves.intent(job)
        assert job.attempts == 2
        assert [(e["to_state"], e["detail"]) for e in led.events_for(job.id)] == [
            (S.SUBMITTING, None), (S.QUEUED, "create refused: 429"), (S.SUBMITTING, "create attempt 2")]

    _with_first_job(tmp_path, 1, body)
