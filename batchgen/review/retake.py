"""Retakes: every clip a reviewer marked retake gets a new take of the same request — the next
free ``take``, a new job key, recorded as a retake of the job it replaces — or of the request
with the fields the reviewer changed (checked like a manifest row, with the same messages).
A retake is a new paid task, so nothing is queued without being asked (``queue``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from ..cost import PriceTable
from ..errors import Problem, UsageError
from ..jobs import Job, JobRow, canonical_json, key_from_json, short_key
from ..ledger import Ledger
from ..specs import SHIPPED, Catalog

_NOT_REQUEST = frozenset({"name", "take", "output"})  # template variables, never sent


@dataclass
class Retake:
    """One retake to queue: the job it replaces, the new job, what changed, its cost."""

    original: JobRow
    job: Job
    run_id: int
    diff: list[tuple[str, Any, Any]]  # (field, before, after) of each changed request field
    credits: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"replaces": short_key(self.original["key"]), "name": self.original["name"],
                "take_was": self.original["take"], "take": self.job.take, "key": short_key(self.job.key),
                "output": self.job.output, "credits": self.credits,
                "changes": [{"field": f, "was": a, "now": b} for f, a, b in self.diff]}


@dataclass
class RetakePlan:
    """What ``batchgen retake`` would queue, and what it cannot (a change the catalog refuses)."""

    retakes: list[Retake] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def credits(self) -> float:
        return round(sum(r.credits or 0 for r in self.retakes), 4)

    def as_dict(self) -> dict[str, Any]:
        return {"retakes": [r.as_dict() for r in self.retakes], "count": len(self.retakes), "credits": self.credits,
                "problems": [str(p) for p in self.problems]}


def changed_request(original: JobRow, changes: dict[str, Any], catalog: Catalog = SHIPPED
                    ) -> tuple[dict[str, Any], list[tuple[str, Any, Any]], list[Problem]]:
    """The original job's request with ``changes`` applied, checked like a manifest row (the
    model's fields, types, allowed values and rules: ``Catalog.normalise``); returns the
    effective request, the diff, and the problems (each naming the field)."""
    where = f"retake of {original['name']} ({short_key(original['key'])})"
    before = json.loads(original["request"])
    problems: list[Problem] = []
    params = {k: v for k, v in before.items() if k != "model"}
    model = str(before.get("model"))
    for k, v in changes.items():
        if k in _NOT_REQUEST or not isinstance(k, str):
            problems.append(Problem(where, "the change", str(k), "is not a request field (name, take and output "
                                                                "are not sent)"))
            continue
        if k == "model":
            model = str(v)
            continue
        params[k] = v
    spec = catalog.get(model)
    if spec is None:
        hint = catalog.suggest(model)
        problems.append(Problem(where, "the change", "model", f"unknown model {model!r}"
                                + (f"; did you mean '{hint}'?" if hint else "")))
        return before, [], problems
    for k in changes:
        if k not in spec.fields and k != "model" and k not in _NOT_REQUEST and not spec.open:
            near = catalog.suggest(k)
            problems.append(Problem(where, "the change", k, f"{model} takes no field {k!r}"
                                    + (f"; did you mean '{near}'?" if near else "")))
    after, errors, _ = catalog.normalise(model, {k: v for k, v in params.items() if k in spec.fields or spec.open})
    problems += [Problem(where, "the change", f, msg) for f, msg in errors]
    diff = [(k, before.get(k), after.get(k)) for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
    return after, diff, problems


def _take_number(take: str | None) -> int:
    return int(take) if take and take.isdigit() else 1


def plan(led: Ledger, *, run_id: int | None = None, manifest: str | None = None, prices: PriceTable | None = None,
         catalog: Catalog = SHIPPED) -> RetakePlan:
    """The retakes the clips marked retake call for (of a run, a manifest, or all), each with
    its new take, key, output name and estimated credits."""
    table = prices or PriceTable.load()
    out = RetakePlan()
    taken_keys: set[str] = set()
    taken_outputs: set[str] = set()
    for original, decision in led.pending_retakes(run_id, manifest):
        changes = json.loads(decision["changes"]) if decision["changes"] else {}
        request, diff, problems = changed_request(original, changes, catalog) if changes else (
            json.loads(original["request"]), [], [])
        if problems:
            out.problems += problems
            continue
        shot = led.takes_of(original["id"])
        takes = [_take_number(original["take"])]
        takes += [_take_number(j["take"]) for j in led.retakes_of(shot)]
        takes += [_take_number(j["take"]) for j in (led.job(i) for i in shot) if j is not None]
        n = max(takes) + 1
        request_json = canonical_json(request)
        while (key := key_from_json(request_json, str(n))) in taken_keys or led.job(key) is not None:
            n += 1
        path = PurePosixPath(original["output"])
        stem = path.stem.removesuffix(f"-take{original['take']}") if original["take"] else path.stem
        output, extra = str(path.with_name(f"{stem}-take{n}{path.suffix}")), 1
        while output in taken_outputs or led.outputs_in_use([output]):
            extra += 1
            output = str(path.with_name(f"{stem}-take{n}-{extra}{path.suffix}"))
        taken_keys.add(key)
        taken_outputs.add(output)
        job = Job(key=key, seq=original["seq"], name=original["name"], source=f"retake of {original['source']}",
                  model=str(request["model"]), request=request, output=output, take=str(n), request_json=request_json,
                  priority=original["priority"], retake_of=original["id"])
        out.retakes.append(Retake(original, job, original["run_id"], diff, table.estimate(request)))
    return out


def queue(led: Ledger, plan_: RetakePlan) -> int:
    """Record ``plan_``'s retakes, queued for the next run of their manifest (paid)."""
    if plan_.problems:
        raise UsageError("nothing was queued: " + "; ".join(str(p) for p in plan_.problems))
    return led.record_retakes([(r.run_id, r.job) for r in plan_.retakes])
