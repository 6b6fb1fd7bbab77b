"""Review decisions are data (issue 29): the decisions table and its migration on SQLite and
PostgreSQL, decisions by job reference and from a CSV, history kept (the latest counts), the
shot's pick, and what export, report and status show of them. Real ledgers, no mocks."""

from __future__ import annotations

import csv
import io
import threading

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text

from batchgen import operations
from batchgen.errors import DecisionsFileError, UsageError
from batchgen.jobs import Job, Verdict
from batchgen.ledger import KEEP, Change, Ledger, migrations_dir, make_engine
from batchgen.review import default_reviewer, from_csv, parse_verdict, pick, set_verdict
from conftest import ledger_at_revision, page_data


def _job(i: int, take: str | None = None, prompt: str | None = None) -> Job:
    return Job(key=f"{i:064x}", seq=i, name=f"shot{i}" + (f"-t{take}" if take else ""), source=f"row {i}",
               model="m", request={"model": "m", "prompt": prompt or f"p{i}"}, output=f"shot{i}.mp4", take=take)


def _ledger(url: str, jobs: list[Job], done: bool = True) -> Ledger:
    led = Ledger(url)
    run = led.start_run("/m.yaml", "0" * 64, {}, len(jobs))
    led.upsert_jobs(run, jobs)
    if done:
        with led.engine.begin() as c:
            c.execute(text("UPDATE jobs SET state = 'done', output_path = '/out/' || output"))
    return led


@pytest.fixture
def led(tmp_path):
    # shots 1 and 2 are takes 1 and 2 of the same request; 3 is a shot of its own; 4 unfinished
    led = _ledger(str(tmp_path / "l.db"), [_job(1, "1", "same"), _job(2, "2", "same"), _job(3)])
    run = led.start_run("/m.yaml", "0" * 64, {}, 1)
    led.upsert_jobs(run, [_job(4)])
    yield led
    led.close()


def test_a_changed_mind_is_a_new_row_and_the_latest_counts(led):
    assert set_verdict(led, ["1"], Verdict.RETAKE, note="too dark", reviewer="ann").decided == 1
    assert set_verdict(led, ["1"], Verdict.APPROVE, reviewer="bob").decided == 1
    hist = led.decision_history(1)
    assert [(d["verdict"], d["note"], d["reviewer"]) for d in hist] == [
        ("retake", "too dark", "ann"), ("approve", "too dark", "bob")]  # the note is carried forward
    assert hist[0]["decided_at"] <= hist[1]["decided_at"]
    assert led.latest_decisions([1, 2])[1]["verdict"] == "approve" and 2 not in led.latest_decisions([2])
    # the same decision again records nothing; pending is an explicit return to no verdict
    again = set_verdict(led, ["1"], Verdict.APPROVE, reviewer="bob")
    assert (again.decided, again.unchanged) == (0, 1)
    set_verdict(led, ["1"], None, reviewer="ann")
    assert led.latest_decisions([1])[1]["verdict"] is None and len(led.decision_history(1)) == 3
    # a note alone keeps the verdict
    set_verdict(led, ["3"], Verdict.REJECT, reviewer="ann")
    set_verdict(led, ["3"], KEEP, note="wrong city", reviewer="ann")
    assert (led.latest_decisions([3])[3]["verdict"], led.latest_decisions([3])[3]["note"]) == ("reject", "wrong city")


def test_an_undo_writes_only_over_the_decision_it_undoes(led):
    """An undo is a change on condition (``expect``): the clip's latest decision is still the
    one the reviewer made. Another reviewer's later decision is never overwritten, and a batch
    with one stale condition writes nothing at all."""
    from batchgen.errors import DecisionChanged

    (mine,) = led.decide([Change(1, verdict=Verdict.APPROVE)], "ann")
    led.decide([Change(2, verdict=Verdict.RETAKE)], "ann")
    (theirs,) = led.decide([Change(1, verdict=Verdict.REJECT)], "bob")
    with pytest.raises(DecisionChanged, match="job 1: bob decided reject since; not undone"):
        led.decide([Change(2, verdict=None, expect=led.latest_decisions([2])[2]["id"]),
                    Change(1, verdict=None, expect=mine["id"])], "ann")
    latest = led.latest_decisions([1, 2])
    assert (latest[1]["id"], latest[1]["verdict"]) == (theirs["id"], "reject")
    assert latest[2]["verdict"] == "retake"  # the batch's other change was not written either
    # the condition holds: the undo is written; a clip never decided is expected as None
    led.decide([Change(1, verdict=None, expect=theirs["id"]), Change(3, verdict=Verdict.APPROVE, expect=None)], "bob")
    assert led.latest_decisions([1])[1]["verdict"] is None and led.latest_decisions([3])[3]["verdict"] == "approve"
    with pytest.raises(DecisionChanged, match="job 2: ann decided retake since"):
        led.decide([Change(2, verdict=None, expect=None)], "bob")


def test_a_bad_reference_or_an_unfinished_clip_records_nothing(led):
    with pytest.raises(UsageError) as e:
        set_verdict(led, ["1", "nosuchjob", "4"], Verdict.APPROVE, reviewer="ann")
    assert "nosuchjob: no such job" in str(e.value) and "queued, not a finished clip" in str(e.value)
    assert led.latest_decisions([1, 2, 3, 4]) == {}


def test_a_pick_is_approved_and_one_take_per_shot(led):
    assert led.takes_of(1) == [1, 2] and led.takes_of(3) == [3]
    pick(led, "1", reviewer="ann")
    pick(led, "2", reviewer="ann")
    now = led.latest_decisions([1, 2])
    assert (now[1]["pick"], now[2]["pick"], now[2]["verdict"]) == (False, True, "approve")
    assert now[1]["verdict"] == "approve"  # unpicking keeps the verdict
    set_verdict(led, ["2"], Verdict.RETAKE, reviewer="ann")  # no longer approved: no longer the pick
    assert led.latest_decisions([2])[2]["pick"] is False


def test_verdicts_in_export_status_and_report(led, tmp_path):
    set_verdict(led, ["1"], Verdict.APPROVE, note="=HYPERLINK(\"x\")", reviewer="ann")
    set_verdict(led, ["3"], Verdict.REJECT, reviewer="bob")
    pick(led, "1", reviewer="ann")
    assert led.verdict_counts() == {"pending": 1, "approve": 1, "retake": 0, "reject": 1}
    assert led.verdict_counts(run_id=2) == {"pending": 0, "approve": 0, "retake": 0, "reject": 0}
    assert operations.status(led)["review"]["approve"] == 1
    buf = io.StringIO()
    operations.export(led, buf)
    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(buf.getvalue()))}
    assert list(rows["shot1-t1"])[-5:] == ["manifest", "review", "review_note", "reviewer", "pick"]
    assert (rows["shot1-t1"]["review"], rows["shot1-t1"]["reviewer"], rows["shot1-t1"]["pick"]) == ("approve", "ann", "True")
    assert rows["shot1-t1"]["review_note"] == "'=HYPERLINK(\"x\")"  # a spreadsheet never runs it
    assert (rows["shot2-t2"]["review"], rows["shot2-t2"]["pick"], rows["shot4"]["review"]) == ("", "", "")
    doc = operations.report(led, tmp_path / "r.html")
    assert doc["review"] == {"approve": 1, "reject": 1, "pending": 1}
    page = (tmp_path / "r.html").read_text()
    assert "<select id=\"review\"" in page and "approve (1)" in page
    data = page_data(page)
    col = data["fields"].index("review")
    by_name = {r[0]: r for r in data["rows"]}
    strings = data["strings"]
    assert strings[by_name["shot3"][col]] == "reject" and strings[by_name["shot2-t2"][col]] == "pending"
    assert by_name["shot4"][col] is None and by_name["shot1-t1"][data["fields"].index("pick")] == 1


def test_decisions_from_the_csv_export_writes(led, tmp_path):
    set_verdict(led, ["3"], Verdict.REJECT, reviewer="bob")
    path = tmp_path / "export.csv"
    operations.export(led, path)
    assert from_csv(led, path, reviewer="ann").decided == 0  # fed back as it is: nothing new
    rows = list(csv.DictReader(path.open()))
    for r in rows:
        if r["name"] == "shot1-t1":
            r.update(review="retake", review_note="=slower", reviewer="")
        if r["name"] == "shot2-t2":
            r.update(pick="true")
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    s = from_csv(led, path, reviewer="ann")
    assert s.decided == 2
    now = led.latest_decisions([1, 2, 3])
    assert (now[1]["verdict"], now[1]["note"], now[1]["reviewer"]) == ("retake", "=slower", "ann")
    assert (now[2]["verdict"], now[2]["pick"]) == ("approve", True)
    assert (now[3]["verdict"], now[3]["reviewer"]) == ("reject", "bob")  # blank cells changed nothing


def test_a_bad_decisions_file_names_every_problem_and_records_nothing(led, tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("job_key,review,pick\n" + f"{1:064x},approve,\n" + "nosuch,approve,\n"
                    + f"{3:064x},maybe,\n" + f"{4:064x},approve,\n" + f"{2:064x},reject,true\n")
    with pytest.raises(DecisionsFileError) as e:
        from_csv(led, path, reviewer="ann")
    msgs = [str(p) for p in e.value.problems]
    assert msgs == [f"{path}: line 3, field 'job_key': 'nosuch': no such job",
                    f"{path}: line 4, field 'review': 'maybe' is not a verdict (approve, retake, reject or pending)",
                    f"{path}: line 5, field 'job_key': {f'{4:064x}'[:12]} (shot4) is queued, not a finished clip",
                    f"{path}: line 6, field 'pick': a pick is approved; this line says 'reject'"]
    assert led.latest_decisions([1, 2, 3]) == {}
    path.write_text("name,verdict\nx,approve\n")
    with pytest.raises(DecisionsFileError, match="line 1, field 'job_key': missing column"):
        from_csv(led, path)


def test_verdict_spellings_and_reviewer():
    assert parse_verdict(" Approved ") == Verdict.APPROVE and parse_verdict("pending") is None
    with pytest.raises(ValueError, match="not a verdict"):
        parse_verdict("ok")
    assert default_reviewer()


def _migrate(url: str, monkeypatch, to: str) -> None:
    monkeypatch.setenv("BATCHGEN_LEDGER", url)
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    command.downgrade(cfg, to) if to < "0010" else command.upgrade(cfg, to)


def _migration_round_trip(url: str, monkeypatch) -> None:
    with ledger_at_revision(url, "0009") as c:
        c.execute(text("INSERT INTO runs (manifest, manifest_sha256, started_at, status, host, pid) "
                       "VALUES ('m', 'x', 1, 'finished', 'h', 1)"))
    led = _ledger(url, [_job(1)])  # opening migrates to the head: 0010
    set_verdict(led, ["1"], Verdict.RETAKE, note="again", reviewer="ann")
    led.close()
    _migrate(url, monkeypatch, "0009")
    engine = make_engine(url)
    with engine.connect() as c:
        assert not inspect(c).has_table("decisions")
        assert c.execute(text("SELECT count(*) FROM jobs")).scalar() == 1  # the jobs stay
    engine.dispose()
    _migrate(url, monkeypatch, "head")  # 0010 and every later one
    led = Ledger(url)
    try:
        assert led.latest_decisions([1]) == {}  # a downgrade takes the decisions with their table
        set_verdict(led, ["1"], Verdict.APPROVE, reviewer="ann")
        assert led.verdict_counts()["approve"] == 1
    finally:
        led.close()


def test_migration_0010_upgrades_and_downgrades_on_sqlite(tmp_path, monkeypatch):
    _migration_round_trip(f"sqlite:///{tmp_path / 'l.db'}", monkeypatch)


@pytest.mark.postgres
def test_migration_0010_upgrades_and_downgrades_on_postgres(pg_url, monkeypatch):
    _migration_round_trip(pg_url, monkeypatch)


@pytest.mark.postgres
def test_two_reviewers_deciding_the_same_clip_at_once_on_postgres(pg_url):
    led = _ledger(pg_url, [_job(i) for i in range(1, 21)])
    try:
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        def review(who: str, verdict: Verdict) -> None:
            try:
                start.wait()
                for _ in range(10):
                    led.decide([Change(i, verdict=verdict, note=who) for i in range(1, 21)], who)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=review, args=a) for a in (("ann", Verdict.APPROVE), ("bob", Verdict.REJECT))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        now = led.latest_decisions(range(1, 21))
        # every clip has one coherent latest decision: the verdict and note of the same reviewer
        assert all((d["verdict"], d["note"]) in (("approve", "ann"), ("reject", "bob")) for d in now.values())
        assert len(now) == 20
        counts = led.verdict_counts()
        assert counts["approve"] + counts["reject"] == 20 and counts["pending"] == 0
    finally:
        led.close()
