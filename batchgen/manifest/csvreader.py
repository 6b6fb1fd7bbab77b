"""Reading a CSV of rows, streamed: one line decoded at a time, one ``Row`` yielded at a time
(a 1,000,000-row CSV is never held). A CSV written by ``batchgen export --raw`` can be fed back:
its ``params`` column (a JSON object of request fields) is expanded and its result columns are
ignored, so the round trip gives the same job keys."""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .document import Row
from .problems import Problems

MAX_CSV_LINE = 1024 * 1024
# Columns `batchgen export` adds that are results, not request fields: a results CSV fed back
# as rows ignores them (recognised by its job_key column).
RESULT_COLUMNS = frozenset({"job_key", "row", "state", "task_id", "result_url", "output_path", "bytes", "sha256",
                            "credits", "attempts", "polls", "error_code", "error_message", "submitted_at",
                            "completed_at", "done_at", "verify", "verify_detail", "duration_s", "width", "height",
                            "fps", "codec", "audio", "poster", "contact_sheet", "delivered_url",
                            "delivered_at", "manifest", "review", "review_note", "reviewer", "pick"})
PARAMS_COLUMN = "params"
# A row on one line holding no quote is read by ``str.split`` rather than the csv module: the
# same cells (tests/test_csvreader_split.py reads varied files both ways), a fraction of the
# work. Tests turn it off to compare.
SPLIT_SIMPLE_LINES = True


class _BadLine(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


def csv_rows(path: Path, problems: Problems) -> Iterator[Row]:
    """The non-blank rows of the CSV at ``path``. A row with a problem is reported and skipped;
    a problem that makes the rest unreadable (a bad byte, a quote never closed) ends the stream."""
    file = str(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        problems.add("file", None, f"cannot read: {e.strerror}", file=file)
        return
    with f:
        lines = _csv_lines(f)
        # The csv module reads only the lines that need it (see ``SPLIT_SIMPLE_LINES``): it is
        # handed one line at a time, and pulls the next ones itself for a cell spanning lines.
        feed = _Feed(lines)
        # strict: a stray quote (`"b"c`) is an error, not silently `bc`, and a quote that
        # never closes is reported where it opened instead of swallowing the rows below it.
        reader = csv.reader(feed, strict=True)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            problems.add("line 1", None, "empty CSV (a header row of field names is required)", file=file)
            return
        except _BadLine as e:
            problems.add(f"line {e.line}", None, str(e), file=file)
            return
        except csv.Error as e:
            problems.add("line 1", None, f"unreadable CSV header: {e}", file=file)
            return
        if len(header) == 1 and (";" in header[0] or "\t" in header[0]):
            sep = "semicolons" if ";" in header[0] else "tabs"
            problems.add("line 1", None, f"the header is separated by {sep}; batchgen reads comma-separated "
                                         "CSV (save it as CSV with commas)", file=file)
            return
        seen: set[str] = set()
        for h in header:
            if not h or h in seen:
                problems.add("line 1", h or None, "header names must be unique and non-empty", file=file)
                return
            seen.add(h)
        ignored = RESULT_COLUMNS & seen if "job_key" in seen else frozenset()
        whole = not ignored  # a row without a blank cell keeps every cell, as the header names them
        n = 0
        prev_line = reader.line_num  # lines read so far (the header's)
        simple = SPLIT_SIMPLE_LINES
        limit = csv.field_size_limit()
        while True:
            try:
                text = next(lines)
            except StopIteration:
                break
            except _BadLine as e:
                problems.add(f"line {e.line}", None, str(e), file=file)
                return
            body = text.rstrip("\r\n")
            # A line with no quote and no other line break is its cells split at the commas,
            # exactly as the csv module reads it (it parses a character at a time: twice the
            # work for a row twice as wide), and so is one whose quotes only enclose whole cells
            # on the line ("a, b" in a prompt: ``_quoted_cells``); an empty one, or one longer
            # than a cell may be (the module's error), is the module's too.
            cells = None
            if simple and body and "\r" not in body and len(body) <= limit:
                if '"' not in body:
                    cells = body.split(",")
                else:
                    # One quoted cell, the common case (a prompt holding a comma), inline: it
                    # opens after a comma and closes before one (``,"`` … ``",``), and no other
                    # quote is on the line; the cells before it, it, the cells after it. Any other
                    # use of quotes (a first or last cell quoted too): ``_quoted_cells``.
                    head, _, rest = body.partition(',"')
                    inner, closed, tail = rest.partition('",')
                    if closed and '"' not in head and '"' not in inner and '"' not in tail:
                        cells = head.split(",")
                        cells.append(inner)
                        cells += tail.split(",")
                    else:
                        cells = _quoted_cells(body)
            if cells is not None:
                span = 1
            else:
                feed.first = text
                before = reader.line_num
                try:
                    cells = next(reader)
                except _BadLine as e:
                    problems.add(f"line {e.line}", None, str(e), file=file)
                    return
                except csv.Error as e:
                    msg = str(e)
                    if "unexpected end of data" in msg:
                        msg = (f"a quoted cell opened on line {prev_line + 1} is never closed (a missing \" "
                               "swallows every row below it)")
                    problems.add(f"line {prev_line + 1}", None, f"malformed CSV: {msg}", file=file)
                    return
                span = reader.line_num - before
            line = prev_line + 1
            prev_line += span
            # No cell blank (the common row): not a blank row either, and kept whole below.
            full = bool(cells) and "" not in cells and not any(map(str.isspace, cells))
            if not full and (not cells or not "".join(cells).strip()):  # every cell blank (one C call)
                continue
            n += 1
            where = f"row {n} (line {line})" if span == 1 else f"row {n} (lines {line}–{line + span - 1})"
            if len(cells) != len(header):
                problems.add(where, None, f"has {len(cells)} cells, the header has {len(header)}", file=file)
                continue
            values: dict[str, Any]
            if whole and full:
                values = dict(zip(header, cells))  # every cell kept: built in C, however wide the row
            else:
                values = {h: c for h, c in zip(header, cells) if c and not c.isspace() and h not in ignored}
            if PARAMS_COLUMN in values and not _expand_params(values, where, file, problems):
                continue
            yield Row(where, file, values)


def _quoted_cells(body: str) -> list[str] | None:
    """The cells of a one-line row whose every quote opens or closes a whole cell (``a,"b, c",d``),
    as the csv module reads them; None for any other use of quotes (a doubled quote, a quote
    inside an unquoted cell, text after a closing quote, a cell going on below): the module
    reads those. Split at the quotes, the pieces alternate between the text outside quoted
    cells (commas and unquoted cells) and each quoted cell's text as it is."""
    parts = body.split('"')
    last = len(parts) - 1
    if last % 2:
        return None  # a quote left open: its cell goes on below
    first = parts[0]
    if first and first[-1] != ",":
        return None  # a quote inside an unquoted cell
    cells = first[:-1].split(",") if first else []
    for i in range(1, last - 1, 2):  # each quoted cell but the last, and the text up to the next
        cells.append(parts[i])
        between = parts[i + 1]
        if between == ",":
            continue  # one quoted cell right after another
        if len(between) < 2 or between[0] != "," or between[-1] != ",":
            return None  # a doubled quote, or a quote inside or right after a cell
        cells.extend(between[1:-1].split(","))
    cells.append(parts[last - 1])  # the last quoted cell (the only one, commonly: a prompt)
    after = parts[last]
    if after:
        if after[0] != ",":
            return None  # text right after a closing quote: the module's error
        cells.extend(after[1:].split(","))
    return cells


def _expand_params(values: dict[str, Any], where: str, file: str, problems: Problems) -> bool:
    """The ``params`` column of an exported results CSV: a JSON object of request fields."""
    try:
        params = json.loads(values.pop(PARAMS_COLUMN))
    except ValueError as e:
        problems.add(where, PARAMS_COLUMN, f"is not JSON ({e})", file=file)
        return False
    if not isinstance(params, dict):
        problems.add(where, PARAMS_COLUMN, "must be a JSON object of request fields", file=file)
        return False
    for k, v in params.items():
        if k in values:
            problems.add(where, k, f"is set both by its own column and by `{PARAMS_COLUMN}`", file=file)
            return False
        if v is not None:
            values[k] = v
    return True


class _Feed:
    """The lines the csv module reads: ``first`` (the line it is given), then the file's next
    ones, for as long as a quoted cell goes on."""

    __slots__ = ("first", "lines")

    def __init__(self, lines: Iterator[str]) -> None:
        self.lines = lines
        self.first: str | None = None

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> str:
        first = self.first
        if first is None:
            return next(self.lines)
        self.first = None
        return first


def _csv_lines(f: IO[bytes]) -> Iterator[str]:
    """The file's lines, decoded one by one: a bad byte is reported on its own line (a text
    stream decodes ahead in chunks and would blame an earlier one), and an overlong line is
    refused before it is held."""
    n = 0
    while True:
        raw = f.readline(MAX_CSV_LINE + 1)
        if not raw:
            return
        n += 1
        if len(raw) > MAX_CSV_LINE:
            raise _BadLine(n, f"line longer than {MAX_CSV_LINE} bytes")
        if n == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8):]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _BadLine(n, f"is not UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line; save the "
                              "file as UTF-8)") from None
