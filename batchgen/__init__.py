"""batchgen: crash-safe batch runner for paid asynchronous video-generation APIs."""

from __future__ import annotations

__version__ = "0.1.0"
