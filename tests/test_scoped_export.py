"""`export` and `report` limited to one manifest (its recorded membership) or one run, the
export's manifest column, and a report header that says what the page covers (issue 23).
Two manifests run into one real ledger against the simulator over loopback."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

from conftest import run_args, run_cli, write_csv_manifest


def _two_manifests(sim_factory, tmp_path):
    sim = sim_factory(seed=7)
    # Small clips: what is checked is which jobs each scope holds, not what is in a clip.
    a = write_csv_manifest(tmp_path / "a.csv", 3, prefix="a", small=True)
    b = tmp_path / "b.csv"  # other prompts: the same request would be the same (done) job
    b.write_text("name,model,prompt,duration,resolution\n"
                 + "".join(f"b{i:04d},grok-imagine-text-to-video,A harbour {i},2,480p\n" for i in range(2)))
    for m in (a, b):
        r = run_cli(run_args(sim, m, tmp_path, "-q"))
        assert r.exit_code == 0, r.output
    return a, b, str(tmp_path / "l.db")


def test_export_and_report_limited_to_a_manifest_or_a_run(sim_factory, tmp_path):
    a, b, led = _two_manifests(sim_factory, tmp_path)
    whole = json.loads(run_cli(["export", "--ledger", led, "--json"]).stdout)
    assert {j["manifest"] for j in whole} == {str(a.resolve()), str(b.resolve())} and len(whole) == 5
    only_a = json.loads(run_cli(["export", "--ledger", led, "--json", "--manifest", str(a)]).stdout)
    assert sorted(j["name"] for j in only_a) == ["a0000", "a0001", "a0002"]
    assert {j["manifest"] for j in only_a} == {str(a.resolve())}
    run2 = json.loads(run_cli(["export", "--ledger", led, "--json", "--run", "2"]).stdout)
    assert sorted(j["name"] for j in run2) == ["b0000", "b0001"]
    # CSV: manifest comes after every earlier column (their positions kept), the review columns after it
    text = run_cli(["export", "--ledger", led, "--manifest", str(b)]).stdout
    rows = list(csv.reader(io.StringIO(text)))
    m = rows[0].index("manifest")
    assert rows[0][0] == "job_key" and rows[0][m + 1:] == ["review", "review_note", "reviewer", "pick"] and len(rows) == 3
    assert {r[m] for r in rows[1:]} == {str(b.resolve())}

    page = tmp_path / "r.html"
    r = run_cli(["report", "--ledger", led, "-o", str(page)])
    assert r.exit_code == 0 and "5 job(s)" in r.stderr
    header = re.search(r'<div class="muted">(.*?)</div>', page.read_text()).group(1)
    assert "5 job(s) from 2 manifest(s)" in header and "a.csv" in header and "b.csv" in header, header
    assert "runs 1–2" in header and "latest run 2" in header, header
    r = run_cli(["report", "--ledger", led, "-o", str(page), "--manifest", str(a)])
    assert r.exit_code == 0 and "3 job(s)" in r.stderr, r.output
    header = re.search(r'<div class="muted">(.*?)</div>', page.read_text()).group(1)
    assert f"3 job(s) of manifest {a.resolve()}" in header and "run 1" in header, header
    r = run_cli(["report", "--ledger", led, "-o", str(page), "--run", "2"])
    header = re.search(r'<div class="muted">(.*?)</div>', page.read_text()).group(1)
    assert r.exit_code == 0 and "2 job(s)" in header and "run 2" in header and "latest" not in header, header


@pytest.mark.slow
def test_a_manifest_never_run_is_a_usage_error(sim_factory, tmp_path):
    _a, _b, led = _two_manifests(sim_factory, tmp_path)
    other = write_csv_manifest(tmp_path / "never.csv", 1)
    for cmd in (["export"], ["report", "-o", str(tmp_path / "r.html")]):
        r = run_cli([*cmd, "--ledger", led, "--manifest", str(other)])
        assert r.exit_code == 2 and "never.csv: no run of this manifest" in r.stderr, r.output
    assert not (tmp_path / "r.html").exists()
