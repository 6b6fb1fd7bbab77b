"""A local stand-in for the foxapi video API (reference: shared/reference/foxapi-video-api.md).

Implements ``POST /v1/videos/generations``, ``GET /v1/tasks/{id}``, the uploads and the result
files, with seeded fault injection, and keeps ground truth (every create it accepted, every
file's sha256) at ``GET /_sim/ground-truth`` so tests can count duplicate and orphaned creates.

It deliberately imports nothing from the rest of batchgen: its own copy of the request schema is
an independent oracle for the client's validation (``tests/test_structure.py`` checks it).

One module per concern: ``config`` (the knobs), ``catalog`` (the models and the body check),
``faults`` (the seeded dice, rate limits, counters), ``media`` (the clips it serves), ``tasks``
(task life and the book of what it accepted), ``routes`` (the API's HTTP handlers) and
``server`` (``Simulator``: the wiring, start/stop and the ``/_sim`` admin endpoints). This
module only re-exports the names callers import.
"""

from __future__ import annotations

from .catalog import validate
from .config import SimConfig
from .faults import Counters
from .media import mp4_bytes, mp4_sha256, render_mp4
from .server import Simulator
from .tasks import Task, canonical_sha256

__all__ = ["Counters", "SimConfig", "Simulator", "Task", "canonical_sha256", "mp4_bytes", "mp4_sha256",
           "render_mp4", "validate"]
