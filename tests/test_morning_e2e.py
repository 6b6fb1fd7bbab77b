"""Issue 29's "done when", end to end: `batchgen demo`, then the review page in Chromium by
keyboard only (approve 8, retake 2 — one with an edited prompt — reject 2), `batchgen retake
--yes`, the same run again (exactly 2 new paid tasks, take 2, both verified), verdicts in the
report and export, and `--deliver-only approved` to moto's S3 server delivering the 8 approved
clips, then the approved retakes, and nothing else; a clip rejected after delivery stays in the
store and is listed."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from batchgen.ledger import Ledger
from conftest import page_data, run_cli
from reviewpage import ServerThread, chromium, wait

EXAMPLE = Path(__file__).resolve().parent.parent / "manifests" / "example.yaml"


def _settled(d) -> int:
    """How many decisions the page has had answered (its ``data-decided`` is "settled:pending")."""
    return int((d.execute_script("return document.body.getAttribute('data-decided')") or "0:0").split(":")[0])


def _keys(d, keys: str) -> None:
    """Press ``keys``, then wait until every decision they made is answered: exactly as many
    more as decision keys pressed, none still on its way (a bare "nothing pending" could be an
    earlier decision's, read before the browser sent these)."""
    from selenium.webdriver.common.action_chains import ActionChains

    want = _settled(d) + sum(k in "arx" for k in keys)
    for k in keys:
        ActionChains(d).send_keys(k).perform()
    wait(lambda: d.execute_script("return document.body.getAttribute('data-decided')") == f"{want}:0",
         what=f"the decisions of {keys!r} recorded")


def _rows(ledger: Path) -> list[dict]:
    led = Ledger(str(ledger), create=False)
    try:
        return list(led.iter_export(review=True))
    finally:
        led.close()


@pytest.fixture
def browser(tmp_path):
    """One Chromium for the whole morning: both reviews are pages of their own server (another
    port: another origin, nothing of the first page's kept), and a second browser only cost
    its start-up (about 1 s of CPU)."""
    d = chromium(tmp_path)
    yield d
    d.quit()


@pytest.mark.slow  # ~20 s: a demo night, then the whole morning in Chromium
@pytest.mark.chromium
def test_the_morning_after_a_demo_night(tmp_path, s3, monkeypatch, browser):
    out = tmp_path / "demo"
    r = run_cli(["demo", "--out", str(out)])
    assert r.exit_code == 0, r.output
    ledger = out / "batchgen.db"
    night = _rows(ledger)
    assert len(night) == 12 and all(j["state"] == "done" for j in night)
    tasks_before = {j["task_id"] for j in night}

    # the review, by keyboard only
    srv = ServerThread(ledger, out / "videos")
    d = browser
    try:
        d.get(srv.url)
        wait(lambda: d.execute_script("return document.body.getAttribute('data-loaded')"), what="the page")
        _keys(d, "aaaaaaaa")  # approve 8 (the cursor moves on after each)
        _keys(d, "r")  # retake the 9th as it is
        _keys(d, "e")  # retake the 10th with an edited prompt
        wait(lambda: d.find_element("id", "edit-prompt").is_displayed(), what="the edit box")
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        ActionChains(d).key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL).send_keys(
            "A quiet harbour at dawn, mist, no people").perform()
        ActionChains(d).send_keys(Keys.ENTER).perform()
        wait(lambda: (d.execute_script("return document.body.getAttribute('data-edit-checked')") or "error") != "error",
             what="the diff")
        edits = _settled(d) + 1
        ActionChains(d).send_keys(Keys.ENTER).perform()
        # the box closes and gives the keys back to the page before the next one is pressed
        wait(lambda: d.execute_script("return document.getElementById('edit').hidden && "
                                      "!document.getElementById('edit').contains(document.activeElement)"),
             what="the edit box to close")
        wait(lambda: _settled(d) == edits, what="the retake with a change recorded")
        _keys(d, "jxx")  # on to the 11th; reject the last two
        log = d.execute_script("return [document.getElementById('status').textContent, "
                               "document.body.getAttribute('data-current'), "
                               "[...document.querySelectorAll('.take')].map(t => t.dataset.job + ':' + t.dataset.review)]")
    finally:
        srv.stop()
    by_verdict: dict[str | None, list[dict]] = {}
    for j in _rows(ledger):
        by_verdict.setdefault(j["review"], []).append(j)
    assert {k: len(v) for k, v in by_verdict.items()} == {"approve": 8, "retake": 2, "reject": 2}, (
        log, [(j["id"], j["output"], j["review"]) for j in _rows(ledger)])
    approved = {j["output"] for j in by_verdict["approve"]}

    # the approved ones go to the store now; nothing else
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    r = run_cli(["deliver", "--ledger", str(ledger), "--to", "s3://renders/dailies/", "--deliver-only", "approved",
                 "--json"])
    assert r.exit_code == 0, r.output
    clips = {k.removeprefix("dailies/") for k in s3.objects() if k.endswith(".mp4")}
    assert clips == approved

    # the retakes: asked first, then queued, then the same run renders exactly them
    r = run_cli(["retake", "--ledger", str(ledger)])
    assert r.exit_code == 2 and "2 new paid task(s)" in r.stderr
    assert "A quiet harbour at dawn, mist, no people" in r.stdout  # the edited prompt, as a diff
    assert run_cli(["retake", "--ledger", str(ledger), "--yes"]).exit_code == 0
    r = run_cli(["run", str(EXAMPLE), "--simulate", "--ledger", str(ledger), "--out", str(out / "videos"), "--json",
                 "--poll-min", "0.05", "--sim-set", "render_min=0.05", "--sim-set", "render_max=0.2"])
    assert r.exit_code == 0, r.output
    after = _rows(ledger)
    new = [j for j in after if j["task_id"] not in tasks_before]
    assert len(after) == 14 and len(new) == 2  # exactly two new paid tasks
    assert all((j["take"], j["state"], j["verify"]) == ("2", "done", "ok") for j in new)
    assert {j["retake_of"] for j in new} == {j["id"] for j in by_verdict["retake"]}

    # the retakes are what waits for review from the last run: approve both by keyboard
    srv = ServerThread(ledger, out / "videos")
    try:
        d.get(srv.url)
        wait(lambda: d.execute_script("return document.body.getAttribute('data-loaded')"), what="the page")
        assert int(d.execute_script("return document.querySelector('[data-count=clips] b').textContent")) == 2
        _keys(d, "aa")
    finally:
        srv.stop()

    # report and export show the verdicts
    report = tmp_path / "r.html"
    assert run_cli(["report", "--ledger", str(ledger), "-o", str(report)]).exit_code == 0
    data = page_data(report.read_text())
    col = data["fields"].index("review")
    seen = [data["strings"][r[col]] if isinstance(r[col], int) else r[col] for r in data["rows"]]
    assert sorted(seen) == sorted(["approve"] * 10 + ["retake"] * 2 + ["reject"] * 2)
    exported = list(csv.DictReader(io.StringIO(run_cli(["export", "--ledger", str(ledger)]).stdout)))
    assert sorted(r["review"] for r in exported) == sorted(seen)

    # the approved retakes are delivered by the next `batchgen deliver`, and nothing else
    r = run_cli(["deliver", "--ledger", str(ledger), "--json"])
    assert r.exit_code == 0, r.output
    clips = {k.removeprefix("dailies/") for k in s3.objects() if k.endswith(".mp4")}
    assert clips == approved | {j["output"] for j in new}

    # a clip rejected after delivery stays in the store, and is listed
    gone = sorted(approved)[0]
    job = next(j for j in after if j["output"] == gone)
    assert run_cli(["review", "--ledger", str(ledger), "--set", "reject", str(job["id"])]).exit_code == 0
    doc = json.loads(run_cli(["deliver", "--ledger", str(ledger), "--json"]).stdout)
    assert [j["name"] for j in doc["delivered_not_approved"]] == [job["name"]]
    assert f"dailies/{gone}" in s3.objects()
