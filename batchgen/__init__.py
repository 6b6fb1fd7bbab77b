"""batchgen: crash-safe batch runner for paid asynchronous video-generation APIs.

The library behind the ``batchgen`` command::

    import batchgen

    result = batchgen.run("shots.yaml", out_dir="renders", ledger="nightly.db")
    print(result.exit_code, result.counts)            # 0 {'done': 12} when all went well
    for row in batchgen.operations.results("nightly.db"):
        print(row["name"], row["state"], row["output_path"])

``run`` submits, polls and downloads a manifest (resuming what an earlier run left);
``operations`` holds plan/status/resolve/stop/cancel/export/report as functions returning plain
data. Heavy modules (aiohttp, the scheduler, the simulator) load on first use, so importing
``batchgen`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from . import audit, media, operations
    from .client import Api, Secret, TaskInfo
    from .cost import PriceTable
    from .errors import (
        ApiError, BatchgenError, DataFileError, DownloadError, ErrorClass, LedgerBusy, LedgerError, LedgerMissing,
        LedgerOutdated, ManifestError, NotALedger, Problem, UsageError,
    )
    from .jobs import Job, JobRow, JobState, RunStatus, job_key, request_sha256, short_key
    from .ledger import Ledger
    from .manifest import Manifest
    from .runner import Prepared, RunResult, execute, prepare, run
    from .scheduler import RunOptions
    from .simulator import SimConfig, Simulator

# name → module that defines it (PEP 562 lazy attributes)
_EXPORTS = {
    "audit": "", "media": "", "operations": "", "Api": "client", "Secret": "client", "TaskInfo": "client", "PriceTable": "cost",
    "ApiError": "errors", "BatchgenError": "errors", "DownloadError": "errors", "ErrorClass": "errors",
    "LedgerBusy": "errors", "LedgerError": "errors", "LedgerMissing": "errors", "ManifestError": "errors",
    "DataFileError": "errors", "LedgerOutdated": "errors", "NotALedger": "errors",
    "Problem": "errors", "UsageError": "errors", "Job": "jobs", "JobRow": "jobs", "JobState": "jobs",
    "RunStatus": "jobs", "job_key": "jobs", "request_sha256": "jobs", "short_key": "jobs", "Ledger": "ledger", "Manifest": "manifest",
    "Prepared": "runner", "RunResult": "runner", "execute": "runner", "prepare": "runner", "run": "runner",
    "RunOptions": "scheduler", "SimConfig": "simulator", "Simulator": "simulator",
}
__all__ = [
    "Api", "ApiError", "BatchgenError", "DataFileError", "DownloadError", "ErrorClass", "Job", "JobRow", "JobState", "Ledger",
    "LedgerBusy", "LedgerError", "LedgerMissing", "LedgerOutdated", "Manifest", "ManifestError", "NotALedger", "Prepared", "PriceTable", "Problem",
    "RunOptions", "RunResult", "RunStatus", "Secret", "SimConfig", "Simulator", "TaskInfo", "UsageError",
    "__version__", "audit", "execute", "media", "job_key", "operations", "prepare", "request_sha256", "run", "short_key",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'batchgen' has no attribute {name!r}")
    mod = importlib.import_module(f"{__name__}.{module or name}")
    value = mod if not module else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
