"""The one boundary between the database libraries and batchgen: SQLAlchemy, driver and OS
errors become ``LedgerError`` (exit 7, one line naming the cause), as httpx's ``map_exceptions``.

Every ledger class (the facade and each room) is decorated with ``error_boundary``, so a public
method added later to any of them is translated too."""

from __future__ import annotations

import functools
import inspect
import os
import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

from ..errors import BatchgenError, LedgerError
from . import sqlitefile

P = ParamSpec("P")
R = TypeVar("R")

# SQLite's own words for what goes wrong with a ledger file, and what they mean to an operator.
_CAUSES = (
    ("unable to open database file", "cannot open it (missing folder, or no permission)"),
    ("readonly database", "it is read-only"),
    ("database is locked", "it is locked by another process"),
    ("database or disk is full", "the disk is full"),
    ("disk i/o error", "a disk I/O error"),
)


# SQLite's words for a file that is not whole: answered as ``sqlitefile.damaged`` (what to do).
_DAMAGE = ("database disk image is malformed", "file is not a database", "could not decode to utf-8")


def _is_database_error(e: BaseException) -> bool:
    """The library errors the boundary translates: SQLAlchemy's, the SQLite driver's when it is
    called directly (``sqlite_tables``, ``sqlitefile``, ``SqliteReader``), and the file system's.
    SQLAlchemy is not imported for the question: an error of a process that never loaded it
    (``batchgen status`` on a SQLite file) cannot be one of its errors."""
    if isinstance(e, (sqlite3.Error, OSError)):
        return True
    exc = sys.modules.get("sqlalchemy.exc")
    return exc is not None and isinstance(e, exc.SQLAlchemyError)


def _database_of(url: str | None) -> str | None:
    """The database part of a ``sqlite:///`` URL, as SQLAlchemy reads it (loaded for errors only)."""
    if not url or not url.startswith("sqlite:///"):
        return None
    from sqlalchemy.engine import make_url

    return make_url(url).database


def _text(e: BaseException) -> str:
    orig = getattr(e, "orig", None) or e
    return (getattr(orig, "strerror", None) or str(orig) or type(orig).__name__).splitlines()[0]


def _cause(e: BaseException, url: str | None = None) -> str:
    """One line naming what went wrong, in words an operator acts on."""
    orig = getattr(e, "orig", None) or e
    text = _text(e)
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
    return Path(_database_of(url) or ".").parent


def _sqlite_path(url: str | None) -> Path | None:
    db = _database_of(url)
    return Path(db) if db and db != ":memory:" else None


def _translate(self: Any, e: BaseException, safe_url: Callable[[Any], str]) -> LedgerError:
    """The ``LedgerError`` for a database or file-system error ``e`` raised by ``self``'s method."""
    url = getattr(self, "url", None)
    path = _sqlite_path(url)
    if any(needle in _text(e).lower() for needle in _DAMAGE):
        # Found by a query, after the open's checks passed: the file may have changed since.
        return sqlitefile.damaged(path or safe_url(self), _text(e), unchanged=False)
    return LedgerError(f"ledger {safe_url(self)}: {_cause(e, url)}")


def _diagnosed(self: Any, e: Exception) -> LedgerError | None:
    """For an error that is not a database error (a value a damaged page made that no column can
    hold): ``LedgerDamaged`` when SQLite finds the ledger's file damaged, else None (the error
    is a bug of batchgen's and goes on as it is). Costs a quick_check, on this path only."""
    path = _sqlite_path(getattr(self, "url", None))
    if isinstance(e, BatchgenError) or path is None or not path.is_file():
        return None
    try:
        problem = sqlitefile.quick_check(path)
    except (OSError, sqlite3.Error):  # cannot be read now: nothing to say beyond the error itself
        return None
    return None if problem is None else sqlitefile.damaged(path, problem, unchanged=False)


def _replacement(self: Any, e: Exception, safe_url: Callable[[Any], str]) -> LedgerError | None:
    """What a ledger method's error becomes: a database library's error always a
    ``LedgerError``; any other one ``LedgerDamaged`` where a damaged file explains it, else
    nothing (it goes on as it is)."""
    if _is_database_error(e):
        return _translate(self, e, safe_url)
    return _diagnosed(self, e)


def _translating(safe_url: Callable[[Any], str], fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` with SQLAlchemy, driver and OS errors turned into ``LedgerError`` (the one
    boundary between the database libraries and batchgen, as httpx's ``map_exceptions``), and
    any other error that a damaged SQLite file explains into ``LedgerDamaged``. Generator
    methods are translated while they are iterated."""

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args: P.args, **kwargs: P.kwargs) -> Any:
            try:
                yield from cast(Iterator[Any], fn(*args, **kwargs))
            except Exception as e:
                found = _replacement(args[0], e, safe_url)
                if found is None:
                    raise
                raise found from None
        return cast(Callable[P, R], gen)

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            found = _replacement(args[0], e, safe_url)
            if found is None:
                raise
            raise found from None
    return wrapper


def error_boundary(cls: type[R]) -> type[R]:
    """Class decorator: every public method (and ``__init__``) of ``cls`` raises only
    ``LedgerError`` for database and file-system failures. Applied to the class rather than
    method by method, so a method added later cannot forget it."""
    for name, member in list(vars(cls).items()):
        if (name == "__init__" or not name.startswith("_")) and inspect.isfunction(member):
            setattr(cls, name, _translating(lambda self: getattr(self, "_safe_url", "?"), member))
    return cls
