"""The ``breakers`` table: a breaker per model shared through the ledger (issue 30). A run
opens a model's breaker here when its tasks keep failing (``breaker.py`` decides), closes it
when a probe succeeds; every worker of a fleet reads the open ones before claiming, and the one
worker whose ``take_probe`` moves the cool-off's end sends the probe — counted here, so the
fleet sends at most ``max_probes`` (breaker.MAX_PROBES) in all, not each worker. A create of a
model whose breaker is open is refused at its intent (``transitions.apply_in``, ``breaker_gated``)
unless it is the probe, so no worker pays for one on a stale view. ``status`` reads it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from ..schema import breakers
from .database import Room
from .sql import BREAKER_LOCK


class BreakerBoard(Room):
    """Open, read, probe and close models' breakers."""

    def trip_breaker(self, model: str, why: str, cooloff: float) -> None:
        """Open ``model``'s breaker, or start its cool-off again (a failed probe): ``opened_at``
        and the probes counted stay as they were when it first opened."""
        now = self._now()  # PostgreSQL: the server's clock when each statement runs, after the lock
        with self.engine.begin() as c:
            if not self.is_sqlite:  # no gated intent commits beside the opening (transitions.apply_in)
                c.execute(select(func.pg_advisory_xact_lock(BREAKER_LOCK)))
            again = c.execute(update(breakers).where(breakers.c.model == model, breakers.c.closed_at.is_(None))
                              .values(why=why, reopens_at=now + cooloff)).rowcount
            if not again:
                c.execute(self._insert_into(breakers).values(model=model, why=why, opened_at=now,
                                                             reopens_at=now + cooloff)
                          .on_conflict_do_update(index_elements=[breakers.c.model], set_={
                              "why": why, "opened_at": now, "reopens_at": now + cooloff, "closed_at": None,
                              "probes": 0}))

    def close_breaker(self, model: str) -> None:
        with self.engine.begin() as c:
            c.execute(update(breakers).where(breakers.c.model == model, breakers.c.closed_at.is_(None))
                      .values(closed_at=self._now()))

    def open_breakers(self) -> dict[str, dict[str, Any]]:
        """model → {why, opened_at, probe_in (seconds until its probe may go; ≤ 0: now),
        probes (sent since it opened)}."""
        with self._read() as c:
            rows = c.execute(select(breakers.c.model, breakers.c.why, breakers.c.opened_at, breakers.c.probes,
                                    (breakers.c.reopens_at - self._now()).label("probe_in"))
                             .where(breakers.c.closed_at.is_(None)).order_by(breakers.c.model))
            return {r.model: {"why": r.why, "opened_at": r.opened_at, "probe_in": float(r.probe_in),
                              "probes": int(r.probes)} for r in rows}

    def take_probe(self, model: str, cooloff: float, max_probes: int | None = None) -> bool:
        """Whether this caller sends the model's probe now: its cool-off is over, fewer than
        ``max_probes`` were sent since it opened, and moving the next one's start past now and
        counting this one (atomically) keeps every other worker from sending one too."""
        now = self._now()
        cond = [breakers.c.model == model, breakers.c.closed_at.is_(None), breakers.c.reopens_at <= now]
        if max_probes is not None:
            cond.append(breakers.c.probes < max_probes)
        with self.engine.begin() as c:
            return c.execute(update(breakers).where(*cond)
                             .values(reopens_at=now + cooloff, probes=breakers.c.probes + 1)).rowcount == 1

    def give_back_probe(self, model: str) -> None:
        """The probe taken came to no task (no job to claim, or its create was refused cleanly):
        uncounted, and due again now, for whichever worker has one."""
        with self.engine.begin() as c:
            c.execute(update(breakers).where(breakers.c.model == model, breakers.c.closed_at.is_(None),
                                             breakers.c.probes > 0)
                      .values(probes=breakers.c.probes - 1, reopens_at=self._now()))
