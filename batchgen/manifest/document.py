"""The seam between the readers and expansion: what a manifest says (``Document``, filled by
``readers.read_document``) and one row of it (``Row``, yielded by the readers). Expansion only
reads these; nothing here parses or validates."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import specs


@dataclass
class Row:
    """One row of a manifest, as read: where it is (for problems) and the fields it sets."""

    where: str  # "jobs[3] (line 12)", "row 4 (line 5)"
    file: str  # the file it is in: the manifest or its rows CSV
    values: dict[str, Any]  # only the fields this row sets (never None)


@dataclass
class Document:
    """A manifest's settings and where its rows are, as the readers found them. Problems found
    while reading are in the ``Problems`` the reader was given, not here."""

    path: Path
    # The models this manifest is validated against: the shipped catalog, the user's
    # --models file, and the manifest's own `models:` (a file or inline entries).
    catalog: specs.Catalog
    defaults: dict[str, Any] = field(default_factory=dict)
    defaults_lines: dict[str, int] = field(default_factory=dict)  # field → its line under `defaults:`
    matrix: dict[str, list[Any]] = field(default_factory=dict)
    matrix_line: int = 0
    output_template: str | None = None
    unvalidated_models: frozenset[str] = frozenset()
    deliver: str | None = None  # `deliver: s3://bucket/prefix/` (run --deliver overrides it)
    deliver_only: str | None = None  # `deliver: {to: …, only: approved}` (run --deliver-only overrides it)
    limits: dict[str, int] = field(default_factory=dict)  # `limits:` model → tasks in flight (run --limit overrides)
    finish_by: str | None = None  # `finish_by: "07:00"`: the night's deadline (run --finish-by overrides it)
    per_model: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_model_lines: dict[str, dict[str, int]] = field(default_factory=dict)  # model → field → its line
    # Models whose catalog entry had problems (already reported): their jobs are not then
    # also "unknown model"; a models file that failed whole hides every unknown model.
    broken_models: set[str] = field(default_factory=set)
    broken_catalog: bool = False
    jobs_yaml: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (line, row) of `jobs:`
    rows_csv: Path | None = None  # the CSV manifest itself, or the YAML's `rows:` file

    def has_rows(self) -> bool:
        return bool(self.jobs_yaml) or self.rows_csv is not None

    def is_broken(self, model: str) -> bool:
        """Its catalog entry's problems are reported already: one cause, one line."""
        return model in self.broken_models or self.broken_catalog
