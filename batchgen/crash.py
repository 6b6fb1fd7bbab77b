"""Test-only crash points. ``BATCHGEN_CRASH_AT=name[:n]`` makes the process ``os._exit(137)``
(as a SIGKILL would) the n-th time (default 1st) execution reaches ``point(name)``. Unset, a
point is one dict lookup. The named points are listed in docs/design/reliability.md (crash
testing) and exercised by tests/test_crash_sweep.py."""

from __future__ import annotations

import os

_target: tuple[str, int] | None = None
_hits = 0
_loaded = False


def _load() -> None:
    global _target, _loaded
    _loaded = True
    spec = os.environ.get("BATCHGEN_CRASH_AT")
    if spec:
        name, _, n = spec.partition(":")
        _target = (name, int(n or "1"))


def point(name: str) -> None:
    global _hits
    if not _loaded:
        _load()
    if _target is None or _target[0] != name:
        return
    _hits += 1
    if _hits >= _target[1]:
        os._exit(137)
