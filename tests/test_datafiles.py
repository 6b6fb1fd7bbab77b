"""Models files, price tables and inline `models:` (issue 19, "Reading"; issue 18, the credit cap):
one door (batchgen/datafiles.py). Whatever file a user hands `--models`, `--prices` or a
manifest's `models:`, it ends in the right catalog or in exit 2 listing EVERY problem with its
file, line and column — never a traceback, a hang, or a silently different meaning."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from batchgen import datafiles, specs, yamlsafe
from batchgen.cli import cli

MANIFEST = "defaults: {model: grok-imagine-text-to-video, prompt: a lighthouse}\njobs:\n  - {name: a, duration: 4}\n"
WHERE = re.compile(r": line \d+, column \d+: ")


def _cli(*args: str):
    # No ledger named and none at ./batchgen.db (an empty folder): plan compares with none, as
    # before the first run, and never creates one. (A named ledger that does not exist is an
    # error, issue 28.)
    env = {"BATCHGEN_API_KEY": "sk-test", "BATCHGEN_LEDGER": None}
    with tempfile.TemporaryDirectory() as empty, contextlib.chdir(empty):
        result = CliRunner().invoke(cli, list(args), env=env)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _problems(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if line.startswith("  ")]


# ------------------------------------------------------------------ every problem at once, placed
BAD_MODELS = """\
my-model:
  fields:
    prompt: {type: text, required: no}
    aspect_ratio: {type: enum, choices: [16:9, 9:16], default: "1:1"}
    duration: {type: int, min: 10, max: 2}
    seed: {type: int, choices: []}
    mixed: {type: enum, choices: [a, 1]}
    steps: {type: int, default: 3, min: 5, max: 9}
    mode: {type: enum, choices: [a, b]}
  rules:
    - {total: [prompt], max: "x"}
    - {one_of: [promt, seed]}
    - {when: {mode: c}, count: {mode: [0, 1]}}
  duration_tolerance: one frame
  output_seconds: -30
  refs: {"@Image": nothing}
"my\\e[31mred":
  fields: {prompt: {type: text}}
other:
  fields: {prompt: {type: text, max_len: 0}, n: {type: int, min: 0}}
  colour: blue
"""
EXPECTED = [  # (line, what the message says)
    (3, "`required` is true or false; got 'no'"),
    (4, "the default must itself be one of 16:9, 9:16; got '1:1'"),
    (5, "`min` 10 is above `max` 2"),
    (6, "`choices` is a non-empty list"),
    (7, "`choices` of an enum field are text; got 1"),
    (8, "the default must itself be between 5 and 9"),
    (11, "rule `max` is a whole number, 0 or more; got 'x'"),
    (12, "names 'promt', which is not a field of this model; did you mean 'prompt'?"),
    (13, "'mode' is never 'c'"),
    (13, "'mode', a str field; it must be a urls or list field"),
    (14, "`duration_tolerance` is a number of seconds (finite, 0 or more); got 'one frame'"),
    (15, "`output_seconds` is duration, input or a number of seconds (finite, 0 or more); got -30"),
    (16, "`refs` @Image names 'nothing', which is not a field"),
    (17, "model 'my\\x1b[31mred': the name contains U+001B"),
    (20, "has no `duration` field"),
    (20, "`max_len` must be 1 or more"),
    (21, "unknown key 'colour' in a model entry"),
]


def test_a_models_file_reports_every_problem_at_once_with_line_and_column(tmp_path):
    bad = _write(tmp_path, "bad.yaml", BAD_MODELS)
    r = _cli("models", "--models", str(bad))
    assert r.exit_code == 2
    assert r.output.startswith(f"error: the models file has {len(EXPECTED)} problem(s):")
    lines = _problems(r.output)
    assert len(lines) == len(EXPECTED), r.output
    for line, (n, text) in zip(lines, EXPECTED):
        assert line.startswith(f"{bad}: line {n}, column "), line
        assert text in line, (text, line)
    assert "\x1b" not in r.output  # the escape sequence is shown, never sent to the terminal


def test_the_same_problems_inline_carry_the_manifests_lines(tmp_path):
    body = "models:\n" + "".join("  " + line + "\n" for line in BAD_MODELS.splitlines()) + MANIFEST
    m = _write(tmp_path, "m.yaml", body)
    r = _cli("plan", str(m))
    assert r.exit_code == 2
    lines = _problems(r.output)
    assert len(lines) == len(EXPECTED), r.output
    for line, (n, text) in zip(lines, EXPECTED):
        assert line.startswith(f"{m}: line {n + 1}, column "), line
        assert text in line


def test_a_manifests_models_file_problems_name_that_file(tmp_path):
    _write(tmp_path, "bad.yaml", BAD_MODELS)
    m = _write(tmp_path, "m.yaml", "models: bad.yaml\n" + MANIFEST)
    r = _cli("plan", str(m))
    assert r.exit_code == 2
    lines = _problems(r.output)
    assert len(lines) == len(EXPECTED)
    assert all(line.startswith(f"{tmp_path / 'bad.yaml'}: line ") for line in lines), lines


# ------------------------------------------------------------------ silent wrong meanings
@pytest.mark.parametrize("entry, text", [
    ("fields: {prompt: {type: text, required: yes}}", "`required` is true or false; got 'yes'"),
    ("fields: {prompt: {type: text}, prompt: {type: text}}", "appears twice in one mapping"),
    ("fields: {prompt: {type: text}, n: {type: int, choices: []}}", "`choices` is a non-empty list"),
    ("fields: {prompt: {type: text}, n: {type: int, choices: [1, 2], default: 3}}", "the default must itself be one of"),
    ("fields: {prompt: {type: text}, n: {type: int, min: 10, max: 2}}", "`min` 10 is above `max` 2"),
    ("fields: {prompt: {type: text}, d: {type: bool, default: 'no'}}", "the default must itself be true or false"),
    ("fields: {prompt: {type: text, max: 3}}", "`max` does not apply to a text field"),
    ("fields: {prompt: {type: text}, model: {type: text}}", "`model` names the model in every request"),
    ("fields: {prompt: {type: txt}}", "needs `type:` one of"),
    ("fields: {prompt: {type: text}, duration: {type: int, max: 10}}", "a duration needs `min:`"),
    ("fields: {prompt: {type: text}, duration: {type: int, min: -5, max: 10}}", "a duration needs `min:`"),
    ("fields: {prompt: {type: text}, duration: {type: int, min: 1, auto: -1}}", "is budgeted at the maximum"),
    ("fields: {prompt: {type: text}}\n  rules: [{one_of: [prompt, promt]}]", "names 'promt'"),
    ("fields: {prompt: {type: text}}\n  rules: [{if_set: prompt}]", "a rule is one of"),
    ("fields: {prompt: {type: text}}\n  rules: [{one_of: [prompt], warn: maybe}]", "`warn` is true or false"),
    ("fields: {prompt: {type: text}}\n  audio: sound", "`audio` names 'sound'"),
    ("fields: {prompt: {type: text}}\n  output_seconds: 8\n  open: 'yes'", "`open` is true or false"),
    ("fields: {prompt: {type: text}}\n  output_seconds: 8\n  read_on: yesterday", "`read_on` is the date"),
    ("fields: {prompt: {type: text}}\n  output_seconds: 8\n  typical_render_s: 0", "`typical_render_s` is the seconds"),
    ("fields: {prompt: {type: text}}\n  output_seconds: 8\n  typical_render_s: fast", "`typical_render_s` is the seconds"),
    ("fields: {prompt: {type: text}}", "has no `duration` field"),
    ("fields: {prompt: {type: text}}\n  output_seconds: 1e400", "not a finite number"),
    ("fields: {prompt: {type: text}}\n  output_seconds: .inf", "not a finite number"),
    ("fields: {prompt: {type: text}}\n  output_seconds: 8\n  sources: https://a.example", "`sources` is a list"),
])
def test_a_models_file_that_would_mean_something_else_is_refused(tmp_path, entry, text):
    p = _write(tmp_path, "models.yaml", f"my-model:\n  {entry}\n")
    r = _cli("models", "--models", str(p))
    assert r.exit_code == 2, r.output
    assert text in r.output
    assert WHERE.search(r.output) or ": line " in r.output


def test_a_good_entry_reads_as_written_under_yaml_1_2(tmp_path):
    # YAML 1.1 read 16:9 as 969 and a date as a date (models --json then failed).
    p = _write(tmp_path, "models.yaml", """\
my-model:
  doc: https://example.com/page
  sources: [https://example.com/page, https://example.com/zh]
  read_on: 2026-11-30
  typical_render_s: 75
  fields:
    prompt: {type: text, required: true, max_len: 100}
    aspect_ratio: {type: enum, choices: [16:9, 9:16], default: 16:9}
    duration: {type: int, choices: [4, 8], default: 8}
    note: {type: text, default: 2024-05-01}
  rules:
    - {when: {aspect_ratio: 9:16}, count: {refs: [0, 1]}}
  refs: {"@Image": refs}
""".replace("    note:", "    refs: {type: urls, min: 0, max: 2}\n    note:"))
    r = _cli("models", "--models", str(p), "--json", "my-model")
    assert r.exit_code == 0, r.output
    (doc,) = json.loads(r.output)
    fields = {f["name"]: f for f in doc["fields"]}
    assert fields["aspect_ratio"]["allowed"] == ["16:9", "9:16"] and fields["aspect_ratio"]["default"] == "16:9"
    assert fields["note"]["default"] == "2024-05-01"
    assert doc["typical_render_s"] == 75  # the forecast's guess for it before any history
    entries = datafiles.read_models(p)
    assert entries["my-model"].sources == ("https://example.com/page", "https://example.com/zh")
    assert entries["my-model"].read_on == "2026-11-30" and entries["my-model"].typical_render_s == 75.0
    m = _write(tmp_path, "m.yaml", "defaults: {model: my-model, prompt: hi}\njobs:\n  - {name: a, aspect_ratio: 9:16}\n")
    r = _cli("plan", str(m), "--models", str(p))
    assert r.exit_code == 0, r.output


def test_inline_required_no_is_refused_not_made_required(tmp_path):
    m = _write(tmp_path, "m.yaml", "models:\n  my-model:\n    fields:\n      prompt: {type: text, required: no}\n"
                                   "    output_seconds: 5\ndefaults: {model: my-model}\njobs:\n  - {name: a}\n")
    r = _cli("plan", str(m))
    assert r.exit_code == 2
    assert f"{m}: line 4, column 28: model 'my-model', field 'prompt': `required` is true or false; got 'no'" \
        in r.output


def test_per_model_field_the_model_lacks_is_an_error_naming_it(tmp_path):
    m = _write(tmp_path, "m.yaml", "per_model:\n  grok-imagine-text-to-video: {seed: 42}\n" + MANIFEST)
    r = _cli("plan", str(m))
    assert r.exit_code == 2
    assert "line 2, field 'seed': `per_model` sets 'seed' for grok-imagine-text-to-video, which has no such field" \
        in r.output
    # As a template variable it is used, so it is fine.
    ok = _write(tmp_path, "ok.yaml", "per_model:\n  grok-imagine-text-to-video: {style: noir}\n"
                                     "defaults: {model: grok-imagine-text-to-video, prompt: 'a {style} lighthouse'}\n"
                                     "jobs:\n  - {name: a}\n")
    from batchgen.manifest import Manifest
    assert Manifest(ok).validate() == 1


def test_model_names_with_control_characters_never_reach_the_terminal(tmp_path):
    p = _write(tmp_path, "models.yaml", '"evil\\e]0;pwned\\a":\n  fields: {prompt: {type: text}}\n  output_seconds: 5\n')
    r = _cli("models", "--models", str(p))
    assert r.exit_code == 2
    assert "\x1b" not in r.output and "\x07" not in r.output
    assert "contains U+001B" in r.output
    # Nor any other text of an entry that `batchgen models` prints: its page, a default, a choice.
    p = _write(tmp_path, "texts.yaml", 'my-model:\n  doc: "https://x\\e]0;pwned\\a"\n  fields:\n'
                                       '    prompt: {type: text, default: "a\\e[2Jb"}\n'
                                       '    style: {type: enum, choices: [ok, "x\\e[31m"]}\n  output_seconds: 5\n')
    r = _cli("models", "--models", str(p))
    assert r.exit_code == 2 and "\x1b" not in r.output and "\x07" not in r.output
    assert [line.split(": ")[1] for line in _problems(r.output)] == ["line 2, column 3", "line 4, column 26",
                                                                     "line 5, column 39"]


# ------------------------------------------------------------------ files that are not files
def test_non_regular_files_are_refused_before_reading(tmp_path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(loop)
    big = tmp_path / "big.yaml"
    big.write_text("x: " + "a" * (datafiles.MAX_BYTES + 1) + "\n")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(b"a:\x00 b\n")
    for path, text in ((fifo, "is a FIFO"), ("/dev/zero", "is a device"), (tmp_path, "is a directory"),
                       (loop, "Too many levels of symbolic links"), (big, f"limited to {datafiles.MAX_BYTES} bytes"),
                       (binary, "line 1: is not UTF-8 text (byte 0x89)"), (tmp_path / "none.yaml", "No such file"),
                       (nul, "control character U+0000")):
        for args in (["models", "--models", str(path)], ["plan", str(_write(tmp_path, "m.yaml", MANIFEST)),
                                                        "--prices", str(path)]):
            r = _cli(*args)
            assert r.exit_code == 2, (path, args, r.output)
            assert text in r.output, (path, r.output)
        m = _write(tmp_path, "m2.yaml", f"models: {json.dumps(str(path))}\n" + MANIFEST)
        r = _cli("plan", str(m))
        assert r.exit_code == 2 and text in r.output, r.output


def test_aliases_are_refused_so_they_cannot_expand(tmp_path):
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 20)]
    p = _write(tmp_path, "bomb.yaml", "\n".join(lines) + "\n")
    for args in (["models", "--models", str(p)], ["plan", str(_write(tmp_path, "m.yaml", MANIFEST)), "--prices", str(p)]):
        r = _cli(*args)
        assert r.exit_code == 2
        assert "YAML aliases (*name) are not allowed" in r.output and "line 2, column" in r.output


# ------------------------------------------------------------------ price tables
@pytest.mark.parametrize("body, text", [
    ("[1, 2]\n", "a price table is a mapping"),
    ("foo: bar\n", "unknown key 'foo' in a price table"),
    ("per_second: {sora-2: {720p: .nan}}\n", ".nan is not a finite number"),
    ("per_second: {sora-2: {720p: -1}}\n", "must be a finite number, 0 or more; got -1"),
    ("per_second: {sora-2: {720p: '1.4'}}\n", "got '1.4'"),
    ("per_second: {sora-2: {720p: true}}\n", "got True"),
    ("per_second: {sora-2: 3}\n", "maps each resolution"),
    ("per_second: {sora-2: {}}\n", "maps each resolution"),
    ("per_second: {sora-2: {720p: 2}}\nassumed_seconds: {sora-2: -30}\n", "got -30"),
    ("per_second: {sora-2: {720p: 2}}\nunit: [a]\n", "`unit` must be text"),
    ("per_second: {sora-2: {720p: 2}}\nper_second: {}\n", "appears twice"),
    ("", "found nothing"),
])
def test_a_bad_price_table_is_refused_with_line_and_column(tmp_path, body, text):
    p = _write(tmp_path, "prices.yaml", body)
    m = _write(tmp_path, "m.yaml", MANIFEST)
    for args in (["plan", str(m), "--prices", str(p)], ["status", "--prices", str(p), "--ledger", str(tmp_path / "x")]):
        r = _cli(*args)
        assert r.exit_code == 2, r.output
        assert text in r.output and f"{p}: {'file' if not body else 'line '}" in r.output, r.output


def test_the_credit_cap_cannot_be_bypassed_by_a_nan_price_or_a_negative_length(tmp_path):
    m = _write(tmp_path, "m.yaml", MANIFEST)
    nan = _write(tmp_path, "nan.yaml", "per_second:\n  grok-imagine-text-to-video: {720p: .nan}\n")
    neg = _write(tmp_path, "neg.yaml", "grok-imagine-text-to-video:\n  fields: {prompt: {type: text}}\n"
                                       "  output_seconds: -30\n")
    for extra in (["--prices", str(nan)], ["--models", str(neg)]):
        r = _cli("run", str(m), "--simulate", "--max-credits", "3", "--ledger", str(tmp_path / "l.db"),
                 "--out", str(tmp_path / "out"), *extra)
        assert r.exit_code == 2, r.output
        assert " line " in r.output
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.mp4"))
    r = _cli("plan", str(m), "--prices", str(nan))
    assert r.exit_code == 2 and "nan credits" not in r.output


def test_a_good_price_table_replaces_entries_and_its_unit(tmp_path):
    p = _write(tmp_path, "prices.yaml", "unit: USD\nper_second:\n  grok-imagine-text-to-video: {720p: 0.5}\n")
    m = _write(tmp_path, "m.yaml", MANIFEST)
    r = _cli("plan", str(m), "--prices", str(p), "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["credits_estimated_total"] == 2.0 and doc["credits_unit"] == "USD" and doc["prices"] == str(p)


# ------------------------------------------------------------------ the shipped files and the rule table
def _plain(v):
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


@pytest.mark.parametrize("name", ["models.yaml", "prices.yaml"])
def test_the_shipped_files_read_identically_under_yamlsafe(name):
    """They are parsed by libyaml (fast, YAML 1.1) on every start; this is what makes that safe:
    the YAML 1.2 loader users' files go through reads exactly the same document, with no problem."""
    text = datafiles.shipped_path(name).read_text(encoding="utf-8")
    doc, problems = yamlsafe.load(text, kind="models file", trusted=True)
    assert problems == []
    fast = yaml.load(text, Loader=datafiles.FAST_LOADER)
    assert _plain(doc) == fast
    assert json.dumps(fast, sort_keys=True)  # no dates or other YAML 1.1 types
    if name == "models.yaml":
        slow, problems = datafiles.check_models(doc, name)
        assert problems == [] and slow == datafiles.shipped_models() == specs.SHIPPED.models
    else:
        slow_prices, problems = datafiles.check_prices(doc, name)
        assert problems == [] and slow_prices == datafiles.shipped_prices()


def test_every_rule_kind_builds_a_rule(tmp_path):
    """A new kind of rule is one row of RULE_KINDS (plus its Rule attribute and check): every row
    must name Rule attributes and every shape must be one the loader knows."""
    attrs = set(specs.Rule.__dataclass_fields__)
    shapes = {datafiles.FIELDS, datafiles.FIELD, datafiles.FIELD_VALUES, datafiles.FIELD_COUNTS,
              datafiles.FIELD_CHOICES, datafiles.COUNT}
    sample = {datafiles.FIELDS: ["a", "b"], datafiles.FIELD: "a", datafiles.FIELD_VALUES: {"mode": "x"},
              datafiles.FIELD_COUNTS: {"a": [0, 1]}, datafiles.FIELD_CHOICES: {"mode": ["x"]}, datafiles.COUNT: 2}
    fields = {"a": {"type": "urls", "max": 3}, "b": {"type": "urls", "max": 3},
              "mode": {"type": "enum", "choices": ["x", "y"]}, "duration": {"type": "int", "min": 1, "max": 5}}
    for kind, keys in datafiles.RULE_KINDS.items():
        assert set(keys) <= attrs, kind
        assert set(keys.values()) <= shapes, kind
        entries, problems = datafiles.check_models({"m": {"fields": fields, "rules": [
            {k: sample[shape] for k, shape in keys.items()}]}}, "x")
        assert problems == [], (kind, problems)
        assert len(entries["m"].rules) == 1


def test_a_secrets_file_given_by_mistake_is_refused_without_printing_it(tmp_path):
    m = _write(tmp_path, "m.yaml", MANIFEST)
    for body in ("BATCHGEN_API_KEY=sk-live-canary-123\n", "BATCHGEN_API_KEY: sk-live-canary-123\n",
                 "AWS_SECRET_ACCESS_KEY: sk-live-canary-123\nper_second: {}\n"):
        env = _write(tmp_path, ".env", body)
        for args in (["models", "--models", str(env)], ["plan", str(m), "--prices", str(env)]):
            r = _cli(*args)
            assert r.exit_code == 2 and "canary" not in r.output, r.output
