"""A manifest renders exactly what it says, or stops with one clear message (issue 11).

Every case is checked through the CLI (``batchgen plan --json``), where a user meets it: exit 0
with the jobs the file means, or exit 2 naming the file, line and field — never a traceback."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchgen.cli import cli
from batchgen.manifest import Manifest

T2V = "grok-imagine-text-to-video"
R2V = "grok-imagine-reference-to-video"
IMG = "https://assets.example.com/a.png"


def plan(path: Path, *extra: str):
    # no ledger named, none at ./batchgen.db: plan compares with none (before the first run)
    with contextlib.chdir(path.parent):
        r = CliRunner().invoke(cli, ["plan", str(path), "--json", *extra], env={"BATCHGEN_LEDGER": None})
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert "Traceback" not in r.output
    return r


def jobs_of(path: Path) -> list:
    return list(Manifest(path).expand())


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def fails(path: Path, *needles: str) -> str:
    r = plan(path)
    assert r.exit_code == 2, r.output
    for n in needles:
        assert n in r.stderr, (n, r.stderr)
    return r.stderr


# ------------------------------------------------------------------ silent wrong renders
def test_empty_csv_cells_and_null_mean_not_set_so_defaults_apply(tmp_path):
    write(tmp_path / "rows.csv", "name,prompt,duration,resolution\na,one,,\nb,two,3,\n")
    m = write(tmp_path / "m.yaml", f"defaults: {{model: {T2V}, duration: 7, resolution: 720p}}\nrows: rows.csv\n"
                                   "jobs:\n  - {name: c, prompt: three, duration: null}\n")
    got = {j.name: (j.request["duration"], j.request["resolution"]) for j in jobs_of(m)}
    assert got == {"a": (7, "720p"), "b": (3, "720p"), "c": (7, "720p")}
    assert plan(m).exit_code == 0


def test_one_csv_mixes_models(tmp_path):
    m = write(tmp_path / "mix.csv", "name,model,prompt,reference_image_urls,duration\n"
                                    f"a,{T2V},a city at night,,12\nb,{R2V},@Image1 waves,{IMG},\n")
    got = {j.name: j.request for j in jobs_of(m)}
    assert "reference_image_urls" not in got["a"] and got["a"]["duration"] == 12
    assert got["b"]["reference_image_urls"] == [IMG] and got["b"]["duration"] == 8


def test_duplicate_keys_are_errors_naming_both_lines(tmp_path):
    m = write(tmp_path / "d.yaml", f"defaults: {{model: {T2V}}}\njobs:\n  - name: a\n    prompt: one\n"
                                   "    prompt: two\njobs:\n  - {name: b, prompt: x}\n")
    err = fails(m, "lines 4 and 5", "field 'prompt'", "lines 2 and 6", "field 'jobs'")
    assert "d.yaml" in err


def test_yaml_1_1_forms_are_read_as_yaml_1_2(tmp_path):
    m = write(tmp_path / "y.yaml", f"defaults: {{model: {T2V}}}\njobs:\n"
                                   "  - {name: no, prompt: hello, duration: 010}\n"
                                   "  - {name: on, prompt: yes, aspect_ratio: 16:9, duration: 0o12}\n")
    [a, b] = jobs_of(m)
    assert (a.name, a.request["duration"]) == ("no", 10)
    assert (b.name, b.request["prompt"], b.request["aspect_ratio"], b.request["duration"]) == ("on", "yes", "16:9", 10)
    # a non-text key and a date key: the first is refused, the second is text under YAML 1.2
    fails(write(tmp_path / "k.yaml", f"defaults: {{model: {T2V}, 1: x}}\njobs:\n  - {{prompt: p, ~: y}}\n"),
          "field names must be text, got 1", "got ~ (null)", "line 1", "line 3")
    dated = write(tmp_path / "dk.yaml", f"defaults: {{model: {T2V}}}\njobs:\n  - {{prompt: p, 2024-05-01: x}}\n")
    assert plan(dated).exit_code == 0


def test_unterminated_quote_is_reported_where_it_opened(tmp_path):
    m = write(tmp_path / "q.csv", f"name,model,prompt\na,{T2V},fine\nb,{T2V},\"never closed\nc,{T2V},x\nd,{T2V},y\n")
    fails(m, "q.csv: line 3", "opened on line 3 is never closed")
    stray = write(tmp_path / "s.csv", f"name,model,prompt\na,{T2V},\"quoted\"tail\n")
    fails(stray, "line 2", "malformed CSV")


def test_warnings_reach_run_and_name_the_row(tmp_path, sim):
    write(tmp_path / "rows.csv", f"name,model,prompt,notes\na,{T2V},one,for the client\n")
    m = write(tmp_path / "m.yaml", "defaults: {tag: nightly}\nrows: rows.csv\noutput: \"{name}-{tag}.mp4\"\njobs:\n"
                                   f"  - {{name: b, model: {T2V}, prompt: two, tag: used-only-by-output}}\n")
    r = CliRunner().invoke(cli, ["run", str(m), "--api-base", sim.url, "--ledger", str(tmp_path / "l.db"),
                                 "--out", str(tmp_path / "out"), "--rpm", "0", "--poll-min", "0.05"],
                           env={"BATCHGEN_API_KEY": "sk-x"})
    assert r.exit_code == 0, r.output
    assert "warning:" in r.stderr and "rows.csv: row 1 (line 2)" in r.stderr and "'notes'" in r.stderr
    assert "'tag'" not in r.stderr  # used by the output template: not "unused"
    assert (tmp_path / "out" / "b-used-only-by-output.mp4").is_file() and (tmp_path / "out" / "a-nightly.mp4").is_file()


# ------------------------------------------------------------------ inputs that crashed
@pytest.mark.parametrize("ch", ["\x00", "\x01", "\x0b", "\x0c", "\x1b", "\x7f"])
def test_control_characters_anywhere_in_yaml(tmp_path, ch):
    m = write(tmp_path / "c.yaml", f"defaults: {{model: {T2V}}}\njobs:\n  - {{prompt: a{ch}b}}\n")
    fails(m, "line 3", f"U+{ord(ch):04X}")


def test_lone_surrogate_binary_dates_and_nan(tmp_path):
    fails(write(tmp_path / "s.yaml", f"defaults: {{model: {T2V}}}\njobs:\n  - {{prompt: \"\\ud83c\"}}\n"),
          "line 3", "surrogate")
    fails(write(tmp_path / "b.yaml", "unvalidated_models: [x-model]\njobs:\n  - {model: x-model, data: !!binary aGk=}\n"),
          "line 3", "!!binary")
    fails(write(tmp_path / "t.yaml", "unvalidated_models: [x-model]\njobs:\n  - {model: x-model, when: !!timestamp 2024-01-01}\n"),
          "!!timestamp")
    fails(write(tmp_path / "n.yaml", f"defaults: {{model: {T2V}}}\njobs:\n  - {{prompt: p, duration: .nan}}\n"),
          "not a finite number")
    # an unvalidated model's odd values still make a valid, JSON-clean plan
    ok = write(tmp_path / "u.yaml", "unvalidated_models: [x-model]\njobs:\n"
                                    "  - {model: x-model, prompt: p, when: 2024-05-01, extra: {a: 1, b: [1, 2.5]}}\n")
    r = plan(ok)
    assert r.exit_code == 0 and json.loads(r.stdout)["jobs"] == 1


def test_merge_keys_multi_documents_aliases_and_syntax_errors_say_what_to_do(tmp_path):
    fails(write(tmp_path / "m.yaml", "shared: &s {model: x}\njobs:\n  - <<: *s\n"), "defaults:")
    fails(write(tmp_path / "m2.yaml", "jobs:\n  - <<: {model: x}\n    prompt: p\n"), "merge keys", "defaults:")
    fails(write(tmp_path / "d.yaml", f"jobs:\n  - {{model: {T2V}, prompt: a}}\n---\njobs: []\n"), "one YAML document")
    err = fails(write(tmp_path / "x.yaml", f"defaults: {{model: {T2V}}}\njobs:\n  - {{prompt: [a, b}}\n  - {{prompt: c}}\n"),
                "line ", "column")
    assert "line 3" in err  # where the unclosed bracket opened


def test_csv_bad_bytes_delimiters_braces_and_empty_files(tmp_path):
    rows = [f"r{i},{T2V},clip {i}" for i in range(2000)]
    rows[1500] = f"r1500,{T2V},caf\xe9"  # latin-1 byte deep in the file
    data = ("name,model,prompt\n" + "\n".join(rows) + "\n").encode("utf-8").replace("caf\xe9".encode(), b"caf\xe9")
    fails(write(tmp_path / "b.csv", data), "line 1502", "not UTF-8")
    fails(write(tmp_path / "semi.csv", f"name;model;prompt\na;{T2V};x\n"), "semicolons")
    fails(write(tmp_path / "tab.csv", f"name\tmodel\tprompt\na\t{T2V}\tx\n"), "tabs")
    notes = write(tmp_path / "n.csv", f"name,model,prompt,notes\na,{T2V},x,\"{{\"\"shot\"\": 3}}\"\n")
    r = plan(notes)
    assert r.exit_code == 0, r.stderr
    header_only = fails(write(tmp_path / "h.csv", "name,model,prompt\n"), "no jobs")
    empty_list = fails(write(tmp_path / "e.yaml", "jobs: []\n"), "no jobs")
    assert header_only.split(": ", 2)[-1] == empty_list.split(": ", 2)[-1]


def test_unused_matrix_field_is_named(tmp_path):
    m = write(tmp_path / "mx.yaml", f"defaults: {{model: {T2V}}}\nmatrix:\n  mood: [calm, wild]\n"
                                    "jobs:\n  - {name: a, prompt: same prompt}\n")
    fails(m, "line 2", "matrix field 'mood'", "same request")


# ------------------------------------------------------------------ names and round trips
def test_unicode_output_names_and_collisions_say_why(tmp_path):
    m = write(tmp_path / "u.yaml", f"defaults: {{model: {T2V}}}\njobs:\n  - {{name: 海边日出, prompt: a}}\n"
                                   "  - {name: Café, prompt: b}\n  - {name: \"Cafe\\u0301\", prompt: c}\n")
    err = fails(m, "is also used by")  # é precomposed and e + combining accent are one name (NFC)
    [a] = jobs_of(write(tmp_path / "ok.yaml", f"defaults: {{model: {T2V}}}\njobs:\n  - {{name: 海边日出, prompt: a}}\n"))
    assert a.output == "海边日出.mp4"
    long = "x" * 90
    fails(write(tmp_path / "l.yaml", f"defaults: {{model: {T2V}}}\njobs:\n  - {{name: {long}1, prompt: a}}\n"
                                     f"  - {{name: {long}2, prompt: b}}\n"), "cut to 80 characters")
    assert "Café" in err or "Cafe" in err


@pytest.mark.slow
def test_export_round_trip_gives_the_same_keys(tmp_path, sim):
    m = write(tmp_path / "m.yaml", f"defaults: {{model: {R2V}, reference_image_urls: [{IMG}]}}\n"
                                   "matrix: {aspect_ratio: ['16:9', '9:16']}\njobs:\n"
                                   "  - {name: a, prompt: '@Image1 waves'}\n  - {name: b, prompt: '=1+1 @Image1', take: 2}\n")
    runner = CliRunner()
    common = ["--ledger", str(tmp_path / "l.db")]
    r = runner.invoke(cli, ["run", str(m), "--api-base", sim.url, "--out", str(tmp_path / "out"), "--rpm", "0",
                            "--poll-min", "0.05", *common], env={"BATCHGEN_API_KEY": "sk-x"})
    assert r.exit_code == 0, r.output
    keys = {j.key for j in jobs_of(m)}
    safe = runner.invoke(cli, ["export", *common, "-o", str(tmp_path / "safe.csv")])
    assert safe.exit_code == 0 and "'@Image1" in (tmp_path / "safe.csv").read_text()
    raw = runner.invoke(cli, ["export", *common, "--raw", "-o", str(tmp_path / "raw.csv")])
    assert raw.exit_code == 0
    back = write(tmp_path / "back.yaml", "rows: raw.csv\noutput: '{name}-{aspect_ratio}.mp4'\n")
    assert {j.key for j in jobs_of(back)} == keys
    doc = json.loads(runner.invoke(cli, ["export", *common, "--json"]).stdout)
    assert isinstance(doc[0]["params"], dict) and doc[0]["params"]["aspect_ratio"] in ("16:9", "9:16")
