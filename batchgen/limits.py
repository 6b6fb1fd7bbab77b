"""Per-model limits (issue 30): a model is a capped resource, like a licence on a render farm.
``limits:`` in a manifest and ``run --limit MODEL=N`` cap the tasks of a model in flight (from
the create until the result is ready); ``Slots`` counts them for the conductor, which starts a
job of a model only while it is under its limit, so a slow or capped model never holds the
slots the others could use. On a PostgreSQL fleet the ledger counts them across every worker
(``Ledger.claim``'s ``limits``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

MAX_LIMIT = 10_000  # --concurrency's own ceiling


def limit_problem(value: object) -> str | None:
    """Why ``value`` is not a model's limit, or None when it is one (1 … MAX_LIMIT)."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_LIMIT:
        return None
    return f"must be a whole number of tasks in flight from 1 to {MAX_LIMIT}, not {value!r}"


def parse_option(text: str) -> tuple[str, int]:
    """``--limit MODEL=N`` → (model, N); ValueError naming what is wrong."""
    model, sep, n = text.rpartition("=")
    model = model.strip()
    if not sep or not model:
        raise ValueError(f"{text!r} is not MODEL=N (for example veo-3.1=4)")
    try:
        value: object = int(n.strip())
    except ValueError:
        value = n.strip()
    problem = limit_problem(value)
    if problem is not None:
        raise ValueError(f"{model}: {problem}")
    assert isinstance(value, int)
    return model, value


class Slots:
    """This process's tasks in flight per model, against the limits."""

    def __init__(self, limits: Mapping[str, int] | None = None) -> None:
        self.limits: dict[str, int] = dict(limits or {})
        self.in_flight: Counter[str] = Counter()

    def allows(self, model: str, holding: bool = False) -> bool:
        """Whether a job of ``model`` may start now (always, for a model without a limit);
        ``holding``: the job already holds one of the model's slots (a render retry keeps its
        slot), so that one is its own, not another task's."""
        limit = self.limits.get(model)
        return limit is None or self.in_flight[model] - holding < limit

    def take(self, model: str) -> None:
        self.in_flight[model] += 1

    def give(self, model: str) -> None:
        self.in_flight[model] -= 1

    def view(self) -> dict[str, tuple[int, int | None]]:
        """model → (in flight, its limit or None), for every model in flight or limited."""
        models = sorted({m for m, n in self.in_flight.items() if n > 0} | set(self.limits))
        return {m: (self.in_flight[m], self.limits.get(m)) for m in models}
