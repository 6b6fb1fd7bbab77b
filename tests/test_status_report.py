"""`batchgen status` and the HTML report (escaping, relative links, headless Chromium)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from batchgen.ledger import Ledger
from conftest import ARTIFACTS, page_data, run_args, run_cli, write_csv_manifest


# ------------------------------------------------------------------ status / report
def _mixed_ledger(sim_factory, tmp_path):
    sim = sim_factory(seed=4, p_fail=0.2, p500_after=0.1)
    m = write_csv_manifest(tmp_path / "m.csv", 30)
    run_cli(run_args(sim, m, tmp_path, "-q"))
    led = Ledger(str(tmp_path / "l.db"))
    try:  # one result left undownloaded, 23 h old: it expires within the hour
        done = led.jobs_in_state("done")[0]
        with led.engine.begin() as c:
            c.exec_driver_sql("UPDATE jobs SET state='completed', result_at=? WHERE id=?", (time.time() - 23 * 3600, done["id"]))
    finally:
        led.close()
    return sim, done


@pytest.mark.slow
def test_status_lists_runs_in_doubt_with_credits_and_expiring_results(sim_factory, tmp_path):
    _sim, expiring = _mixed_ledger(sim_factory, tmp_path)
    r = run_cli(["status", "--ledger", str(tmp_path / "l.db"), "--json"])
    doc = json.loads(r.stdout)
    assert doc["runs"][0]["counts"]["done"] > 0 and doc["runs"][0]["status"] == "finished"
    assert doc["in_doubt"] and all(j["credits_at_risk"] > 0 for j in doc["in_doubt"])
    assert doc["credits_at_risk"] == pytest.approx(sum(j["credits_at_risk"] for j in doc["in_doubt"]))
    assert [j["id"] for j in doc["expiring"]] == [expiring["id"]] and 0 < doc["expiring"][0]["expires_in_s"] <= 3600
    assert doc["oldest_unfinished"][0]["id"] == expiring["id"]
    text = run_cli(["status", "--ledger", str(tmp_path / "l.db")])
    assert "runs" in text.stdout and "in doubt" in text.stdout and "expiring" in text.stdout


@pytest.mark.slow
def test_report_is_self_contained_and_escapes_user_text(sim_factory, tmp_path):
    sim = sim_factory(seed=4, p_fail=0.25)
    m = tmp_path / "m.csv"
    m.write_text("name,model,prompt\n" + "".join(
        f"c{i},grok-imagine-text-to-video,<script>alert({i})</script> clip\n" for i in range(12)))
    run_cli(run_args(sim, m, tmp_path, "-q"))
    out = tmp_path / "report.html"
    assert run_cli(["report", "--ledger", str(tmp_path / "l.db"), "-o", str(out)]).exit_code == 0
    page = out.read_text()
    assert "<script>alert(" not in page  # user text is data, never markup
    data = page_data(page)
    col = {f: i for i, f in enumerate(data["fields"])}
    assert len(data["rows"]) == 12
    assert {data["strings"][r[col["prompt"]]] for r in data["rows"]} == {f"<script>alert({i})</script> clip" for i in range(12)}
    led = Ledger(str(tmp_path / "l.db"))
    done = led.jobs_in_state("done")
    led.close()
    videos = sorted(data["base"] + data["strings"][r[col["output"]]] for r in data["rows"] if r[col["output"]] is not None)
    assert videos == sorted(os.path.relpath(j["output_path"], tmp_path) for j in done)
    assert all((tmp_path / v).is_file() for v in videos)
    assert all(r[col["poster"]] == 1 for r in data["rows"] if r[col["output"]] is not None)
    assert "Failures by error code" in page and "submit → complete" in page and "polls per job" in page


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _chrome(*args: str, url: str, user_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={user_dir}", *args, url], capture_output=True, text=True, timeout=120)


def _need_chromium() -> None:
    if _chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is required in CI (.ci/run installs it)")
        pytest.skip("chromium not installed")


@pytest.mark.slow
@pytest.mark.chromium
def test_report_renders_in_headless_chromium(sim_factory, tmp_path):
    _need_chromium()
    _mixed_ledger(sim_factory, tmp_path)
    out = tmp_path / "report.html"
    run_cli(["report", "--ledger", str(tmp_path / "l.db"), "-o", str(out)])
    dom = _chrome("--dump-dom", "--virtual-time-budget=3000", url=out.as_uri() + "#state=failed",
                  user_dir=tmp_path / "chrome1").stdout
    assert "id=\"tiles\"" in dom and "data-ready-ms" in dom
    shown = dom.split('id="shown">')[1].split("<")[0]
    led = Ledger(str(tmp_path / "l.db"))
    n_failed = len(led.jobs_in_state("failed"))
    n_done = len(led.jobs_in_state("done"))
    led.close()
    assert int(shown) == n_failed > 0  # the #state=failed filter ran in the browser
    assert dom.count('data-state="failed"') == n_failed
    everything = _chrome("--dump-dom", "--virtual-time-budget=3000", url=out.as_uri(), user_dir=tmp_path / "chrome3").stdout
    # every delivered clip: a player that loads nothing until asked, with its poster frame
    table = everything.split('id="rows"')[1].split("</tbody>")[0]
    assert table.count('preload="none"') == n_done and table.count(".poster.jpg") == n_done
    # each with its contact sheet, loaded when opened — or, where the run's end did not wait for
    # it (a loaded machine), the placeholder that says `batchgen verify` draws it
    assert table.count("<details>") + table.count("contact sheet not drawn yet") == n_done
    assert table.count("<details>") > 0
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    _chrome(f"--screenshot={shot}", "--window-size=1280,1400", "--hide-scrollbars", url=out.as_uri(),
            user_dir=tmp_path / "chrome2")
    assert shot.is_file() and shot.stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.chromium
def test_report_compare_view_puts_matrix_values_side_by_side(sim, tmp_path):
    _need_chromium()
    m = tmp_path / "m.yaml"
    m.write_text("defaults: {model: grok-imagine-text-to-video, duration: 2}\n"
                 "matrix: {aspect_ratio: ['16:9', '9:16']}\n"
                 "jobs:\n  - {name: harbour, prompt: a harbour}\n  - {name: rooftop, prompt: a rooftop}\n"
                 "  - {name: forest, prompt: a forest}\n")
    assert run_cli(run_args(sim, m, tmp_path, "-q")).exit_code == 0
    out = tmp_path / "compare.html"
    assert run_cli(["report", "--ledger", str(tmp_path / "l.db"), "-o", str(out), "--compare", "aspect_ratio"]).exit_code == 0
    dom = _chrome("--dump-dom", "--virtual-time-budget=3000", url=out.as_uri(), user_dir=tmp_path / "c1").stdout
    table = dom.split('id="cmp-rows"')[1].split("</tbody>")[0]
    assert table.count("<tr>") == 3 and table.count("<video") == 6  # one row per shot, one column per ratio
    assert "aspect_ratio = 16:9" in dom and "aspect_ratio = 9:16" in dom
    assert "1280×720" in table and "720×1280" in table  # measured specs in each cell (720p by default)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report-compare.png"
    shot.unlink(missing_ok=True)
    _chrome(f"--screenshot={shot}", "--window-size=1280,1000", "--hide-scrollbars", url=out.as_uri(),
            user_dir=tmp_path / "c2")
    assert shot.is_file()
