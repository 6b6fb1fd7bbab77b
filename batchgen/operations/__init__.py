"""What an operator does around runs — plan, status, resolve, cancel, stop, export, report — as
functions over a ledger that return plain data (dicts and lists of JSON-able values). The
command line formats them; a script can use them as they are.

No command but ``run`` creates a ledger: a mistyped ``--ledger`` is an error (``LedgerMissing``),
never a new empty ledger. Commands that only read (plan, diff, status, export, report) open it
read-only: SQLite ``query_only`` (``mode=ro`` while its log holds frames), no migration, no journal-mode switch, so another application's
database is refused unchanged (``NotALedger``) and an older ledger is left to `batchgen db upgrade`
(``LedgerOutdated``). ``verify`` (and ``draw_sheets``) records its findings but never migrates either.

One module per concept: ``ledgers`` (opening a ledger, ``upgrade``), ``planning`` (plan, diff,
why), ``modeldocs`` (catalog, models), ``runstate`` (status, resolve, stop, cancel),
``outputs`` (export, results, report), ``clips`` (verify, draw_sheets, deliver, lost, recover). Every
public name is importable from here, loaded on first use (PEP 562): ``batchgen models`` reads
the catalog without loading the ledger (SQLAlchemy).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .clips import deliver, draw_sheets, lost, recover, verify
    from .ledgers import open_ledger, upgrade
    from .modeldocs import catalog, models
    from .outputs import export, report, results
    from .planning import diff, plan, why
    from .runstate import cancel, resolve, status, stop

# name → the module of this package that defines it
_EXPORTS = {
    "open_ledger": "ledgers", "upgrade": "ledgers",
    "plan": "planning", "diff": "planning", "why": "planning",
    "catalog": "modeldocs", "models": "modeldocs",
    "status": "runstate", "resolve": "runstate", "stop": "runstate", "cancel": "runstate",
    "export": "outputs", "results": "outputs", "report": "outputs",
    "verify": "clips", "draw_sheets": "clips", "deliver": "clips", "lost": "clips", "recover": "clips",
}
__all__ = ["cancel", "catalog", "deliver", "diff", "draw_sheets", "export", "lost", "models", "open_ledger", "plan", "recover",
           "report", "resolve", "results", "status", "stop", "upgrade", "verify", "why"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
