"""The plan step of a large manifest in four shapes, measured in one run (issue 31, part 3):

* text-to-video rows (``common.csv_manifest``: name, model, prompt, duration), the easy shape;
* rows of the seed's model, grok-imagine-reference-to-video: 1-3 reference images a row in
  ``reference_image_urls`` ("a|b|c", drawn from a library of 20,000, so few cells repeat), an
  ``@ImageN`` in every prompt, ``duration``, ``aspect_ratio`` and ``resolution`` columns;
* a YAML manifest crossing half as many such rows with a two-model matrix
  (``model: [grok r2v, veo-3.1-fast r2v]``): as many jobs, named "{name}-{matrix}.mp4";
* the reference-to-video rows with a comma in every prompt, as a spreadsheet writes them (that
  cell quoted on every line).

Each is planned by a whole ``batchgen plan --json`` process, ``reps`` times, alternating the
shapes so a busy machine weighs on each alike; the least CPU (user + system) of each is
compared with the text-to-video one's. Used by ``bench/run.py --only million-plan`` and by the
``million`` scenario."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import PY, child, csv_manifest

R2V = "grok-imagine-reference-to-video"
VEO_R2V = "veo-3.1-fast-reference-to-video"
ASPECTS = ["16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16"]
LIBRARY = 20_000  # distinct reference images


def _refs(i: int) -> tuple[str, int]:
    k = 1 + i % 3
    return "|".join(f"https://cdn.example.com/refs/{(i * 7919 + j * 104_729) % LIBRARY:05d}.png" for j in range(k)), k


def r2v_manifest(path: Path, n: int) -> Path:
    with open(path, "w") as f:
        f.write("name,model,prompt,reference_image_urls,duration,aspect_ratio,resolution\n")
        for i in range(n):
            urls, k = _refs(i)
            f.write(f"clip{i:06d},{R2V},@Image{k} beside @Image1: bench clip {i} of a lighthouse at dusk,{urls},"
                    f"{1 + i % 10},{ASPECTS[i % 7]},{'720p' if i % 2 else '480p'}\n")
    return path


def quoted_manifest(path: Path, n: int) -> Path:
    """The reference-to-video rows with prompts as people write them, holding a comma: a
    spreadsheet (the csv module here) quotes that cell on every line."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["name", "model", "prompt", "reference_image_urls", "duration", "aspect_ratio", "resolution"])
        for i in range(n):
            urls, k = _refs(i)
            w.writerow([f"clip{i:06d}", R2V, f"@Image{k} beside @Image1, bench clip {i} of a lighthouse at dusk", urls,
                        1 + i % 10, ASPECTS[i % 7], "720p" if i % 2 else "480p"])
    return path


def matrix_manifest(path: Path, n: int) -> Path:
    """``n`` jobs: n / 2 rows × two models (veo takes 8 s and at most 3 images: every job valid)."""
    rows = path.with_suffix(".csv")
    with open(rows, "w") as f:
        f.write("name,prompt,reference_image_urls,aspect_ratio\n")
        for i in range(n // 2):
            urls, k = _refs(i)
            f.write(f"clip{i:06d},@Image{k} beside @Image1: bench clip {i} of a lighthouse at dusk,{urls},"
                    f"{'16:9' if i % 2 else '9:16'}\n")
    path.write_text(f"matrix:\n  model: [{R2V}, {VEO_R2V}]\ndefaults: {{duration: 8}}\nrows: {rows.name}\n")
    return path


def plan_shapes(tmp: Path, n: int, reps: int, row: Callable[[str, str, str, bool | None], None]) -> dict[str, Any]:
    """Plan the four shapes ``reps`` times each; print and return the best CPU of each."""
    print(f"\n[8a] plan of {n:,} jobs in four shapes, {reps} times each, alternating (whole processes)")
    shapes = {"text-to-video": csv_manifest(tmp / "t2v.csv", n), "reference-to-video": r2v_manifest(tmp / "r2v.csv", n),
              "two-model matrix": matrix_manifest(tmp / "matrix.yaml", n),
              "reference-to-video, quoted prompts": quoted_manifest(tmp / "quoted.csv", n)}
    nowhere: dict[str, str | None] = {"BATCHGEN_LEDGER": None}  # no ledger yet: plan compares with none
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in shapes}
    for _ in range(reps):
        for name, path in shapes.items():
            p = child([PY, "-m", "batchgen", "plan", str(path), "--json"], env=nowhere, cwd=tmp)
            assert p["rc"] == 0, (name, p["stdout"][-2000:])
            runs[name].append(p)
    best = {k: min(r["cpu"] for r in v) for k, v in runs.items()}
    walls = {k: min(r["wall"] for r in v) for k, v in runs.items()}
    for name in shapes:
        row(f"plan of {n:,} jobs, {name}: CPU / wall (s, least of {reps})",
            f"{best[name]:.1f} / {walls[name]:.1f}", "", None)
        row(f"  peak RSS (MB)", f"{max(r['rss_mb'] for r in runs[name]):.0f}", "<= 150",
            max(r["rss_mb"] for r in runs[name]) <= 150)
    base = best["text-to-video"]
    for name in ("reference-to-video", "two-model matrix", "reference-to-video, quoted prompts"):
        ratio = best[name] / base
        # The goal is for its two shapes; the quoted one (what a spreadsheet writes for
        # prompts with commas) is measured beside them, against the same bound.
        row(f"plan CPU, {name} / text-to-video", f"{ratio:.2f}x", "<= 1.20x", ratio <= 1.2)
    return {"cpu": best, "wall": walls}
