"""The model catalog as data (batchgen/models.yaml): every model validates a good request and
refuses a bad one, the documented combinations hold, user entries extend it, a matrix over
`model` validates each combination against its own entry, and a multi-model manifest runs end
to end in the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchgen.cost import PriceTable
from batchgen.errors import ManifestError
from batchgen.manifest import Manifest
from batchgen.simulator import Simulator
from batchgen.specs import SHIPPED, FieldSpec, ModelSpec
from conftest import page_data, run_args, run_cli

ROOT = Path(__file__).resolve().parent.parent
IMG = "https://assets.example.com/a.png"
VID = "https://assets.example.com/a.mp4"


def _sample(name: str, f: FieldSpec) -> object:
    if f.kind == "url":
        return VID if "video" in name else IMG
    if f.kind == "urls":
        return [IMG] * max(1, f.min or 0)
    if f.kind == "int":
        return f.default if f.default is not None else (f.choices[0] if f.choices else f.min)
    if f.kind == "str":
        return f.default if f.default is not None else (f.choices[0] if f.choices else "a lighthouse at dusk")
    return f.default


def _minimal(spec: ModelSpec) -> dict[str, object]:
    """The smallest request its entry accepts: required fields, and one of each `one_of`."""
    req: dict[str, object] = {k: _sample(k, f) for k, f in spec.fields.items() if f.required}
    for rule in spec.rules:
        if rule.one_of and not any(k in req for k in rule.one_of):
            req[rule.one_of[0]] = _sample(rule.one_of[0], spec.fields[rule.one_of[0]])
    return req


def _yaml(tmp_path: Path, body: str, name: str = "m.yaml") -> Path:
    p = tmp_path / name
    p.write_text(body)
    return p


def _expand(tmp_path: Path, body: str, **kw) -> tuple[list, Manifest]:
    m = Manifest(_yaml(tmp_path, body), **kw)
    jobs = list(m.expand())
    m.check()
    return jobs, m


@pytest.mark.parametrize("model", sorted(SHIPPED.models))
def test_every_model_takes_a_minimal_request_and_the_simulator_agrees(model, tmp_path):
    spec = SHIPPED.models[model]
    req = _minimal(spec)
    request, errors, _ = SHIPPED.normalise(model, dict(req))
    assert errors == []
    assert Simulator.validate(request) is None, (model, request)  # the simulator's own table agrees
    # and through a manifest
    fields = json.dumps({"name": "a", "model": model, **req})
    [job], _ = _expand(tmp_path, f"jobs:\n  - {fields}\n")
    assert job.request == request
    assert PriceTable.load().estimate(request) is not None  # every model has a (placeholder) price


@pytest.mark.parametrize("model", sorted(SHIPPED.models))
def test_every_model_refuses_a_bad_value_naming_the_field(model, tmp_path):
    spec = SHIPPED.models[model]
    req = _minimal(spec)
    candidates = [(k, f) for k, f in spec.fields.items() if f.kind in ("str", "int") and (f.choices or f.max or f.max_len)]
    name, f = (candidates or [(k, f) for k, f in spec.fields.items() if f.kind == "url"])[0]  # or a url-only entry
    bad: object = 999_999 if f.kind == "int" else "not-a-choice"
    if f.kind == "str" and not f.choices:
        bad = "x" * ((f.max_len or 10) + 1)
    fields = json.dumps({"name": "a", "model": model, **req, name: bad})  # sora-2-character: `name` is the job's
    with pytest.raises(ManifestError) as e:
        _expand(tmp_path, f"jobs:\n  - {fields}\n")
    assert f"field '{name}'" in str(e.value) and "m.yaml" in str(e.value)


@pytest.mark.parametrize("job, message", [
    ({"model": "veo-3.1", "prompt": "x", "generation_type": "image-to-video"},
     "field 'image_urls': must have exactly 1 item(s) when generation_type is image-to-video, got 0"),
    ({"model": "veo-3.1", "prompt": "x", "generation_type": "first-last-frame", "image_urls": [IMG]},
     "must have exactly 2 item(s) when generation_type is first-last-frame"),
    ({"model": "veo-3.1", "prompt": "x", "image_urls": [IMG]}, "when generation_type is text-to-video"),
    ({"model": "veo-3.1-reference-to-video", "prompt": "x", "reference_image_urls": [IMG], "duration": 6},
     "must be one of 8; got 6"),
    ({"model": "veo-3.1-reference-to-video", "prompt": "x", "reference_image_urls": [IMG], "reference_type": "FACE"},
     "must be one of ASSET, STYLE"),
    ({"model": "veo-3.1-extend", "prompt": "x"}, "set exactly one of video_url, video"),
    ({"model": "veo-3.1-extend-fast", "prompt": "x", "video_url": VID, "video": VID}, "(got video_url, video)"),
    ({"model": "sora-2", "prompt": "x", "duration": 5}, "must be one of 4, 8, 12, 16, 20; got 5"),
    ({"model": "sora-2", "prompt": "x", "image_urls": [IMG, IMG]}, "must have 0 to 1 items"),
    ({"model": "seedance-2.0-reference-to-video", "prompt": "x", "duration": 20},
     "must be between 4 and 15 (or -1: the model decides)"),
    ({"model": "seedance-2.0-reference-to-video", "prompt": "@Video2 moves", "video_urls": [VID]},
     "refers to @Video2 but video_urls has 1 item(s)"),
    ({"model": "seedance-2.0-reference-to-video", "prompt": "x", "audio_urls": [VID]},
     "needs image_urls or video_urls too"),
    ({"model": "seedance-2.0-reference-to-video", "prompt": "x", "ratio": "9:16", "aspect_ratio": "9:16"},
     "set at most one of ratio, aspect_ratio"),
    ({"model": "seedance-2.0-fast-reference-to-video", "prompt": "x", "resolution": "1080p"},
     "must be one of 480p, 720p; got '1080p'"),
    ({"model": "kling-o3-reference-to-video", "prompt": "x", "multi_prompt": [{"prompt": "y", "duration": 5}]},
     "set exactly one of prompt, multi_prompt"),
    ({"model": "kling-o3-reference-to-video", "prompt": "x", "resolution": "2k"}, "must be one of 720p, 1080p, 4k"),
])
def test_documented_combinations(tmp_path, job, message):
    with pytest.raises(ManifestError) as e:
        _expand(tmp_path, f"jobs:\n  - {json.dumps({'name': 'a', **job})}\n")
    assert message in str(e.value)


def test_auto_duration_is_budgeted_at_its_maximum_and_not_checked(tmp_path):
    [job], _ = _expand(tmp_path, "jobs:\n  - {name: a, model: seedance-2.0-reference-to-video, prompt: x, "
                                 f"image_urls: ['{IMG}'], duration: -1}}\n")
    assert job.request["duration"] == -1 and job.request["generate_audio"] is True and "ratio" not in job.request
    table = PriceTable.load()
    assert table.seconds(job.request) == 15.0
    assert table.estimate(job.request) == pytest.approx(15 * 2.4)
    from batchgen import media

    assert media.compare({"duration": 7.3, "width": 1280, "height": 720, "fps": 24, "audio": True},
                         job.request, job.model) == ("ok", [])


def test_seedance_takes_either_aspect_field_as_its_en_and_zh_pages_do(tmp_path):
    from batchgen import media

    for field in ("ratio", "aspect_ratio"):  # en: ratio; zh: aspect_ratio
        [job], _ = _expand(tmp_path, "jobs:\n  - {name: a, model: seedance-2.0-reference-to-video, prompt: x, "
                                     f"resolution: 1080p, {field}: '9:16'}}\n")
        assert job.request[field] == "9:16"
        assert Simulator.validate(job.request) is None
        tall = {"duration": 5.0, "width": 1080, "height": 1920, "fps": 24, "audio": True}
        assert media.compare(tall, job.request, job.model) == ("ok", [])
        assert media.compare(dict(tall, width=1920, height=1080), job.request, job.model)[0] == "mismatch"


def test_open_models_pass_unlisted_fields_with_a_warning_but_typos_are_errors(tmp_path):
    # the reference-to-video page describes a person-generation field whose name is not shown
    ref = f"model: veo-3.1-reference-to-video, reference_image_urls: ['{IMG}']"
    [job], m = _expand(tmp_path, f"jobs:\n  - {{name: a, {ref}, prompt: x, person_generation: allow_adult}}\n")
    assert job.request["person_generation"] == "allow_adult"
    assert any("person_generation" in w and "sent as given" in w for w in m.warnings)
    with pytest.raises(ManifestError, match="did you mean 'resolution'"):
        _expand(tmp_path, f"jobs:\n  - {{name: a, {ref}, prompt: x, resolutin: 1080p}}\n")
    # veo-3.1's page lists every field it takes: a field it does not name is not sent
    [job], m = _expand(tmp_path, "jobs:\n  - {name: a, model: veo-3.1, prompt: x, person_generation: allow_adult}\n")
    assert "person_generation" not in job.request
    # a closed entry never sends it: a column no template uses is ignored, with a warning
    [job], m = _expand(tmp_path, "jobs:\n  - {name: a, model: seedance-2.0-reference-to-video, prompt: x, "
                                 "person_generation: allow_adult}\n")
    assert "person_generation" not in job.request
    assert any("person_generation" in w and "ignored" in w for w in m.warnings)


def test_kling_total_references_is_a_warning(tmp_path):
    _, m = _expand(tmp_path, "jobs:\n  - {name: a, model: kling-o3-reference-to-video, prompt: x, "
                             f"image_urls: ['{IMG}', '{IMG}', '{IMG}'], elements: [{{}}, {{}}]}}\n")
    assert any("image_urls + elements hold 5 items; at most 4" in w for w in m.warnings)


def test_matrix_over_model_validates_each_combination_and_per_model_applies(tmp_path):
    jobs, _ = _expand(tmp_path, "defaults: {duration: 8}\n"
                                "matrix: {model: [grok-imagine-text-to-video, sora-2, veo-3.1-fast]}\n"
                                "per_model:\n  veo-3.1-fast: {resolution: 4k, generate_audio: true}\n"
                                "  sora-2: {resolution: 1080p}\n"
                                "jobs:\n  - {name: a, prompt: x}\n")
    by = {j.model: j.request for j in jobs}
    assert by["veo-3.1-fast"]["resolution"] == "4k" and by["veo-3.1-fast"]["generate_audio"] is True
    assert by["sora-2"]["resolution"] == "1080p" and by["grok-imagine-text-to-video"]["resolution"] == "720p"
    # a duration one model lacks fails that combination only, naming model and row
    with pytest.raises(ManifestError) as e:
        _expand(tmp_path, "matrix: {model: [grok-imagine-text-to-video, sora-2]}\njobs:\n  - {name: a, prompt: x, "
                          "duration: 10}\n")
    assert "must be one of 4, 8, 12, 16, 20; got 10 (for sora-2)" in str(e.value) and "jobs[0]" in str(e.value)
    # a field only some models take, set on a row: refused with the way out
    with pytest.raises(ManifestError, match="is not a field of grok-imagine-text-to-video .*per_model"):
        _expand(tmp_path, "matrix: {model: [grok-imagine-text-to-video, veo-3.1-fast]}\n"
                          "jobs:\n  - {name: a, prompt: x, generate_audio: true}\n")
    # set in `defaults`, it is not sent to the model that lacks it, and the run says so
    jobs, m = _expand(tmp_path, "defaults: {generate_audio: true}\n"
                                "matrix: {model: [grok-imagine-text-to-video, veo-3.1-fast]}\n"
                                "jobs:\n  - {name: a, prompt: x}\n")
    assert {j.model: "generate_audio" in j.request for j in jobs} == {"grok-imagine-text-to-video": False,
                                                                     "veo-3.1-fast": True}
    assert any("'generate_audio' is not a field of grok-imagine-text-to-video: not sent" in w for w in m.warnings)
    with pytest.raises(ManifestError, match="per_model.*unknown model 'sora-3'; did you mean 'sora-2'"):
        _expand(tmp_path, "per_model: {sora-3: {resolution: 720p}}\njobs:\n  - {name: a, model: sora-2, prompt: x}\n")


NEW_MODEL = """\
wan-2.6-reference-to-video:
  fields:
    prompt: {type: text, required: true, max_len: 2000}
    image_urls: {type: urls, required: true, min: 1, max: 4}
    duration: {type: int, default: 5, choices: [5, 10]}
"""


def test_a_user_models_file_adds_and_replaces_entries(tmp_path, sim_factory, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ledger named, none at ./batchgen.db: plan compares with none
    (tmp_path / "models.yaml").write_text(NEW_MODEL + "sora-2:\n  fields:\n    prompt: {type: text, required: true}\n"
                                          "    duration: {type: int, default: 8, choices: [8, 25]}\n")
    m = _yaml(tmp_path, f"jobs:\n  - {{name: a, model: wan-2.6-reference-to-video, prompt: x, image_urls: ['{IMG}']}}\n"
                        "  - {name: b, model: sora-2, prompt: y, duration: 25}\n")
    r = run_cli(["plan", str(m), "--json"], BATCHGEN_LEDGER=None)
    assert r.exit_code == 2 and "unknown model 'wan-2.6-reference-to-video'" in r.output
    r = run_cli(["plan", str(m), "--json", "--models", str(tmp_path / "models.yaml")],
                BATCHGEN_LEDGER=None)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["jobs"] == 2
    # the same entries inline in the manifest
    inline = _yaml(tmp_path, "models:\n" + "".join("  " + line + "\n" for line in NEW_MODEL.splitlines())
                   + f"jobs:\n  - {{name: a, model: wan-2.6-reference-to-video, prompt: x, image_urls: ['{IMG}'], "
                   "duration: 10}\n", "inline.yaml")
    [job], _ = _expand(tmp_path, inline.read_text())
    assert job.request == {"model": "wan-2.6-reference-to-video", "prompt": "x", "image_urls": [IMG], "duration": 10}
    # a broken models file is a usage error naming it
    (tmp_path / "bad.yaml").write_text("wan:\n  fields:\n    prompt: {type: txt}\n")
    r = run_cli(["plan", str(m), "--models", str(tmp_path / "bad.yaml")])
    assert r.exit_code == 2 and "bad.yaml" in r.output and "prompt" in r.output and "type" in r.output
    r = run_cli(["models", "wan", "--models", str(tmp_path / "models.yaml")])
    assert r.exit_code == 0 and "wan-2.6-reference-to-video" in r.output and "one of 5, 10" in r.output


def test_models_command(tmp_path):
    r = run_cli(["models", "--json"])
    assert r.exit_code == 0
    docs = {d["model"]: d for d in json.loads(r.stdout)}
    assert {"veo-3.1", "veo-3.1-reference-to-video", "veo-3.1-extend", "sora-2", "sora-2-pro",
            "seedance-2.0-reference-to-video", "kling-o3-reference-to-video"} <= set(docs)
    dur = next(f for f in docs["veo-3.1-reference-to-video"]["fields"] if f["name"] == "duration")
    assert dur["allowed"] == [8] and dur["default"] == 8
    text = run_cli(["models", "veo-3.1"]).stdout
    assert "generation_type" in text and "image_urls: 1-1 items when generation_type=image-to-video" in text
    r = run_cli(["models", "nope"])
    assert r.exit_code == 2 and "no model in the catalog matches nope" in r.output


def test_a_multi_model_manifest_runs_end_to_end_and_compares(sim_factory, tmp_path):
    sim = sim_factory(seed=31)
    example = (ROOT / "manifests" / "compare-models.yaml").read_text()
    m = _yaml(tmp_path, example.replace("1080p", "720p"), "compare.yaml")  # smaller clips for the test
    r = run_cli(run_args(sim, m, tmp_path, "--json"))
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["counts"] == {"done": 12} and doc["verified"] == {"ok": 12}
    models = {c["model"] for c in sim.truth()["creates"]}
    assert models == {"grok-imagine-text-to-video", "veo-3.1-fast", "sora-2", "kling-o3-reference-to-video"}
    rep = run_cli(["report", "--ledger", str(tmp_path / "l.db"), "--compare", "model", "-o", str(tmp_path / "r.html")])
    assert rep.exit_code == 0
    data = page_data((tmp_path / "r.html").read_text())
    assert data["compare"] == "model"
    values = {data["strings"][v] for v in data["columns"]["model"]["v"] if v is not None}
    assert values == models
    # one row per shot (3), one column per model, although per_model fields differ by model
    assert len({g for g in data["columns"]["model"]["g"] if g is not None}) == 3
