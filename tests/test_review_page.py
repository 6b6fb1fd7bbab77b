"""`batchgen review` as a person uses it (issue 29): real Debian Chromium driven by Selenium
through chromedriver presses the keys, then the ledger is checked. Real clips from the
simulator over loopback, a real ledger, the real server over HTTP; the store is moto's S3
server. Also: who gets in (token, POST only, files only from inside --out), a hostile name and
prompt shown as text, and the API key never served."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from batchgen.ledger import Ledger
from conftest import KEY, run_cli
from reviewpage import HOSTILE_NAME, HOSTILE_PROMPT, ServerThread, chromium, night, wait

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "review"


def _get(url: str, token: str | None = None, *, method: str = "GET", body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, data=body, method=method, headers={
        **({"X-Review-Token": token} if token else {}), **(headers or {})})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):  # type: ignore[no-untyped-def]
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=20) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def _latest(ledger: Path) -> dict[str, dict]:
    led = Ledger(str(ledger), create=False)
    try:
        names = {j["id"]: j["name"] + "/" + str(j["take"]) for j in led.iter_export()}
        return {names[i]: d for i, d in led.latest_decisions(names).items()}
    finally:
        led.close()


@pytest.fixture
def served(sim, tmp_path):
    """A night of its own, for a test that changes its clips."""
    ledger = night(sim, tmp_path)
    srv = ServerThread(ledger, tmp_path / "out")
    yield srv, ledger
    srv.stop()


@pytest.fixture(scope="module")
def _night(tmp_path_factory, _sim_media) -> Path:
    """One night for the module's browser tests, which only decide (in the ledger) and read its
    clips: a night is a run of nine clips, about 1 s of CPU each time it was made again."""
    from batchgen.simulator import SimConfig
    from conftest import SimThread, isolated_env

    folder = tmp_path_factory.mktemp("night")
    with pytest.MonkeyPatch.context() as mp:  # as `_isolated` has it, which a module fixture precedes
        isolated_env(mp, _sim_media)
        mp.chdir(folder)
        sim = SimThread(SimConfig(render_min=0.05, render_max=0.3)).start()
        try:
            return night(sim, folder)
        finally:
            sim.stop()


@pytest.fixture
def reviewed(_night, tmp_path):
    """The module's night served from a ledger of the test's own (a copy, by SQLite's backup):
    decisions never reach another test. The clips stay where the night wrote them: the review
    server only reads them."""
    ledger = tmp_path / "l.db"
    src, dst = sqlite3.connect(_night), sqlite3.connect(ledger)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    srv = ServerThread(ledger, _night.parent / "out")
    yield srv, ledger
    srv.stop()


@pytest.fixture(scope="module")
def _chromium(tmp_path_factory):
    d = chromium(tmp_path_factory.mktemp("chromium"))
    yield d
    d.quit()


@pytest.fixture
def browser(_chromium):
    """One Chromium for the module's tests (its start-up is about 1 s of CPU and 2 s of wall):
    each test's page is of its own server (another port: another origin, so none of an earlier
    page's storage), and is left for a blank one afterwards."""
    yield _chromium
    _chromium.get("about:blank")
    _chromium.delete_all_cookies()


def _press(driver, keys: str, settle: bool = True) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    for k in keys:
        # "settled:pending": wait for this key's own decision, not for any change
        want = _settled(driver) + 1
        ActionChains(driver).send_keys(k).perform()
        if settle and k.lower() in "arxu123456789":
            wait(lambda: _settled(driver) >= want, what=f"the decision of key {k!r}")


def _settled(driver) -> int:
    """How many decisions the page has had answered (its ``data-decided`` is "settled:pending")."""
    return int((driver.execute_script("return document.body.getAttribute('data-decided')") or "0:0").split(":")[0])


def _open(driver, url: str) -> None:
    driver.get(url)
    wait(lambda: driver.execute_script("return document.body.getAttribute('data-loaded')"), what="the page")


def _count(driver, what: str) -> int:
    return int(driver.execute_script(f"return document.querySelector('[data-count={what}] b').textContent"))


def _shot(name: str) -> str:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return str(ARTIFACTS / name)


@pytest.mark.chromium
def test_deciding_by_keyboard_lands_in_the_ledger(reviewed, browser):
    srv, ledger = reviewed
    d = browser
    _open(d, srv.url)
    assert _count(d, "pending") == 9 and _count(d, "clips") == 9
    d.save_screenshot(_shot("grid.png"))
    # shot00: approve take 1, retake take 2 (the cursor moves on after each verdict)
    _press(d, "ar")
    # shot01 take 1: reject; then back (k) and forth (j); take 2 of shot01 gets a note
    _press(d, "x")
    _press(d, "kj", settle=False)

    def take(i: int) -> str:
        return d.execute_script(f"return document.querySelectorAll('.take')[{i}].getAttribute('data-job')")

    assert d.execute_script("return document.body.getAttribute('data-current')") == str(take(3))
    _press(d, "n", settle=False)
    wait(lambda: d.find_element("id", "note-text").is_displayed(), what="the note box")
    before = d.execute_script("return document.body.getAttribute('data-decided')")
    d.find_element("id", "note-text").send_keys("too dark at the end\n")
    wait(lambda: d.execute_script("return document.body.getAttribute('data-decided')") != before, what="the note")
    # shot01: take 2 is the pick (approved), then undo it, then pick it again
    _press(d, "2")
    now = _latest(ledger)
    assert (now["shot01/2"]["verdict"], now["shot01/2"]["pick"]) == ("approve", True)
    _press(d, "u")
    now = _latest(ledger)
    assert (now["shot01/2"]["verdict"], now["shot01/2"]["pick"], now["shot01/2"]["note"]) == (
        None, False, "too dark at the end")
    # an undone verdict brings the cursor back to its clip, to decide it again at once
    _press(d, "x")  # shot01/2 rejected: the cursor moves on to shot02/1
    assert d.execute_script("return document.body.getAttribute('data-current')") != str(take(3))
    _press(d, "u")
    assert d.execute_script("return document.body.getAttribute('data-current')") == str(take(3))
    assert _latest(ledger)["shot01/2"]["verdict"] is None
    _press(d, "2")
    # space plays the current clip (its file, from inside --out)
    _press(d, " ", settle=False)
    wait(lambda: d.execute_script("const v = document.querySelector('.take.current video');"
                                  "return v && v.currentSrc && !v.paused"), what="the clip to play")
    _press(d, "?", settle=False)
    assert d.find_element("id", "help").is_displayed()
    d.save_screenshot(_shot("help.png"))
    _press(d, "?", settle=False)
    assert not d.find_element("id", "help").is_displayed()
    now = _latest(ledger)
    assert {k: (v["verdict"], v["pick"]) for k, v in now.items()} == {
        "shot00/1": ("approve", False), "shot00/2": ("retake", False), "shot01/1": ("reject", False),
        "shot01/2": ("approve", True)}
    assert {v["reviewer"] for v in now.values()} == {"tester"}
    assert (_count(d, "pending"), _count(d, "approve"), _count(d, "retake"), _count(d, "reject")) == (5, 2, 1, 1)
    # the filtered view: retakes only
    from selenium.webdriver.support.select import Select

    Select(d.find_element("id", "f-verdict")).select_by_value("retake")
    wait(lambda: len(d.find_elements("css selector", ".take:not(.dim)")) == 1, what="the retake filter")
    assert d.find_element("css selector", ".take:not(.dim)").get_attribute("data-review") == "retake"
    d.save_screenshot(_shot("filtered.png"))


@pytest.mark.chromium
def test_a_hostile_name_and_prompt_are_shown_as_text(reviewed, browser):
    srv, ledger = reviewed
    d = browser
    _open(d, srv.url)
    d.find_element("id", "f-q").send_keys("harbour")
    wait(lambda: len(d.find_elements("css selector", ".shot")) == 1, what="the text filter")
    shot = d.find_element("css selector", ".shot")
    assert shot.find_element("css selector", "h2").text == HOSTILE_NAME
    assert shot.find_element("css selector", ".prompt").text == HOSTILE_PROMPT.replace("<b onmouseover=alert(1)>", "<b onmouseover=alert(1)>")
    assert d.execute_script("return window.pwned") is None
    assert d.find_elements("css selector", ".shot img, .shot script, .shot b") == []


def test_who_gets_in(served, tmp_path):
    srv, ledger = served
    status, page, headers = _get(srv.base + "/")
    assert status == 200 and b"review.js" in page and "script-src 'self'" in headers["Content-Security-Policy"]
    assert _get(srv.base + "/api/clips")[0] == 403  # no token: no data
    assert _get(srv.base + "/api/clips", "wrong")[0] == 403
    status, body, _ = _get(srv.base + "/api/clips?verdict=", srv.server.token)
    assert status == 200
    doc = json.loads(body)
    job = doc["shots"][0]["takes"][0]["id"]
    change = json.dumps({"changes": [{"job": job, "verdict": "approve"}]}).encode()
    # a change is a JSON POST with the token in its header: a form post or a GET cannot make one
    assert _get(srv.base + "/api/decide?t=" + srv.server.token, method="POST", body=change,
                headers={"Content-Type": "application/json"})[0] == 403
    assert _get(srv.base + "/api/decide", srv.server.token, method="POST", body=b"changes=1",
                headers={"Content-Type": "application/x-www-form-urlencoded"})[0] == 403
    assert _get(srv.base + "/api/decide", srv.server.token)[0] == 405
    assert _latest(ledger) == {}
    status, body, _ = _get(srv.base + "/api/decide", srv.server.token, method="POST", body=change,
                           headers={"Content-Type": "application/json"})
    assert status == 200 and json.loads(body)["counts"]["approve"] == 1
    # what was decided since a page loaded (the page asks every 4 s: a browser test shorter than
    # that never asks), for the clips it names
    other = next(t["id"] for s in doc["shots"] for t in s["takes"] if t["id"] != job)
    status, body, _ = _get(f"{srv.base}/api/states?ids={job},{other}", srv.server.token)
    states = json.loads(body)
    assert status == 200 and states["counts"]["approve"] == 1
    assert (states["clips"][str(job)]["review"], states["clips"][str(other)]["review"]) == ("approve", None)
    assert _get(f"{srv.base}/api/states?ids={job}")[0] == 403  # no token: no data
    assert _get(srv.base + "/api/states?ids=first", srv.server.token)[0] == 400
    bad = json.dumps({"changes": [{"job": 10**6, "verdict": "approve"}]}).encode()
    assert _get(srv.base + "/api/decide", srv.server.token, method="POST", body=bad,
                headers={"Content-Type": "application/json"})[0] == 404
    # files: only a clip of this review, by id, from inside --out after symlinks are resolved
    assert _get(f"{srv.base}/media/{job}/clip")[0] == 403
    status, clip, headers = _get(f"{srv.base}/media/{job}/clip?t={srv.server.token}")
    assert status == 200 and clip[4:8] == b"ftyp" and headers["Content-Type"] == "video/mp4"
    assert _get(f"{srv.base}/media/{job}/poster?t={srv.server.token}")[0] == 200
    assert _get(f"{srv.base}/media/..%2F..%2Fetc%2Fpasswd/clip?t={srv.server.token}")[0] == 404
    assert _get(f"{srv.base}/static/..%2F..%2Fserver.py")[0] == 404
    led = Ledger(str(ledger), create=False)
    path = Path(led.job(job)["output_path"])
    led.close()
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"\0\0\0\x18ftypsecret")
    path.unlink()
    path.symlink_to(secret)  # a link out of --out is not followed
    srv.server.index._at = 0  # read the ledger again
    status, body, _ = _get(f"{srv.base}/media/{job}/clip?t={srv.server.token}")
    assert status == 404 and b"nowhere" in body
    doc = json.loads(_get(srv.base + "/api/clips?verdict=", srv.server.token)[1])
    assert [t["where"] for t in doc["shots"][0]["takes"]][0] == "nowhere"
    # the API key is never served: not in the page, the script, the data
    every = b"".join(_get(srv.base + p, srv.server.token)[1] for p in
                     ("/", "/static/review.js", "/static/review.css", "/api/clips?verdict="))
    assert KEY.encode() not in every and b"BATCHGEN_API_KEY" not in every


def test_a_delivered_clip_plays_from_the_store_through_a_presigned_url(sim, s3, tmp_path, monkeypatch):
    from conftest import run_args

    m = tmp_path / "m.csv"
    m.write_text("name,model,prompt\nfar,grok-imagine-text-to-video,A lighthouse far away\n")
    r = run_cli(run_args(sim, m, tmp_path, "-q", "--deliver", "s3://renders/nightly/", "--prune-local"), **s3.env())
    assert r.exit_code == 0, r.output
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    srv = ServerThread(tmp_path / "l.db", tmp_path / "out")
    try:
        doc = json.loads(_get(srv.base + "/api/clips", srv.server.token)[1])
        take = doc["shots"][0]["takes"][0]
        assert take["where"] == "store"
        status, _, headers = _get(f"{srv.base}/media/{take['id']}/clip?t={srv.server.token}")
        assert status == 302
        url = headers["Location"]
        assert url.startswith(s3.url + "/renders/nightly/far.mp4?") and "X-Amz-Expires=300" in url
        assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and f"X-Amz-Credential={s3.key_id}" in url
        assert s3.secret not in url  # signed, never carrying the secret
        # Not fetched here: moto's server with authentication on reads only the Authorization
        # header (moto/iam/access_control.py) and answers a presigned GET with a 500.
        assert s3.client().head_object(Bucket="renders", Key="nightly/far.mp4")["ContentLength"] > 0
    finally:
        srv.stop()


@pytest.mark.slow  # ~13 s: two browsers on PostgreSQL
@pytest.mark.chromium
@pytest.mark.postgres
def test_two_browsers_deciding_the_same_clip_at_once_on_postgres(pg_url, sim, tmp_path):
    from conftest import run_args

    m = tmp_path / "m.csv"
    m.write_text("name,model,prompt\n" + "".join(f"c{i},grok-imagine-text-to-video,Clip {i}\n" for i in range(3)))
    r = run_cli([*run_args(sim, m, tmp_path, "-q")[:4], "--ledger", pg_url, *run_args(sim, m, tmp_path)[6:]])
    assert r.exit_code == 0, r.output
    a = ServerThread(pg_url, tmp_path / "out", reviewer="ann")
    b = ServerThread(pg_url, tmp_path / "out", reviewer="bob")
    da, db = chromium(tmp_path), chromium(tmp_path)
    try:
        _open(da, a.url)
        _open(db, b.url)
        from selenium.webdriver.common.action_chains import ActionChains

        for _ in range(3):  # both press at once, again and again, on the same first clip
            ActionChains(da).send_keys("a").perform()
            ActionChains(db).send_keys("x").perform()
            ActionChains(da).send_keys("k").perform()
            ActionChains(db).send_keys("k").perform()
        for dr in (da, db):  # every decision made is recorded (queued, never dropped)
            wait(lambda: dr.execute_script("return document.body.getAttribute('data-decided')") == "3:0",
                 what="the decisions to be recorded")
        led = Ledger(pg_url, create=False)
        try:
            first = min(j["id"] for j in led.iter_export())
            hist = led.decision_history(first)
            latest = led.latest_decisions([first])[first]
        finally:
            led.close()
        assert [h["reviewer"] for h in hist].count("ann") >= 1 and [h["reviewer"] for h in hist].count("bob") >= 1
        assert (latest["verdict"], latest["reviewer"]) in (("approve", "ann"), ("reject", "bob"))
        # both pages go on working and come to show the ledger's latest verdict without a reload
        for dr in (da, db):
            wait(lambda: dr.find_element("css selector", f".take[data-job='{first}']").get_attribute("data-review")
                 == latest["verdict"], timeout=20, what="the other reviewer's decision to show")
        _press(da, "j", settle=False)
        _press(da, "r")
        wait(lambda: db.find_element("css selector", f".take[data-job='{first + 1}']").get_attribute("data-review")
             == "retake", timeout=20, what="ann's retake to show in bob's page")
    finally:
        da.quit()
        db.quit()
        a.stop()
        b.stop()


@pytest.mark.chromium
def test_an_undo_never_overwrites_another_reviewers_later_decision(reviewed, browser):
    srv, ledger = reviewed
    d = browser
    _open(d, srv.url)
    first = int(d.execute_script("return document.body.getAttribute('data-current')"))
    _press(d, "a")  # ann approves the first clip (the cursor moves on)
    led = Ledger(str(ledger), create=False)
    try:  # bob, on another page, rejects it meanwhile
        from batchgen.jobs import Verdict
        from batchgen.ledger import Change

        led.decide([Change(first, verdict=Verdict.REJECT)], "bob")
    finally:
        led.close()
    _press(d, "u")
    wait(lambda: "bob decided reject since; not undone" in d.find_element("id", "status").text,
         what="the refused undo to be said")
    now = _latest(ledger)
    assert (now["shot00/1"]["verdict"], now["shot00/1"]["reviewer"]) == ("reject", "bob")
    # the cursor is back on that clip, which shows bob's verdict
    assert int(d.execute_script("return document.body.getAttribute('data-current')")) == first
    # undo goes on working for a decision nobody changed since
    _press(d, "j", settle=False)
    _press(d, "x")
    _press(d, "u")
    assert _latest(ledger)["shot00/2"]["verdict"] is None


@pytest.mark.chromium
def test_a_retake_with_an_edited_prompt_is_checked_shown_as_a_diff_then_recorded(reviewed, browser):
    srv, ledger = reviewed
    d = browser
    _open(d, srv.url)
    _press(d, "e", settle=False)
    wait(lambda: d.find_element("id", "edit-prompt").is_displayed(), what="the edit box")
    fields = d.find_element("id", "edit-fields")
    fields.clear()
    fields.send_keys('{"duration": 99}\n')  # refused like a manifest row: named, nothing recorded
    wait(lambda: d.execute_script("return document.body.getAttribute('data-edit-checked')") == "error",
         what="the refusal")
    assert "field 'duration'" in d.find_element("id", "edit-diff").text
    fields.clear()
    fields.send_keys("{}")
    prompt = d.find_element("id", "edit-prompt")
    prompt.clear()
    prompt.send_keys("A lighthouse at dawn, calm sea\n")
    wait(lambda: (d.execute_script("return document.body.getAttribute('data-edit-checked')") or "error") != "error",
         what="the diff")
    diff = d.find_element("id", "edit-diff").text
    assert 'prompt:\n- "A lighthouse at night number 0"\n+ "A lighthouse at dawn, calm sea"' in diff
    d.save_screenshot(_shot("edit.png"))
    assert _latest(ledger) == {}  # shown, not recorded yet
    before = d.execute_script("return document.body.getAttribute('data-decided')")
    prompt.send_keys("\n")
    wait(lambda: d.execute_script("return document.body.getAttribute('data-decided')") != before, what="the retake")
    now = _latest(ledger)["shot00/1"]
    assert now["verdict"] == "retake" and json.loads(now["changes"]) == {"prompt": "A lighthouse at dawn, calm sea"}
