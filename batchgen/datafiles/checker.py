"""What every data-file check shares: ``Checker`` collects the problems of one document, each
placed by the line and column ``yamlsafe`` kept, capped at ``MAX_PROBLEMS``; and the small
predicates and phrasings the model and price checks both use (a printable name, a value as a
message shows it, what kind of thing was found). Reads no file, knows no entry.
"""

from __future__ import annotations

import difflib
import math
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from .. import yamlsafe
from ..errors import Problem

MAX_PROBLEMS = 200


def printable_name(v: Any) -> str | None:
    """Why ``v`` cannot be a model or field name, or None. Names are printed (plan, models,
    errors): a control character or an escape sequence in one would rewrite the terminal."""
    if not isinstance(v, str) or not v:
        return "must be non-empty text"
    if len(v) > 200:
        return f"is {len(v)} characters long (at most 200)"
    bad = next((c for c in v if unicodedata.category(c)[0] in "CZ"), None)  # control, format, spaces
    if bad is not None:
        return f"contains {char_name(bad)}: names are printed, so they hold no spaces or control characters"
    return None


def char_name(c: str) -> str:
    name = unicodedata.name(c, "")
    return f"U+{ord(c):04X}" + (f" ({name})" if name else "")


def show(v: Any) -> str:
    """A value as a message may print it (repr escapes control characters; long ones are cut)."""
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def article(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def kind_of(v: Any) -> str:
    if v is None:
        return "nothing"
    if isinstance(v, bool):
        return "true/false"
    if isinstance(v, int | float):
        return f"the number {v}"
    if isinstance(v, str):
        return "text"  # not echoed: a file given by mistake (a .env) must not have its secrets printed
    return "a mapping" if isinstance(v, Mapping) else "a list" if isinstance(v, list) else type(v).__name__



class Checker:
    """Collects every problem of one document, each placed by the line and column yamlsafe kept
    (a document parsed without them — the shipped files — says "file")."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self.truncated = 0

    def at(self, node: Any, key: Any = None) -> str:
        line = col = None
        if isinstance(node, yamlsafe.Mapping) and isinstance(key, str) and key in node.key_lines:
            line, col = node.key_lines[key], node.key_columns.get(key)
        elif isinstance(node, yamlsafe.Sequence) and isinstance(key, int) and key < len(node.item_lines):
            line, col = node.item_lines[key], node.item_columns[key]
        elif getattr(node, "line", 0):
            line = node.line
        if line is None:
            return "file"
        return f"line {line}" + (f", column {col}" if col else "")

    def problem(self, node: Any, key: Any, context: str, msg: str) -> None:
        if len(self.problems) >= MAX_PROBLEMS:
            self.truncated += 1
            return
        self.problems.append(Problem(self.file, self.at(node, key), None, f"{context}: {msg}" if context else msg))

    def sorted(self) -> list[Problem]:
        """The problems in the file's order (then the count of those left out)."""
        def key(p: Problem) -> tuple[int, int]:
            nums = [int(n) for n in re.findall(r"\d+", p.where)] + [0, 0]
            return nums[0], nums[1]
        out = sorted(self.problems, key=key)
        if self.truncated:
            out.append(Problem(self.file, "file", None, f"… and {self.truncated} more problem(s)"))
        return out

    def unknown_keys(self, node: Mapping[str, Any], allowed: tuple[str, ...], context: str, what: str) -> None:
        for k in node:
            if k not in allowed:
                hint = difflib.get_close_matches(str(k), allowed, n=1, cutoff=0.6)
                self.problem(node, k, context, f"unknown key {show(k)} in {what}"
                             + (f"; did you mean '{hint[0]}'?" if hint else f" (allowed: {', '.join(allowed)})"))

