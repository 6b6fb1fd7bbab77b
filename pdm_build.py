"""pdm-backend hook: the wheel carries the top-level alembic/ folder as batchgen/_alembic."""
from __future__ import annotations
from pathlib import Path
from typing import Any

def pdm_build_update_files(context: Any, files: dict[str, Path]) -> None:
    if context.target != "wheel":
        return
    root = Path(context.config.root) / "alembic"
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            files[f"batchgen/_alembic/{path.relative_to(root).as_posix()}"] = path
