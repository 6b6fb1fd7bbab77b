"""A night's deadline (``run --finish-by``, issue 30) in the ledger: each run records the
deadline it works to in its ``runs`` row (``finish_by``, epoch seconds, so workers on machines
in other time zones agree), a worker of a PostgreSQL fleet reads the fleet's (the earliest a live
worker of the same manifest holds), and what the deadline left queued is read back for the
summary, the notification and ``status``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update

from ..jobs import JobState, RunStatus
from ..schema import jobs, runs
from .database import Room
from .scope import Scope, of_manifest
from .sql import ACTIVE_STATES

S = JobState


class Deadlines(Room):
    """Record, share and read back a night's deadline."""

    def set_finish_by(self, run_id: int, at: float | None) -> None:
        """The deadline this run (worker) works to, None for none."""
        with self.engine.begin() as c:
            c.execute(update(runs).where(runs.c.id == run_id).values(finish_by=at))

    def fleet_finish_by(self, manifest: str, lease_s: float) -> tuple[float, int] | None:
        """(the earliest deadline a live worker of this manifest works to, that worker's id), or
        None when no live worker of it has one. Live: ``running`` with a heartbeat fresher than
        the lease (a dead worker's deadline does not bind the fleet)."""
        with self._read() as c:
            row = c.execute(select(runs.c.finish_by, runs.c.id).where(
                runs.c.manifest == manifest, runs.c.status == RunStatus.RUNNING, runs.c.finish_by.is_not(None),
                runs.c.heartbeat_at >= self._now() - lease_s).order_by(runs.c.finish_by, runs.c.id).limit(1)).first()
        return None if row is None else (float(row[0]), int(row[1]))

    def pending_by_model(self, scope: Scope, run_id: int | None = None) -> dict[str, dict[str, int]]:
        """model → {"queued": jobs not created yet, "in_flight": jobs with a task not yet in
        place} of this manifest (by any worker's run: what a fleet has left), or only of run
        ``run_id``: what a night still has to do, per model (the deadline's outlook, its
        cut-offs; what is left when only breaker-held models are)."""
        where = [of_manifest(scope), jobs.c.state.in_([S.QUEUED, S.SUBMITTING, *ACTIVE_STATES])]
        if run_id is not None:
            where.append(jobs.c.run_id == run_id)
        with self._read() as c:
            rows = c.execute(select(jobs.c.model, jobs.c.state, func.count()).where(*where)
                             .group_by(jobs.c.model, jobs.c.state)).all()
        out: dict[str, dict[str, int]] = {}
        for model, state, n in rows:
            d = out.setdefault(model, {"queued": 0, "in_flight": 0})
            d["queued" if state == S.QUEUED else "in_flight"] += int(n)
        return out

    def queued_of(self, scope: Scope, models: Sequence[str], limit: int = 20) -> tuple[dict[str, int], list[dict[str, Any]]]:
        """(model → how many of its jobs this manifest still has queued, for those of ``models``
        with any; the first ``limit`` of those jobs in the order a run starts them: name,
        output, manifest row, model)."""
        if not models:
            return {}, []
        where = (of_manifest(scope), jobs.c.state == S.QUEUED, jobs.c.model.in_(list(models)))
        with self._read() as c:
            per = {m: int(n) for m, n in c.execute(select(jobs.c.model, func.count()).where(*where)
                                                   .group_by(jobs.c.model))}
            rows = c.execute(select(jobs.c.name, jobs.c.output, jobs.c.source, jobs.c.model).where(*where)
                             .order_by(jobs.c.priority.desc(), jobs.c.seq).limit(limit)).all()
        return per, [{"name": r.name, "output": r.output, "row": r.source, "model": r.model} for r in rows]
