"""Manifest loading and expansion: YAML/CSV rows → validated, keyed jobs, streamed.

A manifest is either a CSV file (one job a row, header = field names) or a YAML file::

    defaults: {model: grok-imagine-reference-to-video, resolution: 720p}
    matrix: {aspect_ratio: ["16:9", "9:16"]}      # cartesian product applied to every row
    output: "{name}-{aspect_ratio}.mp4"            # file-name template (default below)
    rows: shots.csv                                 # optional, rows from a CSV next to the YAML
    unvalidated_models: [some-new-model]            # optional: send these models' fields unchecked
    deliver: "s3://renders/nightly/"                # optional: upload finished clips there
    limits: {veo-3.1: 4}                            # optional: tasks in flight per model at most
    finish_by: "07:00"                              # optional: start nothing that cannot be done by then
    jobs:
      - {name: harbour, subject: a lighthouse, prompt: "A {subject} at dusk, @Image1", ...}

Precedence: defaults < row < matrix; a field set by both a row and the matrix is an error. An
empty CSV cell or a YAML ``null`` means "not set here": ``defaults`` apply (so one CSV can mix
models). ``{field}`` in a request field, ``name``, ``take`` or ``output`` is replaced by that
field's value. Fields that are neither request fields nor meta fields are template variables;
they are never sent, and text in them that no template uses is never parsed as a template.

Meta fields (not sent to the API): ``name``, ``take`` (distinguishes deliberate repeats of the
same request), ``output`` and ``priority`` (higher starts first; not part of the key).

The rooms, each handing the next a typed value (``document.Document``, ``document.Row``,
``jobs.Job``) and reporting to one ``problems.Problems``:

* ``yamlreader`` reads the file into a ``Document`` (``csvreader`` streams a CSV's rows);
* ``expand`` crosses rows with the matrix and builds each job (``templates`` renders fields,
  ``localfiles`` turns local inputs into uploads; ``plainrows`` decides once per row shape what
  a row without templates sends, the short path of a large CSV);
* ``validate`` checks a job's model and fields against the catalog;
* ``keys`` computes job keys and the digest of an expansion's inputs.

``Manifest`` below only wires them. This package imports nothing from the scheduler, the
client or the ledger.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import names, specs
from ..errors import Problem
from ..jobs import Job
from . import keys
from .csvreader import MAX_CSV_LINE, PARAMS_COLUMN, RESULT_COLUMNS
from .document import Document
from .expand import Expander
from .localfiles import LOCAL_INPUT_SUFFIXES, MAX_LOCAL_INPUT, LocalInputs
from .problems import MAX_PROBLEMS, Problems
from .validate import META_FIELDS
from .yamlreader import MAX_YAML_BYTES, NEWLINE, TOP_LEVEL, read_document, unknown_model

__all__ = ["LOCAL_INPUT_SUFFIXES", "MAX_CSV_LINE", "MAX_LOCAL_INPUT", "MAX_PROBLEMS", "MAX_YAML_BYTES", "META_FIELDS",
           "NEWLINE", "PARAMS_COLUMN", "RESULT_COLUMNS", "TOP_LEVEL", "Manifest", "safe_output_name"]

# The digest of the expansion code, looked up here at call time (tests replace it to act as
# another batchgen version; see ``keys.expander_sources`` for what it covers).
_expander_sha256 = keys.expander_sha256


class Manifest:
    """A loaded (not yet expanded) manifest. ``expand()`` streams jobs; problems accumulate in
    ``problems`` and warnings in ``warnings``. Call ``check()`` after a full expansion."""

    def __init__(self, path: str | os.PathLike[str], catalog: specs.Catalog | None = None) -> None:
        self.path = Path(path)
        self._problems = Problems(str(self.path))
        self._inputs = LocalInputs(self.path)
        self._digests = keys.FileDigests()
        self._doc: Document = read_document(self.path, catalog or specs.SHIPPED, self._problems)
        self._expander = Expander(self._doc, self._problems, self._inputs)

    # ---------------------------------------------------------------- what it says
    @property
    def catalog(self) -> specs.Catalog:
        """The models this manifest is validated against: the shipped catalog (or the one
        given), the user's --models file, and the manifest's own ``models:``."""
        return self._doc.catalog

    @property
    def defaults(self) -> dict[str, Any]:
        return self._doc.defaults

    @property
    def matrix(self) -> dict[str, list[Any]]:
        return self._doc.matrix

    @property
    def per_model(self) -> dict[str, dict[str, Any]]:
        return self._doc.per_model

    @property
    def output_template(self) -> str | None:
        return self._doc.output_template

    @property
    def unvalidated_models(self) -> frozenset[str]:
        return self._doc.unvalidated_models

    @property
    def deliver(self) -> str | None:
        """``deliver: s3://bucket/prefix/`` (run --deliver overrides it)."""
        return self._doc.deliver

    @property
    def deliver_only(self) -> str | None:
        """``deliver: {to: …, only: approved}``: only approved clips (and picks) are delivered."""
        return self._doc.deliver_only

    @property
    def limits(self) -> dict[str, int]:
        """``limits:`` model → tasks in flight at most (run --limit MODEL=N overrides one)."""
        return self._doc.limits

    def unknown_model(self, model: str) -> str | None:
        """Why ``model`` (a ``run --limit``) is no model this manifest knows, or None."""
        return unknown_model(model, self._doc.catalog, self._doc.unvalidated_models)

    @property
    def finish_by(self) -> str | None:
        """``finish_by:`` the night's deadline as written ("07:00"; run --finish-by overrides it)."""
        return self._doc.finish_by

    @property
    def local_files(self) -> dict[str, Path]:
        """Local input files named in media fields: sha256 → path (content-addressed, hashed once)."""
        return self._inputs.files

    # ---------------------------------------------------------------- problems and warnings
    @property
    def problems(self) -> list[Problem]:
        return self._problems.problems

    @property
    def truncated(self) -> int:
        return self._problems.truncated

    @property
    def warnings(self) -> list[str]:
        """Each distinct warning once, naming the first row it concerns and how many more."""
        return self._problems.warnings

    # ---------------------------------------------------------------- expansion
    def expand(self) -> Iterator[Job]:
        """Yield every valid job in manifest order. Invalid rows are recorded in ``problems``
        (and skipped); duplicate keys and output names are detected across the whole stream."""
        return self._expander.expand()

    def check(self) -> None:
        """Raise ``ManifestError`` with every problem found (call after a full expansion)."""
        if not self._problems.problems and not self._expander.expanded:
            self._problems.add("file", "jobs", "the manifest has no jobs (`jobs:` list or rows in the CSV)")
        self._problems.raise_if_any()

    def validate(self) -> int:
        """Expand fully, discarding jobs; return the count or raise ManifestError."""
        n = sum(1 for _ in self.expand())
        self.check()
        return n

    # ---------------------------------------------------------------- digests
    def inputs_sha256(self) -> str:
        """What an expansion depends on, local media files aside (a manifest naming any is never
        reused, see runner.prepare): the manifest's bytes, its rows CSV's bytes, the model
        catalog and the code that expands them. Equal digests → equal jobs, so a validated
        expansion can be reused."""
        files = [x for x in (self.path, self._doc.rows_csv) if x is not None]
        return keys.inputs_sha256(_expander_sha256(), self.catalog, files, self._digests)

    def sha256(self) -> str:
        """sha256 of the manifest file's bytes (hex): how the ledger tells runs of it apart."""
        return self._digests.of(self.path).hex()


# Kept importable from here: tests and older scripts call manifest.safe_output_name.
safe_output_name = names.safe_output_name
