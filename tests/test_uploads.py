"""Local reference images: uploaded once per content, confined to the manifest's folder, 413 handled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchgen.ledger import Ledger
from conftest import run_args, run_cli


# ------------------------------------------------------------------ local reference images
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200


def _local_manifest(d: Path, n: int, extra: str = "") -> Path:
    (d / "refs").mkdir(exist_ok=True)
    (d / "refs" / "mascot.png").write_bytes(PNG)
    (d / "refs" / "logo.png").write_bytes(PNG + b"logo")
    rows = "".join(f"  - {{name: s{i}, prompt: 'shot {i} @Image1 @Image2', "
                   f"reference_image_urls: [refs/mascot.png, {'refs/logo.png' if i % 2 else 'https://cdn.example.com/a.png'}]}}\n"
                   for i in range(n))
    m = d / "m.yaml"
    m.write_text("defaults: {model: grok-imagine-reference-to-video}\njobs:\n" + rows + extra)
    return m


@pytest.mark.slow
def test_local_images_are_uploaded_once_and_their_urls_used(sim, tmp_path):
    m = _local_manifest(tmp_path, 6)
    r = run_cli(run_args(sim, m, tmp_path, "-q", "--json"))
    assert r.exit_code == 0 and json.loads(r.stdout)["counts"] == {"done": 6}
    truth = sim.truth()
    assert truth["counters"]["uploads"] == 2  # two distinct files, six jobs
    import hashlib
    assert {u["sha256"] for u in truth["uploads"]} == {hashlib.sha256(PNG).hexdigest(), hashlib.sha256(PNG + b"logo").hexdigest()}
    led = Ledger(str(tmp_path / "l.db"))
    jobs = list(led.iter_export())
    led.close()
    assert all(json.loads(j["request"])["reference_image_urls"][0].startswith("upload:sha256:") for j in jobs)
    # a new job using the same image reuses the upload (cached in the ledger by content)
    m2 = _local_manifest(tmp_path, 7)
    assert run_cli(run_args(sim, m2, tmp_path, "-q")).exit_code == 0
    assert sim.truth()["counters"]["uploads"] == 2


def test_local_input_keys_follow_content_and_are_confined(tmp_path):
    from batchgen.errors import ManifestError
    from batchgen.manifest import Manifest

    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    ka = [j.key for j in Manifest(_local_manifest(a, 2)).expand()]
    kb = [j.key for j in Manifest(_local_manifest(b, 2)).expand()]
    assert ka == kb  # same content elsewhere → same jobs
    (b / "refs" / "mascot.png").write_bytes(PNG + b"changed")
    assert [j.key for j in Manifest(b / "m.yaml").expand()] != ka
    secret = tmp_path / "secret.png"
    secret.write_bytes(PNG)
    for bad, why in (("../secret.png", "inside the manifest's folder"), ("refs/missing.png", r"neither an http\(s\) URL"),
                     ("m.yaml", "image or video")):
        m = a / "bad.yaml"
        m.write_text(f"defaults: {{model: grok-imagine-reference-to-video}}\njobs:\n  - {{prompt: x, reference_image_urls: [{bad}]}}\n")
        with pytest.raises(ManifestError, match=why) as ei:
            Manifest(m).validate()
        assert ei.value.problems[0].field == "reference_image_urls"


def test_oversized_upload_fails_the_job_not_the_run(sim_factory, tmp_path):
    sim = sim_factory(upload_max_bytes=100)
    m = _local_manifest(tmp_path, 2)
    r = run_cli(run_args(sim, m, tmp_path, "-q", "--json"))
    s = json.loads(r.stdout)
    assert r.exit_code == 1 and s["counts"] == {"failed": 2}
    assert {f["error"] for f in s["failed"]} == {"file_too_large"}
    assert sim.truth()["creates"] == []


