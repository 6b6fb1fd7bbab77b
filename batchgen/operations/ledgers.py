"""How an operation opens a ledger, and the few pieces every operation shares: ``open_ledger``
(the block's ledger, closed after it unless the caller passed one in), ``ledger_exists`` (the
rule plan/diff follow to compare or not), ``upgrade`` (``batchgen db upgrade``) and ``brief``
(the short form of a job in every document).

No command but ``run`` creates a ledger: a mistyped ``--ledger`` is an error (``LedgerMissing``),
never a new empty ledger. Commands that only read open it read-only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..jobs import JobRow, short_key
from ..ledger import Ledger, ledger_url


@contextmanager
def open_ledger(ledger: str | Ledger | None, *, create: bool = False, readonly: bool = False,
                migrate: bool = True) -> Iterator[Ledger]:
    """An open ledger for the block (closed after it unless the caller passed one in)."""
    if isinstance(ledger, Ledger):
        yield ledger
        return
    led = Ledger(ledger, create=create, readonly=readonly, migrate=migrate)
    try:
        yield led
    finally:
        led.close()



def ledger_exists(ledger: str | None) -> bool:
    """Whether plan/diff compare with a ledger: always when one is named (``--ledger``: a
    missing one is then an error, not an empty ledger); the default or BATCHGEN_LEDGER's only
    when it exists (planning before the first run)."""
    if ledger is not None:
        return True
    url = ledger_url(ledger)
    return not url.startswith("sqlite:///") or Path(url[len("sqlite:///"):]).exists()



def brief(j: JobRow) -> dict[str, Any]:
    return {"id": j["id"], "key": short_key(j["key"]), "name": j["name"], "state": j["state"],
            "task_id": j["task_id"], "error": j["error_code"]}


def upgrade(ledger: str | None = None) -> str:
    """Apply the ledger's migrations; returns its printable name. A SQLite ledger must exist
    (``LedgerMissing``: never an empty one made here); a PostgreSQL database gets batchgen's
    tables if it has none yet (setting up a cooperative ledger before its workers start)."""
    with open_ledger(ledger, create=not ledger_url(ledger).startswith("sqlite")) as led:
        return str(led)

