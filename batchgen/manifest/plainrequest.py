"""The request of a plain row (see plainrows.py), made by a ``RequestMaker`` built once per row
shape: what ``specs.Catalog.normalise`` does to such a row, less what depends on the shape only.

The fields a shape does not send are the same in every row of it (their defaults, worked out
once), and so are the fields every row of it takes from ``defaults``; only the row's own cells
are coerced and checked, each distinct cell once (a million rows repeat a handful of durations,
ratios and resolutions); a cell of plain web URLs by one pattern. The maker only
ever accepts: a row with anything to say about it (a refused value, a field left to its
default by an empty list, a broken rule, a rule's warning, an ``@ImageN`` naming no item) gets
None, and the caller asks the general path (``CatalogCheck.request``), whose problems and
warnings are the only ones ever reported. A request the maker does make is the one
``normalise`` makes, key for key and in the same order: ``tests/test_manifest_plainrows.py``
expands every manifest both ways."""

from __future__ import annotations

import json
import operator
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

from .. import modelspec, specs
from ..jobs import canonical_json

MAX_CELLS = 4096  # distinct cells remembered per field; past this, each is checked as it comes
MAX_CELL_CHARS = 1024  # a longer cell is checked, never remembered
# Values a remembered verdict may hand out to every row that repeats a cell: immutable ones
# (a list never is: each row gets its own).
_SHAREABLE = frozenset({str, int, float, bool})
# What canonical JSON writes for a string (the C encoder's own function: ``canonical_json`` of
# a request writes each string of it by this).
_quoted = json.encoder.encode_basestring


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
_Searcher = Callable[[str], "re.Match[str] | None"]
_BETWEEN = '","'  # between two items of a list of strings in canonical JSON
# A urls cell that is plainly good (``modelspec._WEB_URLS``: web URLs joined by "|", each item
# "http(s)://" then a character that is not "/", none holding whitespace or a comma) and that
# canonical JSON writes item by item as it is (no quote, backslash or control character): its
# items are printable ASCII other than space, '"', ',', '\\' and '|'. One pass of a bitmap
# class over the cell's bytes: remembering the URLs found good instead (a set looked up item by
# item) cost more on the CPU for a large file, its 20,000 images' strings and table spread
# over megabytes read at random (see docs/benchmarks.md, issue 31 part 3, seventh pass).
_URL_FIRST = r"!#-+\-.0-\[\]-{}~"  # the character after "://": not "/" either
_URL_REST = r"!#-+\--\[\]-{}~"
_URL_ITEM = rf"https?://[{_URL_FIRST}][{_URL_REST}]*+"
_clean_urls = re.compile(rf"{_URL_ITEM}(?:\|{_URL_ITEM})*+").fullmatch


def _names_no_item(marker: str, searches: list[_Searcher | None], n: int, text: str) -> bool:
    """Whether ``text`` holds a ``marker<digits>`` that names no item of a list of ``n`` (out of
    range, or written "01"), or a list too long to tell here: the general path reads it.
    ``searches``: the bound searches by n, each bound when first needed."""
    if n > MAX_ITEMS:
        return True
    search = searches[n]
    if search is None:
        search = searches[n] = _BAD_REFS[marker, n].search
    return search(text) is not None


class _Field:
    """One field a shape sends: its spec and the cells already found good (``known``: cell →
    value, for the fields whose cells repeat; ``good``: the URLs of a list field already found
    plainly good)."""

    __slots__ = ("name", "spec", "urls", "known", "remember", "good", "slot", "limit", "fewest", "most")

    def __init__(self, name: str, spec: modelspec.FieldSpec) -> None:
        self.name = name
        self.spec = spec
        self.urls = spec.kind == "urls"
        self.known: dict[str, Any] = {}
        # Free text (a prompt) differs in every row, and so does a list of URLs as a whole (its
        # items repeat: ``good``): remembering either would only cost.
        self.remember = not (spec.kind == "str" and not spec.choices or self.urls)
        # URLs of cells found good by ``value`` (quick_value's pattern need not run again on
        # them): a cell ``_clean_urls`` matches never gets there.
        self.good: set[str] = set()
        self.slot = 0  # where its value goes in the request's JSON (``_Frame``)
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
        # The hot loop of a large manifest: free text and URL lists, checked inline. Their
        # values are the only parts of a request's JSON that differ row by row (``_Frame``).
        self.texts = [f for f in fields if not f.remember and not f.urls]
        self.lists = [f for f in fields if f.urls]
        self.frame = _Frame(self.template, [*self.texts, *self.lists])
        # The fields whose cells repeat (numbers, choices: not free text, not URL lists) are
        # looked up together: their cells, read by one C call, → the values they send
        # (``_Settled``), one lookup a row however many such columns a row has, with the JSON
        # of a request holding them.
        settled = [f for f in fields if f.remember]
        self.settled = _Settled(settled, self.frame) if settled else None
        self.pieces = None if self.settled is not None else self.frame.pieces({})
        # (marker, list field, the search of a reference naming no item of a list of n items,
        # by n: ``_BAD_REFS``' patterns, each bound when first needed). One C call a prompt:
        # the pattern's own search costs less than reading the prompt's pieces after a split.
        self.refs: list[tuple[str, str, list[_Searcher | None]]] = [
            (marker, list_field, [None] * (MAX_ITEMS + 1)) for marker, list_field in spec.refs]
        # The seed's model's shape (a prompt, one URL list its ``@ImageN`` name, the repeating
        # fields, no rule) has a straight path of its own. ``web_request(params)``: ``request``
        # of a row whose one URL list is a cell of plain web URLs (so there is nothing to
        # localise: the caller need not look), or None: then the caller looks at the cell itself
        # and asks ``request`` (a row with something to say about it comes back None from both).
        # None for other shapes; only for a shape whose one media field is its one URL list.
        # Bound here, not wrapped: a call less a row.
        one = _OneList.of(self)
        self.web_request: Callable[[Mapping[str, Any]], tuple[dict[str, Any], str] | None] | None = \
            None if one is None else one.request

    def request(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], str] | None:
        """The normalised request of a row sending ``params`` (any mapping holding the fields
        sent, read only) and its canonical JSON, or None: ask the general path."""
        if self.hopeless:
            return None
        out = self.template.copy()
        pieces = self.pieces
        if self.settled is not None:
            made = self.settled.values(params)
            if made is None:
                return None
            part, pieces = made
            out.update(part)  # keys already in out: the order stays normalise's
        # The request's JSON: its pieces with each varying value's JSON in its place (None:
        # the JSON encoder writes it whole).
        parts = None if pieces is None else pieces.copy()
        for f in self.texts:  # quick_value's verdict on free text, without its call
            raw = params[f.name]
            if type(raw) is not str or not raw or len(raw) > f.limit or f.spec.required and raw.isspace():
                raw = f.value(raw)
                if raw is None:
                    return None
            out[f.name] = raw
            if parts is not None:
                parts[f.slot] = _quoted(raw) if type(raw) is str else canonical_json(raw)
        for f in self.lists:  # a cell of plain web URLs: one pattern over it, no lookup
            raw = params[f.name]
            if type(raw) is str and _clean_urls(raw) is not None:
                value = raw.split("|")
                if f.fewest <= len(value) <= f.most:
                    out[f.name] = value
                    if parts is not None:  # each item written as it is: the cell, quoted item by item
                        parts[f.slot] = f'["{raw.replace("|", _BETWEEN)}"]'
                    continue
            value = f.value(raw)
            if value is None:
                return None
            out[f.name] = value
            if parts is not None:
                parts[f.slot] = canonical_json(value)
        for rule in self.spec.rules:
            if specs.broken_rule(rule, out):
                return None  # an error or a warning: the general path words it
        for marker, list_field, searches in self.refs:
            text = out.get("prompt")
            if type(text) is not str:
                text = str(text or "")
            if marker in text and _names_no_item(marker, searches, len(out.get(list_field) or []), text):
                return None  # out of range, or written "01": the general path reads it
        return out, canonical_json(out) if parts is None else "".join(parts)


class _Frame:
    """The canonical JSON of a shape's requests around the values that differ row by row (free
    text, URL lists): ``pieces(part)`` of a request holding ``part`` (the repeating fields'
    values) is a list of the JSON between them, with a place ("") for each value's own JSON,
    at its field's ``slot``. Made by the encoder itself, from a request holding a marker in
    each such place, so the keys are sorted and every value written as ``canonical_json``
    writes it; None when a marker cannot be told apart (a value of the request holding one)."""

    def __init__(self, template: dict[str, Any], varying: list[_Field]) -> None:
        self.template = template
        self.varying = varying
        self.marks = {f.name: f"\ue000{i}\ue001" for i, f in enumerate(varying)}

    def pieces(self, part: Mapping[str, Any]) -> list[str] | None:
        text = canonical_json({**self.template, **part, **self.marks})
        found = []
        for f in self.varying:
            mark = _quoted(self.marks[f.name])
            at = text.find(mark)
            if at < 0 or text.count(mark) != 1:
                return None
            found.append((at, len(mark), f))
        found.sort(key=lambda x: x[0])
        pieces: list[str] = []
        start = 0
        for at, size, f in found:
            pieces.append(text[start:at])
            f.slot = len(pieces)
            pieces.append("")  # its place: each row's own JSON
            start = at + size
        pieces.append(text[start:])
        return pieces


class _Settled:
    """The values of the repeating fields of a shape, by their cells together: (cell, cell, …)
    → ({field: value}, the JSON pieces of a request holding them), each combination worked out
    once by the fields' own ``value`` (only combinations of text cells are remembered, up to
    ``MAX_CELLS``)."""

    def __init__(self, fields: list[_Field], frame: _Frame) -> None:
        self.fields = fields
        self.frame = frame
        names = [f.name for f in fields]
        # itemgetter of one name gives the cell itself, of several a tuple: a key either way.
        self.cells = operator.itemgetter(*names)
        self.single = len(names) == 1
        self.known: dict[Any, tuple[dict[str, Any], list[str] | None]] = {}

    def values(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], list[str] | None] | None:
        """({field: value} of the row's repeating cells, shared: never to be changed; the
        JSON pieces, or None), or None when the general path has something to say about one
        of them."""
        cells = self.cells(params)
        try:
            made = self.known.get(cells)
        except TypeError:  # a YAML list or mapping in such a field: not a key
            made = None
        if made is not None:
            return made
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
        # cells) and every value may be shared (a list never is: each row gets its own); the
        # JSON pieces are worked out only for what is remembered.
        if len(self.known) < MAX_CELLS and all(type(c) is str and len(c) <= MAX_CELL_CHARS for c in row) \
                and all(type(v) in _SHAREABLE for v in part.values()):
            made = self.known[cells] = (part, self.frame.pieces(part))
            return made
        return part, None


_Frame_ = tuple[dict[str, Any], str, str, str, bool]  # see ``_OneList._frame``


class _OneList:
    """``RequestMaker.request`` unrolled for the seed's model's shape: one free-text field (the
    prompt), one URL list (the ``@ImageN`` references' list, if the entry has references), the
    repeating fields, no rule, the JSON made by pieces. It accepts only a list cell of plain web
    URLs (``_clean_urls``) and returns None for anything else, which the caller then hands to
    ``request``: the loops over field lists, the calls of ``_Settled.values`` and
    ``_names_no_item``, and the caller's look at the cell, are what a million rows of this shape
    would otherwise pay for (issue 31, part 3)."""

    __slots__ = ("maker", "text", "text_name", "cell_name", "fewest", "most", "limit", "required", "marker",
                 "searches", "settled", "cells", "frames", "frame")

    def __init__(self, maker: RequestMaker, text: _Field, cell: _Field) -> None:
        self.maker = maker
        self.text, self.text_name = text, text.name
        self.cell_name, self.fewest, self.most = cell.name, cell.fewest, cell.most
        self.limit, self.required = text.limit, text.spec.required
        self.marker: str | None = maker.refs[0][0] if maker.refs else None
        self.searches: list[_Searcher | None] = maker.refs[0][2] if maker.refs else []
        self.settled = maker.settled
        # The repeating fields' cells together (``_Settled.cells``) → the request with their
        # values in place, and the JSON pieces with the list's brackets moved into the pieces
        # around it: one lookup a row. Only combinations ``_Settled`` remembers are kept here.
        self.cells = None if maker.settled is None else maker.settled.cells
        self.frames: dict[Any, _Frame_] = {}
        # Without repeating fields: the one frame of every row (None: ``request`` works it out).
        self.frame = None if maker.settled is not None or maker.pieces is None else \
            self._frame(None, maker.pieces)

    @classmethod
    def of(cls, maker: RequestMaker) -> _OneList | None:
        if maker.hopeless or maker.spec.rules or len(maker.texts) != 1 or len(maker.lists) != 1:
            return None
        text, cell = maker.texts[0], maker.lists[0]
        if text.name != "prompt" or len(maker.refs) > 1 or maker.refs and maker.refs[0][1] != cell.name:
            return None  # the references are read from "prompt" (as Catalog.normalise reads them)
        if maker.settled is None and maker.pieces is None:
            return None
        return cls(maker, text, cell)

    def request(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], str] | None:
        cell = params[self.cell_name]
        if type(cell) is not str or _clean_urls(cell) is None:
            return None
        items = cell.split("|")
        n = len(items)
        if not self.fewest <= n <= self.most:
            return None
        cells = self.cells
        if cells is None:
            frame = self.frame
        else:
            key = cells(params)
            try:
                frame = self.frames.get(key)
            except TypeError:  # a YAML list or mapping in such a field: not a key
                return None
            if frame is None:
                frame = self._first(params, key)
        if frame is None:
            return None  # not remembered, or something to say: ``request`` works it out
        text = params[self.text_name]
        if type(text) is not str or not text or len(text) > self.limit or self.required and text.isspace():
            return None
        marker = self.marker
        if marker is not None:  # ``_names_no_item``, inlined (its pattern begins with the marker)
            if n > MAX_ITEMS:
                return None
            search = self.searches[n]
            if search is None:
                search = self.searches[n] = _BAD_REFS[marker, n].search
            if search(text) is not None:
                return None  # out of range, or written "01": the general path reads it
        template, before, between, after, text_first = frame
        out = template.copy()
        out[self.text_name] = text
        out[self.cell_name] = items
        if text_first:
            return out, "".join((before, _quoted(text), between, cell.replace("|", _BETWEEN), after))
        return out, "".join((before, cell.replace("|", _BETWEEN), between, _quoted(text), after))

    def _first(self, params: Mapping[str, Any], key: Any) -> _Frame_ | None:
        """The frame of a combination of the repeating fields' cells not met before (None: not
        remembered, or something to say about a cell)."""
        made = self.settled.values(params) if self.settled is not None else None
        if made is None:
            return None
        part, pieces = made
        if pieces is None:
            return None
        frame = self._frame(part, pieces)
        if len(self.frames) < MAX_CELLS:
            self.frames[key] = frame
        return frame

    def _frame(self, part: dict[str, Any] | None, pieces: list[str]) -> _Frame_:
        """(the request with the repeating fields' values in place, the JSON before, between
        and after the two values that differ row by row, whether the prompt's comes first):
        the list's brackets are moved into the JSON around its cell."""
        template = self.maker.template if part is None else {**self.maker.template, **part}  # normalise's order
        cell_slot, text_slot = self.maker.lists[0].slot, self.text.slot
        pieces = pieces.copy()
        pieces[cell_slot - 1] += '["'
        pieces[cell_slot + 1] = '"]' + pieces[cell_slot + 1]
        first, second = sorted((cell_slot, text_slot))
        return (template, "".join(pieces[:first]), "".join(pieces[first + 1:second]), "".join(pieces[second + 1:]),
                text_slot < cell_slot)
