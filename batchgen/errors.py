"""One exception tree for batchgen; lower-library errors are translated into it at one boundary each
(``client`` for aiohttp, ``ledger`` for SQLAlchemy and the database drivers, ``manifest`` for
YAML/CSV). The command line maps ``exit_code`` to the process's exit status in one handler::

    BatchgenError                 exit 1
    ├── UsageError                exit 2   bad option or argument
    ├── ManifestError             exit 2   every problem of a manifest, each with file/row/field
    │   └── DataFileError         exit 2   every problem of a models file or price table, each with file/line/column
    ├── OutputRefused             exit 2   a file to write names no place for one (a device, FIFO,
    │                                      folder or socket; a missing folder; outside --out)
    ├── OutputFailed              exit 7   the file system refused to write a file (read-only, permission, full)
    ├── LedgerError               exit 7   the ledger cannot be used (read-only, locked, corrupt, full disk…)
    │   ├── LedgerMissing         exit 2   a command that only reads named a ledger that does not exist
    │   ├── NotALedger            exit 2   the database is another application's (no batchgen tables)
    │   ├── LedgerOutdated        exit 2   a read-only command found an older (or newer) ledger schema
    │   ├── LedgerDamaged         exit 7   a SQLite ledger's file is not whole (cut short, overwritten,
    │   │                                  empty, a write-ahead log of another database): never written to
    │   └── LedgerBusy            exit 5   another run holds this SQLite ledger
    ├── ApiError                  (classified by ErrorClass; a run turns it into job states)
    └── DownloadError             (a result file could not be fetched or failed its checks)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


# Exit codes of `batchgen run` (documented in its --help and the README).
EXIT_OK = 0
EXIT_FAILED = 1  # some jobs failed or are in doubt
EXIT_USAGE = 2  # bad input / usage
EXIT_UNFINISHED = 3  # stopped (signal, stop, retries exhausted, timeout, credit cap, full disk) early
EXIT_NO_FUNDS = 4  # 402 insufficient balance: submission stopped, paid tasks still collected
EXIT_LEDGER_BUSY = 5  # another run holds the ledger
EXIT_KEY_REFUSED = 6  # 401: the API refused the key
EXIT_ENVIRONMENT = 7  # the ledger cannot be used: missing folder, read-only, locked, corrupt, disk full
EXIT_DELIVERY = 8  # --deliver: the destination refused (credentials, missing bucket) or clips are still undelivered
EXIT_INTERRUPTED = 130  # a second SIGINT/SIGTERM (or one before the run's loop could drain): ended at once
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: stdout's reader went away (`batchgen export | head`)

# What each exit code means, in words (notifications, metrics help).
EXIT_MEANINGS = {
    EXIT_OK: "every job of the manifest is done",
    EXIT_FAILED: "some jobs failed or are in doubt, or a clip is not what was asked",
    EXIT_USAGE: "bad input or usage: nothing was submitted",
    EXIT_UNFINISHED: "stopped before every job finished: re-run to resume",
    EXIT_NO_FUNDS: "the balance is too low (HTTP 402): submission stopped",
    EXIT_LEDGER_BUSY: "another run holds the ledger",
    EXIT_KEY_REFUSED: "the API refused the key (HTTP 401)",
    EXIT_ENVIRONMENT: "the ledger or a file cannot be used",
    EXIT_DELIVERY: "clips are rendered and kept locally but not all delivered to object storage",
    EXIT_INTERRUPTED: "interrupted (a second Ctrl-C or SIGTERM): ended at once — re-run to resume",
    EXIT_BROKEN_PIPE: "the reader of stdout went away (a pipe into `head`): the rest of the output was not written",
}


class BatchgenError(Exception):
    """Base of every error batchgen raises on purpose."""

    exit_code = 1
    run_started = False  # set when a run had begun submitting (a notification words it so)


class UsageError(BatchgenError):
    exit_code = 2


@dataclass
class Problem:
    """One thing wrong with the input: where it is and what is wrong."""

    file: str
    where: str  # "row 12", "line 4", "jobs[3]" …
    field: str | None
    message: str

    def __str__(self) -> str:
        loc = f"{self.file}: {self.where}"
        if self.field:
            loc += f", field '{self.field}'"
        return f"{loc}: {self.message}"


class ManifestError(BatchgenError):
    """Bad input; carries every problem found so the user fixes them all in one go."""

    exit_code = 2
    subject = "the manifest"  # what has the problems, for the heading of the list

    def __init__(self, problems: list[Problem], *, truncated: int = 0) -> None:
        self.problems = problems
        self.truncated = truncated
        lines = [str(p) for p in problems]
        if truncated:
            lines.append(f"… and {truncated} more problem(s)")
        super().__init__("\n".join(lines))


class DataFileError(ManifestError):
    """A models file (``--models``, a manifest's ``models:``) or a price table (``--prices``)
    that cannot be used: every problem found, each with its file, line and column."""

    def __init__(self, problems: list[Problem], *, subject: str = "the models file", truncated: int = 0) -> None:
        super().__init__(problems, truncated=truncated)
        self.subject = subject


class DecisionsFileError(ManifestError):
    """A decisions CSV (``batchgen review --from``) that cannot be applied: every problem, each
    with its line and field; nothing was recorded."""

    subject = "the decisions file"


class RetakeError(ManifestError):
    """Retakes whose changed request fields the catalog refuses (``batchgen retake``): every
    problem, each naming the clip and the field; nothing was queued."""

    subject = "the retakes"


class OutputRefused(UsageError):
    """A file batchgen was asked to write (export -o, report -o, --report, --metrics-file, a clip
    or picture under --out) names no place for a regular file: the target exists and is a
    device, FIFO, folder or socket, its folder does not exist, or it resolves outside --out.
    Nothing was written or replaced."""


class OutputFailed(BatchgenError):
    """The file system refused to write a file batchgen was asked to write (read-only file
    system, permission denied, disk full, I/O error). Nothing was written or replaced."""

    exit_code = EXIT_ENVIRONMENT


class LedgerError(BatchgenError):
    """The ledger cannot be opened, read or written; the message names the ledger and the cause."""

    exit_code = EXIT_ENVIRONMENT


class LedgerMissing(LedgerError):
    """A command that only reads was pointed at a ledger that does not exist."""

    exit_code = EXIT_USAGE


class NotALedger(LedgerError):
    """The database has no batchgen tables (another application's): never changed, refused."""

    exit_code = EXIT_USAGE


class LedgerOutdated(LedgerError):
    """A command that never migrates found a ledger of another schema version: the message says
    to run `batchgen db upgrade` (older) or to use a newer batchgen (newer)."""

    exit_code = EXIT_USAGE


class LedgerDamaged(LedgerError):
    """A SQLite ledger's file is damaged: cut short, pages overwritten, empty, or a write-ahead
    log that belongs to another database. Found before anything writes to it (refused, left
    byte for byte) or when a query reaches a damaged page; the one line names the file and says
    what to do (restore a backup, or salvage it with the SQLite shell's ``.recover``)."""


class LedgerBusy(LedgerError):
    """Another process holds the ledger's writer lock."""

    exit_code = EXIT_LEDGER_BUSY


class DecisionChanged(BatchgenError):
    """A review change made on condition that a clip's latest decision is still the one it
    names (an undo) found another decision recorded since: nothing of that change was written."""

    def __init__(self, job_id: int, reviewer: str | None, verdict: str | None) -> None:
        super().__init__(f"job {job_id}: {reviewer} decided {verdict or 'pending'} since; not undone" if reviewer
                         else f"job {job_id}: has no decision to undo; not undone")
        self.job_id = job_id


class DeliveryError(BatchgenError):
    """The delivery destination cannot be used (credentials refused, bucket missing, store
    unreachable) or refused one object. ``fatal``: nothing more can be delivered this run."""

    exit_code = EXIT_DELIVERY

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


class ErrorClass(enum.Enum):
    """How a failed request may be retried. See ``client.classify`` (batchgen/client/classify.py) for the table."""

    SAFE = "safe"  # nothing was done remotely: retry with backoff
    AMBIGUOUS = "ambiguous"  # a create may or may not exist: never retry automatically
    FATAL = "fatal"  # this job cannot succeed as is
    FATAL_RUN = "fatal_run"  # nothing can succeed (401) – stop the run
    NO_FUNDS = "no_funds"  # 402: stop submitting, keep polling what is paid for
    CONFIG = "config"  # the configuration is unusable (a bad API URL): nothing was sent, stop the run


class ApiError(BatchgenError):
    def __init__(
        self,
        klass: ErrorClass,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        unreachable: str | None = None,
    ) -> None:
        super().__init__(message)
        self.klass = klass
        self.status = status
        self.code = code
        self.retry_after = retry_after
        # No HTTP answer came back: why, in words ("connection refused by api.example:443",
        # "DNS lookup failed", "TLS handshake failed", "timed out"). None when the API answered.
        self.unreachable = unreachable

    def __repr__(self) -> str:
        return f"ApiError({self.klass.value}, status={self.status}, code={self.code!r}, {self.args[0]!r})"


class DownloadError(BatchgenError):
    """A result file could not be fetched or failed verification.

    ``permanent`` marks failures retrying cannot fix (refused URL, expired link)."""

    def __init__(self, message: str, *, permanent: bool = False, code: str = "download_failed") -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code
