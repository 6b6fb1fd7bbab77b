"""Reading a manifest file into a ``Document``: a CSV manifest is only its rows (read later, as
a stream, by ``csvreader``); a YAML one is parsed by ``yamlsafe`` and its top-level keys
checked here, including ``models:`` (which extends the catalog the jobs are validated against)
and ``per_model:``. Every problem is placed by line; a file that cannot be read at all stops
here (``ManifestError``), anything else is reported together with what expansion finds."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection
from pathlib import Path

from .. import datafiles, specs, yamlsafe
from ..errors import DataFileError, UsageError
from ..limits import limit_problem
from .document import Document
from .problems import Problems

MAX_YAML_BYTES = 10 * 1024 * 1024
TOP_LEVEL = frozenset({"defaults", "jobs", "matrix", "rows", "output", "unvalidated_models", "deliver", "models",
                       "per_model", "limits", "finish_by"})
NEWLINE = b"\n"


def read_document(path: Path, catalog: specs.Catalog, problems: Problems) -> Document:
    """The manifest at ``path`` (validated against ``catalog`` and what its ``models:`` adds)."""
    return _YamlReader(Document(path, catalog), problems).read()


class _YamlReader:
    def __init__(self, doc: Document, problems: Problems) -> None:
        self.doc = doc
        self.path = doc.path
        self.problems = problems

    def read(self) -> Document:
        p = self.path
        try:
            size = p.stat().st_size
            if not p.is_file():
                raise IsADirectoryError(21, "is not a file")
        except OSError as e:
            self.problems.add("file", None, f"cannot read: {e.strerror}")
            self.problems.fail()
        if p.suffix.lower() == ".csv":
            self.doc.rows_csv = p
            return self.doc
        if size > MAX_YAML_BYTES:
            self.problems.add("file", None, f"is {size} bytes; YAML manifests are limited to {MAX_YAML_BYTES} "
                              "(put rows in a CSV: `rows: file.csv`)")
            self.problems.fail()
        try:
            text = p.read_bytes().decode("utf-8-sig")
        except OSError as e:
            self.problems.add("file", None, f"cannot read: {e.strerror}")
            self.problems.fail()
        except UnicodeDecodeError as e:
            self.problems.add(_line_of_byte(p, e.start), None, f"is not UTF-8 text (byte 0x{e.object[e.start]:02x})")
            self.problems.fail()
        doc, found = yamlsafe.load(text)
        for yp in found:
            where = f"line {yp.line}" + (f", column {yp.column}" if yp.column else "")
            self.problems.add(where, yp.field, yp.message)
        if doc is None and not found:
            self.problems.add("file", None, "the manifest is empty (it needs `jobs:` and/or `rows:`)")
        elif doc is not None and not isinstance(doc, yamlsafe.Mapping):
            self.problems.add("line 1", None, "a YAML manifest must be a mapping with `jobs:` and/or `rows:`")
        elif doc is not None:
            self._read_top_level(doc)
        if (doc is None or not isinstance(doc, yamlsafe.Mapping)
                or (self.problems.problems and not self.doc.has_rows())):
            self.problems.fail()
        # Otherwise the problems so far (a duplicate key, a key that is not text) are reported
        # with everything expansion finds: one pass shows all of them.
        return self.doc

    def _read_top_level(self, doc: yamlsafe.Mapping) -> None:
        def line(key: str) -> str:
            return f"line {doc.key_lines.get(key, 1)}"

        add = self.problems.add
        for k in doc:
            if k not in TOP_LEVEL:
                hint = difflib.get_close_matches(k, sorted(TOP_LEVEL), n=1, cutoff=0.7)
                add(line(k), k, "unknown top-level key" + (f"; did you mean '{hint[0]}'?" if hint else "")
                    + f" (allowed: {', '.join(sorted(TOP_LEVEL))})")
        d = doc.get("defaults") or {}
        if not isinstance(d, dict):
            add(line("defaults"), "defaults", "must be a mapping of field: value")
        else:
            self.doc.defaults = {k: v for k, v in d.items() if v is not None}
            self.doc.defaults_lines = getattr(d, "key_lines", {})
        m = doc.get("matrix") or {}
        if not isinstance(m, dict) or not all(isinstance(v, list) and v for v in m.values()):
            add(line("matrix"), "matrix", "must map field names to non-empty lists")
        else:
            self.doc.matrix = m
            self.doc.matrix_line = doc.key_lines.get("matrix", 1)
        out = doc.get("output")
        if out is not None and not isinstance(out, str):
            add(line("output"), "output", "must be a string template")
        self.doc.output_template = out if isinstance(out, str) else None
        models = doc.get("unvalidated_models") or []
        if not isinstance(models, list) or not all(isinstance(x, str) and x.strip() for x in models):
            add(line("unvalidated_models"), "unvalidated_models", "must be a list of model names")
        else:
            self.doc.unvalidated_models = frozenset(x.strip() for x in models)
        self._read_models(doc, line)
        self._read_limits(doc, line)
        self._read_finish_by(doc, line)
        dest = doc.get("deliver")
        if isinstance(dest, dict):  # deliver: {to: s3://…, only: approved}
            only, unknown = dest.get("only"), sorted(str(k) for k in dest if k not in ("to", "only"))
            if unknown:
                add(line("deliver"), "deliver", f"unknown key(s) {', '.join(unknown)}: `to` (the URL) and `only`")
            if only is not None and only != "approved":
                add(line("deliver"), "deliver", f"only: {only!r}: the one choice is `approved` (clips a reviewer "
                                                "approved, and picks)")
            elif only is not None:
                self.doc.deliver_only = "approved"
            dest = dest.get("to")
            if dest is None:
                add(line("deliver"), "deliver", "`to:` the s3://bucket/prefix/ URL is missing")
        if dest is not None and not (isinstance(dest, str) and dest.strip().startswith("s3://")):
            add(line("deliver"), "deliver", "must be an s3://bucket/prefix/ URL (quoted), or {to: URL, only: approved}")
        elif dest is not None:
            from ..deliver import Destination

            try:  # the parser `run` uses: `plan` refuses the same destinations
                Destination.parse(dest, what="")
            except UsageError as e:
                add(line("deliver"), "deliver", str(e))
            else:
                self.doc.deliver = dest.strip()
        jobs = doc.get("jobs")
        if jobs is None:
            jobs = []
        if not isinstance(jobs, list):
            add(line("jobs"), "jobs", "must be a list of rows")
            jobs = []
        item_lines = getattr(jobs, "item_lines", [])
        for i, row in enumerate(jobs):
            ln = item_lines[i] if i < len(item_lines) else 0
            if not isinstance(row, dict):
                add(f"jobs[{i}] (line {ln})", None, "each job must be a mapping of field: value")
                continue
            self.doc.jobs_yaml.append((ln, row))
        rows = doc.get("rows")
        if rows is not None:
            if not isinstance(rows, str):
                add(line("rows"), "rows", "must be a CSV file name")
            else:
                rp = self.path.parent / rows
                if not rp.is_file():
                    add(line("rows"), "rows", f"CSV file not found: {rp}")
                else:
                    self.doc.rows_csv = rp

    def _read_limits(self, doc: yamlsafe.Mapping, line: Callable[[str], str]) -> None:
        """``limits:`` (model → tasks in flight at most; ``run --limit`` overrides one)."""
        limits = doc.get("limits")
        if limits is None:
            return
        if not isinstance(limits, dict):
            self.problems.add(line("limits"), "limits", "must map model names to a number of tasks in flight")
            return
        where = f"line {doc.key_lines.get('limits', 1)}"
        lines = getattr(limits, "key_lines", {})
        for model, value in limits.items():
            # A misspelt model would cap nothing, silently: the night runs unlimited.
            unknown = unknown_model(model, self.doc.catalog, self.doc.unvalidated_models)
            if unknown:
                self.problems.add(f"line {lines[model]}" if model in lines else where, "limits", unknown)
            elif (problem := limit_problem(value)) is not None:
                self.problems.add(where, "limits", f"{model}: {problem}")
            else:
                self.doc.limits[str(model)] = value

    def _read_finish_by(self, doc: yamlsafe.Mapping, line: Callable[[str], str]) -> None:
        """``finish_by:`` the night's deadline, as ``run --finish-by`` takes it (which overrides
        it): checked here, read as a moment when the run starts (the next 07:00 of that night)."""
        value = doc.get("finish_by")
        if value is None:
            return
        if not isinstance(value, str):  # unquoted, YAML reads 7:30 as a number (sexagesimal), a date-time as a timestamp
            self.problems.add(line("finish_by"), "finish_by",
                              "must be a quoted time such as \"07:00\" or an ISO date-time")
            return
        from ..deadline import parse

        try:
            parse(value)
        except ValueError as e:
            self.problems.add(line("finish_by"), "finish_by", str(e))
            return
        self.doc.finish_by = value.strip()

    def _read_models(self, doc: yamlsafe.Mapping, line: Callable[[str], str]) -> None:
        """``models:`` (a catalog file next to the manifest, or inline entries) and
        ``per_model:`` (model → fields applied to that model's jobs only)."""
        add = self.problems.add
        models = doc.get("models")
        if isinstance(models, str):
            # Not resolved: a symlink loop is the reader's clear error, not Path.resolve's RuntimeError.
            path = self.path.parent / models
            try:
                self.doc.catalog = self.doc.catalog.extended(datafiles.read_models(path), str(path))
            except DataFileError as e:  # every problem of that file, each naming it with its line
                for p in e.problems:
                    add(p.where, p.field, p.message, file=p.file)
                self.doc.broken_catalog = True
        elif isinstance(models, dict):
            # Inline entries: checked on the manifest's own document, so problems carry its lines.
            entries, problems = datafiles.check_models(models, str(self.path))
            for p in problems:
                add(p.where, p.field, p.message)
            self.doc.broken_models = datafiles.refused_names(models, entries)
            if entries:
                self.doc.catalog = self.doc.catalog.extended(entries, f"{self.path} (models:)")
        elif models is not None:
            add(line("models"), "models", "must be a models file name or a mapping of model entries")
        per = doc.get("per_model")
        if per is None:
            return
        if not isinstance(per, dict) or not all(isinstance(v, dict) for v in per.values()):
            add(line("per_model"), "per_model", "must map model names to {field: value} mappings")
            return
        catalog = self.doc.catalog
        for model, values in per.items():
            if self.doc.is_broken(model):
                continue  # its entry's problems are reported
            unknown = unknown_model(model, catalog, doc.get("unvalidated_models") or [])
            if unknown:
                add(line("per_model"), "per_model", unknown)
                continue
            self.doc.per_model[str(model)] = {k: v for k, v in values.items() if v is not None}
            self.doc.per_model_lines[str(model)] = getattr(values, "key_lines", {})


def unknown_model(model: object, catalog: specs.Catalog, unvalidated: Collection[object]) -> str | None:
    """Why ``model`` (a key of ``per_model:`` or ``limits:``, or a ``run --limit``) names no model
    the manifest knows (the catalog, or listed under ``unvalidated_models``), or None."""
    if model in catalog.models or model in unvalidated:
        return None
    hint = difflib.get_close_matches(str(model), sorted(catalog.models), n=1, cutoff=0.6)
    return f"unknown model {model!r}" + (f"; did you mean '{hint[0]}'?" if hint else "")


def _line_of_byte(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            return f"line {f.read(offset).count(NEWLINE) + 1}"
    except OSError:
        return "file"
