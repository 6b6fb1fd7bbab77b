"""Manifest loading and expansion: YAML/CSV rows → validated, keyed jobs, streamed.

A manifest is either a CSV file (one job a row, header = field names) or a YAML file::

    defaults: {model: grok-imagine-reference-to-video, resolution: 720p}
    matrix: {aspect_ratio: ["16:9", "9:16"]}      # cartesian product applied to every row
    output: "{name}-{aspect_ratio}.mp4"            # file-name template (default below)
    rows: shots.csv                                 # optional, rows from a CSV next to the YAML
    jobs:
      - {name: harbour, subject: a lighthouse, prompt: "A {subject} at dusk, @Image1", ...}

Precedence: defaults < row < matrix; a field set by both a row and the matrix is an error.
``{field}`` in any string field (and in ``output``) is replaced by that field's value. Fields
that are neither request fields nor meta fields are template variables; they are never sent.

Meta fields (not sent to the API): ``name``, ``take`` (distinguishes deliberate repeats of the
same request) and ``output``.

The job key is sha256 of the canonical JSON of the *effective* request (model + every parameter
after defaults) plus ``take``: renaming a row or reordering the manifest never resubmits, while
changing anything that changes the video does.

This module imports nothing from the scheduler, the client or the ledger.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import itertools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from . import jobs as jobs_module
from . import specs
from .errors import ManifestError, Problem
from .jobs import Job, canonical_json, key_from_json, short_key

MAX_YAML_BYTES = 10 * 1024 * 1024
MAX_LOCAL_INPUT = 50 * 1024 * 1024  # a local reference image/video to upload
# Local inputs are sent to a third party: only media files, only from the manifest's own folder
# tree, so a manifest from elsewhere cannot upload ~/.ssh/id_rsa as a "reference image".
LOCAL_INPUT_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".mp4", ".mov", ".webm"})
MAX_CSV_LINE = 1024 * 1024
MAX_YAML_DEPTH = 32
MAX_PROBLEMS = 200
META_FIELDS = frozenset({"name", "take", "output"})
TOP_LEVEL = frozenset({"defaults", "jobs", "matrix", "rows", "output"})
_TEMPLATE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*\Z")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,195}\.mp4")
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"COM{i}" for i in range(1, 10)] + [f"LPT{i}" for i in range(1, 10)]
)


@functools.lru_cache(maxsize=1)
def _expander_sha256() -> str:
    """The expansion code itself (this module, the model specs, the YAML parser's version):
    another version may expand the same manifest differently."""
    h = hashlib.sha256(yaml.__version__.encode())
    for mod in (__file__, specs.__file__, jobs_module.__file__):
        h.update(Path(mod).read_bytes())
    return h.hexdigest()


@dataclass
class _Row:
    where: str
    file: str
    values: dict[str, Any]


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors/aliases: they are how 'billion laughs' bombs are built,
    and a render manifest has no need for them (use ``defaults``/``matrix`` instead)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases (*name) are not allowed in manifests", event.start_mark
            )
        # A manifest is a few levels deep; thousands of nested brackets are an attack on the
        # parser's recursion, refused before it gets expensive.
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.constructor.ConstructorError(
                    None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class Manifest:
    """A loaded (not yet expanded) manifest. ``expand()`` streams jobs; problems accumulate in
    ``problems`` and warnings in ``warnings``. Call ``check()`` after a full expansion."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.defaults: dict[str, Any] = {}
        self.matrix: dict[str, list[Any]] = {}
        self.output_template: str | None = None
        self.problems: list[Problem] = []
        self._seen: set[str] = set()
        self.truncated = 0
        self.warnings: list[str] = []
        self._jobs_yaml: list[tuple[int, dict[str, Any]]] = []
        # Local input files named in media fields: sha256 → path (content-addressed, hashed once).
        self.local_files: dict[str, Path] = {}
        self._hashed: dict[Path, str] = {}
        self._rows_csv: Path | None = None
        self._digests: dict[Path, bytes] = {}
        self._load()

    # ---------------------------------------------------------------- loading
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

    def _warn(self, msg: str) -> None:
        if msg not in self.warnings and len(self.warnings) < MAX_PROBLEMS:
            self.warnings.append(msg)

    def _fail_now(self) -> None:
        raise ManifestError(self.problems, truncated=self.truncated)

    def _load(self) -> None:
        p = self.path
        try:
            size = p.stat().st_size
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
            text = p.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            self._problem("file", None, f"cannot read as UTF-8: {e}")
            self._fail_now()
        loader = _NoAliasLoader(text)
        try:
            node = loader.get_single_node()
            doc = loader.construct_document(node) if node is not None else None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
            where = f"line {mark.line + 1}" if mark else "file"
            self._problem(where, None, f"invalid YAML: {getattr(e, 'problem', None) or e}")
            self._fail_now()
        except RecursionError:
            self._problem("file", None, "invalid YAML: nested too deeply")
            self._fail_now()
        finally:
            loader.dispose()
        if not isinstance(doc, dict):
            self._problem("line 1", None, "a YAML manifest must be a mapping with `jobs:` and/or `rows:`")
            self._fail_now()
        lines = {k.value: v for k, v in node.value}  # key -> value node, for line numbers
        for k in doc:
            if k not in TOP_LEVEL:
                self._problem(f"line {_line(lines.get(k))}", str(k), f"unknown top-level key (allowed: {', '.join(sorted(TOP_LEVEL))})")
        d = doc.get("defaults") or {}
        if not isinstance(d, dict):
            self._problem(f"line {_line(lines.get('defaults'))}", "defaults", "must be a mapping")
        else:
            self.defaults = d
        m = doc.get("matrix") or {}
        if not isinstance(m, dict) or not all(isinstance(v, list) and v for v in m.values()):
            self._problem(f"line {_line(lines.get('matrix'))}", "matrix", "must map field names to non-empty lists")
        else:
            self.matrix = m
        out = doc.get("output")
        if out is not None and not isinstance(out, str):
            self._problem(f"line {_line(lines.get('output'))}", "output", "must be a string template")
        self.output_template = out
        jobs = doc.get("jobs") or []
        if not isinstance(jobs, list):
            self._problem(f"line {_line(lines.get('jobs'))}", "jobs", "must be a list of rows")
            jobs = []
        items = lines["jobs"].value if "jobs" in lines and isinstance(jobs, list) and jobs else []
        for i, row in enumerate(jobs):
            line = items[i].start_mark.line + 1 if i < len(items) else 0
            if not isinstance(row, dict):
                self._problem(f"jobs[{i}] (line {line})", None, "each job must be a mapping of field: value")
                continue
            self._jobs_yaml.append((line, row))
        rows = doc.get("rows")
        if rows is not None:
            if not isinstance(rows, str):
                self._problem(f"line {_line(lines.get('rows'))}", "rows", "must be a CSV file name")
            else:
                rp = (p.parent / rows)
                if not rp.is_file():
                    self._problem(f"line {_line(lines.get('rows'))}", "rows", f"CSV file not found: {rp}")
                else:
                    self._rows_csv = rp
        if not self._jobs_yaml and self._rows_csv is None and not self.problems:
            self._problem("file", "jobs", "the manifest has no jobs (`jobs:` list or `rows: file.csv`)")
        if self.problems:
            self._fail_now()

    # ---------------------------------------------------------------- rows
    def _rows(self) -> Iterator[_Row]:
        for i, (line, row) in enumerate(self._jobs_yaml):
            yield _Row(f"jobs[{i}] (line {line})", str(self.path), row)
        if self._rows_csv is not None:
            yield from self._csv_rows(self._rows_csv)

    def _csv_rows(self, path: Path) -> Iterator[_Row]:
        try:
            f = open(path, encoding="utf-8-sig", newline="")
        except OSError as e:
            self._problem("file", None, f"cannot read: {e.strerror}", file=str(path))
            return
        with f:
            lines = _bounded_lines(f, MAX_CSV_LINE)
            reader = csv.reader(lines)
            try:
                header = next(reader)
            except StopIteration:
                self._problem("line 1", None, "empty CSV (a header row of field names is required)", file=str(path))
                return
            except (csv.Error, _LineTooLong, UnicodeDecodeError) as e:
                self._problem("line 1", None, f"unreadable CSV header: {e}", file=str(path))
                return
            header = [h.strip() for h in header]
            seen: set[str] = set()
            for h in header:
                if not h or h in seen:
                    self._problem("line 1", h or None, "header names must be unique and non-empty", file=str(path))
                    return
                seen.add(h)
            n = 0
            prev_line = reader.line_num
            while True:
                try:
                    cells = next(reader)
                except StopIteration:
                    break
                except (csv.Error, UnicodeDecodeError) as e:
                    self._problem(f"line {prev_line + 1}", None, f"malformed CSV: {e}", file=str(path))
                    return
                except _LineTooLong:
                    self._problem(f"line {prev_line + 1}", None, f"line longer than {MAX_CSV_LINE} bytes", file=str(path))
                    return
                line = prev_line + 1
                prev_line = reader.line_num
                if not cells or all(not c.strip() for c in cells):
                    continue
                n += 1
                where = f"row {n} (line {line})"
                if len(cells) != len(header):
                    self._problem(where, None, f"has {len(cells)} cells, the header has {len(header)}", file=str(path))
                    continue
                values = {h: (c if c and not c.isspace() else None) for h, c in zip(header, cells)}
                yield _Row(where, str(path), values)

    # ---------------------------------------------------------------- expansion
    def expand(self) -> Iterator[Job]:
        """Yield every valid job in manifest order. Invalid rows are recorded in ``problems``
        (and skipped); duplicate keys and output names are detected across the whole stream."""
        keys: dict[str, str] = {}
        outputs: dict[str, str] = {}
        combos = _combos(self.matrix)
        seq = 0
        for row in self._rows():
            for combo in combos:
                seq += 1
                job = self._make_job(row, combo, seq)
                if job is None:
                    continue
                first = keys.get(job.key)
                if first is not None:
                    self._problem(row.where, None, f"is the identical request as {first} (same job key {short_key(job.key)}); give each a distinct `take:` to render it more than once", file=row.file)
                    continue
                keys[job.key] = row.where
                prev = outputs.get(job.output)
                if prev is not None:
                    self._problem(row.where, "output", f"file name {job.output!r} is also used by {prev}; make the `output` template unique", file=row.file)
                    continue
                outputs[job.output] = row.where
                yield job

    def check(self) -> None:
        if self.problems:
            raise ManifestError(self.problems, truncated=self.truncated)

    def inputs_sha256(self) -> str:
        """What an expansion depends on, local media files aside (a manifest naming any is never
        reused, see scheduler.prepare): the manifest's bytes, its rows CSV's bytes and the code
        that expands them. Equal digests → equal jobs, so a validated expansion can be reused."""
        h = hashlib.sha256(_expander_sha256().encode())
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

    def _make_job(self, row: _Row, combo: dict[str, Any], seq: int) -> Job | None:
        bad = False
        for k in row.values:
            if k in combo:
                self._problem(row.where, k, "is set both by the row and by the matrix", file=row.file)
                bad = True
        if bad:
            return None
        raw: dict[str, Any] = {**self.defaults, **row.values, **combo}
        resolved: dict[str, Any] = {}
        errors: list[tuple[str, str]] = []
        for k, v in raw.items():
            if not _has_template(v):
                resolved[k] = v  # the common case: nothing to render
                continue
            try:
                resolved[k] = _render_value(v, raw, {k})
            except _TemplateError as e:
                errors.append((k, str(e)))
        model = resolved.get("model")
        if not isinstance(model, str) or not model.strip():
            errors.append(("model", "is required (set it in `defaults` or per row)"))
        for f, msg in errors:
            self._problem(row.where, f, msg, file=row.file)
        if errors:
            return None
        model = model.strip()
        for f in specs.MEDIA_FIELDS.intersection(resolved):
            try:
                resolved[f] = self._localise(resolved[f], Path(row.file).parent)
            except _TemplateError as e:
                self._problem(row.where, f, str(e), file=row.file)
                return None
        spec = specs.MODELS.get(model)
        used_vars = _template_vars(raw)
        params: dict[str, Any] = {}
        for k, v in resolved.items():
            if k in META_FIELDS or k == "model":
                continue
            if spec is not None and k not in spec.fields:
                if k in specs.ALL_FIELDS:
                    if k in row.values:  # a default for another model is fine; a row asking for it is not
                        self._problem(row.where, k, f"is not a field of {model}", file=row.file)
                        bad = True
                    continue
                if k not in used_vars and k not in self.matrix:
                    hint = specs.suggest(k)
                    if hint:
                        self._problem(row.where, k, f"is not a field of {model}; did you mean '{hint}'?", file=row.file)
                        bad = True
                    else:
                        self._warn(f"{row.file}: field '{k}' is not a request field of {model} and no template uses it; it is ignored")
                continue
            if spec is None and (k in used_vars or k in self.matrix) and k not in specs.ALL_FIELDS:
                continue  # template variable, not a request field
            params[k] = v
        if spec is None:
            self._warn(f"model '{model}' is not known to batchgen: its fields are sent unvalidated")
        request, errs = specs.normalise(model, params)
        for f, msg in errs:
            self._problem(row.where, f, msg, file=row.file)
        if errs or bad:
            return None
        take = resolved.get("take")
        take = None if take is None else str(take)
        request_json = canonical_json(request)
        key = key_from_json(request_json, take)
        name = resolved.get("name")
        name = str(name) if name is not None else f"job{seq:05d}"
        template = resolved.get("output") if "output" in row.values else self.output_template
        if template is None:
            template = "{name}-{matrix}.mp4" if self.matrix else "{name}.mp4"
        ctx = {**resolved, **request, "name": name, "key": short_key(key), "seq": seq,
               "matrix": "-".join(str(combo[k]) for k in self.matrix) if combo else ""}
        try:
            output = safe_output_name(str(template), ctx)
        except (_TemplateError, ValueError) as e:
            self._problem(row.where, "output", str(e), file=row.file)
            return None
        return Job(key, seq, name, row.where if row.file == str(self.path) else f"{Path(row.file).name} {row.where}",
                   model, request, output, take, request_json)


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
        except OSError:
            raise _TemplateError(f"{v!r} is neither an http(s) URL nor a readable local file") from None
        if not path.is_file():
            raise _TemplateError(f"{v!r} is not a file")
        root = self.path.resolve().parent
        if root not in path.resolve().parents:
            raise _TemplateError(f"local input {v!r} must be inside the manifest's folder {root}")
        if path.suffix.lower() not in LOCAL_INPUT_SUFFIXES:
            raise _TemplateError(f"local input {v!r} must be an image or video ({', '.join(sorted(LOCAL_INPUT_SUFFIXES))})")
        if st.st_size > MAX_LOCAL_INPUT:
            raise _TemplateError(f"{v!r} is {st.st_size} bytes; local inputs are limited to {MAX_LOCAL_INPUT}")
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
class _TemplateError(ValueError):
    pass


class _LineTooLong(Exception):
    pass


def _line(node: Any) -> int:
    return node.start_mark.line + 1 if node is not None else 1


def _bounded_lines(f: IO[str], limit: int) -> Iterator[str]:
    while True:
        line = f.readline(limit + 1)
        if not line:
            return
        if len(line) > limit:
            raise _LineTooLong()
        yield line


def _combos(matrix: dict[str, list[Any]]) -> list[dict[str, Any]]:
    if not matrix:
        return [{}]
    keys = list(matrix)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(matrix[k] for k in keys))]


def _has_template(v: Any) -> bool:
    if isinstance(v, str):
        return "{" in v
    return isinstance(v, list) and any(isinstance(x, str) and "{" in x for x in v)


@functools.lru_cache(maxsize=4096)
def _vars_in(s: str) -> frozenset[str]:
    return frozenset(m.group(1).strip() for m in _TEMPLATE.finditer(s) if m.group(1))


def _template_vars(raw: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for v in raw.values():
        if isinstance(v, str):
            if "{" in v:
                out |= _vars_in(v)
        elif isinstance(v, list):
            for s in v:
                if isinstance(s, str) and "{" in s:
                    out |= _vars_in(s)
    return out


@functools.lru_cache(maxsize=4096)
def _parse_template(template: str) -> tuple[tuple[bool, str], ...]:
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
                raise _TemplateError(f"bad template placeholder {{{m.group(1)}}}: use {{field_name}}")
            parts.append((True, name))
        pos = m.end()
    if pos < len(template):
        parts.append((False, template[pos:]))
    return tuple(parts)


def render(template: str, lookup: Any) -> str:
    """Replace ``{name}`` by ``lookup(name)``; ``{{``/``}}`` are literal braces. Only bare
    identifiers are allowed, so a manifest cannot reach attributes the way str.format could."""
    return "".join(str(lookup(text)) if is_var else text for is_var, text in _parse_template(template))


def _render_value(v: Any, raw: dict[str, Any], stack: set[str], depth: int = 0) -> Any:
    if isinstance(v, list):
        return [_render_value(x, raw, stack, depth) for x in v]
    if not isinstance(v, str) or "{" not in v:
        return v
    if depth > 8:
        raise _TemplateError("templates nest too deeply")

    def lookup(name: str) -> Any:
        if name not in raw:
            raise _TemplateError(f"template refers to {{{name}}}, which is not a field of this row")
        if name in stack:
            raise _TemplateError(f"template refers to itself through {{{name}}}")
        val = _render_value(raw[name], raw, stack | {name}, depth + 1)
        if val is None:
            raise _TemplateError(f"template refers to {{{name}}}, which is empty")
        if isinstance(val, list):
            raise _TemplateError(f"template refers to list field {{{name}}}")
        return val

    return render(v, lookup)


def safe_output_name(template: str, ctx: dict[str, Any]) -> str:
    """Render an output file name. Substituted values are reduced to ``[A-Za-z0-9._-]`` so a
    prompt cannot smuggle ``/`` or ``..``; the template itself may use ``/`` for sub-folders, but
    every segment must be plain, so the result always stays inside the output directory."""

    def lookup(name: str) -> str:
        if name not in ctx or ctx[name] is None:
            raise _TemplateError(f"output template refers to {{{name}}}, which this job does not have")
        v = _UNSAFE.sub("_", str(ctx[name])).strip("._-")[:80] or "_"
        return v + "_" if v.split(".")[0].upper() in _WINDOWS_RESERVED else v

    name = render(template, lookup)
    if _PLAIN_NAME.fullmatch(name) and name.split(".")[0].upper() not in _WINDOWS_RESERVED:
        return name  # one plain segment ending in .mp4: the checks below would all pass
    if "\x00" in name or name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        raise ValueError(f"output name {name!r} must be a relative path")
    segments = name.split("/")
    for seg in segments:
        if seg in ("", ".", "..") or not _SEGMENT.match(seg):
            raise ValueError(f"output name {name!r}: segment {seg!r} may only use letters, digits, '.', '_', '-' and may not be '..' or start with '.'")
        if seg.split(".")[0].upper() in _WINDOWS_RESERVED:
            raise ValueError(f"output name {name!r}: {seg!r} is a reserved device name")
        if len(seg) > 200:
            raise ValueError(f"output name segment is {len(seg)} characters; the limit is 200")
    if not name.lower().endswith(".mp4"):
        raise ValueError(f"output name {name!r} must end in .mp4")
    return name

