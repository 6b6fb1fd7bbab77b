"""Everything about a run that can be checked before anything is recorded or paid for.

A nightly run either refuses before its first create — every problem named at once, exit 2,
no ledger created — or it runs. ``check`` gathers the checks that need neither the network
nor the ledger: the API base URL, the ledger URL and its driver, the output folder (probed
with a real temporary file), the files written at the end (``--report``, ``--metrics-file``),
the notification URLs (parsed by apprise, nothing sent) and the delivery destination (parsed;
the store itself is asked next, by the runner). The manifest's own problems, output paths
inside ``--out`` included, are found while it is expanded (``runner.prepare``), before its
transaction commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import deliver, files, notify
from .client import check_api_base
from .errors import EXIT_USAGE, BatchgenError, OutputFailed, OutputRefused, UsageError
from .ledger import check_url, ledger_url, sqlite_file


@dataclass
class Plan:
    """What a run will touch, as given (nothing opened yet)."""

    out_dir: Path
    api_base: str | None = None  # None: the embedded simulator
    ledger: str | None = None  # a path or URL; None: the default; "" when an open Ledger was given
    simulated: bool = False
    report: Path | None = None
    metrics_file: Path | None = None
    notify_urls: Sequence[str] = ()
    deliver_to: str | None = None
    deliver_endpoint: str | None = None
    missing: list[str] = field(default_factory=list)  # problems found by the caller (the API key)


def problems(p: Plan) -> list[BatchgenError]:
    """Every problem of ``p`` (empty: the run may start): ``UsageError``s (exit 2) for what was
    given wrong, ``OutputFailed`` (exit 7) where the file system refuses."""
    found: list[BatchgenError] = [UsageError(m) for m in p.missing]

    def usage(message: str | None) -> None:
        if message:
            found.append(UsageError(message))

    if p.api_base is not None:
        usage(check_api_base(p.api_base))
    if p.ledger != "":
        url = ledger_url(p.ledger, simulated=p.simulated)
        usage(check_url(url))
        found += _new_sqlite_file(url)
    out = files.out_dir_problem(p.out_dir)
    if out is not None:
        found.append(out)
    for flag, target in (("--report", p.report), ("--metrics-file", p.metrics_file)):
        if target is not None:
            try:
                files.ensure_output_target(target, what=flag)
            except (OutputRefused, OutputFailed) as e:
                found.append(e)
    for message in notify.check(p.notify_urls):
        usage(message)
    if p.deliver_to is not None or p.deliver_endpoint is not None:
        for message in deliver.check(p.deliver_to, p.deliver_endpoint):
            usage(message)
    return found


def check(p: Plan) -> list[str]:
    """``problems`` as one line each."""
    return [str(e).strip() for e in problems(p)]


def _new_sqlite_file(url: str) -> list[BatchgenError]:
    """A SQLite ledger that does not exist yet needs a folder that can hold it (the same rule,
    and exit code, as --out)."""
    db = sqlite_file(url)
    if db is None or db.exists():
        return []
    e = files.out_dir_problem(db.parent)
    if e is None:
        return []
    return [type(e)(f"--ledger {db}: {e}")]


def require(p: Plan) -> None:
    """Raise every problem of ``p`` at once: exit 2 when any was given wrong, else the file
    system's exit 7."""
    found = problems(p)
    if not found:
        return
    code = EXIT_USAGE if any(e.exit_code == EXIT_USAGE for e in found) else found[0].exit_code
    lines = [str(e).strip() for e in found]
    text = (f"{lines[0]} — nothing was submitted" if len(lines) == 1 else
            "the run cannot start; nothing was submitted:\n" + "\n".join(f"  - {x}" for x in lines))
    err = UsageError(text) if code == EXIT_USAGE else OutputFailed(text)
    raise err


__all__ = ["Plan", "check", "problems", "require"]
