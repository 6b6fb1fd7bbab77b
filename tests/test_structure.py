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
