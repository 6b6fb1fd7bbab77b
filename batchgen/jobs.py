"""The job vocabulary every module speaks: what a job is, how it is keyed, its states and the
moves between them, and the shape of its ledger row.

A job's life (one row in the ledger's ``jobs`` table, every move appended to ``events``)::

    queued → submitting → submitted → rendering → completed → done
                 │   (intent committed       (task id      (URL)    (file renamed into place,
                 │    before the POST)        committed)              sha256 + bytes recorded)
                 ├→ in_doubt   the create may or may not exist: never resubmitted automatically
                 └→ failed     with error code, message, and whether a retry could help

This module imports nothing else of batchgen: the manifest, the ledger, the scheduler and the
exports all build on it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NotRequired, TypedDict


class JobState(StrEnum):
    """A job's state in the ledger. Members are ``str``: they compare equal to, and are stored
    as, their plain names."""

    QUEUED = "queued"  # recorded, never created (or a create that was refused cleanly)
    SUBMITTING = "submitting"  # intent committed; the create may be on the wire
    SUBMITTED = "submitted"  # task id committed; the task is pending upstream
    RENDERING = "rendering"  # the API reports the task as processing
    COMPLETED = "completed"  # the task finished; its result URL (valid 24 h) is recorded
    DONE = "done"  # the file is in place, its sha256 recorded
    FAILED = "failed"  # with error code, message and whether a retry could help
    IN_DOUBT = "in_doubt"  # the create's outcome is unknowable: a human settles it
    CANCELLED = "cancelled"  # by an operator; never submitted again


class RunStatus(StrEnum):
    """A run's (a worker's, on PostgreSQL) status in the ledger's ``runs`` table."""

    RUNNING = "running"
    FINISHED = "finished"  # every job ended (done, failed, in doubt or cancelled)
    INTERRUPTED = "interrupted"  # stopped with work left: signal, `batchgen stop`, timeouts, caps
    STOPPED = "stopped"  # halted by the API: key refused (401) or balance too low (402)
    DIED = "died"  # the process vanished (kill -9, power loss, a worker's stale heartbeat)


class Verdict(StrEnum):
    """A reviewer's decision on a clip (``batchgen review``; ledger table ``decisions``). A clip
    with no verdict is *pending* review: pending is the absence of a decision, never stored."""

    APPROVE = "approve"  # keep it: delivered by `--deliver-only approved`
    RETAKE = "retake"  # render a new take of the same request (`batchgen retake`)
    REJECT = "reject"  # not wanted; never deleted from a store it already reached


S = JobState
STATES: tuple[JobState, ...] = tuple(JobState)
# A task exists upstream and work remains: poll it, download it, never create it again.
ACTIVE: frozenset[JobState] = frozenset({S.SUBMITTED, S.RENDERING, S.COMPLETED})
# Work a run still has to do (in_doubt is not here: it waits for a human, not for a run).
UNFINISHED: frozenset[JobState] = frozenset({S.QUEUED, S.SUBMITTING}) | ACTIVE
# Creates (paid tasks) a job may have, retries included: `run --max-attempts`' default; `plan`
# says a job past it needs the option raised too.
DEFAULT_MAX_ATTEMPTS = 3
TERMINAL: frozenset[JobState] = frozenset({S.DONE, S.FAILED, S.CANCELLED})

# Every move the ledger accepts. A move not listed here is a bug, refused when the transition
# is built (see ledger.Transition), long before it could reach the database.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    S.QUEUED: frozenset({S.SUBMITTING, S.FAILED, S.CANCELLED}),  # failed: a local input refused (413)
    # queued: the API refused the create cleanly (429, 503, 402), nothing was created
    S.SUBMITTING: frozenset({S.SUBMITTED, S.IN_DOUBT, S.FAILED, S.QUEUED}),
    S.SUBMITTED: frozenset({S.RENDERING, S.COMPLETED, S.FAILED}),
    S.RENDERING: frozenset({S.COMPLETED, S.FAILED}),
    S.COMPLETED: frozenset({S.DONE, S.FAILED}),
    # failed: the delivered clip is not what was asked (--on-mismatch fail); completed / queued:
    # `batchgen recover` of a clip whose file was lost (fetched again free / rendered again, paid)
    S.DONE: frozenset({S.FAILED, S.COMPLETED, S.QUEUED}),
    S.FAILED: frozenset({S.QUEUED}),  # --retry-failed: a new, separately paid create
    S.IN_DOUBT: frozenset({S.SUBMITTED, S.QUEUED, S.CANCELLED}),  # resolve: adopt / resubmit / abandon
    S.CANCELLED: frozenset(),
}


def allowed(before: str, after: str) -> bool:
    """Whether the ledger may move a job from ``before`` to ``after`` (staying put, to record
    more about the job, is always allowed)."""
    return before == after or after in TRANSITIONS.get(JobState(before), frozenset())


RESULT_TTL = 24 * 3600.0  # seconds a task's result URL lives after it completes (foxapi reference §1)


# A sha256 (a job's key, a file's digest) is stored in the ledger as its 32 raw bytes; callers
# read and write lowercase hex (schema.Digest, and raw driver SQL through these two).
def raw_digest(value: str | None) -> bytes | None:
    """The bytes stored for a hex digest (ValueError if it is not hex)."""
    return None if value is None else bytes.fromhex(value)


def hex_digest(value: bytes | memoryview | str | None) -> str | None:
    """The hex digest callers see for stored bytes. Text is read as it is: SQLite keeps what an
    older batchgen wrote into a ledger upgraded under it (before the upgrade waited for its run)."""
    if value is None or isinstance(value, str):
        return value
    return bytes(value).hex()


def short_key(key: str) -> str:
    """The 12 hex digits of a job key that people read, type and pass to ``resolve``."""
    return key[:12]


def plain(x: float | None, places: int = 4, *, sign: bool = False) -> str:
    """A number (credits, seconds) as people read it in a summary: at most ``places`` decimals,
    never scientific notation (4000000, not 4e+06), no float noise (a sum of estimates that
    came back to zero is 0, not -1.77636e-14), no trailing zeros. ``sign``: "+" for positives."""
    if x is None:
        return "?"
    if x != x or x in (float("inf"), float("-inf")):
        return str(x)  # nan/inf: say so rather than hide it
    text = f"{round(x, places):.{places}f}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    return f"+{text}" if sign and not text.startswith("-") and text != "0" else text


# One encoder for every call: json.dumps with non-default options builds a new one each time,
# which was a tenth of the per-row cost of expanding a large manifest.
canonical_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def job_key(request: dict[str, Any], take: str | None) -> str:
    """sha256 of ``{"request": <request>, "take": <take>}`` in canonical JSON (take omitted when
    None): the job's identity. Renaming or reordering rows keeps it; changing anything that
    changes the video does not."""
    return key_from_json(canonical_json(request), take)


def key_from_json(request_json: str, take: str | None) -> str:
    """``job_key`` for a request already in canonical JSON (the hot path of expansion)."""
    # Byte-identical to canonical_json({"request": request, "take": take}): "request" < "take".
    tail = "" if take is None else ',"take":' + canonical_json(take)
    return hashlib.sha256(('{"request":' + request_json + tail + "}").encode()).hexdigest()


def request_sha256(request: dict[str, Any]) -> str:
    """sha256 of a request body in canonical JSON: how an API's ground truth (the simulator's)
    names the request it received, so audits can tie creates to jobs."""
    return hashlib.sha256(canonical_json(request).encode()).hexdigest()


@dataclass(slots=True)
class Job:
    """A job as the manifest expands it, before the ledger has seen it."""

    key: str
    seq: int  # position in the expanded manifest: exports follow it
    name: str
    source: str  # "shots.csv row 12 (line 13)" – where the row came from, for humans
    model: str
    request: dict[str, Any]
    output: str  # relative path under --out
    take: str | None = None
    request_json: str = ""  # canonical JSON of ``request`` (what the ledger stores)
    # Higher is submitted first; equal priorities keep manifest order. Not part of the key: a
    # new priority never makes a new job (nor resubmits one).
    priority: int = 0
    retake_of: int | None = None  # `batchgen retake`: the job (id) whose clip this one replaces


class JobRow(TypedDict):
    """A job as the ledger stores it (``schema.jobs``), as every read returns it."""

    id: int
    key: str
    run_id: int
    seq: int
    name: str
    source: str
    model: str
    request: str  # canonical JSON
    output: str
    take: str | None
    priority: int
    retake_of: int | None  # `batchgen retake`: the job (id) whose clip this one replaces
    state: str  # a JobState value
    attempts: int
    task_id: str | None
    remote_status: str | None
    progress: int
    polls: int
    estimated_time: float | None
    result_url: str | None
    result_at: float | None
    output_path: str | None
    sha256: str | None
    bytes: int | None
    credits: float | None
    error_code: str | None
    error_message: str | None
    retryable: bool | None
    created_at: float
    submitted_at: float | None
    completed_at: float | None
    done_at: float | None
    updated_at: float
    worker_id: int | None
    api: str | None
    verify: str | None  # ok | mismatch | undecodable | missing | changed | unchecked (media.py)
    verify_detail: str | None
    m_duration: float | None
    m_width: int | None
    m_height: int | None
    m_fps: float | None
    m_codec: str | None
    m_audio: bool | None
    poster: str | None
    sheet: str | None
    verified_at: float | None
    delivered_url: str | None
    delivered_etag: str | None
    delivered_at: float | None
    delivery_error: str | None
    pruned_at: float | None
    deliver_to: str | None
    deliver_only: str | None  # "approved": owed only once a reviewer approved it (or it is its shot's pick)
    # The latest review decision (ledger/decisions.py), on the rows export and report read.
    review: NotRequired[str | None]  # a Verdict value; None: pending
    review_note: NotRequired[str | None]
    reviewer: NotRequired[str | None]
    pick: NotRequired[bool]  # this take is its shot's pick


__all__ = ["ACTIVE", "DEFAULT_MAX_ATTEMPTS", "Job", "JobRow", "JobState", "RunStatus", "STATES", "TERMINAL", "TRANSITIONS", "UNFINISHED", "Verdict", "allowed",
           "canonical_json", "hex_digest", "job_key", "key_from_json", "raw_digest", "request_sha256", "short_key"]
