"""The shape of the package, checked from its source (AST, nothing imported)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "batchgen"


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute (relative imports resolved against its package),
    at any depth of the file: a lazy import inside a function is still a dependency."""
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    package = parts[:-1]  # a module's package; for __init__.py, the package itself
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join([*base, *([node.module] if node.module else [])])
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def test_the_simulator_imports_nothing_of_batchgen() -> None:
    files = sorted((PKG / "simulator").glob("*.py"))
    assert files
    for path in files:
        outside = {m for m in _imported_modules(path)
                   if m.split(".")[0] == "batchgen" and not m.startswith("batchgen.simulator")}
        assert not outside, f"{path.name} imports {sorted(outside)}"


def test_nothing_in_batchgen_imports_the_cli() -> None:
    """The CLI sits on top: the library (and the simulator) never import it, lazily or not."""
    for path in sorted(PKG.rglob("*.py")):
        if (PKG / "cli") in path.parents or path.name == "__main__.py":
            continue
        uses = {m for m in _imported_modules(path) if m == "batchgen.cli" or m.startswith("batchgen.cli.")}
        assert not uses, f"{path.relative_to(PKG)} imports {sorted(uses)}"


def test_cli_modules_import_no_private_name_of_another() -> None:
    for path in sorted((PKG / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
                assert not private, f"cli/{path.name} imports {private} from {node.module}"
