"""The clips the simulator serves: what a request's result file will be (``plan``: frame size,
length, audio, and a fault variant that makes it wrong in one way) and its bytes (``clip``):
real, decodable H.264 MP4s (PyAV), encoded once per shape and shared by every simulator of the
process, or tiny signature-only stand-ins (``media="stub"``, for throughput benchmarks).

Knows no task life and no HTTP: the routes ask it for a plan at create time and for bytes at
download time.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import struct
import threading
from pathlib import Path
from typing import Any, Protocol

from .catalog import SCHEMA
from .config import SimConfig
from .faults import Faults


class Shape(Protocol):
    """What a clip's bytes depend on (a task carries it, as planned at create time)."""

    id: str
    file_size: int
    width: int
    height: int
    seconds: float
    audio: bool
    variant: str | None

def plan(body: dict[str, Any], config: SimConfig, faults: Faults) -> dict[str, Any]:
    """What the result file of this request will be: its size follows resolution and
    aspect_ratio, its length the duration (the model's default when unset); a fault knob
    may make it wrong in one way."""
    c = config
    schema = SCHEMA[body["model"]]
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
        if faults.chance(knob, name):
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


async def clip(config: SimConfig, t: Shape) -> bytes:
    """The bytes served for ``t``'s result (the encode, when not cached yet, off the event loop)."""
    if config.media == "stub":
        return mp4_bytes(t.id, t.file_size)
    key = (t.width, t.height, t.seconds, t.audio, config.fps)
    data = _FILES.get(config.media_file) if config.media_file else _MEDIA_CACHE.get(key)
    if data is None:  # read or encoded once per process
        data = await (asyncio.to_thread(_given, config.media_file) if config.media_file
                      else asyncio.to_thread(_cached_mp4, key))
    if t.variant == "undecodable":
        return _corrupt(data)
    if config.media_kbps > 0:
        return padded(data, int(config.media_kbps * 1000 / 8 * t.seconds))
    return data


_PADDED: dict[tuple[int, int], bytes] = {}
_FILES: dict[str, bytes] = {}


def _given(path: str) -> bytes:
    """``media_file``'s bytes, read once per process."""
    data = _FILES.get(path)
    if data is None:
        data = _FILES[path] = Path(path).read_bytes()
    return data


def padded(data: bytes, size: int) -> bytes:
    """``data`` followed by a top-level ``free`` box that brings it to ``size`` bytes (unchanged
    when it is that large already). Kept per (clip, size): every download of a shape shares it."""
    if size <= len(data) + 8:
        return data
    key = (id(data), size)
    out = _PADDED.get(key)
    if out is None:
        fill = size - len(data)
        out = _PADDED[key] = data + struct.pack(">I", fill) + b"free" + bytes(fill - 8)
    return out


def mp4_bytes(task_id: str, size: int) -> bytes:
    """A small, deterministic file that passes an MP4 signature check: an ``ftyp`` box followed
    by an ``mdat`` box of seeded noise."""
    ftyp = b"ftyp" + b"isom" + struct.pack(">I", 0x200) + b"isomiso2avc1mp41"
    ftyp = struct.pack(">I", len(ftyp) + 4) + ftyp
    payload = random.Random(task_id).randbytes(max(0, size - len(ftyp) - 8))
    return ftyp + struct.pack(">I", len(payload) + 8) + b"mdat" + payload


def mp4_sha256(task_id: str, size: int) -> str:
    return hashlib.sha256(mp4_bytes(task_id, size)).hexdigest()


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
            data = _MEDIA_CACHE[key] = _shared_mp4(key)
        return data


def _shared_mp4(key: tuple[int, int, float, bool, int]) -> bytes:
    """The encode, or the file another process made of it when ``BATCHGEN_SIM_MEDIA_CACHE``
    names a folder: the test suite sets it, so its parallel workers and the `run --simulate`
    processes it starts encode each shape once between them, not once each (an encode is
    0.1-2 s of CPU). Written to a temporary name and renamed: a reader sees a whole file or none."""
    folder = os.environ.get("BATCHGEN_SIM_MEDIA_CACHE")
    if not folder:
        return render_mp4(*key)
    width, height, seconds, audio, fps = key
    path = Path(folder) / f"{width}x{height}-{seconds:g}s-{'audio' if audio else 'mute'}-{fps}fps.mp4"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    data = render_mp4(*key)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:  # a cache that cannot be written is only slower
        tmp.unlink(missing_ok=True)
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

