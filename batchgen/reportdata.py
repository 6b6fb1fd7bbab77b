"""The report's embedded data, streamed: per-field comparison columns kept as flat arrays, and
the JSON document gzipped and base64-encoded through temporary files, so that a report of a
million jobs needs the memory of a few thousand (``report.render`` writes the rows).

The bytes are those of ``gzip.compress(json.dumps(doc, ensure_ascii=False,
separators=(",", ":")).encode(), compresslevel=6, mtime=0)``, base64-encoded: the page's
script reads one gzip member of one JSON document, as it always did."""

from __future__ import annotations

import base64
import gzip
import json
import struct
import zlib
from array import array
from collections.abc import Callable
from typing import IO, Any

from .manifest.seen import Seen

COMPARE_MAX_VALUES = 12  # a field offered for comparison has 2..12 distinct values
_LEVEL = 6
_U64 = (1 << 64) - 1
_CHUNK = 3 << 16  # a multiple of 3: base64 of consecutive chunks is base64 of the whole
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def json_bytes(value: Any) -> bytes:
    """``value`` as the page's JSON (compact, UTF-8)."""
    return _ENCODE(value).encode()


class CompareFields:
    """For each request field (and ``model``, ``take``): each job's group (a hash of its request
    without the field) and its value, as arrays indexed by job; and each field's distinct values
    (up to one more than can be compared, as the page's field list needs)."""

    def __init__(self, compare: str | None) -> None:
        self.compare = compare
        self.distinct: dict[str, set[str]] = {}
        self._hashes: dict[str, array[int]] = {}
        self._ids: dict[str, array[int]] = {}  # index into _values[field]; -1: the job has no such field
        self._values: dict[str, dict[str, int]] = {}
        self._dropped: set[str] = set()

    def add(self, field: str, job: int, group: int, value: str) -> None:
        """Job number ``job`` (0, 1, … in order) has ``field`` = ``value`` in group ``group``."""
        seen = self.distinct.setdefault(field, set())
        if len(seen) <= COMPARE_MAX_VALUES:
            seen.add(value)
        if field in self._dropped:
            return
        if field not in self._ids:  # jobs before this one had no such field
            self._hashes[field] = array("q", [0]) * job
            self._ids[field] = array("i", [-1]) * job
            self._values[field] = {}
        values = self._values[field]
        vid = values.setdefault(value, len(values))
        if len(values) > COMPARE_MAX_VALUES and field != self.compare:
            self._dropped.add(field)  # never comparable now: its columns are not kept
            del self._hashes[field], self._ids[field], self._values[field]
            return
        self._hashes[field].append(group)
        self._ids[field].append(vid)

    def pad(self, jobs: int) -> None:
        """Fields the last job did not have: no value for it."""
        for field, ids in self._ids.items():
            if len(ids) < jobs:
                ids.append(-1)
                self._hashes[field].append(0)

    def comparable(self) -> list[str]:
        return sorted(f for f, vs in self.distinct.items()
                      if f == self.compare or 2 <= len(vs) <= COMPARE_MAX_VALUES)

    def write_column(self, field: str, strings: Callable[[str | None], int | str | None], out: IO[bytes]) -> None:
        """``"field":{"g":[group ids],"v":[string-table ids]}``: small group ids in order of first
        appearance, each value through ``strings`` (the page's string table) in job order."""
        hashes, ids = self._hashes[field], self._ids[field]
        names = list(self._values[field])
        # group hash → its id: a flat table sized once (a million jobs can be a million groups)
        groups = Seen(capacity=1 << max(12, (2 * len(ids)).bit_length()))

        def group(h: int) -> int:
            first = groups.add(h & _U64, groups.count)
            return groups.count - 1 if first is None else first[0]

        out.write(json_bytes(field) + b':{"g":[')
        self._write_list(out, (None if v < 0 else group(h) for h, v in zip(hashes, ids)))
        out.write(b'],"v":[')
        self._write_list(out, (None if v < 0 else strings(names[v] or "—") for v in ids))
        out.write(b"]}")

    @staticmethod
    def _write_list(out: IO[bytes], items: Any) -> None:
        chunk: list[str] = []
        first = True
        for x in items:
            chunk.append("null" if x is None else str(x) if type(x) is int else _ENCODE(x))
            if len(chunk) >= 10000:
                out.write((b"" if first else b",") + ",".join(chunk).encode())
                chunk, first = [], False
        if chunk:
            out.write((b"" if first else b",") + ",".join(chunk).encode())


class Packed:
    """One gzip member (level 6, mtime 0) written as it comes, to a temporary file, then copied
    out base64-encoded."""

    def __init__(self, spool: IO[bytes]) -> None:
        self._out = spool
        # The header gzip.compress writes (its OS byte differs between Python versions).
        self._out.write(gzip.compress(b"", compresslevel=_LEVEL, mtime=0)[:10])
        self._z = zlib.compressobj(_LEVEL, zlib.DEFLATED, -15)
        self._crc = 0
        self._size = 0

    def write(self, data: bytes) -> None:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self._out.write(self._z.compress(data))

    def copy(self, src: IO[bytes]) -> None:
        """Everything ``src`` holds (a temporary file, read from its start), then closes it."""
        with src:
            src.seek(0)
            while chunk := src.read(_CHUNK):
                self.write(chunk)

    def finish(self) -> None:
        self._out.write(self._z.flush() + struct.pack("<LL", self._crc, self._size & 0xFFFFFFFF))

    def write_base64(self, out: IO[str]) -> int:
        """Write the member base64-encoded to ``out``; returns the characters written."""
        written = 0
        with self._out as src:
            src.seek(0)
            while chunk := src.read(_CHUNK):
                text = base64.b64encode(chunk).decode()
                out.write(text)
                written += len(text)
        return written
