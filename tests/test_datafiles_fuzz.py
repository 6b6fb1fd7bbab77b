"""Property test of the models-file and price-table readers (issue 19), in the style of
test_manifest_fuzz.py: whatever a user hands `--models`, `--prices` or a manifest's `models:`
(inline or a file) — odd scalars, wrong shapes, control characters, aliases, tags, other
encodings, random bytes — it ends in exit 0 or exit 2 with a message, never a traceback, and
within 5 seconds; and the largest and most explosive inputs stay within a memory limit."""

from __future__ import annotations

import contextlib
import copy
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchgen import datafiles
from batchgen.cli import cli

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["grok-imagine-text-to-video", "my-model", "sora-2", "veo-3.1", '"evil\\e[31m"', "''", "~", "1", "null",
          "'a b'", "2024-05-01", "<<", "on"]
FIELD_NAMES = ["prompt", "duration", "aspect_ratio", "resolution", "image_urls", "seed", "name", "model", "promt",
               "generate_audio", "~", "1", "''", "<<"]
FIELD_KEYS = ["type", "required", "default", "choices", "min", "max", "max_len", "auto", "colour"]
ENTRY_KEYS = ["fields", "rules", "refs", "output_seconds", "duration_tolerance", "audio", "aspect_field", "open",
              "doc", "sources", "read_on", "tolerance"]
RULE_KEYS = ["when", "count", "one_of", "at_most_one", "total", "max", "requires_any", "if_set", "warn", "allowed"]
TOKENS = ["text", "enum", "int", "bool", "url", "urls", "list", "object", "txt", "true", "false", "no", "yes", "~",
          "null", "0", "1", "-1", "-30", "10", "010", "0x1f", "1e400", ".nan", "-.inf", "1.5", "16:9", "9:16",
          "480p", "720p", "duration", "input", "one frame", "2026-11-30", "[]", "{}", "[16:9, 9:16]", "[a, 1]",
          "[1, 2]", "[0, 0]", "[2, 1]", "[prompt, promt]", "[prompt]", "{prompt: x}", "{aspect_ratio: 21:9}",
          "{image_urls: [0, 1]}", "{prompt: [0, 1]}", "!!binary aGk=", "!!python/object:os.system x", "*alias",
          "&anchor x", "'quoted'", '"\\x00"', '"\\e]0;x\\a"', "[a, b", "{a: 1", "|", ">", "- x", "'", '"', "\t",
          "#c", "---", "https://a.example/p", "\"@Image\"", "海边", "99999999999999999999"]
weird = st.sampled_from(["\x00", "\x01", "\x0b", "\x1b", "\x7f", "\x85", "\u2028", "\ufeff", "\r", "\t", ":", "{",
                         "}", "[", "]", "&", "*", "!", "|", "\\", "'", '"'])
text = st.one_of(st.sampled_from(TOKENS), st.text(max_size=20), st.lists(st.one_of(weird, st.characters()),
                                                                         max_size=8).map("".join))


@st.composite
def catalogs(draw: st.DrawFn, indent: str = "") -> str:
    lines: list[str] = []
    for _ in range(draw(st.integers(0, 3))):
        lines.append(f"{indent}{draw(st.sampled_from(MODELS))}:")
        for _ in range(draw(st.integers(0, 4))):
            key = draw(st.sampled_from(ENTRY_KEYS))
            if key == "fields" and draw(st.integers(0, 3)):
                lines.append(f"{indent}  fields:")
                for _ in range(draw(st.integers(0, 4))):
                    spec = ", ".join(f"{draw(st.sampled_from(FIELD_KEYS))}: {draw(text)}"
                                     for _ in range(draw(st.integers(0, 4))))
                    lines.append(f"{indent}    {draw(st.sampled_from(FIELD_NAMES))}: {{{spec}}}")
            elif key == "rules" and draw(st.integers(0, 2)):
                lines.append(f"{indent}  rules:")
                for _ in range(draw(st.integers(0, 3))):
                    rule = ", ".join(f"{draw(st.sampled_from(RULE_KEYS))}: {draw(text)}"
                                     for _ in range(draw(st.integers(0, 3))))
                    lines.append(f"{indent}    - {{{rule}}}")
            else:
                lines.append(f"{indent}  {key}: {draw(text)}")
    if draw(st.integers(0, 9)) == 0:
        lines.insert(draw(st.integers(0, len(lines))), indent + draw(text))  # a stray line anywhere
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\n---\n", "\r\n"]))


@st.composite
def price_tables(draw: st.DrawFn) -> str:
    lines: list[str] = []
    for key in draw(st.lists(st.sampled_from(["unit", "per_second", "assumed_seconds", "foo", "per_second"]),
                             max_size=3)):
        if key == "unit" or not draw(st.integers(0, 3)):
            lines.append(f"{key}: {draw(text)}")
            continue
        lines.append(f"{key}:")
        for _ in range(draw(st.integers(0, 3))):
            model = draw(st.sampled_from(MODELS))
            if key == "per_second" and draw(st.integers(0, 3)):
                rates = ", ".join(f"{draw(st.sampled_from(['480p', '720p', 'default', '1', '~']))}: {draw(text)}"
                                  for _ in range(draw(st.integers(0, 3))))
                lines.append(f"  {model}: {{{rates}}}")
            else:
                lines.append(f"  {model}: {draw(text)}")
    return "\n".join(lines) + "\n"


# Entries of the shipped catalog, one to three values changed or keys added: deep in the checker.
SHIPPED = yaml.safe_load(datafiles.shipped_path("models.yaml").read_text(encoding="utf-8"))
VALUES = [None, True, False, "no", "yes", 0, -1, -30, 10**20, 1.5, -0.5, "", "x", "16:9", [], {}, [1, "a"], ["a"],
          [0, 0], [2, 1], [None], {"prompt": 1}, {"a": [1]}, {"prompt": [0, 1]}, "duration", "input", "promt",
          "prompt", "\x1b[31m", "2026-11-30", {"type": "int"}, {"type": "enum", "choices": []}]
NEW_KEYS = ["colour", "min", "max", "choices", "default", "auto", "warn", "when", "count", "total", "sources",
            "read_on", "required", "output_seconds", "max_len", "@Image"]


@st.composite
def mutated_catalogs(draw: st.DrawFn) -> str:
    names = draw(st.lists(st.sampled_from(sorted(SHIPPED)), min_size=1, max_size=3, unique=True))
    doc = copy.deepcopy({n: SHIPPED[n] for n in names})
    for _ in range(draw(st.integers(1, 3))):
        node: object = doc
        path: list[tuple[object, object]] = []
        while isinstance(node, dict | list) and node and (not path or draw(st.integers(0, 3))):
            key = (draw(st.sampled_from(sorted(node, key=str))) if isinstance(node, dict)
                   else draw(st.integers(0, len(node) - 1)))
            path.append((node, key))
            node = node[key]  # type: ignore[index]
        value = copy.deepcopy(draw(st.sampled_from(VALUES)))  # never the shared list itself
        if isinstance(node, dict) and draw(st.booleans()):
            node[draw(st.sampled_from(NEW_KEYS))] = value
        elif path:
            parent, key = path[-1]
            parent[key] = value  # type: ignore[index]
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


MANIFEST = "defaults: {model: grok-imagine-text-to-video, prompt: a lighthouse}\njobs:\n  - {name: a, duration: 4}\n"


def _cli(args: list[str], d: Path) -> None:
    t = time.process_time()  # CPU, not wall: the bound is on the work, not on a busy machine
    # no ledger named, none at ./batchgen.db: plan compares with none (before the first run)
    with contextlib.chdir(d):
        r = CliRunner().invoke(cli, args, env={"BATCHGEN_LEDGER": None})
    elapsed = time.process_time() - t
    assert r.exit_code in (0, 2), (r.exit_code, r.output, r.exception)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    if r.exit_code == 2:
        assert r.stderr.startswith("error:"), r.stderr
        assert "\x1b" not in r.output  # a name is never printed raw
    assert elapsed < 5.0


def _run(kind: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        f = d / "data.yaml"
        f.write_bytes(data)
        m = d / "m.yaml"
        if kind == "models":
            _cli(["models", "--models", str(f), "--json"], d)
            m.write_text("models: data.yaml\n" + MANIFEST)
            _cli(["plan", str(m), "--json"], d)
        elif kind == "prices":
            m.write_text(MANIFEST)
            _cli(["plan", str(m), "--prices", str(f), "--json"], d)
        else:  # inline: the catalog indented under the manifest's `models:`
            m.write_bytes(b"models:\n" + data + MANIFEST.encode())
            _cli(["plan", str(m), "--json"], d)


ENCODINGS = st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1"])
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _encode(doc: str, enc: str) -> bytes:
    return doc.encode(enc, errors="surrogatepass" if enc.startswith("utf-8") else "replace")


@pytest.mark.slow
@SETTINGS
@given(doc=catalogs(), enc=ENCODINGS)
def test_any_models_file_ends_in_exit_0_or_2(doc: str, enc: str) -> None:
    _run("models", _encode(doc, enc))


@SETTINGS
@given(doc=catalogs(indent="  "))
def test_any_inline_catalog_ends_in_exit_0_or_2(doc: str) -> None:
    _run("inline", _encode(doc, "utf-8"))


@pytest.mark.slow
@SETTINGS
@given(doc=mutated_catalogs(), inline=st.booleans())
def test_any_change_to_a_good_entry_ends_in_exit_0_or_2(doc: str, inline: bool) -> None:
    if inline:
        _run("inline", "".join("  " + line + "\n" for line in doc.splitlines()).encode())
    else:
        _run("models", doc.encode())


@SETTINGS
@given(doc=price_tables(), enc=ENCODINGS)
def test_any_price_table_ends_in_exit_0_or_2(doc: str, enc: str) -> None:
    _run("prices", _encode(doc, enc))


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=400), kind=st.sampled_from(["models", "prices"]))
def test_random_bytes_end_in_exit_0_or_2(data: bytes, kind: str) -> None:
    _run(kind, data)


def _limited() -> None:
    limit = 1536 * 1024 * 1024  # address space: far below what an alias bomb or an 11 MB catalog took
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.slow
def test_explosive_and_huge_files_are_refused_within_a_memory_limit(tmp_path):
    """An alias bomb (each level 9× the last), a catalog just under and one over the size cap,
    and /dev/zero: refused (or read) by a process that cannot take more than 1.5 GB."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("a0: &a0 [x, x, x, x, x, x, x, x, x]\n"
                    + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 12)))
    entry = "m{n}:\n  fields: {{prompt: {{type: text}}, duration: {{type: int, min: 1, max: 9}}}}\n"
    big = tmp_path / "big.yaml"
    text = ""
    n = 0
    while len(text) < datafiles.MAX_BYTES - 200:
        text += entry.format(n=n)
        n += 1
    big.write_text(text)
    huge = tmp_path / "huge.yaml"
    huge.write_text(text * 11)
    for path, code in ((bomb, 2), (big, 0), (huge, 2), (Path("/dev/zero"), 2)):
        p = subprocess.run([sys.executable, "-m", "batchgen", "models", "--models", str(path), "--json"],
                           capture_output=True, text=True, timeout=120, preexec_fn=_limited, cwd=ROOT)
        assert p.returncode == code, (path, p.returncode, p.stderr[-2000:])
        assert "Traceback" not in p.stderr and "MemoryError" not in p.stderr
