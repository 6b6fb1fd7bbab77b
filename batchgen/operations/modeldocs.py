"""The model catalog as an operation: ``catalog`` (the shipped one with a user's ``--models``
file on top) and ``models`` (each model as data, what ``batchgen models`` prints). Reads data
files only: no ledger, no network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..specs import Catalog, ModelSpec


def catalog(models_file: str | Path | None = None) -> Catalog:
    """The shipped model catalog, with a user's models file (``--models``) added on top.
    Raises ``DataFileError`` with every problem of the file."""
    from ..datafiles import read_models
    from ..specs import SHIPPED

    if models_file is None:
        return SHIPPED
    return SHIPPED.extended(read_models(models_file), str(models_file))


def models(cat: Catalog | None = None) -> list[dict[str, Any]]:
    """The catalog as data: each model with its fields (type, default, allowed values), rules,
    how long its output is, whether it promises audio, and where it came from."""
    cat = cat or catalog()
    return [_model_doc(spec) for spec in sorted(cat.models.values(), key=lambda s: s.name)]


def _model_doc(spec: ModelSpec) -> dict[str, Any]:
    fields = []
    for name, f in spec.fields.items():
        allowed = (list(f.choices) if f.choices else f"{f.min}-{f.max}" if f.min is not None or f.max is not None
                   else None)
        if f.kind == "urls" or f.kind == "list":
            allowed = f"{f.min or 0}-{f.max} items" if f.max is not None else None
        fields.append({"name": name, "type": f.kind, "required": f.required, "default": f.default,
                       "allowed": allowed, "auto": f.auto, "max_len": f.max_len})
    rules = []
    for r in spec.rules:
        if r.count:
            rules.append(", ".join(f"{k}: {lo}-{hi} items" for k, lo, hi in r.count)
                         + " when " + ", ".join(f"{k}={v}" for k, v in r.when))
        for k, values in r.allowed:
            cond = (" when " + ", ".join(f"{w}={_show(v)}" for w, v in r.when) if r.when
                    else f" when {r.when_set} is set" if r.when_set else "")
            rules.append(f"{k}: one of {', '.join(_show(v) for v in values)}{cond}" + (" (warning)" if r.warn else ""))
        if r.required:
            rules.append(f"{', '.join(r.required)} required when " + ", ".join(f"{w}={_show(v)}" for w, v in r.when))
        if r.one_of:
            rules.append("exactly one of " + ", ".join(r.one_of))
        if r.at_most_one:
            rules.append("at most one of " + ", ".join(r.at_most_one))
        if r.total:
            rules.append(f"{' + '.join(r.total)} ≤ {r.max} items" + (" (warning)" if r.warn else ""))
        if r.if_set:
            rules.append(f"{r.if_set} needs {' or '.join(r.requires_any)}")
    rules += [f"{marker}N names an item of {field}" for marker, field in spec.refs]
    return {"model": spec.name, "fields": fields, "rules": rules,
            "output_seconds": spec.output_seconds, "audio": spec.audio, "open": spec.open, "doc": spec.doc,
            "sources": list(spec.sources), "read_on": spec.read_on, "typical_render_s": spec.typical_render_s}


def _show(v: Any) -> str:
    return "true" if v is True else "false" if v is False else str(v)

