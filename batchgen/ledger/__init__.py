"""The ledger: every SQL statement batchgen runs lives in this package, one room per concept.

* ``engine``      — where the ledger is (``ledger_url``), the engine, migrations (``upgrade``).
* ``boundary``    — ``error_boundary``: database, driver and OS errors become ``LedgerError``.
* ``facade``      — ``Ledger``, the object callers open; it only delegates to the rooms.
* ``scope``, ``sql`` — which jobs a manifest means; query pieces the rooms share.
* ``transitions`` — ``Transition`` and the only code that changes a recorded job's state.
* ``writer``      — ``Writer``: the scheduler's door (one thread, grouped commits).

PostgreSQL ledgers are *cooperative*: several ``batchgen run`` processes (workers, one ``runs``
row each) share them. A worker claims queued jobs with ``FOR UPDATE SKIP LOCKED`` (a lease:
``jobs.worker_id``), moves only jobs it holds, and keeps its lease alive with a heartbeat
stamped by the server's clock. A worker whose heartbeat goes stale is declared dead by any live
one, which takes over its paid tasks (to poll and download, never to resubmit) and turns its
mid-create jobs into ``in_doubt``, exactly what a restart does on SQLite.
"""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from .boundary import error_boundary
from .engine import (DEFAULT_LEDGER, DEFAULT_SIM_LEDGER, _migrations_dir, check_url, ledger_url, make_engine,
                     safe_ledger_url, schema_revisions, sqlite_tables, upgrade)
from .facade import Ledger
from .scope import Scope
from .transitions import RETRYABLE_TASK_CODES, Transition
from .writer import Writer

__all__ = ["DEFAULT_LEDGER", "DEFAULT_SIM_LEDGER", "Ledger", "OperationalError", "RETRYABLE_TASK_CODES", "Scope",
           "Transition", "Writer", "_migrations_dir", "check_url", "error_boundary", "ledger_url", "make_engine",
           "safe_ledger_url", "schema_revisions", "sqlite_tables", "upgrade"]
