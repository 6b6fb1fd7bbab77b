"""The check of a models file (or a manifest's ``models:`` mapping) against the entry shape
models.yaml's header documents: every problem at once, each placed by line and column; an entry
with a problem is left out. What it builds are ``modelspec`` values.

Cross-field rules are checked through one table, ``RULE_KINDS`` (kind → its keys → the shape of
each key's value): a new kind of rule is a row there, a field of ``modelspec.Rule`` and its check
in ``specs``' rule engine. Reads no file (``datafiles`` does).
"""

from __future__ import annotations

import datetime
import difflib
import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import Problem
from ..modelspec import FieldSpec, ModelSpec, Rule, check_value
from .checker import Checker, article, char_name, is_int, is_number, kind_of, printable_name, show

KINDS = {"text": "str", "enum": "str", "str": "str", "int": "int", "bool": "bool", "url": "url", "urls": "urls",
         "list": "list", "object": "object"}
# The keys a field spec may have, by the kind of value it holds (a key that would be silently
# ignored for that kind is refused instead).
_COMMON_KEYS = ("type", "required", "default")
_KIND_KEYS = {"str": ("choices", "max_len"), "int": ("choices", "min", "max", "auto"), "urls": ("min", "max"),
              "list": ("max",), "bool": (), "url": (), "object": ()}
ENTRY_KEYS = ("doc", "sources", "read_on", "fields", "rules", "refs", "output_seconds", "duration_tolerance",
              "audio", "aspect_field", "open", "typical_render_s")

# --------------------------------------------------------------------------- rule kinds
# The shapes a rule key's value may take. Each is checked (naming what is wrong) and converted
# into the value of the ``specs.Rule`` attribute of the same name.
FIELDS = "a list of field names"
FIELD = "a field name"
FIELD_VALUES = "a mapping of field name to one of its values"
FIELD_COUNTS = "a mapping of list field name to [min, max] item counts"
FIELD_CHOICES = "a mapping of field name to a list of its values"
COUNT = "a whole number, 0 or more"

RULE_KINDS: dict[str, dict[str, str]] = {
    "count": {"when": FIELD_VALUES, "count": FIELD_COUNTS},  # list lengths when FIELD is VALUE
    "allowed": {"when": FIELD_VALUES, "allowed": FIELD_CHOICES},  # when FIELD is VALUE, FIELD2 is one of [...]
    "allowed_if_set": {"when_set": FIELD, "allowed": FIELD_CHOICES},  # when FIELD is set, FIELD2 is one of [...]
    "required": {"when": FIELD_VALUES, "required": FIELDS},  # when FIELD is VALUE, these fields are set
    "one_of": {"one_of": FIELDS},  # exactly one of them is set
    "at_most_one": {"at_most_one": FIELDS},  # not more than one
    "total": {"total": FIELDS, "max": COUNT},  # items across lists
    "requires_any": {"requires_any": FIELDS, "if_set": FIELD},  # C needs A or B
}
RULE_OPTIONS = ("warn",)  # any kind: `warn: true` makes it a warning instead of a refusal


def check_models(doc: Any, file: str) -> tuple[dict[str, ModelSpec], list[Problem]]:
    """The model entries of a catalog document (a models file, or a manifest's inline
    ``models:`` mapping — its problems then carry the manifest's lines) and every problem of it.
    An entry with a problem is left out (``refused_names`` lists them)."""
    ck = Checker(file)
    out: dict[str, ModelSpec] = {}
    if doc is None:
        ck.problem(doc, None, "", "has no model entries (a models file maps model names to entries)")
    elif not isinstance(doc, Mapping):
        ck.problem(doc, None, "", f"must map model names to entries, found {kind_of(doc)}")
    else:
        for name, entry in doc.items():
            why = printable_name(name)
            if why:
                ck.problem(doc, name, f"model {show(name)}", f"the name {why}")
                continue
            before = len(ck.problems) + ck.truncated
            _scan_text(ck, doc, name, entry, f"model '{name}'")
            spec = _entry(ck, doc, name, entry)
            if spec is not None and len(ck.problems) + ck.truncated == before:
                out[name] = spec
    return out, ck.sorted()


def _scan_text(ck: Checker, parent: Any, key: Any, v: Any, ctx: str) -> None:
    """Control characters (an escape sequence written as ``"\\e[31m"``) in any text of an entry:
    `batchgen models`, plan and errors print its texts, which must not rewrite the terminal."""
    if isinstance(v, str):
        bad = next((c for c in v if unicodedata.category(c) == "Cc" and c not in "\n\t"), None)
        if bad is not None:
            ck.problem(parent, key, ctx, f"{show(v)} contains the control character {char_name(bad)}")
    elif isinstance(v, Mapping):
        for k, x in v.items():
            _scan_text(ck, v, k, x, ctx)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _scan_text(ck, v, i, x, ctx)


def refused_names(doc: Any, entries: Mapping[str, ModelSpec]) -> set[str]:
    """The model names of ``doc`` that ``check_models`` left out for their problems: a job naming
    one is not then also called an unknown model."""
    return {k for k in doc if isinstance(k, str) and k not in entries} if isinstance(doc, Mapping) else set()



def _entry(ck: Checker, doc: Any, name: str, e: Any) -> ModelSpec | None:
    ctx = f"model '{name}'"
    before = len(ck.problems) + ck.truncated
    if not isinstance(e, Mapping):
        ck.problem(doc, name, ctx, f"an entry is a mapping with `fields:` (and optionally {', '.join(ENTRY_KEYS[3:])})"
                   f", found {kind_of(e)}")
        return None
    ck.unknown_keys(e, ENTRY_KEYS, ctx, "a model entry")
    raw_fields = e.get("fields")
    fields: dict[str, FieldSpec] = {}
    if not isinstance(raw_fields, Mapping) or not raw_fields:
        ck.problem(e, "fields" if "fields" in e else None, ctx,
                   "needs `fields:`, a mapping of each request field to its spec ({type: ...})")
    else:
        for fname, fdoc in raw_fields.items():
            fs = _field(ck, raw_fields, name, fname, fdoc)
            if fs is not None:
                fields[fname] = fs
    known = set(raw_fields) if isinstance(raw_fields, Mapping) else set()

    def names_field(v: Any, node: Any, key: Any, what: str, kinds: tuple[str, ...] | None = None) -> bool:
        if not isinstance(v, str) or v not in known:
            hint = difflib.get_close_matches(str(v), sorted(known), n=1, cutoff=0.6)
            ck.problem(node, key, ctx, f"{what} names {show(v)}, which is not a field of this model"
                       + (f"; did you mean '{hint[0]}'?" if hint else ""))
            return False
        if kinds and v in fields and fields[v].kind not in kinds:
            ck.problem(node, key, ctx, f"{what} names '{v}', {article(fields[v].kind)} field; it must be a "
                       + " or ".join(kinds) + " field")
            return False
        return True

    rules: list[Rule] = []
    raw_rules = e.get("rules")
    if raw_rules is not None and not isinstance(raw_rules, list):
        ck.problem(e, "rules", ctx, "`rules` is a list of rules")
    rule_list: list[Any] = raw_rules if isinstance(raw_rules, list) else []
    for i, r in enumerate(rule_list):
        rule = _rule(ck, rule_list, i, ctx, r, fields, names_field)
        if rule is not None:
            rules.append(rule)

    refs: list[tuple[str, str]] = []
    raw_refs = e.get("refs")
    if raw_refs is not None and not isinstance(raw_refs, Mapping):
        ck.problem(e, "refs", ctx, "`refs` maps a prompt marker (\"@Image\") to a list field")
    for marker, target in (raw_refs.items() if isinstance(raw_refs, Mapping) else ()):
        if not re.fullmatch(r"@[A-Za-z]+", marker):
            ck.problem(raw_refs, marker, ctx, f"`refs` marker {show(marker)} must be @ and letters, like \"@Image\"")
        elif names_field(target, raw_refs, marker, f"`refs` {marker}", ("urls", "list")):
            refs.append((marker, target))

    out_s: Any = e.get("output_seconds", "duration")
    if out_s in ("duration", "input"):
        if out_s == "duration" and known and "duration" not in known:
            ck.problem(e, "output_seconds" if "output_seconds" in e else "fields", ctx,
                       "`output_seconds` is `duration`" + ("" if "output_seconds" in e else " (the default)")
                       + " but the model has no `duration` field: give the output's length in seconds, or `input`")
    elif not is_number(out_s) or out_s < 0:
        ck.problem(e, "output_seconds", ctx, f"`output_seconds` is duration, input or a number of seconds "
                                             f"(finite, 0 or more); got {show(out_s)}")
    tolerance: Any = e.get("duration_tolerance", 0.0)
    if not is_number(tolerance) or tolerance < 0:
        ck.problem(e, "duration_tolerance", ctx, "`duration_tolerance` is a number of seconds (finite, 0 or more); "
                                                 f"got {show(tolerance)}")
    audio = e.get("audio")
    if isinstance(audio, str):
        names_field(audio, e, "audio", "`audio`", ("bool",))
    elif audio is not None and not isinstance(audio, bool):
        ck.problem(e, "audio", ctx, f"`audio` is true, false, null or a bool field's name; got {show(audio)}")
    aspect = e.get("aspect_field", "aspect_ratio")
    if "aspect_field" in e:
        names_field(aspect, e, "aspect_field", "`aspect_field`", ("str",))
    is_open = e.get("open", False)
    if not isinstance(is_open, bool):
        ck.problem(e, "open", ctx, f"`open` is true or false; got {show(is_open)}")
    doc_url = e.get("doc")
    if doc_url is not None and not isinstance(doc_url, str):
        ck.problem(e, "doc", ctx, f"`doc` is the URL of the provider's page; got {show(doc_url)}")
    sources = e.get("sources")
    if sources is not None and (not isinstance(sources, list) or not all(isinstance(s, str) and s for s in sources)):
        ck.problem(e, "sources", ctx, "`sources` is a list of the pages (URLs) the entry was read from")
    read_on = e.get("read_on")
    if isinstance(read_on, datetime.date):  # the shipped file through libyaml (YAML 1.1 dates)
        read_on = read_on.isoformat()
    if read_on is not None and not (isinstance(read_on, str) and _is_date(read_on)):
        ck.problem(e, "read_on", ctx, f"`read_on` is the date the sources were read, YYYY-MM-DD; got {show(read_on)}")
    typical: Any = e.get("typical_render_s")
    if typical is not None and (not is_number(typical) or typical <= 0):
        ck.problem(e, "typical_render_s", ctx, "`typical_render_s` is the seconds a clip typically takes to render "
                                               f"(a finite number above 0); got {show(typical)}")

    if len(ck.problems) + ck.truncated > before:
        return None
    return ModelSpec(name, fields, tuple(rules), tuple(refs), out_s, float(tolerance), audio, str(aspect),
                     is_open, doc_url or (sources[0] if sources else None), tuple(sources or ()), read_on,
                     None if typical is None else float(typical))


def _is_date(s: str) -> bool:
    try:
        datetime.date.fromisoformat(s)
    except ValueError:
        return False
    return re.fullmatch(r"\d{4}-\d{2}-\d{2}", s) is not None


def _field(ck: Checker, node: Any, model: str, fname: Any, d: Any) -> FieldSpec | None:
    why = printable_name(fname)
    if why:
        ck.problem(node, fname, f"model '{model}'", f"field name {show(fname)} {why}")
        return None
    ctx = f"model '{model}', field '{fname}'"
    before = len(ck.problems) + ck.truncated
    if fname == "model":
        ck.problem(node, fname, ctx, "`model` names the model in every request: it cannot be a field of one")
    if not isinstance(d, Mapping) or not isinstance(d.get("type"), str) or d["type"] not in KINDS:
        got = d.get("type") if isinstance(d, Mapping) else d
        ck.problem(d if isinstance(d, Mapping) and "type" in d else node, "type" if isinstance(d, Mapping) and
                   "type" in d else fname, ctx, f"needs `type:` one of {', '.join(KINDS)}; got {show(got)}")
        return None
    kind = KINDS[d["type"]]
    allowed = _COMMON_KEYS + _KIND_KEYS[kind]
    for k in d:
        if k not in allowed:
            other = [t for t, v in KINDS.items() if k in _KIND_KEYS[v]]
            hint = difflib.get_close_matches(str(k), allowed, n=1, cutoff=0.6)
            ck.problem(d, k, ctx, f"`{k}` does not apply to {article(d['type'])} field"
                       + (f" (it does to {', '.join(dict.fromkeys(other))})" if other else "")
                       + (f"; did you mean '{hint[0]}'?" if hint else f"; allowed: {', '.join(allowed)}"))
    required = d.get("required", False)
    if not isinstance(required, bool):
        ck.problem(d, "required", ctx, f"`required` is true or false; got {show(required)}")
    for k in ("min", "max", "max_len", "auto"):
        if k in d and not is_int(d[k]):
            ck.problem(d, k, ctx, f"`{k}` must be a whole number; got {show(d[k])}")
    lo: Any = d.get("min")
    hi: Any = d.get("max")
    if is_int(lo) and is_int(hi) and lo > hi:
        ck.problem(d, "min", ctx, f"`min` {lo} is above `max` {hi}: no value could pass")
    if kind in ("urls", "list"):
        for k in ("min", "max"):
            if is_int(d.get(k)) and d[k] < 0:
                ck.problem(d, k, ctx, f"`{k}` counts items: 0 or more; got {d[k]}")
    if is_int(d.get("max_len")) and d["max_len"] < 1:
        ck.problem(d, "max_len", ctx, f"`max_len` must be 1 or more; got {d['max_len']}")
    choices = d.get("choices")
    if "choices" in d:
        if not isinstance(choices, list) or not choices:
            ck.problem(d, "choices", ctx, "`choices` is a non-empty list of the values allowed")
            choices = None
        else:
            want, type_ok = (("whole numbers", is_int) if kind == "int" else ("text", lambda v: isinstance(v, str)))
            bad = [c for c in choices if not type_ok(c)]
            if bad:
                ck.problem(d, "choices", ctx, f"`choices` of {article(d['type'])} field are {want}; got {show(bad[0])}"
                           + (' (quote "16:9"-like values)' if kind == "int" else ""))
                choices = None
            elif len(set(choices)) != len(choices):
                dup = next(c for i, c in enumerate(choices) if c in choices[:i])
                ck.problem(d, "choices", ctx, f"`choices` lists {show(dup)} twice")
            elif kind == "int" and (is_int(lo) and min(choices) < lo or is_int(hi) and max(choices) > hi):
                ck.problem(d, "choices", ctx, "`choices` go beyond `min`/`max`")
    if d["type"] == "enum" and "choices" not in d:
        ck.problem(d, "type", ctx, "an enum needs `choices`")
    if fname == "duration" and kind == "int":
        # What --max-credits budgets: a negative duration would count as negative credits.
        auto = d.get("auto")
        floor: Any = min(choices) if isinstance(choices, list) and choices and all(map(is_int, choices)) else lo
        if not is_int(floor) or floor < 0:
            ck.problem(d, "min" if "min" in d else "type", ctx,
                       "a duration needs `min:` (0 or more) or `choices:` of 0 or more: --max-credits budgets it")
        if is_int(auto) and not is_int(hi) and not choices:
            ck.problem(d, "auto", ctx, f"`auto: {auto}` is budgeted at the maximum: give `max:` or `choices:`")
    if len(ck.problems) + ck.truncated > before:
        return None
    fs = FieldSpec(kind, required, d.get("default"), tuple(choices) if choices is not None else None,
                   lo, hi, d.get("max_len"), d.get("auto"))
    if "default" in d and d["default"] is not None:
        err = check_value(fs, d["default"])
        if err:
            ck.problem(d, "default", ctx, f"the default {err.replace('must', 'must itself', 1)}")
            return None
    return fs


def _rule(ck: Checker, node: list[Any], i: int, ctx: str, r: Any, fields: dict[str, FieldSpec],
          names_field: Callable[..., bool]) -> Rule | None:
    kinds = "; ".join("{" + ", ".join(shape) + "}" for shape in RULE_KINDS.values())
    if not isinstance(r, Mapping):
        ck.problem(node, i, ctx, f"a rule is a mapping, one of: {kinds}; got {show(r)}")
        return None
    keys = set(r) - set(RULE_OPTIONS)
    kind = next((k for k, shape in RULE_KINDS.items() if set(shape) == keys), None)
    if kind is None:
        ck.problem(node, i, ctx, f"rule {i + 1} has keys {', '.join(sorted(map(str, r)))}: a rule is one of {kinds} "
                                 "(with `warn: true` to only warn)")
        return None
    before = len(ck.problems) + ck.truncated
    warn = r.get("warn", False)
    if not isinstance(warn, bool):
        ck.problem(r, "warn", ctx, f"`warn` is true or false; got {show(warn)}")
    values: dict[str, Any] = {}
    for key, shape in RULE_KINDS[kind].items():
        values[key] = _rule_arg(ck, r, key, shape, ctx, fields, names_field)
    if len(ck.problems) + ck.truncated > before:
        return None
    return Rule(**values, warn=warn)


def _rule_arg(ck: Checker, r: Mapping[str, Any], key: str, shape: str, ctx: str, fields: dict[str, FieldSpec],
              names_field: Callable[..., bool]) -> Any:
    v = r[key]
    what = f"rule `{key}`"

    def bad() -> None:
        ck.problem(r, key, ctx, f"{what} is {shape}; got {show(v)}")

    if shape == COUNT:
        if not is_int(v) or v < 0:
            bad()
        return v
    if shape == FIELD:
        if not isinstance(v, str):
            bad()
        else:
            names_field(v, r, key, what)
        return v
    if shape == FIELDS:
        if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
            bad()
            return ()
        for x in v:
            names_field(x, r, key, what)
        if len(set(v)) != len(v):
            ck.problem(r, key, ctx, f"{what} lists a field twice")
        return tuple(v)
    if not isinstance(v, Mapping) or not v:
        bad()
        return ()
    out: list[Any] = []
    for f, x in v.items():
        if not names_field(f, v, f, what, ("urls", "list") if shape == FIELD_COUNTS else None):
            continue
        if shape == FIELD_VALUES:
            err = check_value(fields[f], x) if f in fields else None
            if err:
                ck.problem(v, f, ctx, f"{what}: '{f}' is never {show(x)}: it {err}")
            out.append((f, x))
        elif shape == FIELD_COUNTS:
            if not (isinstance(x, list) and len(x) == 2 and all(is_int(n) and n >= 0 for n in x) and x[0] <= x[1]):
                ck.problem(v, f, ctx, f"{what}: '{f}' takes [min, max] item counts, 0 ≤ min ≤ max; got {show(x)}")
            else:
                out.append((f, x[0], x[1]))
        elif shape == FIELD_CHOICES:
            if not isinstance(x, list) or not x:
                ck.problem(v, f, ctx, f"{what}: '{f}' takes a non-empty list of its values; got {show(x)}")
                continue
            for c in x:
                err = check_value(fields[f], c) if f in fields else None
                if err:
                    ck.problem(v, f, ctx, f"{what}: '{f}' is never {show(c)}: it {err}")
            out.append((f, tuple(x)))
    return tuple(out)

