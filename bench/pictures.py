"""Issue 31 part 4's pictures night for bench/run.py (``--only makespan-pictures``): real clips as
a provider's encoder writes them — 6 s of 1280×720 moving, grainy content at 24 fps, x264's
defaults (one keyframe: its default keyint is 250 frames), ~2.5 MB — served by the simulator
(``media_file``) for a night of short renders at concurrency 40, verified with pictures on and
with ``--no-pictures``. A one-keyframe clip's contact sheet decodes most of the clip (~0.3 s of
CPU): at ~7 clips a second on 2 cores that is more than the cores have."""

from __future__ import annotations

import io
import math
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from common import Sim

WIDTH, HEIGHT, FPS, SECONDS = 1280, 720, 24, 6


def real_clip(path: Path) -> Path:
    """A clip as x264 writes it by default (preset medium, crf 23, keyint 250: one keyframe in
    6 s, B frames): a textured field panning, three discs crossing it, film grain (what makes
    it weigh ~2.5 MB, as a provider's 6 s 720p clip does), a silent AAC track. ~10 s to encode."""
    import av
    from PIL import Image, ImageDraw

    def field(w: int, h: int) -> Image.Image:
        out = None
        for s in (4, 16, 64, 256):  # noise at four scales: detail the encoder must spend bits on
            layer = Image.merge("RGB", [Image.effect_noise((w // s + 2, h // s + 2), 80).resize(
                (w, h), Image.Resampling.BILINEAR) for _ in range(3)])
            out = layer if out is None else Image.blend(out, layer, 0.5)
        assert out is not None
        return out

    scene = field(WIDTH + 400, HEIGHT + 200)
    grain = [Image.merge("RGB", [Image.effect_noise((WIDTH, HEIGHT), 40)] * 3) for _ in range(6)]
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        v = c.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        a = c.add_stream("aac", rate=16000)
        a.layout = "mono"
        for i in range(FPS * SECONDS):
            x, y = int(i * 2.5), int(i * 0.8)
            img = scene.crop((x, y, x + WIDTH, y + HEIGHT))
            draw = ImageDraw.Draw(img)
            for k in range(3):
                cx, cy = (200 + k * 400 + i * (6 + 3 * k)) % WIDTH, HEIGHT / 2 + 200 * math.sin(i / 20 + k)
                r = 60 + 20 * k
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(230 * (k + 1) // 3, 140, 40))
            frame = av.VideoFrame.from_image(Image.blend(img, grain[i % len(grain)], 0.12))
            frame.pts = i
            for p in v.encode(frame):
                c.mux(p)
        for p in v.encode():
            c.mux(p)
        pts = 0
        while pts < SECONDS * 16000:
            af = av.AudioFrame(format="s16", layout="mono", samples=1024)
            af.planes[0].update(bytes(af.planes[0].buffer_size))
            af.sample_rate, af.pts = 16000, pts
            pts += 1024
            for p in a.encode(af):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    path.write_bytes(buf.getvalue())
    return path


def _manifest(path: Path, n: int) -> Path:
    with open(path, "w") as f:
        f.write("name,model,prompt,duration\n")
        for i in range(n):
            f.write(f"pic{i:05d},grok-imagine-text-to-video,bench clip {i} of a harbour at dusk,{SECONDS}\n")
    return path


def _keyframes(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for p in c.demux(c.streams.video[0]) if p.is_keyframe and p.size)


def _cpu_per_clip(path: Path, tmp: Path, reps: int = 5) -> tuple[float, float, float]:
    """CPU seconds (best of ``reps``) of the clip's verification with its poster (``media.inspect``:
    a run's verification worker), of its contact sheet (``media.contact_sheet``: the pictures
    lane) and of both in one call (``batchgen verify``; a run that delivers)."""
    from batchgen import media

    def best(f: Callable[[], object]) -> float:
        times = []
        for _ in range(reps):
            t = time.process_time()
            f()
            times.append(time.process_time() - t)
        return min(times)

    p, s = str(tmp / "p.jpg"), str(tmp / "s.jpg")
    return (best(lambda: media.inspect(str(path), p)), best(lambda: media.contact_sheet(str(path), s)),
            best(lambda: media.inspect(str(path), p, s)))


def night(run: Callable[..., dict[str, Any]], row: Callable[..., None], n: int, conc: int) -> None:
    print(f"\n[6e] makespan-pictures: {n} real one-keyframe clips (6 s 1280x720 x264 defaults), concurrency {conc}, "
          "renders 3-8 s, exact estimates, --rpm 0, verified, pictures on / --no-pictures")
    with tempfile.TemporaryDirectory() as d:
        clip = real_clip(Path(d) / "clip.mp4")
        checks, sheet, both = _cpu_per_clip(clip, Path(d))
        row("  the clip: MB / keyframes", f"{clip.stat().st_size / 1e6:.1f} / {_keyframes(clip)}", "", None)
        row("  CPU per clip: checks + poster / contact sheet / both in one call",
            f"{checks * 1000:.0f} / {sheet * 1000:.0f} / {both * 1000:.0f} ms", "", None)
        results: dict[bool, dict[str, Any]] = {}
        for pictures in (False, True):
            tmp = Path(d) / ("on" if pictures else "off")
            tmp.mkdir()
            with Sim(media="real", media_file=str(clip), render_min=3, render_max=8, seed=11, estimate_noise=0) as sim:
                m = _manifest(tmp / "m.csv", n)
                r = run(sim, m, tmp, "--concurrency", str(conc), "--rpm", "0", "--verify",
                        "--pictures" if pictures else "--no-pictures")
                t_exit = time.time()
                truth = sim.truth()
            results[pictures] = _measure(r, truth, tmp, conc, t_exit)
    for pictures, x in results.items():
        label = "pictures on" if pictures else "--no-pictures"
        row(f"makespan-pictures: makespan / lower bound ({label})", f"{x['span'] / x['bound']:.3f}", "", None)
        row(f"  process start -> exit / lower bound ({label})", f"{x['wall'] / x['bound']:.3f}", "", None)
        row(f"  last file in place -> exit ({label})", f"{x['tail']:.1f} s", "", None)
        row(f"  result ready -> file in place, p50 / p95 ({label})", f"{x['lat'][0]:.2f} / {x['lat'][1]:.2f} s",
            "", None)
        row(f"  result ready -> next create received, mean ({label})", f"{x['refill'] * 1000:.0f} ms", "", None)
        row(f"  verified ok / contact sheets recorded / left to `verify` ({label})",
            f"{x['ok']} / {x['sheets']} / {x['left']}", "", None)
        row(f"  run process peak RSS ({label})", f"{x['rss']:.0f} MB", "", None)
    if False in results and True in results:
        off, on = results[False], results[True]
        row("makespan-pictures: whole process, pictures on / off", f"{on['wall'] / off['wall']:.3f}", "<= 1.05",
            on["wall"] / off["wall"] <= 1.05)
        row("makespan-pictures: last file in place, pictures on / off", f"{on['span'] / off['span']:.3f}", "<= 1.05",
            on["span"] / off["span"] <= 1.05)


def _measure(r: dict[str, Any], truth: dict[str, Any], tmp: Path, conc: int, t_exit: float) -> dict[str, Any]:
    with sqlite3.connect(tmp / "l.db") as c:
        done = {t: at for t, at in c.execute("SELECT task_id, done_at FROM jobs WHERE state = 'done'")}
        ok, sheets = c.execute("SELECT sum(verify = 'ok'), count(sheet) FROM jobs").fetchone()
    measured = [x for x in truth["creates"] if x["task_id"] in done]
    renders = [x["ready_at"] - x["created"] for x in measured]
    bound = max(sum(renders) / conc, max(renders))
    first = min(x["received"] for x in measured)
    last = max(done.values())
    lat = sorted(done[x["task_id"]] - x["ready_at"] for x in measured)
    got = sorted(x["received"] for x in measured)
    refill = [max(0.0, g - rd) for rd, g in zip(sorted(x["ready_at"] for x in measured), got[conc:])]
    return {"span": last - first, "bound": bound, "wall": r["wall"], "tail": t_exit - last,
            "lat": (statistics.median(lat), lat[int(0.95 * (len(lat) - 1))]),
            "refill": statistics.fmean(refill) if refill else float("nan"), "ok": ok or 0, "sheets": sheets,
            "rss": r["rss_mb"], "rc": r["rc"], "left": r["summary"].get("sheets_left", "—")}
