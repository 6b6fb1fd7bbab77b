from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from batchgen.ledger import Ledger
from batchgen.simulator import SimConfig, Simulator, canonical_sha256


class SimThread:
    """The simulator on its own event loop in a background thread, so the code under test (CLI
    runs, subprocesses) talks to it over real loopback HTTP."""

    def __init__(self, config: SimConfig) -> None:
        self.sim = Simulator(config)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.url = ""

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.url = self.loop.run_until_complete(self.sim.start())
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.sim.stop())
        self.loop.close()

    def start(self) -> SimThread:
        self.thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def set(self, **values: Any) -> None:
        req = urllib.request.Request(self.url + "/_sim/config", data=json.dumps(values).encode(), method="POST")
        urllib.request.urlopen(req, timeout=10).read()

    def truth(self) -> dict[str, Any]:
        return json.loads(urllib.request.urlopen(self.url + "/_sim/ground-truth", timeout=30).read())


@pytest.fixture
def sim_factory():
    started: list[SimThread] = []

    def make(**knobs: Any) -> SimThread:
        s = SimThread(SimConfig(**{"render_min": 0.05, "render_max": 0.3, **knobs})).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def sim(sim_factory):
    return sim_factory()


def write_csv_manifest(path: Path, n: int, *, model: str = "grok-imagine-text-to-video", prefix: str = "shot") -> Path:
    lines = ["name,model,prompt,duration"]
    for i in range(n):
        lines.append(f"{prefix}{i:04d},{model},A test clip number {i} of a lighthouse,{1 + i % 10}")
    path.write_text("\n".join(lines) + "\n")
    return path


def check_invariants(truth: dict[str, Any], ledger_path: Path | str, out_dir: Path) -> dict[str, int]:
    """The money invariants, checked against the simulator's ground truth:
    - no create is unknown to the ledger unless its job is in doubt;
    - a job that is not in doubt was created at most once per recorded task id (no duplicates);
    - every done file is at its path, hashes to what the ledger says and to what was served;
    - no temp file is left and the SQLite file passes integrity_check."""
    led = Ledger(str(ledger_path))
    try:
        jobs = list(led.iter_export())
        known = led.known_task_ids()
        assert led.check_integrity() == "ok"
        task_ids_per_job: dict[int, set[str]] = {}
        for j in jobs:
            ids = {e["task_id"] for e in led.events_for(j["id"]) if e["task_id"]}
            if j["task_id"]:
                ids.add(j["task_id"])
            task_ids_per_job[j["id"]] = ids
    finally:
        led.close()
    by_body: dict[str, list[dict[str, Any]]] = {}
    for j in jobs:
        by_body.setdefault(canonical_sha256(json.loads(j["request"])), []).append(j)
    creates = truth["creates"]
    served = {c["task_id"]: c for c in creates}
    creates_per_body: dict[str, int] = {}
    unknown = 0
    for c in creates:
        creates_per_body[c["body_sha256"]] = creates_per_body.get(c["body_sha256"], 0) + 1
        owners = by_body.get(c["body_sha256"], [])
        assert owners, f"create {c['task_id']} matches no job in the ledger"
        if c["task_id"] not in known:
            unknown += 1
            assert any(o["state"] == "in_doubt" for o in owners), \
                f"create {c['task_id']} is unknown to the ledger and its job is not in doubt: {[o['state'] for o in owners]}"
    duplicates = 0
    for body, owners in by_body.items():
        if any(o["state"] == "in_doubt" for o in owners):
            continue
        recorded = sum(len(task_ids_per_job[o["id"]]) for o in owners)
        extra = creates_per_body.get(body, 0) - recorded
        assert extra <= 0, f"{extra} duplicate create(s) for job(s) {[o['name'] for o in owners]}"
        duplicates += max(0, extra)
    for tid in known:
        assert tid in served, f"ledger task id {tid} was never created by the API"
    done = 0
    for j in jobs:
        if j["state"] != "done":
            continue
        done += 1
        p = Path(j["output_path"])
        data = p.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        assert sha == j["sha256"] and len(data) == j["bytes"], f"{p} differs from the ledger"
        assert sha == served[j["task_id"]]["file_sha256"], f"{p} differs from what the API served"
    leftovers = list(out_dir.rglob("*.part")) if out_dir.exists() else []
    assert not leftovers, f"temp files left: {leftovers}"
    return {"jobs": len(jobs), "done": done, "creates": len(creates), "unknown_in_doubt": unknown,
            "duplicates": duplicates, "in_doubt": sum(j["state"] == "in_doubt" for j in jobs)}


PG_BASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_url():
    """A private schema in the `test` database of the local PostgreSQL server. In CI (CI=true)
    an unreachable server is a failure, never a silent skip."""
    import os
    import secrets

    from sqlalchemy import create_engine, text

    engine = create_engine(PG_BASE)
    try:
        with engine.connect() as c:
            c.execute(text("SELECT 1"))
    except Exception as e:  # noqa: BLE001 - any connection problem
        engine.dispose()
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required in CI: {e}")
        pytest.skip(f"PostgreSQL not reachable: {e}")
    schema = "bg_" + secrets.token_hex(4)
    with engine.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    with engine.begin() as c:
        c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()
