"""Ledger tables (SQLAlchemy Core). Alembic migrations in ``alembic/versions`` create exactly
these; ``alembic check`` compares the two."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean, CheckConstraint, Column, Dialect, Float, ForeignKey, Index, Integer, LargeBinary, MetaData, String, Table,
    Text, TypeDecorator, false, text,
)

from .jobs import STATES, Verdict, hex_digest, raw_digest


class Digest(TypeDecorator[str]):
    """A sha256 (a job's key, a file's digest) stored as its 32 raw bytes (BLOB, bytea) instead
    of 64 hex characters: ~100 bytes a job with the key's unique index (issue 21, 0009). Callers
    bind and read lowercase hex strings, as before; raw driver SQL encodes with ``raw_digest``."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> bytes | None:
        return raw_digest(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return hex_digest(value)


metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

runs = Table(
    "runs", metadata,
    Column("id", Integer, primary_key=True),
    Column("manifest", Text, nullable=False),
    Column("manifest_sha256", String(64), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("status", String(16), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("jobs_total", Integer, nullable=False, server_default="0"),
    Column("options", Text, nullable=False, server_default="{}"),
    # Set by `batchgen stop` (any terminal or machine); the running scheduler drains on seeing it.
    Column("stop_requested", Boolean, nullable=False, server_default=false()),
    # PostgreSQL ledgers: every `batchgen run` process is a worker whose liveness is this
    # timestamp (the database server's clock, so machines need not agree on the time).
    Column("heartbeat_at", Float),
    # What `batchgen run` exited with (errors.EXIT_*); NULL while running or for runs that died.
    Column("exit_code", Integer),
    # --rpm auto on a cooperative ledger: the API key's request rate (per minute, all workers
    # together) this worker holds, written with its heartbeat; the fleet paces at the lowest.
    Column("rate_rpm", Float),
    # run --finish-by (0016): the deadline (epoch seconds) this run works to; on a PostgreSQL
    # fleet the earliest a live worker of the manifest holds binds every worker of it.
    Column("finish_by", Float),
    # --max-credits on a cooperative ledger (0017): workers running one manifest together are one
    # fleet (``fleet_id``: the id of its first worker's run), and the cap holds for the fleet's
    # creates: each worker adds the estimate of every create it sends to ``credits_committed``
    # (and takes back one that came to nothing) under a lock, against the fleet's sum.
    Column("fleet_id", Integer),
    Column("credits_committed", Float, nullable=False, server_default="0"),
)

jobs = Table(
    "jobs", metadata,
    Column("id", Integer, primary_key=True),
    Column("key", Digest, nullable=False, unique=True),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("name", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("model", String(100), nullable=False),
    # The request's canonical JSON; with a shape_id, only its text that the shape's marker stands
    # for (ledger/shapes.py). No foreign key: shapes are never deleted, and SQLite would check it
    # on every insert.
    Column("request", Text, nullable=False),
    Column("shape_id", Integer),
    Column("output", Text, nullable=False),
    Column("take", Text),
    # The manifest's `priority` (0011): queued jobs start highest first, then in manifest order.
    Column("priority", Integer, nullable=False, server_default="0"),
    # A retake (`batchgen retake`, 0012): the job whose clip a reviewer sent for a retake and that
    # this one replaces (a new take of the same request, or of the request as the reviewer edited
    # it). No foreign key: adding one would make SQLite rebuild the jobs table.
    Column("retake_of", Integer),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("task_id", String(100), unique=True),
    Column("remote_status", String(32)),
    Column("progress", Integer, nullable=False, server_default="0"),
    Column("polls", Integer, nullable=False, server_default="0"),
    Column("estimated_time", Float),
    Column("result_url", Text),
    Column("result_at", Float),
    Column("output_path", Text),
    Column("sha256", Digest),
    Column("bytes", Integer),
    Column("credits", Float),
    Column("error_code", String(100)),
    Column("error_message", Text),
    Column("retryable", Boolean),
    Column("created_at", Float, nullable=False),
    Column("submitted_at", Float),
    Column("completed_at", Float),
    Column("done_at", Float),
    Column("updated_at", Float, nullable=False),
    # The worker (a runs.id) holding the job's lease; valid while that run is `running` with a
    # fresh heartbeat. NULL on SQLite, where one process owns the whole ledger. No foreign key:
    # adding one would make SQLite rebuild the whole jobs table on upgrade.
    Column("worker_id", Integer),
    # The API the job's task was created on (`api_identity`: "simulator" for the embedded one,
    # else the base URL): a run against another API must not treat it as its own.
    Column("api", String(255)),
    # Verification of the delivered file (media.py): outcome ok | mismatch | undecodable |
    # missing | changed | unchecked, what differs, what was measured, and its pictures.
    Column("verify", String(16)),
    Column("verify_detail", Text),
    Column("m_duration", Float),
    Column("m_width", Integer),
    Column("m_height", Integer),
    Column("m_fps", Float),
    Column("m_codec", String(32)),
    Column("m_audio", Boolean),
    Column("poster", Text),
    Column("sheet", Text),
    Column("verified_at", Float),
    # Delivery to object storage (deliver.py): the object's URL and ETag once it is there with
    # this file's sha256, else the last reason it is not; pruned_at when the local copy was removed.
    Column("delivered_url", Text),
    Column("delivered_etag", String(100)),
    Column("delivered_at", Float),
    Column("delivery_error", Text),
    Column("pruned_at", Float),
    # Where the clip is owed (an s3:// URL, no credentials): set for every job of a manifest
    # that asks for delivery, done or not, so that a clip left undelivered is found by the next
    # run of any manifest containing it, or by `batchgen deliver`, whatever was edited since.
    Column("deliver_to", Text),
    # `--deliver-only approved` (0015): only a clip a reviewer approved (and, where its shot has a
    # pick, only the pick) is owed to ``deliver_to``; NULL: every finished clip is.
    Column("deliver_only", String(16)),
    CheckConstraint("state IN (" + ", ".join(f"'{s.value}'" for s in STATES) + ")", name="state"),
    Index("ix_jobs_state", "state"),
    Index("ix_jobs_run_id_seq", "run_id", "seq"),
    # The scheduler's feed (0011): a run's queued jobs, model by model, highest priority first,
    # then in manifest order. Partial: only queued jobs, so it empties as the night goes on.
    Index("ix_jobs_queued", "run_id", "model", "priority", "seq", sqlite_where=text("state = 'queued'"),
          postgresql_where=text("state = 'queued'")),
    # Partial: only leased jobs have a worker (never on SQLite), and lookups ask for one.
    Index("ix_jobs_worker_id", "worker_id", sqlite_where=text("worker_id IS NOT NULL"),
          postgresql_where=text("worker_id IS NOT NULL")),
)

events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, ForeignKey("jobs.id"), nullable=False),
    Column("at", Float, nullable=False),
    Column("from_state", String(16)),
    Column("to_state", String(16), nullable=False),
    Column("task_id", String(100)),
    Column("detail", Text),
    Index("ix_events_job_id", "job_id"),
    # No index on task_id (0009): nothing looks an event up by it; `audit` reads them all.
)

uploads = Table(
    # Local reference images, uploaded once and reused while their URL is fresh (keyed by content).
    "uploads", metadata,
    Column("sha256", String(64), primary_key=True),
    Column("path", Text, nullable=False),
    Column("size", Integer, nullable=False),
    Column("file_id", String(100)),
    Column("url", Text, nullable=False),
    Column("uploaded_at", Float, nullable=False),
)

request_shapes = Table(
    # What the requests of a manifest share (everything but the prompt), once (0009).
    "request_shapes", metadata,
    Column("id", Integer, primary_key=True),
    Column("body", Text, nullable=False, unique=True),
)

manifests = Table(
    # Each manifest path that membership was recorded for, once: its rows name it by id (0009).
    "manifests", metadata,
    Column("id", Integer, primary_key=True),
    Column("path", Text, nullable=False, unique=True),
)

manifest_jobs = Table(
    # The jobs a manifest (its resolved path) expanded to when last recorded: what
    # `batchgen diff` compares tonight's expansion with. Replaced whenever the manifest changes.
    # By manifest id and job id, in the primary key's own B-tree on SQLite (WITHOUT ROWID): one
    # entry of about ten bytes per job (0008, 0009).
    "manifest_jobs", metadata,
    Column("manifest_id", Integer, primary_key=True),
    Column("job_id", Integer, primary_key=True),
    sqlite_with_rowid=False,
)

decisions = Table(
    # Review decisions (batchgen review, 0010): one row per decision, never updated or deleted —
    # a changed mind (or an undo) is a new row, and a job's latest row (highest id) is what
    # counts. Each row is the job's whole review state (verdict, pick, note), carried forward,
    # so one row answers "where is this clip". A table of its own: deciding never writes a
    # ``jobs`` row, so a reviewer never contends with a run for the rows it moves.
    "decisions", metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, ForeignKey("jobs.id"), nullable=False),
    Column("verdict", String(16)),  # a Verdict; NULL: pending (an undo back to no decision)
    Column("pick", Boolean, nullable=False, server_default=false()),  # the take chosen for its shot
    Column("note", Text),
    # With verdict retake: the request fields the retake changes, as JSON (0012); NULL: the same
    # request again.
    Column("changes", Text),
    Column("reviewer", String(255), nullable=False),
    Column("decided_at", Float, nullable=False),
    CheckConstraint("verdict IN (" + ", ".join(f"'{v.value}'" for v in Verdict) + ")", name="verdict"),
    # The latest decision of a job: max(id) for job_id, one index seek.
    Index("ix_decisions_job_id_id", "job_id", "id"),
)

breakers = Table(
    # A breaker per model (0014, issue 30): a row per model whose breaker opened, open while
    # closed_at is NULL. Shared by every worker of a fleet: a breaker one worker opens stops the
    # model on all of them; the worker that moves reopens_at past now sends the one probe.
    "breakers", metadata,
    Column("model", String(100), primary_key=True),
    Column("why", Text, nullable=False),
    Column("opened_at", Float, nullable=False),
    Column("reopens_at", Float, nullable=False),  # the database server's clock, like heartbeats
    Column("closed_at", Float),
    # Probes sent since it opened from closed (0017): at most breaker.MAX_PROBES for the fleet.
    Column("probes", Integer, nullable=False, server_default="0"),
)
