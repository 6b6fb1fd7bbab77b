"""Credit estimates from a price table (``prices.yaml`` shipped as data, overridable)."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import Problem, UsageError
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
        base = yaml.safe_load(resources.files("batchgen").joinpath("prices.yaml").read_text())
        table = cls(_floats2(base.get("per_second", {})), _floats(base.get("assumed_seconds", {})),
                    str(base.get("unit", "credits")))
        if override is not None:
            path = Path(override)
            table.source = str(path)
            try:
                doc = yaml.safe_load(path.read_text())
                table.per_second.update(_floats2(doc.get("per_second", {})))
                table.assumed_seconds.update(_floats(doc.get("assumed_seconds", {})))
            except (OSError, yaml.YAMLError, AttributeError, TypeError, ValueError) as e:
                raise UsageError(str(Problem(str(path), "file", "per_second", f"not a valid price table: {e}"))) from None
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

    def estimate(self, request: dict[str, Any]) -> float | None:
        """Estimated credits of one task, or None when the model has no price."""
        prices = self.per_second.get(str(request.get("model")))
        if not prices:
            return None
        res = str(request.get("resolution", "default"))
        rate = prices.get(res, prices.get("default", max(prices.values())))
        return round(rate * self.seconds(request), 4)


def _floats(d: Any) -> dict[str, float]:
    return {str(k): float(v) for k, v in (d or {}).items()}


def _floats2(d: Any) -> dict[str, dict[str, float]]:
    return {str(k): _floats(v) for k, v in (d or {}).items()}
