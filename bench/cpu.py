"""CPU of a command and of every process it started, orphans included: ``python bench/cpu.py CMD...``
prints ``CPU_S WALL_S rc=CODE`` on stderr (the command's own output passes through).

``/usr/bin/time`` and ``PYTEST_CPU_LOG`` (tests/conftest.py) count the processes their command
waited for, and nothing else: not a process another one reaps, nor one left to outlive its parent.
The verification workers are both kinds (issue 28): forked and reaped by the run's fork server
(``media._Server``), which itself outlives the run by a moment and is never waited for. So
this runs the command as a child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``: orphaned
descendants are re-parented here), waits for every descendant to end, and reads the CPU of all
of them. How the figures of the verification pool in DEVELOPERS.md were taken, e.g.::

    python3 bench/cpu.py .venv/bin/python -m pytest -m "not slow" -n 2 -q -p no:cacheprovider
"""

from __future__ import annotations

import ctypes
import os
import resource
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed (Linux only)")
    start = time.monotonic()
    code = subprocess.call(argv)
    wall = time.monotonic() - start
    while True:  # the orphans, re-parented here: each waited for, so its CPU is counted
        try:
            os.wait()
        except ChildProcessError:
            break
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"{used.ru_utime + used.ru_stime:.3f} {wall:.2f} rc={code}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
