"""The ledger: every SQL statement batchgen runs lives in this package, one room per concept.

* ``location``    — where the ledger is (``ledger_url``, ``ledger_file``), without SQLAlchemy.
* ``engine``      — the engine and its modes (read-only, WAL), URL checks, migrations run.
* ``revisions``   — the schema revisions this batchgen knows; a foreign or other-version ledger refused.
* ``boundary``    — ``error_boundary``: database, driver and OS errors become ``LedgerError``.
* ``sqlitefile``  — is a SQLite ledger's file whole (header, size, -wal, quick_check), before any connection.
* ``sqlitehead``  — a new SQLite ledger made at once in the schema the migrations leave (captured).
* ``sqlitereads`` — ``SqliteReader``: what ``status`` reads of a SQLite ledger, through the standard
                    library's sqlite3 (read-only), so that `batchgen status` starts without SQLAlchemy.
* ``database``    — ``Database`` (the open ledger, schema check, SQLite writer lock) and ``Room``.
* ``runs``        — the ``runs`` rows: started, stopped, finished, found dead; what is read of them.
* ``recording``   — a manifest's jobs written (new ones ``queued``) with their run and membership.
* ``transitions`` — ``Transition``: the only code that changes a recorded job's state.
* ``leases``      — cooperative workers (PostgreSQL): heartbeats, claims, takeovers.
* ``records``     — verification, delivery and upload records, and what is asked of them.
* ``reads``       — reads of jobs: what status, report, export, diff and plan query.
* ``decisions``   — review decisions (approve, retake, reject, pick, note): appended, the latest counts.
* ``writer``      — ``Writer``: the scheduler's door (one thread, grouped commits).
* ``facade``      — ``Ledger``, the object callers open; it only delegates to the rooms.
* ``scope``, ``sql`` — which jobs a manifest means; query pieces the rooms share.
* ``shapes``      — request shapes: what a manifest's requests share, stored once (the text format).

PostgreSQL ledgers are *cooperative*: several ``batchgen run`` processes (workers, one ``runs``
row each) share them. A worker claims queued jobs with ``FOR UPDATE SKIP LOCKED`` (a lease:
``jobs.worker_id``), moves only jobs it holds, and keeps its lease alive with a heartbeat
stamped by the server's clock. A worker whose heartbeat goes stale is declared dead by any live
one, which takes over its paid tasks (to poll and download, never to resubmit) and turns its
mid-create jobs into ``in_doubt``, exactly what a restart does on SQLite.

Every public name is importable from here, loaded on first use (PEP 562): the modules that
need no SQLAlchemy (``location``, ``revisions``, ``sqlitefile``, ``sqlitereads``, ``shapes``)
can be used without loading it, and the others load it when they are first asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.exc import OperationalError

    from ..failures import RETRYABLE_TASK_CODES
    from .boundary import error_boundary
    from .decisions import KEEP, Change, Decision, Keep, RetakeCandidates
    from .engine import check_url, make_engine, safe_ledger_url, sqlite_file, upgrade
    from .facade import Ledger
    from .location import DEFAULT_LEDGER, DEFAULT_SIM_LEDGER, ledger_file, ledger_named, ledger_url, named_ledger
    from .revisions import migrations_dir, schema_revisions
    from .scope import Scope
    from .sqlitefile import sqlite_tables
    from .sqlitereads import SqliteReader
    from .transitions import Transition
    from .writer import Writer

# name → the module that defines it (``.x``: a module of this package)
_EXPORTS = {
    "OperationalError": "sqlalchemy.exc", "RETRYABLE_TASK_CODES": "batchgen.failures",
    "error_boundary": ".boundary", "KEEP": ".decisions", "Change": ".decisions", "Decision": ".decisions",
    "Keep": ".decisions", "RetakeCandidates": ".decisions", "check_url": ".engine", "make_engine": ".engine",
    "safe_ledger_url": ".engine",
    "sqlite_file": ".engine", "upgrade": ".engine", "Ledger": ".facade", "DEFAULT_LEDGER": ".location",
    "DEFAULT_SIM_LEDGER": ".location", "ledger_file": ".location", "ledger_named": ".location",
    "ledger_url": ".location", "named_ledger": ".location", "migrations_dir": ".revisions", "schema_revisions": ".revisions", "Scope": ".scope",
    "sqlite_tables": ".sqlitefile", "SqliteReader": ".sqlitereads", "Transition": ".transitions",
    "Writer": ".writer",
}
__all__ = ["Change", "DEFAULT_LEDGER", "DEFAULT_SIM_LEDGER", "Decision", "KEEP", "Keep", "Ledger", "OperationalError",
           "RETRYABLE_TASK_CODES", "RetakeCandidates", "Scope", "SqliteReader", "Transition", "Writer", "check_url",
           "error_boundary",
           "ledger_file", "ledger_named", "ledger_url", "make_engine", "migrations_dir", "named_ledger", "safe_ledger_url",
           "schema_revisions", "sqlite_file", "sqlite_tables", "upgrade"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
