"""Results export: CSV and JSON, one row per job, by run and in manifest order
within a run.

CSV is spreadsheet-safe by default: a text cell a spreadsheet would run as a formula (``= + - @``,
tab, CR, LF first) gets a leading apostrophe. ``raw=True`` writes cells exactly as recorded, for
programs and for feeding the file back to batchgen as ``rows:`` (the round trip gives the same
job keys: ``params`` holds every request field as JSON, result columns are ignored on the way
back). JSON is always exact, with ``params`` as an object."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, cast

from . import crash
from .jobs import JobRow

COLUMNS = ["job_key", "name", "take", "row", "model", "prompt", "params", "state", "task_id", "result_url",
           "output_path", "bytes", "sha256", "credits", "attempts", "polls", "error_code", "error_message",
           "submitted_at", "completed_at", "done_at", "verify", "verify_detail", "duration_s", "width", "height",
           "fps", "codec", "audio", "poster", "contact_sheet", "delivered_url", "delivered_at", "manifest",
           "review", "review_note", "reviewer", "pick"]
_FORMULA_FIRST = frozenset("=+-@\t\r\n")


def neutralise(cell: Any) -> Any:
    """A text cell that a spreadsheet would read as a formula gets a leading apostrophe (OWASP
    CSV-injection advice). Numbers stay numbers."""
    if cell.__class__ is str and cell[:1] in _FORMULA_FIRST:
        return "'" + cell
    return cell


def _iso(t: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else None



def to_record(j: JobRow) -> dict[str, Any]:
    """One export row; its keys are COLUMNS, in order."""
    req = json.loads(j["request"])
    prompt = req.pop("prompt", None)
    req.pop("model", None)
    return {
        "job_key": j["key"], "name": j["name"], "take": j["take"], "row": j["source"], "model": j["model"],
        # The ledger stores canonical (key-sorted) JSON, so the order is already stable.
        "prompt": prompt, "params": req, "state": j["state"],
        "task_id": j["task_id"], "result_url": j["result_url"], "output_path": j["output_path"],
        "bytes": j["bytes"], "sha256": j["sha256"], "credits": j["credits"], "attempts": j["attempts"],
        "polls": j["polls"], "error_code": j["error_code"], "error_message": j["error_message"],
        "submitted_at": _iso(j["submitted_at"]), "completed_at": _iso(j["completed_at"]), "done_at": _iso(j["done_at"]),
        # what the delivered file measured (batchgen verify, media.py)
        "verify": j["verify"], "verify_detail": j["verify_detail"],
        "duration_s": None if j["m_duration"] is None else round(j["m_duration"], 3), "width": j["m_width"],
        "height": j["m_height"], "fps": j["m_fps"], "codec": j["m_codec"], "audio": j["m_audio"],
        "poster": j["poster"], "contact_sheet": j["sheet"],
        # where --deliver put it (object storage)
        "delivered_url": j["delivered_url"], "delivered_at": _iso(j["delivered_at"]),
        # the manifest of the run that recorded the job last (operations.outputs adds it; new columns
        # go after the existing ones, so positions scripts rely on stay)
        "manifest": cast(dict[str, Any], j).get("manifest"),
        # the latest review decision (batchgen review): verdict (empty: pending), its note, who
        # decided, and whether this take is its shot's pick. `batchgen review --from` reads
        # these columns back.
        "review": j.get("review"), "review_note": j.get("review_note"), "reviewer": j.get("reviewer"),
        "pick": True if j.get("pick") else None,
    }


def write_csv(rows: Iterable[JobRow], out: IO[str], *, raw: bool = False) -> int:
    w = csv.writer(out)
    w.writerow(COLUMNS)
    n = 0
    cell = _same if raw else neutralise
    for j in rows:
        rec = to_record(j)  # its keys are COLUMNS, in order
        rec["params"] = json.dumps(rec["params"], ensure_ascii=False)
        w.writerow(["" if v is None else cell(v) for v in rec.values()])
        n += 1
        crash.point("mid_export")
    return n


def _same(cell: Any) -> Any:
    return cell


def iter_json(rows: Iterable[JobRow]) -> Iterator[str]:
    """The JSON array, streamed. Every chunk ends a line (a row is written once the next one, or
    the end, is known: its comma or the closing bracket goes with it), so what follows a failure
    mid-way — the JSON error object of ``--json`` (a damaged ledger page met while streaming) —
    starts on a line of its own. The bytes are those of the whole array written at once."""
    yield "[\n"
    prev: str | None = None
    for j in rows:
        if prev is not None:
            yield prev + ",\n"
        prev = json.dumps(to_record(j), ensure_ascii=False)
    yield ("" if prev is None else prev + "\n") + "]\n"


def write_json(rows: Iterable[JobRow], out: IO[str]) -> int:
    n = 0

    def counted() -> Iterator[JobRow]:
        nonlocal n
        for j in rows:
            n += 1
            yield j

    for chunk in iter_json(counted()):
        out.write(chunk)
    return n
