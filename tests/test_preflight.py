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
