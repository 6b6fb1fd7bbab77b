"""Know what you got: read each delivered clip, compare it with what was asked, draw its pictures.

``inspect`` opens a file with PyAV (FFmpeg is bundled in its wheels): container, video codec,
duration, width × height, frame rate, whether there is an audio track; it reads every packet
and decodes the first frame and the last keyframe (a truncated or corrupt file fails here,
where the ``ftyp`` check alone would pass it) and, when asked, writes a poster frame and a 3×3 contact sheet as small JPEGs
(Pillow). It is CPU work, meant for a worker process (see ``pipeline.check``), and returns plain
data so it crosses the process boundary cheaply.

``compare`` turns the measurement and the effective request into an outcome: ``ok``,
``mismatch`` (naming each field: duration, aspect_ratio, resolution, audio) or ``undecodable``.
Imports nothing else of batchgen but the model specs.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from . import frames, specs

OK, MISMATCH, UNDECODABLE = "ok", "mismatch", "undecodable"
MISSING, CHANGED, UNCHECKED = "missing", "changed", "unchecked"  # set by `batchgen verify` / migration 0005
SHEET_GRID = 3  # 3 × 3 frames
# Resolution classes by the short side of the frame (a "720p" 9:16 video is 720 × 1280).
WORKER_NICE = 10  # niceness the verification workers add to the run's
SHEET_NICE = 19  # the contact sheets' workers (``pipeline.check``): the least, below the verdicts too
RESOLUTION_CLASSES = {"360p": 360, "480p": 480, "720p": 720, "1080p": 1080, "1440p": 1440, "2160p": 2160, "4k": 2160}


def worker_init(nice: int = WORKER_NICE) -> None:
    """Initializer of the worker processes that run ``inspect``: they must not outlive the run
    (a kill -9 of batchgen would leave them blocked on their queue forever) nor hold its
    stdout/stderr open (whoever reads those — cron, a test — would wait on them)."""
    import signal
    from multiprocessing import connection, parent_process

    # Born with SIGINT/SIGTERM blocked (the fork server's mask: _quiet_children); ignored for good: a stop is the
    # parent's decision, and it ends the workers (pool shutdown, or the watch below).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    # Decoding is the one CPU-bound thing a run does, one worker per core: niced, so the run's own
    # event loop (polls, the next create once a slot frees) gets the CPU when it needs it.
    if hasattr(os, "nice"):
        os.nice(nice)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    parent = parent_process()  # the run's process (not the fork server a worker is forked from)
    assert parent is not None

    def watch() -> None:
        # The end of a pipe the run's process holds open: readable (EOF) once that process is
        # gone, however it ended. Waited on, not polled.
        connection.wait([parent.sentinel])
        os._exit(0)  # the run is gone: so is this worker

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


# What a worker needs, imported once in the fork server instead of in every worker of every run.
PRELOAD = ["batchgen.media", "av", "PIL.Image"]


def pool(workers: int | None = None, nice: int = WORKER_NICE) -> Any:
    """A process pool for ``inspect``, at most one worker per core (the run itself mostly waits
    on the network), each tied to this process's life. Workers are started as the work needs
    them (ProcessPoolExecutor starts one per submit while none is idle): a run that verifies a
    clip now and then has one.

    POSIX: workers are forked from this process's own fork server (``_server``), a process
    started once — quiet (see ``_quiet_children``) and with ``PRELOAD`` imported — and kept
    until this process exits. Not forked from this process itself: the run has threads, which a
    fork would copy mid-operation; the server has none. A worker is then a fork of a warm,
    single-threaded interpreter where a spawned one was a new interpreter importing PyAV (about
    0.15 s of CPU, two of them per run). It inherits the server's /dev/null
    stdout/stderr and blocked SIGINT/SIGTERM whenever and from whichever thread it is started,
    so a worker whose parent was killed (kill -9) while it read its start-up data has nothing of
    ours to print an ``EOFError`` on, and the terminal's Ctrl-C (sent to the whole process
    group) stays the parent's to handle. Neither the server nor a worker imports the caller's
    ``__main__`` (see ``_Server``): a plain script calling ``batchgen.run`` is not run again."""
    n = workers or max(1, os.cpu_count() or 1)
    if sys.platform == "win32":  # pragma: no cover — no fork server on Windows: spawn, as multiprocessing does
        import multiprocessing

        return _Pool(n, mp_context=multiprocessing.get_context("spawn"), initializer=worker_init, initargs=(nice,))
    _server.ensure_running()
    return _Pool(n, mp_context=_ServerContext(), initializer=worker_init, initargs=(nice,))


class _Pool(ProcessPoolExecutor):
    """Left by an exception (Ctrl-C in `batchgen verify`): the clips not started are dropped
    instead of waited for — the workers ignore the signal, so they would all be read first."""

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Literal[False]:
        self.shutdown(wait=True, cancel_futures=exc_type is not None)
        return False


@contextmanager
def _quiet_children() -> Iterator[None]:
    """Processes started within inherit /dev/null as stdout and stderr, and SIGINT/SIGTERM
    blocked. This process's own stdout/stderr point there for the few milliseconds it takes
    (the processes are started in the calling thread); a line another thread writes meanwhile
    is lost, nothing else."""
    import signal
    import sys
    from multiprocessing import resource_tracker

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = [os.dup(1), os.dup(2)]
    old_mask = None
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        # The tracker first: starting it unblocks SIGINT/SIGTERM in this thread when done (it
        # ignores them itself), which would undo the block below.
        resource_tracker.ensure_running()
        # The calling thread's mask, whichever thread it is: what a process started from it inherits.
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)
        if old_mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


if sys.platform != "win32":
    # Module level: the process object is pickled to the child, so its class must be importable.
    from multiprocessing import context as _mp_context
    from multiprocessing import forkserver as _forkserver
    from multiprocessing import popen_forkserver as _popen_forkserver
    from multiprocessing import reduction as _reduction
    from multiprocessing import spawn as _spawn
    from multiprocessing import util as _mp_util

    class _Server(_forkserver.ForkServer):
        """This process's own fork server, not multiprocessing's shared one (the caller's code
        may use that one, with its own preload and its own stdout/stderr). Started quiet, by
        whichever thread first needs it — again if it was killed — and importing ``PRELOAD``,
        never ``__main__`` (multiprocessing's default preload: a plain script calling
        ``batchgen.run`` without an ``if __name__ == "__main__":`` guard would run again in it).
        ``ensure_running`` returns once the server is started, not once it has imported: the
        caller goes on meanwhile, and the first fork waits for it."""

        # The base class's state (typeshed leaves it out).
        _forkserver_pid: int | None
        _forkserver_alive_fd: int | None
        _forkserver_address: Any

        def ensure_running(self) -> None:
            with self._lock:
                pid = self._forkserver_pid
                if pid is not None:
                    if os.waitpid(pid, os.WNOHANG)[0] == 0:
                        return  # running
                    self._drop()  # gone (killed): forgotten here, as the base class does, so a new one starts quiet
            with _quiet_children():
                super().ensure_running()

        def _drop(self) -> None:
            if self._forkserver_alive_fd is not None:
                os.close(self._forkserver_alive_fd)
            self._forkserver_address = self._forkserver_alive_fd = self._forkserver_pid = None

        def forget(self) -> None:
            """In a child forked from this process (a user's fork, a test's zygote): the server
            is the parent's, not to be asked nor kept alive from here; the child starts its own."""
            self._lock = threading.Lock()  # another thread may have held it at the fork
            self._drop()

    _server = _Server()
    _server.set_forkserver_preload(PRELOAD)
    os.register_at_fork(after_in_child=_server.forget)

    def _close_fds(*fds: int) -> None:
        for fd in fds:
            os.close(fd)

    class _ServerPopen(_popen_forkserver.Popen):
        _fds: list[int]  # the base class's (typeshed leaves it out)

        def _launch(self, process_obj: Any) -> None:
            """``popen_forkserver.Popen._launch`` (CPython 3.11–3.14), asking our server instead
            of the shared one, and without the preparation entries that make a child import the
            parent's ``__main__`` (as ``__mp_main__``, so that functions defined there unpickle:
            our workers only run this module's, and a script without a main guard would start a
            whole second run per worker — refused by the ledger's lock, the clip unverified)."""
            import io

            prep_data = _spawn.get_preparation_data(process_obj._name)
            prep_data.pop("init_main_from_path", None)
            prep_data.pop("init_main_from_name", None)
            buf = io.BytesIO()
            _mp_context.set_spawning_popen(self)
            try:
                _reduction.dump(prep_data, buf)
                _reduction.dump(process_obj, buf)
            finally:
                _mp_context.set_spawning_popen(None)
            self.sentinel, w = _server.connect_to_new_process(self._fds)
            # A duplicate of the data pipe's write end stays open here: the worker's
            # ``parent_process().sentinel``, at EOF once this process is gone (``worker_init``).
            _parent_w = os.dup(w)
            self.finalizer = _mp_util.Finalize(self, _close_fds, (_parent_w, self.sentinel))
            with open(w, "wb", closefd=True) as f:
                f.write(buf.getbuffer())
            self.pid = _forkserver.read_signed(self.sentinel)

    class _ServerProcess(_mp_context.ForkServerProcess):
        @staticmethod
        def _Popen(process_obj: Any) -> Any:
            return _ServerPopen(process_obj)

    class _ServerContext(_mp_context.ForkServerContext):
        Process = _ServerProcess


@dataclass
class Measured:
    """What a file is, as read from it. ``error`` is set (and the rest may be None) when it
    could not be read or decoded."""

    container: str | None = None
    codec: str | None = None
    duration: float | None = None  # seconds of video (frames ÷ frame rate when known)
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    audio: bool | None = None
    error: str | None = None
    poster: str | None = None
    sheet: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def inspect(path: str, poster: str | None = None, sheet: str | None = None) -> dict[str, Any]:
    """Measure ``path`` (and write its pictures); a plain dict of ``Measured``. Never raises for
    a bad file: the error is the measurement."""
    import av

    m = Measured()
    try:
        with av.open(path) as c:
            names = c.format.name.split(",") if c.format is not None else []
            m.container = "mp4" if "mp4" in names else (names[0] if names else None)
            if not c.streams.video:
                m.error = "no video stream"
                return m.as_dict()
            vs = c.streams.video[0]
            m.codec = vs.codec_context.name
            m.width, m.height = vs.codec_context.width, vs.codec_context.height
            m.fps = float(vs.average_rate) if vs.average_rate else None
            m.audio = bool(c.streams.audio)
            m.duration = _duration(c, vs)
            first, _ = frames.read(c, vs, [])
    except Exception as e:  # noqa: BLE001 - any decoder failure means "undecodable"
        m.error = f"{type(e).__name__}: {(getattr(e, 'strerror', None) or str(e))[:200]}"
        return m.as_dict()
    try:
        if poster:
            _write_atomic(poster, first)
            m.poster = poster
    except OSError:
        m.poster = None  # pictures are a convenience (a full disk, say): the measurement stands
    if sheet:
        m.sheet = contact_sheet(path, sheet, m.duration)
    return m.as_dict()


def contact_sheet(path: str, sheet: str, duration: float | None = None) -> str | None:
    """Write the 3 × 3 contact sheet of a clip ``inspect`` passed; its path, or None when it
    could not be made (the file gone or changed since, a full disk): pictures are a convenience.
    Its own opening of the file, with the sheet's cheaper decoder (``frames.SHEET_DECODER``):
    ``inspect`` makes it after the checks, the run's pictures lane (``pipeline.check``) later."""
    import av

    try:
        with av.open(path) as c:
            vs = c.streams.video[0]
            thumbs = frames.sheet(c, vs, _sheet_times(duration if duration is not None else _duration(c, vs)))
        if not thumbs:
            return None
        _save_sheet(thumbs, sheet)
    except Exception:  # noqa: BLE001 - no sheet is all a failure here means (the verdict is inspect's)
        return None
    return sheet


def record(measured: dict[str, Any], outcome: str, diffs: list[str]) -> dict[str, Any]:
    """A verification as the ledger's job columns record it (outcome, what differs, what was
    measured, the pictures, when)."""
    import time

    return {"verify": outcome, "verify_detail": "; ".join(diffs)[:1000] or None, "m_duration": measured["duration"],
            "m_width": measured["width"], "m_height": measured["height"], "m_fps": measured["fps"],
            "m_codec": measured["codec"], "m_audio": measured["audio"], "poster": measured["poster"],
            "sheet": measured["sheet"], "verified_at": time.time()}


def check_file(path: str, sha256: str | None, size: int | None, poster: str | None = None,
               sheet: str | None = None) -> dict[str, Any]:
    """``inspect``, after making sure the file is the one delivered: ``{"gone": "missing"}`` when
    it is not there, ``{"gone": "changed"}`` when its size or sha256 differ from the ledger's."""
    import hashlib

    try:
        st = os.stat(path)
        if size is not None and st.st_size != size:
            return {"gone": CHANGED, "detail": f"{st.st_size} bytes, delivered {size}"}
        if sha256 is not None:
            with open(path, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            if digest != sha256:
                return {"gone": CHANGED, "detail": f"sha256 {digest[:12]}…, delivered {sha256[:12]}…"}
    except FileNotFoundError:
        return {"gone": MISSING, "detail": "the file is no longer there"}
    except OSError as e:
        return {"gone": MISSING, "detail": f"cannot read it: {e.strerror}"}
    return inspect(path, poster, sheet)


PICTURES_DIR = ".batchgen"  # under the output folder (the report and --deliver use the same layout)


def picture_names(output: str) -> tuple[str, str]:
    """A clip's poster and contact sheet relative to the output folder: ``.batchgen/<output>.poster.jpg``."""
    base = f"{PICTURES_DIR}/{output}"
    return f"{base}.poster.jpg", f"{base}.sheet.jpg"


def picture_paths(output_path: str, output: str) -> tuple[str | None, str | None]:
    """Where a clip's poster and contact sheet live: ``<out>/.batchgen/<output>.poster.jpg``;
    (None, None) — no pictures, said once per output folder — when either would resolve
    (symlinks included: a linked ``.batchgen`` folder) outside the output folder."""
    from .files import inside

    root = output_path[: -len(output)] if output_path.endswith(output) else str(Path(output_path).parent) + "/"
    poster, sheet = (str(Path(root) / name) for name in picture_names(output))
    if inside(root, poster) and inside(root, sheet):
        return poster, sheet
    if root not in _refused_roots:
        _refused_roots.add(root)
        import logging

        logging.getLogger("batchgen").warning(
            f"no posters or contact sheets under {root}: {Path(root) / PICTURES_DIR} leads outside the output "
            "folder (a symlink?); pictures are only written inside it")
    return None, None


_refused_roots: set[str] = set()


def _duration(c: Any, vs: Any) -> float | None:
    if vs.frames and vs.average_rate:
        return float(vs.frames / vs.average_rate)
    if vs.duration is not None and vs.time_base is not None:
        return float(vs.duration * vs.time_base)
    return float(c.duration / 1_000_000) if c.duration else None


def _sheet_times(duration: float | None) -> list[float]:
    n = SHEET_GRID * SHEET_GRID
    d = duration or 0.0
    return [d * (i + 0.5) / n for i in range(n)]


def _save_sheet(thumbs: list[Any], path: str) -> None:
    from PIL import Image

    thumbs = [t.convert("RGB") for t in thumbs[: SHEET_GRID * SHEET_GRID]]
    tw, th = thumbs[0].size
    gap = 3
    sheet = Image.new("RGB", (tw * SHEET_GRID + gap * (SHEET_GRID + 1), th * SHEET_GRID + gap * (SHEET_GRID + 1)),
                      (20, 20, 24))
    for i, t in enumerate(thumbs):
        sheet.paste(t, (gap + (i % SHEET_GRID) * (tw + gap), gap + (i // SHEET_GRID) * (th + gap)))
    _write_atomic(path, sheet)


def _write_atomic(path: str, img: Any) -> None:
    """Pictures are derived data (a re-verify redraws them): temp + rename, no fsync. A device,
    FIFO or folder at ``path`` is refused, never replaced (``files.atomic_output``)."""
    from .errors import BatchgenError
    from .files import atomic_output

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_output(p, what="picture", binary=True, durable=False) as f:
            img.convert("RGB").save(f, "JPEG", quality=78)
    except BatchgenError as e:  # the caller treats a picture it cannot write as no picture
        raise OSError(str(e)) from None


# ------------------------------------------------------------------ comparison
def expected_duration(request: dict[str, Any], spec: specs.ModelSpec | None) -> float | None:
    """Seconds of video the request asks for, when the request alone decides it (not for
    edit/extend models, whose output follows their input, nor for an "auto" duration)."""
    if spec is None or not spec.duration_is_output:
        return None
    d = request.get("duration")
    fs = spec.fields.get("duration")
    if fs is not None and fs.auto is not None and d == fs.auto:
        return None  # the model decides
    return float(d) if isinstance(d, int) and not isinstance(d, bool) else None


def compare(measured: dict[str, Any], request: dict[str, Any], model: str,
            catalog: specs.Catalog | None = None) -> tuple[str, list[str]]:
    """(outcome, [what differs]) of a measured clip against its effective request (the model's
    entry from ``catalog``, default the shipped one)."""
    if measured.get("error"):
        return UNDECODABLE, [str(measured["error"])]
    diffs: list[str] = []
    spec = (catalog or specs.SHIPPED).get(model)
    want = expected_duration(request, spec)
    got = measured.get("duration")
    fps = measured.get("fps") or 24.0
    if want is not None and got is not None:
        tolerance = max(1.0 / fps, spec.duration_tolerance if spec else 0.0) + 1e-6
        if abs(got - want) > tolerance:
            diffs.append(f"duration {got:.2f}s, asked {want:g}s")
    w, h = measured.get("width"), measured.get("height")
    ratio = request.get(spec.aspect_field) if spec else None
    ratio = ratio or request.get("aspect_ratio")
    if w and h and isinstance(ratio, str) and ":" in ratio:
        a, _, b = ratio.partition(":")
        try:
            asked = float(a) / float(b)
        except (ValueError, ZeroDivisionError):
            asked = None
        if asked and abs(math.log((w / h) / asked)) > 0.03:  # 854×480 is "16:9"
            diffs.append(f"aspect_ratio {w}×{h}, asked {ratio}")
    res = request.get("resolution")
    if w and h and isinstance(res, str) and res in RESOLUTION_CLASSES:
        got_class = min(RESOLUTION_CLASSES, key=lambda k: abs(RESOLUTION_CLASSES[k] - min(w, h)))
        if got_class != res:
            diffs.append(f"resolution {got_class} ({w}×{h}), asked {res}")
    if spec is not None and spec.promises_audio(request) and measured.get("audio") is False:
        diffs.append("audio: no audio track, the model promises one")
    return (MISMATCH if diffs else OK), diffs
