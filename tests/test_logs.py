"""JSON event logs: one object per event, the key never in them."""

from __future__ import annotations

import json


from conftest import KEY, run_args, run_cli, write_csv_manifest


def test_json_log_has_one_object_per_event_and_no_key(sim, tmp_path):
    m = write_csv_manifest(tmp_path / "m.csv", 5)
    log = tmp_path / "logs" / "run.jsonl"
    r = run_cli(run_args(sim, m, tmp_path, "--log-format", "json", "--log-file", str(log), "-q"))
    assert r.exit_code == 0
    lines = log.read_text().splitlines()
    docs = [json.loads(l) for l in lines]
    done = [d for d in docs if d.get("event") == "state" and d["to"] == "done"]
    assert len(done) == 5 and all(d["task_id"] and d["ts"].endswith("Z") for d in done)
    assert {d["to"] for d in docs if d.get("event") == "state"} >= {"submitting", "submitted", "done"}
    assert KEY not in log.read_text() and KEY not in r.output


