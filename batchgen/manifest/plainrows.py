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
from collections.abc import Mapping
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
        self._shapes: dict[tuple[str, tuple[str, ...]], Shape | None] = {}

    def output_of(self, name: str, combo: dict[str, Any]) -> str | None:
        """The output name of a plain row's job named ``name`` (with ``combo``), or None when
        the general code must render it (``output_name``)."""
        if self.plain_names:
            return output_name(name)
        if self.matrix_names:
            return output_name(name, "-".join(str(combo[k]) for k in self.doc.matrix))
        return None

    @staticmethod
    def crossed(values: dict[str, Any], combo: dict[str, Any]) -> dict[str, Any] | None:
        """What a row setting ``values`` sets with the matrix combination ``combo``, or None
        when they both set a field (a problem the general path reports)."""
        if not combo:
            return values
        if not combo.keys().isdisjoint(values):
            return None
        return {**values, **combo}

    def shape(self, values: dict[str, Any]) -> Shape | None:
        """The shape of a row setting ``values`` (with its matrix combination), or None when
        the row is not plain."""
        for v in values.values():
            if type(v) is str:
                if "{" in v:
                    return None
            elif has_template(v):
                return None
        if "output" in values:
            return None
        model = values["model"] if "model" in values else self.doc.defaults.get("model")
        if type(model) is not str:
            return None
        key = (model, tuple(values))
        try:
            return self._shapes[key]
        except KeyError:
            pass
        shape = self._shape_of(model, values)
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
        return Shape(model, spec, tuple(send), media, urls_only, RequestMaker(model, spec, tuple(send)))


_WEB = ("https://", "http://")


def web_only(shape: Shape, params: Mapping[str, Any]) -> bool:
    """Whether the media fields of a row of ``shape`` hold nothing to localise: web URLs only
    (a cell starting with one, "a|b" included), in fields the entry reads as URLs. For such a
    value ``LocalInputs.localise`` would only strip it, which the field's coercion does too
    (each item of a list), so the request is the same without it."""
    if not shape.urls_only:
        return False
    for k in shape.media:
        v = params[k]
        if type(v) is not str or not v.startswith(_WEB):
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
