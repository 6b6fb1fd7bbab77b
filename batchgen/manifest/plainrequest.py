"""The request of a plain row (see plainrows.py), made by a ``RequestMaker`` built once per row
shape: what ``specs.Catalog.normalise`` does to such a row, less what depends on the shape only.

The fields a shape does not send are the same in every row of it (their defaults, worked out
once), so only the row's own cells are coerced and checked, each distinct cell once (a million
rows repeat a handful of durations, resolutions and reference-image lists). The maker only
ever accepts: a row with anything to say about it (a refused value, a field left to its
default by an empty list, a broken rule, a rule's warning, an ``@ImageN`` naming no item) gets
None, and the caller asks the general path (``CatalogCheck.request``), whose problems and
warnings are the only ones ever reported. A request the maker does make is the one
``normalise`` makes, key for key and in the same order: ``tests/test_manifest_plainrows.py``
expands every manifest both ways."""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

from .. import modelspec, specs

MAX_CELLS = 4096  # distinct cells remembered per field; past this, each is checked as it comes
MAX_CELL_CHARS = 1024  # a longer cell is checked, never remembered
# Values a remembered verdict may hand out to every row that repeats a cell: immutable ones
# (a list of URLs is kept as a tuple and each row gets its own list).
_SHAREABLE = frozenset({str, int, float, bool})


MAX_ITEMS = 64  # a longer list's references are read by the general path


class _Items(dict[int, frozenset[str]]):
    """n → the numbers "1".."n" a marker (``@Image1``) may name in a list of n items."""

    def __missing__(self, n: int) -> frozenset[str]:
        self[n] = names = frozenset(str(i) for i in range(1, n + 1))
        return names


_ITEMS = _Items()


class _Field:
    """One field a shape sends: its spec and the cells already found good (``known``: cell →
    value; a list of URLs is kept as a tuple, each row gets its own list)."""

    __slots__ = ("name", "spec", "urls", "known", "remember", "good")

    def __init__(self, name: str, spec: modelspec.FieldSpec) -> None:
        self.name = name
        self.spec = spec
        self.urls = spec.kind == "urls"
        self.known: dict[str, Any] = {}
        # Free text (a prompt) differs in every row: remembering it would only cost.
        self.remember = not (spec.kind == "str" and not spec.choices)
        # URLs found plainly good: a list of them needs no pattern (cells rarely repeat whole,
        # their images often do).
        self.good: set[str] = set()

    def urls_of(self, raw: Any) -> list[str] | None:
        """A list-of-URLs cell each of whose items is already known good (``good``) and whose
        count the entry allows: ``quick_value``'s verdict without its call; None: ask ``value``."""
        if type(raw) is not str:
            return None
        items = raw.split("|")
        spec = self.spec
        if not self.good.issuperset(items) or spec.min is not None and len(items) < spec.min \
                or spec.max is not None and len(items) > spec.max:
            return None
        return items

    def value(self, raw: Any) -> Any:
        """The value sent for a cell not in ``known``, or None when the general path has
        something to say about it."""
        if raw == "" or raw == []:
            return None  # left to the default or refused as required: the general path says which
        value = modelspec.quick_value(self.spec, raw, self.good) if type(raw) is str else None
        if value is None:
            value = modelspec.coerce(self.spec, raw)
            if value is None or modelspec.check_value(self.spec, value) is not None:
                return None
        if self.remember and type(raw) is str and len(raw) <= MAX_CELL_CHARS and len(self.known) < MAX_CELLS:
            if self.urls and type(value) is list and all(type(u) is str for u in value):
                self.known[raw] = tuple(value)
            elif type(value) in _SHAREABLE:
                self.known[raw] = value
        return value


class RequestMaker:
    """The requests of one plain shape: ``model`` (a catalog model, ``spec`` its entry) sent
    the fields ``send``, every one of them a field of ``spec``."""

    def __init__(self, model: str, spec: modelspec.ModelSpec, send: tuple[str, ...]) -> None:
        self.spec = spec
        # The request's keys in normalise's order (the model, then the entry's fields): the
        # fields sent hold a placeholder, the others their default, checked once here.
        self.template: dict[str, Any] = {"model": model}
        self.fields: list[_Field] = []
        self.hopeless = False  # a field this shape never sends is required, or its default is refused
        for name, fs in spec.fields.items():
            if name in send:
                self.template[name] = None
                self.fields.append(_Field(name, fs))
            elif fs.required or fs.default is not None and modelspec.check_value(fs, fs.default) is not None:
                self.hopeless = True
            elif fs.default is not None:
                self.template[name] = fs.default
        # The fields whose cells repeat (numbers, choices: not free text, not URL lists) are
        # looked up together: their cells, read by one C call, → the values they send
        # (``_Settled``), one lookup a row however many such columns a row has.
        settled = [f for f in self.fields if f.remember and not f.urls]
        self.settled = _Settled(settled) if settled else None
        self.per_row = [f for f in self.fields if not (f.remember and not f.urls)]
        self.refs = [(marker, list_field, specs.ref_pattern(marker)) for marker, list_field in spec.refs]

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
        for f in self.per_row:  # the hot loop of a large manifest: free text and URL lists
            raw = params[f.name]
            value = f.known.get(raw) if type(raw) is str else None
            if value is None:
                value = f.urls_of(raw) if f.urls else None
                if value is None:
                    value = f.value(raw)
                    if value is None:
                        return None
            elif f.urls:
                value = list(value)
            out[f.name] = value
        spec = self.spec
        for rule in spec.rules:
            if specs.broken_rule(rule, out):
                return None  # an error or a warning: the general path words it
        for marker, list_field, pattern in self.refs:
            text = str(out.get("prompt") or "")
            if marker in text:
                n = len(out.get(list_field) or [])
                if n > MAX_ITEMS:
                    return None
                named = _ITEMS[n]
                for idx in pattern.findall(text):
                    if idx not in named:
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
