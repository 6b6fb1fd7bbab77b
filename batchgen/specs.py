"""Model specs as data, and local validation.

The catalog is ``models.yaml`` (shipped beside this module; its header documents the entry
shape), read and checked by ``datafiles``. ``Catalog.extended`` adds or replaces entries from a
user's file or a manifest's inline ``models:`` mapping, so a model the provider adds or changes
is usable the day its page changes. Validating locally before anything is sent is the cheapest way to not pay for a
request the API would reject (or, worse, accept with a default the user did not mean).

Imports nothing of batchgen at import time (``datafiles`` builds these classes from files and is
imported when the shipped catalog is first built): the manifest, verification (media.py) and the
cost estimate read it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

UPLOAD_PREFIX = "upload:sha256:"  # a local file, uploaded just before the create (see manifest/localfiles.py)


@dataclass(frozen=True)
class FieldSpec:
    kind: str  # "str", "int", "bool", "url", "urls", "list", "object"
    required: bool = False
    default: Any = None
    choices: tuple[Any, ...] | None = None
    min: int | None = None
    max: int | None = None
    max_len: int | None = None
    auto: int | None = None  # an int meaning "the model decides" (budgeted at max)


@dataclass(frozen=True)
class Rule:
    """A constraint across fields (see models.yaml). ``warn``: a warning, not a refusal."""

    when: tuple[tuple[str, Any], ...] = ()
    when_set: str | None = None
    count: tuple[tuple[str, int, int], ...] = ()
    allowed: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    required: tuple[str, ...] = ()
    one_of: tuple[str, ...] = ()
    at_most_one: tuple[str, ...] = ()
    total: tuple[str, ...] = ()
    max: int | None = None
    requires_any: tuple[str, ...] = ()
    if_set: str | None = None
    warn: bool = False

    @property
    def reads(self) -> frozenset[str]:
        """Every field this rule looks at: a field that failed its own check is not read again
        (one problem, one line; a list over its maximum is not then "absent")."""
        return frozenset({k for k, _ in self.when} | {k for k, _, _ in self.count} | {k for k, _ in self.allowed}
                         | set(self.required) | set(self.one_of) | set(self.at_most_one) | set(self.total)
                         | set(self.requires_any) | {f for f in (self.when_set, self.if_set) if f})


@dataclass(frozen=True)
class ModelSpec:
    name: str
    fields: dict[str, FieldSpec] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    refs: tuple[tuple[str, str], ...] = ()  # ("@Image", "image_urls"): @ImageN names an item of it
    # How long the output is: "duration" (the request's field), a fixed number of seconds, or
    # "input" (edit/extend: follows the input video, so neither checked nor priced from it).
    output_seconds: str | float = "duration"
    duration_tolerance: float = 0.0  # seconds of slack beyond one frame (verification)
    audio: bool | str | None = None  # promised audio: True/False, None (not documented), or a bool field
    aspect_field: str = "aspect_ratio"
    open: bool = False  # unknown fields pass through with a warning (pages we could not fully read)
    doc: str | None = None
    sources: tuple[str, ...] = ()  # the provider's pages the entry was read from
    read_on: str | None = None  # when they were read (YYYY-MM-DD)

    @property
    def duration_is_output(self) -> bool:
        return self.output_seconds == "duration"

    def promises_audio(self, request: Mapping[str, Any]) -> bool | None:
        if isinstance(self.audio, str):
            v = request.get(self.audio, self.fields[self.audio].default if self.audio in self.fields else None)
            return v if isinstance(v, bool) else None
        return self.audio

    def seconds(self, request: Mapping[str, Any]) -> float | None:
        """Seconds of video the request asks for (an "auto" duration counts as its maximum), or
        None when the output follows an input."""
        if isinstance(self.output_seconds, int | float):
            return float(self.output_seconds)
        if self.output_seconds != "duration":
            return None
        d = request.get("duration")
        fs = self.fields.get("duration")
        if fs is not None and fs.auto is not None and d == fs.auto:
            return float(fs.max if fs.max is not None else max(fs.choices or (0,)))
        return float(d) if isinstance(d, int | float) and not isinstance(d, bool) else None


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
        from .datafiles import shipped_models  # it reads and checks files; it builds these classes

        return cls(shipped_models())

    def extended(self, entries: Mapping[str, ModelSpec], source: str) -> Catalog:
        """This catalog with ``entries`` added (an entry of the same name is replaced whole)."""
        return Catalog({**self.models, **entries}, [*self.sources, source]) if entries else self

    def get(self, model: str) -> ModelSpec | None:
        return self.models.get(model)

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
                err = _check(fs, value)
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
            for f, msg in _broken(rule, out):
                (warnings if rule.warn else errors).append((f, msg))
        for marker, list_field in spec.refs:
            if list_field in failed:
                continue
            n = len(out.get(list_field) or [])
            for text_field in ("prompt",):
                for m in re.finditer(re.escape(marker) + r"(\d+)", str(out.get(text_field) or "")):
                    idx = int(m.group(1))
                    if not 1 <= idx <= n:
                        errors.append((text_field, f"refers to {marker}{idx} but {list_field} has {n} item(s)"))
                        break
        return out, errors, warnings


def _set(v: Any) -> bool:
    return v is not None and v != [] and v != ""


def _broken(rule: Rule, req: Mapping[str, Any]) -> list[tuple[str, str]]:
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


# ------------------------------------------------------------------------------ values
def coerce(spec: FieldSpec | None, value: Any) -> Any:
    """Turn CSV strings into the field's type; leave anything unconvertible for _check()."""
    if value is None or spec is None:
        return value
    if spec.kind == "int" and isinstance(value, str):
        s = value.strip()
        if re.fullmatch(r"[+-]?\d+", s):
            return int(s)
        if re.fullmatch(r"[+-]?\d+\.0*", s):
            return int(float(s))
        return value
    if spec.kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if spec.kind == "bool" and isinstance(value, str):
        s = value.strip().lower()
        return True if s in ("true", "yes", "1") else False if s in ("false", "no", "0") else value
    if spec.kind == "urls" and isinstance(value, str):
        return [p.strip() for p in value.split("|") if p.strip()]
    if spec.kind == "url" and isinstance(value, str):
        return value.strip()
    return value


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")


def _comma_joined(v: Any) -> bool:
    """One item that is several URLs or image names joined by commas ("a.png,b.png"): a list
    written as a string, which would be sent as one URL containing a comma."""
    if not isinstance(v, str) or "," not in v:
        return False
    parts = [p.strip() for p in v.split(",")]
    return len(parts) > 1 and all(p.lower().startswith(("http://", "https://")) or p.lower().endswith(_IMAGE_SUFFIXES)
                                  for p in parts)


def comma_hint(v: Any) -> str | None:
    """The hint for a list written as one comma-joined string, or None."""
    items = v if isinstance(v, list) else [v]
    joined = next((u for u in items if _comma_joined(u)), None)
    if joined is None:
        return None
    return (f"{joined!r} is one item holding several names joined by commas: write a list "
            "([a.png, b.png] in YAML; a.png|b.png in a CSV cell)")


def _url_ok(v: Any) -> bool:
    if isinstance(v, str) and v.startswith(UPLOAD_PREFIX):
        return re.fullmatch(r"[0-9a-f]{64}", v[len(UPLOAD_PREFIX):]) is not None
    return isinstance(v, str) and re.match(r"^https?://[^\s/]+", v) is not None


def _check(fs: FieldSpec, v: Any) -> str | None:
    if fs.kind == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            return f"must be an integer, got {v!r}"
        if fs.auto is not None and v == fs.auto:
            return None
        auto = f" (or {fs.auto}: the model decides)" if fs.auto is not None else ""
        if fs.choices and v not in fs.choices:
            return f"must be one of {', '.join(str(c) for c in fs.choices)}{auto}; got {v}"
        if fs.min is not None and v < fs.min or fs.max is not None and v > fs.max:
            return f"must be between {fs.min} and {fs.max}{auto}, got {v}"
    elif fs.kind == "str":
        if not isinstance(v, str):
            return f"must be a string, got {type(v).__name__}"
        if fs.choices and v not in fs.choices:
            return f"must be one of {', '.join(fs.choices)}; got {v!r}"
        if fs.max_len and len(v) > fs.max_len:
            return f"is {len(v)} characters long; the maximum is {fs.max_len}"
        if fs.required and not v.strip():
            return "must not be empty"
    elif fs.kind == "bool":
        if not isinstance(v, bool):
            return f"must be true or false, got {v!r}"
    elif fs.kind == "url":
        if not _url_ok(v):
            return f"must be an http(s) URL, got {v!r}"
    elif fs.kind == "urls":
        if not isinstance(v, list):
            return "must be a list of URLs"
        if hint := comma_hint(v):
            return hint
        if fs.min is not None and len(v) < fs.min or fs.max is not None and len(v) > fs.max:
            return f"must have {fs.min or 0} to {fs.max} items, got {len(v)}"
        bad = [u for u in v if not _url_ok(u)]
        if bad:
            return f"must contain http(s) URLs, got {bad[0]!r}"
    elif fs.kind == "list":
        if not isinstance(v, list):
            return f"must be a list, got {type(v).__name__}"
        if fs.max is not None and len(v) > fs.max:
            return f"must have at most {fs.max} items, got {len(v)}"
    return None


# ------------------------------------------------------------------------------ shipped catalog
SHIPPED: Catalog  # built on first use (module __getattr__): datafiles, which builds it, imports this module


def __getattr__(name: str) -> Any:
    if name == "SHIPPED":
        global SHIPPED
        SHIPPED = Catalog.shipped()
        return SHIPPED
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SHIPPED", "Catalog", "FieldSpec", "ModelSpec", "Rule", "coerce"]
