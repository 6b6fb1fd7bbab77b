"""What a task's failure means (the reference's error table, §6.4): worth rendering again, or
permanent until someone changes the request — and then what to change. A vocabulary module:
the ledger (``--retry-failed``), the conductor (``--render-retries``) and the morning message
(summary, notification) all read it, so they never disagree."""

from __future__ import annotations

import json
from typing import Literal

FailureClass = Literal["retryable", "permanent", "unknown"]

# The provider failed, not the request: the same request may well succeed again (a new paid task).
RETRYABLE_TASK_CODES = frozenset({"timeout", "generation_failed", "model_unavailable", "generation_timeout",
                                  "service_error", "service_unavailable", "resource_exhausted",
                                  "generation_failed_no_content"})

# The request itself is refused: rendering it again unchanged only pays again. What to change.
PERMANENT_TASK_CODES: dict[str, str] = {
    "content_policy_violation": "change the prompt or the input media (content policy)",
    "invalid_parameters": "change the request's fields (`batchgen models MODEL` lists what the model accepts)",
    "image_processing_error": "replace the input image {media}",
    "image_dimension_mismatch": "give an input image {media} of the size the model expects",
    "invalid_image_url": "fix the input image URL {media} (it must be public) or re-upload it",
    "file_too_large": "shrink the input file {media}",
    "unsupported_format": "convert the input file {media} to a supported format",
}
MEDIA_FIELDS = ("image_url", "reference_image_urls", "image_urls", "first_frame_url", "last_frame_url", "video_url")


def classify(code: str | None) -> FailureClass:
    if code in RETRYABLE_TASK_CODES:
        return "retryable"
    if code in PERMANENT_TASK_CODES:
        return "permanent"
    return "unknown"


def fix(code: str | None, request: str | None = None) -> str | None:
    """What to change so that a permanent failure can succeed, naming the media field the
    request uses (``request``: its canonical JSON); None for a failure that is not permanent."""
    hint = PERMANENT_TASK_CODES.get(code or "")
    if hint is None:
        return None
    field = ""
    if "{media}" in hint and request:
        try:
            body = json.loads(request)
        except ValueError:
            body = {}
        present = [f for f in MEDIA_FIELDS if isinstance(body, dict) and f in body]
        field = f"(`{present[0]}`)" if present else ""
    return hint.replace(" {media}", f" {field}" if field else "")
