"""Stateful property test of the job life cycle: hypothesis drives the real Scheduler and Ledger
against an in-memory fake API (the client seam) through runs with random faults, crashes at a
random API call (the ledger is frozen there, exactly as if the process had died) followed by a
restart, and operator resolutions of in-doubt jobs. After every step the money invariants of
batchgen.audit must hold."""

from __future__ import annotations

import asyncio
import atexit
import functools
import hashlib
import json
import random
import shutil
import tempfile
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from batchgen import media
from batchgen.audit import audit
from batchgen.client import Api, TaskInfo
from batchgen.errors import ApiError, DownloadError, ErrorClass
from batchgen.files import AtomicFile
from batchgen.ledger import Ledger, Transition
from batchgen.manifest import Manifest
from batchgen.runner import execute, prepare
from batchgen.scheduler import RunOptions
from batchgen.jobs import request_sha256 as canonical_sha256
from batchgen.simulator import mp4_bytes
from conftest import write_csv_manifest

N_JOBS = 5
P = st.sampled_from([0.0, 0.0, 0.2, 0.5])


class FreezableLedger(Ledger):
    """After ``frozen`` is set, writes are lost, as they would be in a process that died."""

    frozen = False

    def apply(self, batch):  # type: ignore[override]
        if self.frozen:
            return [False] * len(batch)
        return super().apply(batch)

    def finish_run(self, run_id: int, status: str, exit_code: int | None = None) -> None:
        if not self.frozen:
            super().finish_run(run_id, status, exit_code)


class FakeAPI(Api):
    """In-memory API with scripted faults and ground truth (every create it accepted)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.tasks: dict[str, dict[str, Any]] = {}
        self.faults: dict[str, float] = {}
        self.crash_at: int | None = None
        self.crash_after_call = False
        self.calls = 0
        self.dead = False
        self.on_crash: Any = None

    # ----------------------------------------------------------------- crash model
    def _begin(self) -> None:
        """Every API call: refused once the process is dead, and the crash may strike first."""
        if self.dead:
            raise ApiError(ErrorClass.SAFE, "dead", code="dead")
        self.calls += 1
        self._maybe_die(after=False)

    def _maybe_die(self, after: bool) -> None:
        if self.crash_at is not None and self.calls >= self.crash_at and after == self.crash_after_call:
            self.dead = True
            self.on_crash()
            raise ApiError(ErrorClass.SAFE, "the process died here", code="dead")

    def _p(self, name: str) -> bool:
        return self.rng.random() < self.faults.get(name, 0.0)

    # ----------------------------------------------------------------- client interface
    async def create(self, request: dict[str, Any]) -> TaskInfo:
        self._begin()
        if self._p("429"):
            raise ApiError(ErrorClass.SAFE, "HTTP 429", status=429, code="rate_limit_error", retry_after=0.0)
        if self._p("ambiguous_before"):
            raise ApiError(ErrorClass.AMBIGUOUS, "reset before the server saw it", code="transport_reset")
        tid = f"task-fake-{len(self.tasks):05d}"
        self.tasks[tid] = {"body": canonical_sha256(request), "polls_left": self.rng.randint(0, 2),
                           "outcome": "failed" if self._p("task_failed") else "completed",
                           "size": self.rng.randint(500, 3000)}
        self._maybe_die(after=True)
        if self._p("ambiguous_after"):
            raise ApiError(ErrorClass.AMBIGUOUS, "HTTP 500 after create", status=500, code="server_error")
        return TaskInfo(task_id=tid, status="pending", estimated_time=0.0, credits=1.0)

    async def get_task(self, task_id: str, *, sync_upstream: bool = False) -> TaskInfo:
        self._begin()
        if self._p("poll_error"):
            raise ApiError(ErrorClass.SAFE, "HTTP 503", status=503, code="service_unavailable_error")
        t = self.tasks[task_id]
        if t["polls_left"] > 0:
            t["polls_left"] -= 1
            return TaskInfo(task_id=task_id, status="processing", progress=50, estimated_time=0.0, credits=1.0)
        if t["outcome"] == "failed":
            return TaskInfo(task_id=task_id, status="failed", error_code="generation_failed", error_message="x", credits=1.0)
        return TaskInfo(task_id=task_id, status="completed", progress=100, urls=[f"https://cdn.test/{task_id}.mp4"], credits=1.0)

    async def download(self, url: str, final: Path) -> tuple[int, str]:
        try:
            self._begin()
        except ApiError:
            raise DownloadError("dead") from None  # the real client raises DownloadError here
        if self._p("download_error"):
            raise DownloadError("connection reset mid-body")
        tid = url.rsplit("/", 1)[1][:-4]
        data = mp4_bytes(tid, self.tasks[tid]["size"])
        with AtomicFile(final) as f:
            f.write(data)
            f.commit()
        try:
            self._maybe_die(after=True)  # renamed, never recorded
        except ApiError:
            raise DownloadError("dead") from None
        return len(data), hashlib.sha256(data).hexdigest()

    async def upload(self, path: Path, file_name: str) -> str:  # pragma: no cover - no local inputs here
        raise AssertionError("unused")

    def truth(self) -> dict[str, Any]:
        return {"creates": [{"task_id": tid, "body_sha256": t["body"],
                             "file_sha256": hashlib.sha256(mp4_bytes(tid, t["size"])).hexdigest()
                             if t["outcome"] == "completed" else None} for tid, t in self.tasks.items()]}


@functools.cache
def _empty_ledger() -> Path:
    """A new ledger, migrated to head once per process. Each example starts from a copy: the
    migrations (17 of them, alembic's import included) were a quarter of the test's time, 50
    times over, and they are not what it is about (test_migrations.py and every other test that
    opens a new ledger run them). The copy is a ledger like any other: the first run finds
    it empty, records its manifest and runs it."""
    folder = Path(tempfile.mkdtemp(prefix="bg-stateful-template-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    Ledger(str(folder / "l.db")).close()
    return folder


_REAL_POOL = media.pool


class _KeptPool(Executor):
    """The verification pool of every run of this test: one real ``media.pool`` (a spawned
    worker process, as a run's), started once and kept, where each run started its own and shut
    it down at its end. Starting a pool is new interpreters importing batchgen.media and PyAV,
    some 30 times over (every run that downloads a clip), and seconds of waiting each under
    load; what the test checks (the ledger's states, the money) meets the clip's verdict the same
    way (the same ``media.inspect``, in another process). Starting and stopping a pool is tested
    where it matters (test_verification.py, and test_kill.py's runs, killed with theirs)."""

    def __init__(self) -> None:
        self.inner = _REAL_POOL(1)  # media.pool itself is this class's while a run runs
        atexit.register(self.inner.shutdown, wait=True, cancel_futures=True)

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self.inner.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """A run's end: the pool is kept for the next run (a run ends only once its checks did)."""


@functools.cache
def _kept_pool() -> _KeptPool:
    return _KeptPool()


class JobLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="bg-stateful-"))
        for f in _empty_ledger().iterdir():  # l.db (and its -wal, were one left)
            shutil.copy(f, self.dir / f.name)
        self.manifest = write_csv_manifest(self.dir / "m.csv", N_JOBS)
        self.api = FakeAPI(seed=len(str(self.dir)))
        self.runs = 0
        self._reader: Ledger | None = None

    def teardown(self) -> None:
        if self._reader is not None:
            self._reader.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def reader(self) -> Ledger:
        """The example's ledger opened read-only once, for the audit after every step and the
        operator's look at what is in doubt; closed (its connections, never its engine) after
        each use, so that no connection is open while a step runs. A new open for each of them
        made a new SQLAlchemy engine that compiled every statement again (3 of 4 opens of this
        test). Each run still opens the ledger anew (a process restart is what a run after a
        crash is), and so does each resolution that writes."""
        if self._reader is None:
            self._reader = Ledger(str(self.dir / "l.db"), create=False, readonly=True)
        return self._reader

    def _opts(self, retry_failed: bool) -> RunOptions:
        return RunOptions(out_dir=self.dir / "out", concurrency=3, rpm=None, poll_min=0.01, task_timeout=30,
                          submit_retries=3, download_retries=2, retry_base=0.001, retry_failed=retry_failed,
                          stop_check_every=0.05)

    @rule(p429=P, amb_before=P, amb_after=P, failed=P, poll_error=P, dl_error=P,
          crash=st.one_of(st.none(), st.integers(1, 25)), crash_after_call=st.booleans(), retry_failed=st.booleans())
    def run(self, p429, amb_before, amb_after, failed, poll_error, dl_error, crash, crash_after_call, retry_failed):
        api = self.api
        api.faults = {"429": p429, "ambiguous_before": amb_before, "ambiguous_after": amb_after,
                      "task_failed": failed, "poll_error": poll_error, "download_error": dl_error}
        api.dead = False
        api.calls = 0
        api.crash_at = crash
        api.crash_after_call = crash_after_call
        led = FreezableLedger(str(self.dir / "l.db"))
        stop = asyncio.Event()

        def die() -> None:
            led.frozen = True
            stop.set()

        api.on_crash = die
        try:
            opts = self._opts(retry_failed)
            prepared = prepare(led, Manifest(self.manifest), opts)

            async def main() -> None:
                await asyncio.wait_for(execute(led, prepared, opts, api, stop), 60)  # type: ignore[arg-type]

            with mock.patch.object(media, "pool", lambda workers=None: _kept_pool()):
                asyncio.run(main())
        finally:
            led.close()
        self.runs += 1

    # Choices are drawn before looking at the ledger: what is in doubt depends on scheduling, and
    # hypothesis needs the same draws whatever the state (replayable examples).
    @rule(pick=st.integers(0, 1000), action=st.sampled_from(["adopt", "resubmit", "abandon"]))
    def resolve_in_doubt(self, pick, action):
        reader = self.reader()
        try:
            doubt = reader.jobs_in_state("in_doubt")
            known = reader.known_task_ids()
        finally:
            reader.close()
        if not doubt:
            return
        led = Ledger(str(self.dir / "l.db"))
        try:
            j = doubt[pick % len(doubt)]
            body = canonical_sha256(json.loads(j["request"]))
            orphan = next((tid for tid, t in self.api.tasks.items() if t["body"] == body and tid not in known), None)
            if action == "adopt" and orphan:
                t = Transition(j["id"], "submitted", ("in_doubt",), {"submitted_at": 1.0}, task_id=orphan,
                               detail="resolved by operator: adopted task")
            elif action == "abandon":
                t = Transition(j["id"], "cancelled", ("in_doubt",), {"error_code": "abandoned"},
                               detail="resolved by operator: abandon")
            else:
                t = Transition(j["id"], "queued", ("in_doubt",), {}, detail="resolved by operator: resubmit")
            assert led.apply([t]) == [True]
        finally:
            led.close()

    @invariant()
    def money_invariants(self):
        if not (self.dir / "l.db").exists():
            return
        reader = self.reader()
        try:
            a = audit(self.api.truth(), reader, self.dir / "nonexistent-out-for-temp-check")
        finally:
            reader.close()
        assert a.unknown == 0, a.violations
        assert a.duplicates == 0, a.violations
        assert a.invented == 0, a.violations
        assert a.corrupt_files == 0, a.violations
        assert a.integrity == "ok"


JobLifecycle.TestCase.settings = settings(max_examples=50, stateful_step_count=6, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
TestJobLifecycle = JobLifecycle.TestCase
pytestmark = pytest.mark.slow  # 50 examples of up to 6 runs each: minutes
