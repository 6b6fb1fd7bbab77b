"""Output files: containment inside ``--out``, atomic writes (temp, fsync, rename, fsync dir),
and the checks a downloaded video must pass before it reaches its final path."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from types import TracebackType

from . import crash

MP4_BRANDS_BOX = b"ftyp"


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
    the final path. Leaving the block without ``commit()`` (any error, a cancel) removes the temp
    file, so a final path only ever holds a complete, verified file."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.part")
        self.size = 0
        self.sha256 = hashlib.sha256()
        self.head = b""
        self._fd: int | None = None
        self._done = False

    def __enter__(self) -> AtomicFile:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        return self

    def write(self, chunk: bytes) -> None:
        assert self._fd is not None
        if len(self.head) < 64:
            self.head += chunk[: 64 - len(self.head)]
        view = memoryview(chunk)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.size += len(chunk)
        self.sha256.update(chunk)

    def commit(self) -> None:
        assert self._fd is not None
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = None
        crash.point("after_download_before_rename")
        os.replace(self.tmp, self.final)
        self._done = True
        fsync_dir(self.final.parent)

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if not self._done:
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass


def remove_stale_temp_files(out_dir: Path) -> int:
    """Temp files left by a killed process (``.name.xxxx.part``); they are never final files."""
    n = 0
    if not out_dir.is_dir():
        return 0
    for p in out_dir.rglob(".*.part"):
        try:
            p.unlink()
            n += 1
        except OSError:
            pass
    return n
