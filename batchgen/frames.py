"""A clip's frames, for ``media.inspect`` (in a verification worker): the reads that prove a
file whole, and its poster and contact-sheet pictures. Imports nothing of batchgen."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

POSTER_WIDTH = 320
SHEET_THUMB_WIDTH = 200
# A clip with at least this many keyframes gets the keyframe at or before each time (one frame
# decoded a thumbnail; a few moments may repeat): decoding up to each time tripled a night's
# verification CPU (36 -> 131 ms a clip of the benchmark's, a keyframe a second) and pushed the
# noisy makespan over its goal. Sparser keyframes (x264's default puts one in a short clip) would
# repeat one moment nine times: those clips are decoded on to each time.
DENSE_KEYFRAMES = 5
# A contact sheet's decoder: the in-loop deblocking filter skipped and FFmpeg's non-conforming
# speed-ups allowed (H.264; other decoders ignore what they do not know). The thumbnails are
# 200 px wide, where the blocking this leaves does not show; a one-keyframe 6 s 720p clip's
# sheet costs ~17 % less (bench/pictures.py's clip: 327 -> 264 ms decoding NONREF). Never for
# the checks nor the poster, which open the file with the decoder's defaults.
SHEET_DECODER = {"skip_loop_filter": "all", "flags2": "+fast"}


def scaled(vs: Any, width: int) -> tuple[int, int]:
    w, h = vs.codec_context.width, vs.codec_context.height
    return (w, h) if w <= width else (width, max(2, round(h * width / w / 2) * 2))


def read(c: Any, vs: Any, times: list[float]) -> tuple[Any, list[Any]]:
    """The first frame as a poster-sized image and a thumbnail at each of ``times`` (the first
    frame shown at or after it). Every packet of the file is read first (``keyframes``), then
    the first frame and the last keyframe are decoded: the checks that the file is whole. Not
    the last frame: in a clip with one keyframe (x264's default: one per 250 frames) that is
    decoding the whole clip, about 1 s of CPU for 6 s of 720p, for nothing a download can break
    that the packets read in full do not already prove. FFmpeg scales while converting:
    full-size RGB frames were most of the cost."""
    keys = keyframes(c, vs)
    pw, ph = scaled(vs, POSTER_WIDTH)
    c.seek(keys[0], stream=vs, any_frame=False, backward=True)
    first = next(c.decode(vs)).to_image(width=pw, height=ph)
    thumbs = thumbnails(c, vs, times, keys) if times else []
    c.seek(keys[-1], stream=vs, any_frame=False, backward=True)
    if next(c.decode(vs), None) is None:
        raise ValueError("the last keyframe could not be decoded")
    return first, thumbs


def sheet(c: Any, vs: Any, times: list[float]) -> list[Any]:
    """A thumbnail at each of ``times``, from a file the checks passed already (``read``, in an
    earlier call): its keyframes are listed from the video packets alone (no NAL check), and it
    is decoded with ``SHEET_DECODER`` — ``c`` must be opened for this, the codec not used yet."""
    vs.codec_context.options = dict(SHEET_DECODER)
    keys = sorted(p.pts for p in c.demux(vs) if p.size and p.is_keyframe and p.pts is not None)
    if not keys:
        raise ValueError("no video keyframe")
    return thumbnails(c, vs, times, keys)


def keyframes(c: Any, vs: Any) -> list[int]:
    """Reads every packet of every stream, none decoded (a few ms for a 3.5 MB clip): a file cut
    short — whose index, at its head, still lists what it lost — fails here, by a packet read
    only in part or by fewer packets than the index lists; an H.264 packet whose NAL units do not
    fill it exactly (bytes zeroed or overwritten in place) fails too, for ~40 ms of CPU per 3.5 MB
    where decoding every frame costs ~1 s. The video keyframes' pts, in order."""
    counts = {s.index: 0 for s in c.streams}
    keys: list[int] = []
    extra = vs.codec_context.extradata or b""
    # H.264 in MP4 (avcC): each NAL unit prefixed by its length, 1-4 bytes as the extradata says.
    nal_len = (extra[4] & 3) + 1 if vs.codec_context.name == "h264" and len(extra) > 4 and extra[0] == 1 else 0
    for p in c.demux():
        if p.size == 0:  # the demuxer's end-of-stream markers
            continue
        if p.is_corrupt:
            raise ValueError(f"{p.stream.type} packet {counts[p.stream.index] + 1} is cut short (the file ends early)")
        counts[p.stream.index] += 1
        if p.stream.index == vs.index:
            if nal_len and not _nal_units_fill(memoryview(p), nal_len):
                raise ValueError(f"video packet {counts[vs.index]} is damaged (its NAL units do not fill it)")
            if p.is_keyframe and p.pts is not None:
                keys.append(p.pts)
    for s in c.streams:
        if s.type in ("video", "audio") and s.frames and counts[s.index] < s.frames:
            raise ValueError(f"the file ends early: {counts[s.index]} of {s.frames} {s.type} packets")
    if not keys:
        raise ValueError("no video keyframe")
    return sorted(keys)


def thumbnails(c: Any, vs: Any, times: list[float], keys: list[int]) -> list[Any]:
    """A thumbnail at each of ``times``. With ``DENSE_KEYFRAMES`` or more keyframes: the keyframe at
    or before it. Else: the keyframe before it when that is within half a
    thumbnail's span and not shown yet, else the first frame decoded at or after it, reached from
    the keyframe before it — by a seek when that keyframe lies ahead of the frames already
    decoded, else by decoding on (a clip with one keyframe is one forward pass, not 9 seeks
    that all land on its first frame). Frames no other frame refers to are not decoded (where
    an encoder leaves some: x264's B frames are mostly references): a thumbnail is then at most
    a frame or two late."""
    tw, th = scaled(vs, SHEET_THUMB_WIDTH)
    start = vs.start_time or 0
    thumbs: list[Any] = []
    if len(keys) >= DENSE_KEYFRAMES:
        vs.codec_context.skip_frame = "NONKEY"
        try:
            for t in times:
                c.seek(start + int(t / vs.time_base), stream=vs, any_frame=False, backward=True)
                frame = next(iter(c.decode(vs)), None)
                if frame is not None:
                    thumbs.append(frame.to_image(width=tw, height=th))
        finally:
            vs.codec_context.skip_frame = "DEFAULT"
        return thumbs
    frames: Iterator[Any] | None = None
    at: int | None = None  # pts of the last frame decoded
    slack = (times[1] - times[0]) / 2 / vs.time_base if len(times) > 1 else 0
    vs.codec_context.skip_frame = "NONREF"
    try:
        for t in times:
            target = start + int(t / vs.time_base)
            key = max((k for k in keys if k <= target), default=keys[0])
            if frames is None or at is None or key > at:
                c.seek(key, stream=vs, any_frame=False, backward=True)
                frames = iter(c.decode(vs))
            # A keyframe not yet shown within half a thumbnail's span of the time will do: it
            # costs one frame where the frame at the time costs decoding up to it.
            near = target - key <= slack and (at is None or key > at)
            frame = next((f for f in frames if near or f.pts is None or f.pts >= target), None)
            if frame is None:  # past the last frame (a duration rounded up)
                break
            at = frame.pts
            thumbs.append(frame.to_image(width=tw, height=th))
    finally:
        vs.codec_context.skip_frame = "DEFAULT"
    return thumbs


def _nal_units_fill(data: memoryview, n: int) -> bool:
    """Length-prefixed NAL units, none empty nor with the forbidden bit set, end exactly at the
    packet's end."""
    i, end = 0, len(data)
    while i < end:
        size = int.from_bytes(data[i:i + n], "big")
        if size == 0 or i + n + size > end or data[i + n] & 0x80:
            return False
        i += n + size
    return True

