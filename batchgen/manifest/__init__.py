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

import codecs
import csv
import difflib
import functools
import hashlib
import itertools
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from .. import jobs as jobs_module
from .. import datafiles, names, specs, yamlsafe
from ..errors import DataFileError, ManifestError, Problem, UsageError
from ..jobs import Job, canonical_json, key_from_json, short_key
from ..names import TemplateError

MAX_YAML_BYTES = 10 * 1024 * 1024
MAX_LOCAL_INPUT = 50 * 1024 * 1024  # a local reference image/video to upload
# Local inputs are sent to a third party: only media files, only from the manifest's own folder
# tree, so a manifest from elsewhere cannot upload ~/.ssh/id_rsa as a "reference image".
LOCAL_INPUT_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".mp4", ".mov", ".webm"})
MAX_CSV_LINE = 1024 * 1024
MAX_PROBLEMS = 200
META_FIELDS = frozenset({"name", "take", "output"})
TOP_LEVEL = frozenset({"defaults", "jobs", "matrix", "rows", "output", "unvalidated_models", "deliver", "models",
                       "per_model"})
# Columns `batchgen export` adds that are results, not request fields: a results CSV fed back
# as rows ignores them (recognised by its job_key column).
RESULT_COLUMNS = frozenset({"job_key", "row", "state", "task_id", "result_url", "output_path", "bytes", "sha256",
                            "credits", "attempts", "polls", "error_code", "error_message", "submitted_at",
                            "completed_at", "done_at", "verify", "verify_detail", "duration_s", "width", "height",
                            "fps", "codec", "audio", "poster", "contact_sheet", "delivered_url",
                            "delivered_at"})
PARAMS_COLUMN = "params"
NEWLINE = b"\n"


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


@dataclass
class _Row:
    where: str
    file: str
    values: dict[str, Any]  # only the fields this row sets (never None)


class _BadLine(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


class Manifest:
    """A loaded (not yet expanded) manifest. ``expand()`` streams jobs; problems accumulate in
    ``problems`` and warnings in ``warnings``. Call ``check()`` after a full expansion."""

    def __init__(self, path: str | os.PathLike[str], catalog: specs.Catalog | None = None) -> None:
        self.path = Path(path)
        # The models this manifest is validated against: the shipped catalog, the user's
        # --models file, and the manifest's own `models:` (a file or inline entries).
        self.catalog = catalog or specs.SHIPPED
        self.per_model: dict[str, dict[str, Any]] = {}
        self._per_model_lines: dict[str, dict[str, int]] = {}  # model → field → its line
        # Models whose catalog entry had problems (already reported): their jobs are not then
        # also "unknown model"; a models file that failed whole hides every unknown model.
        self._broken_models: set[str] = set()
        self._broken_catalog = False
        self.defaults: dict[str, Any] = {}
        self.matrix: dict[str, list[Any]] = {}
        self.output_template: str | None = None
        self.unvalidated_models: frozenset[str] = frozenset()
        self.deliver: str | None = None  # `deliver: s3://bucket/prefix/` (run --deliver overrides it)
        self.problems: list[Problem] = []
        self._seen: set[str] = set()
        self.truncated = 0
        # warning text → (first row it applies to, how many rows); shown once each
        self._warned: dict[str, tuple[str | None, int]] = {}
        self._jobs_yaml: list[tuple[int, dict[str, Any]]] = []
        self._matrix_line = 0
        # Local input files named in media fields: sha256 → path (content-addressed, hashed once).
        self.local_files: dict[str, Path] = {}
        self._hashed: dict[Path, str] = {}
        self._rows_csv: Path | None = None
        self._digests: dict[Path, bytes] = {}
        self._expanded = 0
        self._load()

    # ---------------------------------------------------------------- problems and warnings
    def _problem(self, where: str, fld: str | None, msg: str, file: str | None = None) -> None:
        problem = Problem(file or str(self.path), where, fld, msg)
        sig = str(problem)
        if sig in self._seen:  # the same row fails the same way for every matrix combination
            return
        self._seen.add(sig)
        if len(self.problems) >= MAX_PROBLEMS:
            self.truncated += 1
            return
        self.problems.append(problem)

    def _warn(self, msg: str, row: _Row | None = None) -> None:
        where = None if row is None else f"{row.file}: {row.where}"
        first, n = self._warned.get(msg, (where, 0))
        if n < 1_000_000:
            self._warned[msg] = (first, n + (row is not None or n == 0))

    @property
    def warnings(self) -> list[str]:
        """Each distinct warning once, naming the first row it concerns and how many more."""
        out = []
        for msg, (first, n) in self._warned.items():
            if first is None:
                out.append(msg)
            else:
                more = f" (and {n - 1} more row(s))" if n > 1 else ""
                out.append(f"{first}{more}: {msg}")
        return out

    def _fail_now(self) -> None:
        raise ManifestError(self.problems, truncated=self.truncated)

    # ---------------------------------------------------------------- loading
    def _load(self) -> None:
        p = self.path
        try:
            size = p.stat().st_size
            if not p.is_file():
                raise IsADirectoryError(21, "is not a file")
        except OSError as e:
            self._problem("file", None, f"cannot read: {e.strerror}")
            self._fail_now()
        if p.suffix.lower() == ".csv":
            self._rows_csv = p
            return
        if size > MAX_YAML_BYTES:
            self._problem("file", None, f"is {size} bytes; YAML manifests are limited to {MAX_YAML_BYTES} (put rows in a CSV: `rows: file.csv`)")
            self._fail_now()
        try:
            text = p.read_bytes().decode("utf-8-sig")
        except OSError as e:
            self._problem("file", None, f"cannot read: {e.strerror}")
            self._fail_now()
        except UnicodeDecodeError as e:
            self._problem(_line_of_byte(p, e.start), None, f"is not UTF-8 text (byte 0x{e.object[e.start]:02x})")
            self._fail_now()
        doc, problems = yamlsafe.load(text)
        for yp in problems:
            where = f"line {yp.line}" + (f", column {yp.column}" if yp.column else "")
            self._problem(where, yp.field, yp.message)
        if doc is None and not problems:
            self._problem("file", None, "the manifest is empty (it needs `jobs:` and/or `rows:`)")
        elif doc is not None and not isinstance(doc, yamlsafe.Mapping):
            self._problem("line 1", None, "a YAML manifest must be a mapping with `jobs:` and/or `rows:`")
        elif doc is not None:
            self._read_top_level(doc)
        if doc is None or not isinstance(doc, yamlsafe.Mapping) or (self.problems and not self._has_rows()):
            self._fail_now()
        # Otherwise the problems so far (a duplicate key, a key that is not text) are reported
        # with everything expansion finds: one pass shows all of them.

    def _read_models(self, doc: yamlsafe.Mapping, line: Any) -> None:
        """``models:`` (a catalog file next to the manifest, or inline entries) and
        ``per_model:`` (model → fields applied to that model's jobs only)."""
        models = doc.get("models")
        if isinstance(models, str):
            # Not resolved: a symlink loop is the reader's clear error, not Path.resolve's RuntimeError.
            path = self.path.parent / models
            try:
                self.catalog = self.catalog.extended(datafiles.read_models(path), str(path))
            except DataFileError as e:  # every problem of that file, each naming it with its line
                for p in e.problems:
                    self._problem(p.where, p.field, p.message, file=p.file)
                self._broken_catalog = True
        elif isinstance(models, dict):
            # Inline entries: checked on the manifest's own document, so problems carry its lines.
            entries, problems = datafiles.check_models(models, str(self.path))
            for p in problems:
                self._problem(p.where, p.field, p.message)
            self._broken_models = datafiles.refused_names(models, entries)
            if entries:
                self.catalog = self.catalog.extended(entries, f"{self.path} (models:)")
        elif models is not None:
            self._problem(line("models"), "models", "must be a models file name or a mapping of model entries")
        per = doc.get("per_model")
        if per is None:
            return
        if not isinstance(per, dict) or not all(isinstance(v, dict) for v in per.values()):
            self._problem(line("per_model"), "per_model", "must map model names to {field: value} mappings")
            return
        for model, values in per.items():
            if model in self._broken_models or self._broken_catalog:
                continue  # its entry's problems are reported
            if model not in self.catalog.models and model not in (doc.get("unvalidated_models") or []):
                hint = difflib.get_close_matches(str(model), sorted(self.catalog.models), n=1, cutoff=0.6)
                self._problem(line("per_model"), "per_model", f"unknown model {model!r}"
                              + (f"; did you mean '{hint[0]}'?" if hint else ""))
                continue
            self.per_model[str(model)] = {k: v for k, v in values.items() if v is not None}
            self._per_model_lines[str(model)] = getattr(values, "key_lines", {})

    def _has_rows(self) -> bool:
        return bool(self._jobs_yaml) or self._rows_csv is not None

    def _read_top_level(self, doc: yamlsafe.Mapping) -> None:
        def line(key: str) -> str:
            return f"line {doc.key_lines.get(key, 1)}"

        for k in doc:
            if k not in TOP_LEVEL:
                hint = difflib.get_close_matches(k, sorted(TOP_LEVEL), n=1, cutoff=0.7)
                self._problem(line(k), k, "unknown top-level key" + (f"; did you mean '{hint[0]}'?" if hint else "")
                              + f" (allowed: {', '.join(sorted(TOP_LEVEL))})")
        d = doc.get("defaults") or {}
        if not isinstance(d, dict):
            self._problem(line("defaults"), "defaults", "must be a mapping of field: value")
        else:
            self.defaults = {k: v for k, v in d.items() if v is not None}
        m = doc.get("matrix") or {}
        if not isinstance(m, dict) or not all(isinstance(v, list) and v for v in m.values()):
            self._problem(line("matrix"), "matrix", "must map field names to non-empty lists")
        else:
            self.matrix = m
            self._matrix_line = doc.key_lines.get("matrix", 1)
        out = doc.get("output")
        if out is not None and not isinstance(out, str):
            self._problem(line("output"), "output", "must be a string template")
        self.output_template = out if isinstance(out, str) else None
        models = doc.get("unvalidated_models") or []
        if not isinstance(models, list) or not all(isinstance(x, str) and x.strip() for x in models):
            self._problem(line("unvalidated_models"), "unvalidated_models", "must be a list of model names")
        else:
            self.unvalidated_models = frozenset(x.strip() for x in models)
        self._read_models(doc, line)
        dest = doc.get("deliver")
        if dest is not None and not (isinstance(dest, str) and dest.strip().startswith("s3://")):
            self._problem(line("deliver"), "deliver", "must be an s3://bucket/prefix/ URL (quoted)")
        elif dest is not None:
            from ..deliver import Destination

            try:  # the parser `run` uses: `plan` refuses the same destinations
                Destination.parse(dest, what="")
            except UsageError as e:
                self._problem(line("deliver"), "deliver", str(e))
            else:
                self.deliver = dest.strip()
        jobs = doc.get("jobs")
        if jobs is None:
            jobs = []
        if not isinstance(jobs, list):
            self._problem(line("jobs"), "jobs", "must be a list of rows")
            jobs = []
        item_lines = getattr(jobs, "item_lines", [])
        for i, row in enumerate(jobs):
            ln = item_lines[i] if i < len(item_lines) else 0
            if not isinstance(row, dict):
                self._problem(f"jobs[{i}] (line {ln})", None, "each job must be a mapping of field: value")
                continue
            self._jobs_yaml.append((ln, row))
        rows = doc.get("rows")
        if rows is not None:
            if not isinstance(rows, str):
                self._problem(line("rows"), "rows", "must be a CSV file name")
            else:
                rp = self.path.parent / rows
                if not rp.is_file():
                    self._problem(line("rows"), "rows", f"CSV file not found: {rp}")
                else:
                    self._rows_csv = rp

    # ---------------------------------------------------------------- rows
    def _rows(self) -> Iterator[_Row]:
        for i, (line, row) in enumerate(self._jobs_yaml):
            yield _Row(f"jobs[{i}] (line {line})", str(self.path), {k: v for k, v in row.items() if v is not None})
        if self._rows_csv is not None:
            yield from self._csv_rows(self._rows_csv)

    def _csv_rows(self, path: Path) -> Iterator[_Row]:
        file = str(path)
        try:
            f = open(path, "rb")
        except OSError as e:
            self._problem("file", None, f"cannot read: {e.strerror}", file=file)
            return
        with f:
            # strict: a stray quote (`"b"c`) is an error, not silently `bc`, and a quote that
            # never closes is reported where it opened instead of swallowing the rows below it.
            reader = csv.reader(_csv_lines(f), strict=True)
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                self._problem("line 1", None, "empty CSV (a header row of field names is required)", file=file)
                return
            except _BadLine as e:
                self._problem(f"line {e.line}", None, str(e), file=file)
                return
            except csv.Error as e:
                self._problem("line 1", None, f"unreadable CSV header: {e}", file=file)
                return
            if len(header) == 1 and (";" in header[0] or "\t" in header[0]):
                sep = "semicolons" if ";" in header[0] else "tabs"
                self._problem("line 1", None, f"the header is separated by {sep}; batchgen reads comma-separated "
                                              "CSV (save it as CSV with commas)", file=file)
                return
            seen: set[str] = set()
            for h in header:
                if not h or h in seen:
                    self._problem("line 1", h or None, "header names must be unique and non-empty", file=file)
                    return
                seen.add(h)
            ignored = RESULT_COLUMNS & seen if "job_key" in seen else frozenset()
            n = 0
            prev_line = reader.line_num
            while True:
                try:
                    cells = next(reader)
                except StopIteration:
                    break
                except _BadLine as e:
                    self._problem(f"line {e.line}", None, str(e), file=file)
                    return
                except csv.Error as e:
                    msg = str(e)
                    if "unexpected end of data" in msg:
                        msg = (f"a quoted cell opened on line {prev_line + 1} is never closed (a missing \" "
                               "swallows every row below it)")
                    self._problem(f"line {prev_line + 1}", None, f"malformed CSV: {msg}", file=file)
                    return
                line = prev_line + 1
                span = reader.line_num - prev_line
                prev_line = reader.line_num
                if not cells or all(not c.strip() for c in cells):
                    continue
                n += 1
                where = f"row {n} (line {line})" if span == 1 else f"row {n} (lines {line}–{line + span - 1})"
                if len(cells) != len(header):
                    self._problem(where, None, f"has {len(cells)} cells, the header has {len(header)}", file=file)
                    continue
                values = {h: c for h, c in zip(header, cells) if c and not c.isspace() and h not in ignored}
                if PARAMS_COLUMN in values and not self._expand_params(values, where, file):
                    continue
                yield _Row(where, file, values)

    def _expand_params(self, values: dict[str, Any], where: str, file: str) -> bool:
        """The ``params`` column of an exported results CSV: a JSON object of request fields."""
        try:
            params = json.loads(values.pop(PARAMS_COLUMN))
        except ValueError as e:
            self._problem(where, PARAMS_COLUMN, f"is not JSON ({e})", file=file)
            return False
        if not isinstance(params, dict):
            self._problem(where, PARAMS_COLUMN, "must be a JSON object of request fields", file=file)
            return False
        for k, v in params.items():
            if k in values:
                self._problem(where, k, f"is set both by its own column and by `{PARAMS_COLUMN}`", file=file)
                return False
            if v is not None:
                values[k] = v
        return True

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
            raise ManifestError(self.problems, truncated=self.truncated)

    def inputs_sha256(self) -> str:
        """What an expansion depends on, local media files aside (a manifest naming any is never
        reused, see runner.prepare): the manifest's bytes, its rows CSV's bytes, the model
        catalog and the code that expands them. Equal digests → equal jobs, so a validated
        expansion can be reused."""
        h = hashlib.sha256(_expander_sha256().encode())
        h.update(repr(sorted((k, repr(v)) for k, v in self.catalog.models.items())).encode())
        for p in dict.fromkeys(x for x in (self.path, self._rows_csv) if x is not None):
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
    def _make_job(self, row: _Row, combo: dict[str, Any], seq: int) -> tuple[Job, bool] | None:
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

    def _model(self, raw: dict[str, Any], row: _Row) -> str | None:
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
        if model in self._broken_models or self._broken_catalog:
            return None  # its entry's problems are reported; one cause, one line
        hint = difflib.get_close_matches(model, sorted(self.catalog.models), n=1, cutoff=0.6)
        self._problem(row.where, "model", f"unknown model {model!r}" + (f"; did you mean '{hint[0]}'?" if hint else "")
                      + " (`batchgen models` lists the catalog; add an entry with --models FILE or `models:`, "
                      "or list it under `unvalidated_models:` to send its fields unchecked)", file=row.file)
        return None

    def _used_vars(self, raw: dict[str, Any], row: _Row) -> set[str]:
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

    def _request_fields(self, raw: dict[str, Any], row: _Row, model: str, spec: specs.ModelSpec | None,
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

    def _not_a_field(self, k: str, raw: dict[str, Any], row: _Row, model: str, used: set[str]) -> bool:
        """``k`` is not a request field of ``model``: fine as a template variable or a default
        meant for other models; a problem (returns True) when a row or the matrix asks for it
        or it looks like a typo of a request field."""
        if k in self.matrix and k not in used:
            self._problem(f"line {self._matrix_line}", k, f"matrix field '{k}' is not a request field of {model} "
                          "and no template uses it: every combination would make the same request", file=str(self.path))
            return True
        if k in self.per_model.get(model, {}) and k not in used and k not in row.values:
            # Set for this model alone: never a default meant for another model.
            line = self._per_model_lines.get(model, {}).get(k, 0)
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

    def _rendered(self, raw: dict[str, Any], k: str, row: _Row) -> Any:
        """``raw[k]`` with its templates rendered (None when unset, ``_FAILED`` after a problem)."""
        v = raw.get(k)
        if not _has_template(v):
            return v
        try:
            return _render_value(v, raw, {k})
        except TemplateError as e:
            self._problem(row.where, k, str(e), file=row.file)
            return _FAILED

    def _output_name(self, raw: dict[str, Any], row: _Row, combo: dict[str, Any], request: dict[str, Any],
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
            raise TemplateError(f"local input {v!r} must be an image or video ({', '.join(sorted(LOCAL_INPUT_SUFFIXES))})")
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


def _line_of_byte(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            return f"line {f.read(offset).count(NEWLINE) + 1}"
    except OSError:
        return "file"


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
