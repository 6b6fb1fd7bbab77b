"""The CSV reader splits a line with no quote at its commas instead of handing it to the csv
module (``csvreader.SPLIT_SIMPLE_LINES``, issue 31 part 3): every file here is read both ways
and must give the same rows (place, cells) and the same problems (line, message), whatever
mix of quoted cells spanning lines, carriage returns, blank lines, NULs, bad bytes and
overlong cells it holds."""

from __future__ import annotations

import csv
import io
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
    assert_same_bytes(tmp_path_factory, data)


def assert_same_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
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


CELL_TEXT = st.text(alphabet=st.sampled_from(['a', 'b', ' ', ',', '"', 'é', '\x00', '\t', '|', '{', '\n']), max_size=6)


@st.composite
def quoted_files(draw: st.DrawFn) -> bytes:
    """Rows as a spreadsheet writes them (quotes around the cells that need them, or around all),
    now and then with a quote, comma or letter slipped in: the lines whose quotes only enclose
    whole cells are split by ``csvreader._quoted_cells``, the others read by the csv module."""
    width = draw(st.integers(1, 4))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n",
                        quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC])))
    writer.writerow([f"c{i}" for i in range(width)])
    for row in draw(st.lists(st.lists(CELL_TEXT, min_size=width, max_size=width), max_size=8)):
        writer.writerow(row)
    text = out.getvalue()
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(['"', ",", "x", " "])) + text[at:]
    return text.encode("utf-8")


@settings(max_examples=300, deadline=None)
@example(data=b'name,prompt,d\na,"b, c",1\n"x",y,"z"\n"p""q",r,s\n"u"v,w,x\n')
@example(data=b'a,b,c\n"x, y",1,2\n1,2,"x, y"\n"x, y"\n1,"x, y"z,2\n1,"x, y",2"\n1,"x, y\n,2\n1,z"x, y",2\n"",,\n')
@example(data=b'a,b\n"x",y\nx,"y"\n"x"\n,""\n"",\n1,"x, y",\n')
@given(data=quoted_files())
def test_quoted_cells_read_the_same_both_ways(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    assert_same_bytes(tmp_path_factory, data)


@st.composite
def one_quoted_cell_lines(draw: st.DrawFn) -> bytes:
    """Rows with one quoted cell among plain ones, as a spreadsheet writes a prompt holding a
    comma (the case ``csv_rows`` splits inline), the quoted cell anywhere (first and last
    included: those are ``_quoted_cells``'), with quotes, commas and spaces slipped in next to
    its quotes now and then: the same rows and problems as the csv module's."""
    width = draw(st.integers(1, 5))
    lines = [",".join(f"c{i}" for i in range(width))]
    for _ in range(draw(st.integers(1, 6))):
        cells = draw(st.lists(st.text(alphabet="ab |:/.", max_size=4), min_size=width, max_size=width))
        at = draw(st.integers(0, width - 1))
        inner = "".join(draw(st.lists(st.sampled_from(["a", " ", ",", '""', '"', "\t"]), max_size=8)))
        before = draw(st.sampled_from(["", "", "", '"', ",", "x", " "]))
        after = draw(st.sampled_from(["", "", "", '"', ",", "x", " "]))
        cells[at] = f'{before}"{inner}"{after}'
        lines.append(",".join(cells))
    return ("\n".join(lines) + draw(st.sampled_from(["", "\n"]))).encode("utf-8")


@settings(max_examples=300, deadline=None)
@example(data=b'a,b,c\nx,"y, z",w\nx,"",w\nx,"y",\n,"y",\n"x,y,"z",w\nx,y"z,"w"\n')
@given(data=one_quoted_cell_lines())
def test_one_quoted_cell_reads_the_same_both_ways(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    assert_same_bytes(tmp_path_factory, data)


def test_a_prompt_holding_a_comma_is_split_without_the_csv_module(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "rows.csv"
    path.write_text('name,prompt,refs\na,"sea, at dusk",https://x/1.png\n"b","c ""quoted""",d\n')
    monkeypatch.setattr(csvreader.csv, "reader", _reader_counting(calls := []))
    rows = [r.values for r in csvreader.csv_rows(path, Problems(str(path)))]
    assert rows == [{"name": "a", "prompt": "sea, at dusk", "refs": "https://x/1.png"},
                    {"name": "b", "prompt": 'c "quoted"', "refs": "d"}]
    # The module read the header and the row with a doubled quote; the first row was split.
    assert calls == ["name,prompt,refs\n", '"b","c ""quoted""",d\n']


def _reader_counting(calls: list[str]) -> Any:
    real = csv.reader

    def reader(lines: Any, **kw: Any) -> Any:
        def seen() -> Iterator[str]:
            for line in lines:
                calls.append(line)
                yield line
        return real(seen(), **kw)
    return reader
