"""``SqliteReader``: what ``batchgen status`` reads of a SQLite ledger, through the standard
library's ``sqlite3`` instead of SQLAlchemy — whose import alone is most of a second's quarter,
more than the whole command may take (issue 28: ≤ 0.3 s). A PostgreSQL ledger, and every other
command, reads through ``Ledger``.

It opens the file as ``Ledger(url, readonly=True, create=False)`` does, with the same checks
and the same words: no file → ``LedgerMissing``; a folder or FIFO, or a database without
batchgen's tables → ``NotALedger``; a file cut short, empty, or with another database's
``-wal`` → ``LedgerDamaged`` (``sqlitefile.check``, before any connection); a schema of another
version → ``LedgerOutdated`` (``revisions``). Then SQLite itself refuses every write: the URI
is opened as ``engine.make_engine`` opens a reader (``query_only``; ``mode=ro`` while the log
holds frames, ``sqlitefile.reader_mode``). All of its
reads are one read transaction, so they see one moment of a ledger a run is writing.

Each method answers as the ``Ledger`` method of the same name does on SQLite (same SQL, same
row order, same values: digests as hex, booleans as ``bool``, requests made whole from their
shape); tests/test_status_reader.py compares the two on a ledger with every state, breakers,
review decisions, retakes and deliveries. The class is an ``error_boundary`` like the rooms: a
driver or file error is one ``LedgerError`` line (exit 7), damage found by a query
``LedgerDamaged``."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..errors import LedgerMissing, NotALedger
from ..jobs import UNFINISHED, JobRow, JobState, Verdict, hex_digest
from .boundary import error_boundary
from .revisions import LEDGER_TABLES, needs_upgrade, not_a_ledger, stamped
from .shapes import SHAPE_SQL, as_job
from .sqlitefile import check, reader_mode, sqlite_tables

S = JobState
# Columns whose SQLAlchemy type converts what SQLite stores (schema.py): sha256 digests stored as
# bytes (``Digest``) and booleans stored as 0/1 (``Boolean``). tests/test_status_reader.py checks
# these lists against schema.py.
JOB_DIGESTS = ("key", "sha256")
JOB_BOOLEANS = ("retryable", "m_audio")
RUN_BOOLEANS = ("stop_requested",)

_JOBS = f"SELECT jobs.*, {SHAPE_SQL} AS shape FROM jobs"
_UNFINISHED = sorted(UNFINISHED)
_NOT_AS_ASKED = ("mismatch", "undecodable", "missing", "changed")
_LATEST = "(SELECT max(x.id) FROM decisions AS x WHERE x.job_id = {job}.id)"
# A done clip owed to its destination and not there; with `--deliver-only approved`, only once its
# latest decision approves it and it is its shot's pick or its shot has none (sql.is_owed).
_OWED = (
    "jobs.state = 'done' AND jobs.deliver_to IS NOT NULL AND jobs.delivered_url IS NULL AND (jobs.deliver_only IS NULL"
    " OR (EXISTS (SELECT * FROM decisions AS mine WHERE mine.job_id = jobs.id AND mine.id = {latest_job}"
    " AND mine.verdict = 'approve') AND (EXISTS (SELECT * FROM decisions AS mine WHERE mine.job_id = jobs.id"
    " AND mine.id = {latest_job} AND mine.pick IS 1) OR NOT (EXISTS (SELECT * FROM jobs AS other, decisions AS theirs"
    " WHERE other.id != jobs.id AND other.model = jobs.model AND other.request = jobs.request"
    " AND other.shape_id IS jobs.shape_id AND theirs.job_id = other.id AND theirs.id = {latest_other}"
    " AND theirs.pick IS 1)))))"
).format(latest_job=_LATEST.format(job="jobs"), latest_other=_LATEST.format(job="other"))


def _marks(values: list[Any] | tuple[Any, ...]) -> str:
    return ", ".join("?" * len(values))


@error_boundary
class SqliteReader:
    """The SQLite ledger at ``path`` (absolute, as ``location.ledger_file`` gives it), opened
    read-only for ``status``'s reads; ``close`` ends its read transaction and connection."""

    is_sqlite = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = "sqlite:///" + str(path)  # error_boundary names the ledger and its folder from it
        self._con: sqlite3.Connection | None = None
        if path.exists() and not path.is_file():  # a FIFO would block the first read forever
            raise NotALedger(f"ledger {path}: not a batchgen ledger (not a regular file); nothing was changed")
        if not path.is_file():
            raise LedgerMissing(f"no ledger at {path} (give --ledger or BATCHGEN_LEDGER; `batchgen run` creates one)")
        check(path)  # before any connection: a damaged file is refused unchanged (sqlitefile)
        tables = sqlite_tables(path)
        if tables is not None and not LEDGER_TABLES <= tables:
            raise not_a_ledger(self, tables)
        # Opened as engine.make_engine opens a reader: SQLite refuses every write, the file's
        # journal mode is left as it is, and no -wal/-shm is left behind (``reader_mode``).
        con = sqlite3.connect(f"file:{quote(str(path))}?mode={reader_mode(path)}", uri=True, timeout=30, isolation_level=None,
                              check_same_thread=False)
        self._con = con
        try:
            con.execute("PRAGMA query_only=ON")
            con.execute("PRAGMA busy_timeout=30000")
            con.execute("BEGIN")
            versions = ([str(v) for (v,) in con.execute("SELECT version_num FROM alembic_version")]
                        if tables is None or "alembic_version" in tables else [])
            needs_upgrade(self, stamped(versions), migrate=False)
        except BaseException:
            self.close()  # a refused ledger is let go at once, as Ledger disposes of its engine
            raise

    @property
    def _safe_url(self) -> str:
        """The URL as ``Ledger`` names it in an error (SQLAlchemy's rendering: loaded on errors only)."""
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)

    def __str__(self) -> str:
        return str(self.path)

    def close(self) -> None:
        if self._con is not None:
            self._con.close()  # ends the read transaction (nothing was written)
            self._con = None

    def _rows(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[sqlite3.Row]:
        assert self._con is not None, "the reader is closed"
        cur = self._con.cursor()
        cur.row_factory = sqlite3.Row
        return cur.execute(sql, params).fetchall()

    def _jobs(self, where: str, params: tuple[Any, ...] | list[Any] = ()) -> list[JobRow]:
        """Whole job rows, as ``sql.job_row`` makes them: hex digests, booleans, whole requests."""
        out = []
        for r in self._rows(f"{_JOBS} WHERE {where}", params):
            row = dict(r)
            for name in JOB_DIGESTS:
                row[name] = hex_digest(row[name])
            for name in JOB_BOOLEANS:
                row[name] = None if row[name] is None else bool(row[name])
            out.append(as_job(row, row.pop("shape")))
        return out

    # ------------------------------------------------------------ runs (runs.Runs.runs)
    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest runs, each with its per-state job counts."""
        rows = []
        for found in self._rows("SELECT * FROM runs ORDER BY runs.id DESC LIMIT ?", (limit,)):
            row = dict(found)
            for name in RUN_BOOLEANS:
                row[name] = None if row[name] is None else bool(row[name])
            rows.append(row)
        ids = [r["id"] for r in rows]
        counts: dict[int, dict[str, int]] = {}
        held: dict[int, int] = {}
        if ids:
            for run_id, state, n in self._rows(f"SELECT jobs.run_id, jobs.state, count(*) FROM jobs WHERE jobs.run_id "
                                               f"IN ({_marks(ids)}) GROUP BY jobs.run_id, jobs.state", ids):
                counts.setdefault(run_id, {})[state] = int(n)
            held = {w: int(n) for w, n in self._rows(f"SELECT jobs.worker_id, count(*) FROM jobs WHERE jobs.worker_id "
                                                    f"IN ({_marks(ids)}) GROUP BY jobs.worker_id", ids)}
        now = time.time()
        for r in rows:
            r["counts"] = counts.get(r["id"], {})
            r["held"] = held.get(r["id"], 0)
            r["heartbeat_age_s"] = None if r["heartbeat_at"] is None else round(now - r["heartbeat_at"], 1)
        return rows

    # ------------------------------------------------------------ reads of jobs (reads.Reads)
    def unfinished(self, limit: int = 10) -> list[JobRow]:
        """Oldest jobs that are neither finished nor waiting for a human."""
        return self._jobs(f"jobs.state IN ({_marks(_UNFINISHED)}) ORDER BY coalesce(jobs.submitted_at, "
                          "jobs.created_at), jobs.id LIMIT ?", (*_UNFINISHED, limit))

    def jobs_in_state(self, state: str) -> list[JobRow]:
        return self._jobs("jobs.state = ? ORDER BY jobs.id", (state,))

    def expiring(self, within_s: float, ttl_s: float) -> list[JobRow]:
        """Completed jobs whose result URL expires within ``within_s`` and that are not downloaded."""
        cutoff = time.time() - ttl_s + within_s
        return self._jobs("jobs.state = ? AND jobs.result_at <= ? ORDER BY jobs.result_at", (S.COMPLETED, cutoff))

    # ------------------------------------------------------------ verification and delivery (records.Records)
    def verify_counts(self) -> dict[str, int]:
        """Delivered clips per verification outcome."""
        return {str(v): int(n) for v, n in self._rows(
            "SELECT jobs.verify, count(*) FROM jobs WHERE jobs.verify IS NOT NULL GROUP BY jobs.verify")}

    def not_as_asked(self, limit: int = 1000) -> list[JobRow]:
        """Delivered clips whose verification found them wrong, newest first."""
        return self._jobs(f"jobs.verify IN ({_marks(_NOT_AS_ASKED)}) ORDER BY jobs.verified_at DESC LIMIT ?",
                          (*_NOT_AS_ASKED, limit))

    def delivery_counts(self) -> dict[str, int]:
        """Done clips delivered to object storage, and clips owed to a destination but not (yet) there."""
        ((d, n),) = self._rows(f"SELECT sum(CASE WHEN (jobs.delivered_url IS NOT NULL) THEN 1 ELSE 0 END), "
                               f"sum(CASE WHEN ({_OWED}) THEN 1 ELSE 0 END) FROM jobs WHERE jobs.state = 'done'")
        return {"delivered": int(d or 0), "undelivered": int(n or 0)}

    def delivery_problems(self, limit: int = 20) -> list[JobRow]:
        """Done clips owed to a destination and not there, newest first."""
        return self._jobs(f"{_OWED} ORDER BY jobs.updated_at DESC LIMIT ?", (limit,))

    # ------------------------------------------------------------ review decisions (decisions.Decisions)
    def verdict_counts(self) -> dict[str, int]:
        """Finished clips by their latest verdict, with ``pending`` for those without one."""
        counts = {str(v): int(n) for v, n in self._rows(
            "SELECT decisions.verdict, count(*) FROM decisions JOIN jobs ON jobs.id = decisions.job_id WHERE "
            "decisions.id IN (SELECT max(decisions.id) FROM decisions GROUP BY decisions.job_id) AND "
            "decisions.verdict IS NOT NULL AND jobs.state = ? GROUP BY decisions.verdict", (S.DONE,))}
        ((total,),) = self._rows("SELECT count(*) FROM jobs WHERE jobs.state = ?", (S.DONE,))
        out = {"pending": int(total) - sum(counts.values())}
        out.update({v.value: counts.get(v.value, 0) for v in Verdict})
        return out

    # ------------------------------------------------------------ breakers (breakers.BreakerBoard)
    def open_breakers(self) -> dict[str, dict[str, Any]]:
        """model → {why, opened_at, probe_in (seconds until its probe may go; ≤ 0: now),
        probes (sent since it opened)}."""
        rows = self._rows("SELECT breakers.model, breakers.why, breakers.opened_at, breakers.probes, "
                          "breakers.reopens_at - ? AS probe_in FROM breakers WHERE breakers.closed_at IS NULL "
                          "ORDER BY breakers.model", (time.time(),))
        return {r["model"]: {"why": r["why"], "opened_at": r["opened_at"], "probe_in": float(r["probe_in"]),
                             "probes": int(r["probes"])} for r in rows}
