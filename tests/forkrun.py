"""`python -m batchgen ARGS` processes without an interpreter's start-up each: forked from a
warm process (a "zygote") that imported what a run imports once, as Android's zygote and
multiprocessing's forkserver do.

Tests that kill runs (tests/test_kill.py) start a dozen `batchgen run` processes each, and a new
interpreter importing batchgen, SQLAlchemy and aiohttp is about 1.2 s of CPU before the run does
anything (at load 15, several seconds of wall: kills timed from the start then landed in the
imports). A forked child is a real process all the same: its own pid, killed by a real SIGKILL
or ending by ``os._exit(137)`` at a crash point, its exit status what the kernel reports, and
it runs ``batchgen.__main__`` as ``python -m batchgen`` does (``runpy``, ``__name__ ==
"__main__"``, the given argv, environment and working directory, atexit handlers at its end). What
it does not repeat is the import of modules whose import does nothing but define things (no
module of batchgen reads the environment on import: ``crash`` reads BATCHGEN_CRASH_AT on first
use). The zygote never runs a command itself, has no thread, no event loop, no open database and
no connection at fork time, and ``random`` is reseeded in every child (CPython's own fork hook).

Protocol (one request at a time, lines of JSON on the zygote's stdin): ``{"argv", "env", "cwd",
"stdout", "stderr"}`` → ``started PID``; whenever a child ends → ``exit PID CODE`` (CODE as
``subprocess`` gives it: the exit status, or minus the signal)."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

# What `batchgen run` imports on its way (`batchgen.cli` alone leaves the run's modules lazy).
# Not batchgen.__main__ itself: runpy runs it afresh in each child, as `python -m` does.
WARM = ("batchgen.cli", "batchgen.runner", "batchgen.scheduler", "batchgen.client",
        "batchgen.ledger", "batchgen.manifest", "batchgen.media", "batchgen.signals", "batchgen.operations",
        "sqlalchemy.dialects.sqlite", "aiohttp")


class Forked:
    """A child of the zygote: what tests use of ``subprocess.Popen``."""

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self.zygote = zygote
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        with self.zygote.cond:
            self.returncode = self.zygote.ended.get(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        with self.zygote.cond:
            if not self.zygote.cond.wait_for(lambda: self.pid in self.zygote.ended or self.zygote.gone, timeout):
                raise subprocess.TimeoutExpired(f"forked pid {self.pid}", timeout or 0.0)
            if self.pid not in self.zygote.ended:
                raise RuntimeError(f"the zygote ended before its child {self.pid}")
            self.returncode = self.zygote.ended[self.pid]
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # never a pid the kernel may have given to another process since
            os.kill(self.pid, sig)


class Zygote:
    """The warm process, started by the test side; ``run`` and ``start`` fork a command from it."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in: IO[bytes] = self.proc.stdin
        self.cond = threading.Condition()
        self.ended: dict[int, int] = {}
        self.started: list[int] = []
        self.gone = False
        self._request = threading.Lock()  # one request in flight: its answer is the next `started`
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, out: IO[bytes]) -> None:
        for line in out:
            word, *rest = line.split()
            with self.cond:
                if word == b"started":
                    self.started.append(int(rest[0]))
                elif word == b"exit":
                    self.ended[int(rest[0])] = int(rest[1])
                self.cond.notify_all()
        with self.cond:
            self.gone = True
            self.cond.notify_all()

    def start(self, args: list[str], *, env: dict[str, str], cwd: Path | str | None = None,
              stdout: Path | None = None, stderr: Path | None = None) -> Forked:
        """``python -m batchgen ARGS`` as a child of the zygote; its output to the files given,
        else /dev/null."""
        request = {"argv": ["batchgen", *args], "env": env, "cwd": str(cwd or os.getcwd()),
                   "stdout": str(stdout or os.devnull), "stderr": str(stderr or os.devnull)}
        with self._request:
            with self.cond:
                seen = len(self.started)
            self._in.write(json.dumps(request).encode() + b"\n")
            self._in.flush()
            with self.cond:
                assert self.cond.wait_for(lambda: len(self.started) > seen or self.gone, 120), "zygote silent"
                assert not self.gone, "the zygote died"
                return Forked(self, self.started[seen])

    def run(self, args: list[str], *, env: dict[str, str], timeout: float, cwd: Path | str | None = None) -> int:
        """``start`` and wait: the exit code (as ``subprocess.run``'s returncode)."""
        return self.start(args, env=env, cwd=cwd).wait(timeout)

    def close(self) -> None:
        self._in.close()  # the zygote ends at the end of its input, once its children have
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(10)


# ---------------------------------------------------------------------------------- the zygote
def _child(request: dict[str, Any], zygote_fds: tuple[int, ...]) -> None:
    """In the forked child: become `python -m batchgen ARGV` and never return."""
    import atexit
    import runpy

    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in zygote_fds:  # the zygote's own (its stdin and stdout are replaced below)
            os.close(fd)
        fds = [os.open(os.devnull, os.O_RDONLY),
               os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
               os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)]
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = list(request["argv"])
        sys.path[0] = os.getcwd()  # as `python -m` has it (the zygote's is this file's folder)
        try:
            runpy.run_module("batchgen", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # as the interpreter would: the traceback on stderr, exit 1
            import traceback

            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    finally:
        os._exit(code)


def _serve() -> None:
    import importlib

    for name in WARM:
        importlib.import_module(name)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wakeup fd is written
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    children: set[int] = set()
    pending = b""
    out = sys.stdout.fileno()
    open_input = True
    while open_input or children:
        for key, _ in sel.select(1.0):
            if key.fd == wake_r:
                os.read(wake_r, 4096)
                continue
            data = os.read(0, 65536)
            if not data:
                open_input = False
                sel.unregister(0)
                continue
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                pid = os.fork()
                if pid == 0:
                    _child(json.loads(line), (wake_r, wake_w, sel.fileno()))
                children.add(pid)
                os.write(out, f"started {pid}\n".encode())
        while children:  # reap every child that ended (SIGCHLD may stand for several)
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            children.discard(pid)
            os.write(out, f"exit {pid} {os.waitstatus_to_exitcode(status)}\n".encode())


if __name__ == "__main__":
    _serve()
