"""The pipeline package's shape (issue 20): one room per stage, a typed seam between them, one
writer of job state, and the conductor on top. Read from the source, like test_ledger_rooms."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import batchgen.pipeline as pipeline

ROOT = Path(__file__).resolve().parent.parent / "batchgen"
PIPE = ROOT / "pipeline"
STAGES = {"submit", "poll", "fetch", "check", "delivery"}
SHARED = {"anchor", "context", "moves", "pace"}  # anchor: a part of pace's, in a file of its own


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _pipeline_imports(path: Path) -> set[str]:
    """Rooms of the pipeline a module imports (``from .x import``, ``from . import x``)."""
    found: set[str] = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
    return found


def test_every_room_is_listed_and_says_what_it_may_not_touch() -> None:
    rooms = {p.stem for p in PIPE.glob("*.py")} - {"__init__"}
    assert rooms == STAGES | SHARED
    for name in rooms:
        doc = ast.get_docstring(_tree(PIPE / f"{name}.py")) or ""
        assert f"``{name}``" in (pipeline.__doc__ or ""), f"pipeline/__init__ does not list {name}"
        if name in STAGES | {"context", "moves"}:
            assert "May not touch" in doc, f"pipeline/{name}.py does not say what it may not touch"


def test_a_stage_imports_no_other_stage() -> None:
    """Stages hand jobs on through the callables the conductor gives them (moves.Handoff,
    fetch.Refresh), never by importing each other."""
    for name in STAGES:
        imported = _pipeline_imports(PIPE / f"{name}.py")
        assert imported <= SHARED, f"pipeline/{name}.py imports {sorted(imported - SHARED)}"
    assert _pipeline_imports(PIPE / "moves.py") == set()  # the writer knows no stage
    assert _pipeline_imports(PIPE / "context.py") == {"moves"}


def test_only_moves_writes_a_job_state() -> None:
    """Every ``Transition`` of a run is built in pipeline/moves.py: the one file that answers
    "which code writes a job's state?" (the ledger applies it: ledger/transitions.py)."""
    builds = re.compile(r"\bTransition\(")
    writers = [str(p.relative_to(ROOT)) for p in [*PIPE.glob("*.py"), ROOT / "scheduler.py", *(ROOT / "runner").glob("*.py")]
               if builds.search(p.read_text())]
    assert writers == ["pipeline/moves.py"]
    # …and no module of the run calls the writer's state doors but moves.py.
    doors = re.compile(r"\.w\.(record|submit|apply)\(|\bwriter\.(record|submit|apply)\(")
    assert [p.name for p in [*PIPE.glob("*.py"), ROOT / "scheduler.py"] if doors.search(p.read_text())] == ["moves.py"]


def test_sizes() -> None:
    """Modules up to ~500 lines, classes under 300; the conductor stays small."""
    for path in [*PIPE.glob("*.py"), ROOT / "scheduler.py"]:
        lines = path.read_text().count("\n")
        assert lines <= 500, f"{path.name}: {lines} lines"
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                assert size < 300, f"{path.name}: class {node.name} is {size} lines"
    assert (ROOT / "scheduler.py").read_text().count("\n") <= 320


def test_the_pipeline_imports_no_conductor_runner_or_cli() -> None:
    for path in PIPE.glob("*.py"):
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and node.level == 2:
                assert node.module not in {"scheduler", "runner", "cli", "operations"}, f"{path.name}: {node.module}"
