"""Task life: what the simulator accepted and how each task moves with time.

``Task`` is one accepted create (its outcome, render time and result shape are drawn when it is
created); ``Task.view`` is what a poll sees at a moment: pending for the first tenth of the render,
processing with a progress, then completed (with the result URL), failed or cancelled. ``Book``
keeps every task and upload and the credits spent, and appends each accepted create to the state
file (JSON lines), so a run against the embedded simulator can be interrupted and resumed like a
real one. No HTTP, no fault decision.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAIL_CODES = ("generation_failed", "timeout", "model_unavailable", "content_policy_violation")


def canonical_sha256(body: Any) -> str:
    """Hash of a request body in canonical JSON: how ground truth identifies a job's request."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


@dataclass
class Task:
    id: str
    model: str
    body_sha256: str
    created: float
    render: float
    estimate: float
    outcome: str  # completed | failed | cancelled
    fail_code: str | None
    credits: float
    file_size: int
    file_sha256: str = ""
    polls: int = 0
    # what the result file is (media="real"): frame size, seconds, audio, and a fault variant
    width: int = 854
    height: int = 480
    seconds: float = 6.0
    audio: bool = True
    variant: str | None = None  # short | wrong_aspect | undecodable | no_audio
    wait: float = 0.0  # seconds in `pending` before the render starts (pending_s), not in the estimate
    # Benchmarks' clocks (issue 31 part 4): when the create reached the API (before any latency,
    # jitter or rate limit), and when a poll first answered it completed (0: not yet).
    received: float = 0.0
    seen_done: float = 0.0

    def ready(self, now: float) -> bool:
        """The render is over (a completed task's file can be fetched)."""
        return now - self.created >= self.wait + self.render

    @property
    def ready_at(self) -> float:
        return self.created + self.wait + self.render

    def view(self, now: float, base_url: str, fractional: bool, progress: str = "linear") -> dict[str, Any]:
        """The task document a poll returns at ``now``. ``fractional``: report the estimate with
        decimals (sub-10 s renders, where whole seconds would say 0). ``progress``: how the
        rendering's progress is told (``SimConfig.progress``)."""
        elapsed = now - self.created - self.wait
        est = round(self.estimate, 2) if fractional else int(round(self.estimate))
        doc: dict[str, Any] = {
            "id": self.id, "object": "video.generation.task", "type": "video", "model": self.model,
            "created": int(self.created), "results": None, "error": None,
            "usage": {"credits_reserved": self.credits, "user_group": "default"},
            "task_info": {"can_cancel": elapsed < self.render, "estimated_time": est},
        }
        if elapsed < self.render * 0.1:
            doc.update(status="pending", progress=0)
        elif elapsed < self.render:
            told = min(99, int(100 * elapsed / self.render))
            told = 0 if progress == "none" else (told // 25 * 25 if progress == "coarse" else told)
            doc.update(status="processing", progress=told)
        elif self.outcome == "completed":
            doc.update(status="completed", progress=100,
                       results=[{"url": f"{base_url}/files/{self.id}.mp4", "width": self.width, "height": self.height}])
        elif self.outcome == "failed":
            doc.update(status="failed", progress=100,
                       error={"code": self.fail_code, "message": f"simulated {self.fail_code}", "type": "task_error"})
        else:
            doc.update(status="cancelled", progress=100)
        return doc


class Book:
    """Everything the simulator has accepted: tasks, uploads, credits spent, and the port it last
    listened on (result URLs name it). ``state_file`` (JSON lines, appended once per accepted
    create) keeps tasks and port across restarts."""

    def __init__(self, state_file: Path | None = None) -> None:
        self.tasks: dict[str, Task] = {}
        self.uploaded: dict[str, tuple[int, float, str]] = {}  # file id → (size, created, sha256)
        self.spent = 0.0
        self.state_file = state_file
        self.saved_port: int | None = None
        if state_file is not None:
            self._load(state_file)

    def _load(self, path: Path) -> None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                doc = json.loads(line)
                if "task" in doc:
                    t = Task(**doc["task"])
                    self.tasks[t.id] = t
                    self.spent += t.credits
                elif "port" in doc:
                    self.saved_port = int(doc["port"])
            except (ValueError, TypeError):
                continue  # a line cut short by a kill: that create's client never got its id either

    def save(self, doc: dict[str, Any]) -> None:
        if self.state_file is not None:
            with open(self.state_file, "a", encoding="utf-8") as f:
                f.write(json.dumps(doc) + "\n")

    def new_id(self, rng: random.Random) -> str:
        suffix = "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        tid = f"task-unified-{int(time.time())}-{suffix}"
        return tid if tid not in self.tasks else self.new_id(rng)
