"""Contact sheets for the review page: served when recorded, drawn when the page asks for one a
run's pictures lane left (``batchgen.sheets``). The request waits for the drawing — one sheet,
~0.25 s of CPU for 6 s of 720p with one keyframe, in a worker process, so the server answers
every other request meanwhile — and the page shows "drawing…" until the image comes. A sheet
asked twice at once is drawn once. Written where the lane would have written it (atomically),
recorded as the lane records it, so the next report shows it too."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .. import media
from ..ledger import Ledger
from ..sheets import record
from .clips import Clip, inside


class Sheets:
    """The contact sheets of one review's clips (files under ``out`` only)."""

    def __init__(self, ledger: Ledger, out: Path) -> None:
        self.ledger = ledger
        self.out = out
        self._pool: ProcessPoolExecutor | None = None
        self._starting = threading.Lock()
        self._drawing: dict[int, asyncio.Future[Path | None]] = {}

    async def get(self, clip: Clip) -> Path | None:
        """The clip's sheet, drawn first if a run left it; None when it has none to show (no
        pictures asked, its file not here, or one that cannot be read)."""
        local = await asyncio.to_thread(inside, clip.sheet, self.out)
        if local is not None or not clip.poster:
            return local
        fut = self._drawing.get(clip.id)
        if fut is None:
            fut = self._drawing[clip.id] = asyncio.ensure_future(self._draw(clip))
            fut.add_done_callback(lambda _f: self._drawing.pop(clip.id, None))
        return await asyncio.shield(fut)  # a page gone away does not stop a drawing others wait for

    async def _draw(self, clip: Clip) -> Path | None:
        # Read again: the index is a few seconds old, and a run may have drawn it since.
        row = await asyncio.to_thread(self.ledger.job, clip.id)
        if row is not None and row["sheet"]:
            clip.sheet = row["sheet"]
            return await asyncio.to_thread(inside, clip.sheet, self.out)
        src = clip.path
        if not src or not clip.output or await asyncio.to_thread(inside, src, self.out) is None:
            return None  # only a clip under the output folder
        target = media.picture_paths(src, clip.output)[1]
        if target is None:
            return None
        pool = await asyncio.to_thread(self._started)
        made = await asyncio.get_running_loop().run_in_executor(pool, media.contact_sheet, src, target)
        if made is None:
            return None
        await asyncio.to_thread(record, self.ledger, [(clip.id, made)])
        clip.sheet = made
        return await asyncio.to_thread(inside, made, self.out)

    def _started(self) -> ProcessPoolExecutor:
        with self._starting:
            if self._pool is None:
                self._pool = media.pool()
            return self._pool

    def close(self) -> None:
        """The sheets being drawn end whole (a second or so at most); none is started after."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
