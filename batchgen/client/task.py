"""What the run side sees of the API: the ``Api`` protocol (the seam the scheduler talks to;
``Client`` implements it over HTTP, tests in memory) and ``TaskInfo``, a task as a create or poll
described it, parsed by ``parse_task`` from every shape the reference lists. No HTTP here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

TERMINAL = frozenset({"completed", "failed", "cancelled"})


@dataclass(slots=True)
class TaskInfo:
    """What a create or poll told us about a task, in every shape the reference lists."""

    task_id: str
    status: str
    progress: int = 0
    estimated_time: float | None = None
    urls: list[str] = field(default_factory=list)
    error_code: str | None = None
    error_message: str | None = None
    credits: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def _object(v: Any) -> dict[str, Any]:
    """A JSON object of the response, or an empty one when it is absent or of another type."""
    return v if isinstance(v, dict) else {}


def parse_task(doc: Any) -> TaskInfo:
    """Accept the current (results[] of objects), old (output{url, urls[]}) and evolink (results
    of bare strings) task shapes. Raises ValueError when there is no usable id/status."""
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not doc["id"]:
        raise ValueError("task document has no id")
    status = str(doc.get("status") or "").lower()
    if not status:
        raise ValueError("task document has no status")
    urls: list[str] = []
    results = doc.get("results")
    if isinstance(results, list):
        for r in results:
            if isinstance(r, str):
                urls.append(r)
            elif isinstance(r, dict) and isinstance(r.get("url"), str):
                urls.append(r["url"])
    output = doc.get("output")
    if not urls and isinstance(output, dict):
        if isinstance(output.get("urls"), list):
            urls.extend(u for u in output["urls"] if isinstance(u, str))
        elif isinstance(output.get("url"), str):
            urls.append(output["url"])
    err = _object(doc.get("error"))
    info = _object(doc.get("task_info"))
    usage = _object(doc.get("usage"))
    est = info.get("estimated_time")
    credits = usage.get("credits_reserved")
    progress = doc.get("progress")
    return TaskInfo(
        task_id=doc["id"], status=status,
        progress=int(progress) if isinstance(progress, (int, float)) else 0,
        estimated_time=float(est) if isinstance(est, (int, float)) and est >= 0 else None,
        urls=urls,
        error_code=str(err["code"]) if err.get("code") is not None else None,
        error_message=str(err["message"])[:500] if err.get("message") is not None else None,
        credits=float(credits) if isinstance(credits, (int, float)) else None,
    )


class Api(Protocol):
    """What the scheduler needs from an API: the seam between the two. ``Client`` implements it
    over HTTP; tests implement it in memory (tests/test_lifecycle_stateful.py). Every method
    raises ``ApiError`` (classified, see ``classify_status``) or, for downloads,
    ``DownloadError``; nothing from the HTTP library crosses it."""

    async def create(self, request: dict[str, Any]) -> TaskInfo: ...

    async def get_task(self, task_id: str, *, sync_upstream: bool = False) -> TaskInfo: ...

    async def upload(self, path: Path, file_name: str) -> str: ...

    async def download(self, url: str, final: Path) -> tuple[int, str]: ...
