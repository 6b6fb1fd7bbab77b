"""Nightly-run plumbing: `batchgen diff` (what changed since last night, and its cost), one
notification per run (a local HTTP receiver through apprise's json:// service), and the
Prometheus textfile written during and at the end of a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from batchgen.cost import PriceTable
from conftest import KEY, run_args, run_cli, write_csv_manifest

ROOT = Path(__file__).resolve().parent.parent
MODEL = "grok-imagine-text-to-video"


def _yaml(path: Path, jobs: list[str]) -> Path:
    path.write_text(f"defaults: {{model: {MODEL}, duration: 6, resolution: 480p}}\njobs:\n"
                    + "".join(f"  - {j}\n" for j in jobs))
    return path


# ------------------------------------------------------------------------------------ diff
@pytest.mark.slow
def test_diff_names_added_removed_changed_and_the_credit_delta(sim_factory, tmp_path):
    sim = sim_factory(seed=21)
    m = _yaml(tmp_path / "m.yaml", ["{name: a, prompt: a lighthouse}", "{name: b, prompt: a harbour}",
                                    "{name: c, prompt: a storm}"])
    assert run_cli(run_args(sim, m, tmp_path)).exit_code == 0
    _yaml(m, ["{name: a, prompt: a lighthouse}", "{name: b, prompt: a harbour, duration: 10}",
              "{name: d, prompt: a forest}"])
    r = run_cli(["diff", str(m), "--ledger", str(tmp_path / "l.db"), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    prices = PriceTable.load()
    six = prices.estimate({"model": MODEL, "prompt": "x", "duration": 6, "resolution": "480p"})
    ten = prices.estimate({"model": MODEL, "prompt": "x", "duration": 10, "resolution": "480p"})
    assert six and ten and ten > six
    assert [j["name"] for j in doc["added"]] == ["d"] and [j["name"] for j in doc["removed"]] == ["c"]
    assert doc["removed"][0]["state"] == "done"
    assert [(j["name"], j["fields"]) for j in doc["changed"]] == [("b", ["duration 6→10"])]
    assert doc["unchanged"] == 1 and doc["unchanged_done"] == 1
    c = doc["credits"]
    assert c["last"] == pytest.approx(3 * six) and c["now"] == pytest.approx(2 * six + ten)
    assert c["delta"] == pytest.approx(ten - six) and c["tonight"] == pytest.approx(six + ten)  # d and the new b
    assert doc["last_run"]["exit_code"] == 0
    text = run_cli(["plan", str(m), "--diff", "--ledger", str(tmp_path / "l.db")])
    assert text.exit_code == 0
    assert "1 added, 1 removed, 1 changed, 1 unchanged (1 done)" in text.stdout
    assert "~ b.mp4  (b): duration 6→10" in text.stdout and "+ d.mp4" in text.stdout and "- c.mp4" in text.stdout
    # After tonight's run the manifest is what the ledger last ran: nothing changed, nothing to pay.
    assert run_cli(run_args(sim, m, tmp_path)).exit_code == 0
    doc = json.loads(run_cli(["diff", str(m), "--ledger", str(tmp_path / "l.db"), "--json"]).stdout)
    assert (doc["added"], doc["removed"], doc["changed"], doc["unchanged"]) == ([], [], [], 3)
    assert doc["credits"]["delta"] == 0 and doc["credits"]["tonight"] == 0


def test_diff_of_a_prompt_edit_and_without_a_ledger(tmp_path, monkeypatch):
    m = _yaml(tmp_path / "m.yaml", ["{name: a, prompt: a lighthouse at dusk with seagulls over the water}"])
    # Before the first run (no ledger named, none at ./batchgen.db): all new.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BATCHGEN_LEDGER", raising=False)
    r = run_cli(["diff", str(m), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["last_run"] is None and len(doc["added"]) == 1 and doc["credits"]["tonight"] > 0
    assert not (tmp_path / "batchgen.db").exists()  # read-only: no ledger created
    # A named ledger that does not exist is a mistake, not an empty ledger (issue 19), named by
    # --ledger or by BATCHGEN_LEDGER alike (issue 28).
    r = run_cli(["diff", str(m), "--ledger", str(tmp_path / "none.db")])
    assert r.exit_code == 2 and "no ledger at" in r.output
    r = run_cli(["diff", str(m)], BATCHGEN_LEDGER=str(tmp_path / "none.db"))
    assert r.exit_code == 2 and "no ledger at" in r.output
    assert not (tmp_path / "none.db").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("jobs:\n  - {name: a, model: grok-imagine-text-to-video, prompt: x, duration: 99}\n")
    # the ledger is checked before the manifest is expanded (issue 28) …
    r = run_cli(["diff", str(bad), "--ledger", str(tmp_path / "none.db")])
    assert r.exit_code == 2 and "no ledger at" in r.output and "duration" not in r.output
    # … and the manifest's problems are named once the ledger is right
    r = run_cli(["diff", str(bad)])
    assert r.exit_code == 2 and "bad.yaml" in r.output and "duration" in r.output


# ------------------------------------------------------------------------------------ notify
class _Receiver:
    """A local webhook: records every POST body."""

    def __init__(self, status: int = 200) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = _Receiver()
    yield r
    r.close()


@pytest.mark.slow
def test_one_notification_per_run_with_what_the_morning_needs(sim_factory, receiver, tmp_path):
    sim = sim_factory(seed=22, p500_after=0.5, p_fail=0.2)
    m = write_csv_manifest(tmp_path / "m.csv", 8)
    r = run_cli(run_args(sim, m, tmp_path, "--notify", receiver.url, "--max-credits", "500", "--report",
                         str(tmp_path / "report.html"), "--json"))
    summary = json.loads(r.stdout)
    assert len(receiver.received) == 1
    msg = receiver.received[0]
    assert msg["title"].startswith(f"batchgen run {summary['run_id']}: exit {r.exit_code}")
    body = msg["message"]
    assert f"run id {summary['run_id']}" in body and str(tmp_path / "report.html") in body
    assert "of --max-credits 500" in body and "jobs: " in body
    if summary["in_doubt"]:
        assert f"IN DOUBT: {len(summary['in_doubt'])} job(s)" in body and "credits at risk" in body
        assert msg["type"] == "warning"
    assert (tmp_path / "report.html").exists()
    assert KEY not in json.dumps(msg)


def test_a_failing_notification_never_fails_the_run(sim_factory, tmp_path):
    sim = sim_factory(seed=23)
    m = write_csv_manifest(tmp_path / "m.csv", 2)
    dead = _Receiver(status=500)
    try:
        # (a URL apprise cannot parse at all is refused before the run: tests/test_preflight.py)
        r = run_cli(run_args(sim, m, tmp_path, "--notify", dead.url, "--notify", "json://127.0.0.1:9/secret-token"))
    finally:
        dead.close()
    assert r.exit_code == 0, r.output
    assert r.output.count("notification failed") == 2
    assert "secret-token" not in r.output  # notification URLs carry tokens: never logged


def test_a_run_that_cannot_start_still_notifies(receiver, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,model,prompt\na,grok-imagine-refrence-to-video,x\n")
    r = run_cli(["run", str(bad), "--ledger", str(tmp_path / "l.db"), "--notify", receiver.url])
    assert r.exit_code == 2
    assert len(receiver.received) == 1 and "exit 2" in receiver.received[0]["title"]
    assert "bad.csv" in receiver.received[0]["message"]


# ------------------------------------------------------------------------------------ metrics
def _metrics(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(path.read_text()):
        for s in fam.samples:
            out[(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "manifest")))] = s.value
    return out


@pytest.mark.slow
def test_metrics_file_during_and_after_a_run(sim_factory, tmp_path):
    sim = sim_factory(seed=24, render_min=1.5, render_max=2.5)
    m = write_csv_manifest(tmp_path / "m.csv", 6)
    prom = tmp_path / "textfile" / "batchgen.prom"
    prom.parent.mkdir()  # node_exporter's collector folder exists; a missing one is refused (a typo)
    env = {**os.environ, "BATCHGEN_API_KEY": KEY}
    p = subprocess.Popen([sys.executable, "-m", "batchgen", *run_args(sim, m, tmp_path, "-q", "--metrics-file",
                                                                      str(prom), "--progress-every", "1")],
                         env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen_running = None
    deadline = time.monotonic() + 60
    while p.poll() is None and time.monotonic() < deadline:
        if prom.exists():
            got = _metrics(prom)  # always a whole file: written to a temporary name, then renamed
            if got.get(("batchgen_run_running", ())) == 1:
                seen_running = got
        time.sleep(0.2)
    assert p.wait(60) == 0, p.stderr.read()
    assert seen_running is not None and ("batchgen_run_started_timestamp_seconds", ()) in seen_running
    final = _metrics(prom)
    assert final[("batchgen_jobs", (("state", "done"),))] == 6
    assert final[("batchgen_run_running", ())] == 0
    assert final[("batchgen_in_doubt_jobs", ())] == 0
    assert final[("batchgen_run_requests", (("kind", "create"),))] == 6
    assert time.time() - final[("batchgen_last_success_timestamp_seconds", ())] < 60
    assert final[("batchgen_run_exit_code", (("meaning", "every job of the manifest is done"),))] == 0
    assert not list(prom.parent.glob("*.tmp*"))  # no temporary files left behind


def test_metrics_keep_the_last_success_when_a_run_fails(sim_factory, tmp_path):
    sim = sim_factory(seed=25)
    m = write_csv_manifest(tmp_path / "m.csv", 3)
    prom = tmp_path / "b.prom"
    assert run_cli(run_args(sim, m, tmp_path, "--metrics-file", str(prom))).exit_code == 0
    ok_at = _metrics(prom)[("batchgen_last_success_timestamp_seconds", ())]
    sim.set(p500_after=1.0)
    write_csv_manifest(m, 5)  # two new jobs, both creates ambiguous → in doubt
    r = run_cli(run_args(sim, m, tmp_path, "--metrics-file", str(prom)))
    assert r.exit_code == 1
    got = _metrics(prom)
    assert got[("batchgen_in_doubt_jobs", ())] == 2
    assert got[("batchgen_last_success_timestamp_seconds", ())] == ok_at
    assert got[("batchgen_run_exit_code", (("meaning", "some jobs failed or are in doubt, or a clip is not what "
                                                       "was asked"),))] == 1
