"""The simulator's page lists every knob of ``SimConfig`` in its table, and no knob that is not
one: a knob added without a line there is a knob nobody finds."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from batchgen.simulator import SimConfig

PAGE = Path(__file__).resolve().parent.parent / "docs" / "design" / "simulator.md"


def test_the_knob_table_names_every_knob_and_only_knobs() -> None:
    text = PAGE.read_text(encoding="utf-8")
    table = text[text.index("## Knobs"):text.index("## What it tells the tests")]
    named = {k for row in re.findall(r"^\| ([^|]+) \|", table, flags=re.M) for k in re.findall(r"`([a-z0-9_]+)`", row)}
    assert named == {f.name for f in fields(SimConfig)}
