"""The order a run's queued jobs start in (the conductor's feed on a single-process ledger):
highest ``priority`` first, equal priorities in manifest order, read model by model.

Each model has its own cursor over the ledger's queued jobs (``Ledger.queued_page``, one page
at a time), and the next job is the best head among the models allowed to start one now. A
model that may not start (at its limit, its breaker open) therefore never holds back the
others, and memory stays one page a model however large the manifest."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .jobs import JobRow

PAGE = 500

# Reads a page: (model, after, limit) → rows; the conductor runs it on the ledger's thread.
PageReader = Callable[[str, "tuple[int, int] | None", int], Awaitable[list[JobRow]]]


def order(row: JobRow) -> tuple[int, int]:
    """A queued job's place in the night: higher priority first, then manifest order."""
    return -row["priority"], row["seq"]


@dataclass
class _Cursor:
    """One model's queued jobs: a page in hand and where the next page starts."""

    rows: deque[JobRow] = field(default_factory=deque)
    after: tuple[int, int] | None = None
    done: bool = False


class Feed:
    """Queued jobs of one run, merged across models by (priority, manifest order)."""

    def __init__(self, models: list[str], read: PageReader, page: int = PAGE) -> None:
        self._read = read
        self._page = page
        self._cursors = {m: _Cursor() for m in models}

    @property
    def exhausted(self) -> bool:
        """Every model's queued jobs have been handed out."""
        return all(c.done and not c.rows for c in self._cursors.values())

    def waiting(self) -> dict[str, bool]:
        """Models that may still have queued jobs to hand out (True) — for the display."""
        return {m: not (c.done and not c.rows) for m, c in self._cursors.items()}

    async def take(self, may_start: Callable[[str], bool] = lambda model: True) -> JobRow | None:
        """The next job to start among the models ``may_start`` allows, or None when none of
        them has one (``exhausted`` tells whether any job is left at all)."""
        best: tuple[tuple[int, int], str] | None = None
        for model, cur in self._cursors.items():
            if not may_start(model):
                continue
            if not cur.rows and not cur.done:
                await self._refill(model, cur)
            if cur.rows:
                head = order(cur.rows[0])
                if best is None or head < best[0]:
                    best = (head, model)
        if best is None:
            return None
        return self._cursors[best[1]].rows.popleft()

    def put_back(self, row: JobRow) -> None:
        """A job handed out by ``take`` that did not start after all: the next one of its model."""
        self._cursors[row["model"]].rows.appendleft(row)

    async def _refill(self, model: str, cur: _Cursor) -> None:
        page = await self._read(model, cur.after, self._page)
        if not page:
            cur.done = True
            return
        cur.rows.extend(page)
        last = page[-1]
        cur.after = (last["priority"], last["seq"])
