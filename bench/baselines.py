"""The two baselines batchgen is measured against, on the same simulator:

* bare loop: semaphore + create → poll → download with aiohttp, nothing persisted — the
  ceiling of the HTTP stack on this machine;
* naive persistent loop: the same plus one SQLite commit per state change from the event loop
  (default sqlite3 settings, as a quick hand-written tool would do), files written plainly.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp

BODY = {"model": "grok-imagine-text-to-video", "prompt": "bench clip {i}", "duration": 6,
        "aspect_ratio": "16:9", "resolution": "720p"}


async def loop(base: str, n: int, concurrency: int, *, poll_every: float | None = None,
               db: Path | None = None, out: Path | None = None) -> dict[str, Any]:
    """Run n jobs. poll_every=None polls immediately again (zero-render throughput runs);
    otherwise a fixed-interval poller (the 'fixed 5 s poller' of the requests/job benchmark)."""
    con = None
    if db is not None:
        con = sqlite3.connect(db)
        con.execute("CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY, state TEXT, task_id TEXT, url TEXT, path TEXT)")
        con.commit()
    sem = asyncio.Semaphore(concurrency)
    requests = 0
    headers = {"Authorization": "Bearer sk-bench"}

    def record(i: int, state: str, **kw: Any) -> None:
        if con is None:
            return
        con.execute("INSERT OR REPLACE INTO jobs (id, state, task_id, url, path) VALUES (?, ?, ?, ?, ?)",
                    (i, state, kw.get("task_id"), kw.get("url"), kw.get("path")))
        con.commit()

    async def one(api: aiohttp.ClientSession, dl: aiohttp.ClientSession, i: int) -> None:
        nonlocal requests
        async with sem:
            record(i, "submitting")
            body = dict(BODY, prompt=f"bench clip {i}")
            while True:
                requests += 1
                async with api.post(base + "/v1/videos/generations", json=body) as r:
                    doc = await r.json(content_type=None)
                    if r.status == 200:
                        break
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
            tid = doc["id"]
            record(i, "submitted", task_id=tid)
            while True:
                if poll_every:
                    await asyncio.sleep(poll_every)
                requests += 1
                async with api.get(f"{base}/v1/tasks/{tid}") as r:
                    doc = await r.json(content_type=None)
                if doc.get("status") == "completed":
                    break
                if r.status == 429:
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
            url = doc["results"][0]["url"]
            record(i, "completed", task_id=tid, url=url)
            async with dl.get(url) as r:
                data = await r.read()
            if out is not None:
                p = out / f"{i}.mp4"
                p.write_bytes(data)
                record(i, "done", task_id=tid, url=url, path=str(p))

    t = time.monotonic()
    conn = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=conn, headers=headers) as api, aiohttp.ClientSession() as dl:
        await asyncio.gather(*(one(api, dl, i) for i in range(n)))
    elapsed = time.monotonic() - t
    if con is not None:
        con.close()
    return {"jobs": n, "elapsed": elapsed, "jobs_per_s": n / elapsed, "requests": requests}


def main() -> None:  # python bench/baselines.py BASE N CONC [naive DB OUT] – run in its own process
    import sys

    base, n, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    poll_every = float(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] != "-" else None
    db = Path(sys.argv[5]) if len(sys.argv) > 5 else None
    out = Path(sys.argv[6]) if len(sys.argv) > 6 else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    print(json.dumps(asyncio.run(loop(base, n, conc, poll_every=poll_every, db=db, out=out))))


if __name__ == "__main__":
    main()
