"""The check of a price table (the shipped ``prices.yaml``, ``--prices FILE``): credits per
second by model and resolution, assumed seconds, a unit. Every price and number of seconds must
be a finite number, 0 or more: ``--max-credits`` adds them up, and a ``.nan`` or a negative one
would let a run spend without a limit. Reads no file (``datafiles`` does).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import Problem
from .checker import Checker, is_number, kind_of, printable_name, show

PRICE_KEYS = ("unit", "per_second", "assumed_seconds")
# --------------------------------------------------------------------------- price tables
PriceDoc = tuple[dict[str, dict[str, float]], dict[str, float], str | None]


def check_prices(doc: Any, file: str) -> tuple[PriceDoc, list[Problem]]:
    """(per_second, assumed_seconds, unit or None) of a price table document, and every problem:
    each price and each number of seconds must be a finite number, 0 or more (``--max-credits``
    adds them up: a ``.nan`` or a negative one would let a run spend without a limit)."""
    ck = Checker(file)
    per: dict[str, dict[str, float]] = {}
    assumed: dict[str, float] = {}
    unit: str | None = None
    if not isinstance(doc, Mapping):
        ck.problem(doc, None, "", "a price table is a mapping with `per_second:` (model → resolution → credits per "
                                  "second), optionally `assumed_seconds:` and `unit:`; found "
                                  + ("nothing" if doc is None else kind_of(doc)))
        return (per, assumed, unit), ck.sorted()
    ck.unknown_keys(doc, PRICE_KEYS, "", "a price table")
    if "unit" in doc:
        u = doc["unit"]
        why = printable_name(u) if isinstance(u, str) else "must be text"
        if why:
            ck.problem(doc, "unit", "", f"`unit` {why}")
        else:
            unit = u

    def model_map(key: str) -> Mapping[str, Any]:
        m = doc.get(key)
        if m is None:
            return {}
        if not isinstance(m, Mapping):
            ck.problem(doc, key, "", f"`{key}` maps model names to " + ("{resolution: credits per second}"
                                                                         if key == "per_second" else "seconds"))
            return {}
        for name in m:
            why = printable_name(name)
            if why:
                ck.problem(m, name, f"`{key}`", f"model name {show(name)} {why}")
        return m

    def number(node: Any, k: str, v: Any, ctx: str) -> float | None:
        if not is_number(v) or v < 0:
            ck.problem(node, k, ctx, f"must be a finite number, 0 or more; got {show(v)}")
            return None
        return float(v)

    prices = model_map("per_second")
    if "per_second" not in doc:
        ck.problem(doc, None, "", "has no `per_second:` (model → resolution → credits per second)")
    for model, rates in prices.items():
        ctx = f"per_second '{model}'"
        if not isinstance(rates, Mapping) or not rates:
            ck.problem(prices, model, ctx, "maps each resolution (or `default`) to credits per second, "
                                           f"e.g. {{720p: 1.4, default: 1.4}}; got {show(rates)}")
            continue
        table = {}
        for res, v in rates.items():
            why = printable_name(res)
            if why:
                ck.problem(rates, res, ctx, f"resolution {show(res)} {why}")
                continue
            n = number(rates, res, v, f"{ctx}, {res}")
            if n is not None:
                table[res] = n
        if isinstance(model, str):
            per[model] = table
    seconds = model_map("assumed_seconds")
    for model, v in seconds.items():
        n = number(seconds, model, v, f"assumed_seconds '{model}'")
        if n is not None and isinstance(model, str):
            assumed[model] = n
    return (per, assumed, unit), ck.sorted()

