"""Configuration is never a job failure (issue 18): a bad --api-base is refused before anything is
recorded; an API that cannot be reached (refused, a URL the HTTP library rejects) stops the run
and leaves every job where it was — queued, or polled again by the next run — never FAILED, so
the next run with the right configuration simply goes on."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
from pathlib import Path

import pytest

from batchgen.client import Client, Secret, check_api_base
from batchgen.ledger import Ledger
from batchgen.manifest import Manifest
from batchgen.runner import api_identity, execute, prepare
from batchgen.scheduler import RunOptions
from conftest import KEY, check_invariants, run_args, run_cli, write_csv_manifest


@pytest.mark.parametrize("url, why", [
    ("127.0.0.1:9", "is not an http(s) URL (did you mean http://127.0.0.1:9 ?)"),
    ("ftp://api.example.com", "is not an http(s) URL"),
    ("http://", "has no host"),
    ("http://[::1", "is not a valid URL"),
    ("http://api.example.com:99999", "invalid host or port"),
    ("http://a..b", "invalid host or port"),
    ("https://api.example.com/?key=1", "must not have a query"),
    ("https://api exam.com", "white space"),
    ("", "is empty"),
])
def test_check_api_base_names_the_problem(url, why):
    assert why in (check_api_base(url) or "")


@pytest.mark.parametrize("url", ["https://api.foxapi.cc", "http://127.0.0.1:8787", "http://localhost:8787/",
                                 "http://[::1]:8080", "https://api.example.com/prefix/"])
def test_check_api_base_accepts_http_urls_with_a_host(url):
    assert check_api_base(url) is None


def test_an_api_base_without_scheme_is_a_usage_error_before_any_ledger(tmp_path):
    """The reported case: every job FAILED `transport_NonHttpUrlClientError`, exit 1, and no
    later run could undo it."""
    m = write_csv_manifest(tmp_path / "m.csv", 3)
    r = run_cli(["run", str(m), "--api-base", "127.0.0.1:9", "--ledger", str(tmp_path / "l.db"),
                 "--out", str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --api-base '127.0.0.1:9' is not an http(s) URL (did you mean http://127.0.0.1:9 ?) "
                      "— nothing was submitted"]
    assert "Traceback" not in r.output
    assert not (tmp_path / "l.db").exists() and not (tmp_path / "out").exists()
    r = run_cli(["run", str(m), "--ledger", str(tmp_path / "l.db")], BATCHGEN_API_BASE="localhost:8787")
    assert r.exit_code == 2 and "--api-base 'localhost:8787'" in r.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed when the block ends: connections are refused


def _states(ledger: Path) -> dict[str, int]:
    led = Ledger(str(ledger))
    try:
        return led.counts()
    finally:
        led.close()


@pytest.mark.slow
def test_an_api_that_refuses_connections_leaves_every_job_queued(sim, tmp_path):
    m = write_csv_manifest(tmp_path / "m.csv", 6)
    args = run_args(sim, m, tmp_path, "--outage-window", "2", "--json")
    args[args.index("--api-base") + 1] = f"http://127.0.0.1:{_closed_port()}"
    r = run_cli(args)
    s = json.loads(r.stdout)
    assert r.exit_code == 3 and "no answer from the API" in s["reason"] and "connection refused" in s["reason"], s
    assert s["counts"] == {"queued": 6} and s["failed"] == [] and s["in_doubt"] == []
    assert s["credits_estimated"] == 0  # every reservation given back: not -1.77636e-14
    r = run_cli([a for a in args if a != "--json"])
    assert "(estimated 0)" in r.stderr, r.stderr
    # the right URL: the next run just goes on
    r = run_cli(run_args(sim, m, tmp_path, "--json"))
    assert r.exit_code == 0 and json.loads(r.stdout)["counts"] == {"done": 6}, r.output
    stats = check_invariants(sim.truth(), tmp_path / "l.db", tmp_path / "out")
    assert stats["creates"] == 6 and stats["duplicates"] == 0


@pytest.mark.slow
def test_a_request_url_the_client_rejects_stops_the_run_and_fails_no_job(sim_factory, tmp_path):
    """Past the up-front check (a library caller handing execute() its own client): an unusable
    request URL is a configuration error — exit 2, creates never attempted stay queued, tasks
    already created keep their ids and are polled by the next run."""
    sim = sim_factory(render_min=3.0, render_max=4.0)
    m = write_csv_manifest(tmp_path / "m.csv", 6)
    # run 1 creates three tasks and stops polling them after 1 s (their ids stay recorded)
    r = run_cli(run_args(sim, m, tmp_path, "--task-timeout", "1", "--max-credits", "10", "--json"))
    assert r.exit_code == 3, r.output
    before = _states(tmp_path / "l.db")
    assert before.get("queued") and sum(v for k, v in before.items() if k in ("submitted", "rendering")), before
    # run 2: the same ledger, a client whose base URL aiohttp refuses
    led = Ledger(str(tmp_path / "l.db"))
    try:
        opts = RunOptions(out_dir=tmp_path / "out", rpm=None, poll_min=0.05, api=api_identity(sim.url, False))
        prepared = prepare(led, Manifest(m), opts)

        async def go():
            async with Client("127.0.0.1:9", Secret(KEY)) as client:
                return await execute(led, prepared, opts, client, asyncio.Event())

        result = asyncio.run(go())
    finally:
        led.close()
    assert result.exit_code == 2 and "check --api-base" in (result.reason or ""), result
    assert result.failed == [] and result.in_doubt == []
    assert _states(tmp_path / "l.db") == before  # nothing moved: no FAILED, no in doubt
    # run 3, the right URL: the tasks are collected, nothing is created twice
    r = run_cli(run_args(sim, m, tmp_path, "--json"))
    assert r.exit_code == 0 and json.loads(r.stdout)["counts"] == {"done": 6}, r.output
    stats = check_invariants(sim.truth(), tmp_path / "l.db", tmp_path / "out")
    assert stats["creates"] == 6 and stats["duplicates"] == 0


def test_jobs_an_earlier_version_failed_for_a_bad_url_come_back_with_retry_failed(sim, tmp_path):
    """Ledgers written before this fix hold jobs FAILED `transport_NonHttpUrlClientError`
    (retryable=false): nothing was ever sent for them, so --retry-failed queues them again."""
    m = write_csv_manifest(tmp_path / "m.csv", 3)
    r = run_cli(run_args(sim, m, tmp_path, "--max-credits", "0"))
    assert r.exit_code == 3 and not sim.truth()["creates"]
    with sqlite3.connect(tmp_path / "l.db") as c:  # what the old classification recorded
        c.execute("UPDATE jobs SET state='failed', attempts=1, retryable=0, "
                  "error_code='transport_NonHttpUrlClientError', error_message='NonHttpUrlClientError: 127.0.0.1:9/v1'")
    r = run_cli(run_args(sim, m, tmp_path, "--json"))
    assert r.exit_code == 1 and json.loads(r.stdout)["counts"] == {"failed": 3}
    r = run_cli(run_args(sim, m, tmp_path, "--retry-failed", "--json"))
    assert r.exit_code == 0 and json.loads(r.stdout)["counts"] == {"done": 3}, r.output
    stats = check_invariants(sim.truth(), tmp_path / "l.db", tmp_path / "out")
    assert stats["creates"] == 3 and stats["duplicates"] == 0
