"""Contact sheets a night's pictures lane left (the run's end waits for them only briefly) are
drawn later without checking a clip again: by `batchgen verify --sheets-only` (progress on stderr,
Ctrl-C keeps what was drawn and leaves no partial file), by the next run of the manifest in its
lane, and by the review page when it asks for one. Real clips from the simulator over loopback,
real ledgers; each sheet lands where the lane writes it and is recorded where the lane records it."""

from __future__ import annotations

import json
import sqlite3
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from batchgen import media, sheets
from batchgen.ledger import Ledger
from conftest import ledger_rows as rows, run_args, run_cli, write_csv_manifest


def manifest(path: Path, n: int = 3) -> Path:
    return write_csv_manifest(path, n, small=True)  # 2-second 480p clips


def leave_sheets(ledger: Path) -> list[dict]:
    """As a night on a loaded machine leaves them: every clip verified, with its poster, its
    sheet neither on disk nor recorded. Returns the jobs as they were (the lane's paths in ``sheet``)."""
    before = rows(ledger)
    assert before and all(j["verify"] == "ok" and j["poster"] for j in before)
    for j in before:
        j["sheet"] = media.picture_paths(j["output_path"], j["output"])[1]
        Path(j["sheet"]).unlink(missing_ok=True)
    c = sqlite3.connect(ledger)
    with c:
        c.execute("UPDATE jobs SET sheet = NULL")
    c.close()
    return before


def pictures_dir(tmp_path: Path) -> set[str]:
    return {p.name for p in (tmp_path / "out" / media.PICTURES_DIR).iterdir()}


def drawn_as_the_lane_would(before: list[dict], after: list[dict]) -> None:
    """Each sheet where the lane writes it, a whole JPEG, recorded; the verification untouched."""
    was = {j["id"]: j for j in before}
    for j in after:
        assert j["sheet"] == was[j["id"]]["sheet"], j["name"]
        data = Path(j["sheet"]).read_bytes()
        assert data[:3] == b"\xff\xd8\xff" and data[-2:] == b"\xff\xd9"
        assert (j["verify"], j["verified_at"], j["poster"]) == (was[j["id"]]["verify"], was[j["id"]]["verified_at"],
                                                                was[j["id"]]["poster"])


def test_verify_sheets_only_draws_what_a_night_left_and_checks_nothing(sim, tmp_path):
    ledger = tmp_path / "l.db"
    assert run_cli(run_args(sim, manifest(tmp_path / "m.csv"), tmp_path, "-q")).exit_code == 0
    before = leave_sheets(ledger)
    # the report (read-only) draws nothing: its placeholder names the command that does
    r = run_cli(["report", "--ledger", str(ledger), "-o", str(tmp_path / "out" / "report.html"), "-q"])
    page = (tmp_path / "out" / "report.html").read_text()
    assert r.exit_code == 0 and "batchgen verify --sheets-only draws it" in page
    assert not any(n.endswith(".sheet.jpg") for n in pictures_dir(tmp_path))
    r = run_cli(["verify", "--sheets-only", "--ledger", str(ledger)])
    assert r.exit_code == 0, r.output
    assert "contact sheets: 3 drawn of 3 left" in r.stdout and "contact sheets: 3 of 3" in r.stderr
    drawn_as_the_lane_would(before, rows(ledger))
    r = run_cli(["verify", "--sheets-only", "--ledger", str(ledger), "--json"])  # nothing left: nothing to do
    assert json.loads(r.stdout) == {"left": 0, "drawn": 0, "failed": 0}


def test_ctrl_c_keeps_the_sheets_drawn_and_leaves_no_partial_file(sim, tmp_path):
    ledger = tmp_path / "l.db"
    assert run_cli(run_args(sim, manifest(tmp_path / "m.csv", 6), tmp_path, "-q")).exit_code == 0
    before = leave_sheets(ledger)

    def interrupt(n: int, of: int) -> None:  # Ctrl-C after the first sheet: the main thread gets it
        raise KeyboardInterrupt

    led = Ledger(str(ledger), create=False)
    try:
        with pytest.raises(KeyboardInterrupt):
            sheets.draw_left(led, workers=2, progress=interrupt)
    finally:
        led.close()
    after = rows(ledger)
    recorded = {j["sheet"] for j in after if j["sheet"]}
    on_disk = {str(tmp_path / "out" / media.PICTURES_DIR / n) for n in pictures_dir(tmp_path)
               if n.endswith(".sheet.jpg")}
    # every file there is a whole sheet, recorded; no temp file left behind
    assert recorded and recorded == on_disk
    assert all(n.endswith((".poster.jpg", ".sheet.jpg")) for n in pictures_dir(tmp_path)), pictures_dir(tmp_path)
    drawn_as_the_lane_would(before, [j for j in after if j["sheet"]])
    r = run_cli(["verify", "--sheets-only", "--ledger", str(ledger), "--json"])  # the rest, and only the rest
    assert json.loads(r.stdout)["left"] == 6 - len(recorded)
    drawn_as_the_lane_would(before, rows(ledger))


def test_the_next_run_draws_the_sheets_an_earlier_night_left_in_its_lane(sim, tmp_path):
    ledger, m = tmp_path / "l.db", manifest(tmp_path / "m.csv")
    assert run_cli(run_args(sim, m, tmp_path, "-q")).exit_code == 0
    before = leave_sheets(ledger)
    r = run_cli(run_args(sim, m, tmp_path, "--json"))  # the resume: nothing to render, the lane at work
    assert r.exit_code == 0, r.output
    after = rows(ledger)
    # drawn, or counted as left (a loaded machine: the run's end waits only so long)
    assert len([j for j in after if j["sheet"]]) + json.loads(r.stdout)["sheets_left"] == 3
    drawn_as_the_lane_would(before, [j for j in after if j["sheet"]])
    # the next night, a clip more: its sheet and the ones still left, in the same lane
    leave_sheets(ledger)
    r = run_cli(run_args(sim, manifest(m, 4), tmp_path, "--json"))
    assert r.exit_code == 0, r.output
    after = rows(ledger)
    assert len(after) == 4 and len([j for j in after if j["sheet"]]) + json.loads(r.stdout)["sheets_left"] == 4
    before.append(dict(after[-1], sheet=media.picture_paths(after[-1]["output_path"], after[-1]["output"])[1]))
    drawn_as_the_lane_would(before, [j for j in after if j["sheet"]])
    assert run_cli(["verify", "--sheets-only", "--ledger", str(ledger)]).exit_code == 0
    drawn_as_the_lane_would(before, rows(ledger))


def test_the_review_page_draws_a_sheet_left_when_it_asks_for_it(sim, tmp_path):
    from reviewpage import ServerThread, night

    ledger = night(sim, tmp_path, shots=2, takes=1, hostile=False, small=True)
    before = leave_sheets(ledger)
    srv = ServerThread(ledger, tmp_path / "out")
    try:
        def get(path: str) -> tuple[int, bytes]:
            req = urllib.request.Request(srv.base + path, headers={"X-Review-Token": srv.server.token})
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:
                    return resp.status, resp.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()

        status, body = get("/api/clips?verdict=")
        takes = [t for s in json.loads(body)["shots"] for t in s["takes"]]
        assert status == 200 and all(t["sheet"] for t in takes)  # the page offers a sheet for each
        first, second = takes[0]["id"], takes[1]["id"]
        # asked for twice at once (two tabs): drawn once, both answered with it, the API answering meanwhile
        with ThreadPoolExecutor(3) as pool:
            a, b = pool.submit(get, f"/media/{first}/sheet"), pool.submit(get, f"/media/{first}/sheet")
            assert pool.submit(get, "/api/clips?verdict=").result()[0] == 200
            assert a.result()[0] == b.result()[0] == 200 and a.result()[1] == b.result()[1]
        assert a.result()[1][:3] == b"\xff\xd8\xff"
        assert get(f"/media/{second}/sheet")[0] == 200
        assert get("/media/999999/sheet")[0] == 404
    finally:
        srv.stop()
    drawn_as_the_lane_would(before, rows(ledger))  # where the lane writes them, recorded: the next report shows them
    r = run_cli(["verify", "--sheets-only", "--ledger", str(ledger), "--json"])
    assert json.loads(r.stdout)["left"] == 0


@pytest.mark.chromium
def test_pressing_s_on_the_review_page_shows_a_sheet_the_night_left(sim, tmp_path):
    """As a reviewer does it: real Chromium, the key S on the current clip; "drawing…" until the
    server has drawn it, then the image; the sheet recorded for the next report."""
    from selenium.webdriver.common.action_chains import ActionChains

    from reviewpage import ServerThread, chromium, night, wait

    ledger = night(sim, tmp_path, shots=2, takes=2, hostile=False, small=True)
    before = leave_sheets(ledger)
    srv, d = ServerThread(ledger, tmp_path / "out"), chromium(tmp_path)
    try:
        d.get(srv.url)
        wait(lambda: d.execute_script("return document.body.getAttribute('data-loaded')"), what="the page")
        current = d.execute_script("return document.body.getAttribute('data-current')")
        ActionChains(d).send_keys("s").perform()
        box = f"document.querySelector('.take[data-job=\"{current}\"] details.sheet')"
        wait(lambda: d.execute_script(f"return {box}.getAttribute('data-sheet')") == "shown", 60, "the contact sheet")
        assert d.execute_script(f"return {box}.open && {box}.querySelector('img').naturalWidth") == 3 * 200 + 4 * 3
        assert "drawing" not in d.execute_script(f"return {box}.textContent")
        ActionChains(d).send_keys("s").perform()  # S again: hidden
        assert d.execute_script(f"return {box}.open") is False
    finally:
        d.quit()
        srv.stop()
    drawn = [j for j in rows(ledger) if j["sheet"]]
    assert [str(j["id"]) for j in drawn] == [current]  # only the one asked for
    drawn_as_the_lane_would(before, drawn)
