"""Request schemas of the grok-imagine video family, and local validation.

Every number here comes from ``shared/reference/foxapi-video-api.md`` §2. Validating locally
before anything is sent is the cheapest way to not pay for a request the API would reject (or,
worse, accept with a default the user did not mean).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

ASPECT_RATIOS = ("16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16")
PROMPT_MAX = 4096
_IMAGE_REF = re.compile(r"@Image(\d+)")


@dataclass(frozen=True)
class FieldSpec:
    kind: str  # "str", "int", "url", "urls"
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] | None = None
    min: int | None = None
    max: int | None = None
    max_len: int | None = None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    fields: dict[str, FieldSpec] = field(default_factory=dict)
    # Verification (media.compare): the request's `duration` is the output's length (not so for
    # edit-video and video-extension, whose output follows their input); seconds of slack
    # beyond one frame; whether the model promises an audio track (None: not documented).
    duration_is_output: bool = True
    duration_tolerance: float = 0.0
    audio: bool | None = None


def _prompt(max_len: int | None = PROMPT_MAX) -> FieldSpec:
    # t2v/i2v pages state no maximum; upstream xAI's is 4096 (reference §2.1), so we apply it.
    return FieldSpec("str", required=True, max_len=max_len)


MODELS: dict[str, ModelSpec] = {
    "grok-imagine-text-to-video": ModelSpec(
        "grok-imagine-text-to-video",
        {
            "prompt": _prompt(),
            "duration": FieldSpec("int", default=6, min=1, max=15),
            "aspect_ratio": FieldSpec("str", default="16:9", choices=ASPECT_RATIOS),
            "resolution": FieldSpec("str", default="720p", choices=("480p", "720p")),
        },
    ),
    "grok-imagine-image-to-video": ModelSpec(
        "grok-imagine-image-to-video",
        {
            "prompt": _prompt(),
            "image_url": FieldSpec("url", required=True),
            "duration": FieldSpec("int", default=6, min=1, max=15),
            "aspect_ratio": FieldSpec("str", default="auto", choices=("auto", *ASPECT_RATIOS)),
            "resolution": FieldSpec("str", default="720p", choices=("480p", "720p")),
        },
    ),
    "grok-imagine-reference-to-video": ModelSpec(
        "grok-imagine-reference-to-video",
        {
            "prompt": _prompt(),
            "reference_image_urls": FieldSpec("urls", required=True, min=1, max=7),
            "duration": FieldSpec("int", default=8, min=1, max=10),
            "aspect_ratio": FieldSpec("str", default="16:9", choices=ASPECT_RATIOS),
            "resolution": FieldSpec("str", default="480p", choices=("480p", "720p")),
        },
    ),
    "grok-imagine-edit-video": ModelSpec(
        "grok-imagine-edit-video",
        {
            "prompt": _prompt(),
            "video_url": FieldSpec("url", required=True),
            "resolution": FieldSpec("str", default="auto", choices=("auto", "480p", "720p")),
        },
        duration_is_output=False,  # follows the input, cut to 8 s (reference §2.4)
    ),
    "grok-imagine-video-extension": ModelSpec(
        "grok-imagine-video-extension",
        {
            "prompt": _prompt(),
            "video_url": FieldSpec("url", required=True),
            "duration": FieldSpec("int", default=6, min=2, max=10),
        },
        duration_is_output=False,  # `duration` is the added segment; the output is input + it (§2.5)
    ),
}

ALL_FIELDS = frozenset(f for m in MODELS.values() for f in m.fields)


def coerce(name: str, spec: FieldSpec | None, value: Any) -> Any:
    """Turn CSV strings into the field's type; leave anything unconvertible for validate()."""
    if value is None:
        return None
    if spec is None:
        return value
    if spec.kind == "int" and isinstance(value, str):
        s = value.strip()
        if s.isdigit():
            return int(s)
        if re.fullmatch(r"[+-]?\d+", s):
            return int(s)
        if re.fullmatch(r"[+-]?\d+\.0*", s):
            return int(float(s))
        return value
    if spec.kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if spec.kind == "urls" and isinstance(value, str):
        return [p.strip() for p in value.split("|") if p.strip()]
    if spec.kind in ("str", "url") and isinstance(value, str):
        return value.strip() if spec.kind == "url" else value
    return value


UPLOAD_PREFIX = "upload:sha256:"  # a local file, uploaded just before the create (see manifest.py)
MEDIA_FIELDS = frozenset({"image_url", "video_url", "reference_image_urls"})


def _url_ok(v: Any) -> bool:
    if isinstance(v, str) and v.startswith(UPLOAD_PREFIX):
        return re.fullmatch(r"[0-9a-f]{64}", v[len(UPLOAD_PREFIX):]) is not None
    return isinstance(v, str) and re.match(r"^https?://[^\s/]+", v) is not None


def normalise(model: str, params: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Apply type coercion and API defaults; return (effective request, [(field, error)]).

    The effective request is what the job key hashes: two rows that differ only by spelling a
    default explicitly are the same job, so re-running never pays twice for it.
    """
    spec = MODELS.get(model)
    if spec is None:
        return {"model": model, **{k: v for k, v in params.items() if v is not None}}, []
    errors: list[tuple[str, str]] = []
    out: dict[str, Any] = {"model": model}
    for name, fs in spec.fields.items():
        raw = params.get(name)
        if raw == "" or raw == []:
            raw = None
        value = coerce(name, fs, raw)
        if value is None:
            if fs.required:
                errors.append((name, "is required"))
                continue
            value = fs.default
        err = _check(name, fs, value)
        if err:
            errors.append((name, err))
            continue
        out[name] = value
    if "prompt" in out and "reference_image_urls" in out:
        n = len(out["reference_image_urls"])
        for m in _IMAGE_REF.finditer(out["prompt"]):
            idx = int(m.group(1))
            if idx < 1 or idx > n:
                errors.append(("prompt", f"refers to @Image{idx} but only {n} reference image(s) are given"))
                break
    return out, errors


def _check(name: str, fs: FieldSpec, v: Any) -> str | None:
    if fs.kind == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            return f"must be an integer, got {v!r}"
        if fs.min is not None and v < fs.min or fs.max is not None and v > fs.max:
            return f"must be between {fs.min} and {fs.max}, got {v}"
    elif fs.kind == "str":
        if not isinstance(v, str):
            return f"must be a string, got {type(v).__name__}"
        if fs.choices and v not in fs.choices:
            return f"must be one of {', '.join(fs.choices)}; got {v!r}"
        if fs.max_len and len(v) > fs.max_len:
            return f"is {len(v)} characters long; the maximum is {fs.max_len}"
        if fs.required and not v.strip():
            return "must not be empty"
    elif fs.kind == "url":
        if not _url_ok(v):
            return f"must be an http(s) URL, got {v!r}"
    elif fs.kind == "urls":
        if not isinstance(v, list):
            return "must be a list of URLs"
        if fs.min is not None and len(v) < fs.min or fs.max is not None and len(v) > fs.max:
            return f"must have {fs.min} to {fs.max} items, got {len(v)}"
        bad = [u for u in v if not _url_ok(u)]
        if bad:
            return f"must contain http(s) URLs, got {bad[0]!r}"
    return None


def suggest(name: str) -> str | None:
    """Closest known request field, to turn a typo into an error instead of a silent default."""
    close = difflib.get_close_matches(name, sorted(ALL_FIELDS | {"model"}), n=1, cutoff=0.8)
    return close[0] if close else None
