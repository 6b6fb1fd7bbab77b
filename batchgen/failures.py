"""What a task's failure means (the reference's error table, §6.4): worth rendering again, or
permanent until someone changes the request — and then what to change. A vocabulary module:
the ledger (``--retry-failed``), the conductor (``--render-retries``) and the morning message
(summary, notification) all read it, so they never disagree."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from .jobs import JobState

FailureClass = Literal["retryable", "permanent", "unknown"]
RetryVerdict = Literal["retry", "spent", "permanent"]

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


# Creates that earlier versions failed for a bad --api-base: a configuration error, nothing was
# ever sent (no task id), so --retry-failed sends them although the row says not retryable.
NEVER_SENT_CODES = frozenset({"transport_InvalidURL", "transport_NonHttpUrlClientError",
                              "transport_InvalidUrlClientError"})


def retry_verdict(job: Mapping[Any, Any], max_attempts: int) -> RetryVerdict | None:
    """What ``run --retry-failed --max-attempts N`` does with a job the ledger holds as ``job``
    (its state, task_id, error_code, retryable and attempts): ``retry`` — back to the queue, a
    new paid task; ``spent`` — a retryable failure that had its N creates already, left failed;
    ``permanent`` — failed for a reason a new task does not fix, left failed; None — not failed.
    The one rule: `run` requeues by it and `plan --retry-failed` counts by it."""
    if job["state"] != JobState.FAILED:
        return None
    if not (job["retryable"] or (job["task_id"] is None and job["error_code"] in NEVER_SENT_CODES)):
        return "permanent"
    return "retry" if job["attempts"] < max_attempts else "spent"
