"""What leaves the ledger as files or records: ``export`` (CSV/JSON), ``results`` (the same
records for a script) and ``report`` (the HTML page), each limited to a run or a manifest.
They read only (the ledger is opened read-only) and write through ``files`` (atomic, refused
targets never replaced)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Literal, cast

from .. import files
from ..errors import UsageError
from ..export import to_record, write_csv, write_json
from ..jobs import JobRow
from ..ledger import Ledger
from .ledgers import open_ledger


def _rows(led: Ledger, run_id: int | None, manifest: str | Path | None) -> Iterator[JobRow]:
    """``iter_export`` limited to one run and/or one manifest (its recorded membership, see
    ``Scope``), each row carrying ``manifest``: the manifest of the run that recorded it last."""
    path = None if manifest is None else str(Path(manifest).resolve())
    if path is not None and not led.knows_manifest(path):
        raise UsageError(f"{manifest}: no run of this manifest is recorded in {led}")
    manifests: dict[int, str | None] = {}
    for j in led.iter_export(run_id, manifest=path, review=True):
        rid = j["run_id"]
        if rid not in manifests:
            r = led.run(rid)
            manifests[rid] = r["manifest"] if r else None
        # iter_export yields a fresh dict per row: the extra key rides along to to_record/render.
        cast(dict[str, Any], j)["manifest"] = manifests[rid]
        yield j


def export(ledger: str | Ledger | None = None, output: Path | IO[str] | None = None, *, run_id: int | None = None,
           fmt: Literal["csv", "json"] = "csv", raw: bool = False, manifest: str | Path | None = None) -> int:
    """Write one row per job (or run ``run_id``'s, or ``manifest``'s), by run and in manifest order within a run, to
    ``output`` (a path, written atomically, or an open text stream); returns the number of rows.
    CSV cells a spreadsheet would run as formulas get a leading apostrophe unless ``raw``."""
    writer: Callable[[Any, IO[str]], int] = (
        write_json if fmt == "json" else functools.partial(write_csv, raw=raw))
    if isinstance(output, Path):
        # Refused before the ledger is read: a device, FIFO or folder is never replaced.
        files.ensure_output_target(output, what="the export")
    with open_ledger(ledger, readonly=True) as led:
        rows = _rows(led, run_id, manifest)
        if output is None or not isinstance(output, Path):
            return writer(rows, output or sys.stdout)
        with files.atomic_output(output, what="the export", allow_stdout=True) as f:
            return writer(rows, f)


def results(ledger: str | Ledger | None = None, *, run_id: int | None = None,
            manifest: str | Path | None = None) -> Iterator[dict[str, Any]]:
    """One record per job (or run ``run_id``'s, or ``manifest``'s), by run and in manifest order within a run: the rows
    ``export --json`` writes (name, state, task id, output path, sha256, credits, error, …), streamed."""
    with open_ledger(ledger, readonly=True) as led:
        for j in _rows(led, run_id, manifest):
            yield to_record(j)


def report(ledger: str | Ledger | None = None, output: Path = Path("report.html"), *, run_id: int | None = None,
           title: str = "batchgen report", compare: str | None = None,
           manifest: str | Path | None = None) -> dict[str, Any]:
    """Write the self-contained HTML report (``compare``: open it in the comparison view by that
    field — a matrix field, ``model`` or ``take``; ``run_id``/``manifest``: only those jobs);
    returns the summary figures it shows."""
    from ..report import render

    with open_ledger(ledger, readonly=True) as led:
        whole = run_id is None and manifest is None
        return render(_rows(led, run_id, manifest), output, title=title, run=led.run(run_id), compare=compare,
                      delivery=led.delivery_counts() if whole else None,
                      scope=None if manifest is None else str(Path(manifest).resolve()))
