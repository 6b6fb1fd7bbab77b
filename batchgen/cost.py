"""Credit estimates from a price table (``prices.yaml`` shipped as data, overridable)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import datafiles
from .specs import SHIPPED, Catalog


@dataclass
class PriceTable:
    per_second: dict[str, dict[str, float]] = field(default_factory=dict)
    assumed_seconds: dict[str, float] = field(default_factory=dict)
    unit: str = "credits"
    source: str = "shipped placeholder table"  # where the numbers came from, for plan's output
    catalog: Catalog = field(default_factory=lambda: SHIPPED)  # for "auto" durations and fixed outputs

    @classmethod
    def load(cls, override: str | Path | None = None) -> PriceTable:
        """The shipped table, with ``override``'s models replacing its entries. A table that
        cannot be used (not a regular file, not YAML, a price that is not a finite number ≥ 0…)
        raises ``DataFileError`` with every problem of it, each with its line and column."""
        per, assumed, unit = datafiles.shipped_prices()
        table = cls(dict(per), dict(assumed), unit or "credits")
        if override is not None:
            more, more_assumed, more_unit = datafiles.read_prices(override)
            table.per_second.update(more)
            table.assumed_seconds.update(more_assumed)
            table.unit = more_unit or table.unit
            table.source = str(override)
        return table

    def seconds(self, request: dict[str, Any]) -> float:
        """Seconds to budget for: the request's duration, its model's maximum for an "auto"
        duration (-1: the model decides, so the worst case counts against --max-credits), a
        model's fixed output length, else the table's assumed seconds (edit/extend models)."""
        model = str(request.get("model"))
        spec = self.catalog.get(model)
        if spec is not None and spec.output_seconds != "input":
            s = spec.seconds(request)
            if s is not None:
                return s
        d = request.get("duration")
        if isinstance(d, (int, float)) and not isinstance(d, bool) and d >= 0:
            return float(d)
        return self.assumed_seconds.get(model, 0.0)

    def estimate(self, request: dict[str, Any], seconds: float | None = None) -> float | None:
        """Estimated credits of one task, or None when the model has no price. ``seconds``:
        ``self.seconds(request)``, when the caller has it already."""
        prices = self.per_second.get(str(request.get("model")))
        if not prices:
            return None
        res = str(request.get("resolution", "default"))
        rate = prices.get(res, prices.get("default", max(prices.values())))
        return round(rate * (self.seconds(request) if seconds is None else seconds), 4)


class _Absent:
    """A request field not set (not the same as set to None)."""


_ABSENT = _Absent()
# Values equal only when alike (with their type in the key: True is not 1), so a remembered
# entry is only ever found again for the same value; floats (-0.0, nan) are worked out each time.
_KEYABLE = frozenset({str, int, bool, type(None), _Absent})
MAX_COSTS = 4096


class Costs:
    """(seconds, estimated credits) of the requests of a plan, many of them alike: both depend
    on the request's model, resolution and duration only (see ``PriceTable.seconds`` and
    ``estimate``), so each distinct three is worked out once (a million jobs, a few dozen)."""

    def __init__(self, table: PriceTable) -> None:
        self.table = table
        self._memo: dict[tuple[Any, ...], tuple[float, float | None]] = {}

    def of(self, request: dict[str, Any]) -> tuple[float, float | None]:
        model = request.get("model", _ABSENT)
        res = request.get("resolution", _ABSENT)
        d = request.get("duration", _ABSENT)
        if not (type(model) in _KEYABLE and type(res) in _KEYABLE and type(d) in _KEYABLE):
            return self._work_out(request)
        key = (type(model), model, type(res), res, type(d), d)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._work_out(request)
            if len(self._memo) < MAX_COSTS:
                self._memo[key] = hit
        return hit

    def _work_out(self, request: dict[str, Any]) -> tuple[float, float | None]:
        seconds = self.table.seconds(request)
        return seconds, self.table.estimate(request, seconds)
