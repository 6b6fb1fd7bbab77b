"""Audit a ledger against an API's ground truth (the simulator's ``/_sim/ground-truth``).

The money invariants, each counted rather than asserted so tests and the chaos soak share them:

* every create the API accepted is known to the ledger, unless its job is or was in doubt (an
  operator who resubmits an in-doubt job knowingly risks a second task);
* a job never in doubt was created exactly once per task id it recorded (no duplicates);
* every task id in the ledger was really created by the API (nothing invented);
* every ``done`` file is at its path, and its sha256 equals the ledger's and what the API served;
* no temp file is left in the output folder, and SQLite's integrity check passes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .jobs import JobRow, JobState, request_sha256
from .ledger import Ledger

S = JobState


@dataclass
class Audit:
    jobs: int = 0
    done: int = 0
    in_doubt: int = 0
    creates: int = 0
    unknown_in_doubt: int = 0  # creates unknown to the ledger whose job is in doubt (allowed)
    unknown: int = 0  # creates unknown to the ledger outside in-doubt jobs (lost task ids)
    duplicates: int = 0  # extra creates for jobs that are not in doubt
    invented: int = 0  # ledger task ids the API never created
    corrupt_files: int = 0
    temp_files: int = 0
    integrity: str = "ok"
    states: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "violations"}
        d["violations"] = self.violations[:20]
        return d


def audit(truth: dict[str, Any], ledger: str | Path | Ledger, out_dir: Path) -> Audit:
    """``ledger``: a path or URL (opened and closed here), or a ledger the caller keeps open —
    a test auditing after every step of many (tests/test_lifecycle_stateful.py) opens it once."""
    a = Audit()
    led = ledger if isinstance(ledger, Ledger) else Ledger(str(ledger))
    try:
        rows = list(led.iter_export())
        known = led.known_task_ids()
        a.integrity = led.check_integrity()
        ids_per_job: dict[int, set[str]] = {}
        # In doubt now or before an operator settled it (resolve); `submitting` is a dead process's
        # create in flight, which the next start turns into in_doubt.
        doubted: set[int] = set()
        for j in rows:
            evs = led.events_for(j["id"])
            ids_per_job[j["id"]] = {e["task_id"] for e in evs if e["task_id"]} | ({j["task_id"]} if j["task_id"] else set())
            if j["state"] in (S.IN_DOUBT, S.SUBMITTING) or any(e["to_state"] == S.IN_DOUBT for e in evs):
                doubted.add(j["id"])
    finally:
        if led is not ledger:
            led.close()
    if a.integrity != "ok":
        a.violations.append(f"integrity_check: {a.integrity}")
    a.jobs = len(rows)
    for j in rows:
        a.states[j["state"]] = a.states.get(j["state"], 0) + 1
    a.done = a.states.get(S.DONE, 0)
    a.in_doubt = a.states.get(S.IN_DOUBT, 0)
    by_body: dict[str, list[JobRow]] = {}
    for j in rows:
        by_body.setdefault(request_sha256(json.loads(j["request"])), []).append(j)
    creates = truth["creates"]
    a.creates = len(creates)
    served = {c["task_id"]: c for c in creates}
    per_body: dict[str, int] = {}
    for c in creates:
        per_body[c["body_sha256"]] = per_body.get(c["body_sha256"], 0) + 1
        owners = by_body.get(c["body_sha256"], [])
        if c["task_id"] in known:
            continue
        if any(o["id"] in doubted for o in owners):
            a.unknown_in_doubt += 1
        else:
            a.unknown += 1
            a.violations.append(f"create {c['task_id']} is unknown to the ledger and no job of it is in doubt")
    for body, owners in by_body.items():
        if any(o["id"] in doubted for o in owners):
            continue
        extra = per_body.get(body, 0) - sum(len(ids_per_job[o["id"]]) for o in owners)
        if extra > 0:
            a.duplicates += extra
            a.violations.append(f"{extra} duplicate create(s) for {[o['name'] for o in owners]}")
    for tid in known:
        if tid not in served:
            a.invented += 1
            a.violations.append(f"ledger task id {tid} was never created by the API")
    for j in rows:
        if j["state"] != S.DONE or j["output_path"] is None:
            continue
        p = Path(j["output_path"])
        try:
            data = p.read_bytes()
        except OSError as e:
            a.corrupt_files += 1
            a.violations.append(f"{p}: {e.strerror}")
            continue
        sha = hashlib.sha256(data).hexdigest()
        served_sha = served.get(j["task_id"], {}).get("file_sha256")
        if sha != j["sha256"] or len(data) != j["bytes"] or sha != served_sha:
            a.corrupt_files += 1
            a.violations.append(f"{p} differs from the ledger or from what the API served")
    if out_dir.exists():
        a.temp_files = sum(1 for _ in out_dir.rglob("*.part"))
        if a.temp_files:
            a.violations.append(f"{a.temp_files} temp file(s) left in {out_dir}")
    return a
