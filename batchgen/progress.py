"""Live progress on stderr: a rich table on a terminal, a plain line every ``every`` seconds when
stderr is not a TTY (cron, CI), nothing when quiet. The scheduler hands over a ``Snapshot``."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from .jobs import STATES, UNFINISHED, plain

# The ledger's own state names, in life-cycle order: the table, the plain lines, the JSON
# records, `status` and the run summary all say the same thing.
STATE_ORDER: tuple[str, ...] = tuple(s.value for s in STATES)


@dataclass
class Snapshot:
    states: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    done_last_minute: int = 0
    requests_last_minute: int = 0
    budget_rpm: float | None = None
    throttled: int = 0
    credits: float = 0.0
    in_flight: int = 0
    delivered: int | None = None  # --deliver: clips at the destination (this run), else None
    undelivered: int = 0
    # model → (tasks in flight, its limit or None): models in flight or limited (limits.Slots)
    models: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    breakers: dict[str, str] = field(default_factory=dict)  # model → its breaker's state and why (opened tonight)
    deadline: str = ""  # run --finish-by: the night against its deadline (deadline.outlook), '' without one
    armed: int = 0  # jobs whose intent is written ahead of their slot (ahead.py): `submitting`, nothing sent yet

    @property
    def remaining(self) -> int:
        return sum(self.states.get(s, 0) for s in UNFINISHED)

    def _per_min(self, last_minute: int) -> float:
        """A per-minute rate: the last minute's count, extrapolated during the first minute."""
        if self.elapsed >= 60:
            return float(last_minute)
        return last_minute * 60.0 / self.elapsed if self.elapsed > 0 else 0.0

    def rate_per_min(self) -> float:
        return self._per_min(self.done_last_minute)

    def eta_seconds(self) -> float | None:
        rate = self.rate_per_min() / 60.0
        return self.remaining / rate if rate > 0 else None

    def as_dict(self) -> dict[str, Any]:
        eta = self.eta_seconds()
        return {"states": {s: self.states.get(s, 0) for s in STATE_ORDER}, "elapsed_s": round(self.elapsed, 1),
                "jobs_per_min": round(self.rate_per_min()),
                "requests_per_min": round(self._per_min(self.requests_last_minute)),
                "budget_rpm": self.budget_rpm, "throttled": self.throttled, "credits": round(self.credits, 4),
                "in_flight": self.in_flight, "eta_s": None if eta is None else round(eta),
                **({"delivered": self.delivered, "undelivered": self.undelivered} if self.delivered is not None else {}),
                **({"models": {m: {"in_flight": n, "limit": lim} for m, (n, lim) in self.models.items()}}
                   if self.models else {}),
                **({"breakers": self.breakers} if self.breakers else {}),
                **({"deadline": self.deadline} if self.deadline else {})}


def console(file: IO[str] | None = None) -> Any:
    """A rich Console for ``file`` (default stdout) that tells the truth off a terminal and
    honours NO_COLOR fully. Without a terminal (cron, a pipe, a file) nothing is cut to 80
    columns: lines are as long as their content. NO_COLOR (any value, no-color.org) removes
    every escape, bold and italics included: rich's own NO_COLOR handling drops colour only."""
    from rich.console import Console

    f = file if file is not None else sys.stdout
    bare = bool(os.environ.get("NO_COLOR"))
    tty = f.isatty()
    return Console(file=f, width=None if tty else 100_000, color_system=None if bare else "auto",
                   no_color=bare, highlight=not bare, force_terminal=None if tty else False)


def _fmt_eta(s: float | None) -> str:
    if s is None:
        return "—"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _delivery(snap: Snapshot) -> str:
    if snap.delivered is None:
        return ""
    return f", delivered {snap.delivered}" + (f" ({snap.undelivered} not)" if snap.undelivered else "")


def _requests(snap: Snapshot) -> str:
    """The requests counted in the window (the last 60 s, or since the start), as measured, and
    the budget apart: a per-minute figure extrapolated from a burst read as the budget broken
    ("67 / 60 requests/min")."""
    window = min(60.0, snap.elapsed)
    budget = f" (budget {snap.budget_rpm:.0f}/min)" if snap.budget_rpm else ""
    return f"{snap.requests_last_minute} requests in the last {window:.0f}s{budget}"


def at_provider(snap: Snapshot) -> int:
    """Tasks being created or rendering at the provider, from the ledger's states: what "in
    flight" means to a reader (not the render slots the scheduler holds). A job armed ahead of
    its slot is `submitting` in the ledger but has sent nothing: not at the provider."""
    return sum(snap.states.get(s, 0) for s in ("submitting", "submitted", "rendering")) - snap.armed


def per_model(snap: Snapshot) -> str:
    """Tasks in flight per model, against its limit: "veo-3.1 4/4, grok-imagine-text-to-video 6"."""
    return ", ".join(f"{m} {n}/{lim}" if lim is not None else f"{m} {n}" for m, (n, lim) in snap.models.items())


def _breakers(snap: Snapshot) -> str:
    return "".join(f" | BREAKER {m} {state}" for m, state in snap.breakers.items())


def line(snap: Snapshot) -> str:
    d = snap.as_dict()
    states = " ".join(f"{k}={v}" for k, v in d["states"].items() if v)
    return (f"{d['elapsed_s']:.0f}s {states} | {d['jobs_per_min']} jobs/min, "
            f"{_requests(snap)}, 429s={d['throttled']}, credits={plain(d['credits'])}, "
            f"ETA {_fmt_eta(snap.eta_seconds())}" + _delivery(snap)
            + (f" | in flight by model: {per_model(snap)}" if snap.models else "") + _breakers(snap)
            + (f" | {snap.deadline}" if snap.deadline else ""))


class Display:
    """Chooses the rendering once: rich live table on a TTY, plain lines otherwise."""

    def __init__(self, *, quiet: bool = False, every: float = 30.0, stream: IO[str] | None = None,
                 emit: Callable[[Snapshot], None] | None = None) -> None:
        """``emit`` replaces the plain line (e.g. a JSON log record) and disables the rich table."""
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.every = every
        self.emit = emit
        self.rich = not quiet and emit is None and self.stream.isatty()
        self._live: Any = None
        self._last = 0.0

    @property
    def interval(self) -> float:
        """How often the scheduler should call ``update``."""
        return 0.5 if self.rich else self.every

    def start(self) -> None:
        if self.rich:
            from rich.live import Live

            self._live = Live(console=console(self.stream), refresh_per_second=4, transient=False)
            self._live.start()

    def update(self, snap: Snapshot) -> None:
        if self.quiet:
            return
        if self._live is not None:
            self._live.update(self._table(snap))
            return
        now = time.monotonic()
        if now - self._last >= self.every * 0.9:
            self._last = now
            if self.emit is not None:
                self.emit(snap)
            else:
                print(f"batchgen: {line(snap)}", file=self.stream, flush=True)

    def stop(self, snap: Snapshot | None = None) -> None:
        if self._live is not None:
            if snap is not None:
                self._live.update(self._table(snap))
            self._live.stop()
            self._live = None

    @staticmethod
    def _table(snap: Snapshot) -> Any:
        from rich.table import Table

        d = snap.as_dict()
        t = Table(title=f"batchgen — {d['elapsed_s']:.0f}s, {at_provider(snap)} at the provider",
                  title_justify="left")
        for s in STATE_ORDER:
            t.add_column(s.replace("_", " "), justify="right")
        cells = [str(d["states"][s]) for s in STATE_ORDER]
        if snap.delivered is not None:  # --deliver: clips at the destination, its own column
            t.add_column("delivered", justify="right")
            cells.append(str(snap.delivered) + (f" ({snap.undelivered} not)" if snap.undelivered else ""))
        t.add_row(*cells)
        t.caption = (f"{d['jobs_per_min']} jobs/min · {_requests(snap)} · "
                     f"429s {d['throttled']} · credits {plain(d['credits'])} · ETA {_fmt_eta(snap.eta_seconds())}"
                     + (f"\nin flight by model: {per_model(snap)}" if snap.models else "") + _breakers(snap)
                     + (f"\n{snap.deadline}" if snap.deadline else ""))
        return t
