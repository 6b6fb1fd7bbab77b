"""Output files: containment inside ``--out``, atomic writes (temp, fsync, rename, fsync dir), and the checks a
downloaded video must pass before it reaches its final path.

Every file batchgen writes goes through this module: clips (``AtomicFile``), and everything else (export, report,
metrics, pictures) through ``atomic_output``, which refuses a target that exists and is not a regular file (a
device, FIFO, folder or socket is never replaced), writes ``-`` to stdout where the caller allows it, and writes a
regular file as temp + fsync + rename. ``check_output_target`` and ``check_out_dir`` are the same checks as pure
functions for a preflight: they return a problem (or None) and leave nothing behind."""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import itertools
import os
import re
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, TypeVar, overload

from . import crash
from .redact import printable
from .errors import DownloadError, OutputFailed, OutputRefused

MP4_BRANDS_BOX = b"ftyp"
T = TypeVar("T")
_temp_ids = itertools.count()
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"
STALE_TEMP_AGE = 3600.0  # a temp file nobody wrote to for an hour belongs to no live download


def _resolve(path: str | os.PathLike[str]) -> Path:
    """``Path.resolve`` with a symlink loop as a ValueError: RuntimeError up to Python 3.12; since
    3.13 nothing (the looping link stays in the path), so a ``stat`` of it asks the kernel."""
    try:
        real = Path(path).resolve()
        os.stat(real)
    except (RuntimeError, OSError) as e:
        if isinstance(e, RuntimeError) or e.errno == errno.ELOOP or "real" not in locals():
            why = getattr(e, "strerror", None) or e
            raise ValueError(f"{os.fspath(path)}: cannot be resolved ({why})") from None
    return real


def resolve_inside(out_dir: str | os.PathLike[str], relative: str) -> Path:
    """Final path of ``relative`` under ``out_dir``; refuses anything that would land outside it
    (``..``, absolute paths, or a symlinked folder pointing elsewhere)."""
    root = _resolve(out_dir)
    if "\x00" in relative or os.path.isabs(relative):
        raise ValueError(f"output name {relative!r} is not a relative path")
    target = _resolve(root / relative)
    if root != target and root not in target.parents:
        raise ValueError(f"output name {relative!r} escapes the output directory {root}")
    return target


def inside(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> bool:
    """Whether ``path``, resolved (symlinks included), is ``root`` or lies under it."""
    try:
        r, p = _resolve(root), _resolve(path)
    except ValueError:
        return False
    return r == p or r in p.parents


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _not_regular(path: Path, *, follow: bool = True) -> str | None:
    """What ``path`` is when it exists and is not a regular file (None otherwise)."""
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError:
        return None  # unreadable metadata: the write itself will say why
    if stat.S_ISREG(st.st_mode) or (not follow and stat.S_ISLNK(st.st_mode)):
        return None
    return _kind(st.st_mode)


def _target(path: str | os.PathLike[str], what: str) -> Path:
    """The real path a file named ``path`` is written to (symlinks followed, so a link to a
    regular file keeps pointing at the new content); raises OutputRefused when it is a device,
    FIFO, folder or socket, or its folder does not exist."""
    shown = printable(f"{what} {os.fspath(path)}".strip())
    if not os.fspath(path) or "\x00" in os.fspath(path):
        raise OutputRefused(f"{what} {os.fspath(path)!r}: not a file name".strip())
    try:
        final = _resolve(path)
    except ValueError as e:
        raise OutputRefused(printable(f"{what} {e}".strip())) from None
    kind = _not_regular(final)
    if kind is not None:
        raise OutputRefused(f"{shown}: it exists and is {kind}, not a regular file; refusing to replace it")
    try:
        parent_is_dir = stat.S_ISDIR(os.stat(final.parent).st_mode)
    except FileNotFoundError:
        parent_is_dir = False
    except OSError as e:  # a folder on the way that may not be looked into
        raise _os_error(what, path, e) from None
    if not parent_is_dir:
        raise OutputRefused(f"{shown}: the folder {printable(str(final.parent))} does not exist")
    return final


_REFUSED_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.ENAMETOOLONG})


def _os_error(what: str, path: str | os.PathLike[str], e: OSError) -> OutputRefused | OutputFailed:
    """One cause, one code: a path that names no place for the file is bad input (exit 2); a
    file system that refuses to write (read-only, permission, full) is the environment (exit 7)."""
    why = e.strerror or type(e).__name__
    shown = printable(f"{what} {os.fspath(path)}".strip())
    if e.errno in _REFUSED_ERRNOS:
        return OutputRefused(f"{shown}: {why}")
    return OutputFailed(f"cannot write {shown}: {why}")


def _temp_name(final: Path, suffix: str = "tmp") -> Path:
    return final.with_name(f".{final.name}.{_HOST}-{os.getpid()}-{next(_temp_ids)}.{suffix}")


@overload
def atomic_output(path: str | os.PathLike[str], *, what: str, binary: Literal[False] = ..., durable: bool = ...,
                  allow_stdout: bool = ..., root: str | os.PathLike[str] | None = ...,
                  ) -> contextlib.AbstractContextManager[IO[str]]: ...


@overload
def atomic_output(path: str | os.PathLike[str], *, what: str, binary: Literal[True], durable: bool = ...,
                  allow_stdout: bool = ..., root: str | os.PathLike[str] | None = ...,
                  ) -> contextlib.AbstractContextManager[IO[bytes]]: ...


def atomic_output(path: str | os.PathLike[str], *, what: str, binary: bool = False, durable: bool = True,
                  allow_stdout: bool = False, root: str | os.PathLike[str] | None = None,
                  ) -> contextlib.AbstractContextManager[Any]:
    """Write one file through a ``with`` block: a text (or ``binary``) stream on a sibling temp file, fsynced
    (``durable``), renamed over ``path`` and the folder fsynced when the block ends without an error; on any error
    the temp file is removed and ``path`` is untouched.

    ``what`` names the file in messages ("--report", "export -o"). ``-`` is stdout when ``allow_stdout``. ``root``:
    the file must resolve (symlinks included) inside that folder (``--out``). Raises ``OutputRefused`` (exit 2) for
    a target that is a device, FIFO, folder or socket, in a missing folder or outside ``root``, and
    ``OutputFailed`` (exit 7) when the file system refuses the write. An existing file keeps its permission bits."""
    return _atomic_output(path, what=what, binary=binary, durable=durable, allow_stdout=allow_stdout, root=root)


@contextlib.contextmanager
def _atomic_output(path: str | os.PathLike[str], *, what: str, binary: bool, durable: bool, allow_stdout: bool,
                   root: str | os.PathLike[str] | None) -> Iterator[Any]:
    if os.fspath(path) == "-":
        if not allow_stdout:
            raise OutputRefused(f"{what} -: needs a file name here (stdout is not available for it)")
        stream: Any = sys.stdout.buffer if binary else sys.stdout
        yield stream
        stream.flush()
        return
    if root is not None and not inside(root, path):
        raise OutputRefused(printable(f"{what} {os.fspath(path)}: resolves outside the output folder {os.fspath(root)}"))
    final = _target(path, what)
    try:
        mode = stat.S_IMODE(os.stat(final).st_mode)
    except OSError:
        mode = None
    tmp = _temp_name(final)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as e:
        raise _os_error(what, path, e) from None
    committed = False
    try:
        f: Any = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="")
        with f:
            yield f
            f.flush()
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            if durable:
                os.fsync(f.fileno())
        # Re-checked right before the rename: a FIFO made meanwhile is still never replaced.
        kind = _not_regular(final)
        if kind is not None:
            raise OutputRefused(printable(f"{what} {os.fspath(path)}: it exists and is {kind}, not a regular file; "
                                          "refusing to replace it"))
        os.replace(tmp, final)
        committed = True
        if durable:
            fsync_dir(final.parent)
    except OSError as e:
        if committed:
            return  # written and renamed; only the folder's fsync failed
        raise _os_error(what, path, e) from None
    finally:
        if not committed:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _probe(folder: Path) -> str | None:
    """Create and remove a real temp file in ``folder``: the only test of writability that
    also sees read-only mounts, ACLs and full quotas. None when it worked, else why not."""
    tmp = _temp_name(folder / "probe", "probe")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as e:
        return e.strerror or type(e).__name__
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    return None


def ensure_output_target(path: str | os.PathLike[str], *, what: str) -> None:
    """Raise what writing a file at ``path`` later would raise (``OutputRefused``: a device,
    FIFO, folder or socket, a missing folder; ``OutputFailed``: the folder takes no new file,
    probed with a real temp file that is removed again). ``-`` (stdout) passes."""
    if os.fspath(path) == "-":
        return
    final = _target(path, what)
    tmp = _temp_name(final.parent / "probe", "probe")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as e:
        raise _os_error(what, path, e) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def check_output_target(path: str | os.PathLike[str]) -> str | None:
    """For a preflight: what is wrong with writing a file at ``path`` later (``--report``,
    ``--metrics-file``, ``export -o``), or None. ``-`` (stdout) is fine. The target may not be
    a device, FIFO, folder or socket; its folder must exist and take a new file (probed with a
    real temp file, removed again). Writes nothing lasting."""
    try:
        ensure_output_target(path, what="")
    except (OutputRefused, OutputFailed) as e:
        return str(e).strip()
    return None


def check_out_dir(path: str | os.PathLike[str]) -> str | None:
    """For a preflight: what is wrong with ``path`` as ``--out``, or None (see ``out_dir_problem``)."""
    e = out_dir_problem(path)
    return None if e is None else str(e)


def out_dir_problem(path: str | os.PathLike[str]) -> OutputRefused | OutputFailed | None:
    """What is wrong with ``path`` as ``--out``: ``OutputRefused`` (exit 2: it names no place for
    a folder) or ``OutputFailed`` (exit 7: the file system refuses a new file), or None. An
    existing folder must take a new file (probed with a real temp file, removed again); a
    missing one must be creatable (its nearest existing ancestor is a folder that takes a new
    file). Creates nothing."""
    shown = printable(os.fspath(path))
    try:
        real = _resolve(path)
    except ValueError as e:
        return OutputRefused(printable(str(e)))
    folder = real
    try:
        while not os.path.lexists(folder) and folder.parent != folder:
            folder = folder.parent
        mode = os.stat(folder).st_mode
    except OSError as e:  # a folder on the way that may not be looked into
        return OutputFailed(f"{shown}: {e.strerror or type(e).__name__}")
    if not stat.S_ISDIR(mode):
        kind = "a file" if stat.S_ISREG(mode) else _kind(mode)
        if folder == real:
            return OutputRefused(f"{shown}: it is {kind}, not a folder")
        return OutputRefused(f"{shown}: cannot be created: {printable(str(folder))} is {kind}, not a folder")
    why = _probe(folder)
    if why is None:
        return None
    where = printable(str(folder))
    return OutputFailed(f"{shown}: cannot write in {where}: {why}" if folder == real
                        else f"{shown}: cannot be created in {where}: {why}")


class OutputDir:
    """``resolve_inside`` for many files: each parent folder is resolved once. The file name
    itself is never followed: a rename replaces a symlink rather than writing through it."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self._parents: dict[str, Path] = {}

    def path(self, relative: str) -> Path:
        head, _, name = relative.rpartition("/")
        parent = self._parents.get(head)
        if parent is None:
            parent = resolve_inside(self.root, head) if head else self.root
            self._parents[head] = parent
        if not name or name in (".", "..") or "\x00" in name or "\\" in name:
            raise ValueError(f"output name {relative!r} has no valid file name")
        final = parent / name
        kind = _not_regular(final, follow=False)
        if kind is not None:
            raise ValueError(f"output {final} exists and is {kind}, not a regular file; refusing to replace it")
        return final


def looks_like_mp4(head: bytes) -> bool:
    # ISO-BMFF: the first box is 'ftyp' (bytes 4..8); its size must be sane.
    if len(head) < 12 or head[4:8] != MP4_BRANDS_BOX:
        return False
    size = int.from_bytes(head[:4], "big")
    return 8 <= size <= 4096


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicFile:
    """Write to a sibling temp file created with O_EXCL; ``commit()`` fsyncs and renames it onto
    the final path (``finish()`` also fsyncs the directory, see ``DirSyncer``). Leaving the block
    without committing (any error, a cancel) removes the temp file, so a final path only ever
    holds a complete, verified file."""

    def __init__(self, final: Path) -> None:
        self.final = final
        # Unique per host, process and call; O_EXCL makes a clash an error, never an overwrite.
        # Host and pid let a starting worker tell its dead predecessors' leftovers from the
        # downloads of a live worker sharing the folder (remove_stale_temp_files).
        self.tmp = final.with_name(f".{final.name}.{_HOST}-{os.getpid()}-{next(_temp_ids)}.part")
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.head = b""
        self._fd: int | None = None
        self._done = False

    def __enter__(self) -> AtomicFile:
        return self

    def open(self) -> None:
        """Create the temp file (blocking: call it from a worker thread, see ``in_thread``)."""
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)

    def write(self, chunk: bytes) -> None:
        if self._fd is None:
            self.open()
        assert self._fd is not None
        if len(self.head) < 64:
            self.head += chunk[: 64 - len(self.head)]
        view = memoryview(chunk)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.size += len(chunk)
        self.sha256.update(chunk)

    def finish(self, rest: bytes, dirs: DirSyncer) -> None:
        """Write the last buffered bytes, commit, and make the rename durable — in one trip to
        a worker thread."""
        if rest:
            self.write(rest)
        self.commit()
        dirs.sync(self.final.parent)

    def commit(self) -> None:
        if self._fd is None:
            self.open()
        assert self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        crash.point("after_download_before_rename")
        kind = _not_regular(self.final, follow=False)
        if kind is not None:  # made since the path was checked: still never replaced
            raise DownloadError(f"output {self.final} exists and is {kind}, not a regular file; refusing to replace it",
                                permanent=True, code="bad_output_path")
        os.replace(self.tmp, self.final)
        self._done = True

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if not self._done:
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass


async def in_thread(fn: Callable[..., T], *args: Any, pool: Executor | None = None) -> T:
    """Run blocking file work (write, fsync, rename) off the event loop, on ``pool`` (default:
    the loop's). If the caller is cancelled meanwhile, still wait for the thread: the file must
    not be closed or unlinked under a thread that is writing or renaming it."""
    import asyncio  # loaded by the running loop already; not by `batchgen status`, which needs pid_alive only

    fut = asyncio.get_running_loop().run_in_executor(pool, fn, *args)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        await asyncio.wait({fut})
        raise


class DirSyncer:
    """Coalesces directory fsyncs (thread-safe; called from the worker thread that renamed).
    A rename is durable once its directory is fsynced *after* it; one fsync that starts after
    several renames covers them all, so thousands of files landing in one folder cost one
    directory fsync per batch instead of one per file."""

    def __init__(self) -> None:
        self._mu = threading.Lock()
        self._locks: dict[Path, threading.Lock] = {}
        self._requested: dict[Path, int] = {}
        self._synced: dict[Path, int] = {}

    def sync(self, directory: Path) -> None:
        with self._mu:
            mine = self._requested[directory] = self._requested.get(directory, 0) + 1
            lock = self._locks.setdefault(directory, threading.Lock())
        with lock:
            if self._synced.get(directory, 0) >= mine:
                return  # an fsync that started after our rename already covered it
            with self._mu:
                target = self._requested[directory]
            fsync_dir(directory)
            self._synced[directory] = max(self._synced.get(directory, 0), target)


def remove_stale_temp_files(out_dir: Path) -> int:
    """Temp files left by a killed process (``.name.host-pid-n.part``); they are never final files. Several workers
    may share ``out_dir`` (PostgreSQL ledger), so a temp file is only removed when its writer is known dead: this
    host and a pid that no longer exists, or no write for an hour (another host's leftover, or a pid reused since)."""
    if not out_dir.is_dir():
        return 0
    n, now = 0, time.time()
    for entry in _walk(out_dir):
        if not fnmatch.fnmatchcase(entry.name, ".*.part"):
            continue
        p = Path(entry.path)
        m = _TEMP_OWNER.search(p.name)
        try:
            dead_here = m is not None and m["host"] == _HOST and not pid_alive(int(m["pid"]))
            if not dead_here and now - p.stat().st_mtime < STALE_TEMP_AGE:
                continue
            p.unlink()
            n += 1
        except OSError:
            pass
    return n


def _walk(root: Path) -> Iterator[os.DirEntry[str]]:
    """Every file below ``root`` (not following symlinked folders), streamed: a folder of a
    million clips is never listed whole (Path.rglob listed each folder first: 240 MB there)."""
    folders = [os.fspath(root)]
    while folders:
        try:
            listing = os.scandir(folders.pop())
        except OSError:
            continue
        with listing:
            for entry in listing:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
                        continue
                except OSError:
                    continue
                yield entry


_TEMP_OWNER = re.compile(r"\.(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-\d+\.part$")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    return True
