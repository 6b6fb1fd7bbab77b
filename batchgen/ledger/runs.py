"""Runs: one ``runs`` row per ``batchgen run`` (a worker, on PostgreSQL) — started, stopped,
finished, found dead — and what status, report and ``stop`` read of them."""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection

from ..files import pid_alive
from ..jobs import RunStatus
from ..schema import jobs, runs
from .database import Room
from .sql import plain


def insert_run(c: Connection, now: Any, manifest: str, manifest_sha256: str, options: dict[str, Any],
               total: int) -> int:
    """A new ``running`` row, inside the caller's transaction; ``now`` stamps its heartbeat."""
    key = c.execute(insert(runs).values(
        manifest=manifest, manifest_sha256=manifest_sha256, started_at=time.time(), status=RunStatus.RUNNING,
        host=socket.gethostname(), pid=os.getpid(), options=json.dumps(options, sort_keys=True), jobs_total=total,
        heartbeat_at=now,
    )).inserted_primary_key
    assert key is not None
    return int(key[0])


class Runs(Room):
    """The ``runs`` table: its rows' lifecycle and what is read of them."""

    def start_run(self, manifest: str, manifest_sha256: str, options: dict[str, Any], total: int) -> int:
        with self.engine.begin() as c:
            return insert_run(c, self._now(), manifest, manifest_sha256, options, total)

    def finish_run(self, run_id: int, status: str, exit_code: int | None = None) -> None:
        with self.engine.begin() as c:
            c.execute(update(runs).where(runs.c.id == run_id).values(finished_at=time.time(), status=status,
                                                                     exit_code=exit_code))

    def request_stop(self, run_id: int) -> bool:
        with self.engine.begin() as c:
            return c.execute(update(runs).where(runs.c.id == run_id, runs.c.status == RunStatus.RUNNING)
                             .values(stop_requested=True)).rowcount == 1

    def stop_requested(self, run_id: int) -> bool:
        with self._read() as c:
            return bool(c.execute(select(runs.c.stop_requested).where(runs.c.id == run_id)).scalar())

    def close_dead_runs(self) -> int:
        """With the writer lock held, no other run can be alive: any still marked ``running``
        died (kill -9, power loss). Mark them so `status` and `stop` stay truthful. (Cooperative
        ledgers find dead workers by their heartbeat instead: ``reclaim``.)"""
        if not self.db.locked:
            return 0
        with self.engine.begin() as c:
            return c.execute(update(runs).where(runs.c.status == RunStatus.RUNNING)
                             .values(status=RunStatus.DIED, finished_at=time.time())).rowcount

    def reap_dead_runs(self) -> int:
        """Runs still marked ``running`` whose process is gone, found without the writer lock:
        on SQLite a run's process is on this machine (the ledger is a local file), so a pid
        that no longer exists is a run that crashed. Marked ``died`` so `status` and `stop`
        tell the truth. (PostgreSQL workers are judged by their heartbeat: ``reclaim``.)"""
        if not self.is_sqlite:
            return 0
        host = socket.gethostname()
        with self._read() as c:
            rows = c.execute(select(runs.c.id, runs.c.pid).where(runs.c.status == RunStatus.RUNNING,
                                                                  runs.c.host == host)).all()
        dead = [i for i, pid in rows if not pid_alive(pid)]
        if not dead:
            return 0
        with self.engine.begin() as c:
            return c.execute(update(runs).where(runs.c.id.in_(dead), runs.c.status == RunStatus.RUNNING)
                             .values(status=RunStatus.DIED, finished_at=time.time())).rowcount

    def last_success(self, manifest: str | None = None) -> float | None:
        """When a run (of this manifest path) last ended with exit code 0."""
        q = select(func.max(runs.c.finished_at)).where(runs.c.exit_code == 0)
        if manifest is not None:
            q = q.where(runs.c.manifest == manifest)
        with self._read() as c:
            v = c.execute(q).scalar()
        return None if v is None else float(v)

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest runs, each with its per-state job counts."""
        with self._read() as c:
            rows = [plain(r) for r in c.execute(select(runs).order_by(runs.c.id.desc()).limit(limit))]
            ids = [r["id"] for r in rows]
            counts: dict[int, dict[str, int]] = {}
            if ids:
                q = select(jobs.c.run_id, jobs.c.state, func.count()).where(jobs.c.run_id.in_(ids)).group_by(
                    jobs.c.run_id, jobs.c.state)
                for run_id, state, n in c.execute(q):
                    counts.setdefault(run_id, {})[state] = int(n)
            held: dict[int, int] = {}
            if ids:
                q = select(jobs.c.worker_id, func.count()).where(jobs.c.worker_id.in_(ids)).group_by(jobs.c.worker_id)
                held = {w: int(n) for w, n in c.execute(q)}
            now: Any = c.execute(select(self._now())).scalar() if not self.is_sqlite else time.time()
        for r in rows:
            r["counts"] = counts.get(r["id"], {})
            r["held"] = held.get(r["id"], 0)  # jobs leased to this run (cooperative ledgers)
            r["heartbeat_age_s"] = None if r["heartbeat_at"] is None else round(float(now) - r["heartbeat_at"], 1)
        return rows

    def run(self, run_id: int | None = None) -> dict[str, Any] | None:
        """One run by id, or the newest when ``run_id`` is None."""
        q = select(runs).order_by(runs.c.id.desc()).limit(1)
        if run_id is not None:
            q = q.where(runs.c.id == run_id)
        with self._read() as c:
            r = c.execute(q).first()
            return plain(r) if r else None

    def last_run_of(self, manifest: str) -> dict[str, Any] | None:
        """The newest run of this manifest path (id, times, status, exit code, jobs)."""
        with self._read() as c:
            r = c.execute(select(runs.c.id, runs.c.started_at, runs.c.finished_at, runs.c.status, runs.c.exit_code,
                                 runs.c.jobs_total).where(runs.c.manifest == manifest)
                          .order_by(runs.c.id.desc()).limit(1)).first()
        return None if r is None else plain(r)
