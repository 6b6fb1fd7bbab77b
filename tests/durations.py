"""Each test's expected seconds, for the order in which xdist hands out work (tests/conftest.py,
``pytest_collection_modifyitems``): the longest units first, so that they start at once and
never end the run alone on one worker while the others are done.

``durations.json`` beside this file holds the seconds of every test that took at least
``KEEP_FROM`` seconds (setup, call and teardown, wall time, on a worker of the README's
``-n 4``), rounded; any other test is counted ``FAST`` seconds, or ``SLOW`` if it is marked
``slow`` (a new slow test is not known yet, and is scheduled early rather than late). The
figures only order the work: a stale or missing entry makes the run slower, never wrong.

Refresh it after adding or changing long tests (DEVELOPERS.md, "Parallel workers")::

    rm -rf /tmp/cpu && PYTEST_CPU_LOG=/tmp/cpu .venv/bin/python -m pytest
    .venv/bin/python tests/durations.py /tmp/cpu
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

FILE = Path(__file__).resolve().with_name("durations.json")
KEEP_FROM = 0.5  # seconds; the ~1,800 shorter tests average 0.05 s
FAST = 0.05
SLOW = 5.0


@functools.cache
def known() -> dict[str, float]:
    """Test id (without xdist's ``@group`` suffix) → seconds; {} without the file."""
    try:
        return {k: float(v) for k, v in json.loads(FILE.read_text()).items()}
    except (OSError, ValueError):
        return {}


def expected(nodeid: str, slow: bool) -> float:
    return known().get(nodeid, SLOW if slow else FAST)


def _without_group(nodeid: str) -> str:
    """A logged id without the ``@group`` xdist appends (its own rule: after any ``]``)."""
    at = nodeid.rfind("@")
    return nodeid[:at] if at > nodeid.rfind("]") else nodeid


def from_cpu_log(folder: Path) -> dict[str, float]:
    """The walls of a ``PYTEST_CPU_LOG`` folder (tests/conftest.py: CPU s, wall s, test id per
    line, one file per worker), the tests of at least ``KEEP_FROM`` seconds, longest first."""
    walls: dict[str, float] = {}
    for log in sorted(folder.glob("*.tsv")):
        for line in log.read_text().splitlines():
            _cpu, wall, nodeid = line.split("\t", 2)
            if nodeid.startswith("tests/") and float(wall) >= KEEP_FROM:
                walls[_without_group(nodeid)] = float(wall)
    return {k: round(v, 1) for k, v in sorted(walls.items(), key=lambda kv: (-kv[1], kv[0]))}


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit(f"usage: {sys.argv[0]} PYTEST_CPU_LOG_FOLDER")
    table = from_cpu_log(Path(sys.argv[1]))
    FILE.write_text(json.dumps(table, indent=0) + "\n")
    print(f"{FILE}: {len(table)} tests of {KEEP_FROM} s or more, {sum(table.values()):.0f} s in all")
