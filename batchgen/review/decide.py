"""Deciding without a browser: verdicts, notes and picks by job reference, or a whole CSV of
them (the columns ``batchgen export`` writes). Every reference and every line is checked before
anything is recorded: bad input names each problem and records nothing."""

from __future__ import annotations

import csv
import getpass
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DecisionsFileError, Problem, UsageError
from ..export import neutralise
from ..jobs import JobRow, JobState, Verdict, short_key
from ..ledger import KEEP, Change, Keep, Ledger
from ..operations import open_ledger

# What people type for a verdict; "pending" (or "none") takes a clip back to no decision.
_SPELLINGS = {"approve": Verdict.APPROVE, "approved": Verdict.APPROVE, "retake": Verdict.RETAKE,
              "reject": Verdict.REJECT, "rejected": Verdict.REJECT, "pending": None, "none": None}
_TRUE = frozenset({"true", "yes", "1", "y", "pick"})
_FALSE = frozenset({"false", "no", "0", "n", ""})
_MAX_CSV_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class DecisionSummary:
    """What a call recorded: decisions written, and the jobs whose decision already said so."""

    decided: int
    unchanged: int


def default_reviewer() -> str:
    """The OS user, as ``--reviewer`` defaults to (``unknown`` where there is none: a container
    running under a uid without a passwd entry)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def parse_verdict(text: str) -> Verdict | None:
    """A verdict as typed (``approve``, ``approved``, ``retake``, ``reject``, ``pending``…);
    ``None`` is pending. ``ValueError`` naming the accepted words otherwise."""
    try:
        return _SPELLINGS[text.strip().lower()]
    except KeyError:
        raise ValueError(f"{text!r} is not a verdict (approve, retake, reject or pending)") from None


def _reviewable(led: Ledger, refs: Iterable[str]) -> list[JobRow]:
    """The finished clips these references (id, key, key prefix, task id) name; every reference
    that names none, or a clip that is not finished, in one error."""
    found: list[JobRow] = []
    bad: list[str] = []
    for ref in refs:
        j = led.job(ref)
        if j is None:
            bad.append(f"{ref}: no such job")
        elif j["state"] != JobState.DONE:
            bad.append(f"{ref} ({j['name']}): {j['state']}, not a finished clip; only finished clips are reviewed")
        else:
            found.append(j)
    if bad:
        raise UsageError("nothing was recorded: " + "; ".join(bad))
    return found


def _summary(led: Ledger, changes: Sequence[Change], reviewer: str) -> DecisionSummary:
    written = led.decide(changes, reviewer)
    return DecisionSummary(decided=len(written), unchanged=len({c.job_id for c in changes}) - len(written))


def pick_changes(led: Ledger, job_id: int, takes: Sequence[int] | None = None) -> list[Change]:
    """Make ``job_id`` its shot's pick: it is approved and picked, and any other take of the
    shot (``takes``; by default the same request with another ``take``) picked before is not."""
    others = [t for t in (takes if takes is not None else led.takes_of(job_id)) if t != job_id]
    was = led.latest_decisions(others)
    return [*(Change(t, pick=False) for t in others if t in was and was[t]["pick"]),
            Change(job_id, verdict=Verdict.APPROVE, pick=True)]


def set_verdict(ledger: str | Ledger | None, refs: Sequence[str], verdict: Verdict | None | Keep, *,
                note: str | None | Keep = KEEP, reviewer: str | None = None) -> DecisionSummary:
    """Record ``verdict`` (None: back to pending; ``KEEP``: only the note) for each clip named
    by ``refs``, by ``reviewer`` (default: the OS user). Every reference is checked first."""
    with open_ledger(ledger) as led:
        jobs = _reviewable(led, refs)
        unpick = verdict is not KEEP and verdict != Verdict.APPROVE  # a pick that is no longer approved is no pick
        changes = [Change(j["id"], verdict=verdict, note=note, pick=False if unpick else KEEP) for j in jobs]
        return _summary(led, changes, reviewer or default_reviewer())


def pick(ledger: str | Ledger | None, ref: str, *, reviewer: str | None = None,
         takes: Sequence[int] | None = None) -> DecisionSummary:
    """Make the clip ``ref`` names its shot's pick (approved; any other take picked before is no
    longer the pick). ``takes``: the shot's jobs when the caller groups shots otherwise
    (``batchgen review --by``)."""
    with open_ledger(ledger) as led:
        (job,) = _reviewable(led, [ref])
        return _summary(led, pick_changes(led, job["id"], takes), reviewer or default_reviewer())


def _cell(text: str | None) -> str:
    """A CSV cell as it was recorded: export's spreadsheet guard (a leading apostrophe before
    what would be a formula) taken off again."""
    text = text or ""
    if text[:1] == "'" and neutralise(text[1:]) != text[1:]:
        return text[1:]
    return text


def from_csv(ledger: str | Ledger | None, path: str | Path, *, reviewer: str | None = None) -> DecisionSummary:
    """Apply the decisions of a CSV with the columns ``batchgen export`` writes: ``job_key``
    and ``review`` (approve, retake, reject, pending), optionally ``review_note``, ``pick``
    and ``reviewer`` (who decided; else ``reviewer``, else the OS user). A blank cell changes
    nothing, so an export fed back as it is records nothing new. Every line is checked first;
    any problem records nothing (``DecisionsFileError``: each with its line and field)."""
    path = Path(path)
    name = str(path)
    try:
        if not path.is_file():
            raise UsageError(f"{name}: not a file")
        if path.stat().st_size > _MAX_CSV_BYTES:
            raise UsageError(f"{name}: larger than {_MAX_CSV_BYTES // 2**20} MiB; split it")
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DecisionsFileError([Problem(name, f"byte {e.start}", None, "not UTF-8 text")]) from None
    except OSError as e:
        raise UsageError(f"{name}: cannot read it: {e.strerror or e}") from None
    reader = csv.DictReader(text.splitlines(keepends=True))
    problems: list[Problem] = []
    header = reader.fieldnames or []
    for col in ("job_key", "review"):
        if col not in header:
            problems.append(Problem(name, "line 1", col, "missing column (the columns `batchgen export` writes)"))
    if problems:
        raise DecisionsFileError(problems)
    default = reviewer or default_reviewer()
    by_reviewer: dict[str, list[Change]] = {}
    with open_ledger(ledger) as led:
        for row in reader:
            where = f"line {reader.line_num}"
            verdict: Verdict | None | Keep = KEEP
            raw = _cell(row.get("review")).strip()
            if raw:
                try:
                    verdict = parse_verdict(raw)
                except ValueError as e:
                    problems.append(Problem(name, where, "review", str(e)))
                    continue
            note: str | None | Keep = _cell(row.get("review_note")) or KEEP
            picked = (row.get("pick") or "").strip().lower()
            if picked not in _TRUE | _FALSE:
                problems.append(Problem(name, where, "pick", f"{picked!r}: true or empty"))
                continue
            if picked in _TRUE and verdict not in (KEEP, Verdict.APPROVE):
                problems.append(Problem(name, where, "pick", f"a pick is approved; this line says {raw!r}"))
                continue
            if verdict is KEEP and note is KEEP and picked not in _TRUE:
                continue  # nothing decided on this line (an unreviewed or unfinished job of an export)
            key = (row.get("job_key") or "").strip()
            job = led.job(key) if key else None
            if job is None:
                problems.append(Problem(name, where, "job_key", f"{key!r}: no such job" if key else "empty"))
                continue
            if job["state"] != JobState.DONE:
                problems.append(Problem(name, where, "job_key", f"{short_key(job['key'])} ({job['name']}) is "
                                        f"{job['state']}, not a finished clip"))
                continue
            who = _cell(row.get("reviewer")).strip() or default
            changes = by_reviewer.setdefault(who, [])
            if picked in _TRUE:
                changes.extend(c if c.job_id != job["id"] else Change(job["id"], verdict=Verdict.APPROVE,
                                                                         pick=True, note=note)
                               for c in pick_changes(led, job["id"]))
            elif verdict is not KEEP or note is not KEEP:
                changes.append(Change(job["id"], verdict=verdict, note=note))
            if len(problems) >= 50:
                break
        if problems:
            raise DecisionsFileError(problems)
        total = DecisionSummary(0, 0)
        for who, changes in by_reviewer.items():
            s = _summary(led, changes, who)
            total = DecisionSummary(total.decided + s.decided, total.unchanged + s.unchanged)
        return total
