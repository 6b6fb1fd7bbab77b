"""Contact sheets a run's pictures lane left (``pipeline.check``: the end of a run waits for them
only briefly), drawn later without checking the clips again: by ``batchgen verify --sheets-only``
(``draw_left``), by the review page when it asks for one (``review.server``), and by the next run
of the manifest, in its own lane. Each is written where the lane would have written it
(``media.picture_paths``), atomically, and recorded as the lane records it — the job's ``sheet``
column — so the next report shows it."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from . import media
from .jobs import JobRow, JobState
from .ledger import Ledger, Transition

PAGE = 500  # rows read, and sheets recorded, at a time

Progress = Callable[[int, int], None]  # (drawn or given up so far, of how many)


@dataclass(frozen=True)
class Left:
    """One clip whose sheet is to draw: its job, its file, and where its sheet goes."""

    job_id: int
    path: str
    sheet: str


def target(j: JobRow) -> str | None:
    """Where the lane writes ``j``'s sheet (None: its pictures would leave the output folder)."""
    assert j["output_path"] is not None
    return media.picture_paths(j["output_path"], j["output"])[1]


def left(led: Ledger, *, run_id: int | None = None) -> list[Left]:
    """Every clip of the ledger (or of run ``run_id``) whose sheet a lane left, oldest first."""
    out: list[Left] = []
    after = 0
    while rows := led.sheets_left(None, run_id=run_id, after_id=after, limit=PAGE):
        for j in rows:
            sheet = target(j)
            if sheet is not None:
                out.append(Left(j["id"], str(j["output_path"]), sheet))
        after = rows[-1]["id"]
    return out


def record(led: Ledger, drawn: list[tuple[int, str]]) -> None:
    """Record sheets drawn (job id, path) as the lane does: the job's ``sheet``, no event."""
    for i in range(0, len(drawn), PAGE):
        led.apply([Transition(job_id, JobState.DONE, (JobState.DONE,), {"sheet": sheet}, event=False)
                   for job_id, sheet in drawn[i : i + PAGE]])


def draw_left(led: Ledger, *, run_id: int | None = None, workers: int | None = None,
              progress: Progress | None = None) -> dict[str, Any]:
    """Draw every sheet a lane left (of run ``run_id``, or of the whole ledger) in worker
    processes, recording them as they come. Ctrl-C (KeyboardInterrupt) cancels the sheets not
    started, lets the ones being drawn finish (a worker ignores SIGINT and writes through a temp
    file: no partial sheet either way), records every sheet drawn, then goes on up. Returns
    ``{"left", "drawn", "failed"}``: a clip whose sheet cannot be drawn (its file gone or
    changed since) is counted, never an error."""
    todo = left(led, run_id=run_id)
    drawn: list[tuple[int, str]] = []
    failed = 0
    if todo:
        pool = media.pool(workers)
        futures: list[Future[str | None]] = []
        try:
            futures = [pool.submit(media.contact_sheet, t.path, t.sheet) for t in todo]
            for t, fut in zip(todo, futures):
                made = fut.result()
                if made:
                    drawn.append((t.job_id, made))
                else:
                    failed += 1
                if progress is not None:
                    progress(len(drawn) + failed, len(todo))
                if len(drawn) >= PAGE:
                    record(led, drawn)
                    drawn = []
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # the sheets in a worker end, whole
            # Every sheet on disk now is recorded (those recorded already, again: the same value).
            record(led, [(t.job_id, made) for t, f in zip(todo, futures)
                         if f.done() and not f.cancelled() and f.exception() is None and (made := f.result())])
            raise
        pool.shutdown(wait=True)
        record(led, drawn)
    return {"left": len(todo), "drawn": len(todo) - failed, "failed": failed}
