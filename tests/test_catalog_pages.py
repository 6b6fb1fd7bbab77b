"""The catalog says what foxapi's pages say (issue 22).

PAGES below is this test's own reading of the provider's pages (docs.foxapi.cc video-series,
en and zh, and the docs.aihubmax.com mirror where a copy is cut; read 2026-11-30), written
independently of batchgen/models.yaml and of the simulator's table: for every model and every
documented rule (durations, resolutions, aspect ratios, reference counts, required fields, cross
rules) a valid manifest is accepted and an invalid one refused naming the field, the simulator
(a third, independent reading) agrees on the valid requests, and the request body carries
exactly the documented field names and the defaults batchgen sends.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchgen.errors import ManifestError
from batchgen.manifest import Manifest
from batchgen.simulator import Simulator
from batchgen.specs import SHIPPED

IMG = "https://assets.example.com/a.png"
VID = "https://assets.example.com/a.mp4"
AUD = "https://assets.example.com/a.mp3"

GROK_AR = ["16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16"]
VEO_AR = ["16:9", "9:16"]
SEEDANCE_AR = ["adaptive", "16:9", "4:3", "1:1", "3:4", "9:16", "21:9"]
KLING_AR = ["16:9", "9:16", "1:1"]
HH_AR = ["16:9", "9:16", "1:1", "4:3", "3:4"]


def page(fields: dict[str, Any], required: dict[str, Any], *, defaults: dict[str, Any] | None = None,
         durations: list[int] | tuple[int, int] | None = None, resolutions: list[str] | None = None,
         aspect: tuple[str, list[str]] | None = None, counts: dict[str, tuple[int, int]] | None = None,
         one_of: tuple[str, str] | None = None, open_: bool = False, auto: int | None = None) -> dict[str, Any]:
    """One model as its page documents it. ``fields``: every documented field name with a valid
    sample value; ``required``: the required ones with their sample; ``defaults``: the documented
    defaults batchgen sends; ``durations``: a list of values or an inclusive (min, max) range."""
    return {"fields": fields, "required": required, "defaults": defaults or {}, "durations": durations,
            "resolutions": resolutions, "aspect": aspect, "counts": counts or {}, "one_of": one_of,
            "open": open_, "auto": auto}


_GROK_T2V = page({"prompt": "x", "duration": 6, "aspect_ratio": "16:9", "resolution": "720p"}, {"prompt": "x"},
                 defaults={"duration": 6, "aspect_ratio": "16:9", "resolution": "720p"}, durations=(1, 15),
                 resolutions=["480p", "720p"], aspect=("aspect_ratio", GROK_AR))
_VEO31 = dict(fields={"prompt": "x", "generation_type": "text-to-video", "image_urls": [], "aspect_ratio": "16:9",
                      "duration": 8, "resolution": "720p", "generate_audio": True, "advanced": {}},
              required={"prompt": "x"}, defaults={"generation_type": "text-to-video", "aspect_ratio": "16:9",
                                                  "duration": 8},
              durations=[4, 6, 8], resolutions=["720p", "1080p", "2160p", "4k"], aspect=("aspect_ratio", VEO_AR))
_VEO_I2V = dict(fields={"prompt": "x", "image_url": IMG, "aspect_ratio": "16:9", "duration": 8, "resolution": "720p",
                        "generate_audio": True, "auto_fix": True},
                required={"prompt": "x", "image_url": IMG}, defaults={"aspect_ratio": "16:9", "duration": 8},
                durations=[4, 6, 8], resolutions=["720p", "1080p", "4k"], aspect=("aspect_ratio", VEO_AR), open_=True)
_VEO_FLF = dict(fields={"prompt": "x", "first_image_url": IMG, "last_image_url": IMG, "aspect_ratio": "16:9",
                        "duration": 8, "resolution": "1080p", "generate_audio": False, "auto_fix": True},
                required={"prompt": "x", "first_image_url": IMG, "last_image_url": IMG},
                defaults={"aspect_ratio": "16:9", "resolution": "1080p"},
                durations=[4, 6, 8], resolutions=["720p", "1080p", "4k"], aspect=("aspect_ratio", VEO_AR), open_=True)
_VEO_REF = dict(fields={"prompt": "x", "reference_image_urls": [IMG], "aspect_ratio": "16:9", "duration": 8,
                        "resolution": "720p", "generate_audio": True, "auto_fix": True, "reference_type": "STYLE"},
                required={"prompt": "x", "reference_image_urls": [IMG]}, defaults={"aspect_ratio": "16:9", "duration": 8},
                durations=[8], resolutions=["720p", "1080p", "4k"], aspect=("aspect_ratio", VEO_AR),
                counts={"reference_image_urls": (1, 3)}, open_=True)
_VEO_EXT = dict(fields={"prompt": "x", "video_url": VID, "video": None, "aspect_ratio": "16:9", "generate_audio": True,
                        "auto_fix": True, "negative_prompt": "blurry", "seed": 42, "advanced": {}},
                required={"prompt": "x"}, defaults={"aspect_ratio": "16:9", "generate_audio": True},
                aspect=("aspect_ratio", VEO_AR), one_of=("video_url", "video"), open_=True)
_SORA = dict(fields={"prompt": "x", "image_urls": [IMG], "aspect_ratio": "16:9", "duration": 4, "resolution": "720p",
                     "character_ids": ["char_a"]},
             required={"prompt": "x"}, defaults={"aspect_ratio": "16:9", "duration": 4, "resolution": "720p"},
             durations=[4, 8, 12, 16, 20], resolutions=["720p", "1080p"], aspect=("aspect_ratio", VEO_AR),
             counts={"image_urls": (0, 1), "character_ids": (0, 2)}, open_=True)
_SEEDANCE_BASE = {"prompt": "x", "resolution": "720p", "ratio": "16:9", "aspect_ratio": None, "duration": 5,
                  "generate_audio": True, "seed": 7}
_SEEDANCE_DEFAULTS = {"resolution": "720p", "duration": 5, "generate_audio": True}
_SEEDANCE_REF = dict(fields={**_SEEDANCE_BASE, "image_urls": [IMG], "video_urls": [VID], "audio_urls": [AUD]},
                     required={"prompt": "x"}, defaults=_SEEDANCE_DEFAULTS, durations=(4, 15), auto=-1,
                     resolutions=["480p", "720p", "1080p"], aspect=("ratio", SEEDANCE_AR),
                     counts={"image_urls": (0, 9), "video_urls": (0, 3), "audio_urls": (0, 3)})
_SEEDANCE_T2V = dict(fields=_SEEDANCE_BASE, required={"prompt": "x"}, defaults=_SEEDANCE_DEFAULTS, durations=(4, 15),
                     auto=-1, resolutions=["480p", "720p", "1080p"], aspect=("ratio", SEEDANCE_AR))
_KLING_V3 = dict(resolutions=["720p", "1080p", "4k"], durations=[5, 10], counts={"voice_ids": (0, 2)})
_MOTION = dict(fields={"image_url": IMG, "video_url": VID, "mode": "pro", "prompt": "x", "character_orientation": "video",
                       "keep_original_sound": "no"},
               required={"image_url": IMG, "video_url": VID}, defaults={"mode": "std"})

PAGES: dict[str, dict[str, Any]] = {
    "grok-imagine-text-to-video": _GROK_T2V,
    "grok-imagine-image-to-video": page(
        {"prompt": "x", "image_url": IMG, "duration": 6, "aspect_ratio": "auto", "resolution": "720p"},
        {"prompt": "x", "image_url": IMG}, defaults={"duration": 6, "aspect_ratio": "auto", "resolution": "720p"},
        durations=(1, 15), resolutions=["480p", "720p"], aspect=("aspect_ratio", ["auto", *GROK_AR])),
    "grok-imagine-reference-to-video": page(
        {"prompt": "@Image1 walks", "reference_image_urls": [IMG], "duration": 8, "aspect_ratio": "16:9",
         "resolution": "480p"},
        {"prompt": "x", "reference_image_urls": [IMG]},
        defaults={"duration": 8, "aspect_ratio": "16:9", "resolution": "480p"}, durations=(1, 10),
        resolutions=["480p", "720p"], aspect=("aspect_ratio", GROK_AR), counts={"reference_image_urls": (1, 7)}),
    "grok-imagine-edit-video": page({"prompt": "x", "video_url": VID, "resolution": "auto"},
                                    {"prompt": "x", "video_url": VID}, defaults={"resolution": "auto"},
                                    resolutions=["auto", "480p", "720p"]),
    "grok-imagine-video-extension": page({"prompt": "x", "video_url": VID, "duration": 6},
                                         {"prompt": "x", "video_url": VID}, defaults={"duration": 6}, durations=(2, 10)),
    "veo-3.1": page(**_VEO31),
    "veo-3.1-fast": page(**{**_VEO31, "fields": {**_VEO31["fields"]}}),
    "veo-3.1-image-to-video": page(**_VEO_I2V),
    "veo-3.1-fast-image-to-video": page(**_VEO_I2V),
    "veo-3.1-lite-image-to-video": page(**{**_VEO_I2V, "resolutions": ["720p", "1080p"]}),
    "veo-3.1-first-last-frame-to-video": page(**_VEO_FLF),
    "veo-3.1-fast-first-last-frame-to-video": page(**_VEO_FLF),
    "veo-3.1-lite-first-last-frame-to-video": page(**{**_VEO_FLF, "resolutions": ["720p", "1080p"]}),
    "veo-3.1-reference-to-video": page(**_VEO_REF),
    "veo-3.1-fast-reference-to-video": page(**{**_VEO_REF, "fields": {k: v for k, v in _VEO_REF["fields"].items()
                                                                      if k != "reference_type"}}),
    "veo-3.1-extend": page(**_VEO_EXT),
    "veo-3.1-extend-fast": page(**_VEO_EXT),
    "sora-2": page(**_SORA),
    "sora-2-pro": page(**_SORA),
    "sora-2-character": page({"video_url": VID, "name": "Alice"}, {"video_url": VID, "name": "Alice"}),
    "seedance-2.0-reference-to-video": page(**_SEEDANCE_REF),
    "seedance-2.0-fast-reference-to-video": page(**{**_SEEDANCE_REF, "resolutions": ["480p", "720p"]}),
    "seedance-2.0-text-to-video": page(**_SEEDANCE_T2V),
    "seedance-2.0-fast-text-to-video": page(**{**_SEEDANCE_T2V, "resolutions": ["480p", "720p"]}),
    "seedance-2.0-image-to-video": page(**{**_SEEDANCE_T2V, "open_": True}),
    "seedance-2.0-fast-image-to-video": page(**{**_SEEDANCE_T2V, "resolutions": ["480p", "720p"], "open_": True}),
    "kling-o3-reference-to-video": page(
        {"prompt": "by the sea", "multi_prompt": None, "resolution": "720p", "generate_audio": False,
         "start_image_url": IMG, "end_image_url": IMG, "image_urls": [IMG], "elements": [{}], "aspect_ratio": "16:9",
         "duration": 5},
        {}, defaults={"resolution": "720p", "generate_audio": False, "aspect_ratio": "16:9", "duration": 5},
        durations=(3, 15), resolutions=["720p", "1080p", "4k"], aspect=("aspect_ratio", KLING_AR),
        counts={"image_urls": (0, 4)}, one_of=("prompt", "multi_prompt"), open_=True),
    "kling-o3-image-to-video": page(
        {"image_url": IMG, "prompt": "x", "multi_prompt": None, "resolution": "720p", "generate_audio": False,
         "end_image_url": IMG, "duration": 5},
        {"image_url": IMG}, defaults={"resolution": "720p", "generate_audio": False}, durations=(3, 15),
        resolutions=["720p", "1080p", "4k"], one_of=("prompt", "multi_prompt"), open_=True),
    "kling-v3-text-to-video": page(
        {"prompt": "x", "resolution": "720p", "generate_audio": True, "negative_prompt": "blur", "aspect_ratio": "16:9",
         "duration": 5, "voice_ids": ["v1"], "multi_prompt": [{"prompt": "y", "duration": 5}]},
        {"prompt": "x"}, defaults={"resolution": "720p", "generate_audio": False, "aspect_ratio": "16:9", "duration": 5},
        aspect=("aspect_ratio", KLING_AR), **_KLING_V3),
    "kling-v3-image-to-video": page(
        {"prompt": "x", "image_url": IMG, "image_tail_url": IMG, "resolution": "720p", "generate_audio": True,
         "duration": 10, "voice_ids": ["v1"]},
        {"prompt": "x", "image_url": IMG}, defaults={"resolution": "720p", "generate_audio": False, "duration": 5},
        open_=True, **_KLING_V3),
    "kling-v3-motion-control": page(**_MOTION),
    "kling-v2-6-motion-control": page(**_MOTION),
    "kling-o3-video-to-video-edit": page({"prompt": "@Video1 at dusk", "video_url": VID, "resolution": "720p",
                                          "keep_audio": False, "elements": [{}]},
                                         {"prompt": "@Video1 at dusk", "video_url": VID},
                                         resolutions=["720p", "1080p", "4k"], open_=True),
    "veo3.1-fast": page(
        {"prompt": "x", "image_url": IMG, "duration": 5, "size": "16:9", "model_params": {},
         "callback_url": "https://hooks.example.com/done"},
        {"prompt": "x"}, defaults={"size": "auto"},
        aspect=("size", ["auto", "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"]), open_=True),
    "happyhorse-1.0-text-to-video": page(
        {"prompt": "x", "aspect_ratio": "16:9", "duration": 5, "resolution": "720p", "seed": 123,
         "enable_safety_checker": True},
        {"prompt": "x"}, defaults={"aspect_ratio": "16:9", "duration": 5, "resolution": "1080p"}, durations=(3, 15),
        resolutions=["720p", "1080p"], aspect=("aspect_ratio", HH_AR)),
    "happyhorse-1.0-image-to-video": page(
        {"image_url": IMG, "prompt": "x", "duration": 5, "resolution": "720p", "seed": 123, "enable_safety_checker": True},
        {"image_url": IMG}, defaults={"duration": 5, "resolution": "1080p"}, durations=(3, 15),
        resolutions=["720p", "1080p"], open_=True),
    "happyhorse-1.0-reference-to-video": page(
        {"prompt": "@Image1 and @Image2 at sunrise", "reference_image_urls": [IMG, IMG], "aspect_ratio": "16:9",
         "duration": 3, "resolution": "720p", "seed": 123, "enable_safety_checker": True},
        {"prompt": "x", "reference_image_urls": [IMG]}, durations=(3, 15), resolutions=["720p", "1080p"],
        aspect=("aspect_ratio", HH_AR), counts={"reference_image_urls": (1, 9)}),
    "happyhorse-1.0-video-edit": page(
        {"video_url": VID, "prompt": "@Image1 style", "reference_image_urls": [IMG], "resolution": "720p", "seed": 1,
         "enable_safety_checker": False},
        {"video_url": VID, "prompt": "x"}, resolutions=["720p", "1080p"], counts={"reference_image_urls": (0, 5)},
        open_=True),
    "kling-video-create-voice": page({"voice_url": AUD}, {"voice_url": AUD}),
    "kling-o3-ref": page({"prompt": "<<<video_1>>> at night", "mode": "pro", "image_list": [{"url": IMG}],
                          "video_list": [{"video_url": VID, "refer_type": "feature"}], "aspect_ratio": "16:9",
                          "duration": 5},
                         {"prompt": "x"}, defaults={"mode": "standard"}, counts={"video_list": (0, 1)}, open_=True),
    "vidu-q3-pro": page({"prompt": "x", "generation_type": "reference-to-video", "image_urls": [IMG], "duration": 5,
                         "aspect_ratio": "16:9", "resolution": "720p", "generate_audio": True},
                        {}, counts={"image_urls": (0, 4)}, open_=True),
    "vidu-q3-turbo": page({"prompt": "x", "generation_type": "image-to-video", "image_urls": [IMG], "duration": 5,
                           "aspect_ratio": "16:9", "resolution": "720p", "generate_audio": True},
                          {}, counts={"image_urls": (0, 2)}, open_=True),
    "wan-2.7-text-to-video": page(
        {"prompt": "x", "aspect_ratio": "16:9", "duration": 5, "resolution": "720p", "audio_url": AUD},
        {"prompt": "x"}, defaults={"aspect_ratio": "16:9", "duration": 5, "resolution": "1080p"}, durations=(2, 15),
        resolutions=["720p", "1080p"], aspect=("aspect_ratio", HH_AR), open_=True),
    "wan-2.7-image-to-video": page(
        {"prompt": "x", "generation_type": "image-to-video", "image_urls": [IMG], "video_url": None, "duration": 5,
         "resolution": "720p"},
        {}, durations=(2, 15), resolutions=["720p", "1080p"], counts={"image_urls": (0, 2)}, open_=True),
    "wan-2.7-reference-to-video": page(
        {"prompt": "x", "reference_image_urls": [IMG], "reference_video_urls": [VID], "duration": 5, "resolution": "720p",
         "aspect_ratio": "16:9"},
        {"prompt": "x"}, defaults={"duration": 5}, durations=(2, 15), resolutions=["720p", "1080p"],
        aspect=("aspect_ratio", HH_AR), open_=True),
}

# Cross rules, each with a request that keeps it and one that breaks it (the message part named).
CROSS: list[tuple[str, dict[str, Any], dict[str, Any], str, str]] = [
    # (model, valid request, invalid request, field named, message part)
    ("veo-3.1-lite-image-to-video", {"prompt": "x", "image_url": IMG, "resolution": "1080p", "duration": 8},
     {"prompt": "x", "image_url": IMG, "resolution": "1080p", "duration": 4}, "duration",
     "must be one of 8 when resolution is 1080p; got 4"),
    ("veo-3.1-lite-image-to-video", {"prompt": "x", "image_url": IMG, "resolution": "720p", "duration": 6},
     {"prompt": "x", "image_url": IMG, "resolution": "1080p", "duration": 6}, "duration", "must be one of 8 when resolution is 1080p; got 6"),
    ("veo-3.1-lite-first-last-frame-to-video",
     {"prompt": "x", "first_image_url": IMG, "last_image_url": IMG, "resolution": "720p", "duration": 4},
     {"prompt": "x", "first_image_url": IMG, "last_image_url": IMG, "duration": 4}, "duration",
     "must be one of 8 when resolution is 1080p; got 4"),  # 1080p is the documented default
    ("veo-3.1", {"prompt": "x", "generation_type": "reference-to-video", "image_urls": [IMG] * 3},
     {"prompt": "x", "generation_type": "reference-to-video", "image_urls": []}, "image_urls",
     "must have 1 to 3 item(s) when generation_type is reference-to-video, got 0"),
    ("veo-3.1", {"prompt": "x", "generation_type": "first-last-frame", "image_urls": [IMG, IMG]},
     {"prompt": "x", "generation_type": "first-last-frame", "image_urls": [IMG]}, "image_urls",
     "must have exactly 2 item(s) when generation_type is first-last-frame, got 1"),
    ("veo-3.1", {"prompt": "x", "generation_type": "image-to-video", "image_urls": [IMG]},
     {"prompt": "x", "generation_type": "image-to-video", "image_urls": [IMG, IMG]}, "image_urls",
     "must have exactly 1 item(s) when generation_type is image-to-video, got 2"),
    ("veo-3.1", {"prompt": "x"}, {"prompt": "x", "image_urls": [IMG]}, "image_urls",
     "must have exactly 0 item(s) when generation_type is text-to-video, got 1"),
    ("veo-3.1-fast", {"prompt": "x", "generation_type": "first-last-frame", "image_urls": [IMG, IMG]},
     {"prompt": "x", "generation_type": "reference-to-video", "image_urls": [IMG]}, "generation_type",
     "must be one of text-to-video, image-to-video, first-last-frame"),  # "no reference-to-video mode"
    ("veo-3.1-extend", {"prompt": "x", "video": VID}, {"prompt": "x", "video_url": VID, "video": VID}, "video_url",
     "set exactly one of video_url, video (got video_url, video)"),
    ("veo-3.1-extend-fast", {"prompt": "x", "video_url": VID}, {"prompt": "x"}, "video_url",
     "set exactly one of video_url, video"),
    ("kling-v3-text-to-video", {"prompt": "x", "voice_ids": ["v1", "v2"], "generate_audio": True},
     {"prompt": "x", "voice_ids": ["v1"]}, "generate_audio", "must be one of true when voice_ids is set; got false"),
    ("kling-v3-image-to-video", {"prompt": "x", "image_url": IMG, "voice_ids": ["v1"], "generate_audio": True},
     {"prompt": "x", "image_url": IMG, "voice_ids": ["v1"], "generate_audio": False}, "generate_audio",
     "must be one of true when voice_ids is set; got false"),
    ("kling-o3-reference-to-video", {"multi_prompt": [{"prompt": "y", "duration": 5}]},
     {"prompt": "x", "multi_prompt": [{"prompt": "y", "duration": 5}]}, "prompt",
     "set exactly one of prompt, multi_prompt (got prompt, multi_prompt)"),
    ("kling-o3-image-to-video", {"image_url": IMG, "prompt": "x"}, {"image_url": IMG}, "prompt",
     "set exactly one of prompt, multi_prompt"),
    ("seedance-2.0-reference-to-video", {"prompt": "x", "image_urls": [IMG], "audio_urls": [AUD]},
     {"prompt": "x", "audio_urls": [AUD]}, "audio_urls", "needs image_urls or video_urls too"),
    ("seedance-2.0-reference-to-video", {"prompt": "x", "aspect_ratio": "9:16"},
     {"prompt": "x", "ratio": "9:16", "aspect_ratio": "9:16"}, "aspect_ratio", "set at most one of ratio, aspect_ratio"),
    ("seedance-2.0-text-to-video", {"prompt": "x", "ratio": "21:9"},
     {"prompt": "x", "ratio": "21:9", "aspect_ratio": "1:1"}, "aspect_ratio", "set at most one of ratio, aspect_ratio"),
    ("seedance-2.0-reference-to-video", {"prompt": "x", "image_urls": [IMG] * 9, "video_urls": [VID] * 3},
     {"prompt": "x", "image_urls": [IMG] * 9, "video_urls": [VID] * 3, "audio_urls": [AUD] * 3}, "image_urls",
     "image_urls + video_urls + audio_urls hold 15 items; at most 12"),
    ("wan-2.7-image-to-video", {"generation_type": "first-last-frame", "image_urls": [IMG, IMG]},
     {"generation_type": "first-last-frame", "image_urls": [IMG]}, "image_urls",
     "must have exactly 2 item(s) when generation_type is first-last-frame, got 1"),
    ("wan-2.7-image-to-video", {"generation_type": "image-to-video", "image_urls": [IMG]},
     {"generation_type": "image-to-video", "image_urls": [IMG, IMG]}, "image_urls",
     "must have exactly 1 item(s) when generation_type is image-to-video, got 2"),
    ("wan-2.7-image-to-video", {"generation_type": "video-continuation", "video_url": VID},
     {"generation_type": "video-continuation"}, "video_url", "is required when generation_type is video-continuation"),
    ("vidu-q3-pro", {"generation_type": "reference-to-video", "image_urls": [IMG] * 4},
     {"generation_type": "reference-to-video", "image_urls": []}, "image_urls",
     "must have 1 to 4 item(s) when generation_type is reference-to-video, got 0"),
    ("vidu-q3-turbo", {"generation_type": "first-last-frame", "image_urls": [IMG, IMG]},
     {"generation_type": "reference-to-video", "image_urls": [IMG]}, "generation_type",
     "must be one of text-to-video, image-to-video, first-last-frame"),  # turbo: no reference-to-video
    ("vidu-q3-pro", {"generation_type": "text-to-video"}, {"generation_type": "text-to-video", "image_urls": [IMG]},
     "image_urls", "must have exactly 0 item(s) when generation_type is text-to-video, got 1"),
    ("happyhorse-1.0-reference-to-video", {"prompt": "@Image2 then @Image1", "reference_image_urls": [IMG, IMG]},
     {"prompt": "@Image3", "reference_image_urls": [IMG, IMG]}, "prompt",
     "refers to @Image3 but reference_image_urls has 2 item(s)"),
    ("grok-imagine-reference-to-video", {"prompt": "@Image2 and @Image1", "reference_image_urls": [IMG, IMG]},
     {"prompt": "@Image3 walks", "reference_image_urls": [IMG, IMG]}, "prompt",
     "refers to @Image3 but reference_image_urls has 2 item(s)"),
    ("seedance-2.0-reference-to-video", {"prompt": "@Audio1 beat", "video_urls": [VID], "audio_urls": [AUD]},
     {"prompt": "@Audio2 beat", "video_urls": [VID], "audio_urls": [AUD]}, "prompt",
     "refers to @Audio2 but audio_urls has 1 item(s)"),
]


def _write(tmp_path: Path, job: dict[str, Any]) -> Path:
    p = tmp_path / "m.yaml"
    if "name" not in PAGES[job["model"]]["fields"]:  # sora-2-character's `name` is the job's name
        job = {"name": "a", **job}
    p.write_text("jobs:\n  - " + json.dumps(job) + "\n")
    return p


def _accepts(tmp_path: Path, model: str, fields: dict[str, Any]) -> dict[str, Any]:
    m = Manifest(_write(tmp_path, {"model": model, **fields}))
    [job] = list(m.expand())
    m.check()
    return job.request


def _refuses(tmp_path: Path, model: str, fields: dict[str, Any]) -> str:
    m = Manifest(_write(tmp_path, {"model": model, **fields}))
    with pytest.raises(ManifestError) as e:
        list(m.expand())
        m.check()
    return str(e.value)


def _minimal(model: str) -> dict[str, Any]:
    facts = PAGES[model]
    req = dict(facts["required"])
    if facts["one_of"]:
        first = facts["one_of"][0]
        req[first] = facts["fields"][first] if facts["fields"][first] is not None else VID
    return req


def _cases() -> list[tuple[str, str, dict[str, Any], str | None]]:
    """(model, rule, fields, None = valid | the field an invalid one names)."""
    out: list[tuple[str, str, dict[str, Any], str | None]] = []
    for model, facts in PAGES.items():
        base = _minimal(model)
        lite = "-lite-" in model  # keep the 1080p ⇒ 8 s rule out of the duration cases
        d = facts["durations"]
        if d is not None:
            values = list(range(d[0], d[1] + 1)) if isinstance(d, tuple) else d
            for v in values:
                out.append((model, f"duration={v}", {**base, "duration": v, **({"resolution": "720p"} if lite else {})},
                            None))
            bad = [d[0] - 1, d[1] + 1] if isinstance(d, tuple) else [v for v in (1, 2, 3, 5, 7, 9, 15, 25) if v not in d][:3]
            if facts["auto"] is not None:
                out.append((model, "duration=auto", {**base, "duration": facts["auto"]}, None))
                bad = [b for b in bad if b != facts["auto"]] + [-2]
            out += [(model, f"duration={v}", {**base, "duration": v}, "duration") for v in bad]
        elif "duration" not in facts["fields"]:
            out.append((model, "no duration field", {**base, "duration": 8}, "duration"))
        if facts["resolutions"]:
            for r in facts["resolutions"]:
                out.append((model, f"resolution={r}", {**base, "resolution": r, **({"duration": 8} if lite else {})},
                            None))
            for r in ("1440p", "4k", "1080p", "480p"):
                if r not in facts["resolutions"]:
                    out.append((model, f"resolution={r}", {**base, "resolution": r}, "resolution"))
        elif "resolution" not in facts["fields"]:
            out.append((model, "no resolution field", {**base, "resolution": "720p"}, "resolution"))
        if facts["aspect"]:
            field, ratios = facts["aspect"]
            for a in ratios:
                out.append((model, f"{field}={a}", {**base, field: a}, None))
            for a in ("2:1", "21:9", "4:3", "auto"):
                if a not in ratios:
                    out.append((model, f"{field}={a}", {**base, field: a}, field))
        for field, (lo, hi) in facts["counts"].items():
            sample = facts["fields"][field][0]
            # what the list needs beside it (its own cross rules are CROSS's): audio needs a video or
            # an image, voices need audio on
            extra = {"audio_urls": {"video_urls": [VID]}, "voice_ids": {"generate_audio": True}}.get(field, {})
            out.append((model, f"{field} x{hi}", {**base, **extra, field: [sample] * hi}, None))
            out.append((model, f"{field} x{hi + 1}", {**base, **extra, field: [sample] * (hi + 1)}, field))
            if lo > 0:
                out.append((model, f"{field} x{lo - 1}", {k: v for k, v in base.items() if k != field}, field))
        for field in facts["required"]:
            out.append((model, f"without {field}", {k: v for k, v in base.items() if k != field}, field))
    return out


CASES = _cases()


@pytest.mark.parametrize("model, rule, fields, refused", CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_each_documented_rule_accepts_and_refuses_as_the_page_says(tmp_path, model, rule, fields, refused):
    if refused is None:
        request = _accepts(tmp_path, model, fields)
        assert Simulator.validate(request) is None, (model, rule, request)  # the simulator's reading agrees
    else:
        message = _refuses(tmp_path, model, fields)
        assert f"field '{refused}'" in message and "m.yaml" in message, message


def test_every_model_has_valid_and_invalid_cases_for_each_of_its_rules():
    by_model: dict[str, set[tuple[str, bool]]] = {}
    for model, rule, _, refused in CASES:
        by_model.setdefault(model, set()).add((rule.split("=")[0].split(" x")[0], refused is None))
    assert set(by_model) == set(SHIPPED.models) == set(PAGES)
    for model, seen in by_model.items():
        kinds = {k for k, _ in seen}
        for kind in kinds - {"no duration field", "no resolution field"} - {k for k in kinds if k.startswith("without")}:
            assert (kind, True) in seen and (kind, False) in seen, (model, kind)


@pytest.mark.parametrize("model, valid, invalid, field, message", CROSS, ids=[f"{c[0]}:{c[3]}" for c in CROSS])
def test_cross_rules(tmp_path, model, valid, invalid, field, message):
    request = _accepts(tmp_path, model, valid)
    assert Simulator.validate(request) is None, request
    text = _refuses(tmp_path, model, invalid)
    assert f"field '{field}': {message}" in text, text
    assert text.count("field '") == 1, text  # one problem, one line


@pytest.mark.parametrize("model", sorted(PAGES))
def test_the_request_body_carries_exactly_the_documented_names_and_defaults(tmp_path, model):
    facts = PAGES[model]
    minimal = _minimal(model)
    request = _accepts(tmp_path, model, minimal)
    assert request == {"model": model, **minimal, **facts["defaults"]}
    # every documented field is a field of the entry, and the entry has no other
    assert set(SHIPPED.models[model].fields) == set(facts["fields"]), model
    # all of them at once (one of each exclusive pair) are sent under their documented names
    full = {k: v for k, v in facts["fields"].items() if v is not None and v != []}
    if facts["one_of"]:
        full.pop(facts["one_of"][1], None)
    full = {**full, **{k: v for k, v in minimal.items() if k not in full}}
    request = _accepts(tmp_path, model, full)
    assert set(request) == {"model", *full}, model
    assert Simulator.validate(request) is None, request
    # an undocumented field: refused as a typo, or (pages with unnamed fields: open) sent with a warning
    m = Manifest(_write(tmp_path, {"model": model, **minimal, "not_on_the_page": 1}))
    [job] = list(m.expand())
    m.check()
    assert ("not_on_the_page" in job.request) is facts["open"], model
    assert any("not_on_the_page" in w for w in m.warnings)


@pytest.mark.parametrize("model", sorted(PAGES))
def test_every_entry_names_its_pages_and_the_date_read(model):
    spec = SHIPPED.models[model]
    assert spec.read_on == "2026-11-30"
    assert spec.sources and all(u.startswith(("https://docs.foxapi.cc/pages/", "https://docs.aihubmax.com/pages/"))
                                for u in spec.sources)


def test_one_problem_one_line(tmp_path):
    """A field that failed its own check is not read again by the rules that use it."""
    cases = [
        ("veo-3.1-reference-to-video", {"prompt": "x", "reference_image_urls": [IMG] * 4}, "reference_image_urls"),
        ("veo-3.1", {"prompt": "x", "generation_type": "reference-to-video", "image_urls": [IMG] * 4}, "image_urls"),
        ("kling-o3-reference-to-video", {"prompt": "x" * 2501}, "prompt"),
        ("grok-imagine-reference-to-video", {"prompt": "@Image8 walks", "reference_image_urls": [IMG] * 8},
         "reference_image_urls"),
        ("seedance-2.0-reference-to-video", {"prompt": "@Image1", "image_urls": [IMG] * 10, "audio_urls": [AUD]},
         "image_urls"),
        ("veo-3.1-lite-image-to-video", {"prompt": "x", "image_url": IMG, "resolution": "4k", "duration": 4},
         "resolution"),
        ("kling-v3-text-to-video", {"prompt": "x", "voice_ids": ["a", "b", "c"]}, "voice_ids"),
    ]
    for model, fields, field in cases:
        text = _refuses(tmp_path, model, fields)
        assert text.count("field '") == 1 and f"field '{field}'" in text, text


def test_sora_character_takes_the_jobs_name_as_its_character_name(tmp_path):
    request = _accepts(tmp_path, "sora-2-character", {"name": "Alice", "video_url": VID})
    assert request == {"model": "sora-2-character", "name": "Alice", "video_url": VID}
    assert "80" in _refuses(tmp_path, "sora-2-character", {"name": "A" * 81, "video_url": VID})


ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.parametrize("family, jobs", [("veo", 5), ("sora", 3), ("seedance", 3), ("kling", 5), ("happyhorse", 4),
                                          ("wan", 3)])
def test_each_family_example_runs_end_to_end_and_every_clip_verifies(sim_factory, tmp_path, family, jobs):
    """manifests/FAMILY.yaml through the simulator: every model of it is accepted, and every clip's
    size and length follow its request (verification compares them)."""
    from conftest import run_args, run_cli

    sim = sim_factory(seed=22)
    example = (ROOT / "manifests" / f"{family}.yaml").read_text()
    assert "resolution: 1080p" not in example and "resolution: 4k" not in example  # test clips stay ≤ 720p
    m = tmp_path / f"{family}.yaml"
    m.write_text(example)
    r = run_cli(run_args(sim, m, tmp_path, "--json"))
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["counts"] == {"done": jobs} and doc["verified"] == {"ok": jobs}, doc
    creates = sim.truth()["creates"]
    models = {line.split(":", 1)[1].strip() for line in example.splitlines() if line.strip().startswith("model:")}
    assert len(creates) == jobs and {c["model"] for c in creates} == models


def test_models_command_shows_the_pages_and_the_date_read():
    from conftest import run_cli

    r = run_cli(["models", "veo-3.1-lite-first-last-frame-to-video"])
    assert r.exit_code == 0
    assert ("source: https://docs.foxapi.cc/pages/zh/api-manual/video-series/veo3.1/veo-3.1-first-last-frame-to-video"
            in r.output)
    assert "read on: 2026-11-30" in r.output
    assert "rule: duration: one of 8 when resolution=1080p" in r.output
    doc = json.loads(run_cli(["models", "kling-v3-text-to-video", "--json"]).stdout)[0]
    assert doc["read_on"] == "2026-11-30" and len(doc["sources"]) == 3
    assert "generate_audio: one of true when voice_ids is set" in doc["rules"]


def test_a_models_file_gets_the_same_rule_engine(tmp_path, monkeypatch):
    """A user's entry (the provider's next model, read the day its page changes) uses the same
    rule kinds, checked by the same engine, and a malformed rule is refused naming the file."""
    monkeypatch.chdir(tmp_path)  # no ledger named, none at ./batchgen.db: plan compares with none
    from conftest import run_cli

    (tmp_path / "models.yaml").write_text(
        "veo-4-lite:\n  sources: [https://docs.foxapi.cc/pages/en/api-manual/video-series/veo4/veo-4-lite]\n"
        "  read_on: 2026-12-01\n  fields:\n    prompt: {type: text, required: true}\n"
        "    duration: {type: int, default: 8, choices: [4, 8]}\n"
        "    resolution: {type: enum, choices: [720p, 1080p]}\n"
        "  rules:\n    - {when: {resolution: 1080p}, allowed: {duration: [8]}}\n")
    ok = tmp_path / "ok.yaml"
    ok.write_text("jobs:\n  - {name: a, model: veo-4-lite, prompt: x, resolution: 720p, duration: 4}\n")
    r = run_cli(["plan", str(ok), "--models", str(tmp_path / "models.yaml")], BATCHGEN_LEDGER=None)
    assert r.exit_code == 0, r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("jobs:\n  - {name: a, model: veo-4-lite, prompt: x, resolution: 1080p, duration: 4}\n")
    r = run_cli(["plan", str(bad), "--models", str(tmp_path / "models.yaml")], BATCHGEN_LEDGER=None)
    assert r.exit_code == 2 and "field 'duration': must be one of 8 when resolution is 1080p; got 4" in r.output
    r = run_cli(["models", "veo-4-lite", "--models", str(tmp_path / "models.yaml")])
    assert "read on: 2026-12-01" in r.output and "source: https://docs.foxapi.cc/pages/en/" in r.output
    # (each refusal names the file and what is wrong; the wording is the loader's)
    for rule, says in [("{when: {resolution: 1080p}, only: {duration: [8]}}", "a rule is one of"),
                       ("{when: {resolution: 1080p}, allowed: {durations: [8]}}", "durations"),
                       ("{when: {resolution: 1080p}, allowed: {duration: 8}}", "allowed"),
                       ("{when_set: [duration], allowed: {resolution: [720p]}}", "when_set"),
                       ("{when: {resolution: 1080p}, required: duration}", "required")]:
        (tmp_path / "broken.yaml").write_text(
            "m:\n  fields:\n    prompt: {type: text}\n    duration: {type: int, min: 0}\n    resolution: {type: text}\n"
            f"  rules:\n    - {rule}\n")
        r = run_cli(["plan", str(ok), "--models", str(tmp_path / "broken.yaml")], BATCHGEN_LEDGER=None)
        assert r.exit_code == 2 and "broken.yaml" in r.output and says in r.output, r.output


def _varied(model: str) -> dict[str, Any]:
    """A request of ``model`` away from its defaults where the page allows: the shortest
    documented duration, the lowest resolution, a portrait ratio."""
    spec = SHIPPED.models[model]
    req = _minimal(model)
    d = spec.fields.get("duration")
    if d is not None:
        req["duration"] = min(d.choices) if d.choices else max(d.min or 0, 2)
    r = spec.fields.get("resolution")
    if r is not None and r.choices:
        req["resolution"] = next(x for x in ("480p", "720p", "1080p") if x in r.choices)
    a = spec.fields.get(spec.aspect_field) or spec.fields.get("aspect_ratio")
    name = spec.aspect_field if spec.aspect_field in spec.fields else "aspect_ratio"
    if a is not None and a.choices and "9:16" in a.choices:
        req[name] = "9:16"
    return req


@pytest.mark.parametrize("model", sorted(PAGES))
def test_the_simulator_renders_what_each_model_is_asked_for(tmp_path, model):
    """Every catalog model: the simulator's clip plan (its size, length and audio) passes the same
    verification a real clip gets, for a request away from the model's defaults."""
    from batchgen import media
    from batchgen.simulator import SimConfig

    request = _accepts(tmp_path, model, _varied(model))
    sim = Simulator(SimConfig(seed=1))
    plan = sim.media_plan(dict(request))
    measured = {"duration": plan["seconds"], "width": plan["width"], "height": plan["height"], "fps": 24.0,
                "audio": plan["audio"]}
    assert media.compare(measured, request, model) == ("ok", []), (request, plan)
    if "resolution" in request and request["resolution"] in ("480p", "720p"):
        assert min(plan["width"], plan["height"]) == int(request["resolution"][:-1])
