"""A local stand-in for the foxapi video API (reference: shared/reference/foxapi-video-api.md).

Implements ``POST /v1/videos/generations``, ``GET /v1/tasks/{id}`` and the result files, with
seeded fault injection, and keeps ground truth (every create it accepted, every file's sha256)
at ``GET /_sim/ground-truth`` so tests can count duplicate and orphaned creates.

It deliberately imports nothing from the rest of batchgen: its own copy of the request schema is
an independent oracle for the client's validation.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import re
import string
import struct
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

_AR = ("16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16")
# model -> field -> (kind, required, choices-or-range, default)
_SCHEMA: dict[str, dict[str, tuple[str, bool, Any, Any]]] = {
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
_SCHEMA.update({
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
_FAIL_CODES = ("generation_failed", "timeout", "model_unavailable", "content_policy_violation")


@dataclass
class SimConfig:
    """Every knob of the simulator. Probabilities are per request; times are seconds."""

    seed: int = 0
    api_key: str | None = None  # None: any non-empty Bearer token is accepted
    render_min: float = 2.0
    render_max: float = 6.0
    estimate_noise: float = 0.15  # estimated_time = render time × U(1-n, 1+n)
    latency: float = 0.0  # added to every API response
    rpm_limit: float | None = None  # token bucket per key; over it → 429 + Retry-After
    p429: float = 0.0
    retry_after: float = 1.0
    p_burst: float = 0.0  # starts a 429 burst: every request refused for burst_seconds
    burst_seconds: float = 2.0
    p_slow: float = 0.0  # the response (API or file) is delayed by slow_seconds
    slow_seconds: float = 1.0
    p5xx_before: float = 0.0  # 500/502/503 and nothing created
    p500_after: float = 0.0  # create: task created, then 500 (ambiguous)
    p_drop_after: float = 0.0  # create: task created, then the connection is dropped (ambiguous)
    p_drop_before: float = 0.0  # create: connection dropped, nothing created (ambiguous to client)
    p_malformed: float = 0.0  # 200 with a body that is not JSON (create: the task exists)
    p_fail: float = 0.0  # task ends failed
    p_cancel: float = 0.0  # task ends cancelled
    p_truncate: float = 0.0  # result download cut short
    p_poll_404: float = 0.0  # poll answers 404 (unknown task), as an eventually consistent store might
    file_min: int = 4096
    file_max: int = 16384
    result_ttl: float = 24 * 3600.0
    balance: float | None = None  # credits; None = unlimited; exhausted → 402
    upload_max_bytes: int = 10 * 1024 * 1024  # larger uploads → 413
    storage_cap: int = 64 * 1024 * 1024  # per key; full → evict oldest (auto_cleanup) or 403
    credits_per_second: float = 1.0
    # Result files: "real" = decodable H.264 MP4s (PyAV) whose duration and frame size follow
    # the request, with an AAC track when `audio`; "stub" = tiny signature-only files (fast,
    # for throughput benchmarks). The p_* knobs serve wrong ones, for verification tests.
    media: str = "real"
    audio: bool = True
    fps: int = 24
    p_short: float = 0.0  # half the asked duration
    p_wrong_aspect: float = 0.0  # width and height swapped
    p_undecodable: float = 0.0  # a valid `ftyp` box, then garbage
    p_no_audio: float = 0.0  # no audio track

    def update(self, values: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        for k, v in values.items():
            if k not in names:
                raise KeyError(k)
            setattr(self, k, v)


@dataclass
class _Task:
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


@dataclass
class Counters:
    requests: int = 0
    creates_accepted: int = 0
    polls: int = 0
    downloads: int = 0
    uploads: int = 0
    status: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    # API requests per wall-clock second (unix seconds as keys): lets tests check a request
    # budget shared by several client processes.
    per_second: dict[str, int] = field(default_factory=dict)

    def bump(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1


def canonical_sha256(body: Any) -> str:
    """Hash of a request body in canonical JSON: how ground truth identifies a job's request."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def mp4_bytes(task_id: str, size: int) -> bytes:
    """A small, deterministic file that passes an MP4 signature check: an ``ftyp`` box followed
    by an ``mdat`` box of seeded noise."""
    ftyp = b"ftyp" + b"isom" + struct.pack(">I", 0x200) + b"isomiso2avc1mp41"
    ftyp = struct.pack(">I", len(ftyp) + 4) + ftyp
    payload = random.Random(task_id).randbytes(max(0, size - len(ftyp) - 8))
    return ftyp + struct.pack(">I", len(payload) + 8) + b"mdat" + payload


class Simulator:
    """The fake API. ``state_file`` (JSON lines, appended once per accepted create) keeps its
    tasks across restarts, so a run against the embedded simulator can be interrupted and
    resumed like a real one; ``saved_port`` is the port it last listened on (result URLs
    name it)."""

    def __init__(self, config: SimConfig | None = None, *, state_file: Path | None = None) -> None:
        self.config = config or SimConfig()
        self.rng = random.Random(self.config.seed)
        self.tasks: dict[str, _Task] = {}
        self.counters = Counters()
        self.spent = 0.0
        self._bucket: dict[str, tuple[float, float]] = {}
        self._burst_until = 0.0
        # create-path faults with the request-body hash, so audits can tie them to jobs
        self.fault_log: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.app = web.Application(client_max_size=2 * 1024 * 1024)
        self.app.router.add_post("/v1/videos/generations", self._create)
        self.app.router.add_get("/v1/tasks/{task_id}", self._get_task)
        self.app.router.add_get("/files/{task_id}.mp4", self._file)
        self.app.router.add_post("/v1/files/upload/stream", self._upload)
        self.uploaded: dict[str, tuple[int, float, str]] = {}  # file id → (size, created, sha256)
        self.app.router.add_get("/_sim/ground-truth", self._ground_truth)
        self.app.router.add_get("/_sim/stats", self._stats)
        self.app.router.add_post("/_sim/config", self._set_config)
        self.state_file = state_file
        self.saved_port: int | None = None
        if state_file is not None:
            self._load_state(state_file)

    def _load_state(self, path: Path) -> None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                doc = json.loads(line)
                if "task" in doc:
                    t = _Task(**doc["task"])
                    self.tasks[t.id] = t
                    self.spent += t.credits
                elif "port" in doc:
                    self.saved_port = int(doc["port"])
            except (ValueError, TypeError):
                continue  # a line cut short by a kill: that create's client never got its id either

    def _save(self, doc: dict[str, Any]) -> None:
        if self.state_file is not None:
            with open(self.state_file, "a", encoding="utf-8") as f:
                f.write(json.dumps(doc) + "\n")

    # ------------------------------------------------------------------ lifecycle
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        # A client killed mid-request (the crash tests do it on purpose) is not a server error:
        # without this, aiohttp prints a traceback for every such disconnect.
        logging.getLogger("aiohttp.server").addFilter(_client_gone)
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        self.base_url = f"http://{host}:{sock.getsockname()[1]}"
        if sock.getsockname()[1] != self.saved_port:
            self._save({"port": sock.getsockname()[1]})
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ helpers
    def _chance(self, p: float, name: str) -> bool:
        if p > 0 and self.rng.random() < p:
            self.counters.bump(self.counters.faults, name)
            return True
        return False

    def _error(self, status: int, message: str, type_: str, code: str | None = None,
               headers: dict[str, str] | None = None) -> web.Response:
        err: dict[str, Any] = {"message": message, "type": type_}
        if code:
            err["code"] = code
        self.counters.bump(self.counters.status, str(status))
        return web.json_response({"error": err}, status=status, headers=headers)

    def _rate_limited(self, key: str) -> float | None:
        """Token bucket per key; returns seconds to wait when empty."""
        rpm = self.config.rpm_limit
        if not rpm:
            return None
        now = time.monotonic()
        rate = rpm / 60.0
        burst = max(1.0, rate)  # at most a second's worth at once
        tokens, last = self._bucket.get(key, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        if tokens >= 1:
            self._bucket[key] = (tokens - 1, now)
            return None
        self._bucket[key] = (tokens, now)
        return (1 - tokens) / rate

    async def _gate(self, request: web.Request) -> tuple[str | None, web.Response | None]:
        """Common front: latency, auth, rate limits, injected 429. Returns (key, error response)."""
        self.counters.requests += 1
        self.counters.bump(self.counters.per_second, str(int(time.time())))
        if self.config.latency:
            await asyncio.sleep(self.config.latency)
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            return None, self._error(401, "Missing API key", "authentication_error")
        key = auth[7:].strip()
        if self.config.api_key is not None and key != self.config.api_key:
            return None, self._error(401, "Invalid API key", "authentication_error")
        wait = self._rate_limited(key)
        if wait is not None:
            self.counters.bump(self.counters.faults, "rate_limit")
            return key, self._error(429, "Rate limit exceeded", "rate_limit_error",
                                    headers={"Retry-After": str(max(1, math.ceil(wait)))})
        now = time.monotonic()
        if now >= self._burst_until and self._chance(self.config.p_burst, "burst"):
            self._burst_until = now + self.config.burst_seconds
        if now < self._burst_until:
            self.counters.bump(self.counters.faults, "burst_429")
            return key, self._error(429, "Rate limit exceeded", "rate_limit_error",
                                    headers={"Retry-After": f"{max(0.1, self._burst_until - now):.1f}"})
        if self._chance(self.config.p429, "429"):
            return key, self._error(429, "Rate limit exceeded", "rate_limit_error",
                                    headers={"Retry-After": f"{self.config.retry_after:g}"})
        if self._chance(self.config.p_slow, "slow"):
            await asyncio.sleep(self.config.slow_seconds)
        return key, None

    def _new_id(self) -> str:
        suffix = "".join(self.rng.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        tid = f"task-unified-{int(time.time())}-{suffix}"
        return tid if tid not in self.tasks else self._new_id()

    @staticmethod
    def validate(body: Any) -> tuple[int, str, str, str | None] | None:
        """(status, message, type, code) of the rejection, or None when the body is acceptable."""
        if not isinstance(body, dict):
            return 400, "Request body must be a JSON object", "invalid_request_error", None
        model = body.get("model")
        schema = _SCHEMA.get(model) if isinstance(model, str) else None
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

    def _media_plan(self, body: dict[str, Any]) -> dict[str, Any]:
        """What the result file of this request will be: its size follows resolution and
        aspect_ratio, its length the duration (the model's default when unset); a fault knob
        may make it wrong in one way."""
        c = self.config
        schema = _SCHEMA[body["model"]]
        res = body.get("resolution") or (schema["resolution"][3] if "resolution" in schema else "480p")
        short = {"720p": 720, "1080p": 1080, "2160p": 2160, "4k": 2160}.get(res, 480)
        ar_field = ("aspect_ratio" if body.get("aspect_ratio") else "ratio" if "ratio" in schema
                    else "size" if "size" in schema else "aspect_ratio")  # seedance: ratio; veo3.1-fast: size
        ratio = body.get(ar_field) or (schema[ar_field][3] if ar_field in schema else "16:9")
        a, b = (16, 9) if ":" not in str(ratio) else (int(x) for x in str(ratio).split(":"))
        if a >= b:
            w, h = _even(short * a / b), short
        else:
            w, h = short, _even(short * b / a)
        seconds = float(body.get("duration") or (schema["duration"][3] if "duration" in schema else 6))
        if seconds < 0:  # "auto": the model decides
            seconds = 5.0
        variant = None
        for knob, name in ((c.p_short, "short"), (c.p_wrong_aspect, "wrong_aspect"), (c.p_undecodable, "undecodable"),
                           (c.p_no_audio, "no_audio")):
            if self._chance(knob, name):
                variant = name
                break
        if variant == "short":
            seconds = max(1.0, seconds / 2)
        if variant == "wrong_aspect" and w != h:
            w, h = h, w
        asked_audio = body.get("generate_audio", schema["generate_audio"][3] if "generate_audio" in schema else True)
        return {"width": w, "height": h, "seconds": seconds,
                "audio": c.audio and variant != "no_audio" and asked_audio is not False,
                "variant": variant}

    async def _result_bytes(self, t: _Task) -> bytes:
        if self.config.media == "stub":
            return mp4_bytes(t.id, t.file_size)
        key = (t.width, t.height, t.seconds, t.audio, self.config.fps)
        data = _MEDIA_CACHE.get(key)
        if data is None:
            data = await asyncio.to_thread(_cached_mp4, key)
        if t.variant == "undecodable":
            return _corrupt(data)
        return data

    def _task_view(self, t: _Task, now: float) -> dict[str, Any]:
        elapsed = now - t.created
        scaled = self.config.render_max < 10  # sub-10 s renders: report fractional estimates
        est = round(t.estimate, 2) if scaled else int(round(t.estimate))
        doc: dict[str, Any] = {
            "id": t.id, "object": "video.generation.task", "type": "video", "model": t.model,
            "created": int(t.created), "results": None, "error": None,
            "usage": {"credits_reserved": t.credits, "user_group": "default"},
            "task_info": {"can_cancel": elapsed < t.render, "estimated_time": est},
        }
        if elapsed < t.render * 0.1:
            doc.update(status="pending", progress=0)
        elif elapsed < t.render:
            doc.update(status="processing", progress=min(99, int(100 * elapsed / t.render)))
        elif t.outcome == "completed":
            doc.update(status="completed", progress=100,
                       results=[{"url": f"{self.base_url}/files/{t.id}.mp4", "width": t.width, "height": t.height}])
        elif t.outcome == "failed":
            doc.update(status="failed", progress=100,
                       error={"code": t.fail_code, "message": f"simulated {t.fail_code}", "type": "task_error"})
        else:
            doc.update(status="cancelled", progress=100)
        return doc

    # ------------------------------------------------------------------ endpoints
    async def _create(self, request: web.Request) -> web.StreamResponse:
        key, err = await self._gate(request)
        if err is not None:
            return err
        c = self.config
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return self._error(400, "Malformed JSON body", "invalid_request_error")
        sha = canonical_sha256(body)
        if self._chance(c.p_drop_before, "drop_before"):
            self.fault_log.append({"fault": "drop_before", "body_sha256": sha, "created": False})
            _drop(request)
            return web.Response(status=500)
        if self._chance(c.p5xx_before, "5xx_before"):
            status = self.rng.choice((500, 502, 503))
            self.counters.bump(self.counters.faults, f"5xx_before_{status}")
            if status != 503:  # 503 "no channel" is a clean refusal; 500/502 leave the client in doubt
                self.fault_log.append({"fault": f"{status}_before", "body_sha256": sha, "created": False})
            msg = "No available channel for this model" if status == 503 else "Upstream error"
            return self._error(status, msg, "service_unavailable_error" if status == 503 else "server_error")
        bad = self.validate(body)
        if bad is not None:
            return self._error(bad[0], bad[1], bad[2], bad[3])
        duration = body.get("duration") or _SCHEMA[body["model"]].get("duration", (0, 0, 0, 6))[3] or 6
        if duration < 0:  # "auto"
            duration = 15
        credits = round(float(duration) * c.credits_per_second * (1.4 if body.get("resolution") == "720p" else 1.0), 2)
        if c.balance is not None and self.spent + credits > c.balance:
            return self._error(402, "Insufficient balance, please top up", "insufficient_quota")
        self.spent += credits
        render = self.rng.uniform(c.render_min, c.render_max)
        r = self.rng.random()
        outcome, code = "completed", None
        if r < c.p_fail:
            outcome, code = "failed", self.rng.choice(_FAIL_CODES)
            self.counters.bump(self.counters.faults, "task_failed")
        elif r < c.p_fail + c.p_cancel:
            outcome = "cancelled"
            self.counters.bump(self.counters.faults, "task_cancelled")
        t = _Task(
            id=self._new_id(), model=body["model"], body_sha256=canonical_sha256(body), created=time.time(),
            render=render, estimate=render * self.rng.uniform(1 - c.estimate_noise, 1 + c.estimate_noise),
            outcome=outcome, fail_code=code, credits=credits, file_size=self.rng.randint(c.file_min, c.file_max),
            **self._media_plan(body))
        self.tasks[t.id] = t
        self._save({"task": asdict(t)})
        self.counters.creates_accepted += 1
        for knob, name in ((c.p500_after, "500_after"), (c.p_drop_after, "drop_after"), (c.p_malformed, "malformed_create")):
            if self._chance(knob, name):
                self.fault_log.append({"fault": name, "body_sha256": sha, "created": True, "task_id": t.id})
                if name == "500_after":
                    return self._error(500, "Internal server error", "server_error")
                if name == "drop_after":
                    _drop(request)
                    return web.Response(status=500)
                return web.Response(status=200, text='{"id": "task-unified-', content_type="application/json")
        doc = self._task_view(t, t.created)
        doc.update(status="pending", progress=0, results=None, error=None)
        self.counters.bump(self.counters.status, "200")
        return web.json_response(doc)

    async def _get_task(self, request: web.Request) -> web.StreamResponse:
        _key, err = await self._gate(request)
        if err is not None:
            return err
        self.counters.polls += 1
        c = self.config
        if self._chance(c.p5xx_before, "5xx_poll"):
            return self._error(self.rng.choice((500, 502, 503)), "Upstream error", "server_error")
        t = self.tasks.get(request.match_info["task_id"])
        if t is None or self._chance(c.p_poll_404, "poll_404"):
            return self._error(404, "Task not found", "not_found")
        if self._chance(c.p_malformed, "malformed_poll"):
            return web.Response(status=200, text="<html>502 Bad Gateway</html>", content_type="text/html")
        t.polls += 1
        self.counters.bump(self.counters.status, "200")
        return web.json_response(self._task_view(t, time.time()))

    async def _file(self, request: web.Request) -> web.StreamResponse:
        self.counters.downloads += 1
        if "Authorization" in request.headers:
            # The real CDN would ignore it; we count it so tests catch a leaked key.
            self.counters.bump(self.counters.faults, "download_with_authorization")
        t = self.tasks.get(request.match_info["task_id"])
        now = time.time()
        if t is None or t.outcome != "completed" or now - t.created < t.render:
            return web.Response(status=404, text="Not Found")
        if now - (t.created + t.render) > self.config.result_ttl:
            return web.Response(status=403, text="Link expired")
        data = await self._result_bytes(t)
        t.file_sha256 = hashlib.sha256(data).hexdigest()
        resp = web.StreamResponse(headers={"Content-Type": "video/mp4", "Content-Length": str(len(data))})
        await resp.prepare(request)
        if self._chance(self.config.p_slow, "slow_body"):
            half = len(data) // 2  # half now, the rest after a pause: a slow, not a cut, body
            await resp.write(data[:half])
            await asyncio.sleep(self.config.slow_seconds)
            await resp.write(data[half:])
            await resp.write_eof()
            return resp
        if self._chance(self.config.p_truncate, "truncate"):
            await resp.write(data[: len(data) // 2])
            _drop(request)
            return resp
        await resp.write(data)
        await resp.write_eof()
        return resp

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/files/upload/stream`` (reference §5.3): multipart ``file``, optional
        ``file_name`` and ``auto_cleanup`` (default true)."""
        _key, err = await self._gate(request)
        if err is not None:
            return err
        c = self.config
        data, name, auto_cleanup = None, None, True
        try:
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    continue  # a nested multipart: not something this endpoint takes
                if part.name == "file":
                    name = name or part.filename
                    buf = bytearray()
                    while chunk := await part.read_chunk(1 << 16):
                        buf += chunk
                        if len(buf) > c.upload_max_bytes:
                            return self._error(413, "File too large", "file_too_large_error")
                    data = bytes(buf)
                elif part.name == "file_name":
                    name = (await part.text()) or name
                elif part.name == "auto_cleanup":
                    auto_cleanup = (await part.text()).strip().lower() not in ("false", "0")
        except (ValueError, AssertionError):
            return self._error(400, "Expected multipart/form-data", "invalid_request_error")
        if data is None:
            return self._error(400, "file is required", "invalid_request_error")
        used = sum(size for size, _, _ in self.uploaded.values())
        if used + len(data) > c.storage_cap:
            if not auto_cleanup:
                return self._error(403, "Storage full", "permission_error")
            for fid in sorted(self.uploaded, key=lambda f: self.uploaded[f][1]):
                if used + len(data) <= c.storage_cap:
                    break
                used -= self.uploaded.pop(fid)[0]
                self.counters.bump(self.counters.faults, "upload_evicted")
        fid = f"file-{int(time.time())}-{self.rng.getrandbits(24):06x}"
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", name or "upload.bin")
        self.uploaded[fid] = (len(data), time.time(), hashlib.sha256(data).hexdigest())
        self.counters.uploads += 1
        self.counters.bump(self.counters.status, "200")
        return web.json_response({"id": fid, "filename": safe, "url": f"{self.base_url}/uploads/{fid}/{safe}",
                                  "size": len(data), "created": int(time.time())})

    # ------------------------------------------------------------------ admin
    def ground_truth(self) -> dict[str, Any]:
        return {
            "creates": [
                {"task_id": t.id, "body_sha256": t.body_sha256, "model": t.model, "created": t.created,
                 "outcome": t.outcome, "credits": t.credits, "polls": t.polls,
                 "file_sha256": (t.file_sha256 or (mp4_sha256(t.id, t.file_size) if self.config.media == "stub" else None))
                 if t.outcome == "completed" else None,
                 "media": {"width": t.width, "height": t.height, "seconds": t.seconds, "audio": t.audio,
                           "variant": t.variant},
                 "render_s": t.render, "ready_at": t.created + t.render}
                for t in self.tasks.values()
            ],
            "counters": asdict(self.counters),
            "uploads": [{"id": f, "size": v[0], "sha256": v[2]} for f, v in self.uploaded.items()],
            "fault_log": self.fault_log,
        }

    async def _ground_truth(self, request: web.Request) -> web.Response:
        return web.json_response(self.ground_truth())

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(asdict(self.counters))

    async def _set_config(self, request: web.Request) -> web.Response:
        try:
            self.config.update(await request.json())
        except (ValueError, KeyError) as e:
            return web.json_response({"error": {"message": f"bad config: {e}", "type": "invalid_request_error"}}, status=400)
        return web.json_response(asdict(self.config))


def _client_gone(record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, (ConnectionResetError, BrokenPipeError))


_MEDIA_CACHE: dict[tuple[int, int, float, bool, int], bytes] = {}
_MEDIA_LOCK = threading.Lock()


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def _cached_mp4(key: tuple[int, int, float, bool, int]) -> bytes:
    """One encode per (width, height, seconds, audio, fps), shared by every simulator of the
    process: real renders differ by task, but a test needs only the right shape."""
    with _MEDIA_LOCK:
        data = _MEDIA_CACHE.get(key)
        if data is None:
            data = _MEDIA_CACHE[key] = render_mp4(*key)
        return data


def render_mp4(width: int, height: int, seconds: float, audio: bool = True, fps: int = 24) -> bytes:
    """A real, decodable H.264 MP4 (AAC mono when ``audio``): a coloured field with a bar that
    crosses it, so first, middle and last frames differ. Encoded fast (ultrafast, still image)."""
    import io

    import av
    from PIL import Image

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        v = c.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "tune": "stillimage", "g": str(fps)})
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        a = c.add_stream("aac", rate=16000) if audio else None
        if a is not None:
            a.layout = "mono"
        n = max(1, int(round(seconds * fps)))
        base = Image.new("RGB", (width, height), (38, 84, 150))
        for i in range(n):
            img = base.copy()
            x = int(i * width / n)
            img.paste((230, 140, 40), (x, 0, min(width, x + max(2, width // 12)), height))
            frame = av.VideoFrame.from_image(img)  # type: ignore[no-untyped-call]
            frame.pts = i
            for p in v.encode(frame):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        if a is not None:
            rate, total, pts = 16000, int(seconds * 16000), 0
            while pts < total:
                k = min(1024, total - pts)
                af = av.AudioFrame(format="s16", layout="mono", samples=k)
                af.planes[0].update(bytes(af.planes[0].buffer_size))
                af.sample_rate, af.pts = rate, pts
                pts += k
                for p in a.encode(af):
                    c.mux(p)
            for p in a.encode():
                c.mux(p)
    return buf.getvalue()


def _corrupt(data: bytes) -> bytes:
    """Keeps the leading ``ftyp`` box (so a signature check passes) and zeroes the rest."""
    head = int.from_bytes(data[:4], "big")
    return data[:head] + bytes(len(data) - head)


def mp4_sha256(task_id: str, size: int) -> str:
    return hashlib.sha256(mp4_bytes(task_id, size)).hexdigest()


def _drop(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()

