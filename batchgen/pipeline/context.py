"""What every stage of a run shares. So far: ``RunOptions`` (a run's configuration) and
``ApiWatch``, the ``Api`` the scheduler calls: the real one, watched for an outage (the scheduler
decides what an outage means).

May not touch: a job's state, the ledger.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import deliver
from ..client import Api, TaskInfo
from ..cost import PriceTable
from ..errors import ApiError
from ..specs import Catalog


@dataclass
class RunOptions:
    out_dir: Path
    concurrency: int = 8  # jobs in flight (from create until downloaded)
    rpm: float | None = 60.0  # API requests per minute (creates + polls)
    poll_min: float = 2.0
    poll_max: float = 60.0
    task_timeout: float = 2 * 3600.0  # stop polling a task after this (its id stays recorded)
    submit_retries: int = 8  # SAFE create failures before a job is left queued for the next run
    download_retries: int = 6
    poll_404_grace: float = 60.0
    retry_base: float = 1.0  # seconds: base of the jittered exponential backoff of create/download retries
    retry_failed: bool = False
    max_attempts: int = 3  # creates per job, for --retry-failed
    max_credits: float | None = None  # stop submitting before this run's estimated spend passes it
    prices: PriceTable = field(default_factory=PriceTable.load)
    stop_check_every: float = 2.0  # seconds between looks at the ledger's stop flag
    local_files: dict[str, Path] = field(default_factory=dict)  # sha256 → path, from the manifest
    upload_reuse: float = 6 * 3600.0  # reuse an uploaded file's URL for this long
    heartbeat: float = 5.0  # cooperative (PostgreSQL) ledgers: seconds between lease renewals
    lease: float = 30.0  # a worker silent this long is dead: its jobs are taken over
    outage_window: float = 180.0  # no answer from the API for this long: stop, keep task ids for the next run
    api: str = ""  # identity of the API tasks are created on (runner.api_identity), recorded per job
    verify: bool = True  # inspect every delivered clip (media.py) in a worker process
    on_mismatch: str = "keep"  # keep (and flag) | fail (retryable: --retry-failed renders it again)
    pictures: bool = True  # a poster frame and a contact sheet per clip, under <out>/.batchgen/
    deliver: deliver.Store | None = None  # upload each finished clip (and its pictures) there
    # Where this manifest's clips are owed (recorded per job): the store's destination, or the
    # manifest's `deliver:` on a --no-deliver night (delivered by a later run or `batchgen deliver`).
    deliver_owed: str | None = None
    deliver_threads: int = 4  # uploads in flight
    prune_local: bool = False  # remove the local clip (and its pictures) once it is delivered
    metrics_file: Path | None = None  # Prometheus textfile, rewritten every metrics_every seconds
    metrics_every: float = 30.0
    catalog: Catalog | None = None  # the manifest's model catalog (verification); None: the shipped one


class ApiWatch(Api):
    """The ``Api`` the scheduler uses: the real one, watched. Any HTTP answer (even an error)
    means the API is there; a request that got no answer at all (refused, DNS, TLS, timeout)
    starts an outage, or continues one. ``outage`` is (since, cause) while nothing answers."""

    def __init__(self, inner: Api, on_outage: Callable[[str], None]) -> None:
        self.inner = inner
        self.on_outage = on_outage
        self.outage: tuple[float, str] | None = None

    def _saw(self, e: ApiError | None) -> None:
        if e is None or e.unreachable is None:
            self.outage = None
            return
        if self.outage is None:
            self.outage = (time.monotonic(), e.unreachable)
            self.on_outage(e.unreachable)

    async def create(self, request: dict[str, Any]) -> TaskInfo:
        try:
            info = await self.inner.create(request)
        except ApiError as e:
            self._saw(e)
            raise
        self._saw(None)
        return info

    async def get_task(self, task_id: str, *, sync_upstream: bool = False) -> TaskInfo:
        try:
            info = await self.inner.get_task(task_id, sync_upstream=sync_upstream)
        except ApiError as e:
            self._saw(e)
            raise
        self._saw(None)
        return info

    async def upload(self, path: Path, file_name: str) -> str:
        try:
            url = await self.inner.upload(path, file_name)
        except ApiError as e:
            self._saw(e)
            raise
        self._saw(None)
        return url

    async def download(self, url: str, final: Path) -> tuple[int, str]:
        return await self.inner.download(url, final)  # the CDN, not the API: says nothing of its health
