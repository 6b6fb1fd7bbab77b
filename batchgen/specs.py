"""The model catalog, and local validation of a request against it.

The catalog is ``models.yaml`` (shipped beside this module; its header documents the entry
shape), read and checked by ``datafiles`` into ``modelspec`` values. ``Catalog.extended`` adds or
replaces entries from a user's file or a manifest's inline ``models:`` mapping, so a model the
provider adds or changes is usable the day its page changes. Validating locally before anything is sent is the cheapest way to not pay for a
request the API would reject (or, worse, accept with a default the user did not mean).

Depends one way: ``modelspec`` ← ``datafiles`` ← ``specs``. ``datafiles`` (YAML, files) is imported
only when the shipped catalog is first built, so reading a spec costs no parser: the manifest,
verification (media.py) and the cost estimate read it.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .modelspec import UPLOAD_PREFIX, FieldSpec, ModelSpec, Rule, check_value, coerce, comma_hint


# ------------------------------------------------------------------------------ the catalog
_MEMO_TYPES = frozenset({str, int, float, bool, type(None)})  # immutable cells: safe to share a verdict
_MEMO_MAX = 4096


class Catalog:
    """The models batchgen validates: the shipped entries plus the user's additions."""

    def __init__(self, models: Mapping[str, ModelSpec], sources: Iterable[str] = ("shipped models.yaml",)) -> None:
        self.models: dict[str, ModelSpec] = dict(models)
        self.sources = list(sources)
        self.all_fields = frozenset(f for m in self.models.values() for f in m.fields)
        # Fields holding media URLs: a local file named there is uploaded first (manifest/localfiles.py).
        self.media_fields = frozenset(f for m in self.models.values() for f, s in m.fields.items()
                                      if s.kind in ("url", "urls"))
        self._checked: dict[tuple[str, str, type, Any], tuple[Any, str | None]] = {}  # see normalise

    @classmethod
    def shipped(cls) -> Catalog:
        from .datafiles import shipped_models  # YAML and files: only when a catalog is first needed

        return cls(shipped_models())

    def extended(self, entries: Mapping[str, ModelSpec], source: str) -> Catalog:
        """This catalog with ``entries`` added (an entry of the same name is replaced whole)."""
        return Catalog({**self.models, **entries}, [*self.sources, source]) if entries else self

    def get(self, model: str) -> ModelSpec | None:
        return self.models.get(model)

    def typical_render_times(self, models: Iterable[str]) -> dict[str, float | None]:
        """Each known one of ``models`` → its typical render time (``typical_render_s``): the
        forecast's guess for a model without history."""
        return {m: spec.typical_render_s for m in models if (spec := self.models.get(m)) is not None}

    def suggest(self, name: str) -> str | None:
        """Closest known request field, to turn a typo into an error instead of a silent default."""
        close = difflib.get_close_matches(name, sorted(self.all_fields | {"model"}), n=1, cutoff=0.8)
        return close[0] if close else None

    def normalise(self, model: str, params: dict[str, Any]
                  ) -> tuple[dict[str, Any], list[tuple[str, str]], list[tuple[str, str]]]:
        """Apply type coercion and the model's defaults; return (effective request, errors,
        warnings), each a list of (field, message).

        The effective request is what the job key hashes: two rows that differ only by spelling
        a default explicitly are the same job, so re-running never pays twice for it."""
        spec = self.models.get(model)
        if spec is None:
            return {"model": model, **{k: v for k, v in params.items() if v is not None}}, [], []
        errors: list[tuple[str, str]] = []
        warnings: list[tuple[str, str]] = []
        out: dict[str, Any] = {"model": model}
        failed: set[str] = set()  # fields with their own error: the cross rules do not read them
        memo = self._checked
        for name, fs in spec.fields.items():
            raw = params.get(name)
            if raw == "" or raw == []:
                raw = None
            # A field's coerced value and verdict depend only on the field and the cell: rows
            # repeat most cells (a million rows, a handful of durations), so each is worked out
            # once. Lists are never shared between jobs; long free text is not kept.
            mk = (model, name, type(raw), raw) if type(raw) in _MEMO_TYPES else None
            hit = memo.get(mk) if mk is not None else None
            if hit is not None:
                value, err = hit
            else:
                value = coerce(fs, raw)
                if value is None:
                    if fs.required:
                        errors.append((name, "is required"))
                        failed.add(name)
                        continue
                    value = fs.default
                    if value is None:
                        continue  # not sent: the API applies its own default
                err = check_value(fs, value)
                if mk is not None and type(value) in _MEMO_TYPES and len(memo) < _MEMO_MAX \
                        and not (type(raw) is str and len(raw) > 64):
                    memo[mk] = (value, err)
            if err:
                errors.append((name, err))
                failed.add(name)
                continue
            out[name] = value
        if spec.open:  # fields the catalog does not list (the manifest warned): sent as given
            out.update({k: v for k, v in params.items() if k not in spec.fields and v is not None})
        for rule in spec.rules:
            if rule.reads & failed:
                continue  # its field already has its own error; a second, false line helps nobody
            for f, msg in broken_rule(rule, out):
                (warnings if rule.warn else errors).append((f, msg))
        for marker, list_field in spec.refs:
            if list_field in failed:
                continue
            n = len(out.get(list_field) or [])
            for text_field in ("prompt",):
                text = str(out.get(text_field) or "")
                if marker not in text:
                    continue  # the common prompt names no item: no pattern to run
                for m in ref_pattern(marker).finditer(text):
                    idx = int(m.group(1))
                    if not 1 <= idx <= n:
                        errors.append((text_field, f"refers to {marker}{idx} but {list_field} has {n} item(s)"))
                        break
        return out, errors, warnings


@functools.lru_cache(maxsize=64)
def ref_pattern(marker: str) -> re.Pattern[str]:
    """``@Image1``, ``@Image2``…: the pattern of a ``refs`` marker, compiled once."""
    return re.compile(re.escape(marker) + r"(\d+)")


def _set(v: Any) -> bool:
    return v is not None and v != [] and v != ""


def broken_rule(rule: Rule, req: Mapping[str, Any]) -> list[tuple[str, str]]:
    if rule.when and not all(req.get(k) == v for k, v in rule.when):
        return []
    if rule.when_set and not _set(req.get(rule.when_set)):
        return []
    out: list[tuple[str, str]] = []
    cond = (" when " + ", ".join(f"{k} is {_show(v)}" for k, v in rule.when) if rule.when
            else f" when {rule.when_set} is set" if rule.when_set else "")
    for f, values in rule.allowed:
        v = req.get(f)
        if v is not None and v not in values:  # unset (no default): the API's own default applies
            out.append((f, f"must be one of {', '.join(_show(x) for x in values)}{cond}; got {_show(v)}"))
    for f in rule.required:
        if not _set(req.get(f)):
            out.append((f, f"is required{cond}"))
    for f, lo, hi in rule.count:
        n = len(req.get(f) or [])
        if not lo <= n <= hi:
            want = f"exactly {lo}" if lo == hi else f"{lo} to {hi}"
            out.append((f, f"must have {want} item(s){cond}, got {n}"))
    if rule.one_of:
        given = [f for f in rule.one_of if _set(req.get(f))]
        if len(given) != 1:
            out.append((rule.one_of[0], f"set exactly one of {', '.join(rule.one_of)}"
                                        + (f" (got {', '.join(given)})" if given else "")))
    if rule.at_most_one:
        given = [f for f in rule.at_most_one if _set(req.get(f))]
        if len(given) > 1:
            out.append((given[1], f"set at most one of {', '.join(rule.at_most_one)} (got {', '.join(given)})"))
    if rule.total and rule.max is not None:
        n = sum(len(req.get(f) or []) for f in rule.total)
        if n > rule.max:
            out.append((rule.total[0], f"{' + '.join(rule.total)} hold {n} items; at most {rule.max}"))
    if rule.if_set and _set(req.get(rule.if_set)) and not any(_set(req.get(f)) for f in rule.requires_any):
        out.append((rule.if_set, f"needs {' or '.join(rule.requires_any)} too"))
    return out


def _show(v: Any) -> str:
    return "true" if v is True else "false" if v is False else str(v)



# ------------------------------------------------------------------------------ shipped catalog
SHIPPED: Catalog  # built on first use (module __getattr__): reading files is not free


def __getattr__(name: str) -> Any:
    if name == "SHIPPED":
        global SHIPPED
        SHIPPED = Catalog.shipped()
        return SHIPPED
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")



__all__ = ["SHIPPED", "UPLOAD_PREFIX", "Catalog", "FieldSpec", "ModelSpec", "Rule", "broken_rule", "coerce",
           "comma_hint", "ref_pattern"]
