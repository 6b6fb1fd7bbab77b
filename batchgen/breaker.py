"""A breaker per model (issue 30): stop paying for a model that is broken upstream.

Each model's recent outcomes (tasks that reached a verdict at the provider: completed, or
failed for a reason that is not the request's own — a permanent failure such as a content
policy refusal says nothing about the model) are kept in a window. When at least ``RATE`` of
the last ``WINDOW`` failed, or ``IN_A_ROW`` failed one after another, the breaker opens: no new
task of that model is created for the cool-off; the other models go on. After the cool-off one
probe task is created: its success closes the breaker, its failure opens it again. After
``MAX_PROBES`` failed probes the model is left for the next night (its jobs stay queued), so a
model that stays broken costs at most that many tasks once its breaker opened.

Pure bookkeeping: the caller passes the time (monotonic seconds) and asks before each create."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

WINDOW = 20
RATE = 0.5
IN_A_ROW = 5
MAX_PROBES = 3


@dataclass
class ModelBreaker:
    """One model's outcomes and state: closed, open (until ``reopens_at``), or probing."""

    outcomes: deque[bool] = field(default_factory=lambda: deque(maxlen=WINDOW))  # True: failed
    in_a_row: int = 0
    open: bool = False
    reopens_at: float = 0.0
    probing: bool = False  # the one probe task is in flight
    probes: int = 0  # probes sent since it last opened from closed
    trips: int = 0
    why: str = ""
    codes: Counter[str] = field(default_factory=Counter)  # failure codes in the window's failures

    def state(self, now: float) -> str:
        if not self.open:
            return "closed"
        if self.probing:
            return "probing"
        return "given up" if self.probes >= MAX_PROBES else "open"


class Breakers:
    """The breakers of every model of a run."""

    def __init__(self, cooloff: float, *, enabled: bool = True) -> None:
        self.cooloff = cooloff
        self.enabled = enabled
        self.models: dict[str, ModelBreaker] = {}

    def _of(self, model: str) -> ModelBreaker:
        b = self.models.get(model)
        if b is None:
            b = self.models[model] = ModelBreaker()
        return b

    def is_open(self, model: str) -> bool:
        b = self.models.get(model)
        return b is not None and b.open

    def allows(self, model: str, now: float) -> bool:
        """Whether a task of ``model`` may be created now (a probe, when its cool-off is over)."""
        b = self.models.get(model)
        if b is None or not b.open:
            return True
        return not b.probing and b.probes < MAX_PROBES and now >= b.reopens_at

    def started(self, model: str) -> None:
        """A create of ``model`` is about to be sent: while open, it is the probe."""
        b = self.models.get(model)
        if b is not None and b.open:
            b.probing = True
            b.probes += 1

    def abandoned(self, model: str) -> None:
        """The probe's create came to no task (refused cleanly, stopped): another may go."""
        b = self.models.get(model)
        if b is not None and b.probing:
            b.probing = False
            b.probes -= 1

    def adopt(self, model: str, why: str, probe_in: float, now: float, probes: int = 0) -> None:
        """The ledger says ``model``'s breaker is open (another worker, or an earlier night,
        opened it): open here too, its probe due in ``probe_in`` seconds, ``probes`` of them
        sent already (by any worker of a fleet)."""
        b = self._of(model)
        if not b.open:
            b.open, b.probes, b.probing, b.trips = True, 0, False, b.trips + 1
        b.why = why
        if not b.probing:
            b.reopens_at = now + max(0.0, probe_in)
            b.probes = probes

    def forget(self, model: str) -> None:
        """The ledger says ``model``'s breaker was closed (another worker's probe succeeded)."""
        b = self.models.get(model)
        if b is not None and b.open:
            b.open, b.probing, b.probes = False, False, 0
            b.outcomes.clear()
            b.in_a_row = 0

    def record(self, model: str, failed: bool, code: str | None, now: float) -> str | None:
        """A task of ``model`` reached its verdict. Returns a message when the breaker opened
        (or opened again after a failed probe), None otherwise."""
        if not self.enabled:
            return None
        b = self._of(model)
        b.outcomes.append(failed)
        b.in_a_row = b.in_a_row + 1 if failed else 0
        if failed and code:
            b.codes[code] += 1
        if b.open:
            if not b.probing:
                return None  # a task created before it opened, ending now: already counted against it
            b.probing = False
            if not failed:
                b.open, b.probes, b.codes = False, 0, Counter()
                b.outcomes.clear()
                return None
            b.reopens_at = now + self.cooloff
            left = MAX_PROBES - b.probes
            return (f"breaker for {model} stays open: the probe task failed ({code}); "
                    + (f"next probe in {self.cooloff:g} s" if left else "no more probes tonight, its jobs stay queued"))
        failures = sum(b.outcomes)
        if b.in_a_row >= IN_A_ROW:
            why = f"{b.in_a_row} failures in a row"
        elif len(b.outcomes) >= WINDOW and failures >= RATE * WINDOW:
            why = f"{failures} of its last {len(b.outcomes)} tasks failed"
        else:
            return None
        common = ", ".join(f"{c} ×{n}" for c, n in b.codes.most_common(3))
        b.open, b.reopens_at, b.probes, b.trips = True, now + self.cooloff, 0, b.trips + 1
        b.why = f"{why} ({common})" if common else why
        return (f"breaker OPEN for {model}: {b.why}; no new {model} task for {self.cooloff:g} s, then one probe "
                "(the other models go on)")

    def next_probe_in(self, now: float) -> float | None:
        """Seconds until an open breaker may send a probe; None when none will tonight."""
        waits = [max(0.0, b.reopens_at - now) for b in self.models.values()
                 if b.open and not b.probing and b.probes < MAX_PROBES]
        return min(waits) if waits else None

    def done_for_tonight(self, model: str, alone: bool, now: float) -> bool:
        """Whether ``model`` sends nothing more tonight: its breaker gave up, or — when nothing
        else is left to do (``alone``) — it is open and its probe failed (a run would otherwise
        idle through cool-off after cool-off for at most two more probes)."""
        b = self.models.get(model)
        if b is None or not b.open or b.probing:
            return False
        return b.probes >= MAX_PROBES or (alone and b.probes >= 1)


    def open_models(self) -> dict[str, str]:
        """Models whose breaker is open now → why (for the summary, status and notification)."""
        return {m: b.why for m, b in self.models.items() if b.open}

    def view(self, now: float) -> dict[str, str]:
        """Every model whose breaker opened tonight → its state and why, for the display."""
        out = {}
        for m, b in sorted(self.models.items()):
            if b.trips:
                when = f", probe in {max(0.0, b.reopens_at - now):.0f} s" if b.state(now) == "open" else ""
                out[m] = f"{b.state(now)}: {b.why}{when}"
        return out
