"""How a ledger is opened: its URL checked (``check_url``), the SQLAlchemy engine with its SQLite
pragmas and read-only modes, and the Alembic migrations run. Where the ledger is (``--ledger``,
BATCHGEN_LEDGER) is ``location``'s; which revisions exist is ``revisions``'.

SQLite (default) is opened in WAL mode with ``synchronous=FULL`` (a lost ``submitting`` or
``submitted`` row is an orphaned paid task, so no commit may be lost even on power failure),
and every write transaction starts with ``BEGIN IMMEDIATE`` (a deferred read-then-write
transaction can fail with "database is locked" regardless of the busy timeout)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url

from ..errors import LedgerBusy, LedgerMissing, NotALedger
from .location import ledger_url
from .revisions import migrations_dir, stamped
from .sqlitefile import reader_mode

# A PostgreSQL worker whose heartbeat is this recent may be running (twice the default
# --lease-timeout: the others would take its jobs over after one).
LIVE_WORKER_S = 60.0
_MIGRATION_LOCK = 0x62617463  # "batc": with the schema's hash, serialises migrations on PostgreSQL


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite ledger URL (None: a server database, memory, or a URL that does not
    parse — ``check_url`` says why)."""
    try:
        u = make_url(url)
    except Exception:  # noqa: BLE001 — sqlalchemy raises several kinds for a bad URL
        return None
    db = u.database if u.get_backend_name() == "sqlite" else None
    return Path(db) if db and db != ":memory:" else None


def check_url(url: str) -> str | None:
    """What stops ``url`` from opening as a ledger before anything else is tried, as one line
    (None: nothing): an unparseable URL, an unknown database, a driver that is not installed."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        u = make_url(url)
    except ArgumentError:
        return f"--ledger: {url.split('://')[0]}://… is not a database URL (a file path, or e.g. postgresql+psycopg://HOST/DB)"
    shown = u.render_as_string(hide_password=True)
    if u.drivername in ("postgres", "postgresql"):
        return (f"--ledger {shown}: write postgresql+psycopg://… (the driver batchgen uses; "
                "install it with pip install 'batchgen[postgres]')")
    try:
        dialect = u.get_dialect()
    except NoSuchModuleError:
        dialect = None
    if dialect is None or u.get_backend_name() not in ("sqlite", "postgresql"):
        return (f"--ledger {shown}: {u.drivername!r} is not a ledger database: a SQLite file path, or PostgreSQL "
                "as postgresql+psycopg://…")
    try:
        dialect.import_dbapi()
    except ImportError as e:
        extra = " pip install 'batchgen[postgres]'" if u.get_backend_name() == "postgresql" else ""
        return f"--ledger {shown}: its driver is not installed ({e.name or e}):{extra or ' install it'}"
    return None


def safe_ledger_url(value: str | None, *, simulated: bool = False) -> str:
    """``ledger_url`` as a message may show it: a database URL without its password."""
    return make_url(ledger_url(value, simulated=simulated)).render_as_string(hide_password=True)


def make_engine(url: str, *, create: bool = True, readonly: bool = False) -> Engine:
    """An engine for the ledger at ``url``. ``create=False`` (commands that do not start runs)
    refuses a SQLite file that does not exist instead of creating it and its folders.
    ``readonly`` (commands that only read): SQLite is opened with ``query_only`` (and ``mode=ro``
    while its log holds frames, ``reader_mode``) and its journal mode left as it is; a PostgreSQL session is READ ONLY (``default_transaction_read_only``).
    Nothing can then be written, whatever a method tries."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        # Commands that only read open READ ONLY sessions: the server itself refuses DDL and writes.
        # Set through the connection's startup options, not a SET after connecting: toggling
        # psycopg's autocommit in a connect listener failed ("can't change 'autocommit' now")
        # when SQLAlchemy's first-connect initialisation had already opened a transaction.
        # A URL's own ``options`` (a search_path, say) is kept: connect_args would replace it.
        options: dict[str, Any] = {}
        if readonly and u.get_backend_name() == "postgresql":
            own = u.query.get("options")
            own = " ".join(own) if isinstance(own, tuple) else (own or "")
            options["options"] = f"{own} -c default_transaction_read_only=on".strip()
        return create_engine(url, pool_pre_ping=True, future=True, connect_args=options)
    db = u.database
    if db and db != ":memory:":
        path = Path(db)
        if path.exists() and not path.is_file():  # a FIFO would block the first read forever
            raise NotALedger(f"ledger {path}: not a batchgen ledger (not a regular file); nothing was changed")
        if (not create or readonly) and not path.is_file():
            raise LedgerMissing(f"no ledger at {path} (give --ledger or BATCHGEN_LEDGER; `batchgen run` creates one)")
        if not readonly:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                # The ledger holds task ids and result URLs: owner-only from the first byte.
                os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    if readonly and db and db != ":memory:":
        # A URI filename (quoted: a path may hold ? or #); SQLite refuses every write (query_only,
        # and mode=ro when the log holds frames), and the last reader out removes an empty log
        # and its -shm (``reader_mode``).
        ro = URL.create("sqlite", database="file:" + quote(str(Path(db).absolute())),
                        query={"mode": reader_mode(Path(db)), "uri": "true"})
        engine = create_engine(ro, connect_args={"check_same_thread": False, "timeout": 30})
    else:
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (pysqlite's own is wrong)
        cur = dbapi_conn.cursor()
        if readonly:  # the journal mode is the file's own: a reader never switches it
            cur.execute("PRAGMA query_only=ON")
        else:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        plain = readonly or conn.get_execution_options().get("readonly")
        conn.exec_driver_sql("BEGIN" if plain else "BEGIN IMMEDIATE")

    return engine


def stamped_revision(conn: Connection) -> str | None:
    """The revision stamped in the ledger's ``alembic_version`` table (None: unversioned), read
    as alembic's ``MigrationContext.get_current_revision`` reads it, without importing alembic."""
    from sqlalchemy import inspect as sa_inspect
    from sqlalchemy import text

    if not sa_inspect(conn).has_table("alembic_version"):
        return None
    return stamped([r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))])


def upgrade(engine: Engine, *, refuse_if_running: str | None = None) -> bool:
    """Migrate the ledger to this version's schema; whether this call migrated it (False: it
    already was, or another worker migrated it meanwhile). ``refuse_if_running``: on PostgreSQL, the
    message of the ``LedgerBusy`` raised (nothing changed) when a run of the ledger still has a
    fresh heartbeat: during a migration it can only be an older batchgen's worker."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        conn.rollback()
    if current == head:
        return False
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Workers starting together on a new schema: one migrates, the others wait for it
            # here and then find the schema current (transactional DDL, lock freed at commit).
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%(k)s, hashtext(current_schema()))",
                                 {"k": _MIGRATION_LOCK})
            current = MigrationContext.configure(conn).get_current_revision()
            if current == head:
                return False
            if refuse_if_running and current is not None and current >= "0003" and conn.exec_driver_sql(
                    "SELECT count(*) FROM runs WHERE status = 'running' "
                    "AND heartbeat_at >= extract(epoch FROM clock_timestamp()) - %(s)s",
                    {"s": LIVE_WORKER_S}).scalar():
                raise LedgerBusy(refuse_if_running)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return True
