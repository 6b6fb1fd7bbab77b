"""The YAML dialect of manifests, model catalogs and price tables: safe, YAML 1.2 core scalars,
and loud about ambiguity.

PyYAML implements YAML 1.1, whose implicit typing silently renders something other than what a
manifest says: ``duration: 010`` is 8 (octal), ``name: no`` is ``False``, ``on:`` is the key
``True``, ``aspect_ratio: 16:9`` is 969 (base 60) and ``2024-05-01`` a date. Manifests are read
with the YAML 1.2 core schema instead (only ``true``/``false`` are booleans, ``~``/``null`` and
empty are null, integers are decimal, ``0o``-octal or ``0x``-hex, everything else is text), and
these forms are refused with a message rather than reinterpreted:

* duplicate keys (the last would silently win), keys that are not text (``1:``, ``~:``);
* aliases, anchors used as ``<<`` merge keys (use ``defaults:``), explicit tags other than the
  core ones (``!!binary``, ``!!timestamp``, ``!!set``…), ``.nan``/``.inf``;
* lone UTF-16 surrogate escapes (``"\\ud83c"``), which no file name or JSON body can carry;
* control characters, more than one document, nesting deeper than ``MAX_DEPTH``.

``load`` returns the document built from ``Mapping``/``Sequence`` (dict/list subclasses that
remember the line of every key and item) and every problem found, each with its line.
Imports nothing else of batchgen.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")
_CORE_TAGS = frozenset("tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "seq", "map"))


@dataclass(frozen=True)
class YamlProblem:
    line: int
    field: str | None
    message: str
    column: int | None = None


class Mapping(dict[str, Any]):
    """A YAML mapping that remembers where it and each of its keys start (1-based lines)."""

    line: int = 0
    key_lines: dict[str, int]
    key_columns: dict[str, int]  # 1-based column of each key (for messages naming line and column)


class Sequence(list[Any]):
    """A YAML sequence that remembers where it and each of its items start (1-based lines)."""

    line: int = 0
    item_lines: list[int]
    item_columns: list[int]


class _Resolver(yaml.resolver.BaseResolver):
    """Implicit types of the YAML 1.2 core schema (§10.3.2); no merge key, no timestamp."""


for _tag, _regexp, _first in (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
     "-+.0123456789"),
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
):
    _Resolver.add_implicit_resolver("tag:yaml.org,2002:" + _tag, re.compile(_regexp), list(_first))


# Why aliases and merge keys are refused, and what to write instead. (They would also let a few
# lines expand into gigabytes: "billion laughs".)
_HINTS = {True: ": put fields shared by every row under `defaults:`",
          False: ": write the value out where it is used"}


class _Constructor(SafeConstructor):
    problems: list[YamlProblem]
    kind: str  # "manifest", "models file", "price table": the words of the messages
    trusted: bool  # batchgen's own shipped files: aliases and merge keys allowed (they use them)

    def construct_scalar(self, node: Any) -> Any:
        value = super().construct_scalar(node)
        if isinstance(value, str) and _SURROGATE.search(value):
            bad = _SURROGATE.search(value)
            assert bad is not None
            self.problems.append(YamlProblem(
                node.start_mark.line + 1, None,
                f"contains a lone UTF-16 surrogate escape (\\u{ord(bad.group()):04x}); write the character "
                "itself, or a full \\U escape", node.start_mark.column + 1))
            return _SURROGATE.sub("\ufffd", value)
        return value

    def construct_yaml_int(self, node: Any) -> int:
        text = str(self.construct_scalar(node)).replace("_", "")
        try:
            if text.startswith("0o"):
                return int(text[2:], 8)
            if text.startswith("0x"):
                return int(text[2:], 16)
            return int(text, 10)
        except ValueError:
            raise ConstructorError(None, None, f"{text!r} is not an integer", node.start_mark) from None

    def construct_yaml_float(self, node: Any) -> float:
        text = str(self.construct_scalar(node))
        value = float(text.lower().replace(".inf", "inf").replace(".nan", "nan"))
        if not math.isfinite(value):
            raise ConstructorError(None, None, f"{text} is not a finite number; batchgen's YAML takes plain numbers",
                                   node.start_mark)
        return value

    def construct_yaml_bool(self, node: Any) -> bool:
        text = str(self.construct_scalar(node))
        if text.lower() not in ("true", "false"):
            raise ConstructorError(None, None, f"{text!r} is not true or false", node.start_mark)
        return text.lower() == "true"

    def construct_mapping(self, node: Any, deep: bool = False) -> Mapping:  # type: ignore[override]
        if not isinstance(node, MappingNode):
            raise ConstructorError(None, None, f"expected a mapping, found {node.id}", node.start_mark)
        out = Mapping()
        out.line = node.start_mark.line + 1
        out.key_lines = {}
        out.key_columns = {}
        merged: list[tuple[int, Node]] = []  # `<<: *base` (trusted files only)
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            key = self.construct_object(key_node, deep=True)
            if key == "<<" and key_node.tag == "tag:yaml.org,2002:str" and isinstance(key_node, ScalarNode) \
                    and key_node.style is None:
                if self.trusted:
                    merged.append((line, value_node))
                    continue
                self.problems.append(YamlProblem(line, None, f"merge keys (<<) are not supported in {self.kind}s"
                                                             + _HINTS[self.kind == "manifest"]))
                continue
            if not isinstance(key, str):
                shown = "~ (null)" if key is None else repr(key)
                self.problems.append(YamlProblem(line, None, f"field names must be text, got {shown}; quote it "
                                                             "if it is meant as a name"))
                continue
            if key in out.key_lines:
                self.problems.append(YamlProblem(line, key, f"appears twice in one mapping (lines "
                                                            f"{out.key_lines[key]} and {line}): the second would "
                                                            "silently replace the first"))
                continue
            out.key_lines[key] = line
            out.key_columns[key] = key_node.start_mark.column + 1
            out[key] = self.construct_object(value_node, deep=True)
        # YAML 1.1 merge: keys written in the mapping win, then the first merged mapping's.
        for line, value_node in merged:
            for src in value_node.value if isinstance(value_node, SequenceNode) else [value_node]:
                for k, v in self.construct_mapping(src, deep=True).items():
                    if k not in out:
                        out[k] = v
                        out.key_lines[k] = line
                        out.key_columns[k] = 1
        return out

    def construct_sequence(self, node: Any, deep: bool = False) -> Sequence:
        if not isinstance(node, SequenceNode):
            raise ConstructorError(None, None, f"expected a sequence, found {node.id}", node.start_mark)
        out = Sequence(self.construct_object(child, deep=True) for child in node.value)
        out.line = node.start_mark.line + 1
        out.item_lines = [child.start_mark.line + 1 for child in node.value]
        out.item_columns = [child.start_mark.column + 1 for child in node.value]
        return out

    def construct_yaml_map(self, node: Any) -> Any:
        yield self.construct_mapping(node)

    def construct_yaml_seq(self, node: Any) -> Any:
        yield self.construct_sequence(node)

    def construct_refused(self, node: Any) -> Any:
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise ConstructorError(None, None, f"explicit YAML tag {tag} is not supported in {self.kind}s (plain text, "
                                           "numbers, true/false, lists and mappings only)", node.start_mark)


for _tag, _fn in (("bool", _Constructor.construct_yaml_bool), ("int", _Constructor.construct_yaml_int),
                  ("float", _Constructor.construct_yaml_float), ("map", _Constructor.construct_yaml_map),
                  ("seq", _Constructor.construct_yaml_seq)):
    _Constructor.add_constructor("tag:yaml.org,2002:" + _tag, _fn)  # type: ignore[type-var]
for _tag in ("binary", "timestamp", "omap", "pairs", "set", "merge", "value", "yaml"):
    _Constructor.add_constructor("tag:yaml.org,2002:" + _tag, _Constructor.construct_refused)  # type: ignore[type-var]
_Constructor.add_constructor(None, _Constructor.construct_refused)  # type: ignore[type-var]  # any other tag


class _Loader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, yaml.composer.Composer,
              _Constructor, _Resolver):
    def __init__(self, stream: str, kind: str, trusted: bool = False) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _Constructor.__init__(self)
        _Resolver.__init__(self)
        self.problems = []
        self.kind = kind
        self.trusted = trusted
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent) and not self.trusted:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise ConstructorError(None, None, f"YAML aliases (*name) are not allowed in {self.kind}s"
                                   + _HINTS[self.kind == "manifest"], event.start_mark)
        # A manifest is a few levels deep; thousands of nested brackets are an attack on the
        # parser's recursion, refused before it gets expensive.
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ConstructorError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                       self.peek_event().start_mark)  # type: ignore[no-untyped-call]
            node: Node | None = super().compose_node(parent, index)
            return node
        finally:
            self._depth -= 1


def _where(text: str, position: int) -> tuple[int, int]:
    before = text[:position]
    return before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1


def load(text: str, kind: str = "manifest", *, trusted: bool = False) -> tuple[Any, list[YamlProblem]]:
    """Parse one document (``kind``: what it is, for the messages: "manifest", "models file"…).
    Returns (document, problems); a document that cannot be built at all comes back as None
    with the reason among the problems. ``trusted``: a file shipped with batchgen, whose
    aliases and ``<<`` merge keys are read (never a user's: an alias can expand into gigabytes)."""
    try:
        loader = _Loader(text, kind, trusted)
    except yaml.reader.ReaderError as e:  # raised while the reader checks the whole text
        line, col = _where(text, e.position)
        return None, [YamlProblem(line, None, f"control character U+{e.character:04X} is not allowed in YAML "
                                              "(remove it, or write it as an escape inside double quotes)", col)]
    try:
        node = loader.get_single_node()
        if node is None:
            return None, loader.problems
        return loader.construct_document(node), loader.problems
    except yaml.composer.ComposerError as e:
        if "single document" in str(e.context or ""):
            mark = e.problem_mark
            return None, [YamlProblem(mark.line + 1 if mark else 1, None,
                                      f"a {kind} is one YAML document; this file has another one after `---`")]
        return None, [_syntax(e)]
    except yaml.YAMLError as e:
        return None, [*loader.problems, _syntax(e)]
    except RecursionError:
        return None, [YamlProblem(1, None, "invalid YAML: nested too deeply")]
    finally:
        loader.dispose()


def _syntax(e: yaml.YAMLError) -> YamlProblem:
    """The line and column of the cause (PyYAML's problem mark), not of where it gave up."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    context = getattr(e, "context", None)
    start = getattr(e, "context_mark", None)
    if context and start is not None and mark is not None and start.line != mark.line:
        context += f" that starts on line {start.line + 1}"  # an unclosed bracket or quote is there
    text = f"{problem}" + (f" ({context})" if context and "manifest" not in str(problem) and "one YAML document" not in str(problem) else "")
    if "found character '\\t'" in text:
        text += "; indent with spaces, not tabs"
    prefix = "" if isinstance(e, ConstructorError) else "invalid YAML: "
    return YamlProblem(mark.line + 1 if mark else 1, None, prefix + text, mark.column + 1 if mark else None)
