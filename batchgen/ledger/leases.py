"""Worker leases on cooperative (PostgreSQL) ledgers: heartbeats, claiming queued jobs
(``FOR UPDATE SKIP LOCKED``), taking over what dead workers left, handing jobs back.

A lease is ``jobs.worker_id``; it never changes a job's state by itself. Taking over a dead
worker's mid-create jobs moves them to ``in_doubt`` through ``transitions.apply_in``, inside the
takeover's transaction."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import Connection

from ..jobs import JobRow, JobState, RunStatus
from ..schema import jobs, runs
from .database import Room
from .scope import Scope, of_manifest
from .sql import ACTIVE_STATES, SHAPE, UNFINISHED_STATES, holder_alive, job_row, job_select
from .transitions import Transition, apply_in, interrupted_create

S = JobState
CLAIM_LOCK = 0x62617463  # the advisory lock claims with per-model limits take ("batc")
CREDIT_LOCK = 0x63726564  # the advisory lock a fleet's credit reservations take ("cred")
# A job counted against its model's limit: leased to a live worker, claimed or in flight.
_HELD = (jobs.c.worker_id.is_not(None), holder_alive(),
         jobs.c.state.in_([S.QUEUED, S.SUBMITTING, S.SUBMITTED, S.RENDERING]))


class Leases(Room):
    """Which worker holds which job, and the heartbeats that keep those leases alive."""

    def heartbeat(self, worker: int, rate_rpm: float | None = None) -> bool:
        """Refresh this worker's lease (and the key's request rate it holds, ``--rpm auto``).
        False when another worker has declared it dead (its heartbeat went stale: paused,
        partitioned): it must stop, its jobs are someone else's."""
        with self.engine.begin() as c:
            return c.execute(update(runs).where(runs.c.id == worker, runs.c.status == RunStatus.RUNNING)
                             .values(heartbeat_at=self._now(), rate_rpm=rate_rpm)).rowcount == 1

    def fleet_rate(self, lease_s: float) -> float | None:
        """The API key's request rate the fleet paces at (``--rpm auto``): the lowest any live
        worker holds, so one worker's 429 slows them all and none outgrows the rest."""
        with self._read() as c:
            v = c.execute(select(func.min(runs.c.rate_rpm)).where(
                runs.c.status == RunStatus.RUNNING, runs.c.heartbeat_at >= self._now() - lease_s)).scalar()
            return None if v is None else float(v)

    def reserve_credits(self, worker: int, estimate: float, cap: float) -> bool:
        """``--max-credits`` for a fleet: add ``estimate`` to what ``worker`` committed if the
        fleet's creates together, with it, stay within ``cap``; False (nothing added) if not.

        The fleet is the workers running one manifest together: a worker's first reservation
        joins the fleet of the workers of its manifest still running (``fleet_id``, the first
        one's run), or starts one. A worker that finished stays counted in its fleet, so one
        leaving early frees nothing for the others. One advisory lock: reservations are checked
        and added one at a time, so two workers never both take the last room."""
        def go(c: Connection) -> bool:
            c.execute(select(func.pg_advisory_xact_lock(CREDIT_LOCK)))
            me = c.execute(select(runs.c.fleet_id, runs.c.manifest_sha256).where(runs.c.id == worker)).one()
            fleet = me.fleet_id
            if fleet is None:
                fleet = c.execute(select(func.min(runs.c.fleet_id)).where(
                    runs.c.manifest_sha256 == me.manifest_sha256, runs.c.status == RunStatus.RUNNING,
                    runs.c.fleet_id.is_not(None))).scalar() or worker
                c.execute(update(runs).where(runs.c.id == worker).values(fleet_id=fleet))
            spent = c.execute(select(func.coalesce(func.sum(runs.c.credits_committed), 0.0))
                              .where(runs.c.fleet_id == fleet)).scalar_one()
            if round(float(spent) + estimate, 9) > cap:
                return False
            c.execute(update(runs).where(runs.c.id == worker)
                      .values(credits_committed=runs.c.credits_committed + estimate))
            return True
        return self._retrying(go)

    def return_credits(self, worker: int, estimate: float) -> None:
        """A reserved create came to nothing (refused cleanly, not sent): its estimate goes back
        to the fleet."""
        with self.engine.begin() as c:
            c.execute(update(runs).where(runs.c.id == worker)
                      .values(credits_committed=runs.c.credits_committed - estimate))

    def live_workers(self, lease_s: float) -> int:
        """Workers (runs) alive now: ``running`` with a heartbeat fresher than the lease."""
        with self._read() as c:
            return int(c.execute(select(func.count()).select_from(runs).where(
                runs.c.status == RunStatus.RUNNING, runs.c.heartbeat_at >= self._now() - lease_s)).scalar() or 0)

    def claim(self, worker: int, scope: Scope, limit: int, limits: Mapping[str, int] | None = None,
              exclude: Sequence[str] = (), only: str | None = None, skip: Sequence[int] = ()) -> list[JobRow]:
        """Lease up to ``limit`` queued jobs of this manifest to ``worker``: highest priority
        first, then in manifest order.

        ``FOR UPDATE SKIP LOCKED``: concurrent claims by other workers pass over the rows this
        one is taking instead of waiting for them, so each job goes to exactly one worker. Jobs
        leased to a worker that is no longer running (finished, stopped, declared dead) are free.

        ``limits`` (model → tasks in flight at most) hold for the whole fleet: a model's jobs
        are claimed only up to its limit less what live workers hold of it (creating,
        rendering, or claimed to start). Claims with limits take a transaction-level advisory
        lock, one at a time, so two workers never both fill the same room. ``exclude``: models not
        to claim (their breaker is open); ``only``: claim that model's jobs alone (its probe);
        ``skip``: jobs this worker gave up on tonight (``let_go``), left to the other workers.
        """
        def go(c: Connection) -> list[JobRow]:
            room: dict[str, int] = {}
            if limits:
                c.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK)))
                held: dict[str, int] = dict(c.execute(select(jobs.c.model, func.count()).where(
                    jobs.c.model.in_(list(limits)), *_HELD).group_by(jobs.c.model)).all())
                room = {m: n - int(held.get(m, 0)) for m, n in limits.items()}
            free = (select(jobs.c.id, jobs.c.priority, jobs.c.seq)
                    .where(jobs.c.state == S.QUEUED, of_manifest(scope),
                           # not == worker: what this worker holds is in hand already; what it
                           # gave up on it let go of and skips (not retried here in a loop)
                           or_(jobs.c.worker_id.is_(None), ~holder_alive()))
                    .order_by(jobs.c.priority.desc(), jobs.c.seq).with_for_update(skip_locked=True))
            if skip:
                free = free.where(jobs.c.id.not_in(list(skip)))
            if exclude:
                free = free.where(jobs.c.model.not_in(list(exclude)))
            if only is not None:
                free = free.where(jobs.c.model == only)
            # Each limited model up to its room, the others together; the best ``limit`` of them.
            picks = [free.where(jobs.c.model == m).limit(min(n, limit)) for m, n in room.items() if n > 0]
            picks.append((free.where(jobs.c.model.not_in(list(room))) if room else free).limit(limit))
            found = [r for q in picks for r in c.execute(q)]
            ids = [r.id for r in sorted(found, key=lambda r: (-r.priority, r.seq))[:limit]]
            if not ids:
                return []
            rows = c.execute(update(jobs).where(jobs.c.id.in_(ids)).values(worker_id=worker).returning(*jobs.c, SHAPE))
            return sorted((job_row(r) for r in rows), key=lambda r: (-r["priority"], r["seq"]))
        return self._retrying(go)

    def requeue_within_limit(self, t: Transition, limit: int) -> bool | None:
        """A render retry (``t``: failed → queued, held by ``t.owner``) on a fleet where its model
        has a limit: applied only while the tasks of that model every live worker holds leave
        room for it, under the claims' advisory lock (between its task's failure and this move
        the job is not counted, and another worker may have claimed the room). None: no room
        now; else whether the move applied."""
        def go(c: Connection) -> bool | None:
            c.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK)))
            model = select(jobs.c.model).where(jobs.c.id == t.job_id).scalar_subquery()
            held = c.execute(select(func.count()).select_from(jobs).where(
                jobs.c.model == model, jobs.c.id != t.job_id, *_HELD)).scalar_one()
            if held >= limit:
                return None
            return apply_in(c, [t])[0]
        return self._retrying(go)

    def reclaim(self, worker: int, lease_s: float) -> tuple[list[JobRow], list[JobRow]]:
        """Take over what dead workers left. Returns (jobs now held by ``worker``, jobs put in doubt).

        In one transaction: running workers whose heartbeat is older than the lease are marked
        ``died``; jobs that have a task (submitted, rendering, completed) and no live holder are
        leased to ``worker`` — to be polled and downloaded, never resubmitted; jobs left in
        ``submitting`` by a holder that is gone become ``in_doubt``, since nothing can tell
        whether its create reached the API."""
        def go(c: Connection) -> tuple[list[JobRow], list[JobRow]]:
            stale = (update(runs).where(runs.c.status == RunStatus.RUNNING, runs.c.id != worker,
                                        or_(runs.c.heartbeat_at.is_(None), runs.c.heartbeat_at < self._now() - lease_s))
                     .values(status=RunStatus.DIED, finished_at=time.time()))
            c.execute(stale)
            orphaned = and_(jobs.c.worker_id.is_distinct_from(worker), or_(jobs.c.worker_id.is_(None), ~holder_alive()))
            q = (select(jobs.c.id, jobs.c.state).where(jobs.c.state.in_([*ACTIVE_STATES, S.SUBMITTING]), orphaned)
                 .order_by(jobs.c.id).with_for_update(skip_locked=True))
            found = c.execute(q).all()
            active = [i for i, st in found if st != S.SUBMITTING]
            stuck = [i for i, st in found if st == S.SUBMITTING]
            adopted: list[JobRow] = []
            if active:
                c.execute(update(jobs).where(jobs.c.id.in_(active)).values(worker_id=worker))
            if stuck:
                apply_in(c, interrupted_create(stuck, "the worker holding it",
                                                        f"worker gone mid-create; found by worker {worker}"))
            if active:
                adopted = [job_row(r) for r in c.execute(job_select().where(jobs.c.id.in_(active)).order_by(jobs.c.id))]
            doubt = [job_row(r) for r in c.execute(job_select().where(jobs.c.id.in_(stuck)))] if stuck else []
            return adopted, doubt
        return self._retrying(go)

    def release(self, worker: int) -> int:
        """A worker leaving hands back the jobs it still holds (queued, or with a task to poll)."""
        with self.engine.begin() as c:
            return c.execute(update(jobs).where(jobs.c.worker_id == worker, jobs.c.state.in_([S.QUEUED, *ACTIVE_STATES]))
                             .values(worker_id=None)).rowcount

    def held(self, worker: int) -> list[JobRow]:
        """Jobs with a task that this worker holds (its share of the paid work to collect)."""
        with self._read() as c:
            q = job_select().where(jobs.c.worker_id == worker, jobs.c.state.in_(ACTIVE_STATES)).order_by(jobs.c.id)
            return [job_row(r) for r in c.execute(q)]

    def let_go(self, worker: int, job_id: int) -> None:
        """``worker`` gave up on its job tonight: a failed one (no render retry of it), or a
        queued one it will not create (its create kept failing, or it stopped submitting: out
        of budget, stopped, past the deadline). Its lease goes at once: held, the job counted
        as pending for every other worker (``pending_elsewhere``) while none could claim it,
        and two workers each holding one waited on each other until they were stopped."""
        with self.engine.begin() as c:
            c.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.worker_id == worker,
                                         jobs.c.state.in_([S.FAILED, S.QUEUED])).values(worker_id=None))

    def pending_elsewhere(self, worker: int, scope: Scope, idle: Sequence[str] = (), skip: Sequence[int] = ()) -> int:
        """Jobs of this manifest that still need work and that ``worker`` does not hold: while
        there are any, a worker stays to take over if their holder dies. ``idle``: models no
        worker starts a job of tonight (past the deadline, breaker given up): their queued jobs
        wait for the next night and keep nobody. ``skip``: jobs ``worker`` gave up on (``let_go``):
        they keep it only while another live worker holds them.

        Work another live worker is busy with counts whatever its state, so the fleet's outcome
        does not depend on which worker finishes last: a failed job it still holds (its task
        failed; whether it renders again is being decided, or waits for room under its model's
        limit — the holder lets go once decided, ``let_go``), and a queued job of an idle model
        it holds (the probe it claimed, its intent not yet written)."""
        elsewhere = holder_alive()
        q = (select(func.count()).select_from(jobs).where(
            of_manifest(scope), jobs.c.worker_id.is_distinct_from(worker),
            or_(jobs.c.state.in_(UNFINISHED_STATES), and_(jobs.c.state == S.FAILED, elsewhere))))
        if idle:
            q = q.where(or_(jobs.c.state != S.QUEUED, jobs.c.model.not_in(list(idle)), elsewhere))
        if skip:
            q = q.where(or_(jobs.c.id.not_in(list(skip)), elsewhere))
        with self._read() as c:
            return int(c.execute(q).scalar() or 0)
