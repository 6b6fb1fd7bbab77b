"""Review decisions (the ``decisions`` table, ``batchgen review``): what reviewers decided
about clips, appended and never changed, and what is asked of them.

Every row is a job's whole review state (verdict, pick, note) after one decision, so the latest
row of a job (highest id) answers for it and the rows before it are its history. Decisions
never write a ``jobs`` row and every transaction here is short, so reviewing while a run writes
the same ledger neither blocks it nor waits long for it (SQLite WAL: readers never wait; a
decision waits at most for one of the run's grouped commits)."""

from __future__ import annotations

import enum
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from sqlalchemy import and_, func, insert, select
from sqlalchemy.engine import Connection

from ..errors import DecisionChanged
from ..jobs import JobRow, JobState, Verdict
from ..schema import decisions, jobs, manifest_jobs
from .database import Room
from .scope import manifest_id
from .sql import in_chunks, job_row, job_select


class Keep(enum.Enum):
    """A field a ``Change`` leaves as the job's latest decision has it."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True)
class Change:
    """What one decision changes for one job; every field left at ``KEEP`` is carried forward
    from the job's latest decision (none: pending, not picked, no note). ``verdict=None`` is an
    explicit return to pending (an undo)."""

    job_id: int
    verdict: Verdict | None | Keep = KEEP
    pick: bool | Keep = KEEP
    note: str | None | Keep = KEEP
    # With verdict retake: the request fields the retake changes (JSON text); kept while the
    # verdict stays retake, dropped with any other verdict.
    changes: str | None | Keep = KEEP
    # Only if the job's latest decision is still this one (its id; None: no decision yet): an
    # undo restores what a reviewer saw before their own decision, never over a decision another
    # reviewer recorded meanwhile. KEEP: unconditional.
    expect: int | None | Keep = KEEP


class Decision(TypedDict):
    """A row of ``decisions``: a job's review state as of one decision."""

    id: int
    job_id: int
    verdict: str | None  # a Verdict value; None: pending
    pick: bool
    note: str | None
    changes: str | None  # JSON: the request fields a retake changes
    reviewer: str
    decided_at: float


_COLS = (decisions.c.id, decisions.c.job_id, decisions.c.verdict, decisions.c.pick, decisions.c.note,
         decisions.c.changes, decisions.c.reviewer, decisions.c.decided_at)

# For driver-level SQL over ``jobs`` (the streamed export): the job's latest decision joined
# as ``d`` (NULLs when it has none). An index seek per job (ix_decisions_job_id_id).
LATEST_JOIN = ("LEFT JOIN decisions d ON d.id = (SELECT max(x.id) FROM decisions x WHERE x.job_id = jobs.id)")
LATEST_COLUMNS = ("d.verdict", "d.note", "d.reviewer", "d.pick")


def retake_chains(c: Connection, parents: Mapping[int, int]) -> dict[int, tuple[int, ...]]:
    """Each retake's chain (``parents``: retake id → the job it replaces): the jobs it replaces,
    nearest first, up to the first one that is no retake (looked up here when not given)."""
    known: dict[int, int | None] = dict(parents)
    while missing := sorted({p for p in known.values() if p is not None and p not in known}):
        for chunk in in_chunks(missing):
            found = {int(j): r for j, r in c.execute(select(jobs.c.id, jobs.c.retake_of).where(jobs.c.id.in_(chunk)))}
            known.update((j, None if found.get(j) is None else int(found[j])) for j in chunk)
    chains: dict[int, tuple[int, ...]] = {}
    for r in parents:
        chain: list[int] = []
        p = known[r]
        while p is not None and p != r and p not in chain:  # ids only grow along a chain; guarded anyway
            chain.append(p)
            p = known[p]
        chains[r] = tuple(chain)
    return chains


def rooted_in(chains: Mapping[int, tuple[int, ...]], present: Collection[int]) -> set[int]:
    """THE definition of the retakes that belong to a manifest's expansion (``present``: the ids
    of its jobs): those with one of its jobs on their chain (``retake_chains``). A run carries
    exactly these (``Recorder.record_run``) and `plan`/`diff` count exactly these
    (``RetakeCandidates.of_expansion``): one definition, so the two never disagree."""
    return {r for r, chain in chains.items() if any(a in present for a in chain)}


@dataclass(frozen=True)
class RetakeCandidates:
    """Every queued retake and every clip marked retake (not queued yet) in the ledger, with
    what `plan`/`diff` need to keep those of the expansion they stream (``of_expansion``)."""

    queued: list[JobRow]
    marked: list[JobRow]
    chains: dict[int, tuple[int, ...]]  # of the queued retakes and of the marked clips that are retakes
    keys: dict[int, str]  # job id → key, of every job on those chains and of the candidates

    @property
    def wanted(self) -> frozenset[str]:
        """The keys an expansion is matched against: only these need remembering as it streams."""
        return frozenset(self.keys.values())

    def of_expansion(self, keys: Collection[str]) -> tuple[list[JobRow], list[JobRow]]:
        """(queued retakes, marked clips) that belong to an expansion of these job keys — what
        its run renders (a queued retake the expansion lists itself is one of its own jobs, not
        a retake to add) and what `batchgen retake` could queue for it."""
        present = {i for i, k in self.keys.items() if k in keys}
        belong = rooted_in(self.chains, present)
        return ([j for j in self.queued if j["id"] in belong and j["id"] not in present],
                [j for j in self.marked if j["id"] in present or j["id"] in belong])


def _row(r: Any) -> Decision:
    return Decision(id=int(r.id), job_id=int(r.job_id), verdict=r.verdict, pick=bool(r.pick), note=r.note,
                    changes=r.changes, reviewer=r.reviewer, decided_at=float(r.decided_at))


def _latest_ids(job_ids: Sequence[int]) -> Any:
    return (select(func.max(decisions.c.id)).where(decisions.c.job_id.in_(job_ids))
            .group_by(decisions.c.job_id).scalar_subquery())


class Decisions(Room):
    """Every read and write of ``decisions``."""

    def decide(self, changes: Sequence[Change], reviewer: str) -> list[Decision]:
        """Record ``changes`` by ``reviewer`` in one short transaction, each as a new row with
        what it leaves unchanged carried forward from the job's latest decision. A change that
        changes nothing writes nothing (feeding the same decisions twice is harmless). Returns
        the rows written, in order (a later change of the same job in the list wins). A change
        whose ``expect`` no longer holds raises ``DecisionChanged`` and writes nothing at all."""
        return self._retrying(self._decide_in, list(changes), reviewer)

    def _decide_in(self, c: Connection, changes: list[Change], reviewer: str) -> list[Decision]:
        ids = list(dict.fromkeys(ch.job_id for ch in changes))
        now = self._latest_in(c, ids)
        at = time.time()
        written: list[Decision] = []
        for ch in changes:
            was = now.get(ch.job_id)
            if ch.expect is not KEEP and (was["id"] if was else None) != ch.expect:
                raise DecisionChanged(ch.job_id, was["reviewer"] if was else None, was["verdict"] if was else None)
            verdict = (was["verdict"] if was else None) if ch.verdict is KEEP else ch.verdict
            pick = (was["pick"] if was else False) if ch.pick is KEEP else ch.pick
            note = (was["note"] if was else None) if ch.note is KEEP else (ch.note or None)
            fields = (was["changes"] if was else None) if ch.changes is KEEP else ch.changes
            if verdict != Verdict.RETAKE:
                fields = None
            if (verdict, pick, note, fields) == ((was["verdict"], was["pick"], was["note"], was["changes"]) if was
                                                  else (None, False, None, None)):
                continue
            values = {"job_id": ch.job_id, "verdict": None if verdict is None else str(verdict), "pick": pick,
                      "note": note, "changes": fields, "reviewer": reviewer, "decided_at": at}
            new_id = c.execute(insert(decisions).values(**values).returning(decisions.c.id)).scalar_one()
            now[ch.job_id] = Decision(id=int(new_id), **values)  # type: ignore[typeddict-item]
            written.append(now[ch.job_id])
        return written

    def latest_decisions(self, job_ids: Iterable[int]) -> dict[int, Decision]:
        """The latest decision of each of these jobs that has one."""
        ids = list(job_ids)
        with self._read() as c:
            return self._latest_in(c, ids)

    def _latest_in(self, c: Connection, ids: list[int]) -> dict[int, Decision]:
        out: dict[int, Decision] = {}
        for chunk in in_chunks(ids):
            for r in c.execute(select(*_COLS).where(decisions.c.id.in_(_latest_ids(chunk)))):
                out[r.job_id] = _row(r)
        return out

    def decision_history(self, job_id: int) -> list[Decision]:
        """Every decision on this job, oldest first (the last one counts)."""
        with self._read() as c:
            return [_row(r) for r in c.execute(select(*_COLS).where(decisions.c.job_id == job_id)
                                               .order_by(decisions.c.id))]

    def verdict_counts(self, run_id: int | None = None) -> dict[str, int]:
        """Finished clips (of one run, or all) by their latest verdict, with ``pending`` for
        those without one. Counted from the decisions (a few per reviewed clip), not per job."""
        latest = select(func.max(decisions.c.id)).group_by(decisions.c.job_id).scalar_subquery()
        decided = (select(decisions.c.verdict, func.count()).join(jobs, jobs.c.id == decisions.c.job_id)
                   .where(decisions.c.id.in_(latest), decisions.c.verdict.is_not(None), jobs.c.state == JobState.DONE)
                   .group_by(decisions.c.verdict))
        done = select(func.count()).select_from(jobs).where(jobs.c.state == JobState.DONE)
        if run_id is not None:
            decided = decided.where(jobs.c.run_id == run_id)
            done = done.where(jobs.c.run_id == run_id)
        with self._read() as c:
            counts = {str(v): int(n) for v, n in c.execute(decided)}
            total = int(c.execute(done).scalar_one())
        out = {"pending": total - sum(counts.values())}
        out.update({v.value: counts.get(v.value, 0) for v in Verdict})
        return out

    def takes_of(self, job_id: int) -> list[int]:
        """The jobs that are takes of the same shot as ``job_id`` (the same request, another
        ``take``), itself included, by id."""
        shape = select(jobs.c.shape_id, jobs.c.request, jobs.c.model).where(jobs.c.id == job_id).subquery()
        q = (select(jobs.c.id).join(shape, and_(jobs.c.request == shape.c.request, jobs.c.model == shape.c.model,
                                                 jobs.c.shape_id.is_not_distinct_from(shape.c.shape_id)))
             .order_by(jobs.c.id))
        with self._read() as c:
            return [int(i) for (i,) in c.execute(q)]

    def pending_retakes(self, run_id: int | None = None, manifest: str | None = None
                        ) -> list[tuple[JobRow, Decision]]:
        """Finished clips whose latest verdict is retake and that no job retakes yet (of one run,
        or of a manifest's membership as last recorded), with that decision, in id order."""
        with self._read() as c:
            return self._pending_in(c, run_id, manifest)

    def _pending_in(self, c: Connection, run_id: int | None = None, manifest: str | None = None
                    ) -> list[tuple[JobRow, Decision]]:
        latest = select(func.max(decisions.c.id)).group_by(decisions.c.job_id).scalar_subquery()
        # The clips whose latest verdict is retake first (a few a reviewed night), then theirs
        # with no retake yet: asked as one query, SQLite looked for a retake of every done job
        # (``retake_of`` has no index), 2.4 s of CPU at 5,000 jobs and no decision at all.
        marked = sorted(int(i) for (i,) in c.execute(select(decisions.c.job_id).where(
            decisions.c.id.in_(latest), decisions.c.verdict == Verdict.RETAKE)))
        n = len(jobs.c) + 1  # the job's columns and its shape, then the decision's
        out: list[tuple[JobRow, Decision]] = []
        for chunk in in_chunks(marked):
            retaken = {int(r) for (r,) in c.execute(select(jobs.c.retake_of).where(jobs.c.retake_of.in_(chunk)))}
            ids = [j for j in chunk if j not in retaken]
            if not ids:
                continue
            q = (job_select().add_columns(*_COLS).join(decisions, decisions.c.job_id == jobs.c.id)
                 .where(jobs.c.id.in_(ids), decisions.c.id.in_(latest), jobs.c.state == JobState.DONE)
                 .order_by(jobs.c.id))
            if run_id is not None:
                q = q.where(jobs.c.run_id == run_id)
            if manifest is not None:
                q = q.where(jobs.c.id.in_(select(manifest_jobs.c.job_id)
                                          .where(manifest_jobs.c.manifest_id == manifest_id(manifest))))
            out += [(job_row(_Head(r, n)), _row(_Tail(r, n))) for r in c.execute(q)]
        return out

    def retake_candidates(self) -> RetakeCandidates:
        """Every queued retake and every clip marked retake and not queued yet, with their
        chains and keys: `plan` and `diff` keep those of the manifest as it expands NOW
        (``RetakeCandidates.of_expansion``), which is what its run renders — not those of its
        membership as last recorded, which an edit since has changed."""
        with self._read() as c:
            queued = [job_row(r) for r in c.execute(job_select().where(
                jobs.c.retake_of.is_not(None), jobs.c.state == JobState.QUEUED).order_by(jobs.c.id))]
            marked = [j for j, _ in self._pending_in(c)]
            chains = retake_chains(c, {int(j["id"]): int(j["retake_of"]) for j in (*queued, *marked)
                                       if j["retake_of"] is not None})
            keys = {int(j["id"]): str(j["key"]) for j in (*queued, *marked)}
            ids = sorted({a for chain in chains.values() for a in chain} - keys.keys())
            for chunk in in_chunks(ids):
                keys.update((int(j), str(k)) for j, k in c.execute(
                    select(jobs.c.id, jobs.c.key).where(jobs.c.id.in_(chunk))))
        return RetakeCandidates(queued, marked, chains, keys)

    def retakes_of(self, job_ids: Sequence[int]) -> list[JobRow]:
        """Jobs that retake any of these jobs."""
        with self._read() as c:
            return [job_row(r) for r in c.execute(job_select().where(jobs.c.retake_of.in_(list(job_ids)))
                                                  .order_by(jobs.c.id))]

    def outputs_in_use(self, outputs: Sequence[str]) -> set[str]:
        """Which of these output names a recorded job already has."""
        with self._read() as c:
            return {o for (o,) in c.execute(select(jobs.c.output).where(jobs.c.output.in_(list(outputs))))}


class _Head:
    """The first ``n`` columns of a row, with their names (a job of ``pending_retakes``)."""

    def __init__(self, r: Any, n: int) -> None:
        keys = list(r._mapping.keys())[:n]
        self._mapping = {k: r[i] for i, k in enumerate(keys)}


class _Tail:
    """The decision's columns after a job's in a row of ``pending_retakes``."""

    def __init__(self, r: Any, n: int) -> None:
        for i, col in enumerate(_COLS):
            setattr(self, col.name, r[n + i])
