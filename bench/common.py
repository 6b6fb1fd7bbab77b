"""Helpers shared by the benchmarks: the simulator in its own process, measured child processes,
CSV manifests, throwaway PostgreSQL schemas."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


class Sim:
    """The simulator in its own process (so it does not share a core's event loop with the
    code being measured)."""

    def __init__(self, **knobs: Any) -> None:
        # Tiny signature-only files unless a scenario asks for real video: most scenarios
        # measure the runner's loop, not FFmpeg.
        knobs = {"media": "stub", **knobs}
        sets = [a for k, v in knobs.items() for a in ("--set", f"{k}={v}")]
        self.proc = subprocess.Popen([PY, "-m", "batchgen", "simulator", "--port", "0", *sets],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http"), self.url

    def stats(self) -> dict[str, Any]:
        return json.loads(urllib.request.urlopen(self.url + "/_sim/stats", timeout=30).read())

    def truth(self) -> dict[str, Any]:
        return json.loads(urllib.request.urlopen(self.url + "/_sim/ground-truth", timeout=120).read())

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def __enter__(self) -> Sim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Linux keeps a process's peak RSS across exec, and a child this process starts begins with this
# process's own peak (vfork: its memory is ours until the exec): after the pictures scenario grew
# this process to 337 MB, every `plan` measured "337 MB". A small Python process in between forks
# the command from its own few MB, waits for it (os.wait4: that process alone) and reports its
# exit code, peak RSS and CPU on a pipe; signals sent to it are passed on.
_TRAMPOLINE = """
import os, signal, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
for s in (signal.SIGTERM, signal.SIGINT):
    signal.signal(s, lambda n, _f: os.kill(pid, n))
_, status, ru = os.wait4(pid, 0)
os.write(int(sys.argv[1]), f"{os.waitstatus_to_exitcode(status)} {ru.ru_maxrss} {ru.ru_utime + ru.ru_stime}".encode())
"""


def child(cmd: list[str], *, stop_after: float | None = None, env: dict[str, str | None] | None = None,
          cwd: Path = ROOT) -> dict[str, Any]:
    """Run a command; wall time, exit code, stdout, its own peak RSS and CPU seconds (os.wait4,
    through ``_TRAMPOLINE``). ``env``: variables to set (None: to remove)."""
    t = time.monotonic()
    merged = {**os.environ, "BATCHGEN_API_KEY": "sk-bench", **(env or {})}
    r, w = os.pipe()
    p = subprocess.Popen([sys.executable, "-c", _TRAMPOLINE, str(w), *cmd], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, cwd=cwd, pass_fds=(w,),
                         env={k: v for k, v in merged.items() if v is not None})
    os.close(w)
    if stop_after is not None:
        try:
            p.wait(stop_after)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGTERM)
    out = p.stdout.read() if p.stdout else b""
    p.wait()
    with os.fdopen(r, "rb") as f:
        rc, rss_kb, cpu = f.read().split()
    p.returncode = int(rc)
    return {"rc": p.returncode, "wall": time.monotonic() - t, "rss_mb": int(rss_kb) / 1024, "stdout": out.decode(),
            "cpu": float(cpu)}


def csv_manifest(path: Path, n: int, model: str = "grok-imagine-text-to-video") -> Path:
    with open(path, "w") as f:
        f.write("name,model,prompt,duration\n")
        for i in range(n):
            f.write(f"clip{i:06d},{model},bench clip {i} of a lighthouse at dusk,{1 + i % 10}\n")
    return path


PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def pg_schema(prefix: str) -> Iterator[str]:
    """A ledger URL on a fresh schema of the local PostgreSQL server's `test` database (dropped
    afterwards)."""
    from sqlalchemy import create_engine, text

    schema = f"{prefix}_{secrets.token_hex(4)}"
    engine = create_engine(PG)
    with engine.begin() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{PG}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as c:
            c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()
