"""Displays and answers that tell the truth (issue 23): `status` off a terminal is never cut
to 80 columns, NO_COLOR removes every style, -v puts the per-job events on stderr, an unknown
--compare field is an error with a did-you-mean, --api-key says where the key comes from, and
with --json every outcome (errors too) is JSON on stdout, exit code unchanged. CLI, real ledgers."""

from __future__ import annotations

import io
import json

import pytest

from batchgen.progress import Display, Snapshot
from conftest import run_args, run_cli, write_csv_manifest


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _one_run(sim_factory, tmp_path, manifest_name="m.csv", *extra):
    sim = sim_factory(seed=3)
    m = write_csv_manifest(tmp_path / manifest_name, 2)
    r = run_cli(run_args(sim, m, tmp_path, "-q", *extra))
    assert r.exit_code == 0, r.output
    return m, str(tmp_path / "l.db")


@pytest.mark.slow
def test_status_without_a_terminal_is_never_truncated(sim_factory, tmp_path):
    deep = tmp_path / ("nightly-renders-of-the-lighthouse-campaign-" * 3)
    deep.mkdir()
    m, led = _one_run(sim_factory, deep, "a-manifest-with-a-rather-long-name-for-cron.csv")
    r = run_cli(["status", "--ledger", led], COLUMNS=None)
    assert r.exit_code == 0, r.output
    assert str(m.resolve()) in r.stdout and "…" not in r.stdout, r.stdout


def test_no_color_removes_every_style_and_a_terminal_keeps_them(monkeypatch):
    snap = Snapshot(states={"queued": 2, "done": 1}, elapsed=5.0)
    monkeypatch.delenv("NO_COLOR", raising=False)
    styled = _Tty()
    d = Display(stream=styled)
    d.start()
    d.stop(snap)
    assert "\x1b[" in styled.getvalue()  # bold headers on a terminal
    monkeypatch.setenv("NO_COLOR", "1")
    bare = _Tty()
    d = Display(stream=bare)
    d.start()
    d.stop(snap)
    assert "queued" in bare.getvalue() and "\x1b[1m" not in bare.getvalue() and "\x1b[3m" not in bare.getvalue()


@pytest.mark.slow
def test_verbose_puts_the_per_job_events_on_stderr(sim_factory, tmp_path):
    sim = sim_factory(seed=5)
    m = write_csv_manifest(tmp_path / "m.csv", 2)
    quiet = run_cli(run_args(sim, m, tmp_path))
    m2 = write_csv_manifest(tmp_path / "m2.csv", 2, prefix="other")
    (tmp_path / "m2.csv").write_text((tmp_path / "m2.csv").read_text().replace("lighthouse", "harbour"))
    loud = run_cli(["-v", *run_args(sim, m2, tmp_path)])
    assert quiet.exit_code == 0 and loud.exit_code == 0, loud.output
    assert len(loud.stderr.splitlines()) > len(quiet.stderr.splitlines()) + 4, loud.stderr
    assert "other0000" in loud.stderr  # a per-job event names its job


@pytest.mark.slow
def test_report_compare_with_an_unknown_field_is_an_error_with_did_you_mean(sim_factory, tmp_path):
    _m, led = _one_run(sim_factory, tmp_path)
    page = tmp_path / "r.html"
    r = run_cli(["report", "--ledger", led, "-o", str(page), "--compare", "modle"])
    assert r.exit_code == 2 and "did you mean model?" in r.stderr, r.output
    assert not page.exists()
    r = run_cli(["report", "--ledger", led, "-o", str(page), "--compare", "model"])
    assert r.exit_code == 0 and "scrollIntoView" in page.read_text()


def test_api_key_option_says_the_key_comes_from_the_environment(tmp_path):
    m = write_csv_manifest(tmp_path / "m.csv", 1)
    r = run_cli(["run", str(m), "--api-key", "sk-secret-value"])
    assert r.exit_code == 2 and "BATCHGEN_API_KEY" in r.output and "--api-base" not in r.output, r.output
    assert "sk-secret-value" not in r.output


def test_with_json_every_outcome_is_json_on_stdout(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults: {model: grok-imagine-text-to-video}\njobs:\n  - {name: a, duration: 99}\n")
    r = run_cli(["plan", str(bad), "--json"])
    doc = json.loads(r.stdout)
    assert r.exit_code == 2 and doc["exit_code"] == 2 and len(doc["problems"]) == 2, r.output
    r = run_cli(["run", str(bad), "--json", "--out", str(tmp_path / "o"), "--ledger", str(tmp_path / "l.db")],
                BATCHGEN_API_KEY=None)
    doc = json.loads(r.stdout)
    assert r.exit_code == 2 and doc["exit_code"] == 2 and "BATCHGEN_API_KEY" in doc["error"], r.output
    r = run_cli(["status", "--json", "--ledger", str(tmp_path / "missing.db")])
    assert r.exit_code == 2 and "no ledger" in json.loads(r.stdout)["error"]
    r = run_cli(["export", "--json", "--bogus"])
    assert r.exit_code == 2 and "--bogus" in json.loads(r.stdout)["error"]
