"""Running a manifest: the library's front door.

``run(manifest, …)`` does everything ``batchgen run`` does and returns a ``RunResult``: it opens
the ledger, validates and records the manifest (``prepare``), starts the embedded simulator when
asked, opens the HTTP client, installs the signal handlers and drives the scheduler
(``execute``). The command line is a thin layer over it; so are the benchmarks.

One module per step: ``preparation`` (``prepare``, before the event loop: validate and record),
``execution`` (``execute``: drive a prepared run against an ``Api`` and summarise it) and
``wiring`` (``run``, ``demo``, ``serve_simulator``: opens what the steps use; the program's only
``asyncio.run``). This module only re-exports what callers import.
"""

from __future__ import annotations

from ..client import DEFAULT_API_BASE
from .execution import RunResult, execute
from .preparation import OutputChecks, Prepared, api_identity, prepare
from .wiring import demo, run, serve_simulator

__all__ = ["DEFAULT_API_BASE", "OutputChecks", "Prepared", "RunResult", "api_identity", "demo", "execute", "prepare",
           "run", "serve_simulator"]
