"""Plain rows, the common case of a large manifest, expanded without asking per row what only
depends on the row's shape. A row (crossed with a matrix combination, if the manifest has a
matrix) is plain when no value of it, of the combination or of ``defaults`` holds a ``{``
template, the combination sets no field the row sets, it sets no ``output`` of its own, and
its model is a catalog model (validated, without ``per_model`` fields) every field of which
they set is a request field. For such a row the general path (``JobBuilder``) would render
nothing, find no template variable, warn about no field and send exactly the request fields:
which fields those are depends only on the row's shape (its model and the names of its
fields), so it is worked out once per shape (``Shape``), and so is what its request keeps of
the catalog entry (``plainrequest.RequestMaker``). Everything that depends on the values
(checking the cells, local inputs, the key, the name) still runs per row; a row with anything
to say about it (a problem, a warning) is worded by the general path's own code.

A row that is not plain, or whose shape is not, takes the general path: equivalence is
checked by ``tests/test_manifest_plainrows.py`` expanding varied manifests both ways."""

from __future__ import annotations

import re
from dataclasses import dataclass
from collections.abc import Callable, Mapping
from typing import Any

from .. import names, specs
from .document import Document
from .plainrequest import RequestMaker
from .templates import has_template
from .validate import META_FIELDS

MAX_SHAPES = 1024  # a CSV's shapes are its patterns of empty cells: few; past this, not remembered
DEFAULT_OUTPUT = "{name}.mp4"
MATRIX_OUTPUT = "{name}-{matrix}.mp4"  # the default under a matrix
# A name ``names.safe_value`` keeps as it is (ASCII letters, digits and ``. _ -``, neither
# starting nor ending with one of ``. _ -``, at most VALUE_CHARS characters), so that
# "{name}.mp4" renders to name + ".mp4", which ``names.render_output_name`` accepts as it is
# (one plain segment ending in .mp4) unless it is a reserved device name (checked apart).
_KEPT_NAME = re.compile(rf"[A-Za-z0-9](?:[A-Za-z0-9._-]{{0,{names.VALUE_CHARS - 2}}}[A-Za-z0-9])?\Z")


@dataclass(frozen=True, slots=True)
class Shape:
    """What every plain row of one shape sends: its model and request fields (in the order the
    general path meets them: ``defaults`` first, then the row's own)."""

    model: str
    spec: specs.ModelSpec
    send: tuple[str, ...]
    media: tuple[str, ...]  # those of them that are media fields (local files become uploads)
    # Whether the entry reads every one of those as URLs (url/urls): then a row holding web
    # URLs only has nothing to localise (see ``web_only``).
    urls_only: bool
    maker: RequestMaker  # its requests, when there is nothing to say about them
    # The one media field, when there is one and the entry reads it as URLs: ``web_only``
    # inlined by the caller (the seed's model's reference_image_urls).
    web: str | None = None
    # For such a shape, ``maker.web_request`` when the maker has that straight path.
    web_request: Callable[[Mapping[str, Any]], tuple[dict[str, Any], str] | None] | None = None


class _Combo:
    """What a plain row's job needs of one matrix combination, worked out once: whether its
    values may be plain (no template, no ``output``), and the "{matrix}" part of its file names
    (None: the general code names them). Held with the combination itself, which is what it is
    looked up by."""

    __slots__ = ("combo", "keys", "plain", "suffix")

    def __init__(self, combo: dict[str, Any], matrix: list[str]) -> None:
        self.combo = combo
        self.keys = tuple(combo)
        self.plain = _plain_values(combo)
        suffix = "-".join(str(combo[k]) for k in matrix) if combo else ""
        self.suffix = suffix if _kept(suffix) else None


class PlainRows:
    """Tells plain rows of ``doc`` and the ``Shape`` of each (None: not plain)."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        # The manifest-wide conditions, decided once.
        self.enabled = not any(has_template(v) for v in doc.defaults.values())
        # Files named "{name}.mp4", or "{name}-{matrix}.mp4" under a matrix: worked out by
        # ``output_name`` (``output_of``); any other template by the general code.
        self.plain_names = not doc.matrix and doc.output_template in (None, DEFAULT_OUTPUT)
        self.matrix_names = bool(doc.matrix) and doc.output_template in (None, MATRIX_OUTPUT)
        self._shapes: dict[tuple[str, tuple[str, ...], tuple[str, ...]], Shape | None] = {}
        # The combinations met (by their id, the combination held: an id is never reused while
        # its object lives), and the last row's verdict and name: a row crossed with a matrix
        # comes once for each combination, one after another.
        self._combos: dict[int, _Combo] = {}
        self._row: dict[str, Any] | None = None
        self._row_plain = False
        self._name: str | None = None
        self._name_kept = False

    def _combo(self, combo: dict[str, Any]) -> _Combo:
        known = self._combos.get(id(combo))
        if known is None or known.combo is not combo:
            known = _Combo(combo, list(self.doc.matrix))
            if len(self._combos) < MAX_SHAPES:
                self._combos[id(combo)] = known
        return known

    def output_of(self, name: str, combo: dict[str, Any]) -> str | None:
        """The output name of a plain row's job named ``name`` (with ``combo``), or None when
        the general code must render it: what ``output_name(name)``, or under a matrix
        ``output_name(name, "-".join(its values))``, says."""
        if self.plain_names:
            return output_name(name)
        if self.matrix_names:
            suffix = self._combo(combo).suffix
            if name is not self._name:
                self._name, self._name_kept = name, _kept(name)
            return f"{name}-{suffix}.mp4" if suffix is not None and self._name_kept else None
        return None

    def shape(self, row: dict[str, Any], combo: dict[str, Any]) -> Shape | None:
        """The shape of a row setting ``row`` crossed with the matrix combination ``combo``,
        or None when that job is not plain (a template, an ``output`` of its own, a field both
        set: the general path reports it)."""
        if row is not self._row:
            self._row, self._row_plain = row, _plain_values(row)
        if not self._row_plain:
            return None
        info = self._combo(combo)
        if not info.plain:
            return None
        model = combo["model"] if "model" in combo else row["model"] if "model" in row else self.doc.defaults.get("model")
        if type(model) is not str:
            return None
        key = (model, tuple(row), info.keys)
        try:
            return self._shapes[key]
        except KeyError:
            pass
        shape = None if not combo.keys().isdisjoint(row) else self._shape_of(model, {**row, **combo})
        if len(self._shapes) < MAX_SHAPES:
            self._shapes[key] = shape
        return shape

    def _shape_of(self, model: str, values: dict[str, Any]) -> Shape | None:
        doc = self.doc
        model = model.strip()  # as CatalogCheck.model reads it
        spec = doc.catalog.get(model) if model else None
        if spec is None or model in doc.unvalidated_models or model in doc.per_model:
            return None
        if META_FIELDS & spec.fields.keys():
            return None  # a model whose request has a `name` is sent the job's name: the general path
        send: list[str] = []
        for k in {**doc.defaults, **values}:
            if k == "model" or k in META_FIELDS:
                continue
            if k not in spec.fields:
                return None  # a template variable, a typo, a default for other models: problems to tell
            send.append(k)
        media = tuple(k for k in send if k in doc.catalog.media_fields)
        urls_only = all(spec.fields[k].kind in ("url", "urls") for k in media)
        # A field no row of this shape sets is the manifest's default in every one of them.
        fixed = {k: doc.defaults[k] for k in send if k not in values}
        maker = RequestMaker(model, spec, tuple(send), fixed)
        web = media[0] if urls_only and len(media) == 1 else None
        return Shape(model, spec, tuple(send), media, urls_only, maker, web,
                     maker.web_request if web is not None else None)


def _plain_values(values: dict[str, Any]) -> bool:
    """Whether a row's values hold no template and no ``output`` of its own."""
    try:  # a CSV row: text only, looked through in one C call however wide the row
        return "{" not in "".join(values.values()) and "output" not in values
    except TypeError:  # a YAML row may hold numbers, lists, mappings
        pass
    for v in values.values():
        if type(v) is str:
            if "{" in v:
                return False
        elif has_template(v):
            return False
    return "output" not in values


WEB = ("https://", "http://")


def web_only(shape: Shape, params: Mapping[str, Any]) -> bool:
    """Whether the media fields of a row of ``shape`` hold nothing to localise: web URLs only
    (a cell starting with one, "a|b" included), in fields the entry reads as URLs. For such a
    value ``LocalInputs.localise`` would only strip it, which the field's coercion does too
    (each item of a list), so the request is the same without it."""
    if not shape.urls_only:
        return False
    for k in shape.media:
        v = params[k]
        if type(v) is not str or not v.startswith(WEB):
            return False
    return True


def output_name(name: str, matrix: str | None = None) -> str | None:
    """The output name "{name}.mp4" renders to for a job named ``name`` (nothing reduced), or
    "{name}-{matrix}.mp4" with ``matrix`` (its combination's values joined by "-"); None when
    the names need the general path (``names.render_output_name``). A value the file name keeps
    as it is (``_kept``) is rendered as it is, and two such joined by "-" make a plain segment
    that is never a reserved name (none holds a "-")."""
    if not _kept(name):
        return None
    if matrix is None:
        return name + ".mp4"
    return f"{name}-{matrix}.mp4" if _kept(matrix) else None


def _kept(value: str) -> bool:
    return _KEPT_NAME.match(value) is not None and value.split(".")[0].upper() not in names.WINDOWS_RESERVED
