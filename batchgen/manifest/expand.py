"""Expansion: the rows of a ``Document`` × its matrix → jobs, streamed in manifest order.
``JobBuilder`` makes the job of one row × one matrix combination (precedence, templates,
takes, local inputs, output names, checked by ``CatalogCheck``); ``Expander`` runs the stream
and finds what only the whole stream shows (identical requests, clashing output names),
remembering keys and names only, never jobs. Precedence: defaults < per_model < row < matrix;
a field set by both a row and the matrix is an error."""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import names
from ..errors import ManifestError
from ..jobs import Job, canonical_json, key_from_json, short_key
from ..names import TemplateError
from . import plainrows
from .csvreader import csv_rows
from .document import Document, Row
from .keys import job_identity
from .localfiles import LocalInputs
from .plainrows import PlainRows, Shape
from .problems import Problems
from .seen import Seen, fingerprint_of_key, fingerprint_of_text
from .templates import FAILED, Templates
from .validate import CatalogCheck


def rows(doc: Document, problems: Problems) -> Iterator[Row]:
    """The rows of ``doc``: its ``jobs:`` in order, then its CSV's, streamed."""
    for i, (line, row) in enumerate(doc.jobs_yaml):
        yield Row(f"jobs[{i}] (line {line})", str(doc.path), {k: v for k, v in row.items() if v is not None})
    if doc.rows_csv is not None:
        yield from csv_rows(doc.rows_csv, problems)


def combos(matrix: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the matrix's values (one empty combination without a matrix)."""
    if not matrix:
        return [{}]
    keys = list(matrix)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(matrix[k] for k in keys))]


class Expander:
    """Streams the valid jobs of ``doc``; ``expanded`` counts those of the last expansion."""

    def __init__(self, doc: Document, problems: Problems, inputs: LocalInputs) -> None:
        self.doc = doc
        self.problems = problems
        self.builder = JobBuilder(doc, problems, inputs)
        self.expanded = 0

    def expand(self) -> Iterator[Job]:
        """Yield every valid job in manifest order. Invalid rows are recorded in ``problems``
        (and skipped); duplicate keys and output names are detected across the whole stream."""
        # Fingerprints and row ordinals only (see seen.py): a problem names the first row by a
        # placeholder, filled in once the stream has ended (``_name_first_rows``).
        keys, outputs = Seen(), Seen()
        every = combos(self.doc.matrix)
        seq = 0
        self.expanded = 0
        firsts: set[int] = set()
        for ordinal, row in enumerate(rows(self.doc, self.problems)):
            for combo in every:
                seq += 1
                made = self.builder.make_job(row, combo, seq)
                if made is None:
                    continue
                job, reduced = made
                first = keys.add(fingerprint_of_key(job.key), ordinal)
                if first is not None:
                    firsts.add(first[0])
                    self.problems.add(row.where, None, f"is the identical request as {_placeholder(first[0])} "
                                      f"(same job key {short_key(job.key)}); give each a distinct `take:` to render "
                                      "it more than once", file=row.file)
                    continue
                prev = outputs.add(fingerprint_of_text(job.output), ordinal, reduced)
                if prev is not None:
                    firsts.add(prev[0])
                    why = (" (values in file names are reduced to letters, digits, '.', '_' and '-' and cut to "
                           f"{names.VALUE_CHARS} characters, which made them equal)") if reduced or prev[1] else ""
                    self.problems.add(row.where, "output", f"file name {job.output!r} is also used by "
                                      f"{_placeholder(prev[0])}{why}; make the `output` template unique", file=row.file)
                    continue
                self.expanded += 1
                yield job
        if firsts:
            self._name_first_rows(firsts)

    def _name_first_rows(self, firsts: set[int]) -> None:
        """Replace each problem's placeholder with where its first row is: the rows are read
        again (only when the manifest repeats itself, which is an error anyway)."""
        where: dict[int, str] = {}
        try:
            for ordinal, row in enumerate(rows(self.doc, Problems(self.problems.file))):
                if ordinal in firsts:
                    where[ordinal] = row.where
                    if len(where) == len(firsts):
                        break
        except ManifestError:  # the file changed under us: its rows are named by number
            pass
        for i, p in enumerate(self.problems.problems):
            if p.message.startswith(_REWRITTEN) and _MARK in p.message:
                self.problems.problems[i] = dataclasses.replace(p, message=_PLACEHOLDER.sub(
                    lambda m: where.get(int(m[1]), f"row #{int(m[1]) + 1}"), p.message))


MAX_PRIORITY = 1_000_000  # stored in a 32-bit column; a bigger number is a typo, not a plan
_WHOLE = re.compile(r"[+-]?[0-9]{1,7}")

# A first row's place in a message until the stream has ended: its ordinal between two
# private-use characters; only the two messages that use it are rewritten.
_MARK = "\ue000"
_PLACEHOLDER = re.compile("\ue000(\\d+)\ue000")
_REWRITTEN = ("is the identical request as ", "file name ")


def _placeholder(ordinal: int) -> str:
    return f"{_MARK}{ordinal}{_MARK}"


class JobBuilder:
    """The job of one row × one matrix combination."""

    def __init__(self, doc: Document, problems: Problems, inputs: LocalInputs) -> None:
        self.doc = doc
        self.problems = problems
        self.inputs = inputs
        self.templates = Templates(problems, doc.output_template)
        self.check = CatalogCheck(doc, problems, self.templates)
        self.plain = PlainRows(doc)  # tests turn ``plain.enabled`` off to compare both paths
        self._path = str(doc.path)
        self._file_names: dict[str, str] = {}  # a rows file → its name, as a job's source says it
        self._bases: dict[str, Path] = {}  # a rows file → its folder, where its local inputs are

    def make_job(self, row: Row, combo: dict[str, Any], seq: int) -> tuple[Job, bool] | None:
        """The job and whether its output name was reduced, or None (its problems recorded)."""
        if self.plain.enabled:
            shape = self.plain.shape(row.values, combo)
            if shape is not None:
                return self._plain_job(row, combo, shape, seq)
        doc = self.doc
        clash = [k for k in row.values if k in combo]
        for k in clash:
            self.problems.add(row.where, k, "is set both by the row and by the matrix", file=row.file)
        if clash:
            return None
        raw: dict[str, Any] = {**doc.defaults, **row.values, **combo}
        model = self.check.model(raw, row)
        if model is None:
            return None
        if model in doc.per_model:  # model-specific fields: above `defaults`, below rows and the matrix
            raw = {**doc.defaults, **doc.per_model[model], **row.values, **combo}
        spec = self.check.spec(model)
        used = self.templates.used_vars(raw, row)
        params = self.check.request_fields(raw, row, model, spec, used)
        if params is None:
            return None
        if not self._localise(params, row):
            return None
        request = self.check.request(model, spec, params, row)
        if request is None:
            return None
        take = self.templates.rendered(raw, "take", row)
        take = None if take is None else str(take)
        priority = self._priority(self.templates.rendered(raw, "priority", row), row)
        if priority is None:
            return None
        key, request_json = job_identity(request, take)
        name = self.templates.rendered(raw, "name", row)
        name = str(name) if name is not None else f"job{seq:05d}"
        made = self._output_name(raw, row, combo, request, name, key, seq)
        if made is None:
            return None
        output, reduced = made
        return Job(key, seq, name, self._source(row), model, request, output, take, request_json, priority), reduced

    def _plain_job(self, row: Row, combo: dict[str, Any], shape: Shape, seq: int) -> tuple[Job, bool] | None:
        """``make_job`` of a plain row (see plainrows.py) crossed with ``combo``: the same
        steps, less what its shape already decided (no template to render, no field to
        question, the fields to send, what the request keeps of the catalog entry)."""
        defaults = self.doc.defaults
        # Read, never changed (the row and the combination set no field both: the shape says so).
        raw = {**defaults, **row.values, **combo} if defaults or combo else row.values
        # The maker reads the fields sent straight from ``raw``; a dict of them alone is made
        # only for local files to become uploads, or for the general path's words.
        source: dict[str, Any] = raw
        web = shape.web
        # The seed's model's row: a cell of plain web URLs has nothing to localise, and its
        # request comes by the maker's straight path (None: look at the cell as below).
        web_request = shape.web_request
        made = web_request(raw) if web_request is not None else None
        if made is None:
            if web is not None:  # web_only, inlined: a web URL ("a|b" too) in the one media field
                value = raw[web]
                media = type(value) is not str or not value.startswith(plainrows.WEB)
            else:
                media = bool(shape.media) and not plainrows.web_only(shape, raw)
            if media:
                source = {k: raw[k] for k in shape.send}
                if not self._localise(source, row):
                    return None
            made = shape.maker.request(source)
        if made is None:  # something to say about it: the general path's words
            params = source if source is not raw else {k: raw[k] for k in shape.send}
            request = self.check.request(shape.model, shape.spec, params, row)
            if request is None:
                return None
            request_json = canonical_json(request)
        else:
            request, request_json = made
        take = raw.get("take")
        take = None if take is None else str(take)
        priority = self._priority(raw.get("priority"), row)
        if priority is None:
            return None
        key = key_from_json(request_json, take)
        name = raw.get("name")
        name = str(name) if name is not None else f"job{seq:05d}"
        output = self.plain.output_of(name, combo)
        named = (output, False) if output is not None else self._output_name(raw, row, combo, request, name, key, seq)
        if named is None:
            return None
        return (Job(key, seq, name, self._source(row), shape.model, request, named[0], take, request_json, priority),
                named[1])

    def _priority(self, value: Any, row: Row) -> int | None:
        """A job's ``priority`` (0 when unset): a whole number, from YAML or a CSV cell's text;
        None (its problem recorded) for anything else. Never part of the key (see jobs.Job)."""
        if value is None:
            return 0
        if value is FAILED:
            return None
        if isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
            value = int(value.strip())
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_PRIORITY:
            return value
        self.problems.add(row.where, "priority", f"must be a whole number between -{MAX_PRIORITY} and {MAX_PRIORITY} "
                          f"(higher is submitted first), not {value!r}", file=row.file)
        return None

    def _localise(self, params: dict[str, Any], row: Row) -> bool:
        """Local files in the media fields of ``params`` → uploads; False (its problem recorded)
        for one that is not an acceptable file."""
        for f in self.doc.catalog.media_fields.intersection(params):
            value = params[f]
            base = self._bases.get(row.file)
            if base is None:
                base = self._bases[row.file] = Path(row.file).parent
            try:
                params[f] = self.inputs.localise(value, base)
            except TemplateError as e:
                self.problems.add(row.where, f, str(e), file=row.file)
                return False
        return True

    def _source(self, row: Row) -> str:
        """Where ``row`` came from, for humans: its place, after its file's name when that is a
        rows CSV beside the manifest."""
        if row.file == self._path:
            return row.where
        name = self._file_names.get(row.file)
        if name is None:
            name = self._file_names[row.file] = Path(row.file).name
        return f"{name} {row.where}"

    def _output_name(self, raw: dict[str, Any], row: Row, combo: dict[str, Any], request: dict[str, Any],
                     name: str, key: str, seq: int) -> tuple[str, bool] | None:
        template = self.templates.output_of(raw, row)
        matrix = self.doc.matrix
        if template is None:
            template = "{name}-{matrix}.mp4" if matrix else "{name}.mp4"
        fixed = {**request, "name": name, "key": short_key(key), "seq": seq,
                 "matrix": "-".join(str(combo[k]) for k in matrix) if combo else ""}

        def get(k: str) -> Any:
            if k in fixed:
                return fixed[k]
            value = self.templates.rendered(raw, k, row)  # a template variable: rendered only when used
            if value is FAILED:
                raise TemplateError(f"output template refers to {{{k}}}, which could not be rendered")
            return value

        try:
            return names.render_output_name(str(template), get)
        except (TemplateError, ValueError) as e:
            self.problems.add(row.where, "output", str(e), file=row.file)
            return None
