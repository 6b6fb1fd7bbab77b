"""Property test of the manifest loader (issue 11): whatever YAML or CSV text a user hands
``batchgen plan`` — control characters, odd scalars, odd keys, unbalanced quotes, other
encodings, random bytes — it ends in exit 0 or exit 2 with a message, never a traceback, and
within 5 seconds."""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchgen.cli import cli

MODELS = ["grok-imagine-text-to-video", "grok-imagine-reference-to-video", "grok-imagine-image-to-video",
          "grok-imagine-edit-video", "grok-imagine-video-extension", "grok-imagine-refrence-to-video", "veo-3.1"]
FIELDS = ["model", "prompt", "duration", "aspect_ratio", "resolution", "reference_image_urls", "image_url",
          "video_url", "name", "take", "output", "notes", "aspect_ration", "<<", "on", "~", "1", "2024-05-01",
          "params", "job_key", ""]
TOKENS = ["010", "0o17", "0x1f", "no", "yes", "on", "off", "~", "null", "true", "16:9", "9:16", "1:1", "auto",
          "480p", "720p", ".nan", "-.inf", "1e3", "2024-05-01", "12:30:00", "!!binary aGk=", "!!timestamp 2024-01-01",
          "!!python/object:os.system x", "*alias", "&anchor x", "'quoted'", '"dq \\ud83c"', '"\\x00"', "@Image1 waves",
          "@Image9 x", "{name}", "{missing}", "{{literal}}", "{a.__class__}", "https://a.example/x.png",
          "./local.png", "../../etc/passwd", "海边日出", "Café", "=1+1", "-5", "0", "99999999999999999999",
          "[a, b", "{a: 1", "|", ">", "- x", "'", '"', "\t", "#comment", "---", "...", "%YAML 1.2"]
weird_chars = st.sampled_from(["\x00", "\x01", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\u2028", "\ufeff",
                               "\r", "\t", '"', "'", ",", ";", ":", "{", "}", "[", "]", "&", "*", "!", "|", "\\"])
text = st.one_of(st.sampled_from(TOKENS), st.text(max_size=30),
                 st.lists(st.one_of(weird_chars, st.characters()), max_size=12).map("".join))


@st.composite
def yaml_docs(draw: st.DrawFn) -> str:
    lines = []
    if draw(st.booleans()):
        lines.append("defaults:")
        for _ in range(draw(st.integers(0, 4))):
            lines.append(f"  {draw(st.sampled_from(FIELDS))}: {draw(text)}")
    if draw(st.booleans()):
        lines.append(f"matrix:\n  {draw(st.sampled_from(FIELDS))}: [{draw(text)}, {draw(text)}]")
    if draw(st.booleans()):
        lines.append(f"output: {draw(text)}")
    if draw(st.booleans()):
        lines.append(f"unvalidated_models: [{draw(st.sampled_from(MODELS))}]")
    lines.append("jobs:")
    for _ in range(draw(st.integers(0, 4))):
        first = True
        for _ in range(draw(st.integers(1, 5))):
            lead = "  - " if first else "    "
            first = False
            key = draw(st.sampled_from(FIELDS))
            value = draw(st.sampled_from(MODELS)) if key == "model" and draw(st.booleans()) else draw(text)
            lines.append(f"{lead}{key}: {value}")
    if draw(st.integers(0, 9)) == 0:
        lines.insert(draw(st.integers(0, len(lines))), draw(text))  # a stray line anywhere
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\n---\n", "\r\n"]))


@st.composite
def csv_docs(draw: st.DrawFn) -> str:
    cols = draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=6))
    sep = draw(st.sampled_from([",", ",", ",", ";", "\t"]))
    out = [sep.join(cols)]
    for _ in range(draw(st.integers(0, 5))):
        cells = []
        for c in cols:
            v = draw(st.sampled_from(MODELS)) if c == "model" and draw(st.booleans()) else draw(text)
            cells.append(f'"{v}"' if draw(st.integers(0, 4)) == 0 else v)
        out.append(sep.join(cells[: draw(st.integers(0, len(cells) + 1))] if draw(st.integers(0, 6)) == 0 else cells))
    return "\n".join(out) + "\n"


def _plan(name: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        p.write_bytes(data)
        (Path(d) / "local.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        # CPU seconds of this process, not wall time: the bound is on the work an input causes,
        # which parallel test workers on a busy machine do not change (wall time they do).
        t = time.process_time()
        with contextlib.chdir(d):  # no ledger named, none at ./batchgen.db: plan compares with none
            r = CliRunner().invoke(cli, ["plan", str(p), "--json"], env={"BATCHGEN_LEDGER": None})
        elapsed = time.process_time() - t
    assert r.exit_code in (0, 2), (r.exit_code, r.output, r.exception)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    if r.exit_code == 2:
        assert r.stderr.startswith("error:"), r.stderr
    assert elapsed < 5.0


ENCODINGS = st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1"])
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.slow
@SETTINGS
@given(doc=yaml_docs(), enc=ENCODINGS)
def test_any_yaml_ends_in_exit_0_or_2(doc: str, enc: str) -> None:
    _plan("m.yaml", doc.encode(enc, errors="surrogatepass" if enc.startswith("utf-8") else "replace"))


@pytest.mark.slow
@SETTINGS
@given(doc=csv_docs(), enc=ENCODINGS)
def test_any_csv_ends_in_exit_0_or_2(doc: str, enc: str) -> None:
    _plan("m.csv", doc.encode(enc, errors="surrogatepass" if enc.startswith("utf-8") else "replace"))


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=400), suffix=st.sampled_from(["m.yaml", "m.csv"]))
def test_random_bytes_end_in_exit_0_or_2(data: bytes, suffix: str) -> None:
    _plan(suffix, data)
