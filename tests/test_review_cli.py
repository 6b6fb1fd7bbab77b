"""`batchgen review` on the command line: deciding with --set and --from (every reference and
line checked first, nothing recorded on a problem), the status line, and the server started
as a real process that prints its URL once and serves the page until interrupted."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import urllib.request

from batchgen.ledger import Ledger
from conftest import run_cli
from reviewpage import night


def _ids(ledger) -> dict[str, dict]:
    led = Ledger(str(ledger), create=False)
    try:
        return {f"{j['name']}/{j['take']}": j for j in led.iter_export()}
    finally:
        led.close()


def test_set_and_from_on_the_command_line(sim, tmp_path):
    ledger = night(sim, tmp_path, shots=2, hostile=False)
    jobs = _ids(ledger)
    a, b, c = jobs["shot00/1"], jobs["shot00/2"], jobs["shot01/1"]
    r = run_cli(["review", "--ledger", str(ledger), "--set", "approve", a["key"][:12], str(c["id"]),
                 "--reviewer", "ann", "--note", "hero"])
    assert r.exit_code == 0 and "recorded 2 decision(s)" in r.stderr
    r = run_cli(["review", "--ledger", str(ledger), "--set", "pick", str(b["id"]), "--reviewer", "ann"])
    assert r.exit_code == 0
    r = run_cli(["review", "--ledger", str(ledger), "--set", "reject", "nosuchjob", str(a["id"])])
    assert r.exit_code == 2 and "nosuchjob: no such job" in r.stderr and "nothing was recorded" in r.stderr
    doc = json.loads(run_cli(["status", "--ledger", str(ledger), "--json"]).stdout)
    assert doc["review"] == {"pending": 1, "approve": 3, "retake": 0, "reject": 0}
    assert "review: pending=1  approve=3  retake=0  reject=0" in run_cli(["status", "--ledger", str(ledger)]).stdout
    out = tmp_path / "d.csv"
    assert run_cli(["export", "--ledger", str(ledger), "-o", str(out)]).exit_code == 0
    rows = list(csv.DictReader(out.open()))
    by = {f"{r['name']}/{r['take']}": r for r in rows}
    assert (by["shot00/2"]["review"], by["shot00/2"]["pick"], by["shot00/1"]["review_note"]) == ("approve", "True", "hero")
    for r in rows:
        if r["name"] == "shot01" and r["take"] == "2":
            r["review"] = "retake"
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    r = run_cli(["review", "--ledger", str(ledger), "--from", str(out), "--reviewer", "bob"])
    assert r.exit_code == 0 and "recorded 1 decision(s)" in r.stderr, r.stderr
    r = run_cli(["review", "--ledger", str(ledger), "--set", "approve"])
    assert r.exit_code == 2 and "--set needs the JOB" in r.stderr
    r = run_cli(["review", "--ledger", str(ledger), "--from", str(out), "--set", "approve", "1"])
    assert r.exit_code == 2


def test_the_server_prints_its_url_once_and_serves_until_interrupted(sim, tmp_path):
    ledger = night(sim, tmp_path, shots=2, hostile=False)
    env = {k: v for k, v in os.environ.items() if k != "BATCHGEN_API_KEY"}
    p = subprocess.Popen([sys.executable, "-m", "batchgen", "review", "--ledger", str(ledger), "--port", "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        url = p.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and "/#token=" in url
        base, token = url.split("/#token=")
        req = urllib.request.Request(base + "/api/clips", headers={"X-Review-Token": token})
        doc = json.loads(urllib.request.urlopen(req, timeout=20).read())
        assert doc["counts"]["pending"] == 4 and len(doc["shots"]) == 2  # files found from the run's --out
        assert all(t["where"] == "local" for s in doc["shots"] for t in s["takes"])
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20)
        assert p.returncode == 0 and out == "" and "4 of 4 clip(s) waiting for review" in err
        assert token not in err  # printed once, on stdout
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
