"""Whether a SQLite ledger's file is whole, found before anything opens it through SQLAlchemy:
its header, its size, its write-ahead log (``-wal``) and, for a command that writes, SQLite's
own ``PRAGMA quick_check``. A damaged file is refused with ``LedgerDamaged`` (exit 7, one
line naming the file and what to do) and is never written to: every read here goes through
``mode=ro`` (and ``immutable`` when no write-ahead log holds part of the database), so neither
the file nor its ``-wal`` changes whatever the verdict.

Why each check, and why here:

* A file cut short (a disk that lost its end, a copy that stopped) still starts with a valid
  header that says how many pages it has; SQLite reads the missing ones as zeros and answers
  "database disk image is malformed" only when a query reaches them — after a run may already
  have written to the file. The header's page count against the file's size finds it at once.
* An empty file (0 bytes) is an empty database to SQLite: a run would start a new ledger in it
  and submit every job again, paid twice, where the old ledger held their task ids. batchgen
  creates its ledger itself (never empty: the first connection writes its header), so an empty
  file is a ledger that lost everything, or a file made by hand: either way a person decides.
* A ``-wal`` is replayed over the file by SQLite whatever database wrote it (its format ties it
  to none), and the first read-write connection copies it into the file for good. A log of
  another database that holds that database's page 1 (one written for pages of another size, or
  a new database never checkpointed) turns the ledger into the other database, silently and
  consistently: ``quick_check`` passes. So batchgen ties its ledgers to their logs itself:
  ``stamp`` writes an identity into the header (``application_id``, and a random
  ``user_version``) the first time a command that writes opens a ledger, and a log whose
  committed page 1 carries another identity (or pages of another size) is refused on sight. A
  log of another database without its page 1 mixes pages of two b-trees: ``quick_check`` over the
  file and its log finds that before a writer opens the file.
* Pages overwritten with other bytes are found by ``quick_check`` (every b-tree page read and
  checked; measured: 3 s for a 600 MB, 1,000,000-job ledger, where `status` on it takes 11 s).
  Only commands that may write pay for it (``whole``): a command that only reads cannot spread
  the damage, and reports it (exit 7) when a query reaches a damaged page."""

from __future__ import annotations

import secrets
import sqlite3
import struct
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import quote

from ..errors import LedgerDamaged

if TYPE_CHECKING:
    from sqlalchemy import Engine

MAGIC = b"SQLite format 3\x00"
APPLICATION_ID = 0x62676C64  # "bgld": a batchgen ledger, in the header's application_id (offset 68)
_WAL_MAGIC = (0x377F0682, 0x377F0683)
_WAL_VERSION = 3007000
_HEADER = 100  # bytes of the database header on page 1
_CORRUPT = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB: the file is not whole (other codes: it cannot be read)
_IDENTITY = slice(60, 72)  # user_version, incremental-vacuum flag, application_id


def advice(path: Path | str) -> str:
    """What to do with a damaged ledger, in one sentence (the runbook's "A damaged ledger")."""
    return (f"restore it from a backup, or salvage what is left (`sqlite3 {path} .recover`) and check it before "
            "running on it (runbook: A damaged ledger)")


def damaged(path: Path | str, what: str, *, unchanged: bool = True, todo: str | None = None) -> LedgerDamaged:
    """The one line that refuses a damaged ledger: the file, what is wrong, what to do."""
    kept = "; nothing was changed" if unchanged else ""
    return LedgerDamaged(f"ledger {path} is damaged ({what}){kept}: {todo or advice(path)}")


def stamp(engine: Engine) -> None:
    """Give a SQLite ledger its identity (once: a ledger keeps it for life) — batchgen's
    ``application_id`` and a random ``user_version`` — so that a write-ahead log of any other
    database is recognised (``check``). For commands that write, after the open's checks."""
    with engine.connect().execution_options(readonly=True) as c:
        if c.exec_driver_sql("PRAGMA user_version").scalar():
            return
        c.rollback()
    with engine.begin() as c:
        if not c.exec_driver_sql("PRAGMA user_version").scalar():
            c.exec_driver_sql(f"PRAGMA application_id = {APPLICATION_ID}")
            c.exec_driver_sql(f"PRAGMA user_version = {secrets.randbits(31) or 1}")


def check(path: Path) -> None:
    """Raise ``LedgerDamaged`` when the SQLite file at ``path`` (an existing regular file) is
    not whole, as its bytes show without SQLite: empty, cut short, a header that is not SQLite's
    or makes no sense, a write-ahead log of another database. Only reads the file and its log."""
    with open(path, "rb") as f:
        head = f.read(_HEADER)
        size = f.seek(0, 2)
    if size == 0:
        raise LedgerDamaged(f"ledger {path} is empty (0 bytes), which a ledger batchgen made never is; nothing was "
                            "changed: if it held runs, restore it from a backup (runbook: A damaged ledger); if you "
                            "made it, delete it (`batchgen run` makes its own)")
    if not head.startswith(MAGIC) and not MAGIC.startswith(head):
        raise LedgerDamaged(f"ledger {path}: not a ledger (it does not start with SQLite's header: corrupt, or "
                            "another kind of file); nothing was changed: if it was your ledger, restore it from a "
                            "backup (runbook: A damaged ledger)")
    page_size = _page_size(head) if len(head) == _HEADER else None
    if page_size is None:
        raise damaged(path, f"cut short: {size} bytes, less than SQLite's header" if len(head) < _HEADER
                      else "its header is not a valid SQLite header")
    wal_path = Path(f"{path}-wal")
    wal = _read_wal(wal_path)
    if wal is not None and (foreign := _foreign(head, page_size, wal)) is not None:
        raise damaged(path, f"its write-ahead log {wal_path} {foreign}",
                      todo=f"move {wal_path} aside (and {path}-shm with it) and run the command again; keep the "
                           "log, it is another database's")
    if wal is None or not wal.committed:
        # A log's pages may lie beyond the end of the file (a checkpoint that a crash cut short
        # copies page 1 first): with one, the size tells nothing and quick_check decides.
        if (cut := _cut_short(head, size, page_size)) is not None:
            raise damaged(path, cut)


def check_pages(path: Path) -> None:
    """Raise ``LedgerDamaged`` when SQLite's ``quick_check`` finds the file at ``path`` (with its
    write-ahead log) damaged: for commands that may write, before their first write."""
    if (problem := quick_check(path)) is None:
        return
    wal_path = Path(f"{path}-wal")
    todo = None
    if (wal := _read_wal(wal_path)) is not None and wal.committed:  # the log may be the stranger
        todo = (f"if {wal_path} came from elsewhere (a ledger copied or restored without its own log), move "
                f"it aside and try again; else {advice(path)}")
    raise damaged(path, problem, todo=todo)


def reader_mode(path: Path) -> str:
    """The SQLite open mode of a command that only reads the ledger at ``path`` (its caller
    turns ``query_only`` on, so SQLite refuses every write either way). SQLite gives every
    reader of a WAL database -wal and -shm files, and only a connection that may write deletes
    them when it closes last (after checkpointing an empty log: nothing); a ``ro`` one leaves
    them beside the ledger for good. So ``rw`` when the log holds nothing, and ``ro`` when it
    holds frames — a live run's, or those a stopped one left — which a reader never copies into
    the file (the next run does, after checking the log is the ledger's own). ``ro`` too beside
    a rollback journal: a connection that may write would roll it back into the file."""
    wal = Path(f"{path}-wal")
    held = (wal.exists() and wal.stat().st_size > 0) or Path(f"{path}-journal").exists()
    return "ro" if held else "rw"


def sqlite_tables(path: Path) -> set[str] | None:
    """The tables of the SQLite file at ``path``, read without changing anything beside it, or
    None when it is not an SQLite database (then opening it says what it is). Nothing is in its
    WAL when there is no -wal file, so the file alone is read (``immutable``): a WAL database of
    another application does not get -wal/-shm files from being looked at."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        return set()
    if head != MAGIC:
        return None
    wal = Path(f"{path}-wal")
    immutable = not (wal.exists() and wal.stat().st_size > 0)
    uri = f"file:{quote(str(path.absolute()))}?mode=ro" + ("&immutable=1" if immutable else "")
    con = sqlite3.connect(uri, uri=True, timeout=30)
    try:
        return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        con.close()



def _page_size(head: bytes) -> int | None:
    """The page size the header names; None when the header makes no sense (size, format versions, fractions)."""
    raw = struct.unpack(">H", head[16:18])[0]
    size = 65536 if raw == 1 else raw
    if not (512 <= size <= 65536 and size & (size - 1) == 0):
        return None
    return size if head[18] in (1, 2) and head[19] in (1, 2) and head[21:24] == b"\x40\x20\x20" else None


def _cut_short(head: bytes, size: int, page_size: int) -> str | None:
    pages, counter, valid_for = struct.unpack(">I", head[28:32])[0], head[24:28], head[92:96]
    if size % page_size:
        return f"cut short: {size} bytes is not a whole number of its {page_size}-byte pages"
    if pages and counter == valid_for and size < pages * page_size:  # the count is valid (SQLite ≥ 3.7.0)
        return f"cut short: {size} bytes of the {pages * page_size} its header counts"
    return None


class _Wal(NamedTuple):
    page_size: int
    committed: bool  # it holds a committed transaction SQLite would replay
    page1: bytes | None  # the header of the last committed page 1 it holds


def _read_wal(wal: Path) -> _Wal | None:
    """The write-ahead log's header and the frames SQLite would replay (those carrying the
    header's salts, up to the last commit); None without a valid log (absent, empty, or a
    header SQLite ignores, as after a crash that tore its first write). Frame checksums are
    not recomputed: the salts are what separate this log's frames from a previous one's."""
    try:
        f = open(wal, "rb")
    except FileNotFoundError:
        return None
    with f:
        head = f.read(32)
        if len(head) < 32:
            return None
        magic, version, page_size, _seq, salt1, salt2, c1, c2 = struct.unpack(">8I", head)
        if magic not in _WAL_MAGIC or version != _WAL_VERSION or _wal_checksum(head[:24], magic & 1) != (c1, c2):
            return None
        committed, page1, pending = False, None, None
        offset = 32
        while True:
            f.seek(offset)
            frame = f.read(24)
            if len(frame) < 24 or struct.unpack(">II", frame[8:16]) != (salt1, salt2):
                break
            pgno, commit = struct.unpack(">II", frame[:8])
            if pgno == 1:
                pending = f.read(_HEADER)
            if commit:
                committed, page1 = True, pending if pending is not None else page1
            offset += 24 + page_size
        return _Wal(page_size, committed, page1)


def _foreign(head: bytes, page_size: int, wal: _Wal) -> str | None:
    """How the log shows it belongs to another database (None: nothing shows it)."""
    if wal.page_size != page_size:
        return (f"is for pages of {wal.page_size} bytes and the file's are {page_size}: it belongs to another "
                "database, and opening the ledger would turn it into that one")
    mine = head[_IDENTITY]
    if wal.page1 is not None and struct.unpack(">I", mine[:4])[0] and wal.page1[_IDENTITY] != mine:
        return ("carries another database's identity: it belongs to another database, and opening the ledger "
                "would turn it into that one")
    return None


def _wal_checksum(data: bytes, big_endian: int) -> tuple[int, int]:
    """SQLite's write-ahead log checksum (two 32-bit sums over 32-bit words, in the byte order
    the log's magic names), as the file format documents it."""
    words = struct.unpack((">" if big_endian else "<") + f"{len(data) // 4}I", data)
    s0 = s1 = 0
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def quick_check(path: Path) -> str | None:
    """What SQLite's ``PRAGMA quick_check`` finds wrong in the file and its write-ahead log (None:
    nothing), read-only. It reads every page and checks every b-tree's structure; it does not
    compare indexes with their tables (``integrity_check`` does, ten times slower)."""
    wal = Path(f"{path}-wal")
    live = wal.exists() and wal.stat().st_size > 0
    # Never ``immutable``: a run may start on the file meanwhile, and its checkpoint would then
    # tear what an immutable read sees (a false "malformed"). ``mode=ro`` takes SQLite's locks,
    # and can write neither the file nor its log (only the -shm index beside them).
    uri = f"file:{quote(str(path.absolute()))}?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True, timeout=30)
        try:
            found = [str(r[0]) for r in con.execute("PRAGMA quick_check(3)")]
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        if getattr(e, "sqlite_errorcode", 0) & 0xFF not in _CORRUPT:
            raise  # cannot be read (a read-only file system, a lock): the boundary names it
        # The page that says where the others are is itself damaged.
        return f"SQLite: {e}" + (f", read with its write-ahead log {wal}" if live else "")
    if found == ["ok"]:
        return None
    first = found[0] if len(found[0]) <= 160 else found[0][:160] + "…"
    more = f" and {len(found) - 1} more problem(s)" if len(found) > 1 else ""
    return f"SQLite's quick_check: {first}{more}" + (f", read with its write-ahead log {wal}" if live else "")
