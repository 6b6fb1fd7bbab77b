"""``Ledger``: the one object callers open. It holds the rooms of this package and only
delegates to them; each method below names the room that owns it.

Every public method raises only ``LedgerError`` for database, driver and file-system failures:
the rooms are ``error_boundary`` classes (``Room`` applies it to every subclass), and so is
this facade, so a method added later to either is covered."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Concatenate, Generic, ParamSpec, TypeVar, overload

from sqlalchemy import Engine

from .boundary import error_boundary
from .database import Database
from .breakers import BreakerBoard
from .deadlines import Deadlines
from .decisions import Decisions
from .leases import Leases
from .reads import Reads
from .recording import Recorder
from .records import Records
from .runs import Runs
from .transitions import Transitions

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class _Forward(Generic[T, P, R]):
    """A facade method that calls the method of the same name on one room (an attribute of
    the facade), with that method's exact signature for the type checker."""

    def __init__(self, room: str, method: Callable[Concatenate[T, P], R]) -> None:
        self.room = room
        self.name = method.__name__
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, obj: None, owner: type) -> _Forward[T, P, R]: ...
    @overload
    def __get__(self, obj: object, owner: type) -> Callable[P, R]: ...

    def __get__(self, obj: object | None, owner: type) -> _Forward[T, P, R] | Callable[P, R]:
        if obj is None:
            return self
        bound: Callable[P, R] = getattr(getattr(obj, self.room), self.name)
        return bound


@error_boundary
class Ledger:
    """The ledger at ``url`` (see ``ledger_url``), migrated to the current schema on open.
    ``create=False`` (what commands that only read use) refuses a ledger that does not exist
    (``LedgerMissing``) instead of creating an empty one; ``readonly`` opens it so that nothing
    can be written. Every public method raises ``LedgerError`` for database, driver and
    file-system failures (``error_boundary``)."""

    def __init__(self, url: str | None = None, *, migrate: bool = True, create: bool = True,
                 simulated: bool = False, readonly: bool = False) -> None:
        self.database = Database(url, migrate=migrate, create=create, simulated=simulated, readonly=readonly)
        self._safe_url = self.database.safe_url
        self.run_log = Runs(self.database)
        self.recorder = Recorder(self.database)
        self.transitions = Transitions(self.database)
        self.leases = Leases(self.database)
        self.records = Records(self.database)
        self.reads = Reads(self.database)
        self.decisions = Decisions(self.database)
        self.breakers = BreakerBoard(self.database)
        self.deadlines = Deadlines(self.database)

    # ------------------------------------------------------------ the open database (database.py)
    @property
    def url(self) -> str:
        return self.database.url

    @property
    def engine(self) -> Engine:
        return self.database.engine

    @property
    def is_sqlite(self) -> bool:
        return self.database.is_sqlite

    @property
    def path(self) -> Path | None:
        """The ledger's file (SQLite), for files kept beside it; None for a server database."""
        return self.database.path

    @property
    def created(self) -> bool:
        """This open made a new, empty ledger."""
        return self.database.created

    @property
    def upgraded_from(self) -> str | None:
        """The schema revision this open migrated the ledger from (None: it did not migrate)."""
        return self.database.upgraded_from

    @property
    def cooperative(self) -> bool:
        """Any number of workers share it (PostgreSQL); a SQLite ledger has one run at a time."""
        return self.database.cooperative

    @property
    def readonly(self) -> bool:
        return self.database.readonly

    def __repr__(self) -> str:
        return f"Ledger({self._safe_url!r})"

    def __str__(self) -> str:
        """The file's path (SQLite) or the URL without its password: for messages."""
        return str(self.database)

    def close(self) -> None:
        self.database.close()

    acquire_lock = _Forward("database", Database.acquire_lock)
    release_lock = _Forward("database", Database.release_lock)
    check_integrity = _Forward("database", Database.check_integrity)

    # ------------------------------------------------------------ runs (runs.py)
    start_run = _Forward("run_log", Runs.start_run)
    finish_run = _Forward("run_log", Runs.finish_run)
    request_stop = _Forward("run_log", Runs.request_stop)
    stop_requested = _Forward("run_log", Runs.stop_requested)
    close_dead_runs = _Forward("run_log", Runs.close_dead_runs)
    reap_dead_runs = _Forward("run_log", Runs.reap_dead_runs)
    last_success = _Forward("run_log", Runs.last_success)
    runs = _Forward("run_log", Runs.runs)
    run = _Forward("run_log", Runs.run)
    last_run_of = _Forward("run_log", Runs.last_run_of)

    # ------------------------------------------------------------ a manifest's jobs (recording.py)
    record_run = _Forward("recorder", Recorder.record_run)
    reuse_run = _Forward("recorder", Recorder.reuse_run)
    upsert_jobs = _Forward("recorder", Recorder.upsert_jobs)
    record_retakes = _Forward("recorder", Recorder.record_retakes)

    # ------------------------------------------------------------ job state (transitions.py)
    apply = _Forward("transitions", Transitions.apply)
    orphans_to_in_doubt = _Forward("transitions", Transitions.orphans_to_in_doubt)
    requeue_retryable_failures = _Forward("transitions", Transitions.requeue_retryable_failures)
    cancel_queued = _Forward("transitions", Transitions.cancel_queued)

    # ------------------------------------------------------------ cooperative workers (leases.py)
    heartbeat = _Forward("leases", Leases.heartbeat)
    live_workers = _Forward("leases", Leases.live_workers)
    fleet_rate = _Forward("leases", Leases.fleet_rate)
    reserve_credits = _Forward("leases", Leases.reserve_credits)
    return_credits = _Forward("leases", Leases.return_credits)
    claim = _Forward("leases", Leases.claim)
    requeue_within_limit = _Forward("leases", Leases.requeue_within_limit)
    reclaim = _Forward("leases", Leases.reclaim)
    release = _Forward("leases", Leases.release)
    held = _Forward("leases", Leases.held)
    pending_elsewhere = _Forward("leases", Leases.pending_elsewhere)
    let_go = _Forward("leases", Leases.let_go)

    # ------------------------------------------------------------ verification, delivery, uploads (records.py)
    owe_delivery = _Forward("records", Records.owe_delivery)
    upload_url = _Forward("records", Records.upload_url)
    record_upload = _Forward("records", Records.record_upload)
    unverified = _Forward("records", Records.unverified)
    undelivered = _Forward("records", Records.undelivered)
    sheets_left = _Forward("records", Records.sheets_left)
    unpruned = _Forward("records", Records.unpruned)
    lost_candidates = _Forward("records", Records.lost_candidates)
    delivery_counts = _Forward("records", Records.delivery_counts)
    delivery_problems = _Forward("records", Records.delivery_problems)
    delivered_not_approved = _Forward("records", Records.delivered_not_approved)
    not_as_asked = _Forward("records", Records.not_as_asked)
    verify_counts = _Forward("records", Records.verify_counts)

    # ------------------------------------------------------------ reads of jobs (reads.py)
    job = _Forward("reads", Reads.job)
    jobs_in_state = _Forward("reads", Reads.jobs_in_state)
    queued_page = _Forward("reads", Reads.queued_page)
    queued_models = _Forward("reads", Reads.queued_models)
    render_history = _Forward("reads", Reads.render_history)
    active_jobs = _Forward("reads", Reads.active_jobs)
    unfinished = _Forward("reads", Reads.unfinished)
    expiring = _Forward("reads", Reads.expiring)
    counts = _Forward("reads", Reads.counts)
    scope_counts = _Forward("reads", Reads.scope_counts)
    states_by_key = _Forward("reads", Reads.states_by_key)
    manifest_members = _Forward("reads", Reads.manifest_members)
    foreign_tasks = _Forward("reads", Reads.foreign_tasks)
    iter_export = _Forward("reads", Reads.iter_export)
    knows_manifest = _Forward("reads", Reads.knows_manifest)
    events_for = _Forward("reads", Reads.events_for)
    known_task_ids = _Forward("reads", Reads.known_task_ids)

    # ------------------------------------------------------------ review decisions (decisions.py)
    decide = _Forward("decisions", Decisions.decide)
    latest_decisions = _Forward("decisions", Decisions.latest_decisions)
    decision_history = _Forward("decisions", Decisions.decision_history)
    verdict_counts = _Forward("decisions", Decisions.verdict_counts)
    takes_of = _Forward("decisions", Decisions.takes_of)
    pending_retakes = _Forward("decisions", Decisions.pending_retakes)
    retake_candidates = _Forward("decisions", Decisions.retake_candidates)
    retakes_of = _Forward("decisions", Decisions.retakes_of)
    outputs_in_use = _Forward("decisions", Decisions.outputs_in_use)

    # ------------------------------------------------------------ breakers per model (breakers.py)
    trip_breaker = _Forward("breakers", BreakerBoard.trip_breaker)
    close_breaker = _Forward("breakers", BreakerBoard.close_breaker)
    open_breakers = _Forward("breakers", BreakerBoard.open_breakers)
    take_probe = _Forward("breakers", BreakerBoard.take_probe)

    # ------------------------------------------------------------ a night's deadline (deadlines.py)
    set_finish_by = _Forward("deadlines", Deadlines.set_finish_by)
    fleet_finish_by = _Forward("deadlines", Deadlines.fleet_finish_by)
    pending_by_model = _Forward("deadlines", Deadlines.pending_by_model)
    queued_of = _Forward("deadlines", Deadlines.queued_of)
    give_back_probe = _Forward("breakers", BreakerBoard.give_back_probe)
