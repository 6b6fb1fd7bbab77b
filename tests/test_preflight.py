"""Everything that can be checked is checked before the first create (issue 18): a run either
refuses before anything is paid — every problem at once, exit 2, no task created — or it ends
with its own exit code, whatever fails after it paid (report, metrics, notification)."""

from __future__ import annotations

import json
import pytest

from conftest import run_args, run_cli

TWO = ("defaults: {model: grok-imagine-text-to-video, duration: 2, resolution: 480p}\n"
       "output: \"sub/{name}.mp4\"\n"
       "jobs:\n  - {name: a, prompt: a lighthouse}\n  - {name: b, prompt: a harbour}\n")


def test_an_output_folder_symlinked_out_of_out_is_refused_before_anything_is_paid(sim_factory, tmp_path):
    sim = sim_factory(seed=31)
    m = tmp_path / "m.yaml"
    m.write_text(TWO)
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "sub").symlink_to(tmp_path / "elsewhere")
    r = run_cli(run_args(sim, m, tmp_path))
    assert r.exit_code == 2, r.output
    assert "m.yaml: jobs[0] (line 4), field 'output': 'sub/a.mp4' would not land inside --out" in r.output
    assert "jobs[1]" in r.output  # every problem at once
    assert sim.truth()["creates"] == [] and not list((tmp_path / "elsewhere").iterdir())
    # the same once the manifest ran before (the reuse path, which does not expand it again)
    (tmp_path / "out" / "sub").unlink()
    assert run_cli(run_args(sim, m, tmp_path)).exit_code == 0
    creates = len(sim.truth()["creates"])
    m.write_text(TWO + "  - {name: c, prompt: a pier}\n")
    (tmp_path / "out" / "sub").rename(tmp_path / "out" / "moved")
    (tmp_path / "out" / "sub").symlink_to(tmp_path / "elsewhere")
    r = run_cli(run_args(sim, m, tmp_path))
    assert r.exit_code == 2 and "'sub/c.mp4' would not land inside --out" in r.output, r.output
    assert len(sim.truth()["creates"]) == creates


def test_a_symlink_loop_in_the_output_path_is_one_line_not_a_traceback(sim_factory, tmp_path):
    sim = sim_factory(seed=32)
    m = tmp_path / "m.yaml"
    m.write_text(TWO)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").symlink_to(tmp_path / "out" / "sub")
    r = run_cli(run_args(sim, m, tmp_path))
    assert r.exit_code == 2 and "Traceback" not in r.output and "field 'output'" in r.output, r.output
    assert sim.truth()["creates"] == []


@pytest.mark.parametrize("setting, says", [
    ("render_min=fast", "render_min takes float"),
    ("seed=1.5", "seed takes int"),
    ("audio=maybe", "audio takes bool"),
    ("nope=1", "expected KEY=VALUE"),
])
def test_sim_set_values_have_the_knobs_type(tmp_path, setting, says):
    m = tmp_path / "m.yaml"
    m.write_text(TWO)
    r = run_cli(["run", str(m), "--simulate", "--ledger", str(tmp_path / "l.db"), "--out", str(tmp_path / "out"),
                 "--sim-set", setting, "--sim-set", "render_max=1"])
    assert r.exit_code == 2 and says in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "l.db").exists()


def test_typed_sim_set_values_run(tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text(TWO)
    r = run_cli(["run", str(m), "--simulate", "--ledger", str(tmp_path / "l.db"), "--out", str(tmp_path / "out"),
                 "--sim-set", "render_min=0.1", "--sim-set", "render_max=1", "--sim-set", "balance=none",
                 "--sim-set", "audio=true", "--sim-set", "seed=3", "--poll-min", "0.05", "--rpm", "0", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["counts"]["done"] == 2


def _refused_before_anything(r, sim, tmp_path) -> None:
    """Exit 2, said so, nothing created at the API, no ledger."""
    assert r.exit_code == 2, r.output
    assert "nothing was submitted" in r.output and "Traceback" not in r.output
    assert sim.truth()["creates"] == [] and not (tmp_path / "l.db").exists()


@pytest.mark.tmpfs
def test_a_read_only_out_is_refused_before_anything_is_paid(sim_factory, tmp_path, tmpfs):
    import subprocess

    sim = sim_factory(seed=34)
    m = tmp_path / "m.yaml"
    m.write_text(TWO)
    mnt = tmpfs("size=4m")
    subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
    args = run_args(sim, m, tmp_path)
    args[args.index("--out") + 1] = str(mnt / "out")
    r = run_cli(args)
    assert r.exit_code == 7, r.output  # the file system refuses: the documented code, before anything
    assert "Read-only file system" in r.output and "nothing was submitted" in r.output
    assert sim.truth()["creates"] == [] and not (tmp_path / "l.db").exists()


def test_every_problem_of_the_run_is_named_at_once(sim_factory, tmp_path):
    sim = sim_factory(seed=35)
    m = tmp_path / "m.yaml"
    m.write_text(TWO)
    r = run_cli(["run", str(m), "--api-base", "127.0.0.1:9", "--ledger", str(tmp_path / "l.db"),
                 "--out", str(tmp_path / "out"), "--report", str(tmp_path / "nodir" / "sub" / "r.html"),
                 "--metrics-file", str(tmp_path / "nodir" / "m.prom"), "--notify", "slack",
                 "--notify", "json://[::1/hook"])
    assert r.exit_code == 2, r.output
    for what in ("--api-base", "--report", "--metrics-file", "--notify …: not a URL", "--notify json://"):
        assert what in r.output, (what, r.output)
    assert "notification failed" not in r.output  # named once, by the preflight; nothing tried
    assert "nothing was submitted" in r.output and not (tmp_path / "l.db").exists()
    assert not (tmp_path / "out").exists()  # the probe left nothing behind, not even the folder
    r = run_cli(run_args(sim, m, tmp_path, "--report", str(tmp_path / "nodir" / "sub" / "r.html")))
    _refused_before_anything(r, sim, tmp_path)


@pytest.mark.parametrize("url, says", [
    ("postgres://localhost/db", "postgresql+psycopg://"),
    ("mysql://u:hunter2@localhost/db", "not a ledger database"),
])
def test_a_ledger_url_that_cannot_work_is_refused_before_anything(sim_factory, tmp_path, url, says):
    sim = sim_factory(seed=36)
    m = tmp_path / "m.yaml"
    m.write_text(TWO)
    args = run_args(sim, m, tmp_path)
    args[args.index("--ledger") + 1] = url
    r = run_cli(args)
    assert r.exit_code == 2 and says in r.output and "hunter2" not in r.output, r.output
    assert sim.truth()["creates"] == []


def test_a_notification_for_a_run_refused_before_it_started_says_so(tmp_path):
    from batchgen import notify

    title, body, _ = notify.compose({"exit_code": 8, "error": "delivery refused (403)", "manifest": "m.yaml",
                                     "started": False}, ledger="l.db")
    assert "could not start; nothing was submitted" in title and "kept locally" not in title + body
    title, _, _ = notify.compose({"exit_code": 8, "run_id": 3, "manifest": "m.yaml", "counts": {"done": 2}},
                                 ledger="l.db")
    assert "kept locally" in title or "delivered" in title


def test_an_api_base_with_credentials_is_refused_and_not_echoed(tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text(TWO)
    r = run_cli(["run", str(m), "--api-base", "http://user:hunter2@127.0.0.1:9", "--ledger", str(tmp_path / "l.db"),
                 "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and "BATCHGEN_API_KEY" in r.output and "hunter2" not in r.output, r.output
    assert not (tmp_path / "l.db").exists()
