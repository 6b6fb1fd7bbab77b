"""No secret is ever printed, logged, stored or sent: one redaction (``redact.url``) for every
URL; credentials in an ``s3://`` URL or ``--deliver-endpoint`` are refused; a notification never
changes a run's exit code and one URL's complaint never shows on another's line; ``plan``
refuses the destinations ``run`` refuses. The canary test runs everything at once — API key,
AWS secret, apprise token, URL password — and searches every output for them."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from batchgen import notify, redact
from conftest import run_args, run_cli, write_csv_manifest
from test_nightly import _Receiver

ROOT = Path(__file__).resolve().parent.parent
DEST = "s3://renders/nightly/"


def _dead_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("url, shown", [
    ("prowl://APIKEYSECRET123", "prowl://…"),
    ("slack://T1AAAAAAA/B2BBBBBBB/C3CCCCCCCCCC/#chan", "slack://…"),
    ("json://user:hunter2pass@hooks.example.com/secret-path?token=abc123", "json://***@hooks.example.com/…?…"),
    ("json://127.0.0.1:9/secret-token", "json://127.0.0.1:9/…"),
    ("json://[::1/hook", "json://…"),
    ("tgram://123456789:ABCdefGHI/12345", "tgram://…"),
    ("pover://userkeyabc@tokenabc", "pover://***@…"),
    ("slack", "…"),
    ("http://AKIA:wJalrXUtnFEMI@minio.local:9000", "http://***@minio.local:9000"),
    ("s3://renders/nightly/", "s3://renders/nightly/"),
    ("s3://KEY:SECRET@renders/x/", "s3://***@renders/x/"),
    ("s3://renders/a\x1b[31mred/", "s3://renders/a\\x1b[31mred/"),
])
def test_one_redaction_for_every_url(url, shown):
    assert redact.url(url) == shown


def test_notify_check_refuses_what_apprise_cannot_parse_redacted():
    problems = notify.check(["json://[::1/hook", "slack", "prowl://APIKEYSECRET123", "no-such-scheme://x",
                             "json://127.0.0.1:9/hook"])
    assert len(problems) == 4
    assert problems[0].startswith("--notify json://…: not a notification URL")
    assert problems[1].startswith("--notify …: not a URL")
    assert "APIKEYSECRET123" not in " ".join(problems)


def test_a_broken_notify_url_never_changes_the_exit_code(sim_factory, tmp_path):
    sim = sim_factory(seed=195)
    m = write_csv_manifest(tmp_path / "m.csv", 2)
    r = run_cli(run_args(sim, m, tmp_path, "--notify", "json://[::1/hook"))
    # refused before anything is paid (preflight, exit 2) or, once the run is done, a warning:
    # never the ValueError that turned a successful run into exit 1
    assert r.exit_code in (0, 2), r.output
    assert "Traceback" not in r.output and "ValueError" not in r.output
    assert "json://…" in r.output


def test_each_notify_failure_line_carries_only_its_own_complaint(sim_factory, tmp_path):
    sim = sim_factory(seed=196)
    m = write_csv_manifest(tmp_path / "m.csv", 2)
    dead = _dead_port()
    broken = _Receiver(status=500)
    try:
        r = run_cli(run_args(sim, m, tmp_path, "--notify", f"json://127.0.0.1:{dead}/first-token-aaaa",
                             "--notify", broken.url.replace("/hook", "/second-token-bbbb")))
    finally:
        broken.close()
    assert r.exit_code == 0, r.output
    lines = [x for x in r.output.splitlines() if "notification failed" in x]
    assert len(lines) == 2, r.output
    first, second = lines
    assert f"json://127.0.0.1:{dead}/…" in first
    assert f"json://127.0.0.1:{broken.server.server_port}/…" in second
    # the first one could not connect; the second got an HTTP 500: neither says the other's
    assert "500" in second and "500" not in first.replace(str(dead), "")
    assert ("onnect" in first) and ("onnect" not in second)
    assert "first-token-aaaa" not in r.output and "second-token-bbbb" not in r.output


def test_send_an_unparseable_url_then_a_failing_one_keeps_their_complaints_apart():
    """The library seam (a run refuses unparseable URLs before it starts): apprise's complaint
    about the first URL stayed in the collector and was printed on the second URL's line."""
    broken = _Receiver(status=500)
    try:
        problems = notify.send(["prowl://KEYSECRET1", broken.url], "t", "b")
    finally:
        broken.close()
    assert len(problems) == 2, problems
    assert problems[0].startswith("prowl://…: not a notification URL")
    assert "Prowl" not in problems[1] and "KEYSECRET1" not in " ".join(problems)
    assert problems[1].startswith(f"json://127.0.0.1:{broken.server.server_port}/…: ") and "500" in problems[1]


def test_credentials_in_a_destination_url_are_refused_and_never_echoed(sim_factory, tmp_path):
    sim = sim_factory(seed=197)
    m = write_csv_manifest(tmp_path / "m.csv", 2)
    r = run_cli(run_args(sim, m, tmp_path, "--deliver", "s3://AKIAEXAMPLE:wJalrXUtnSECRETKEY@renders/x/"))
    assert r.exit_code == 2 and "use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in r.output, r.output
    assert "wJalrXUtnSECRETKEY" not in r.output and "AKIAEXAMPLE" not in r.output
    r = run_cli(run_args(sim, m, tmp_path, "--deliver", DEST, "--deliver-endpoint",
                         "http://minio:PASSWORD123@127.0.0.1:9"))
    assert r.exit_code == 2 and "use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in r.output, r.output
    assert "PASSWORD123" not in r.output and "http://***@127.0.0.1:9" in r.output
    y = tmp_path / "d.yaml"
    y.write_text('deliver: "s3://AKIAEXAMPLE:wJalrXUtnSECRETKEY@renders/x/"\n'
                 "jobs:\n  - {name: a, model: grok-imagine-text-to-video, prompt: x, duration: 6}\n")
    for cmd in (["plan", str(y)], run_args(sim, y, tmp_path)):
        # plan before the first run (no ledger named, none at ./batchgen.db): a named ledger that
        # does not exist would be refused first (issue 28), before the manifest is read
        with contextlib.chdir(tmp_path):
            r = run_cli(cmd, BATCHGEN_LEDGER=None)
        assert r.exit_code == 2 and "AWS_ACCESS_KEY_ID" in r.output and "wJalrXUtnSECRETKEY" not in r.output, r.output
    assert sim.truth()["creates"] == []


@pytest.mark.parametrize("dest", ["s3://", "s3://renders/a/./b/", "s3://renders/a\\nb/", "s3://renders/a\\x1b[2Jb/",
                                  "s3://renders/a/../b/", "s3://renders/a//b/",
                                  "s3://Renders/x/", "s3://renders/x/?v=1", "gs://renders/x/"])
def test_plan_refuses_what_run_refuses(sim_factory, tmp_path, dest):
    sim = sim_factory(seed=198)
    y = tmp_path / "d.yaml"
    y.write_text(f'deliver: "{dest}"\njobs:\n  - {{name: a, model: grok-imagine-text-to-video, prompt: x, duration: 6}}\n')
    with contextlib.chdir(tmp_path):  # plan before the first run: no ledger named, none at ./batchgen.db
        p = run_cli(["plan", str(y)], BATCHGEN_LEDGER=None)
    r = run_cli(run_args(sim, y, tmp_path))
    assert p.exit_code == 2 and r.exit_code == 2, (p.output, r.output)
    assert "deliver" in p.output and "deliver" in r.output
    assert sim.truth()["creates"] == []  # refused before the store or the API was asked anything
    m = write_csv_manifest(tmp_path / "m.csv", 1)
    if dest.startswith("s3://") and len(dest) > 5:
        r = run_cli(run_args(sim, m, tmp_path, "--deliver", dest))
        assert r.exit_code == 2 and "--deliver" in r.output, r.output


# ------------------------------------------------------------------------------------ canary
API_KEY = "sk-canary-api-key-7Q3xZp"
URL_PASSWORD = "canary-url-password-K9w2"
APPRISE_TOKEN = "canary-apprise-token-M4v8"
DEAD_TOKEN = "canary-dead-token-R5t1"


@pytest.mark.slow
def test_canary_no_secret_anywhere(sim_factory, s3, tmp_path):
    """One nightly run with every secret set — API key, AWS secret, an apprise token and a URL
    password in the notify URLs — delivering to the S3 server, notifying, writing metrics and a
    report, then an export: none of the secrets in stdout, stderr, the log file, the ledger's
    bytes, the export, the report, the metrics file, the notification payloads or the objects'
    metadata."""
    sim = sim_factory(seed=199, p_fail=0.2)
    m = write_csv_manifest(tmp_path / "m.csv", 5)
    receiver = _Receiver()
    port = receiver.server.server_port
    notify_ok = f"json://canaryuser:{URL_PASSWORD}@127.0.0.1:{port}/{APPRISE_TOKEN}"
    notify_dead = f"json://canaryuser:{URL_PASSWORD}@127.0.0.1:{_dead_port()}/{DEAD_TOKEN}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BATCHGEN_"))},
           **s3.env(), "BATCHGEN_API_KEY": API_KEY}
    secrets = {"API key": API_KEY, "AWS secret": s3.secret, "apprise token": APPRISE_TOKEN,
               "dead apprise token": DEAD_TOKEN, "URL password": URL_PASSWORD}
    try:
        r = subprocess.run([sys.executable, "-m", "batchgen", *run_args(
            sim, m, tmp_path, "--deliver", DEST, "--notify", notify_ok, "--notify", notify_dead,
            "--metrics-file", str(tmp_path / "m.prom"), "--report", str(tmp_path / "report.html"),
            "--log-file", str(tmp_path / "run.log"), "--log-format", "json", "--json", "--max-credits", "1000")],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
        assert r.returncode in (0, 1), r.stderr
        e = subprocess.run([sys.executable, "-m", "batchgen", "export", "--ledger", str(tmp_path / "l.db"), "-o",
                            str(tmp_path / "export.csv")], env=env, cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
        assert e.returncode == 0, e.stderr
    finally:
        receiver.close()
    assert len(receiver.received) == 1 and "notification failed" in r.stderr  # both URLs were used
    objects = s3.client().list_objects_v2(Bucket=s3.BUCKET)["Contents"]
    assert objects  # something was delivered
    metadata = [s3.client().head_object(Bucket=s3.BUCKET, Key=o["Key"]) for o in objects]
    places = {
        "stdout": r.stdout.encode(), "stderr": r.stderr.encode(), "export stderr": (e.stdout + e.stderr).encode(),
        "log file": (tmp_path / "run.log").read_bytes(),
        "export": (tmp_path / "export.csv").read_bytes(), "report": (tmp_path / "report.html").read_bytes(),
        "metrics": (tmp_path / "m.prom").read_bytes(),
        "notification": json.dumps(receiver.received).encode(),
        "object metadata": json.dumps([{k: v for k, v in h.items() if k != "ResponseMetadata"} for h in metadata],
                                      default=str).encode(),
    }
    for f in tmp_path.iterdir():  # the ledger (SQLite file, WAL, journal) and anything beside it
        if f.name.startswith("l.db") and f.is_file():
            places[f"ledger file {f.name}"] = f.read_bytes()
    # The report embeds its data gzipped: search the decoded page data too.
    from conftest import page_data

    places["report data"] = json.dumps(page_data((tmp_path / "report.html").read_text())).encode()
    for where, data in places.items():
        for name, secret in secrets.items():
            assert secret.encode() not in data, f"the {name} appears in the {where}"
    # and the failure line still says which notification failed, redacted
    assert "json://***@127.0.0.1:" in r.stderr
