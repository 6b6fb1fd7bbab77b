"""The ledger: every SQL statement batchgen runs lives in this package, one room per concept.

* ``engine``      — where the ledger is (``ledger_url``), the engine and its modes, migrations.
* ``boundary``    — ``error_boundary``: database, driver and OS errors become ``LedgerError``.
* ``sqlitefile``  — is a SQLite ledger's file whole (header, size, -wal, quick_check), before any connection.
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

PostgreSQL ledgers are *cooperative*: several ``batchgen run`` processes (workers, one ``runs``
row each) share them. A worker claims queued jobs with ``FOR UPDATE SKIP LOCKED`` (a lease:
``jobs.worker_id``), moves only jobs it holds, and keeps its lease alive with a heartbeat
stamped by the server's clock. A worker whose heartbeat goes stale is declared dead by any live
one, which takes over its paid tasks (to poll and download, never to resubmit) and turns its
mid-create jobs into ``in_doubt``, exactly what a restart does on SQLite.
"""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from ..failures import RETRYABLE_TASK_CODES
from .boundary import error_boundary
from .engine import (DEFAULT_LEDGER, DEFAULT_SIM_LEDGER, check_url, ledger_named, ledger_url, make_engine,
                     migrations_dir, safe_ledger_url, schema_revisions, sqlite_file, sqlite_tables, upgrade)
from .decisions import KEEP, Change, Decision, Keep
from .facade import Ledger
from .scope import Scope
from .transitions import Transition
from .writer import Writer

__all__ = ["Change", "DEFAULT_LEDGER", "DEFAULT_SIM_LEDGER", "Decision", "KEEP", "Keep", "Ledger", "OperationalError",
           "RETRYABLE_TASK_CODES", "Scope", "Transition", "Writer", "check_url", "error_boundary", "ledger_named", "ledger_url", "make_engine", "migrations_dir",
           "safe_ledger_url", "schema_revisions", "sqlite_file", "sqlite_tables", "upgrade"]
