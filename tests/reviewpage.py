"""Helpers for the review page's tests: a night of real clips with takes (the simulator over
loopback, a real ledger), the review server on its own event loop in a thread, and headless
Debian Chromium driven by Selenium through Debian's chromedriver."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

HOSTILE_NAME = "<img src=x onerror=window.pwned=1>"
HOSTILE_PROMPT = "<script>window.pwned=2</script><b onmouseover=alert(1)>bold</b> & a harbour at dawn"


def night(sim: Any, tmp_path: Path, *, shots: int = 4, takes: int = 2, hostile: bool = True,
          small: bool = False) -> Path:
    """A manifest of ``shots`` shots with ``takes`` takes each (and one shot with a hostile name
    and prompt) run to the end; returns the ledger's path. ``small``: 2-second 480p clips, for a
    test of what happens to the clips (retakes, money), not of what the page shows of them."""
    from conftest import run_args, run_cli

    lines = ["name,model,prompt,duration,take,output" + (",resolution" if small else "")]
    for s in range(shots):
        for t in range(1, takes + 1):
            lines.append(f"shot{s:02d},grok-imagine-text-to-video,A lighthouse at night number {s},"
                         f"{2 if small else 1 + s % 5},{t},{{name}}-take{{take}}.mp4" + (",480p" if small else ""))
    m = tmp_path / "night.csv"
    text = "\n".join(lines) + "\n"
    if hostile:
        text += (f'"{HOSTILE_NAME}",grok-imagine-text-to-video,"{HOSTILE_PROMPT}",2,1,hostile.mp4'
                 + (",480p" if small else "") + "\n")
    m.write_text(text)
    r = run_cli(run_args(sim, m, tmp_path, "-q"))
    assert r.exit_code == 0, r.output
    return tmp_path / "l.db"


class ServerThread:
    """A ``ReviewServer`` listening on 127.0.0.1 from its own event loop in a thread."""

    def __init__(self, ledger: str | Path, out: Path, *, by: str | None = None, reviewer: str = "tester",
                 endpoint_url: str | None = None, run_id: int | None = None) -> None:
        from batchgen.ledger import Ledger
        from batchgen.review.clips import ClipIndex, Scope
        from batchgen.review.server import ReviewServer

        self.ledger = Ledger(str(ledger), create=False)
        run = self.ledger.run(run_id)
        assert run is not None
        index = ClipIndex(self.ledger, Scope(run_id=run["id"]), out, by=by, ttl=0.5)
        self.server = ReviewServer(self.ledger, index, reviewer=reviewer, endpoint_url=endpoint_url)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.url = ""
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()
        assert self._ready.wait(20)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.url = self.loop.run_until_complete(self.server.start("127.0.0.1", 0))
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.stop())
        self.loop.close()

    @property
    def base(self) -> str:
        return self.url.split("#")[0].rstrip("/")

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.ledger.close()


def chromium(tmp_path: Path, width: int = 1500, height: int = 1000) -> Any:
    """Headless Debian Chromium under Selenium (a failure in CI, a skip elsewhere when missing)."""
    import os

    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium and chromium-driver are required in CI (.ci/run installs them)")
        pytest.skip("chromium / chromedriver not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--autoplay-policy=no-user-gesture-required",
                f"--user-data-dir={tmp_path / ('chrome-' + str(time.monotonic_ns()))}"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


def wait(cond: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
