"""Request shapes: what the requests of a manifest share, stored once (issue 21).

A manifest's jobs differ mostly by their prompt; the rest of each request (the model, the
resolution, the defaults every row gets) repeats. A *shape* is a request's canonical JSON
with its prompt's value replaced by a marker, kept once in ``request_shapes``; the job's row
holds the shape's id and, in ``request``, only the text the marker stands for (the prompt as
JSON). The request is the shape's text before the marker, that text, and the text after:
exactly the bytes recorded, never re-encoded, so the JSON callers read (and keys made from
it) is unchanged. A request without a string prompt, a long shape, or one past the ledger's
limit of shapes (requests that differ in more than their prompt: a seed per row) is stored
whole, with no shape. This module is the text format alone (no SQLAlchemy); the shapes' rows
are written by ``recording`` and read with every job (``sql.SHAPE``)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, cast

from ..jobs import JobRow, canonical_json

_SENTINEL = "\x00batchgen:prompt\x00"
MARK = canonical_json(_SENTINEL)
# A shape is shared or it is no use: longer ones are stored whole, as are new ones once the
# ledger holds this many. Counted in UTF-8 bytes, not characters: PostgreSQL's B-tree refuses
# index entries over 2,704 bytes, and 1,000 characters of CJK text are 3,000.
MAX_SHAPE_BYTES = 1000
MAX_SHAPES = 4096

# The shape's text for the row being read (NULL for a request stored whole), as SQL: a column of
# every job select (``sql.SHAPE`` is the same for SQLAlchemy), so that a read returns whole
# requests in one statement.
SHAPE_SQL = "(SELECT body FROM request_shapes WHERE request_shapes.id = jobs.shape_id)"


def split(request: dict[str, Any], request_json: str) -> tuple[str, str] | None:
    """(shape, part) with ``request_json == head + part + tail`` of the shape; None: store whole."""
    prompt = request.get("prompt")
    if not isinstance(prompt, str):
        return None
    shape = canonical_json({**request, "prompt": _SENTINEL})
    if len(shape.encode("utf-8", "surrogatepass")) > MAX_SHAPE_BYTES or shape.count(MARK) != 1:
        return None
    head, tail = shape.split(MARK)
    if len(request_json) < len(head) + len(tail) or not (request_json.startswith(head) and request_json.endswith(tail)):
        return None
    return shape, request_json[len(head) : len(request_json) - len(tail)]


@lru_cache(maxsize=MAX_SHAPES)
def _halves(shape: str) -> tuple[str, str]:
    head, tail = shape.split(MARK)
    return head, tail


def whole(shape: str | None, part: str) -> str:
    """The request's JSON as recorded, from its row's shape text (None: stored whole) and part."""
    if shape is None:
        return part
    head, tail = _halves(shape)
    return head + part + tail


def as_job(row: dict[str, Any], shape: str | None) -> JobRow:
    """``row`` (every column of ``jobs``) with its request made whole from ``shape`` and the
    storage detail dropped: what ``sql.job_row``, the driver-level export and ``SqliteReader``
    all hand out."""
    row["request"] = whole(shape, row["request"])
    del row["shape_id"]
    return cast(JobRow, row)
