"""Manifest mistakes a newcomer makes (issue 23), through `batchgen plan`: a typo under
`defaults:` is reported once, at its own line, beside the rows' own problems; a list written
as one comma-joined string gets a hint instead of being sent as one URL with a comma."""

from __future__ import annotations

import json

from conftest import run_cli


def test_a_defaults_typo_is_reported_once_at_its_line_with_the_row_errors(tmp_path):
    m = tmp_path / "typo.yaml"
    m.write_text("defaults:\n  model: grok-imagine-text-to-video\n  aspect_ration: '16:9'\n  prompt: x\njobs:\n"
                 + "".join(f"  - {{name: j{i}, duration: {i + 1}}}\n" for i in range(5)) + "  - {name: bad, duration: 99}\n")
    r = run_cli(["plan", str(m), "--json"])
    assert r.exit_code == 2, r.output
    problems = json.loads(r.stdout)["problems"]
    typo = [p for p in problems if "aspect_ration" in p]
    assert len(typo) == 1 and "line 3" in typo[0] and "did you mean 'aspect_ratio'" in typo[0], problems
    assert any("jobs[5] (line 11)" in p and "duration" in p and "99" in p for p in problems), problems
    assert len(problems) == 2


def test_a_comma_joined_list_of_images_gets_a_hint(tmp_path):
    m = tmp_path / "comma.yaml"
    m.write_text("defaults: {model: grok-imagine-reference-to-video, prompt: x}\njobs:\n"
                 "  - {name: u, reference_image_urls: 'https://x.test/a.png,https://x.test/b.png'}\n"
                 "  - {name: l, reference_image_urls: 'a.png,b.png'}\n")
    r = run_cli(["plan", str(m)])
    assert r.exit_code == 2
    hints = [line for line in r.stderr.splitlines() if "joined by commas" in line and "write a list" in line]
    assert len(hints) == 2 and "line 3" in hints[0] and "line 4" in hints[1], r.stderr
