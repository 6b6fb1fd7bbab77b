"""What a model entry is, as data: ``FieldSpec`` (one request field: its kind, default, choices
or range), ``Rule`` (a constraint across fields) and ``ModelSpec`` (a model's fields, rules and
what its output promises), and the check of one value against one field (``coerce``,
``check_value``).

The bottom of the catalog's stack: ``datafiles`` builds these from files, ``specs`` (``Catalog``)
validates whole requests with them. Imports nothing of batchgen.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

UPLOAD_PREFIX = "upload:sha256:"  # a local file, uploaded just before the create (see manifest/localfiles.py)


@dataclass(frozen=True)
class FieldSpec:
    kind: str  # "str", "int", "bool", "url", "urls", "list", "object"
    required: bool = False
    default: Any = None
    choices: tuple[Any, ...] | None = None
    min: int | None = None
    max: int | None = None
    max_len: int | None = None
    auto: int | None = None  # an int meaning "the model decides" (budgeted at max)


@dataclass(frozen=True)
class Rule:
    """A constraint across fields (see models.yaml). ``warn``: a warning, not a refusal."""

    when: tuple[tuple[str, Any], ...] = ()
    when_set: str | None = None
    count: tuple[tuple[str, int, int], ...] = ()
    allowed: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    required: tuple[str, ...] = ()
    one_of: tuple[str, ...] = ()
    at_most_one: tuple[str, ...] = ()
    total: tuple[str, ...] = ()
    max: int | None = None
    requires_any: tuple[str, ...] = ()
    if_set: str | None = None
    warn: bool = False

    @property
    def reads(self) -> frozenset[str]:
        """Every field this rule looks at: a field that failed its own check is not read again
        (one problem, one line; a list over its maximum is not then "absent")."""
        return frozenset({k for k, _ in self.when} | {k for k, _, _ in self.count} | {k for k, _ in self.allowed}
                         | set(self.required) | set(self.one_of) | set(self.at_most_one) | set(self.total)
                         | set(self.requires_any) | {f for f in (self.when_set, self.if_set) if f})


@dataclass(frozen=True)
class ModelSpec:
    name: str
    fields: dict[str, FieldSpec] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    refs: tuple[tuple[str, str], ...] = ()  # ("@Image", "image_urls"): @ImageN names an item of it
    # How long the output is: "duration" (the request's field), a fixed number of seconds, or
    # "input" (edit/extend: follows the input video, so neither checked nor priced from it).
    output_seconds: str | float = "duration"
    duration_tolerance: float = 0.0  # seconds of slack beyond one frame (verification)
    audio: bool | str | None = None  # promised audio: True/False, None (not documented), or a bool field
    aspect_field: str = "aspect_ratio"
    open: bool = False  # unknown fields pass through with a warning (pages we could not fully read)
    doc: str | None = None
    sources: tuple[str, ...] = ()  # the provider's pages the entry was read from
    read_on: str | None = None  # when they were read (YYYY-MM-DD)
    # Seconds a clip of this model typically takes to render (create → result ready): what
    # `plan`'s forecast uses, said as a guess, for a model the ledger has never seen rendered.
    typical_render_s: float | None = None

    @property
    def duration_is_output(self) -> bool:
        return self.output_seconds == "duration"

    def promises_audio(self, request: Mapping[str, Any]) -> bool | None:
        if isinstance(self.audio, str):
            v = request.get(self.audio, self.fields[self.audio].default if self.audio in self.fields else None)
            return v if isinstance(v, bool) else None
        return self.audio

    def seconds(self, request: Mapping[str, Any]) -> float | None:
        """Seconds of video the request asks for (an "auto" duration counts as its maximum), or
        None when the output follows an input."""
        if isinstance(self.output_seconds, int | float):
            return float(self.output_seconds)
        if self.output_seconds != "duration":
            return None
        d = request.get("duration")
        fs = self.fields.get("duration")
        if fs is not None and fs.auto is not None and d == fs.auto:
            return float(fs.max if fs.max is not None else max(fs.choices or (0,)))
        return float(d) if isinstance(d, int | float) and not isinstance(d, bool) else None

def coerce(spec: FieldSpec | None, value: Any) -> Any:
    """Turn CSV strings into the field's type; leave anything unconvertible for check_value()."""
    if value is None or spec is None:
        return value
    if spec.kind == "int" and isinstance(value, str):
        s = value.strip()
        if re.fullmatch(r"[+-]?\d+", s):
            return int(s)
        if re.fullmatch(r"[+-]?\d+\.0*", s):
            return int(float(s))
        return value
    if spec.kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if spec.kind == "bool" and isinstance(value, str):
        s = value.strip().lower()
        return True if s in ("true", "yes", "1") else False if s in ("false", "no", "0") else value
    if spec.kind == "urls" and isinstance(value, str):
        return [p.strip() for p in value.split("|") if p.strip()]
    if spec.kind == "url" and isinstance(value, str):
        return value.strip()
    return value


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")


def _comma_joined(v: Any) -> bool:
    """One item that is several URLs or image names joined by commas ("a.png,b.png"): a list
    written as a string, which would be sent as one URL containing a comma."""
    if not isinstance(v, str) or "," not in v:
        return False
    parts = [p.strip() for p in v.split(",")]
    return len(parts) > 1 and all(p.lower().startswith(("http://", "https://")) or p.lower().endswith(_IMAGE_SUFFIXES)
                                  for p in parts)


def comma_hint(v: Any) -> str | None:
    """The hint for a list written as one comma-joined string, or None."""
    items = v if isinstance(v, list) else [v]
    joined = next((u for u in items if _comma_joined(u)), None)
    if joined is None:
        return None
    return (f"{joined!r} is one item holding several names joined by commas: write a list "
            "([a.png, b.png] in YAML; a.png|b.png in a CSV cell)")


_UPLOAD_DIGEST = re.compile(r"[0-9a-f]{64}")
_HTTP_URL = re.compile(r"https?://[^\s/]+")
# A CSV cell of a urls field that is plainly good: web URLs joined by "|", none empty and none
# holding whitespace or a comma (each item matches _HTTP_URL as it is, and comma_hint has
# nothing to say about it).
_WEB_ITEM = r"https?://[^\s/|,][^\s|,]*"
_WEB_URLS = re.compile(rf"{_WEB_ITEM}(?:\|{_WEB_ITEM})*")
MAX_GOOD_URLS = 1 << 16  # see quick_value


def _url_ok(v: Any) -> bool:
    if isinstance(v, str) and v.startswith(UPLOAD_PREFIX):
        return _UPLOAD_DIGEST.fullmatch(v, len(UPLOAD_PREFIX)) is not None
    return isinstance(v, str) and _HTTP_URL.match(v) is not None


def quick_value(fs: FieldSpec, cell: str, good: set[str] | None = None) -> Any:
    """``check_value(fs, coerce(fs, cell))`` for the commonest cells of a large CSV, when the
    value is plainly good: free text (a prompt) within its length, and a urls cell of web URLs
    ("a|b", ``_WEB_URLS``) as many as ``fs`` allows. None for any other cell: then ``coerce``
    and ``check_value`` say what it is. A shortcut of the two, never a different verdict.
    ``good``: URLs already found plainly good (a cell of those needs no pattern), to which the
    items of a plainly good cell are added (up to ``MAX_GOOD_URLS``)."""
    if fs.kind == "str":
        if fs.choices is None and cell and (fs.max_len is None or len(cell) <= fs.max_len) \
                and not (fs.required and cell.isspace()):
            return cell  # coerce leaves text as it is
        return None
    if fs.kind == "urls":
        items = cell.split("|")
        if good is None or not good.issuperset(items):
            if _WEB_URLS.fullmatch(cell) is None:
                return None
            if good is not None and len(good) < MAX_GOOD_URLS:
                good.update(items)
        n = len(items)
        if not (fs.min is not None and n < fs.min or fs.max is not None and n > fs.max):
            return items
    return None


def check_value(fs: FieldSpec, v: Any) -> str | None:
    if fs.kind == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            return f"must be an integer, got {v!r}"
        if fs.auto is not None and v == fs.auto:
            return None
        auto = f" (or {fs.auto}: the model decides)" if fs.auto is not None else ""
        if fs.choices and v not in fs.choices:
            return f"must be one of {', '.join(str(c) for c in fs.choices)}{auto}; got {v}"
        if fs.min is not None and v < fs.min or fs.max is not None and v > fs.max:
            return f"must be between {fs.min} and {fs.max}{auto}, got {v}"
    elif fs.kind == "str":
        if not isinstance(v, str):
            return f"must be a string, got {type(v).__name__}"
        if fs.choices and v not in fs.choices:
            return f"must be one of {', '.join(fs.choices)}; got {v!r}"
        if fs.max_len and len(v) > fs.max_len:
            return f"is {len(v)} characters long; the maximum is {fs.max_len}"
        if fs.required and not v.strip():
            return "must not be empty"
    elif fs.kind == "bool":
        if not isinstance(v, bool):
            return f"must be true or false, got {v!r}"
    elif fs.kind == "url":
        if not _url_ok(v):
            return f"must be an http(s) URL, got {v!r}"
    elif fs.kind == "urls":
        if not isinstance(v, list):
            return "must be a list of URLs"
        if hint := comma_hint(v):
            return hint
        if fs.min is not None and len(v) < fs.min or fs.max is not None and len(v) > fs.max:
            return f"must have {fs.min or 0} to {fs.max} items, got {len(v)}"
        bad = [u for u in v if not _url_ok(u)]
        if bad:
            return f"must contain http(s) URLs, got {bad[0]!r}"
    elif fs.kind == "list":
        if not isinstance(v, list):
            return f"must be a list, got {type(v).__name__}"
        if fs.max is not None and len(v) > fs.max:
            return f"must have at most {fs.max} items, got {len(v)}"
    return None


__all__ = ["UPLOAD_PREFIX", "FieldSpec", "ModelSpec", "Rule", "check_value", "coerce", "comma_hint", "quick_value"]
