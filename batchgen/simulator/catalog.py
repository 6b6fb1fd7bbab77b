"""The simulator's own table of the models foxapi serves and the check of a create's body
against it (``validate``).

It is written from the foxapi pages, not from ``batchgen/models.yaml``, on purpose: an independent
oracle for the client's validation, so a wrong catalog entry shows up as a refused create in the
tests. Pure data and one pure function: no I/O, no state, nothing of batchgen.
"""

from __future__ import annotations

import re
from typing import Any


_AR = ("16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16")
# model -> field -> (kind, required, choices-or-range, default)
SCHEMA: dict[str, dict[str, tuple[str, bool, Any, Any]]] = {
    "grok-imagine-text-to-video": {
        "prompt": ("prompt", True, 4096, None), "duration": ("int", False, (1, 15), 6),
        "aspect_ratio": ("enum", False, _AR, "16:9"), "resolution": ("enum", False, ("480p", "720p"), "720p")},
    "grok-imagine-image-to-video": {
        "prompt": ("prompt", True, 4096, None), "image_url": ("url", True, None, None),
        "duration": ("int", False, (1, 15), 6), "aspect_ratio": ("enum", False, ("auto",) + _AR, "auto"),
        "resolution": ("enum", False, ("480p", "720p"), "720p")},
    "grok-imagine-reference-to-video": {
        "prompt": ("prompt", True, 4096, None), "reference_image_urls": ("urls", True, (1, 7), None),
        "duration": ("int", False, (1, 10), 8), "aspect_ratio": ("enum", False, _AR, "16:9"),
        "resolution": ("enum", False, ("480p", "720p"), "480p")},
    "grok-imagine-edit-video": {
        "prompt": ("prompt", True, 4096, None), "video_url": ("url", True, None, None),
        "resolution": ("enum", False, ("auto", "480p", "720p"), "auto")},
    "grok-imagine-video-extension": {
        "prompt": ("prompt", True, 4096, None), "video_url": ("url", True, None, None),
        "duration": ("int", False, (2, 10), 6)},
}
_VEO_RES = ("720p", "1080p", "4k")
_VEO_AR = ("16:9", "9:16")
_VEO_GEN = ("text-to-video", "image-to-video", "first-last-frame", "reference-to-video")
# The other foxapi video families, written from the docs.foxapi.cc video-series pages (and the
# docs.aihubmax.com mirror where a page is cut), read 2026-11-30. "choice": a set of allowed values
# (ints too); "auto" ints: (min, max, auto value); "list": a JSON list with an optional maximum;
# "bool", "object": type only. The defaults are what the API applies when a field is not sent.
_VEO = {"prompt": ("prompt", True, 100_000, None), "generation_type": ("enum", False, _VEO_GEN, "text-to-video"),
        "image_urls": ("urls", False, (0, 3), None), "aspect_ratio": ("enum", False, _VEO_AR, "16:9"),
        "duration": ("choice", False, (4, 6, 8), 8),
        "resolution": ("enum", False, ("720p", "1080p", "2160p", "4k"), "1080p"),
        "generate_audio": ("bool", False, None, True), "advanced": ("object", False, None, None)}
_VEO_I2V = {"prompt": ("prompt", True, 100_000, None), "image_url": ("url", True, None, None),
            "aspect_ratio": ("enum", False, _VEO_AR, "16:9"), "duration": ("choice", False, (4, 6, 8), 8),
            "resolution": ("enum", False, _VEO_RES, "1080p"), "generate_audio": ("bool", False, None, False),
            "auto_fix": ("bool", False, None, None)}
_VEO_FLF = {"prompt": ("prompt", True, 100_000, None), "first_image_url": ("url", True, None, None),
            "last_image_url": ("url", True, None, None), "aspect_ratio": ("enum", False, _VEO_AR, "16:9"),
            "duration": ("choice", False, (4, 6, 8), 8), "resolution": ("enum", False, _VEO_RES, "1080p"),
            "generate_audio": ("bool", False, None, False), "auto_fix": ("bool", False, None, None)}
_VEO_REF = {"prompt": ("prompt", True, 100_000, None), "reference_image_urls": ("urls", True, (1, 3), None),
            "aspect_ratio": ("enum", False, _VEO_AR, "16:9"), "duration": ("choice", False, (8,), 8),
            "resolution": ("enum", False, _VEO_RES, "1080p"), "generate_audio": ("bool", False, None, True),
            "auto_fix": ("bool", False, None, None), "reference_type": ("enum", False, ("ASSET", "STYLE"), None)}
_VEO_EXT = {"prompt": ("prompt", True, 100_000, None), "video_url": ("url", False, None, None),
            "video": ("url", False, None, None), "aspect_ratio": ("enum", False, _VEO_AR, "16:9"),
            "generate_audio": ("bool", False, None, True), "auto_fix": ("bool", False, None, True),
            "negative_prompt": ("prompt", False, 100_000, None), "seed": ("int", False, (-2**63, 2**63 - 1), None),
            "advanced": ("object", False, None, None), "duration": ("fixed", False, None, 7)}
_SORA = {"prompt": ("prompt", True, 5000, None), "image_urls": ("urls", False, (0, 1), None),
         "aspect_ratio": ("enum", False, _VEO_AR, "16:9"), "duration": ("choice", False, (4, 8, 12, 16, 20), 4),
         "resolution": ("enum", False, ("720p", "1080p"), "720p"), "character_ids": ("list", False, 2, None)}
_SEEDANCE_AR = ("adaptive", "16:9", "4:3", "1:1", "3:4", "9:16", "21:9")
_SEEDANCE_T2V = {"prompt": ("prompt", True, 5000, None),
                 "resolution": ("enum", False, ("480p", "720p", "1080p"), "720p"),
                 "ratio": ("enum", False, _SEEDANCE_AR, "adaptive"),
                 "aspect_ratio": ("enum", False, _SEEDANCE_AR, None), "duration": ("auto", False, (4, 15, -1), 5),
                 "generate_audio": ("bool", False, None, True),
                 "seed": ("int", False, (-1, 4294967295), None)}
_SEEDANCE = {**_SEEDANCE_T2V, "image_urls": ("urls", False, (0, 9), None), "video_urls": ("urls", False, (0, 3), None),
             "audio_urls": ("urls", False, (0, 3), None)}
_SEEDANCE_FAST_RES = ("enum", False, ("480p", "720p"), "720p")
_KLING = {"prompt": ("prompt", False, 2500, None), "multi_prompt": ("list", False, None, None),
          "resolution": ("enum", False, _VEO_RES, "720p"), "generate_audio": ("bool", False, None, False),
          "start_image_url": ("url", False, None, None), "end_image_url": ("url", False, None, None),
          "image_urls": ("urls", False, (0, 4), None), "elements": ("list", False, None, None),
          "aspect_ratio": ("enum", False, ("16:9", "9:16", "1:1"), "16:9"), "duration": ("int", False, (3, 15), 5)}
_KLING_O3_I2V = {"image_url": ("url", True, None, None), "prompt": ("prompt", False, 2500, None),
                 "multi_prompt": ("list", False, None, None), "resolution": ("enum", False, _VEO_RES, "720p"),
                 "generate_audio": ("bool", False, None, False), "end_image_url": ("url", False, None, None),
                 "duration": ("int", False, (3, 15), 5)}
_KLING_V3_T2V = {"prompt": ("prompt", True, 2500, None), "resolution": ("enum", False, _VEO_RES, "720p"),
                 "generate_audio": ("bool", False, None, False), "negative_prompt": ("prompt", False, 100_000, None),
                 "aspect_ratio": ("enum", False, ("16:9", "9:16", "1:1"), "16:9"),
                 "duration": ("choice", False, (5, 10), 5), "voice_ids": ("list", False, 2, None),
                 "multi_prompt": ("list", False, None, None)}
_KLING_V3_I2V = {"prompt": ("prompt", True, 2500, None), "image_url": ("url", True, None, None),
                 "image_tail_url": ("url", False, None, None), "resolution": ("enum", False, _VEO_RES, "720p"),
                 "generate_audio": ("bool", False, None, False), "duration": ("choice", False, (5, 10), 5),
                 "voice_ids": ("list", False, 2, None)}
_KLING_MOTION = {"image_url": ("url", True, None, None), "video_url": ("url", True, None, None),
                 "mode": ("enum", False, ("std", "pro"), "std"), "prompt": ("prompt", False, 100_000, None),
                 "character_orientation": ("enum", False, ("image", "video"), "image"),
                 "keep_original_sound": ("enum", False, ("yes", "no"), "yes")}
_HH_AR = ("16:9", "9:16", "1:1", "4:3", "3:4")
_HH_RES = ("enum", False, ("720p", "1080p"), "1080p")
_HH_SEED = ("int", False, (0, 2147483647), None)
_WAN_RES = ("enum", False, ("720p", "1080p"), "1080p")
SCHEMA.update({
    "veo3.1-fast": {"prompt": ("prompt", True, 2000, None), "image_url": ("url", False, None, None),
                    "duration": ("int", False, (1, 60), 5),
                    "size": ("enum", False, ("auto", "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9",
                                             "21:9"), "auto"),
                    "model_params": ("object", False, None, None), "callback_url": ("url", False, None, None)},
    "kling-o3-video-to-video-edit": {"prompt": ("prompt", True, 2500, None),
                                     "video_url": ("url", True, None, None),
                                     "resolution": ("enum", False, _VEO_RES, "720p"),
                                     "keep_audio": ("bool", False, None, None),
                                     "elements": ("list", False, None, None)},
    "happyhorse-1.0-text-to-video": {"prompt": ("prompt", True, 2500, None),
                                     "aspect_ratio": ("enum", False, _HH_AR, "16:9"),
                                     "duration": ("int", False, (3, 15), 5), "resolution": _HH_RES, "seed": _HH_SEED,
                                     "enable_safety_checker": ("bool", False, None, None)},
    "happyhorse-1.0-image-to-video": {"image_url": ("url", True, None, None), "prompt": ("prompt", False, 2500, None),
                                      "duration": ("int", False, (3, 15), 5), "resolution": _HH_RES, "seed": _HH_SEED,
                                      "enable_safety_checker": ("bool", False, None, None)},
    "happyhorse-1.0-reference-to-video": {"prompt": ("prompt", True, 2500, None),
                                          "reference_image_urls": ("urls", True, (1, 9), None),
                                          "aspect_ratio": ("enum", False, _HH_AR, "16:9"),
                                          "duration": ("int", False, (3, 15), 5), "resolution": _HH_RES,
                                          "seed": _HH_SEED,
                                          "enable_safety_checker": ("bool", False, None, None)},
    "happyhorse-1.0-video-edit": {"video_url": ("url", True, None, None), "prompt": ("prompt", True, 2500, None),
                                  "reference_image_urls": ("urls", False, (0, 5), None), "resolution": _HH_RES,
                                  "seed": _HH_SEED, "enable_safety_checker": ("bool", False, None, None)},
    "wan-2.7-text-to-video": {"prompt": ("prompt", True, 5000, None), "aspect_ratio": ("enum", False, _HH_AR, "16:9"),
                              "duration": ("int", False, (2, 15), 5), "resolution": _WAN_RES,
                              "audio_url": ("url", False, None, None)},
    "wan-2.7-image-to-video": {"prompt": ("prompt", False, 5000, None),
                               "generation_type": ("enum", False, ("image-to-video", "first-last-frame",
                                                                   "video-continuation"), None),
                               "image_urls": ("urls", False, (0, 2), None), "video_url": ("url", False, None, None),
                               "duration": ("int", False, (2, 15), 5), "resolution": _WAN_RES},
    "wan-2.7-reference-to-video": {"prompt": ("prompt", True, 5000, None),
                                   "reference_image_urls": ("urls", False, (0, 100), None),
                                   "reference_video_urls": ("urls", False, (0, 100), None),
                                   "duration": ("int", False, (2, 15), 5), "resolution": _WAN_RES,
                                   "aspect_ratio": ("enum", False, _HH_AR, "16:9")},
    "kling-o3-ref": {"prompt": ("prompt", True, 100_000, None),
                     "mode": ("enum", False, ("standard", "pro"), "standard"),
                     "image_list": ("list", False, None, None), "video_list": ("list", False, 1, None),
                     "aspect_ratio": ("str", False, None, "16:9"), "duration": ("int", False, (1, 60), 5)},
    "kling-video-create-voice": {"voice_url": ("url", True, None, None), "duration": ("fixed", False, None, 4)},
    "vidu-q3-pro": {"prompt": ("prompt", False, 100_000, None),
                    "generation_type": ("enum", False, _VEO_GEN, None), "image_urls": ("urls", False, (0, 4), None),
                    "duration": ("int", False, (1, 60), 5), "aspect_ratio": ("str", False, None, "16:9"),
                    "resolution": ("str", False, None, "720p"), "generate_audio": ("bool", False, None, True)},
    "vidu-q3-turbo": {"prompt": ("prompt", False, 100_000, None),
                      "generation_type": ("enum", False, _VEO_GEN[:3], None),
                      "image_urls": ("urls", False, (0, 2), None),
                      "duration": ("int", False, (1, 60), 5), "aspect_ratio": ("str", False, None, "16:9"),
                      "resolution": ("str", False, None, "720p"), "generate_audio": ("bool", False, None, True)},
    "veo-3.1": _VEO, "veo-3.1-fast": {**_VEO, "generation_type": ("enum", False, _VEO_GEN[:3], "text-to-video")},
    "veo-3.1-image-to-video": _VEO_I2V, "veo-3.1-fast-image-to-video": _VEO_I2V,
    "veo-3.1-lite-image-to-video": {**_VEO_I2V, "resolution": ("enum", False, ("720p", "1080p"), "1080p")},
    "veo-3.1-first-last-frame-to-video": _VEO_FLF, "veo-3.1-fast-first-last-frame-to-video": _VEO_FLF,
    "veo-3.1-lite-first-last-frame-to-video": {**_VEO_FLF, "resolution": ("enum", False, ("720p", "1080p"), "1080p")},
    "veo-3.1-reference-to-video": _VEO_REF,
    "veo-3.1-fast-reference-to-video": {k: v for k, v in _VEO_REF.items() if k != "reference_type"},
    "veo-3.1-extend": _VEO_EXT, "veo-3.1-extend-fast": _VEO_EXT, "sora-2": _SORA, "sora-2-pro": _SORA,
    "sora-2-character": {"video_url": ("url", True, None, None), "name": ("prompt", True, 80, None),
                         "duration": ("fixed", False, None, 4)},
    "seedance-2.0-reference-to-video": _SEEDANCE,
    "seedance-2.0-fast-reference-to-video": {**_SEEDANCE, "resolution": _SEEDANCE_FAST_RES},
    "seedance-2.0-text-to-video": _SEEDANCE_T2V,
    "seedance-2.0-fast-text-to-video": {**_SEEDANCE_T2V, "resolution": _SEEDANCE_FAST_RES},
    "seedance-2.0-image-to-video": _SEEDANCE_T2V,
    "seedance-2.0-fast-image-to-video": {**_SEEDANCE_T2V, "resolution": _SEEDANCE_FAST_RES},
    "kling-o3-reference-to-video": _KLING, "kling-o3-image-to-video": _KLING_O3_I2V,
    "kling-v3-text-to-video": _KLING_V3_T2V, "kling-v3-image-to-video": _KLING_V3_I2V,
    "kling-v3-motion-control": _KLING_MOTION, "kling-v2-6-motion-control": _KLING_MOTION,
})
# Models whose pages describe optional fields the table cannot name (cut or unnamed in the copies
# read): unknown fields are accepted. Every other model refuses them (422), as foxapi does.
_OPEN = frozenset({
    "veo-3.1-image-to-video", "veo-3.1-fast-image-to-video", "veo-3.1-lite-image-to-video",
    "veo-3.1-first-last-frame-to-video", "veo-3.1-fast-first-last-frame-to-video",
    "veo-3.1-lite-first-last-frame-to-video", "veo-3.1-reference-to-video", "veo-3.1-fast-reference-to-video",
    "veo-3.1-extend", "veo-3.1-extend-fast", "veo3.1-fast", "sora-2", "sora-2-pro", "seedance-2.0-image-to-video",
    "seedance-2.0-fast-image-to-video", "kling-o3-reference-to-video", "kling-o3-image-to-video", "kling-o3-ref",
    "kling-o3-video-to-video-edit", "kling-v3-image-to-video", "happyhorse-1.0-image-to-video",
    "happyhorse-1.0-video-edit", "wan-2.7-text-to-video", "wan-2.7-image-to-video", "wan-2.7-reference-to-video",
    "vidu-q3-pro", "vidu-q3-turbo"})


def validate(body: Any) -> tuple[int, str, str, str | None] | None:
    """(status, message, type, code) of the rejection, or None when the body is acceptable."""
    if not isinstance(body, dict):
        return 400, "Request body must be a JSON object", "invalid_request_error", None
    model = body.get("model")
    schema = SCHEMA.get(model) if isinstance(model, str) else None
    if schema is None:
        return 422, f"Unknown model: {model!r}", "invalid_request_error", None
    extra = sorted(set(body) - set(schema) - {"model"})
    if extra and model not in _OPEN:
        return (422, f"No available channel supports: {', '.join(extra)}", "invalid_request_error",
                "unsupported_advanced_options")
    for name, (kind, required, rule, _default) in schema.items():
        v = body.get(name)
        if v is None:
            if required:
                return 422, f"{name} is required", "invalid_request_error", None
            continue
        ok = True
        if kind == "prompt":
            ok = isinstance(v, str) and 0 < len(v) <= rule
        elif kind == "int":
            ok = isinstance(v, int) and not isinstance(v, bool) and rule[0] <= v <= rule[1]
        elif kind == "choice":
            ok = isinstance(v, int) and not isinstance(v, bool) and v in rule
        elif kind == "auto":
            ok = isinstance(v, int) and not isinstance(v, bool) and (rule[0] <= v <= rule[1] or v == rule[2])
        elif kind == "bool":
            ok = isinstance(v, bool)
        elif kind == "str":
            ok = isinstance(v, str)
        elif kind == "list":
            ok = isinstance(v, list) and (rule is None or len(v) <= rule)
        elif kind == "fixed":
            ok = False  # not a request field (veo extend adds a fixed 7 s)
        elif kind == "enum":
            ok = v in rule
        elif kind == "url":
            ok = isinstance(v, str) and v.startswith(("http://", "https://"))
        elif kind == "urls":
            ok = (isinstance(v, list) and rule[0] <= len(v) <= rule[1]
                  and all(isinstance(u, str) and u.startswith(("http://", "https://")) for u in v))
        if not ok:
            return 422, f"Invalid value for {name}: {v!r}", "invalid_request_error", None
    images = body.get("reference_image_urls", body.get("image_urls"))
    if isinstance(images, list) and isinstance(body.get("prompt"), str):
        n = len(images)
        for m in re.finditer(r"@Image(\d+)", body["prompt"]):
            if not 1 <= int(m.group(1)) <= n:
                return 422, f"prompt refers to @Image{m.group(1)} beyond {n} images", "invalid_request_error", None
    assert isinstance(model, str)  # a known model: checked above
    if model.startswith("veo-3.1-extend") and sum(1 for k in ("video_url", "video") if body.get(k)) != 1:
        return 422, "video_url is required", "invalid_request_error", None
    if model.startswith("kling-o3") and sum(1 for k in ("prompt", "multi_prompt") if body.get(k)) != 1:
        return 422, "exactly one of prompt and multi_prompt is required", "invalid_request_error", None
    if body.get("voice_ids") and body.get("generate_audio") is not True:
        return 422, "voice_ids needs generate_audio: true", "invalid_request_error", None
    if "-lite-" in model and (body.get("resolution") or schema["resolution"][3]) == "1080p" \
            and body.get("duration") is not None and body["duration"] != 8:
        return 422, "lite at 1080p only supports 8 seconds", "invalid_request_error", None
    if model == "wan-2.7-image-to-video":
        gen, n = body.get("generation_type"), len(body.get("image_urls") or [])
        if gen == "image-to-video" and n != 1 or gen == "first-last-frame" and n != 2 \
                or gen == "video-continuation" and not body.get("video_url"):
            return 422, "image_urls / video_url do not match generation_type", "invalid_request_error", None
    if model.startswith(("veo-3.1", "vidu-q3")) and "generation_type" in schema \
            and (body.get("generation_type") or model.startswith("veo")):
        want = {"text-to-video": (0, 0), "image-to-video": (1, 1), "first-last-frame": (2, 2),
                "reference-to-video": (1, 4 if model.startswith("vidu") else 3)}[
                    body.get("generation_type") or "text-to-video"]
        if not want[0] <= len(body.get("image_urls") or []) <= want[1]:
            return 422, "image_urls does not match generation_type", "invalid_request_error", None
    return None

