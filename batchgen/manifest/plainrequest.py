"""The request of a plain row (see plainrows.py), made by a ``RequestMaker`` built once per row
shape: what ``specs.Catalog.normalise`` does to such a row, less what depends on the shape only.

The fields a shape does not send are the same in every row of it (their defaults, worked out
once), and so are the fields every row of it takes from ``defaults``; only the row's own cells
are coerced and checked, each distinct cell once (a million rows repeat a handful of durations,
ratios and resolutions), each reference image once (its lists rarely repeat whole). The maker only
ever accepts: a row with anything to say about it (a refused value, a field left to its
default by an empty list, a broken rule, a rule's warning, an ``@ImageN`` naming no item) gets
None, and the caller asks the general path (``CatalogCheck.request``), whose problems and
warnings are the only ones ever reported. A request the maker does make is the one
``normalise`` makes, key for key and in the same order: ``tests/test_manifest_plainrows.py``
expands every manifest both ways."""

from __future__ import annotations

import operator
import re
import sys
from collections.abc import Mapping
from typing import Any

from .. import modelspec, specs

MAX_CELLS = 4096  # distinct cells remembered per field; past this, each is checked as it comes
MAX_CELL_CHARS = 1024  # a longer cell is checked, never remembered
# Values a remembered verdict may hand out to every row that repeats a cell: immutable ones
# (a list never is: each row gets its own).
_SHAREABLE = frozenset({str, int, float, bool})


MAX_ITEMS = 64  # a longer list's references are read by the general path


class _BadRefs(dict[tuple[str, int], "re.Pattern[str]"]):
    """(marker, n) → the pattern of a reference a list of n items cannot answer: the marker
    followed by digits that are not exactly one of "1".."n" ("@Image3" of two images, "@Image01",
    "@Image12" of one). One search a prompt finds it; no match: every ``marker<digits>`` in it
    names an item, which ``Catalog.normalise`` checks of the references it finds (a subset: it
    reads them one after another, this one at every marker)."""

    def __missing__(self, key: tuple[str, int]) -> re.Pattern[str]:
        marker, n = key
        named = "|".join(str(i) for i in range(1, n + 1))
        self[key] = pattern = re.compile(re.escape(marker) + (rf"(?!(?:{named})(?!\d))\d" if n else r"\d"))
        return pattern


_BAD_REFS = _BadRefs()


class _Field:
    """One field a shape sends: its spec and the cells already found good (``known``: cell →
    value, for the fields whose cells repeat; ``good``: the URLs of a list field already found
    plainly good)."""

    __slots__ = ("name", "spec", "urls", "known", "remember", "good", "limit", "fewest", "most")

    def __init__(self, name: str, spec: modelspec.FieldSpec) -> None:
        self.name = name
        self.spec = spec
        self.urls = spec.kind == "urls"
        self.known: dict[str, Any] = {}
        # Free text (a prompt) differs in every row, and so does a list of URLs as a whole (its
        # items repeat: ``good``): remembering either would only cost.
        self.remember = not (spec.kind == "str" and not spec.choices or self.urls)
        self.good: set[str] = set()
        # quick_value's bounds, read without its call: text length, the number of items.
        self.limit = spec.max_len if spec.max_len is not None else sys.maxsize
        self.fewest = spec.min if spec.min is not None else 0
        self.most = spec.max if spec.max is not None else sys.maxsize

    def value(self, raw: Any) -> Any:
        """The value sent for a cell, or None when the general path has something to say
        about it."""
        if raw == "" or raw == []:
            return None  # left to the default or refused as required: the general path says which
        value = modelspec.quick_value(self.spec, raw, self.good) if type(raw) is str else None
        if value is None:
            value = modelspec.coerce(self.spec, raw)
            if value is None or modelspec.check_value(self.spec, value) is not None:
                return None
        if self.remember and type(raw) is str and len(raw) <= MAX_CELL_CHARS and len(self.known) < MAX_CELLS \
                and type(value) in _SHAREABLE:
            self.known[raw] = value
        return value


class RequestMaker:
    """The requests of one plain shape: ``model`` (a catalog model, ``spec`` its entry) sent
    the fields ``send``, every one of them a field of ``spec``; ``fixed``: those of them that
    every row of the shape takes from ``defaults`` (the row sets none of them), with their values."""

    def __init__(self, model: str, spec: modelspec.ModelSpec, send: tuple[str, ...],
                 fixed: Mapping[str, Any] | None = None) -> None:
        self.spec = spec
        fixed = fixed or {}
        # The request's keys in normalise's order (the model, then the entry's fields): the
        # fields sent hold a placeholder, the others their default, checked once here, and so
        # is a field every row takes from ``defaults`` (a list aside: each row gets its own).
        self.template: dict[str, Any] = {"model": model}
        fields: list[_Field] = []
        self.hopeless = False  # every row has something to say: a field this shape never sends
        # is required, a default is refused (the entry's or the manifest's)
        for name, fs in spec.fields.items():
            if name in send:
                self.template[name] = None
                f = _Field(name, fs)
                value = f.value(fixed[name]) if name in fixed else None
                if name in fixed and value is None:
                    self.hopeless = True
                elif type(value) in _SHAREABLE:
                    self.template[name] = value
                else:
                    fields.append(f)
            elif fs.required or fs.default is not None and modelspec.check_value(fs, fs.default) is not None:
                self.hopeless = True
            elif fs.default is not None:
                self.template[name] = fs.default
        # The fields whose cells repeat (numbers, choices: not free text, not URL lists) are
        # looked up together: their cells, read by one C call, → the values they send
        # (``_Settled``), one lookup a row however many such columns a row has.
        settled = [f for f in fields if f.remember]
        self.settled = _Settled(settled) if settled else None
        # The hot loop of a large manifest: free text and URL lists, checked inline.
        self.texts = [f for f in fields if not f.remember and not f.urls]
        self.lists = [f for f in fields if f.urls]
        self.refs = [(marker, list_field) for marker, list_field in spec.refs]

    def request(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The normalised request of a row sending ``params`` (any mapping holding the fields
        sent, read only), or None: ask the general path."""
        if self.hopeless:
            return None
        out = self.template.copy()
        if self.settled is not None:
            part = self.settled.values(params)
            if part is None:
                return None
            out.update(part)  # keys already in out: the order stays normalise's
        for f in self.texts:  # quick_value's verdict on free text, without its call
            raw = params[f.name]
            if type(raw) is not str or not raw or len(raw) > f.limit or f.spec.required and raw.isspace():
                raw = f.value(raw)
                if raw is None:
                    return None
            out[f.name] = raw
        for f in self.lists:  # a list of URLs each already found good: no pattern, no call
            raw = params[f.name]
            value = None
            if type(raw) is str:
                value = raw.split("|")
                if not (f.good.issuperset(value) and f.fewest <= len(value) <= f.most):
                    value = None
            if value is None:
                value = f.value(raw)
                if value is None:
                    return None
            out[f.name] = value
        for rule in self.spec.rules:
            if specs.broken_rule(rule, out):
                return None  # an error or a warning: the general path words it
        for marker, list_field in self.refs:
            text = out.get("prompt")
            if type(text) is not str:
                text = str(text or "")
            if marker in text:
                n = len(out.get(list_field) or [])
                if n > MAX_ITEMS or _BAD_REFS[marker, n].search(text) is not None:
                    return None  # out of range, or written "01": the general path reads it
        return out


class _Settled:
    """The values of the repeating fields of a shape, by their cells together: (cell, cell, …)
    → {field: value}, each combination worked out once by the fields' own ``value`` (only
    combinations of text cells are remembered, up to ``MAX_CELLS``)."""

    def __init__(self, fields: list[_Field]) -> None:
        self.fields = fields
        names = [f.name for f in fields]
        # itemgetter of one name gives the cell itself, of several a tuple: a key either way.
        self.cells = operator.itemgetter(*names)
        self.single = len(names) == 1
        self.known: dict[Any, dict[str, Any]] = {}

    def values(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """{field: value} of the row's repeating cells (shared: never to be changed), or None
        when the general path has something to say about one of them."""
        cells = self.cells(params)
        try:
            part = self.known.get(cells)
        except TypeError:  # a YAML list or mapping in such a field: not a key
            part = None
        if part is not None:
            return part
        row = (cells,) if self.single else cells
        part = {}
        for f, raw in zip(self.fields, row):
            value = f.known.get(raw) if type(raw) is str else None
            if value is None:
                value = f.value(raw)
                if value is None:
                    return None
            part[f.name] = value
        # Remembered only when every cell is text (a YAML 1 and True are equal keys, not equal
        # cells) and every value may be shared (a list never is: each row gets its own).
        if len(self.known) < MAX_CELLS and all(type(c) is str and len(c) <= MAX_CELL_CHARS for c in row) \
                and all(type(v) in _SHAREABLE for v in part.values()):
            self.known[cells] = part
        return part
