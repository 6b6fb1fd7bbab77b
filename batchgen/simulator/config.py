"""Every knob of the simulator (``SimConfig``): what ``batchgen simulator --set K=V``,
``run --simulate --sim-set K=V`` and ``POST /_sim/config`` change. Data only."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

@dataclass
class SimConfig:
    """Every knob of the simulator. Probabilities are per request; times are seconds."""

    seed: int = 0
    api_key: str | None = None  # None: any non-empty Bearer token is accepted
    render_min: float = 2.0
    render_max: float = 6.0
    estimate_noise: float = 0.15  # estimated_time = render time × U(1-n, 1+n)
    latency: float = 0.0  # added to every API response (lowered while one waits: it leaves at once)
    # An API's habits (issue 31 part 4), so that a benchmark does not measure only this simulator's:
    jitter: float = 0.0  # every API answer comes U(0, jitter) seconds later still
    latency_after: float = 0.0  # a create's answer leaves this long after its task started (its clock runs already)
    pending_s: float = 0.0  # a task waits ~this long (× U(0.5, 1.5)) in `pending` before its render starts; not in estimated_time
    progress: str = "linear"  # what `progress` says while rendering: linear | none (0 until done) | coarse (steps of 25)
    rpm_limit: float | None = None  # token bucket per key (a second's worth of burst); over it → 429 + Retry-After
    # Quota headers on every API answer while rpm_limit is set: "none" (foxapi documents none),
    # "ietf" (RateLimit-Limit/-Remaining/-Reset and RateLimit-Policy "N;w=1") or "x" (X-RateLimit-*)
    rate_headers: str = "none"
    p429: float = 0.0
    retry_after: float = 1.0
    p_burst: float = 0.0  # starts a 429 burst: every request refused for burst_seconds
    burst_seconds: float = 2.0
    p_slow: float = 0.0  # the response (API or file) is delayed by slow_seconds
    slow_seconds: float = 1.0
    p5xx_before: float = 0.0  # 500/502/503 and nothing created
    p500_after: float = 0.0  # create: task created, then 500 (ambiguous)
    p_drop_after: float = 0.0  # create: task created, then the connection is dropped (ambiguous)
    p_drop_before: float = 0.0  # create: connection dropped, nothing created (ambiguous to client)
    p_malformed: float = 0.0  # 200 with a body that is not JSON (create: the task exists)
    p_fail: float = 0.0  # task ends failed
    p_cancel: float = 0.0  # task ends cancelled
    # A model broken upstream: "MODEL=P@T,…" — tasks of MODEL created T seconds or more after
    # the simulator started fail with probability P, with model_fault_code (issue 30's breaker).
    model_faults: str = ""
    model_fault_code: str = "service_error"
    # Render times per model instead of render_min..max: "MODEL=uniform:A:B", "MODEL=lognormal:
    # MEDIAN:SIGMA" (skewed), "MODEL=bimodal:FAST:SLOW:P" (P of the tasks slow, ±10 % each), comma-separated.
    model_render: str = ""
    p_truncate: float = 0.0  # result download cut short
    p_poll_404: float = 0.0  # poll answers 404 (unknown task), as an eventually consistent store might
    file_min: int = 4096
    file_max: int = 16384
    result_ttl: float = 24 * 3600.0
    balance: float | None = None  # credits; None = unlimited; exhausted → 402
    upload_max_bytes: int = 10 * 1024 * 1024  # larger uploads → 413
    storage_cap: int = 64 * 1024 * 1024  # per key; full → evict oldest (auto_cleanup) or 403
    credits_per_second: float = 1.0
    # Result files: "real" = decodable H.264 MP4s (PyAV) whose duration and frame size follow
    # the request, with an AAC track when `audio`; "stub" = tiny signature-only files (fast,
    # for throughput benchmarks). The p_* knobs serve wrong ones, for verification tests.
    media: str = "real"
    # Real clips weigh what this many kilobits a second of video would (0: as encoded). The encode
    # is a still field and a bar, ~0.4 Mbit/s at 720p, where a provider's 6 s 720p MP4 is several
    # MB: the rest is a top-level `free` box, which players and decoders skip, so a benchmark
    # downloads, hashes and writes real-size files that still decode and verify.
    media_kbps: float = 0.0
    # A file whose bytes every real clip is, whatever its request asked (""; the encode): a clip
    # as a provider's encoder writes it — moving content, x264's defaults, one keyframe in 6 s —
    # which the still-image encode (a keyframe a second, little to decode) is not.
    media_file: str = ""
    audio: bool = True
    fps: int = 24
    p_short: float = 0.0  # half the asked duration
    p_wrong_aspect: float = 0.0  # width and height swapped
    p_undecodable: float = 0.0  # a valid `ftyp` box, then garbage
    p_no_audio: float = 0.0  # no audio track

    def model_fault(self, model: str, since_start: float) -> float:
        """The probability that a task of ``model`` created ``since_start`` s after the start fails
        by ``model_faults`` (0 when no entry applies). ValueError for a malformed entry."""
        for entry in filter(None, (e.strip() for e in self.model_faults.split(","))):
            name, _, rest = entry.partition("=")
            p, _, at = rest.partition("@")
            if not name or not p:
                raise ValueError(f"model_faults entry {entry!r} is not MODEL=P@T")
            if name.strip() == model and since_start >= float(at or 0):
                return float(p)
        return 0.0

    def render_of(self, model: str) -> tuple[str, list[float]] | None:
        """``model_render``'s distribution for ``model`` (kind, parameters), or None."""
        for entry in filter(None, (e.strip() for e in self.model_render.split(","))):
            name, _, spec = entry.partition("=")
            kind, *params = spec.split(":")
            if name.strip() == model:
                if kind not in ("uniform", "lognormal", "bimodal") or len(params) != (3 if kind == "bimodal" else 2):
                    raise ValueError(f"model_render entry {entry!r}: uniform:A:B, lognormal:MEDIAN:SIGMA or "
                                     "bimodal:FAST:SLOW:P")
                return kind, [float(p) for p in params]
        return None

    def update(self, values: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        for k, v in values.items():
            if k not in names:
                raise KeyError(k)
            setattr(self, k, v)

