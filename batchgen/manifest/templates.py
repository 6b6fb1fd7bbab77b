"""``{field}`` templates in a row's fields: which fields a job's templates use, and a field's
value rendered from the others (a problem, placed on its row, when it cannot be)."""

from __future__ import annotations

from typing import Any

from .. import names
from ..names import TemplateError
from .document import Row
from .problems import Problems

FAILED: Any = object()  # a field whose rendering failed (its problem is already recorded)


class Templates:
    """Renders one job's fields (``raw``: defaults, per-model fields, the row and the matrix
    combination, merged) for the rooms that need them, reporting failures to ``problems``."""

    def __init__(self, problems: Problems, output_template: str | None) -> None:
        self.problems = problems
        self.output_template = output_template  # the manifest's `output:` (a row may set its own)

    def output_of(self, raw: dict[str, Any], row: Row) -> Any:
        """The output template this job uses: the row's own, else the manifest's (or None)."""
        return raw.get("output") if "output" in row.values else self.output_template

    def used_vars(self, raw: dict[str, Any], row: Row) -> set[str]:
        """Fields some template of this job refers to: its request fields' templates, ``name``,
        ``take`` and the output template (the row's or the manifest's)."""
        used: set[str] = set()
        for v in raw.values():
            for s in (v if isinstance(v, list) else [v]):
                if isinstance(s, str) and "{" in s:
                    used |= names.template_vars(s)
        template = self.output_of(raw, row)
        if isinstance(template, str):
            used |= names.template_vars(template)
        return used

    def rendered(self, raw: dict[str, Any], k: str, row: Row) -> Any:
        """``raw[k]`` with its templates rendered (None when unset, ``FAILED`` after a problem)."""
        v = raw.get(k)
        if not has_template(v):
            return v
        try:
            return _render_value(v, raw, {k})
        except TemplateError as e:
            self.problems.add(row.where, k, str(e), file=row.file)
            return FAILED


def has_template(v: Any) -> bool:
    if isinstance(v, str):
        return "{" in v
    return isinstance(v, list) and any(isinstance(x, str) and "{" in x for x in v)


def _render_value(v: Any, raw: dict[str, Any], stack: set[str], depth: int = 0) -> Any:
    if isinstance(v, list):
        return [_render_value(x, raw, stack, depth) for x in v]
    if not isinstance(v, str) or "{" not in v:
        return v
    if depth > 8:
        raise TemplateError("templates nest too deeply")

    def lookup(name: str) -> Any:
        if name not in raw:
            raise TemplateError(f"template refers to {{{name}}}, which is not a field of this row")
        if name in stack:
            raise TemplateError(f"template refers to itself through {{{name}}}")
        val = _render_value(raw[name], raw, stack | {name}, depth + 1)
        if val is None:
            raise TemplateError(f"template refers to {{{name}}}, which is empty")
        if isinstance(val, (list, dict)):
            raise TemplateError(f"template refers to list field {{{name}}}")
        return val

    return names.render(v, lookup)
