"""The data files batchgen reads besides manifests, through one door: model catalogs (the
shipped ``models.yaml``, ``--models FILE``, a manifest's ``models:`` file or inline mapping) and
price tables (the shipped ``prices.yaml``, ``--prices FILE``).

* Only a regular file is read: a FIFO, a device (``/dev/zero``), a directory or a symlink loop is
  refused before a byte is read, and at most ``MAX_BYTES`` (128 KiB) of it (a catalog is a few
  KB; an 11 MB one is a mistake or an attack, and took a minute and a GB to parse).
* It is parsed with the manifests' YAML 1.2 loader (``yamlsafe``): ``16:9`` stays text, ``no`` is
  not false, a date stays text; aliases (which let a few lines expand into gigabytes), tags and
  ``.nan``/``.inf`` are refused.
* Every entry is checked against the shape documented in models.yaml's header and EVERY problem
  is reported at once, each with its file, line and column (``DataFileError``, exit 2), as the
  manifest loader does. A file that loads means what it says: no key twice, no ``min`` above
  ``max``, no default outside its own choices or range, no rule naming a field the model does not
  have, ``required`` only ``true``/``false``, names without control characters (they are printed),
  and prices, output lengths and durations finite and ≥ 0 (``--max-credits`` adds them up).

Cross-field rules are checked through one table, ``RULE_KINDS`` (kind → its keys → the shape of
each key's value): a new kind of rule is a row there, a field of ``specs.Rule`` and its check in
``specs._broken``.

The shipped files are parsed with libyaml's safe loader (every command reads them: ~4× faster
than the pure-Python loader) and checked by the same code; a test checks that they read
identically under yamlsafe (tests/test_datafiles.py).
"""

from __future__ import annotations

import datetime
import difflib
import math
import os
import re
import stat
import unicodedata
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from . import yamlsafe
from .errors import DataFileError, Problem
from .specs import FieldSpec, ModelSpec, Rule, _check

# The shipped catalog of every model is ~15 KB. The YAML 1.2 loader is pure Python (~25 µs a
# token): 128 KiB of the densest YAML still parses in about a second, where the 11 MB file of
# issue 19 took a minute and a GB.
MAX_BYTES = 128 * 1024
MAX_PROBLEMS = 200
# libyaml's safe loader where PyYAML has it (see the module docstring): shipped files only.
_FAST_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

KINDS = {"text": "str", "enum": "str", "str": "str", "int": "int", "bool": "bool", "url": "url", "urls": "urls",
         "list": "list", "object": "object"}
# The keys a field spec may have, by the kind of value it holds (a key that would be silently
# ignored for that kind is refused instead).
_COMMON_KEYS = ("type", "required", "default")
_KIND_KEYS = {"str": ("choices", "max_len"), "int": ("choices", "min", "max", "auto"), "urls": ("min", "max"),
              "list": ("max",), "bool": (), "url": (), "object": ()}
ENTRY_KEYS = ("doc", "sources", "read_on", "fields", "rules", "refs", "output_seconds", "duration_tolerance",
              "audio", "aspect_field", "open")
PRICE_KEYS = ("unit", "per_second", "assumed_seconds")

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

T = TypeVar("T")


def _printable_name(v: Any) -> str | None:
    """Why ``v`` cannot be a model or field name, or None. Names are printed (plan, models,
    errors): a control character or an escape sequence in one would rewrite the terminal."""
    if not isinstance(v, str) or not v:
        return "must be non-empty text"
    if len(v) > 200:
        return f"is {len(v)} characters long (at most 200)"
    bad = next((c for c in v if unicodedata.category(c)[0] in "CZ"), None)  # control, format, spaces
    if bad is not None:
        return f"contains {_char(bad)}: names are printed, so they hold no spaces or control characters"
    return None


def _char(c: str) -> str:
    name = unicodedata.name(c, "")
    return f"U+{ord(c):04X}" + (f" ({name})" if name else "")


def _show(v: Any) -> str:
    """A value as a message may print it (repr escapes control characters; long ones are cut)."""
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


# --------------------------------------------------------------------------- reading a file
def read_text(path: str | os.PathLike[str], subject: str) -> str:
    """The text of ``path``, a regular UTF-8 file of at most ``MAX_BYTES``; anything else is a
    ``DataFileError`` saying why (``subject``: "the models file", "the price table")."""
    name = os.fspath(path)

    def refuse(where: str, msg: str) -> DataFileError:
        return DataFileError([Problem(name, where, None, msg)], subject=subject)

    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise refuse("file", f"cannot read it: {e.strerror or e}") from None
    except ValueError as e:  # a NUL byte in the path
        raise refuse("file", f"cannot read it: {e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                    else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
            raise refuse("file", f"is {kind}; give a YAML file")
        if st.st_size > MAX_BYTES:
            raise refuse("file", f"is {st.st_size} bytes; {subject}s are limited to {MAX_BYTES} bytes, which "
                                 "parse in about a second (the shipped catalog of every model is ~15 KB): is this "
                                 "the right file?")
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_BYTES:  # a file that grows while read is cut at the limit too
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError as e:
        raise refuse("file", f"cannot read it: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise refuse("file", f"is more than {MAX_BYTES} bytes; {subject}s are limited to that")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise refuse(f"line {line}",
                     f"is not UTF-8 text (byte 0x{data[e.start]:02x}): is this a YAML file?") from None


def parse(text: str, file: str, subject: str, *, trusted: bool = False) -> tuple[Any, list[Problem]]:
    """``text`` parsed by yamlsafe: (document, problems with file, line and column)."""
    doc, yps = yamlsafe.load(text, kind=subject.removeprefix("the "), trusted=trusted)
    problems = [Problem(file, f"line {yp.line}" + (f", column {yp.column}" if yp.column else ""), yp.field,
                        yp.message) for yp in yps]
    return doc, problems


# --------------------------------------------------------------------------- checking
class _Checker:
    """Collects every problem of one document, each placed by the line and column yamlsafe kept
    (a document parsed without them — the shipped files — says "file")."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self.truncated = 0

    def at(self, node: Any, key: Any = None) -> str:
        line = col = None
        if isinstance(node, yamlsafe.Mapping) and isinstance(key, str) and key in node.key_lines:
            line, col = node.key_lines[key], node.key_columns.get(key)
        elif isinstance(node, yamlsafe.Sequence) and isinstance(key, int) and key < len(node.item_lines):
            line, col = node.item_lines[key], node.item_columns[key]
        elif getattr(node, "line", 0):
            line = node.line
        if line is None:
            return "file"
        return f"line {line}" + (f", column {col}" if col else "")

    def problem(self, node: Any, key: Any, context: str, msg: str) -> None:
        if len(self.problems) >= MAX_PROBLEMS:
            self.truncated += 1
            return
        self.problems.append(Problem(self.file, self.at(node, key), None, f"{context}: {msg}" if context else msg))

    def sorted(self) -> list[Problem]:
        """The problems in the file's order (then the count of those left out)."""
        def key(p: Problem) -> tuple[int, int]:
            nums = [int(n) for n in re.findall(r"\d+", p.where)] + [0, 0]
            return nums[0], nums[1]
        out = sorted(self.problems, key=key)
        if self.truncated:
            out.append(Problem(self.file, "file", None, f"… and {self.truncated} more problem(s)"))
        return out

    def unknown_keys(self, node: Mapping[str, Any], allowed: tuple[str, ...], context: str, what: str) -> None:
        for k in node:
            if k not in allowed:
                hint = difflib.get_close_matches(str(k), allowed, n=1, cutoff=0.6)
                self.problem(node, k, context, f"unknown key {_show(k)} in {what}"
                             + (f"; did you mean '{hint[0]}'?" if hint else f" (allowed: {', '.join(allowed)})"))


def check_models(doc: Any, file: str) -> tuple[dict[str, ModelSpec], list[Problem]]:
    """The model entries of a catalog document (a models file, or a manifest's inline
    ``models:`` mapping — its problems then carry the manifest's lines) and every problem of it.
    An entry with a problem is left out (``refused_names`` lists them)."""
    ck = _Checker(file)
    out: dict[str, ModelSpec] = {}
    if doc is None:
        ck.problem(doc, None, "", "has no model entries (a models file maps model names to entries)")
    elif not isinstance(doc, Mapping):
        ck.problem(doc, None, "", f"must map model names to entries, found {_kind_of(doc)}")
    else:
        for name, entry in doc.items():
            why = _printable_name(name)
            if why:
                ck.problem(doc, name, f"model {_show(name)}", f"the name {why}")
                continue
            before = len(ck.problems) + ck.truncated
            _scan_text(ck, doc, name, entry, f"model '{name}'")
            spec = _entry(ck, doc, name, entry)
            if spec is not None and len(ck.problems) + ck.truncated == before:
                out[name] = spec
    return out, ck.sorted()


def _scan_text(ck: _Checker, parent: Any, key: Any, v: Any, ctx: str) -> None:
    """Control characters (an escape sequence written as ``"\\e[31m"``) in any text of an entry:
    `batchgen models`, plan and errors print its texts, which must not rewrite the terminal."""
    if isinstance(v, str):
        bad = next((c for c in v if unicodedata.category(c) == "Cc" and c not in "\n\t"), None)
        if bad is not None:
            ck.problem(parent, key, ctx, f"{_show(v)} contains the control character {_char(bad)}")
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


def _kind_of(v: Any) -> str:
    if v is None:
        return "nothing"
    if isinstance(v, bool):
        return "true/false"
    if isinstance(v, int | float):
        return f"the number {v}"
    if isinstance(v, str):
        return "text"  # not echoed: a file given by mistake (a .env) must not have its secrets printed
    return "a mapping" if isinstance(v, Mapping) else "a list" if isinstance(v, list) else type(v).__name__


def _entry(ck: _Checker, doc: Any, name: str, e: Any) -> ModelSpec | None:
    ctx = f"model '{name}'"
    before = len(ck.problems) + ck.truncated
    if not isinstance(e, Mapping):
        ck.problem(doc, name, ctx, f"an entry is a mapping with `fields:` (and optionally {', '.join(ENTRY_KEYS[3:])})"
                   f", found {_kind_of(e)}")
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
            ck.problem(node, key, ctx, f"{what} names {_show(v)}, which is not a field of this model"
                       + (f"; did you mean '{hint[0]}'?" if hint else ""))
            return False
        if kinds and v in fields and fields[v].kind not in kinds:
            ck.problem(node, key, ctx, f"{what} names '{v}', {_a(fields[v].kind)} field; it must be a "
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
            ck.problem(raw_refs, marker, ctx, f"`refs` marker {_show(marker)} must be @ and letters, like \"@Image\"")
        elif names_field(target, raw_refs, marker, f"`refs` {marker}", ("urls", "list")):
            refs.append((marker, target))

    out_s: Any = e.get("output_seconds", "duration")
    if out_s in ("duration", "input"):
        if out_s == "duration" and known and "duration" not in known:
            ck.problem(e, "output_seconds" if "output_seconds" in e else "fields", ctx,
                       "`output_seconds` is `duration`" + ("" if "output_seconds" in e else " (the default)")
                       + " but the model has no `duration` field: give the output's length in seconds, or `input`")
    elif not _is_number(out_s) or out_s < 0:
        ck.problem(e, "output_seconds", ctx, f"`output_seconds` is duration, input or a number of seconds "
                                             f"(finite, 0 or more); got {_show(out_s)}")
    tolerance: Any = e.get("duration_tolerance", 0.0)
    if not _is_number(tolerance) or tolerance < 0:
        ck.problem(e, "duration_tolerance", ctx, "`duration_tolerance` is a number of seconds (finite, 0 or more); "
                                                 f"got {_show(tolerance)}")
    audio = e.get("audio")
    if isinstance(audio, str):
        names_field(audio, e, "audio", "`audio`", ("bool",))
    elif audio is not None and not isinstance(audio, bool):
        ck.problem(e, "audio", ctx, f"`audio` is true, false, null or a bool field's name; got {_show(audio)}")
    aspect = e.get("aspect_field", "aspect_ratio")
    if "aspect_field" in e:
        names_field(aspect, e, "aspect_field", "`aspect_field`", ("str",))
    is_open = e.get("open", False)
    if not isinstance(is_open, bool):
        ck.problem(e, "open", ctx, f"`open` is true or false; got {_show(is_open)}")
    doc_url = e.get("doc")
    if doc_url is not None and not isinstance(doc_url, str):
        ck.problem(e, "doc", ctx, f"`doc` is the URL of the provider's page; got {_show(doc_url)}")
    sources = e.get("sources")
    if sources is not None and (not isinstance(sources, list) or not all(isinstance(s, str) and s for s in sources)):
        ck.problem(e, "sources", ctx, "`sources` is a list of the pages (URLs) the entry was read from")
    read_on = e.get("read_on")
    if isinstance(read_on, datetime.date):  # the shipped file through libyaml (YAML 1.1 dates)
        read_on = read_on.isoformat()
    if read_on is not None and not (isinstance(read_on, str) and _is_date(read_on)):
        ck.problem(e, "read_on", ctx, f"`read_on` is the date the sources were read, YYYY-MM-DD; got {_show(read_on)}")

    if len(ck.problems) + ck.truncated > before:
        return None
    return ModelSpec(name, fields, tuple(rules), tuple(refs), out_s, float(tolerance), audio, str(aspect),
                     is_open, doc_url or (sources[0] if sources else None), tuple(sources or ()), read_on)


def _is_date(s: str) -> bool:
    try:
        datetime.date.fromisoformat(s)
    except ValueError:
        return False
    return re.fullmatch(r"\d{4}-\d{2}-\d{2}", s) is not None


def _field(ck: _Checker, node: Any, model: str, fname: Any, d: Any) -> FieldSpec | None:
    why = _printable_name(fname)
    if why:
        ck.problem(node, fname, f"model '{model}'", f"field name {_show(fname)} {why}")
        return None
    ctx = f"model '{model}', field '{fname}'"
    before = len(ck.problems) + ck.truncated
    if fname == "model":
        ck.problem(node, fname, ctx, "`model` names the model in every request: it cannot be a field of one")
    if not isinstance(d, Mapping) or not isinstance(d.get("type"), str) or d["type"] not in KINDS:
        got = d.get("type") if isinstance(d, Mapping) else d
        ck.problem(d if isinstance(d, Mapping) and "type" in d else node, "type" if isinstance(d, Mapping) and
                   "type" in d else fname, ctx, f"needs `type:` one of {', '.join(KINDS)}; got {_show(got)}")
        return None
    kind = KINDS[d["type"]]
    allowed = _COMMON_KEYS + _KIND_KEYS[kind]
    for k in d:
        if k not in allowed:
            other = [t for t, v in KINDS.items() if k in _KIND_KEYS[v]]
            hint = difflib.get_close_matches(str(k), allowed, n=1, cutoff=0.6)
            ck.problem(d, k, ctx, f"`{k}` does not apply to {_a(d['type'])} field"
                       + (f" (it does to {', '.join(dict.fromkeys(other))})" if other else "")
                       + (f"; did you mean '{hint[0]}'?" if hint else f"; allowed: {', '.join(allowed)}"))
    required = d.get("required", False)
    if not isinstance(required, bool):
        ck.problem(d, "required", ctx, f"`required` is true or false; got {_show(required)}")
    for k in ("min", "max", "max_len", "auto"):
        if k in d and not _is_int(d[k]):
            ck.problem(d, k, ctx, f"`{k}` must be a whole number; got {_show(d[k])}")
    lo: Any = d.get("min")
    hi: Any = d.get("max")
    if _is_int(lo) and _is_int(hi) and lo > hi:
        ck.problem(d, "min", ctx, f"`min` {lo} is above `max` {hi}: no value could pass")
    if kind in ("urls", "list"):
        for k in ("min", "max"):
            if _is_int(d.get(k)) and d[k] < 0:
                ck.problem(d, k, ctx, f"`{k}` counts items: 0 or more; got {d[k]}")
    if _is_int(d.get("max_len")) and d["max_len"] < 1:
        ck.problem(d, "max_len", ctx, f"`max_len` must be 1 or more; got {d['max_len']}")
    choices = d.get("choices")
    if "choices" in d:
        if not isinstance(choices, list) or not choices:
            ck.problem(d, "choices", ctx, "`choices` is a non-empty list of the values allowed")
            choices = None
        else:
            want, type_ok = (("whole numbers", _is_int) if kind == "int" else ("text", lambda v: isinstance(v, str)))
            bad = [c for c in choices if not type_ok(c)]
            if bad:
                ck.problem(d, "choices", ctx, f"`choices` of {_a(d['type'])} field are {want}; got {_show(bad[0])}"
                           + (' (quote "16:9"-like values)' if kind == "int" else ""))
                choices = None
            elif len(set(choices)) != len(choices):
                dup = next(c for i, c in enumerate(choices) if c in choices[:i])
                ck.problem(d, "choices", ctx, f"`choices` lists {_show(dup)} twice")
            elif kind == "int" and (_is_int(lo) and min(choices) < lo or _is_int(hi) and max(choices) > hi):
                ck.problem(d, "choices", ctx, "`choices` go beyond `min`/`max`")
    if d["type"] == "enum" and "choices" not in d:
        ck.problem(d, "type", ctx, "an enum needs `choices`")
    if fname == "duration" and kind == "int":
        # What --max-credits budgets: a negative duration would count as negative credits.
        auto = d.get("auto")
        floor: Any = min(choices) if isinstance(choices, list) and choices and all(map(_is_int, choices)) else lo
        if not _is_int(floor) or floor < 0:
            ck.problem(d, "min" if "min" in d else "type", ctx,
                       "a duration needs `min:` (0 or more) or `choices:` of 0 or more: --max-credits budgets it")
        if _is_int(auto) and not _is_int(hi) and not choices:
            ck.problem(d, "auto", ctx, f"`auto: {auto}` is budgeted at the maximum: give `max:` or `choices:`")
    if len(ck.problems) + ck.truncated > before:
        return None
    fs = FieldSpec(kind, required, d.get("default"), tuple(choices) if choices is not None else None,
                   lo, hi, d.get("max_len"), d.get("auto"))
    if "default" in d and d["default"] is not None:
        err = _check(fs, d["default"])
        if err:
            ck.problem(d, "default", ctx, f"the default {err.replace('must', 'must itself', 1)}")
            return None
    return fs


def _rule(ck: _Checker, node: list[Any], i: int, ctx: str, r: Any, fields: dict[str, FieldSpec],
          names_field: Callable[..., bool]) -> Rule | None:
    kinds = "; ".join("{" + ", ".join(shape) + "}" for shape in RULE_KINDS.values())
    if not isinstance(r, Mapping):
        ck.problem(node, i, ctx, f"a rule is a mapping, one of: {kinds}; got {_show(r)}")
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
        ck.problem(r, "warn", ctx, f"`warn` is true or false; got {_show(warn)}")
    values: dict[str, Any] = {}
    for key, shape in RULE_KINDS[kind].items():
        values[key] = _rule_arg(ck, r, key, shape, ctx, fields, names_field)
    if len(ck.problems) + ck.truncated > before:
        return None
    return Rule(**values, warn=warn)


def _rule_arg(ck: _Checker, r: Mapping[str, Any], key: str, shape: str, ctx: str, fields: dict[str, FieldSpec],
              names_field: Callable[..., bool]) -> Any:
    v = r[key]
    what = f"rule `{key}`"

    def bad() -> None:
        ck.problem(r, key, ctx, f"{what} is {shape}; got {_show(v)}")

    if shape == COUNT:
        if not _is_int(v) or v < 0:
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
            err = _check(fields[f], x) if f in fields else None
            if err:
                ck.problem(v, f, ctx, f"{what}: '{f}' is never {_show(x)}: it {err}")
            out.append((f, x))
        elif shape == FIELD_COUNTS:
            if not (isinstance(x, list) and len(x) == 2 and all(_is_int(n) and n >= 0 for n in x) and x[0] <= x[1]):
                ck.problem(v, f, ctx, f"{what}: '{f}' takes [min, max] item counts, 0 ≤ min ≤ max; got {_show(x)}")
            else:
                out.append((f, x[0], x[1]))
        elif shape == FIELD_CHOICES:
            if not isinstance(x, list) or not x:
                ck.problem(v, f, ctx, f"{what}: '{f}' takes a non-empty list of its values; got {_show(x)}")
                continue
            for c in x:
                err = _check(fields[f], c) if f in fields else None
                if err:
                    ck.problem(v, f, ctx, f"{what}: '{f}' is never {_show(c)}: it {err}")
            out.append((f, tuple(x)))
    return tuple(out)


# --------------------------------------------------------------------------- price tables
PriceDoc = tuple[dict[str, dict[str, float]], dict[str, float], str | None]


def check_prices(doc: Any, file: str) -> tuple[PriceDoc, list[Problem]]:
    """(per_second, assumed_seconds, unit or None) of a price table document, and every problem:
    each price and each number of seconds must be a finite number, 0 or more (``--max-credits``
    adds them up: a ``.nan`` or a negative one would let a run spend without a limit)."""
    ck = _Checker(file)
    per: dict[str, dict[str, float]] = {}
    assumed: dict[str, float] = {}
    unit: str | None = None
    if not isinstance(doc, Mapping):
        ck.problem(doc, None, "", "a price table is a mapping with `per_second:` (model → resolution → credits per "
                                  "second), optionally `assumed_seconds:` and `unit:`; found "
                                  + ("nothing" if doc is None else _kind_of(doc)))
        return (per, assumed, unit), ck.sorted()
    ck.unknown_keys(doc, PRICE_KEYS, "", "a price table")
    if "unit" in doc:
        u = doc["unit"]
        why = _printable_name(u) if isinstance(u, str) else "must be text"
        if why:
            ck.problem(doc, "unit", "", f"`unit` {why}")
        else:
            unit = u

    def model_map(key: str) -> Mapping[str, Any]:
        m = doc.get(key)
        if m is None:
            return {}
        if not isinstance(m, Mapping):
            ck.problem(doc, key, "", f"`{key}` maps model names to " + ("{resolution: credits per second}"
                                                                         if key == "per_second" else "seconds"))
            return {}
        for name in m:
            why = _printable_name(name)
            if why:
                ck.problem(m, name, f"`{key}`", f"model name {_show(name)} {why}")
        return m

    def number(node: Any, k: str, v: Any, ctx: str) -> float | None:
        if not _is_number(v) or v < 0:
            ck.problem(node, k, ctx, f"must be a finite number, 0 or more; got {_show(v)}")
            return None
        return float(v)

    prices = model_map("per_second")
    if "per_second" not in doc:
        ck.problem(doc, None, "", "has no `per_second:` (model → resolution → credits per second)")
    for model, rates in prices.items():
        ctx = f"per_second '{model}'"
        if not isinstance(rates, Mapping) or not rates:
            ck.problem(prices, model, ctx, "maps each resolution (or `default`) to credits per second, "
                                           f"e.g. {{720p: 1.4, default: 1.4}}; got {_show(rates)}")
            continue
        table = {}
        for res, v in rates.items():
            why = _printable_name(res)
            if why:
                ck.problem(rates, res, ctx, f"resolution {_show(res)} {why}")
                continue
            n = number(rates, res, v, f"{ctx}, {res}")
            if n is not None:
                table[res] = n
        if isinstance(model, str):
            per[model] = table
    seconds = model_map("assumed_seconds")
    for model, v in seconds.items():
        n = number(seconds, model, v, f"assumed_seconds '{model}'")
        if n is not None and isinstance(model, str):
            assumed[model] = n
    return (per, assumed, unit), ck.sorted()


# --------------------------------------------------------------------------- entry points
def _read_checked(path: str | os.PathLike[str], subject: str, check: Callable[[Any, str], tuple[T, list[Problem]]]) -> T:
    """Read, parse and check one data file: its value, or ``DataFileError`` with every problem
    of it (the parser's and the checker's together)."""
    file = os.fspath(path)
    doc, problems = parse(read_text(file, subject), file, subject)
    if doc is not None or not problems:
        value, more = check(doc, file)
        problems += more
    if problems:
        raise DataFileError(problems, subject=subject)
    return value


def read_models(path: str | os.PathLike[str]) -> dict[str, ModelSpec]:
    """A models file's entries, or ``DataFileError`` with every problem of it."""
    return _read_checked(path, "the models file", check_models)


def read_prices(path: str | os.PathLike[str]) -> PriceDoc:
    """A price table's (per_second, assumed_seconds, unit), or ``DataFileError``."""
    return _read_checked(path, "the price table", check_prices)


def _shipped_text(name: str) -> str:
    return resources.files("batchgen").joinpath(name).read_text(encoding="utf-8")


def shipped_models() -> dict[str, ModelSpec]:
    """The shipped catalog (libyaml, checked; on a problem, parsed again by yamlsafe to say where)."""
    entries, problems = check_models(yaml.load(_shipped_text("models.yaml"), Loader=_FAST_LOADER), "models.yaml")
    if problems:
        doc, problems = parse(_shipped_text("models.yaml"), "models.yaml", "the models file", trusted=True)
        raise DataFileError(problems + check_models(doc, "models.yaml")[1], subject="the shipped models.yaml")
    return entries


def shipped_prices() -> PriceDoc:
    table, problems = check_prices(yaml.load(_shipped_text("prices.yaml"), Loader=_FAST_LOADER), "prices.yaml")
    if problems:
        doc, problems = parse(_shipped_text("prices.yaml"), "prices.yaml", "the price table", trusted=True)
        raise DataFileError(problems + check_prices(doc, "prices.yaml")[1], subject="the shipped prices.yaml")
    return table


def shipped_path(name: str) -> Path:
    return Path(str(resources.files("batchgen").joinpath(name)))


__all__ = ["FIELD", "FIELDS", "FIELD_CHOICES", "FIELD_COUNTS", "FIELD_VALUES", "COUNT", "KINDS", "MAX_BYTES",
           "RULE_KINDS", "check_models", "check_prices", "parse", "read_models", "read_prices", "read_text",
           "shipped_models", "shipped_prices"]
