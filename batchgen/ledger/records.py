"""Records of what happened to a clip after its download: verification outcomes, deliveries
owed and made (object storage), local copies pruned, and uploaded input images (``uploads``).

The verification and delivery results themselves are written as transitions (``values`` of
a ``Transition``, see ``transitions.py``); this room records which destination each clip is
owed to and the uploads cache, and answers what the run, status and report ask of them."""

from __future__ import annotations

import time

from sqlalchemy import case, exists, func, or_, select, update

from ..jobs import JobRow, JobState, Verdict
from ..schema import decisions, jobs, uploads
from .database import Room
from .scope import Scope, of_manifest
from .sql import is_owed, job_row, job_select, latest_decision

S = JobState


class Records(Room):
    """Verification, delivery and upload records."""

    def owe_delivery(self, scope: Scope | None, destination: str, only: str | None = None) -> int:
        """Record that this manifest's clips are owed to ``destination`` (an ``s3://`` URL without
        credentials): done or not, each is delivered there once done, by the next run of any
        manifest that contains it or by ``batchgen deliver``. Clips already delivered keep
        where they went. ``only="approved"``: owed only once a reviewer approved them
        (`--deliver-only approved`); None: every finished clip is."""
        q = update(jobs).where(jobs.c.delivered_url.is_(None),
                               or_(jobs.c.deliver_to.is_(None), jobs.c.deliver_to != destination,
                                   jobs.c.deliver_only.is_distinct_from(only)))
        if scope is not None:
            q = q.where(of_manifest(scope))
        with self.engine.begin() as c:
            return c.execute(q.values(deliver_to=destination, deliver_only=only)).rowcount

    def delivered_not_approved(self, scope: Scope | None = None, limit: int = 50) -> list[JobRow]:
        """Clips in a store whose latest review verdict is now retake or reject: kept there (never
        deleted silently), listed so that someone decides."""
        q = (job_select().where(jobs.c.delivered_url.is_not(None), exists().where(
            decisions.c.job_id == jobs.c.id, decisions.c.id == latest_decision(jobs.c.id),
            decisions.c.verdict.in_([Verdict.RETAKE, Verdict.REJECT])))
             .order_by(jobs.c.id).limit(limit))
        if scope is not None:
            q = q.where(of_manifest(scope))
        with self._read() as c:
            return [job_row(r) for r in c.execute(q)]

    def upload_url(self, sha256: str, newer_than: float) -> str | None:
        with self._read() as c:
            url = c.execute(select(uploads.c.url).where(uploads.c.sha256 == sha256,
                                                        uploads.c.uploaded_at > newer_than)).scalar()
            return None if url is None else str(url)

    def record_upload(self, sha256: str, path: str, size: int, url: str) -> None:
        stmt = self._insert_into(uploads).values(sha256=sha256, path=path, size=size, url=url, uploaded_at=time.time())
        stmt = stmt.on_conflict_do_update(index_elements=[uploads.c.sha256], set_={
            "path": stmt.excluded.path, "size": stmt.excluded.size, "url": stmt.excluded.url,
            "uploaded_at": stmt.excluded.uploaded_at})
        with self.engine.begin() as c:
            c.execute(stmt)

    def unverified(self, scope: Scope, *, after_id: int = 0, limit: int | None = None) -> list[JobRow]:
        """Done jobs of this manifest whose file was never inspected (a crash between the
        rename and the verification, or runs with --no-verify): the next run verifies them.
        ``after_id``/``limit``: one page (ids above ``after_id``), so a caller never holds a
        million of them."""
        q = (job_select().where(jobs.c.state == S.DONE, jobs.c.verify.is_(None), jobs.c.output_path.is_not(None),
                                jobs.c.id > after_id, of_manifest(scope)).order_by(jobs.c.id).limit(limit))
        with self._read() as c:
            return [job_row(r) for r in c.execute(q)]

    def sheets_left(self, scope: Scope | None = None, *, run_id: int | None = None, after_id: int = 0,
                    limit: int | None = None) -> list[JobRow]:
        """Kept clips (verified ok or mismatch, local, not pruned) with a poster but no contact
        sheet: sheets a run's pictures lane left (``pipeline.check``), drawn later by the next run
        of the manifest, ``batchgen verify --sheets-only`` or the review page. Of a manifest, a
        run, or the whole ledger; ``after_id``/``limit``: one page, as ``unverified``."""
        q = (job_select().where(jobs.c.state == S.DONE, jobs.c.verify.in_(["ok", "mismatch"]),
                                jobs.c.poster.is_not(None), jobs.c.sheet.is_(None), jobs.c.output_path.is_not(None),
                                jobs.c.pruned_at.is_(None), jobs.c.id > after_id).order_by(jobs.c.id).limit(limit))
        if scope is not None:
            q = q.where(of_manifest(scope))
        if run_id is not None:
            q = q.where(jobs.c.run_id == run_id)
        with self._read() as c:
            return [job_row(r) for r in c.execute(q)]

    def undelivered(self, scope: Scope | None = None, *, verified_only: bool, after_id: int = 0,
                    limit: int | None = None) -> list[JobRow]:
        """Done clips owed to a destination that the store does not hold yet (of this manifest,
        or of the whole ledger), kept locally: delivered from the local file, never fetched
        from the API again. With verification on, only clips already verified (the others are
        delivered once verified). ``after_id``/``limit``: one page, as ``unverified``."""
        q = (job_select().where(is_owed(), jobs.c.pruned_at.is_(None), jobs.c.output_path.is_not(None),
                                jobs.c.id > after_id).order_by(jobs.c.id).limit(limit))
        if scope is not None:
            q = q.where(of_manifest(scope))
        if verified_only:
            q = q.where(jobs.c.verify.is_not(None))
        with self._read() as c:
            return [job_row(r) for r in c.execute(q)]

    def unpruned(self, scope: Scope) -> list[JobRow]:
        """Delivered clips of this manifest whose local copy is still recorded as present: a
        ``--prune-local`` run killed between recording the delivery and removing the file."""
        q = (job_select().where(jobs.c.state == S.DONE, jobs.c.delivered_url.is_not(None), jobs.c.pruned_at.is_(None),
                                jobs.c.output_path.is_not(None), of_manifest(scope)).order_by(jobs.c.id))
        with self._read() as c:
            return [job_row(r) for r in c.execute(q)]

    def lost_candidates(self) -> list[JobRow]:
        """Done clips that should be on local disk (not removed after delivery on purpose)."""
        q = (job_select().where(jobs.c.state == S.DONE, jobs.c.output_path.is_not(None), jobs.c.pruned_at.is_(None))
             .order_by(jobs.c.seq, jobs.c.id))
        with self._read() as c:
            return [job_row(r) for r in c.execute(q)]

    def delivery_counts(self, scope: Scope | None = None) -> dict[str, int]:
        """Done clips delivered to object storage, and clips owed to a destination but not (yet)
        there — of one manifest or the whole ledger. The one count that the run's summary,
        ``status``, the report, notifications and metrics show."""
        delivered = func.sum(case((jobs.c.delivered_url.is_not(None), 1), else_=0))
        owed = func.sum(case((is_owed(), 1), else_=0))
        q = select(delivered, owed).where(jobs.c.state == S.DONE)
        if scope is not None:
            q = q.where(of_manifest(scope))
        with self._read() as c:
            d, n = c.execute(q).one()
        return {"delivered": int(d or 0), "undelivered": int(n or 0)}

    def delivery_problems(self, limit: int = 20) -> list[JobRow]:
        """Done clips owed to a destination and not there (a run could not deliver them, or no
        run delivered yet: ``--no-deliver``), newest first."""
        q = job_select().where(is_owed()).order_by(jobs.c.updated_at.desc()).limit(limit)
        with self._read() as c:
            return [job_row(r) for r in c.execute(q)]

    def not_as_asked(self, scope: Scope | None = None, limit: int = 1000) -> list[JobRow]:
        """Delivered clips whose verification found them wrong (mismatch, undecodable, missing,
        changed), newest first."""
        q = (job_select().where(jobs.c.verify.in_(["mismatch", "undecodable", "missing", "changed"]))
             .order_by(jobs.c.verified_at.desc()).limit(limit))
        if scope is not None:
            q = q.where(of_manifest(scope))
        with self._read() as c:
            return [job_row(r) for r in c.execute(q)]

    def verify_counts(self, scope: Scope | None = None) -> dict[str, int]:
        """Delivered clips per verification outcome (of one manifest, or the whole ledger)."""
        q = select(jobs.c.verify, func.count()).where(jobs.c.verify.is_not(None)).group_by(jobs.c.verify)
        if scope is not None:
            q = q.where(of_manifest(scope))
        with self._read() as c:
            return {str(v): int(n) for v, n in c.execute(q)}
