"""Output files: containment inside ``--out``, atomic writes (temp, fsync, rename, fsync dir),
and the checks a downloaded video must pass before it reaches its final path."""

from __future__ import annotations

import asyncio
import hashlib
import os
import itertools
import re
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from . import crash

MP4_BRANDS_BOX = b"ftyp"
T = TypeVar("T")
_temp_ids = itertools.count()
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"
STALE_TEMP_AGE = 3600.0  # a temp file nobody wrote to for an hour belongs to no live download


def resolve_inside(out_dir: str | os.PathLike[str], relative: str) -> Path:
    """Final path of ``relative`` under ``out_dir``; refuses anything that would land outside it
    (``..``, absolute paths, or a symlinked folder pointing elsewhere)."""
    root = Path(out_dir).resolve()
    if "\x00" in relative or os.path.isabs(relative):
        raise ValueError(f"output name {relative!r} is not a relative path")
    target = (root / relative).resolve()
    if root != target and root not in target.parents:
        raise ValueError(f"output name {relative!r} escapes the output directory {root}")
    return target


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
        return parent / name


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
    """Temp files left by a killed process (``.name.host-pid-n.part``); they are never final
    files. Several workers may share ``out_dir`` (PostgreSQL ledger), so a temp file is only
    removed when its writer is known dead: this host and a pid that no longer exists, or no
    write for an hour (another host's leftover, or a pid reused since)."""
    n = 0
    if not out_dir.is_dir():
        return 0
    now = time.time()
    for p in out_dir.rglob(".*.part"):
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
