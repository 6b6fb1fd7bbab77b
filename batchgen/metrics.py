"""``run --metrics-file PATH``: a Prometheus text-format file for node_exporter's textfile
collector, rewritten atomically (``files.atomic_output``: a temporary file renamed over the
old one; a device, FIFO or folder at that path is refused, never replaced) every progress
interval and when the run ends.

Every series carries the manifest's path as a label, so several nightly manifests can write
their own files into one collector folder. Timestamps are Unix seconds (alert on
``time() - batchgen_last_success_timestamp_seconds``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from . import files
from .errors import EXIT_MEANINGS


@dataclass
class RunMetrics:
    """What one write of the metrics file says."""

    manifest: str
    run_id: int
    running: bool
    started_at: float
    states: dict[str, int] = field(default_factory=dict)
    requests: int = 0  # every API request (creates, polls, uploads)
    polls: int = 0
    throttled: int = 0  # 429 answers
    credits_reserved: float = 0.0
    credits_estimated: float = 0.0
    max_credits: float | None = None
    in_doubt: int = 0
    exit_code: int | None = None
    finished_at: float | None = None
    last_success: float | None = None
    verified: dict[str, int] = field(default_factory=dict)
    delivered: int | None = None
    undelivered: int | None = None
    models: dict[str, tuple[int, int | None]] = field(default_factory=dict)  # model → (in flight, limit)
    breakers: dict[str, str] = field(default_factory=dict)  # model → why its breaker is open


def write(path: Path, m: RunMetrics) -> None:
    reg = CollectorRegistry()
    label = ["manifest"]

    def gauge(name: str, doc: str, value: float | None, **labels: str) -> None:
        if value is None:
            return
        g = Gauge(name, doc, [*label, *labels], registry=reg)
        g.labels(m.manifest, *labels.values()).set(value)

    jobs = Gauge("batchgen_jobs", "Jobs of the manifest by state", ["manifest", "state"], registry=reg)
    for state, n in sorted(m.states.items()):
        jobs.labels(m.manifest, state).set(n)
    reqs = Gauge("batchgen_run_requests", "API requests of the current/last run by kind", ["manifest", "kind"],
                 registry=reg)
    reqs.labels(m.manifest, "create").set(max(0, m.requests - m.polls))
    reqs.labels(m.manifest, "poll").set(m.polls)
    gauge("batchgen_run_throttled", "HTTP 429 answers in the current/last run", m.throttled)
    gauge("batchgen_run_credits_reserved", "Credits the API reserved for this run's tasks", m.credits_reserved)
    gauge("batchgen_run_credits_estimated", "Estimated credits of the creates this run sent", m.credits_estimated)
    gauge("batchgen_run_max_credits", "The run's --max-credits", m.max_credits)
    gauge("batchgen_in_doubt_jobs", "Jobs whose create may or may not have happened (batchgen resolve)", m.in_doubt)
    gauge("batchgen_run_id", "Ledger id of the current/last run", m.run_id)
    gauge("batchgen_run_running", "1 while a run is in progress", 1 if m.running else 0)
    gauge("batchgen_run_started_timestamp_seconds", "When the current/last run started", m.started_at)
    gauge("batchgen_run_finished_timestamp_seconds", "When the last run ended", m.finished_at)
    if m.exit_code is not None:
        gauge("batchgen_run_exit_code", "Exit code of the last run", m.exit_code,
              meaning=EXIT_MEANINGS.get(m.exit_code, "unknown"))
    gauge("batchgen_last_success_timestamp_seconds", "When a run of this manifest last exited 0", m.last_success)
    if m.verified:
        v = Gauge("batchgen_clips_verified", "Delivered clips by verification outcome", ["manifest", "outcome"],
                  registry=reg)
        for outcome, n in sorted(m.verified.items()):
            v.labels(m.manifest, outcome).set(n)
    gauge("batchgen_clips_delivered", "Done clips at the delivery destination", m.delivered)
    gauge("batchgen_clips_undelivered", "Done clips not (yet) at the delivery destination", m.undelivered)
    if m.models:
        flying = Gauge("batchgen_model_in_flight", "Tasks in flight (create to result ready) by model", ["manifest", "model"],
                       registry=reg)
        limit = Gauge("batchgen_model_limit", "Tasks in flight allowed by model (--limit / `limits:`)",
                      ["manifest", "model"], registry=reg)
        for model, (n, lim) in sorted(m.models.items()):
            flying.labels(m.manifest, model).set(n)
            if lim is not None:
                limit.labels(m.manifest, model).set(lim)
    breaker = Gauge("batchgen_model_breaker_open", "1 while the model's breaker is open (no new task but a probe)",
                    ["manifest", "model"], registry=reg)
    for model in sorted(set(m.models) | set(m.breakers)):
        breaker.labels(m.manifest, model).set(1 if model in m.breakers else 0)
    gauge("batchgen_metrics_updated_timestamp_seconds", "When this file was written", time.time())
    # node_exporter reads the folder on every scrape: the file only ever appears whole. Not
    # fsynced — it is rewritten every few seconds and a crash loses nothing but a sample. The
    # folder is not created: a missing collector folder is a typo nobody would scrape.
    with files.atomic_output(path, what="--metrics-file", binary=True, durable=False) as f:
        f.write(generate_latest(reg))


__all__ = ["RunMetrics", "write"]
