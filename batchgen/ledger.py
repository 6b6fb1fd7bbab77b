"""The ledger: every SQL statement batchgen runs lives in this module.

SQLite (default) is opened in WAL mode with ``synchronous=FULL`` (a lost ``submitting`` or
``submitted`` row is an orphaned paid task, so no commit may be lost even on power failure),
and every write transaction starts with ``BEGIN IMMEDIATE`` (a deferred read-then-write
transaction can fail with "database is locked" regardless of the busy timeout). Migrations are
applied on open. The API is synchronous; the scheduler calls it from one dedicated thread
(``Writer``) so the event loop never blocks on an fsync and commits are grouped.

PostgreSQL ledgers are *cooperative*: several ``batchgen run`` processes (workers, one ``runs``
row each) share them. A worker claims queued jobs with ``FOR UPDATE SKIP LOCKED`` (a lease:
``jobs.worker_id``), moves only jobs it holds, and keeps its lease alive with a heartbeat
stamped by the server's clock. A worker whose heartbeat goes stale is declared dead by any live
one, which takes over its paid tasks (to poll and download, never to resubmit) and turns its
mid-create jobs into ``in_doubt``, exactly what a restart does on SQLite.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import inspect
import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar, cast
from urllib.parse import quote

from sqlalchemy import Engine, and_, case, create_engine, event, exists, func, insert, or_, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from . import crash
from .files import pid_alive
from .errors import LedgerBusy, LedgerError, LedgerMissing, LedgerOutdated, NotALedger, UsageError
from .jobs import ACTIVE, Job, JobRow, JobState, RunStatus, allowed, canonical_json
from .schema import events, jobs, manifest_jobs, runs, uploads

P = ParamSpec("P")
R = TypeVar("R")
S = JobState
# SQL IN lists of states, in a fixed order (stable statements for the driver's cache).
_ACTIVE = sorted(ACTIVE)
_UNFINISHED = [S.QUEUED, S.SUBMITTING, *_ACTIVE]

DEFAULT_LEDGER = "batchgen.db"
DEFAULT_SIM_LEDGER = "batchgen-sim.db"  # --simulate and its placeholder videos never share the real ledger
RETRYABLE_TASK_CODES = frozenset({"timeout", "generation_failed", "model_unavailable", "generation_timeout",
                                  "service_error", "service_unavailable", "resource_exhausted",
                                  "generation_failed_no_content"})


def ledger_url(value: str | None, *, simulated: bool = False) -> str:
    """The ledger to use: ``value`` (``--ledger``), else the environment variable
    BATCHGEN_LEDGER (read here and nowhere else), else ``./batchgen.db`` (``./batchgen-sim.db``
    for runs against the embedded simulator). A file path or a SQLAlchemy URL."""
    value = value or os.environ.get("BATCHGEN_LEDGER") or (DEFAULT_SIM_LEDGER if simulated else DEFAULT_LEDGER)
    if "://" in value:
        return value
    return "sqlite:///" + str(Path(value).expanduser().absolute())


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


def _migrations_dir() -> Path:
    here = Path(__file__).resolve().parent
    packaged = here / "_alembic"  # where the wheel puts the top-level alembic/ folder
    return packaged if packaged.is_dir() else here.parent / "alembic"


def make_engine(url: str, *, create: bool = True, readonly: bool = False) -> Engine:
    """An engine for the ledger at ``url``. ``create=False`` (commands that do not start runs)
    refuses a SQLite file that does not exist instead of creating it and its folders.
    ``readonly`` (commands that only read): SQLite is opened ``mode=ro`` with ``query_only`` and
    its journal mode left as it is; a PostgreSQL session is READ ONLY (``SET SESSION CHARACTERISTICS``).
    Nothing can then be written, whatever a method tries."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        server = create_engine(url, pool_pre_ping=True, future=True)
        if readonly and u.get_backend_name() == "postgresql":
            @event.listens_for(server, "connect")
            def _read_only_session(dbapi_conn: Any, _rec: Any) -> None:
                # Every transaction of these connections is READ ONLY: the server refuses DDL and writes.
                autocommit = dbapi_conn.autocommit
                dbapi_conn.autocommit = True
                cur = dbapi_conn.cursor()
                cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                cur.close()
                dbapi_conn.autocommit = autocommit
        return server
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
        # A URI filename, so SQLite itself refuses every write (mode=ro); quoted: a path may hold ? or #.
        ro = URL.create("sqlite", database="file:" + quote(str(Path(db).absolute())),
                        query={"mode": "ro", "uri": "true"})
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


def sqlite_tables(path: Path) -> set[str] | None:
    """The tables of the SQLite file at ``path``, read without changing anything beside it, or
    None when it is not an SQLite database (then opening it says what it is). Nothing is in its
    WAL when there is no -wal file, so the file alone is read (``immutable``): a WAL database of
    another application does not get -wal/-shm files from being looked at."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        return set()
    if head != b"SQLite format 3\x00":
        return None
    wal = Path(f"{path}-wal")
    immutable = not (wal.exists() and wal.stat().st_size > 0)
    uri = f"file:{quote(str(path.absolute()))}?mode=ro" + ("&immutable=1" if immutable else "")
    con = sqlite3.connect(uri, uri=True, timeout=30)
    try:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        con.close()


@functools.lru_cache(maxsize=1)
def schema_revisions() -> tuple[str | None, frozenset[str]]:
    """(the current head revision, every revision this batchgen knows)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(_migrations_dir()))
    script = ScriptDirectory.from_config(cfg)
    return script.get_current_head(), frozenset(r.revision for r in script.walk_revisions())


def upgrade(engine: Engine) -> None:
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(_migrations_dir()))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        conn.rollback()
    if current == head:
        return
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Workers starting together on a new schema: one migrates, the others wait for it
            # here and then find the schema current (transactional DDL, lock freed at commit).
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%(k)s, hashtext(current_schema()))",
                                 {"k": _MIGRATION_LOCK})
            if MigrationContext.configure(conn).get_current_revision() == head:
                return
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


# ---------------------------------------------------------------------- the error boundary
# SQLite's own words for what goes wrong with a ledger file, and what they mean to an operator.
_CAUSES = (
    ("unable to open database file", "cannot open it (missing folder, or no permission)"),
    ("readonly database", "it is read-only"),
    ("database is locked", "it is locked by another process"),
    ("file is not a database", "it is not a ledger (corrupt, or another kind of file)"),
    ("database disk image is malformed", "it is corrupt (restore a backup)"),
    ("database or disk is full", "the disk is full"),
    ("disk i/o error", "a disk I/O error"),
)


def _cause(e: BaseException, url: str | None = None) -> str:
    """One line naming what went wrong, in words an operator acts on."""
    orig = getattr(e, "orig", None) or e
    text = (getattr(orig, "strerror", None) or str(orig) or type(orig).__name__).splitlines()[0]
    low = text.lower()
    folder = _sqlite_folder(url)
    if folder is not None and ("readonly" in low or "unable to open" in low or "read-only" in low):
        try:  # SQLite says "unable to open" for a read-only file system too (WAL needs its -shm file)
            if os.statvfs(folder).f_flag & os.ST_RDONLY:
                return f"its folder {folder} is on a read-only file system ({text})"
        except OSError:
            return f"its folder {folder} does not exist or cannot be read ({text})"
    for needle, meaning in _CAUSES:
        if needle in low:
            return f"{meaning} ({text})"
    return f"{type(orig).__name__}: {text}"


def _sqlite_folder(url: str | None) -> Path | None:
    if not url or not url.startswith("sqlite:///"):
        return None
    return Path(make_url(url).database or ".").parent


def _translating(safe_url: Callable[[Any], str], fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` with SQLAlchemy, driver and OS errors turned into ``LedgerError`` (the one
    boundary between the database libraries and batchgen, as httpx's ``map_exceptions``).
    Generator methods are translated while they are iterated."""

    def translate(self: Any, e: BaseException) -> LedgerError:
        return LedgerError(f"ledger {safe_url(self)}: {_cause(e, getattr(self, 'url', None))}")

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args: P.args, **kwargs: P.kwargs) -> Any:
            try:
                yield from cast(Iterator[Any], fn(*args, **kwargs))
            except (SQLAlchemyError, OSError) as e:
                raise translate(args[0], e) from None
        return cast(Callable[P, R], gen)

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (SQLAlchemyError, OSError) as e:
            raise translate(args[0], e) from None
    return wrapper


def error_boundary(cls: type[R]) -> type[R]:
    """Class decorator: every public method (and ``__init__``) of ``cls`` raises only
    ``LedgerError`` for database and file-system failures. Applied to the class rather than
    method by method, so a method added later cannot forget it."""
    for name, member in list(vars(cls).items()):
        if (name == "__init__" or not name.startswith("_")) and inspect.isfunction(member):
            setattr(cls, name, _translating(lambda self: getattr(self, "_safe_url", "?"), member))
    return cls


@dataclass(slots=True)
class Transition:
    """One state change of one job: ``UPDATE … WHERE state IN expect`` plus an event row.
    ``ok`` is False afterwards when the job was not in an expected state (someone else moved it).
    A move that ``jobs.TRANSITIONS`` does not allow is refused here, when it is built."""

    job_id: int
    to: JobState
    expect: tuple[JobState, ...]
    values: dict[str, Any] = field(default_factory=dict)
    detail: str | None = None
    task_id: str | None = None
    event: bool = True
    owner: int | None = None  # cooperative ledgers: the move only applies if this worker holds the job

    def __post_init__(self) -> None:
        for before in self.expect:
            if not allowed(before, self.to):
                raise ValueError(f"job {self.job_id}: {before} → {self.to} is not an allowed move")


_JOB_COLUMNS = frozenset(jobs.c.keys())
_MIGRATION_LOCK = 0x62617463  # "batc": with the schema's hash, serialises migrations on PostgreSQL
# PostgreSQL errors after which the whole transaction is simply tried again: two workers locked
# rows in different orders (deadlock), or a serialisation conflict.
_RETRY_SQLSTATES = frozenset({"40P01", "40001"})


def _retryable(e: BaseException) -> bool:
    return getattr(getattr(e, "orig", None), "sqlstate", None) in _RETRY_SQLSTATES


def _placeholder(c: Connection) -> Any:
    """Named parameter syntax of the driver (sqlite3 takes :name, psycopg %(name)s)."""
    if c.dialect.paramstyle in ("pyformat", "format"):
        return lambda name: f"%({name})s"
    return lambda name: f":{name}"


def _row(r: Any) -> JobRow:
    return cast(JobRow, dict(r._mapping))


def _plain(r: Any) -> dict[str, Any]:
    return dict(r._mapping)


@dataclass(frozen=True)
class Scope:
    """What a manifest asks for: the jobs its resolved path expanded to when last recorded.

    Scoped by membership (``manifest_jobs``), never by the bytes of the file: editing a
    manifest (a comment, one new row) keeps every job it still contains in scope, so what an
    earlier run left undelivered, unverified or not as asked is finished by the next run of it.
    ``sha256`` (its content) also admits the jobs of runs of these very bytes, for ledgers
    written before membership was recorded."""

    manifest: str
    sha256: str


def _of_manifest(scope: Scope) -> Any:
    """The jobs of this manifest (see ``Scope``), whichever run or worker recorded them last."""
    return or_(jobs.c.key.in_(select(manifest_jobs.c.key).where(manifest_jobs.c.manifest == scope.manifest)),
               jobs.c.run_id.in_(select(runs.c.id).where(runs.c.manifest_sha256 == scope.sha256)))


def _owed() -> Any:
    """Done clips that a manifest asked to deliver and that the store does not hold (yet)."""
    return and_(jobs.c.state == S.DONE, jobs.c.deliver_to.is_not(None), jobs.c.delivered_url.is_(None))


def _holder_alive() -> Any:
    """The job's lease belongs to a run that is still running."""
    return exists().where(runs.c.id == jobs.c.worker_id, runs.c.status == RunStatus.RUNNING)


def _interrupted_create(ids: Iterable[int], who: str, detail: str) -> list[Transition]:
    """``submitting`` → ``in_doubt`` for jobs whose creator stopped mid-create: the POST may or
    may not have made a (billed) task and nothing can tell, so they are never resubmitted."""
    return [Transition(i, S.IN_DOUBT, (S.SUBMITTING,), {
        "error_code": "interrupted_create", "worker_id": None,
        "error_message": f"{who} stopped between recording the intent and recording the task id"},
        detail=detail) for i in ids]


@error_boundary
class Ledger:
    """The ledger at ``url`` (see ``ledger_url``), migrated to the current schema on open.
    ``create=False`` (what commands that only read use) refuses a ledger that does not exist
    (``LedgerMissing``) instead of creating an empty one. Every public method raises
    ``LedgerError`` for database, driver and file-system failures (``error_boundary``)."""

    def __init__(self, url: str | None = None, *, migrate: bool = True, create: bool = True,
                 simulated: bool = False, readonly: bool = False) -> None:
        self.url = ledger_url(url, simulated=simulated)
        self._safe_url = make_url(self.url).render_as_string(hide_password=True)
        self.readonly = readonly
        self.engine = make_engine(self.url, create=create, readonly=readonly)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        db = make_url(self.url).database
        # The ledger's file (SQLite), for files kept beside it; None for a server database.
        self.path: Path | None = Path(db) if self.is_sqlite and db and db != ":memory:" else None
        self.created = False  # this open made a new, empty ledger
        # One process per SQLite ledger (flock); any number of workers per PostgreSQL ledger.
        self.cooperative = not self.is_sqlite
        self._lock_fd: int | None = None
        try:
            self._check_schema(create=create and not readonly, migrate=migrate and not readonly)
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
        if tables is not None and not {"runs", "jobs"} <= tables:
            foreign = sorted(tables - {"alembic_version"})
            # A SQLite file is one application's database: batchgen tables are never added to
            # another's. A PostgreSQL database is often shared: run may set up its tables there.
            if not create or (foreign and self.path is not None):
                what = (f"it holds other tables: {', '.join(foreign[:5])}{', …' if len(foreign) > 5 else ''}"
                        if foreign else "it has no tables")
                raise NotALedger(f"ledger {self}: not a batchgen ledger ({what}); nothing was changed. Give the "
                                 "ledger `batchgen run` made (--ledger or BATCHGEN_LEDGER)")
            self.created = True
        with self.engine.connect() as c:
            from alembic.runtime.migration import MigrationContext

            current = MigrationContext.configure(c).get_current_revision() if not self.created else None
            c.rollback()
        head, known = schema_revisions()
        if current == head:
            return
        if current is not None and current not in known:
            raise LedgerOutdated(f"ledger {self}: written by a newer batchgen (schema {current}, unknown to this "
                                 f"version {head}): use that batchgen or a newer one; nothing was changed")
        if not migrate:
            raise LedgerOutdated(f"ledger {self}: written by an older batchgen (schema {current or 'unversioned'}, "
                                 f"this version needs {head}): run `batchgen db upgrade` on it first (this command "
                                 "only reads and never changes it)")
        upgrade(self.engine)

    def __repr__(self) -> str:
        return f"Ledger({self._safe_url!r})"

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
        coordinate through leases (see the module docstring)."""
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

    # ------------------------------------------------------------ runs
    def start_run(self, manifest: str, manifest_sha256: str, options: dict[str, Any], total: int) -> int:
        with self.engine.begin() as c:
            return self._insert_run(c, manifest, manifest_sha256, options, total)

    def _insert_run(self, c: Connection, manifest: str, manifest_sha256: str, options: dict[str, Any], total: int) -> int:
        key = c.execute(insert(runs).values(
            manifest=manifest, manifest_sha256=manifest_sha256, started_at=time.time(), status=RunStatus.RUNNING,
            host=socket.gethostname(), pid=os.getpid(), options=json.dumps(options, sort_keys=True), jobs_total=total,
            heartbeat_at=self._now(),
        )).inserted_primary_key
        assert key is not None
        return int(key[0])

    def _now(self) -> Any:
        """Heartbeats use the database server's clock: workers on several machines then need no
        synchronised clocks to agree on who is stale."""
        return time.time() if self.is_sqlite else func.extract("epoch", func.clock_timestamp())

    def finish_run(self, run_id: int, status: str, exit_code: int | None = None) -> None:
        with self.engine.begin() as c:
            c.execute(update(runs).where(runs.c.id == run_id).values(finished_at=time.time(), status=status,
                                                                     exit_code=exit_code))

    def last_success(self, manifest: str | None = None) -> float | None:
        """When a run (of this manifest path) last ended with exit code 0."""
        q = select(func.max(runs.c.finished_at)).where(runs.c.exit_code == 0)
        if manifest is not None:
            q = q.where(runs.c.manifest == manifest)
        with self._read() as c:
            v = c.execute(q).scalar()
        return None if v is None else float(v)

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest runs, each with its per-state job counts."""
        with self._read() as c:
            rows = [_plain(r) for r in c.execute(select(runs).order_by(runs.c.id.desc()).limit(limit))]
            ids = [r["id"] for r in rows]
            counts: dict[int, dict[str, int]] = {}
            if ids:
                q = select(jobs.c.run_id, jobs.c.state, func.count()).where(jobs.c.run_id.in_(ids)).group_by(
                    jobs.c.run_id, jobs.c.state)
                for run_id, state, n in c.execute(q):
                    counts.setdefault(run_id, {})[state] = int(n)
            held: dict[int, int] = {}
            if ids:
                q = select(jobs.c.worker_id, func.count()).where(jobs.c.worker_id.in_(ids)).group_by(jobs.c.worker_id)
                held = {w: int(n) for w, n in c.execute(q)}
            now = c.execute(select(self._now())).scalar() if not self.is_sqlite else time.time()
        for r in rows:
            r["counts"] = counts.get(r["id"], {})
            r["held"] = held.get(r["id"], 0)  # jobs leased to this run (cooperative ledgers)
            r["heartbeat_age_s"] = None if r["heartbeat_at"] is None else round(float(now) - r["heartbeat_at"], 1)
        return rows

    def close_dead_runs(self) -> int:
        """With the writer lock held, no other run can be alive: any still marked ``running``
        died (kill -9, power loss). Mark them so `status` and `stop` stay truthful. (Cooperative
        ledgers find dead workers by their heartbeat instead: ``reclaim``.)"""
        if self._lock_fd is None:
            return 0
        with self.engine.begin() as c:
            return c.execute(update(runs).where(runs.c.status == RunStatus.RUNNING)
                             .values(status=RunStatus.DIED, finished_at=time.time())).rowcount

    def reap_dead_runs(self) -> int:
        """Runs still marked ``running`` whose process is gone, found without the writer lock:
        on SQLite a run's process is on this machine (the ledger is a local file), so a pid
        that no longer exists is a run that crashed. Marked ``died`` so `status` and `stop`
        tell the truth. (PostgreSQL workers are judged by their heartbeat: ``reclaim``.)"""
        if not self.is_sqlite:
            return 0
        host = socket.gethostname()
        with self._read() as c:
            rows = c.execute(select(runs.c.id, runs.c.pid).where(runs.c.status == RunStatus.RUNNING,
                                                                  runs.c.host == host)).all()
        dead = [i for i, pid in rows if not pid_alive(pid)]
        if not dead:
            return 0
        with self.engine.begin() as c:
            return c.execute(update(runs).where(runs.c.id.in_(dead), runs.c.status == RunStatus.RUNNING)
                             .values(status=RunStatus.DIED, finished_at=time.time())).rowcount

    def foreign_tasks(self, api: str) -> tuple[str, int] | None:
        """(the other API, how many jobs) when this ledger holds tasks or files that belong to
        another API than ``api`` — a simulated run's placeholders seen from a real one, say."""
        q = (select(jobs.c.api, func.count()).where(
            jobs.c.api.is_not(None), jobs.c.api != api,
            jobs.c.state.in_([S.SUBMITTING, *_ACTIVE, S.DONE, S.IN_DOUBT]))
            .group_by(jobs.c.api).order_by(func.count().desc()).limit(1))
        with self._read() as c:
            row = c.execute(q).first()
        return None if row is None else (str(row[0]), int(row[1]))

    def unverified(self, scope: Scope) -> list[JobRow]:
        """Done jobs of this manifest whose file was never inspected (a crash between the
        rename and the verification): the next run verifies them."""
        q = (select(jobs).where(jobs.c.state == S.DONE, jobs.c.verify.is_(None), jobs.c.output_path.is_not(None),
                                _of_manifest(scope)).order_by(jobs.c.id))
        with self._read() as c:
            return [_row(r) for r in c.execute(q)]

    def owe_delivery(self, scope: Scope | None, destination: str) -> int:
        """Record that this manifest's clips are owed to ``destination`` (an ``s3://`` URL without
        credentials): done or not, each is delivered there once done, by the next run of any
        manifest that contains it or by ``batchgen deliver``. Clips already delivered keep
        where they went."""
        q = update(jobs).where(jobs.c.delivered_url.is_(None),
                               or_(jobs.c.deliver_to.is_(None), jobs.c.deliver_to != destination))
        if scope is not None:
            q = q.where(_of_manifest(scope))
        with self.engine.begin() as c:
            return c.execute(q.values(deliver_to=destination)).rowcount

    def lost_candidates(self) -> list[JobRow]:
        """Done clips that should be on local disk (not removed after delivery on purpose)."""
        q = (select(jobs).where(jobs.c.state == S.DONE, jobs.c.output_path.is_not(None), jobs.c.pruned_at.is_(None))
             .order_by(jobs.c.seq, jobs.c.id))
        with self._read() as c:
            return [_row(r) for r in c.execute(q)]

    def undelivered(self, scope: Scope | None = None, *, verified_only: bool) -> list[JobRow]:
        """Done clips owed to a destination that the store does not hold yet (of this manifest,
        or of the whole ledger), kept locally: delivered from the local file, never fetched
        from the API again. With verification on, only clips already verified (the others are
        delivered once verified)."""
        q = (select(jobs).where(_owed(), jobs.c.pruned_at.is_(None), jobs.c.output_path.is_not(None))
             .order_by(jobs.c.id))
        if scope is not None:
            q = q.where(_of_manifest(scope))
        if verified_only:
            q = q.where(jobs.c.verify.is_not(None))
        with self._read() as c:
            return [_row(r) for r in c.execute(q)]

    def unpruned(self, scope: Scope) -> list[JobRow]:
        """Delivered clips of this manifest whose local copy is still recorded as present: a
        ``--prune-local`` run killed between recording the delivery and removing the file."""
        q = (select(jobs).where(jobs.c.state == S.DONE, jobs.c.delivered_url.is_not(None), jobs.c.pruned_at.is_(None),
                                jobs.c.output_path.is_not(None), _of_manifest(scope)).order_by(jobs.c.id))
        with self._read() as c:
            return [_row(r) for r in c.execute(q)]

    def delivery_counts(self, scope: Scope | None = None) -> dict[str, int]:
        """Done clips delivered to object storage, and clips owed to a destination but not (yet)
        there — of one manifest or the whole ledger. The one count that the run's summary,
        ``status``, the report, notifications and metrics show."""
        delivered = func.sum(case((jobs.c.delivered_url.is_not(None), 1), else_=0))
        owed = func.sum(case((_owed(), 1), else_=0))
        q = select(delivered, owed).where(jobs.c.state == S.DONE)
        if scope is not None:
            q = q.where(_of_manifest(scope))
        with self._read() as c:
            d, n = c.execute(q).one()
        return {"delivered": int(d or 0), "undelivered": int(n or 0)}

    def last_run_of(self, manifest: str) -> dict[str, Any] | None:
        """The newest run of this manifest path (id, times, status, exit code, jobs)."""
        with self._read() as c:
            r = c.execute(select(runs.c.id, runs.c.started_at, runs.c.finished_at, runs.c.status, runs.c.exit_code,
                                 runs.c.jobs_total).where(runs.c.manifest == manifest)
                          .order_by(runs.c.id.desc()).limit(1)).first()
        return None if r is None else _plain(r)

    def delivery_problems(self, limit: int = 20) -> list[JobRow]:
        """Done clips owed to a destination and not there (a run could not deliver them, or no
        run delivered yet: ``--no-deliver``), newest first."""
        q = select(jobs).where(_owed()).order_by(jobs.c.updated_at.desc()).limit(limit)
        with self._read() as c:
            return [_row(r) for r in c.execute(q)]

    def manifest_members(self, manifest: str) -> list[JobRow] | None:
        """The jobs this manifest path expanded to when last recorded (None: not known — a
        ledger written before batchgen recorded it)."""
        q = (select(jobs).join(manifest_jobs, manifest_jobs.c.key == jobs.c.key)
             .where(manifest_jobs.c.manifest == manifest).order_by(jobs.c.seq, jobs.c.id))
        with self._read() as c:
            rows = [_row(r) for r in c.execute(q)]
            if rows:
                return rows
            last = c.execute(select(runs.c.manifest_sha256).where(runs.c.manifest == manifest)
                             .order_by(runs.c.id.desc()).limit(1)).scalar()
            if last is None:
                return None
            # Older ledgers: the jobs recorded by runs of that manifest's last version.
            return [_row(r) for r in c.execute(select(jobs).where(_of_manifest(Scope(manifest, last)))
                                                .order_by(jobs.c.seq, jobs.c.id))]

    def not_as_asked(self, scope: Scope | None = None, limit: int = 1000) -> list[JobRow]:
        """Delivered clips whose verification found them wrong (mismatch, undecodable, missing,
        changed), newest first."""
        q = (select(jobs).where(jobs.c.verify.in_(["mismatch", "undecodable", "missing", "changed"]))
             .order_by(jobs.c.verified_at.desc()).limit(limit))
        if scope is not None:
            q = q.where(_of_manifest(scope))
        with self._read() as c:
            return [_row(r) for r in c.execute(q)]

    def verify_counts(self, scope: Scope | None = None) -> dict[str, int]:
        """Delivered clips per verification outcome (of one manifest, or the whole ledger)."""
        q = select(jobs.c.verify, func.count()).where(jobs.c.verify.is_not(None)).group_by(jobs.c.verify)
        if scope is not None:
            q = q.where(_of_manifest(scope))
        with self._read() as c:
            return {str(v): int(n) for v, n in c.execute(q)}

    def request_stop(self, run_id: int) -> bool:
        with self.engine.begin() as c:
            return c.execute(update(runs).where(runs.c.id == run_id, runs.c.status == RunStatus.RUNNING)
                             .values(stop_requested=True)).rowcount == 1

    def stop_requested(self, run_id: int) -> bool:
        with self._read() as c:
            return bool(c.execute(select(runs.c.stop_requested).where(runs.c.id == run_id)).scalar())

    def unfinished(self, limit: int = 10) -> list[JobRow]:
        """Oldest jobs that are neither finished nor waiting for a human."""
        with self._read() as c:
            q = (select(jobs).where(jobs.c.state.in_(_UNFINISHED))
                 .order_by(func.coalesce(jobs.c.submitted_at, jobs.c.created_at), jobs.c.id).limit(limit))
            return [_row(r) for r in c.execute(q)]

    def expiring(self, within_s: float, ttl_s: float) -> list[JobRow]:
        """Completed jobs whose result URL expires within ``within_s`` and that are not downloaded."""
        cutoff = time.time() - ttl_s + within_s
        with self._read() as c:
            q = select(jobs).where(jobs.c.state == S.COMPLETED, jobs.c.result_at <= cutoff).order_by(jobs.c.result_at)
            return [_row(r) for r in c.execute(q)]

    def cancel_queued(self, run_id: int) -> int:
        """Mark the run's never-submitted jobs cancelled (in batches; each gets an event)."""
        with self._read() as c:
            ids = [i for (i,) in c.execute(select(jobs.c.id).where(jobs.c.run_id == run_id, jobs.c.state == S.QUEUED))]
        done = 0
        for i in range(0, len(ids), 1000):
            done += sum(self.apply([Transition(j, S.CANCELLED, (S.QUEUED,), {"error_code": "cancelled",
                        "error_message": "cancelled by operator before submission"}, detail="batchgen cancel")
                        for j in ids[i : i + 1000]]))
        return done

    def upload_url(self, sha256: str, newer_than: float) -> str | None:
        with self._read() as c:
            url = c.execute(select(uploads.c.url).where(uploads.c.sha256 == sha256,
                                                        uploads.c.uploaded_at > newer_than)).scalar()
            return None if url is None else str(url)

    def record_upload(self, sha256: str, path: str, size: int, url: str) -> None:
        stmt = self._insert_into(uploads).values(sha256=sha256, path=path, size=size, url=url, uploaded_at=time.time())
        stmt = stmt.on_conflict_do_update(index_elements=[uploads.c.sha256], set_={
            "path": stmt.excluded.path, "size": stmt.excluded.size, "url": stmt.excluded.url,
            "uploaded_at": stmt.excluded.uploaded_at})
        with self.engine.begin() as c:
            c.execute(stmt)

    def run(self, run_id: int | None = None) -> dict[str, Any] | None:
        """One run by id, or the newest when ``run_id`` is None."""
        q = select(runs).order_by(runs.c.id.desc()).limit(1)
        if run_id is not None:
            q = q.where(runs.c.id == run_id)
        with self._read() as c:
            r = c.execute(q).first()
            return _plain(r) if r else None

    # ------------------------------------------------------------ jobs from a manifest
    def _insert_into(self, table: Any) -> Any:
        from sqlalchemy.dialects import postgresql, sqlite

        return (sqlite.insert if self.is_sqlite else postgresql.insert)(table)

    def record_run(self, manifest: str, manifest_sha256: str, options: dict[str, Any], jobs_: Iterable[Job],
                   check: Any, batch: int = 2000) -> tuple[int, int]:
        """Record a run and its jobs in ONE transaction while the manifest streams by, then call
        ``check()`` (which raises on any problem found during expansion): a bad manifest rolls
        everything back, so nothing is recorded for it, and a good one is expanded only once.
        ``check()`` may return options to add to the run's (known only after expansion)."""
        with self.engine.begin() as c:
            run_id = self._insert_run(c, manifest, manifest_sha256, options, 0)
            c.execute(manifest_jobs.delete().where(manifest_jobs.c.manifest == manifest))
            n = 0
            chunk: list[Job] = []
            for job in jobs_:
                chunk.append(job)
                if len(chunk) >= batch:
                    self._upsert(c, run_id, chunk)
                    self._add_members(c, manifest, chunk)
                    n += len(chunk)
                    chunk = []
            self._upsert(c, run_id, chunk)
            self._add_members(c, manifest, chunk)
            n += len(chunk)
            extra = check() or {}
            # Stamped again at commit: recording a huge manifest may take longer than a lease.
            c.execute(update(runs).where(runs.c.id == run_id).values(
                jobs_total=n, heartbeat_at=self._now(), options=json.dumps({**options, **extra}, sort_keys=True)))
        return run_id, n

    def reuse_run(self, manifest: str, manifest_sha256: str, inputs_sha256: str, options: dict[str, Any],
                  check_outputs: Callable[[Iterable[tuple[str, str]]], None] | None = None,
                  ) -> tuple[int, int, int] | None:
        """Start a run of a manifest whose exact inputs (``inputs_sha256``: its bytes, its rows
        CSV, the expansion code) an earlier run already validated and recorded, without expanding
        it again: the jobs are the same, so only the unfinished ones move to the new run.
        ``check_outputs`` sees (output, source) of every job still to be written, inside the
        transaction: it raises to refuse the run (the output folder changed since). Returns
        (run id, jobs, earlier run id), or None to take the full path — no earlier run with these
        inputs, or the manifest's jobs in the ledger no longer number what it recorded (some
        moved to another manifest's run since)."""
        with self.engine.begin() as c:
            earlier = c.execute(select(runs.c.id, runs.c.jobs_total, runs.c.options).where(
                runs.c.manifest_sha256 == manifest_sha256).order_by(runs.c.id.desc()).limit(50)).all()
            match = next((r for r in earlier if json.loads(r.options).get("inputs_sha256") == inputs_sha256), None)
            if match is None:
                return None
            # This path's recorded membership must be of these bytes too (it was edited and
            # edited back: record it again, or its scope would be the other version's jobs).
            last = c.execute(select(runs.c.manifest_sha256).where(runs.c.manifest == manifest)
                             .order_by(runs.c.id.desc()).limit(1)).scalar()
            if last not in (None, manifest_sha256):
                return None
            scope = _of_manifest(Scope(manifest, manifest_sha256))
            n = int(c.execute(select(func.count()).select_from(jobs).where(scope)).scalar() or 0)
            if n != match.jobs_total:
                return None
            run_id = self._insert_run(c, manifest, manifest_sha256, {**options, "inputs_sha256": inputs_sha256}, n)
            c.execute(update(jobs).where(scope, jobs.c.run_id != run_id, jobs.c.state != S.DONE)
                      .values(run_id=run_id, updated_at=time.time()))
            if check_outputs is not None:  # raises on a problem: nothing of this run is recorded
                check_outputs((r.output, r.source) for r in c.execution_options(yield_per=5000).execute(
                    select(jobs.c.output, jobs.c.source).where(scope, jobs.c.state.in_(_UNFINISHED))))
        return run_id, n, int(match.id)

    def _add_members(self, c: Connection, manifest: str, batch: Sequence[Job]) -> None:
        """This manifest's job set (`batchgen diff`) as recorded now; the caller deleted the old."""
        if batch:
            ph = _placeholder(c)
            c.exec_driver_sql(f"INSERT INTO manifest_jobs (manifest, key) VALUES ({ph('manifest')}, {ph('key')}) "
                              "ON CONFLICT DO NOTHING", [{"manifest": manifest, "key": j.key} for j in batch])

    def upsert_jobs(self, run_id: int, batch: Sequence[Job]) -> None:
        with self.engine.begin() as c:
            self._upsert(c, run_id, batch)

    def _upsert(self, c: Connection, run_id: int, batch: Sequence[Job]) -> None:
        """Insert new jobs as ``queued``; known keys only move to this run (their state, task id
        and files are untouched: that is what makes re-running a manifest safe). Jobs already
        ``done`` are not rewritten at all: resuming a mostly finished 100k-job manifest then
        costs an index lookup per row, not a row rewrite."""
        if not batch:
            return
        now = time.time()
        ph = _placeholder(c)
        cols = ("key", "run_id", "seq", "name", "source", "model", "request", "output", "take", "state",
                "created_at", "updated_at")
        moved = ("run_id", "seq", "name", "source", "output", "updated_at")
        # Driver-level executemany: SQLAlchemy's per-row parameter handling cost more than SQLite
        # itself here (100k rows on resume). Same SQL on SQLite and PostgreSQL.
        sql = (f"INSERT INTO jobs ({', '.join(cols)}) VALUES ({', '.join(ph(k) for k in cols)}) "
               f"ON CONFLICT (key) DO UPDATE SET {', '.join(f'{k} = excluded.{k}' for k in moved)} "
               f"WHERE jobs.state <> '{S.DONE.value}'")
        rows = [{"key": j.key, "run_id": run_id, "seq": j.seq, "name": j.name, "source": j.source,
                 "model": j.model, "request": j.request_json or canonical_json(j.request),
                 "output": j.output, "take": j.take, "state": S.QUEUED, "created_at": now, "updated_at": now}
                for j in batch]
        c.exec_driver_sql(sql, rows)

    def states_by_key(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """What the ledger knows of these job keys: state, task id, attempts, error, file."""
        out: dict[str, dict[str, Any]] = {}
        keys = list(keys)
        cols = (jobs.c.key, jobs.c.state, jobs.c.task_id, jobs.c.attempts, jobs.c.error_code, jobs.c.retryable,
                jobs.c.output_path, jobs.c.verify, jobs.c.pruned_at)
        with self._read() as c:
            for i in range(0, len(keys), 500):
                for r in c.execute(select(*cols).where(jobs.c.key.in_(keys[i : i + 500]))):
                    out[r.key] = _plain(r)
        return out

    # ------------------------------------------------------------ reads
    def _read(self) -> Any:
        return self.engine.connect().execution_options(readonly=True)

    def queued_page(self, run_id: int, after_seq: int, limit: int) -> list[JobRow]:
        with self._read() as c:
            rows = c.execute(select(jobs).where(jobs.c.run_id == run_id, jobs.c.state == S.QUEUED,
                                                jobs.c.seq > after_seq).order_by(jobs.c.seq).limit(limit))
            return [_row(r) for r in rows]

    def active_jobs(self) -> list[JobRow]:
        with self._read() as c:
            return [_row(r) for r in c.execute(select(jobs).where(jobs.c.state.in_(_ACTIVE)).order_by(jobs.c.id))]

    def job(self, ref: str | int) -> JobRow | None:
        """A job by id, full key, key prefix (≥ 6 chars) or task id."""
        with self._read() as c:
            if isinstance(ref, int) or str(ref).isdigit():
                r = c.execute(select(jobs).where(jobs.c.id == int(ref))).first()
                if r:
                    return _row(r)
            s = str(ref)
            r = c.execute(select(jobs).where(jobs.c.task_id == s)).first()
            if r:
                return _row(r)
            if len(s) >= 6:
                found = c.execute(select(jobs).where(jobs.c.key.like(s.lower() + "%")).limit(2)).all()
                if len(found) == 1:
                    return _row(found[0])
                if len(found) > 1:
                    raise UsageError(f"job key prefix {s!r} matches more than one job; give more characters")
        return None

    def jobs_in_state(self, state: str, scope: Scope | None = None) -> list[JobRow]:
        q = select(jobs).where(jobs.c.state == state).order_by(jobs.c.id)
        if scope is not None:
            q = q.where(_of_manifest(scope))
        with self._read() as c:
            return [_row(r) for r in c.execute(q)]

    def counts(self, run_id: int | None = None) -> dict[str, int]:
        q = select(jobs.c.state, func.count()).group_by(jobs.c.state)
        if run_id is not None:
            q = q.where(jobs.c.run_id == run_id)
        with self._read() as c:
            return {s: int(n) for s, n in c.execute(q)}

    def iter_export(self, run_id: int | None = None, batch: int = 2000) -> Iterator[JobRow]:
        """Every job (or one run's) in manifest order, streamed; plain dicts built from the
        driver's tuples (100k rows: the ORM-free path is several times faster)."""
        names = list(jobs.c.keys())
        with self._read() as c:
            ph = _placeholder(c)
            sql = f"SELECT {', '.join(names)} FROM jobs"
            params: dict[str, Any] = {}
            if run_id is not None:
                sql += f" WHERE run_id = {ph('run_id')}"
                params["run_id"] = run_id
            result = c.execution_options(stream_results=True).exec_driver_sql(
                sql + " ORDER BY run_id, seq, id", params)
            for chunk in result.partitions(batch):
                for r in chunk:
                    yield cast(JobRow, dict(zip(names, r)))

    def events_for(self, job_id: int) -> list[dict[str, Any]]:
        with self._read() as c:
            return [_plain(r) for r in c.execute(select(events).where(events.c.job_id == job_id).order_by(events.c.id))]

    def known_task_ids(self) -> set[str]:
        """Every task id the ledger ever recorded (current and superseded by a retry)."""
        with self._read() as c:
            ids = {t for (t,) in c.execute(select(events.c.task_id).where(events.c.task_id.is_not(None)))}
            ids.update(t for (t,) in c.execute(select(jobs.c.task_id).where(jobs.c.task_id.is_not(None))))
        return ids

    # ------------------------------------------------------------ writes
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

    def apply(self, batch: Sequence[Transition]) -> list[bool]:
        """Apply transitions in one transaction (group commit). If one of them violates a
        constraint the batch is retried one by one, so a bad one cannot sink the others."""
        try:
            results = self._retrying(self._apply_many, batch)
            crash.point("after_commit")
            return results
        except IntegrityError:
            if len(batch) == 1:
                raise
        out = []
        for t in batch:
            try:
                out.extend(self._retrying(self._apply_many, [t]))
            except IntegrityError as e:
                raise LedgerError(f"job {t.job_id} → {t.to}: {str(e.orig).splitlines()[0]}") from None
        return out

    @staticmethod
    def _apply_many(c: Connection, batch: Sequence[Transition]) -> list[bool]:
        """Check every job's current state once, then write each job once and every event row:
        one driver-level executemany per shape of UPDATE plus one for the events. Per-statement
        overhead, not per-job work, dominates a busy run, so this is the hot path's shape.

        Several moves of one job in a batch are checked in order and merged into one UPDATE (its
        final state and values); each still gets its own event row. Runs inside the caller's
        transaction: BEGIN IMMEDIATE on SQLite, and the states are read FOR UPDATE on PostgreSQL,
        so they cannot change before the writes. A transition with an ``owner`` also requires
        the job's lease to be that worker's (cooperative ledgers)."""
        now = time.time()
        # Sorted: workers locking overlapping rows in one order cannot deadlock each other.
        ids = sorted(set(t.job_id for t in batch))
        current: dict[int, str] = {}
        holder: dict[int, int | None] = {}
        for i in range(0, len(ids), 500):
            q = select(jobs.c.id, jobs.c.state, jobs.c.worker_id).where(jobs.c.id.in_(ids[i : i + 500]))
            if c.dialect.name == "postgresql":
                q = q.order_by(jobs.c.id).with_for_update()
            for job_id, state, worker in c.execute(q):
                current[job_id] = state
                holder[job_id] = worker
        results: list[bool] = []
        merged: dict[int, dict[str, Any]] = {}
        event_rows: list[dict[str, Any]] = []
        for t in batch:
            before = current.get(t.job_id)
            ok = before in t.expect and (t.owner is None or holder.get(t.job_id) == t.owner)
            results.append(ok)
            if not ok:
                continue
            current[t.job_id] = t.to
            vals = merged.setdefault(t.job_id, {})
            vals.update(t.values)
            vals["state"] = t.to
            vals["updated_at"] = now
            if t.task_id is not None:
                vals["task_id"] = t.task_id
            if t.event:
                event_rows.append({"job_id": t.job_id, "at": now, "from_state": before, "to_state": t.to,
                                   "task_id": t.task_id, "detail": t.detail})
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for job_id, vals in merged.items():
            groups.setdefault(tuple(sorted(vals)), []).append({**vals, "_id": job_id})
        ph = _placeholder(c)
        for cols, rows in groups.items():
            unknown = set(cols) - _JOB_COLUMNS
            if unknown:
                raise LedgerError(f"unknown job column(s) {sorted(unknown)}")
            c.exec_driver_sql(f"UPDATE jobs SET {', '.join(f'{k} = {ph(k)}' for k in cols)} WHERE id = {ph('_id')}", rows)
        if event_rows:
            cols = ("job_id", "at", "from_state", "to_state", "task_id", "detail")
            c.exec_driver_sql(f"INSERT INTO events ({', '.join(cols)}) VALUES ({', '.join(ph(k) for k in cols)})",
                              event_rows)
        return results

    def orphans_to_in_doubt(self) -> list[JobRow]:
        """Jobs left in ``submitting`` by a process that died mid-create: the POST may or may not
        have made a (billed) task and nothing can tell, so they are never resubmitted silently."""
        stuck = self.jobs_in_state(S.SUBMITTING)
        if stuck:
            self.apply(_interrupted_create((j["id"] for j in stuck), "the process", "found in submitting at start-up"))
        return stuck

    def requeue_retryable_failures(self, run_id: int, max_attempts: int) -> int:
        # Also creates that earlier versions failed for a bad --api-base (transport_InvalidURL,
        # transport_NonHttpUrlClientError): a configuration error, nothing was ever sent.
        never_sent = and_(jobs.c.task_id.is_(None), jobs.c.error_code.in_(
            ("transport_InvalidURL", "transport_NonHttpUrlClientError", "transport_InvalidUrlClientError")))
        with self._read() as c:
            rows = c.execute(select(jobs.c.id, jobs.c.error_code, jobs.c.attempts).where(
                jobs.c.run_id == run_id, jobs.c.state == S.FAILED, or_(jobs.c.retryable.is_(True), never_sent))).all()
        ts = [Transition(i, S.QUEUED, (S.FAILED,), {"task_id": None, "retryable": None},
                         detail=f"--retry-failed after {code}") for i, code, att in rows if att < max_attempts]
        if ts:
            self.apply(ts)
        return len(ts)

    # ------------------------------------------------------------ cooperative workers (PostgreSQL)
    def heartbeat(self, worker: int) -> bool:
        """Refresh this worker's lease. False when another worker has declared it dead (its
        heartbeat went stale: paused, partitioned): it must stop, its jobs are someone else's."""
        with self.engine.begin() as c:
            return c.execute(update(runs).where(runs.c.id == worker, runs.c.status == RunStatus.RUNNING)
                             .values(heartbeat_at=self._now())).rowcount == 1

    def live_workers(self, lease_s: float) -> int:
        """Workers (runs) alive now: ``running`` with a heartbeat fresher than the lease."""
        with self._read() as c:
            return int(c.execute(select(func.count()).select_from(runs).where(
                runs.c.status == RunStatus.RUNNING, runs.c.heartbeat_at >= self._now() - lease_s)).scalar() or 0)

    def claim(self, worker: int, scope: Scope, limit: int) -> list[JobRow]:
        """Lease up to ``limit`` queued jobs of this manifest, in manifest order, to ``worker``.

        ``FOR UPDATE SKIP LOCKED``: concurrent claims by other workers pass over the rows this
        one is taking instead of waiting for them, so each job goes to exactly one worker. Jobs
        leased to a worker that is no longer running (finished, stopped, declared dead) are free.
        """
        def go(c: Connection) -> list[JobRow]:
            pick = (select(jobs.c.id)
                    .where(jobs.c.state == S.QUEUED, _of_manifest(scope),
                           # not == worker: a job this worker gave up on (create kept failing)
                           # stays with it until it leaves, instead of being retried in a loop
                           or_(jobs.c.worker_id.is_(None), ~_holder_alive()))
                    .order_by(jobs.c.seq).limit(limit).with_for_update(skip_locked=True))
            ids = [i for (i,) in c.execute(pick)]
            if not ids:
                return []
            rows = c.execute(update(jobs).where(jobs.c.id.in_(ids)).values(worker_id=worker).returning(*jobs.c))
            return sorted((_row(r) for r in rows), key=lambda r: r["seq"])
        return self._retrying(go)

    def reclaim(self, worker: int, lease_s: float) -> tuple[list[JobRow], list[JobRow]]:
        """Take over what dead workers left. Returns (jobs now held by ``worker``, jobs put in doubt).

        In one transaction: running workers whose heartbeat is older than the lease are marked
        ``died``; jobs that have a task (submitted, rendering, completed) and no live holder are
        leased to ``worker`` — to be polled and downloaded, never resubmitted; jobs left in
        ``submitting`` by a holder that is gone become ``in_doubt``, since nothing can tell
        whether its create reached the API."""
        def go(c: Connection) -> tuple[list[JobRow], list[JobRow]]:
            stale = (update(runs).where(runs.c.status == RunStatus.RUNNING, runs.c.id != worker,
                                        or_(runs.c.heartbeat_at.is_(None), runs.c.heartbeat_at < self._now() - lease_s))
                     .values(status=RunStatus.DIED, finished_at=time.time()))
            c.execute(stale)
            orphaned = and_(jobs.c.worker_id.is_distinct_from(worker), or_(jobs.c.worker_id.is_(None), ~_holder_alive()))
            q = (select(jobs.c.id, jobs.c.state).where(jobs.c.state.in_([*_ACTIVE, S.SUBMITTING]), orphaned)
                 .order_by(jobs.c.id).with_for_update(skip_locked=True))
            found = c.execute(q).all()
            active = [i for i, st in found if st != S.SUBMITTING]
            stuck = [i for i, st in found if st == S.SUBMITTING]
            adopted: list[JobRow] = []
            if active:
                c.execute(update(jobs).where(jobs.c.id.in_(active)).values(worker_id=worker))
            if stuck:
                self._apply_many(c, _interrupted_create(stuck, "the worker holding it",
                                                        f"worker gone mid-create; found by worker {worker}"))
            if active:
                adopted = [_row(r) for r in c.execute(select(jobs).where(jobs.c.id.in_(active)).order_by(jobs.c.id))]
            doubt = [_row(r) for r in c.execute(select(jobs).where(jobs.c.id.in_(stuck)))] if stuck else []
            return adopted, doubt
        return self._retrying(go)

    def release(self, worker: int) -> int:
        """A worker leaving hands back the jobs it still holds (queued, or with a task to poll)."""
        with self.engine.begin() as c:
            return c.execute(update(jobs).where(jobs.c.worker_id == worker, jobs.c.state.in_([S.QUEUED, *_ACTIVE]))
                             .values(worker_id=None)).rowcount

    def held(self, worker: int) -> list[JobRow]:
        """Jobs with a task that this worker holds (its share of the paid work to collect)."""
        with self._read() as c:
            return [_row(r) for r in c.execute(select(jobs).where(jobs.c.worker_id == worker,
                                                                   jobs.c.state.in_(_ACTIVE)).order_by(jobs.c.id))]

    def pending_elsewhere(self, worker: int, scope: Scope) -> int:
        """Jobs of this manifest that still need work and that ``worker`` does not hold: while
        there are any, a worker stays to take over if their holder dies."""
        q = (select(func.count()).select_from(jobs).where(
            _of_manifest(scope),
            jobs.c.state.in_(_UNFINISHED), jobs.c.worker_id.is_distinct_from(worker)))
        with self._read() as c:
            return int(c.execute(q).scalar() or 0)

    def scope_counts(self, scope: Scope) -> dict[str, int]:
        """Per-state counts of every job recorded for this manifest (by any worker's run)."""
        q = (select(jobs.c.state, func.count()).where(_of_manifest(scope))
             .group_by(jobs.c.state))
        with self._read() as c:
            return {s: int(n) for s, n in c.execute(q)}

    def check_integrity(self) -> str:
        if not self.is_sqlite:
            return "ok"
        with self._read() as c:
            return str(c.exec_driver_sql("PRAGMA integrity_check").scalar())


class Writer:
    """Asynchronous front of the ledger: one thread, grouped commits.

    ``await writer.apply(t)`` returns once ``t`` is durably committed. Transitions that arrive
    while a commit is in progress are committed together in the next transaction, so an fsync
    is paid per batch, not per job, while each caller still waits for its own durability."""

    def __init__(self, ledger: Ledger, max_batch: int = 512, *, owner: int | None = None) -> None:
        self.ledger = ledger
        self.owner = owner  # cooperative ledgers: every transition requires this worker's lease
        self.max_batch = max_batch
        self.commits = 0
        self._pending: list[tuple[Transition, asyncio.Future[bool]]] = []
        self._outstanding: set[asyncio.Future[bool]] = set()
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ledger")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.error: BaseException | None = None  # first failed write; the scheduler stops submitting

    async def __aenter__(self) -> Writer:
        self._task = asyncio.create_task(self._loop(), name="ledger-writer")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._pool.shutdown(wait=True)

    async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run any ledger method on the ledger thread (keeps SQLite on one thread)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def read(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """A ledger call that need not queue behind the writes: PostgreSQL's pooled connections
        serve it from another thread (heartbeats, claims); SQLite keeps everything on one."""
        if self.ledger.is_sqlite:
            return await self.call(fn, *args, **kwargs)
        return await asyncio.to_thread(fn, *args, **kwargs)

    def submit(self, t: Transition) -> asyncio.Future[bool]:
        """Queue a transition; the future resolves once it is committed. Transitions are applied
        in the order they were submitted, so a job's later moves never overtake earlier ones."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if t.owner is None:
            t.owner = self.owner
        self._pending.append((t, fut))
        self._outstanding.add(fut)
        fut.add_done_callback(self._outstanding.discard)
        self._wake.set()
        return fut

    async def flush(self) -> None:
        """Wait until everything submitted so far is committed (or failed)."""
        if self._outstanding:
            await asyncio.wait(set(self._outstanding))

    async def apply(self, t: Transition) -> bool:
        # shield: if the caller is cancelled, the write still completes; the caller just stops
        # waiting for it.
        return await asyncio.shield(self.submit(t))

    def record(self, t: Transition) -> None:
        """Queue a transition without waiting for its commit. For moves whose loss in a crash is
        recovered by redoing idempotent work (re-poll, re-download); never for an intent."""
        self.submit(t).add_done_callback(self._check)

    def _check(self, fut: asyncio.Future[bool]) -> None:
        if not fut.cancelled() and fut.exception() is not None and self.error is None:
            self.error = fut.exception()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                try:
                    results = await loop.run_in_executor(self._pool, self.ledger.apply, [t for t, _ in batch])
                except LedgerError as err:  # Ledger.apply raises nothing else (error_boundary)
                    self.error = self.error or err
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(err)
                    continue
                self.commits += 1
                for (_, fut), ok in zip(batch, results):
                    if not fut.done():
                        fut.set_result(ok)
            if self._closing and not self._pending:
                return


__all__ = ["Ledger", "Writer", "Transition", "ledger_url", "make_engine", "upgrade", "OperationalError"]
