"""The shape of the package, checked from its source (AST; nothing of batchgen is imported).

The hard limits of DEVELOPERS.md ("Layout and dependency direction", "Structure rules"):

* no module over 500 lines, no class over 300 lines (every ``.py`` under ``batchgen/``, the
  simulator, the CLI and the Alembic helpers included);
* no cycle in the import graph between batchgen's modules;
* no private name (``_x``) of one module used by another, neither imported
  (``from .a import _x``) nor reached as an attribute of an imported module (``a._x``);
* the dependency directions that are cheap to state: the simulator imports nothing of batchgen,
  the manifest package and the client know nothing of the run (ledger, scheduler, pipeline,
  runner), nothing imports the CLI, and no module outside ``ledger/`` imports a ledger room.

What counts as an import, decided once for every check here:

* Imports inside functions count like module-level ones. A lazy import changes when a module
  loads (the CLI's start-up time), not what it depends on: a cycle through a function-level
  import is still a cycle in the design, and still fails the day someone hoists the import.
* Imports under ``if TYPE_CHECKING:`` are left out. They never run, and annotations are strings
  (``from __future__ import annotations`` everywhere), so they cannot form an import cycle; the
  lazy-export table of ``batchgen/__init__.py`` is written that way on purpose.
* ``from pkg import name`` depends on the module ``pkg.name`` when that is a module of batchgen,
  else on ``pkg`` itself (a package's ``__init__``). A package's ``__init__`` depending on its own
  modules is the usual re-export and is part of the graph like any other edge.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

# Every check reads the same parsed package (``_imports`` is cached per process): on one xdist
# worker it is parsed once, not once on each worker a check lands on (about 0.6 s of CPU each).
pytestmark = pytest.mark.xdist_group("test_structure.py")

PKG = Path(__file__).resolve().parent.parent / "batchgen"
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300


# --------------------------------------------------------------------------- the graph
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    """Every module of batchgen by dotted name (a package by its own name)."""
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """``ast.walk`` that does not enter ``if TYPE_CHECKING:`` bodies (their ``else`` runs)."""
    todo = [node]
    while todo:
        n = todo.pop()
        yield n
        if isinstance(n, ast.If) and _is_type_checking(n.test):
            todo.extend(n.orelse)
            continue
        todo.extend(ast.iter_child_nodes(n))


@dataclass
class Imports:
    """What one module takes from batchgen: the modules it depends on, the names it imports
    (module, name, line) and the local names bound to batchgen modules (for ``a._x``)."""

    path: Path
    depends: set[str] = field(default_factory=set)
    names: list[tuple[str, str, int]] = field(default_factory=list)
    module_aliases: dict[str, str] = field(default_factory=dict)
    tree: ast.Module | None = None


@cache
def _imports(name: str) -> Imports:
    path = _modules()[name]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    mods = _modules()
    out = Imports(path, tree=tree)
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "batchgen":
                    out.depends.add(a.name)
                    if a.asname:
                        out.module_aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            if source.split(".")[0] != "batchgen":
                continue
            for a in node.names:
                sub = f"{source}.{a.name}"
                if sub in mods:
                    out.depends.add(sub)
                    out.module_aliases[a.asname or a.name] = sub
                else:
                    out.depends.add(source)
                    out.names.append((source, a.name, node.lineno))
    out.depends.discard(name)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: {d for d in _imports(m).depends if d in mods} for m in mods}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _module_of(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """The batchgen module an expression names (``mod``, ``pkg.mod``, ``batchgen.pkg.mod`` after
    ``import batchgen.pkg.mod``), or None."""
    if isinstance(node, ast.Name):
        if node.id in aliases:
            return aliases[node.id]
        return "batchgen" if node.id == "batchgen" else None
    if isinstance(node, ast.Attribute):
        parent = _module_of(node.value, aliases)
        if parent is not None and f"{parent}.{node.attr}" in _modules():
            return f"{parent}.{node.attr}"
    return None


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


# --------------------------------------------------------------------------- sizes
def test_no_module_over_500_lines() -> None:
    big = {str(p.relative_to(PKG)): n for p in _modules().values()
           if (n := p.read_text(encoding="utf-8").count("\n")) > MAX_MODULE_LINES}
    assert not big, f"modules over {MAX_MODULE_LINES} lines: {big}"


def test_no_class_over_300_lines() -> None:
    big = {}
    for name in _modules():
        imp = _imports(name)
        assert imp.tree is not None
        for node in ast.walk(imp.tree):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    big[f"{imp.path.relative_to(PKG)}:{node.name}"] = size
    assert not big, f"classes over {MAX_CLASS_LINES} lines: {big}"


# --------------------------------------------------------------------------- the graph
def test_the_import_graph_has_no_cycle() -> None:
    graph = _graph()
    assert len(graph) > 50 and "batchgen.specs" in graph["batchgen.manifest.keys"]  # the graph is real
    cycles = _cycles(graph)
    assert not cycles, "import cycles (function-level imports included): " + "; ".join(
        " ↔ ".join(c) for c in cycles)


def test_the_cycle_finder_finds_cycles() -> None:
    """The check above would pass vacuously if the finder could not see a cycle."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_private_name_crosses_a_module() -> None:
    mods = _modules()
    found = []
    for name in mods:
        imp = _imports(name)
        for source, imported, line in imp.names:
            if _private(imported) and source != name:
                found.append(f"{imp.path.relative_to(PKG)}:{line} imports {imported} from {source}")
        assert imp.tree is not None
        for node in _walk(imp.tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                owner = _module_of(node.value, imp.module_aliases)
                if owner is not None and owner != name:
                    found.append(f"{imp.path.relative_to(PKG)}:{node.lineno} uses {owner}.{node.attr}")
    assert not found, "private names used across modules:\n" + "\n".join(found)


def test_the_private_name_finder_sees_module_attributes() -> None:
    """``mod._x`` and ``batchgen.pkg.mod._x`` are found, a private attribute of anything else is not."""
    tree = ast.parse("batchgen.specs._broken\nspecs._broken\nself._broken\nspecs.Catalog._x")
    seen = [_module_of(n.value, {"specs": "batchgen.specs"}) for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and _private(n.attr)]
    assert sorted(map(str, seen)) == ["None", "None", "batchgen.specs", "batchgen.specs"]


# --------------------------------------------------------------------------- directions
def _violations(packages: tuple[str, ...], forbidden: tuple[str, ...], *, allow_own: bool = True) -> list[str]:
    out = []
    for name in _modules():
        if not any(_under(name, p) for p in packages):
            continue
        for dep in sorted(_imports(name).depends):
            if any(_under(dep, f) for f in forbidden) and not (allow_own and any(_under(dep, p) for p in packages)):
                out.append(f"{name} imports {dep}")
    return out


def test_the_simulator_imports_nothing_of_batchgen() -> None:
    """Its own schema table is an independent oracle for the client's validation."""
    assert any(_under(m, "batchgen.simulator") for m in _modules())
    assert not _violations(("batchgen.simulator",), ("batchgen",))


def test_the_manifest_knows_nothing_of_the_run() -> None:
    """manifest/ turns a file into validated jobs: no ledger, client, scheduler or what drives them
    (DEVELOPERS.md: only deliver's destination parser, lazily)."""
    run_side = ("batchgen.ledger", "batchgen.client", "batchgen.scheduler", "batchgen.pipeline", "batchgen.runner",
                "batchgen.operations", "batchgen.simulator")
    assert not _violations(("batchgen.manifest",), run_side)


def test_the_client_knows_nothing_of_the_ledger() -> None:
    assert not _violations(("batchgen.client",), ("batchgen.ledger", "batchgen.scheduler", "batchgen.pipeline",
                                                  "batchgen.runner", "batchgen.manifest", "batchgen.operations"))


def test_the_catalog_layers_depend_one_way() -> None:
    """modelspec ← datafiles ← specs: the files' checker builds specs' values, never imports specs."""
    assert not _violations(("batchgen.modelspec",), ("batchgen",))
    assert not _violations(("batchgen.datafiles",), ("batchgen.specs",))


def test_nothing_in_batchgen_imports_the_cli() -> None:
    """The CLI sits on top: the library (and the simulator) never import it, lazily or not."""
    users = [f"{m} imports {d}" for m in _modules() if not _under(m, "batchgen.cli") and m != "batchgen.__main__"
             for d in _imports(m).depends if _under(d, "batchgen.cli")]
    assert not users


def test_no_module_outside_the_ledger_imports_a_room() -> None:
    """Callers import from ``batchgen.ledger`` (the package re-exports every public name)."""
    users = [f"{m} imports {d}" for m in _modules() if not _under(m, "batchgen.ledger")
             for d in _imports(m).depends if d.startswith("batchgen.ledger.")]
    assert not users
