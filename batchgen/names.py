"""Output file names: rendered from a template, safe on every file system, inside ``--out``.

Values substituted into a name keep Unicode letters, marks and digits (NFC-normalised, so "é"
typed two ways is one name) and ``. _ -``; anything else — separators, spaces, punctuation,
control characters — becomes ``_``, and each value is cut to ``VALUE_CHARS`` characters. The
template itself may use ``/`` for sub-folders, but every segment must be plain: not empty,
``.``/``..``, hidden, a reserved device name (``CON``, ``NUL``…) or longer than
``SEGMENT_BYTES`` bytes of UTF-8 (the temp file beside it needs room below the usual 255).
The name must end in ``.mp4``. Imports nothing else of batchgen.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
from typing import Any

VALUE_CHARS = 80
SEGMENT_BYTES = 200
_ASCII_SAFE = re.compile(r"[A-Za-z0-9._-]*\Z")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,195}\.mp4")
WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"COM{i}" for i in range(1, 10)] + [f"LPT{i}" for i in range(1, 10)]
)
_TEMPLATE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class TemplateError(ValueError):
    """A template that cannot be rendered (bad placeholder, unknown or empty field)."""


@functools.lru_cache(maxsize=4096)
def parse_template(template: str) -> tuple[tuple[bool, str], ...]:
    """Template → ((is_placeholder, text), …), parsed once per distinct template: the same few
    templates are rendered for every row of a 100k-row manifest."""
    parts: list[tuple[bool, str]] = []
    pos = 0
    for m in _TEMPLATE.finditer(template):
        if m.start() > pos:
            parts.append((False, template[pos : m.start()]))
        if m.group(0) in ("{{", "}}"):
            parts.append((False, m.group(0)[0]))
        else:
            name = m.group(1).strip()
            if not _VAR.match(name):
                raise TemplateError(f"bad template placeholder {{{m.group(1)}}}: use {{field_name}}")
            parts.append((True, name))
        pos = m.end()
    if pos < len(template):
        parts.append((False, template[pos:]))
    return tuple(parts)


@functools.lru_cache(maxsize=4096)
def template_vars(template: str) -> frozenset[str]:
    """The field names ``{name}`` placeholders of ``template`` refer to (empty for bad templates:
    rendering reports those)."""
    try:
        return frozenset(text for is_var, text in parse_template(template) if is_var)
    except TemplateError:
        return frozenset()


def render(template: str, lookup: Callable[[str], Any]) -> str:
    """Replace ``{name}`` by ``lookup(name)``; ``{{``/``}}`` are literal braces. Only bare
    identifiers are allowed, so a manifest cannot reach attributes the way str.format could."""
    return "".join(str(lookup(text)) if is_var else text for is_var, text in parse_template(template))


def _safe_char(c: str) -> str:
    return c if c in "._-" or unicodedata.category(c)[0] in "LMN" else "_"


def safe_value(value: Any) -> tuple[str, bool]:
    """A substituted value as it may appear in a file name, and whether it had to change (other
    than Unicode normalisation)."""
    text = unicodedata.normalize("NFC", str(value))
    if _ASCII_SAFE.match(text):
        out = text
    else:
        out = re.sub("_+", "_", "".join(_safe_char(c) for c in text))
    out = out.strip("._-")
    cut = out[:VALUE_CHARS]
    result = cut.rstrip("._-") or "_"
    if result.split(".")[0].upper() in WINDOWS_RESERVED:
        result += "_"
    return result, result != text


def safe_output_name(template: str, ctx: dict[str, Any]) -> str:
    """``render_output_name`` over a plain mapping of field values."""
    return render_output_name(template, ctx.get)[0]


def render_output_name(template: str, get: Callable[[str], Any]) -> tuple[str, bool]:
    """Render an output file name, ``get(field)`` giving each placeholder's value (None: the job
    has no such field). Returns (name, whether a substituted value was reduced or cut); raises
    ``TemplateError`` or ``ValueError`` (naming the problem) for a name that is not safe."""
    changed = False

    def lookup(name: str) -> str:
        nonlocal changed
        value = get(name)
        if value is None:
            raise TemplateError(f"output template refers to {{{name}}}, which this job does not have")
        safe, reduced = safe_value(value)
        changed = changed or reduced
        return safe

    name = unicodedata.normalize("NFC", render(template, lookup))
    if _PLAIN_NAME.fullmatch(name) and name.split(".")[0].upper() not in WINDOWS_RESERVED:
        return name, changed  # one plain segment ending in .mp4: the checks below would all pass
    if "\x00" in name or name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        raise ValueError(f"output name {name!r} must be a relative path")
    for seg in name.split("/"):
        if seg in ("", ".", "..") or seg.startswith(".") or any(_safe_char(c) != c for c in seg):
            raise ValueError(f"output name {name!r}: segment {seg!r} may only use letters, digits, '.', '_', '-' "
                             "and may not be '..' or start with '.'")
        if seg.split(".")[0].upper() in WINDOWS_RESERVED:
            raise ValueError(f"output name {name!r}: {seg!r} is a reserved device name")
        if len(seg.encode()) > SEGMENT_BYTES:
            raise ValueError(f"output name segment is {len(seg.encode())} bytes of UTF-8; the limit is "
                             f"{SEGMENT_BYTES}")
    if not name.lower().endswith(".mp4"):
        raise ValueError(f"output name {name!r} must end in .mp4")
    return name, changed
