"""Which jobs a manifest means: ``Scope`` and the SQL condition that selects them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select

from ..schema import jobs, manifest_jobs, manifests, runs


@dataclass(frozen=True)
class Scope:
    """What a manifest asks for: the jobs its resolved path expanded to when last recorded.

    Scoped by membership (``manifest_jobs``), never by the bytes of the file: editing a
    manifest (a comment, one new row) keeps every job it still contains in scope, so what an
    earlier run left undelivered, unverified or not as asked is finished by the next run of it.
    ``sha256`` (its content) also admits the jobs of runs of these very bytes, for ledgers
    written before membership was recorded."""

    manifest: str
    sha256: str


def manifest_id(path: str) -> Any:
    """The id of this manifest path in ``manifests`` (NULL if none was recorded), as SQL."""
    return select(manifests.c.id).where(manifests.c.path == path).scalar_subquery()


def of_manifest(scope: Scope) -> Any:
    """The jobs of this manifest (see ``Scope``), whichever run or worker recorded them last."""
    return or_(jobs.c.id.in_(select(manifest_jobs.c.job_id).where(manifest_jobs.c.manifest_id == manifest_id(scope.manifest))),
               jobs.c.run_id.in_(select(runs.c.id).where(runs.c.manifest_sha256 == scope.sha256)))
