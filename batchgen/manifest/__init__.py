"""Manifest loading and expansion: YAML/CSV rows → validated, keyed jobs, streamed.

A manifest is either a CSV file (one job a row, header = field names) or a YAML file::

    defaults: {model: grok-imagine-reference-to-video, resolution: 720p}
    matrix: {aspect_ratio: ["16:9", "9:16"]}      # cartesian product applied to every row
    output: "{name}-{aspect_ratio}.mp4"            # file-name template (default below)
    rows: shots.csv                                 # optional, rows from a CSV next to the YAML
    unvalidated_models: [some-new-model]            # optional: send these models' fields unchecked
    deliver: "s3://renders/nightly/"                # optional: upload finished clips there
    jobs:
      - {name: harbour, subject: a lighthouse, prompt: "A {subject} at dusk, @Image1", ...}

Precedence: defaults < row < matrix; a field set by both a row and the matrix is an error. An
empty CSV cell or a YAML ``null`` means "not set here": ``defaults`` apply (so one CSV can mix
models). ``{field}`` in a request field, ``name``, ``take`` or ``output`` is replaced by that
field's value. Fields that are neither request fields nor meta fields are template variables;
they are never sent, and text in them that no template uses is never parsed as a template.

Meta fields (not sent to the API): ``name``, ``take`` (distinguishes deliberate repeats of the
same request) and ``output``. A CSV written by ``batchgen export --raw`` can be fed back as
rows: its ``params`` column (a JSON object of request fields) is expanded and its result
columns are ignored, so the round trip gives the same job keys.

The job key is sha256 of the canonical JSON of the *effective* request (model + every parameter
after defaults) plus ``take``: renaming a row or reordering the manifest never resubmits, while
changing anything that changes the video does.

This module imports nothing from the scheduler, the client or the ledger.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import itertools
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from .. import jobs as jobs_module
from .. import datafiles, names, specs, yamlsafe
from ..errors import Problem
from ..jobs import Job, canonical_json, key_from_json, short_key
from ..names import TemplateError
from .csvreader import MAX_CSV_LINE, PARAMS_COLUMN, RESULT_COLUMNS, csv_rows
from .document import Document, Row
from .problems import MAX_PROBLEMS, Problems
from .yamlreader import MAX_YAML_BYTES, NEWLINE, TOP_LEVEL, read_document

__all__ = ["LOCAL_INPUT_SUFFIXES", "MAX_CSV_LINE", "MAX_LOCAL_INPUT", "MAX_PROBLEMS", "MAX_YAML_BYTES", "META_FIELDS",
           "NEWLINE", "PARAMS_COLUMN", "RESULT_COLUMNS", "TOP_LEVEL", "Manifest", "safe_output_name"]

MAX_LOCAL_INPUT = 50 * 1024 * 1024  # a local reference image/video to upload
# Local inputs are sent to a third party: only media files, only from the manifest's own folder
# tree, so a manifest from elsewhere cannot upload ~/.ssh/id_rsa as a "reference image".
LOCAL_INPUT_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".mp4", ".mov", ".webm"})
META_FIELDS = frozenset({"name", "take", "output"})


@functools.lru_cache(maxsize=1)
def _expander_sha256() -> str:
    """The expansion code itself (every module of this package, found by listing it, its
    helpers, the model specs, the YAML parser's version): another version may expand the same
    manifest differently."""
    h = hashlib.sha256(yaml.__version__.encode())
    package = sorted(Path(__file__).parent.glob("*.py"))
    for mod in (*map(str, package), specs.__file__, datafiles.__file__, jobs_module.__file__, names.__file__,
                yamlsafe.__file__,
                str(Path(specs.__file__).with_name("models.yaml"))):
        h.update(Path(mod).name.encode())
        h.update(Path(mod).read_bytes())
    return h.hexdigest()


class Manifest:
    """A loaded (not yet expanded) manifest. ``expand()`` streams jobs; problems accumulate in
    ``problems`` and warnings in ``warnings``. Call ``check()`` after a full expansion."""

    def __init__(self, path: str | os.PathLike[str], catalog: specs.Catalog | None = None) -> None:
        self.path = Path(path)
        self._problems = Problems(str(self.path))
        # Local input files named in media fields: sha256 → path (content-addressed, hashed once).
        self.local_files: dict[str, Path] = {}
        self._hashed: dict[Path, str] = {}
        self._digests: dict[Path, bytes] = {}
        self._expanded = 0
        self._doc: Document = read_document(self.path, catalog or specs.SHIPPED, self._problems)

    # ---------------------------------------------------------------- what it says
    @property
    def catalog(self) -> specs.Catalog:
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
        return self._doc.deliver

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

    def _problem(self, where: str, fld: str | None, msg: str, file: str | None = None) -> None:
        self._problems.add(where, fld, msg, file)

    def _warn(self, msg: str, row: Row | None = None) -> None:
        self._problems.warn(msg, row)

    # ---------------------------------------------------------------- rows
    def _rows(self) -> Iterator[Row]:
        for i, (line, row) in enumerate(self._doc.jobs_yaml):
            yield Row(f"jobs[{i}] (line {line})", str(self.path), {k: v for k, v in row.items() if v is not None})
        if self._doc.rows_csv is not None:
            yield from csv_rows(self._doc.rows_csv, self._problems)

    # ---------------------------------------------------------------- expansion
    def expand(self) -> Iterator[Job]:
        """Yield every valid job in manifest order. Invalid rows are recorded in ``problems``
        (and skipped); duplicate keys and output names are detected across the whole stream."""
        keys: dict[str, str] = {}
        outputs: dict[str, tuple[str, bool]] = {}
        combos = _combos(self.matrix)
        seq = 0
        self._expanded = 0
        for row in self._rows():
            for combo in combos:
                seq += 1
                made = self._make_job(row, combo, seq)
                if made is None:
                    continue
                job, reduced = made
                first = keys.get(job.key)
                if first is not None:
                    self._problem(row.where, None, f"is the identical request as {first} (same job key "
                                  f"{short_key(job.key)}); give each a distinct `take:` to render it more than once",
                                  file=row.file)
                    continue
                keys[job.key] = row.where
                prev = outputs.get(job.output)
                if prev is not None:
                    why = (" (values in file names are reduced to letters, digits, '.', '_' and '-' and cut to "
                           f"{names.VALUE_CHARS} characters, which made them equal)") if reduced or prev[1] else ""
                    self._problem(row.where, "output", f"file name {job.output!r} is also used by {prev[0]}{why}; "
                                  "make the `output` template unique", file=row.file)
                    continue
                outputs[job.output] = (row.where, reduced)
                self._expanded += 1
                yield job

    def check(self) -> None:
        """Raise ``ManifestError`` with every problem found (call after a full expansion)."""
        if not self.problems and not self._expanded:
            self._problem("file", "jobs", "the manifest has no jobs (`jobs:` list or rows in the CSV)")
        if self.problems:
            self._problems.raise_if_any()

    def inputs_sha256(self) -> str:
        """What an expansion depends on, local media files aside (a manifest naming any is never
        reused, see runner.prepare): the manifest's bytes, its rows CSV's bytes, the model
        catalog and the code that expands them. Equal digests → equal jobs, so a validated
        expansion can be reused."""
        h = hashlib.sha256(_expander_sha256().encode())
        h.update(repr(sorted((k, repr(v)) for k, v in self.catalog.models.items())).encode())
        for p in dict.fromkeys(x for x in (self.path, self._doc.rows_csv) if x is not None):
            h.update(self._file_digest(p))
        return h.hexdigest()

    def sha256(self) -> str:
        """sha256 of the manifest file's bytes (hex): how the ledger tells runs of it apart."""
        return self._file_digest(self.path).hex()

    def _file_digest(self, path: Path) -> bytes:
        # Streamed (a CSV manifest may be large) and read once per file however often asked.
        digest = self._digests.get(path)
        if digest is None:
            with open(path, "rb") as f:
                digest = self._digests[path] = hashlib.file_digest(f, "sha256").digest()
        return digest

    def validate(self) -> int:
        """Expand fully, discarding jobs; return the count or raise ManifestError."""
        n = sum(1 for _ in self.expand())
        self.check()
        return n

    # ---------------------------------------------------------------- one job
    def _make_job(self, row: Row, combo: dict[str, Any], seq: int) -> tuple[Job, bool] | None:
        """The job of one row × one matrix combination, or None (its problems recorded)."""
        clash = [k for k in row.values if k in combo]
        for k in clash:
            self._problem(row.where, k, "is set both by the row and by the matrix", file=row.file)
        if clash:
            return None
        raw: dict[str, Any] = {**self.defaults, **row.values, **combo}
        model = self._model(raw, row)
        if model is None:
            return None
        if model in self.per_model:  # model-specific fields: above `defaults`, below rows and the matrix
            raw = {**self.defaults, **self.per_model[model], **row.values, **combo}
        # Listed under `unvalidated_models`: sent unchecked, even when the catalog knows it.
        spec = None if model in self.unvalidated_models else self.catalog.get(model)
        used = self._used_vars(raw, row)
        params = self._request_fields(raw, row, model, spec, used)
        if params is None:
            return None
        for f in self.catalog.media_fields.intersection(params):
            try:
                params[f] = self._localise(params[f], Path(row.file).parent)
            except TemplateError as e:
                self._problem(row.where, f, str(e), file=row.file)
                return None
        errs: list[tuple[str, str]] = []
        warns: list[tuple[str, str]] = []
        if spec is None:
            request = {"model": model, **{k: v for k, v in params.items() if v is not None}}
        else:
            request, errs, warns = self.catalog.normalise(model, params)
        # One row is several jobs when the matrix crosses models: say which model refuses it.
        of_model = f" (for {model})" if "model" in self.matrix else ""
        for f, msg in errs:
            self._problem(row.where, f, msg + of_model, file=row.file)
        for f, msg in warns:
            self._warn(f"{model}: field '{f}' {msg}", row)
        if errs:
            return None
        take = self._rendered(raw, "take", row)
        take = None if take is None else str(take)
        request_json = canonical_json(request)
        key = key_from_json(request_json, take)
        name = self._rendered(raw, "name", row)
        name = str(name) if name is not None else f"job{seq:05d}"
        made = self._output_name(raw, row, combo, request, name, key, seq)
        if made is None:
            return None
        output, reduced = made
        source = row.where if row.file == str(self.path) else f"{Path(row.file).name} {row.where}"
        return Job(key, seq, name, source, model, request, output, take, request_json), reduced

    def _model(self, raw: dict[str, Any], row: Row) -> str | None:
        model = self._rendered(raw, "model", row)
        if not isinstance(model, str) or not model.strip():
            if model is not _FAILED:
                self._problem(row.where, "model", "is required (set it in `defaults` or per row)", file=row.file)
            return None
        model = model.strip()
        if model in self.catalog.models and model not in self.unvalidated_models:
            return model
        if model in self.unvalidated_models:
            self._warn(f"model '{model}' is not known to batchgen: its fields are sent unvalidated "
                       "(listed under `unvalidated_models`)")
            return model
        if self._doc.is_broken(model):
            return None  # its entry's problems are reported; one cause, one line
        hint = difflib.get_close_matches(model, sorted(self.catalog.models), n=1, cutoff=0.6)
        self._problem(row.where, "model", f"unknown model {model!r}" + (f"; did you mean '{hint[0]}'?" if hint else "")
                      + " (`batchgen models` lists the catalog; add an entry with --models FILE or `models:`, "
                      "or list it under `unvalidated_models:` to send its fields unchecked)", file=row.file)
        return None

    def _used_vars(self, raw: dict[str, Any], row: Row) -> set[str]:
        """Fields some template of this job refers to: its request fields' templates, ``name``,
        ``take`` and the output template (the row's or the manifest's)."""
        used: set[str] = set()
        for v in raw.values():
            for s in (v if isinstance(v, list) else [v]):
                if isinstance(s, str) and "{" in s:
                    used |= names.template_vars(s)
        template = raw.get("output") if "output" in row.values else self.output_template
        if isinstance(template, str):
            used |= names.template_vars(template)
        return used

    def _request_fields(self, raw: dict[str, Any], row: Row, model: str, spec: specs.ModelSpec | None,
                        used: set[str]) -> dict[str, Any] | None:
        """The fields this job sends, rendered; the rest are template variables (checked for
        typos and for being used at all). None when a field is wrong."""
        params: dict[str, Any] = {}
        bad = False
        for k in raw:
            if k == "model" or k in META_FIELDS and not (spec is not None and k in spec.fields):
                continue  # a model whose request has a `name` (sora-2-character) is sent the job's name
            if spec is None:  # an unvalidated model: every field no template uses is sent
                if k in used and k not in self.catalog.all_fields:
                    continue
            elif k not in spec.fields:
                if (spec.open and k not in used and k not in self.catalog.all_fields and k not in self.matrix
                        and self.catalog.suggest(k) is None):
                    # The model's page names fields the catalog could not read: sent as given.
                    self._warn(f"field '{k}' is not in the catalog entry of {model}; it is sent as given "
                               "(check the provider's page)", row if k in row.values else None)
                elif self._not_a_field(k, raw, row, model, used):
                    bad = True
                    continue
                else:
                    continue
            value = self._rendered(raw, k, row)
            if value is _FAILED:
                bad = True
                continue
            params[k] = value
        return None if bad else params

    def _not_a_field(self, k: str, raw: dict[str, Any], row: Row, model: str, used: set[str]) -> bool:
        """``k`` is not a request field of ``model``: fine as a template variable or a default
        meant for other models; a problem (returns True) when a row or the matrix asks for it
        or it looks like a typo of a request field."""
        if k in self.matrix and k not in used:
            self._problem(f"line {self._doc.matrix_line}", k, f"matrix field '{k}' is not a request field of {model} "
                          "and no template uses it: every combination would make the same request", file=str(self.path))
            return True
        if k in self.per_model.get(model, {}) and k not in used and k not in row.values:
            # Set for this model alone: never a default meant for another model.
            line = self._doc.per_model_lines.get(model, {}).get(k, 0)
            hint = self.catalog.suggest(k)
            self._problem(f"line {line}" if line else "per_model", k,
                          f"`per_model` sets '{k}' for {model}, which has no such field and no template uses it"
                          + (f"; did you mean '{hint}'?" if hint and hint != k else ""), file=str(self.path))
            return True
        if k in self.catalog.all_fields:
            if k in row.values:  # a default for another model is fine; a row asking for it is not
                self._problem(row.where, k, f"is not a field of {model} (fields for some models only go under "
                              "`per_model:`)", file=row.file)
                return True
            if k in self.defaults and k not in self.per_model.get(model, {}):
                # Never silent: the run must not quietly render something other than asked.
                self._warn(f"`defaults` field '{k}' is not a field of {model}: not sent to its jobs "
                           "(fields for some models only belong under `per_model:`)")
            return False
        if k in used or k in self.matrix:
            return False
        hint = self.catalog.suggest(k)
        if hint:
            self._problem(row.where, k, f"is not a field of {model}; did you mean '{hint}'?", file=row.file)
            return True
        if k in row.values or k in self.defaults:
            self._warn(f"field '{k}' is not a request field of {model} and no template uses it; it is ignored",
                       row if k in row.values else None)
        return False

    def _rendered(self, raw: dict[str, Any], k: str, row: Row) -> Any:
        """``raw[k]`` with its templates rendered (None when unset, ``_FAILED`` after a problem)."""
        v = raw.get(k)
        if not _has_template(v):
            return v
        try:
            return _render_value(v, raw, {k})
        except TemplateError as e:
            self._problem(row.where, k, str(e), file=row.file)
            return _FAILED

    def _output_name(self, raw: dict[str, Any], row: Row, combo: dict[str, Any], request: dict[str, Any],
                     name: str, key: str, seq: int) -> tuple[str, bool] | None:
        template = raw.get("output") if "output" in row.values else self.output_template
        if template is None:
            template = "{name}-{matrix}.mp4" if self.matrix else "{name}.mp4"
        fixed = {**request, "name": name, "key": short_key(key), "seq": seq,
                 "matrix": "-".join(str(combo[k]) for k in self.matrix) if combo else ""}

        def get(k: str) -> Any:
            if k in fixed:
                return fixed[k]
            value = self._rendered(raw, k, row)  # a template variable: rendered only when used
            if value is _FAILED:
                raise TemplateError(f"output template refers to {{{k}}}, which could not be rendered")
            return value

        try:
            return names.render_output_name(str(template), get)
        except (TemplateError, ValueError) as e:
            self._problem(row.where, "output", str(e), file=row.file)
            return None

    def _localise(self, value: Any, base: Path) -> Any:
        """Local file paths in media fields → ``upload:sha256:<hex>``: the job key then follows
        the file's content, not where it lies, and the scheduler uploads it once, just in time."""
        if isinstance(value, list):
            return [self._localise(v, base) for v in value]
        if not isinstance(value, str) or not value.strip():
            return value
        v = value.strip()
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", v) or v.startswith(specs.UPLOAD_PREFIX):
            return v  # a URL (its scheme is checked by validation)
        path = base / v
        try:
            st = path.stat()
        except (OSError, ValueError):
            raise TemplateError(f"{v!r} is neither an http(s) URL nor a readable local file") from None
        if not path.is_file():
            raise TemplateError(f"{v!r} is not a file")
        root = self.path.resolve().parent
        if root not in path.resolve().parents:
            raise TemplateError(f"local input {v!r} must be inside the manifest's folder {root}")
        if path.suffix.lower() not in LOCAL_INPUT_SUFFIXES:
            raise TemplateError(f"local input {v!r} must be an image or video "
                                f"({', '.join(sorted(LOCAL_INPUT_SUFFIXES))})")
        if st.st_size > MAX_LOCAL_INPUT:
            raise TemplateError(f"{v!r} is {st.st_size} bytes; local inputs are limited to {MAX_LOCAL_INPUT}")
        key = path.resolve()
        digest = self._hashed.get(key)
        if digest is None:
            h = hashlib.sha256()
            with open(key, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            digest = self._hashed[key] = h.hexdigest()
        self.local_files.setdefault(digest, key)
        return specs.UPLOAD_PREFIX + digest


# -------------------------------------------------------------------- helpers
_FAILED: Any = object()  # a field whose rendering failed (its problem is already recorded)


def _combos(matrix: dict[str, list[Any]]) -> list[dict[str, Any]]:
    if not matrix:
        return [{}]
    keys = list(matrix)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(matrix[k] for k in keys))]


def _has_template(v: Any) -> bool:
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


# Kept importable from here: tests and older scripts call manifest.safe_output_name.
safe_output_name = names.safe_output_name
