"""The CSV reader splits a line with no quote at its commas instead of handing it to the csv
module (``csvreader.SPLIT_SIMPLE_LINES``, issue 31 part 3): every file here is read both ways
and must give the same rows (place, cells) and the same problems (line, message), whatever
mix of quoted cells spanning lines, carriage returns, blank lines, NULs, bad bytes and
overlong cells it holds."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from batchgen.manifest import csvreader
from batchgen.manifest.problems import Problems


def read(path: Path, split: bool) -> dict[str, Any]:
    with pytest.MonkeyPatch.context() as m:
        m.setattr(csvreader, "SPLIT_SIMPLE_LINES", split)
        problems = Problems(str(path))
        rows = [(r.where, r.file, r.values) for r in csvreader.csv_rows(path, problems)]
    return {"rows": rows, "problems": problems.problems, "warnings": problems.warnings}


def assert_same(path: Path) -> dict[str, Any]:
    fast = read(path, True)
    assert fast == read(path, False)
    return fast


PIECES = ["a", "bc", ",", ",", " ", '"', '""', "\r", "\r\n", "\n", "\x00", "\t", "é", "\u3000", "x,y", "|", "{n}"]


@st.composite
def files(draw: st.DrawFn) -> bytes:
    header = draw(st.sampled_from(["name,prompt,duration", "name,prompt", "a;b", "name,name", "", "n,\"p\nq\",d",
                                   "job_key,name,state", "name,params"]))
    body = "".join(draw(st.lists(st.sampled_from(PIECES), max_size=60)))
    data = (header + "\n" + body).encode("utf-8")
    if draw(st.integers(0, 9)) == 0:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + b"\xff" + data[at:]  # a bad byte somewhere
    if draw(st.integers(0, 9)) == 0:
        data = b"\xef\xbb\xbf" + data
    return data


@settings(max_examples=400, deadline=None)
@example(data=b'name,prompt\na,"b\nc"\nd,e\n')
@example(data=b'name,prompt\na,b\r\r\n\r\nc,d\r')
@example(data=b'name,prompt\na,"never closed\nb,c\n')
@example(data=b'name,prompt\na,b"c\nd,e\n')
@example(data=b'name,prompt\na\rb,c\nd,e\n')
@example(data=b'name,prompt\n \n,\n\x00,\xff\nx,y')
@given(data=files())
def test_varied_files_read_the_same_both_ways(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("csv") / "rows.csv"
    path.write_bytes(data)
    assert_same(path)


@pytest.fixture
def small_cells() -> Iterator[int]:
    old = csv.field_size_limit(16)
    try:
        yield 16
    finally:
        csv.field_size_limit(old)


def test_a_cell_longer_than_the_csv_modules_limit_is_its_error(tmp_path: Path, small_cells: int) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("name,prompt\na,short\nb," + "x" * 20 + "\nc,never read\n")
    seen = assert_same(path)
    assert [r[2] for r in seen["rows"]] == [{"name": "a", "prompt": "short"}]
    assert [(p.where, p.message[:13]) for p in seen["problems"]] == [("line 3", "malformed CSV")]


def test_line_numbers_follow_cells_spanning_lines(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text('name,prompt\na,"one\ntwo"\n\nb,plain\r\nc,"x,y"\nd,"never closed\ne,f\n')
    seen = assert_same(path)
    assert [(w, v) for w, _, v in seen["rows"]] == [
        ("row 1 (lines 2–3)", {"name": "a", "prompt": "one\ntwo"}), ("row 2 (line 5)", {"name": "b", "prompt": "plain"}),
        ("row 3 (line 6)", {"name": "c", "prompt": "x,y"})]
    assert [(p.where, p.message) for p in seen["problems"]] == [
        ("line 7", "malformed CSV: a quoted cell opened on line 7 is never closed (a missing \" swallows every row "
                   "below it)")]
