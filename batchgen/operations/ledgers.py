"""How an operation opens a ledger, and the few pieces every operation shares: ``open_ledger``
(the block's ledger, closed after it unless the caller passed one in), ``ledger_to_compare``
(the ledger plan/diff compare with, opened before any expansion), ``upgrade`` (``batchgen db
upgrade``) and ``brief`` (the short form of a job in every document).

No command but ``run`` creates a ledger: a mistyped ``--ledger`` is an error (``LedgerMissing``),
never a new empty ledger. Commands that only read open it read-only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..jobs import JobRow, short_key
from ..ledger import ledger_file, ledger_named, ledger_url

if TYPE_CHECKING:
    from ..ledger import Ledger


@contextmanager
def open_ledger(ledger: str | Ledger | None, *, create: bool = False, readonly: bool = False,
                migrate: bool = True) -> Iterator[Ledger]:
    """An open ledger for the block (closed after it unless the caller passed one in). The
    ledger (SQLAlchemy) loads here, not when this module does: `status` may not need it."""
    from ..ledger import Ledger

    if isinstance(ledger, Ledger):
        yield ledger
        return
    led = Ledger(ledger, create=create, readonly=readonly, migrate=migrate)
    try:
        yield led
    finally:
        led.close()



@contextmanager
def ledger_to_compare(ledger: str | Ledger | None) -> Iterator[Ledger | None]:
    """The ledger ``plan``/``diff`` compare a manifest with, opened (read-only) before the
    manifest is read: a missing, foreign or outdated ledger is said at once, not after a
    million-row expansion. ``None`` when no ledger was named (``--ledger``, BATCHGEN_LEDGER) and
    the default ./batchgen.db (./batchgen-sim.db with ``--simulate``) does not exist yet:
    planning before the first run. A named one that does not exist is ``LedgerMissing``,
    however it was named."""
    if (ledger is None or isinstance(ledger, str)) and not ledger_named(ledger):
        default = ledger_file(ledger)  # ./batchgen.db, or --simulate's ./batchgen-sim.db
        if default is not None and not default.exists():
            yield None
            return
    with open_ledger(ledger, readonly=True) as led:
        yield led


def brief(j: JobRow) -> dict[str, Any]:
    return {"id": j["id"], "key": short_key(j["key"]), "name": j["name"], "state": j["state"],
            "task_id": j["task_id"], "error": j["error_code"]}


def upgrade(ledger: str | None = None) -> str:
    """Apply the ledger's migrations; returns what was done, said of the ledger by its
    printable name. A SQLite ledger must exist (``LedgerMissing``: never an empty one made
    here); a PostgreSQL database gets batchgen's tables if it has none yet (setting up a
    cooperative ledger before its workers start)."""
    from ..ledger import schema_revisions

    with open_ledger(ledger, create=not ledger_url(ledger).startswith("sqlite")) as led:
        head = schema_revisions()[0]
        if led.created:
            return f"ledger {led}: batchgen's tables set up (schema {head})"
        if led.upgraded_from is not None:
            return f"ledger {led} upgraded from schema {led.upgraded_from} to {head}"
        return f"ledger {led} is up to date (schema {head})"

