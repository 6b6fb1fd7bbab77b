"""The open ledger (``Database``: engine, schema check on open, the SQLite writer lock) and
``Room``, the base of every part of the ledger that runs SQL through it."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import func
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import OperationalError

from ..errors import LedgerBusy
from .boundary import error_boundary
from .engine import make_engine, sqlite_file, stamped_revision, upgrade
from .location import ledger_url
from .revisions import LEDGER_TABLES, needs_upgrade, not_a_ledger, schema_revisions
from .sqlitefile import check as check_file
from .sqlitefile import check_pages, sqlite_tables, stamp
from .sqlitehead import create as create_at_head

P = ParamSpec("P")
R = TypeVar("R")
# PostgreSQL errors after which the whole transaction is simply tried again: two workers locked
# rows in different orders (deadlock), or a serialisation conflict.
_RETRY_SQLSTATES = frozenset({"40P01", "40001"})


def _retryable(e: BaseException) -> bool:
    return getattr(getattr(e, "orig", None), "sqlstate", None) in _RETRY_SQLSTATES


@error_boundary
class Database:
    """The ledger at ``url`` (see ``ledger_url``), opened and migrated to the current schema.
    ``create=False`` (what commands that only read use) refuses a ledger that does not exist
    (``LedgerMissing``) instead of creating an empty one; ``readonly`` opens it so that nothing
    can be written (``make_engine``)."""

    def __init__(self, url: str | None = None, *, migrate: bool = True, create: bool = True,
                 simulated: bool = False, readonly: bool = False) -> None:
        self.url = ledger_url(url, simulated=simulated)
        self._safe_url = make_url(self.url).render_as_string(hide_password=True)
        self.readonly = readonly
        file = sqlite_file(self.url)
        if file is not None and file.is_file():  # a FIFO or folder is refused by make_engine, unread
            check_file(file)  # before any connection: a damaged file is refused unchanged (sqlitefile)
        self.engine = make_engine(self.url, create=create, readonly=readonly)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        db = make_url(self.url).database
        # The ledger's file (SQLite), for files kept beside it; None for a server database.
        self.path: Path | None = Path(db) if self.is_sqlite and db and db != ":memory:" else None
        self.created = False  # this open made a new, empty ledger
        self.upgraded_from: str | None = None  # the schema revision this open migrated from (None: did not)
        # One process per SQLite ledger (flock); any number of workers per PostgreSQL ledger.
        self.cooperative = not self.is_sqlite
        self._lock_fd: int | None = None
        try:
            self._check_schema(create=create and not readonly, migrate=migrate and not readonly)
            if self.path is not None and not readonly:
                stamp(self.engine)  # ties the file to its write-ahead log from now on (sqlitefile)
        except BaseException:
            self.engine.dispose()
            raise

    def _check_schema(self, *, create: bool, migrate: bool) -> None:
        """Refuse a database that is not a batchgen ledger before anything touches it; then bring
        the schema to this version (``migrate``) or refuse one of another version (commands that
        never migrate: they say to run `batchgen db upgrade`)."""
        if self.path is not None:
            tables = sqlite_tables(self.path)
        else:
            tables = set(sa_inspect(self.engine).get_table_names())
        # None: not an SQLite file at all; opening it below names what is wrong (exit 7).
        if tables is not None and not LEDGER_TABLES <= tables:
            # A SQLite file is one application's database: batchgen tables are never added to
            # another's. A PostgreSQL database is often shared: run may set up its tables there.
            if not create or (tables - {"alembic_version"} and self.path is not None):
                raise not_a_ledger(self, tables)
            self.created = True
        if self.path is not None and not self.readonly:
            # A command that may write has every page checked before its first connection (one
            # that only reads cannot spread damage, and meets any on the pages it reads).
            check_pages(self.path)
        with self.engine.connect() as c:
            current = stamped_revision(c) if not self.created else None
            c.rollback()
        if not needs_upgrade(self, current, migrate=migrate):
            return
        if self.created:
            # An empty file gets the captured head schema at once; anything else, the migrations.
            if not (self.path is not None and tables == set() and create_at_head(self.engine)):
                upgrade(self.engine)
            return
        # An older batchgen may be running on this ledger right now (a new version installed
        # mid-night, then `batchgen stop` typed): migrating under it would have it write the
        # old layout into the new one. SQLite: its run holds the ledger's flock, taken here for
        # the upgrade; PostgreSQL: its workers' heartbeats are fresh (checked in ``upgrade``).
        busy = (f"ledger {self}: written by an older batchgen (schema {current or 'unversioned'}, this version "
                f"needs {schema_revisions()[0]}) and in use by a run of it: it cannot be upgraded under that run. Let "
                "it finish, or stop it with the batchgen that started it, then run this again; nothing was changed")
        if self.path is None:
            if upgrade(self.engine, refuse_if_running=busy):
                self.upgraded_from = current or "unversioned"
            return
        try:
            self.acquire_lock()
        except LedgerBusy:
            raise LedgerBusy(busy) from None
        try:
            if upgrade(self.engine):
                self.upgraded_from = current or "unversioned"
        finally:
            self.release_lock()

    @property
    def safe_url(self) -> str:
        """The URL without its password: for messages."""
        return self._safe_url

    def __str__(self) -> str:
        """The file's path (SQLite) or the URL without its password: for messages."""
        return str(self.path) if self.path is not None else self._safe_url

    def close(self) -> None:
        self.release_lock()
        self.engine.dispose()

    # ------------------------------------------------------------ single writer
    def acquire_lock(self) -> None:
        """One ``batchgen run`` per SQLite ledger: orphan detection (``submitting`` → in doubt)
        is only right when no other process can be mid-create. An flock, released by the kernel
        when the process dies, kill -9 included. PostgreSQL ledgers take no lock: their workers
        coordinate through leases (see the package docstring)."""
        if self.cooperative or self._lock_fd is not None:
            return
        path = f"{make_url(self.url).database}.lock"
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LedgerBusy(f"another batchgen run is using this ledger ({path} is locked)") from None
        self._lock_fd = fd

    def release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def locked(self) -> bool:
        """This process holds the SQLite writer lock (``acquire_lock``)."""
        return self._lock_fd is not None

    def check_integrity(self) -> str:
        if not self.is_sqlite:
            return "ok"
        with self.engine.connect().execution_options(readonly=True) as c:
            return str(c.exec_driver_sql("PRAGMA integrity_check").scalar())


class Room:
    """A part of the ledger with one job (runs, recording, transitions, leases, records, reads),
    sharing the open ``Database``. Every subclass is made an ``error_boundary`` class when it is
    defined, so the public methods of every room, present and future, raise only ``LedgerError``
    for database, driver and file-system failures."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        error_boundary(cls)

    def __init__(self, db: Database) -> None:
        self.db = db
        self.url = db.url  # error_boundary names the ledger and its folder from these two
        self._safe_url = db.safe_url
        self.engine = db.engine
        self.is_sqlite = db.is_sqlite

    def _read(self) -> Connection:
        """A connection for reads: a plain BEGIN on SQLite (no write lock taken)."""
        return self.engine.connect().execution_options(readonly=True)

    def _now(self) -> Any:
        """Heartbeats use the database server's clock: workers on several machines then need no
        synchronised clocks to agree on who is stale."""
        return time.time() if self.is_sqlite else func.extract("epoch", func.clock_timestamp())

    def _insert_into(self, table: Any) -> Any:
        from sqlalchemy.dialects import postgresql, sqlite

        return (sqlite.insert if self.is_sqlite else postgresql.insert)(table)

    def _retrying(self, fn: Callable[Concatenate[Connection, P], R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(conn, *args)`` in one transaction, again (up to 5 times) if PostgreSQL
        aborted it for a deadlock or serialisation conflict with another worker."""
        for attempt in range(5):
            try:
                with self.engine.begin() as c:
                    return fn(c, *args, **kwargs)
            except OperationalError as e:
                if not _retryable(e) or attempt == 4:
                    raise
                time.sleep(0.01 * 2 ** attempt)
        raise AssertionError("unreachable")
