from __future__ import annotations

import time
from pathlib import Path

import pytest

from batchgen import specs
from batchgen.errors import ManifestError
from batchgen.jobs import job_key
from batchgen.manifest import Manifest, safe_output_name

R2V = "grok-imagine-reference-to-video"
IMG = "https://img.example.com/a.png"


ASPECT_RATIOS = ("16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16")  # the reference, §2


def norm(model: str, **params):
    request, errors, _warnings = specs.SHIPPED.normalise(model, params)
    return request, errors


# ------------------------------------------------------------------ documented limits, per model
def test_reference_to_video_defaults_and_limits():
    req, errs = norm(R2V, prompt="x @Image1", reference_image_urls=[IMG])
    assert errs == []
    assert req == {"model": R2V, "prompt": "x @Image1", "reference_image_urls": [IMG],
                   "duration": 8, "aspect_ratio": "16:9", "resolution": "480p"}
    assert norm(R2V, prompt="p" * 4096, reference_image_urls=[IMG])[1] == []
    assert norm(R2V, prompt="p" * 4097, reference_image_urls=[IMG])[1][0][0] == "prompt"
    assert norm(R2V, prompt="x", reference_image_urls=[IMG] * 7)[1] == []
    assert norm(R2V, prompt="x", reference_image_urls=[IMG] * 8)[1][0][0] == "reference_image_urls"
    assert norm(R2V, prompt="x", reference_image_urls=[])[1] == [("reference_image_urls", "is required")]
    for d, ok in ((1, True), (10, True), (0, False), (11, False)):
        assert (norm(R2V, prompt="x", reference_image_urls=[IMG], duration=d)[1] == []) is ok, d
    for ar in ASPECT_RATIOS:
        assert norm(R2V, prompt="x", reference_image_urls=[IMG], aspect_ratio=ar)[1] == []
    assert norm(R2V, prompt="x", reference_image_urls=[IMG], aspect_ratio="auto")[1][0][0] == "aspect_ratio"
    assert norm(R2V, prompt="x", reference_image_urls=[IMG], resolution="1080p")[1][0][0] == "resolution"


def test_image_references_must_exist():
    assert norm(R2V, prompt="@Image1 and @Image2", reference_image_urls=[IMG, IMG])[1] == []
    errs = norm(R2V, prompt="@Image1 and @Image3", reference_image_urls=[IMG, IMG])[1]
    assert errs and errs[0][0] == "prompt" and "@Image3" in errs[0][1]


@pytest.mark.parametrize("model,extra,dur,defaults", [
    ("grok-imagine-text-to-video", {}, (1, 15), {"duration": 6, "aspect_ratio": "16:9", "resolution": "720p"}),
    ("grok-imagine-image-to-video", {"image_url": IMG}, (1, 15), {"duration": 6, "aspect_ratio": "auto", "resolution": "720p"}),
    ("grok-imagine-video-extension", {"video_url": "https://v.example.com/a.mp4"}, (2, 10), {"duration": 6}),
])
def test_other_models_ranges_and_defaults(model, extra, dur, defaults):
    req, errs = norm(model, prompt="go", **extra)
    assert errs == []
    for k, v in defaults.items():
        assert req[k] == v
    lo, hi = dur
    assert norm(model, prompt="go", duration=lo, **extra)[1] == []
    assert norm(model, prompt="go", duration=hi, **extra)[1] == []
    assert norm(model, prompt="go", duration=lo - 1, **extra)[1]
    assert norm(model, prompt="go", duration=hi + 1, **extra)[1]


def test_edit_video_and_required_inputs():
    req, errs = norm("grok-imagine-edit-video", prompt="make it snow", video_url="https://v.example.com/a.mp4")
    assert errs == [] and req["resolution"] == "auto" and "duration" not in req
    assert norm("grok-imagine-image-to-video", prompt="x")[1] == [("image_url", "is required")]
    assert norm("grok-imagine-image-to-video", prompt="x", image_url="ftp://x/y")[1][0][0] == "image_url"
    assert norm("grok-imagine-text-to-video", prompt="x", aspect_ratio="auto")[1][0][0] == "aspect_ratio"


# ------------------------------------------------------------------ YAML / CSV expansion
def write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def test_yaml_defaults_matrix_templates_and_csv_rows(tmp_path):
    write(tmp_path / "rows.csv", "name,subject,reference_image_urls\nfox,a red fox,https://a/1.png|https://a/2.png\n")
    m = Manifest(write(tmp_path / "m.yaml", f"""
defaults: {{model: {R2V}, resolution: 720p, style: noir, prompt: "{{subject}} in {{style}}, @Image1"}}
matrix: {{aspect_ratio: ["16:9", "9:16"], duration: [4, 6]}}
output: "{{name}}_{{aspect_ratio}}_{{duration}}s.mp4"
rows: rows.csv
jobs:
  - name: owl
    subject: an owl
    prompt: "{{subject}} in {{style}}, @Image1"
    reference_image_urls: [{IMG}]
"""))
    jobs = list(m.expand())
    m.check()
    assert len(jobs) == 8
    owl = jobs[0]
    assert owl.request == {"model": R2V, "prompt": "an owl in noir, @Image1", "reference_image_urls": [IMG],
                           "aspect_ratio": "16:9", "duration": 4, "resolution": "720p"}
    assert owl.output == "owl_16_9_4s.mp4"
    assert "subject" not in owl.request and "style" not in owl.request
    fox = jobs[4]
    assert fox.request["reference_image_urls"] == ["https://a/1.png", "https://a/2.png"]
    assert fox.source.startswith("rows.csv row 1")
    assert [j.seq for j in jobs] == list(range(1, 9))


def test_job_key_is_stable_and_ignores_cosmetics(tmp_path):
    a = Manifest(write(tmp_path / "a.csv", f"name,model,prompt,reference_image_urls\nx,{R2V},hi,{IMG}\n"))
    b = Manifest(write(tmp_path / "b.csv", f"model,prompt,name,reference_image_urls,duration,resolution\n{R2V},hi,renamed,{IMG},8,480p\n"))
    ka, kb = next(a.expand()).key, next(b.expand()).key
    assert ka == kb  # same effective request: defaults spelled out, renamed, columns reordered
    c = Manifest(write(tmp_path / "c.csv", f"name,model,prompt,reference_image_urls,duration\nx,{R2V},hi,{IMG},7\n"))
    assert next(c.expand()).key != ka
    assert job_key({"model": "m"}, "1") != job_key({"model": "m"}, None)


def test_duplicates_need_takes(tmp_path):
    text = f"name,model,prompt,reference_image_urls,take\na,{R2V},hi,{IMG},\nb,{R2V},hi,{IMG},\n"
    m = Manifest(write(tmp_path / "d.csv", text))
    with pytest.raises(ManifestError) as ei:
        m.validate()
    assert "row 2" in str(ei.value) and "take" in str(ei.value)
    ok = Manifest(write(tmp_path / "e.csv", text.replace(",\nb", ",1\nb").rstrip(",\n") + ",2\n"))
    assert ok.validate() == 2


def test_all_errors_reported_at_once_with_file_row_and_field(tmp_path):
    p = write(tmp_path / "bad.csv", "\n".join([
        "name,model,prompt,reference_image_urls,duration,aspect_ratio",
        f"ok,{R2V},fine,{IMG},5,16:9",
        f"long,{R2V},{'x' * 5000},{IMG},5,16:9",
        f"dur,{R2V},fine,{IMG},11,16:9",
        f"ar,{R2V},fine,{IMG},5,21:9",
        f"noimg,{R2V},fine,,5,16:9",
        f"ref,{R2V},see @Image2,{IMG},5,16:9",
        "nomodel,,fine,,5,16:9",
    ]) + "\n")
    with pytest.raises(ManifestError) as ei:
        Manifest(p).validate()
    probs = ei.value.problems
    got = {(pr.where.split(" (")[0], pr.field) for pr in probs}
    assert got == {("row 2", "prompt"), ("row 3", "duration"), ("row 4", "aspect_ratio"),
                   ("row 5", "reference_image_urls"), ("row 6", "prompt"), ("row 7", "model")}
    assert all(pr.file == str(p) for pr in probs)
    assert "line 3" in str(ei.value)  # row 2 is on line 3


def test_yaml_errors_name_the_line(tmp_path):
    p = write(tmp_path / "m.yaml", f"defaults: {{model: {R2V}}}\njobs:\n  - prompt: a\n    reference_image_urls: [{IMG}]\n  - prompt: b\n    duration: 99\n    reference_image_urls: [{IMG}]\n")
    with pytest.raises(ManifestError) as ei:
        Manifest(p).validate()
    [pr] = ei.value.problems
    assert pr.where == "jobs[1] (line 5)" and pr.field == "duration"
    with pytest.raises(ManifestError, match="line 2"):
        Manifest(write(tmp_path / "s.yaml", "jobs:\n\t- a\n")).validate()
    with pytest.raises(ManifestError, match="unknown top-level key"):
        Manifest(write(tmp_path / "t.yaml", "jobz: []\n"))


def test_typo_is_an_error_unknown_field_a_warning_unknown_model_only_when_declared(tmp_path):
    with pytest.raises(ManifestError, match="did you mean 'aspect_ratio'"):
        Manifest(write(tmp_path / "a.csv", f"model,prompt,reference_image_urls,aspect_ration\n{R2V},x,{IMG},9:16\n")).validate()
    m = Manifest(write(tmp_path / "b.csv", f"model,prompt,reference_image_urls,notes\n{R2V},x,{IMG},for the client\n"))
    assert m.validate() == 1 and any("notes" in w and "row 1 (line 2)" in w for w in m.warnings)
    # an unknown model is an error (with a did-you-mean), unless the manifest declares it
    with pytest.raises(ManifestError, match="unknown model 'grok-imagine-refrence-to-video'; did you mean "
                                            "'grok-imagine-reference-to-video'"):
        Manifest(write(tmp_path / "typo.csv", f"model,prompt,reference_image_urls\ngrok-imagine-refrence-to-video,x,{IMG}\n")).validate()
    write(tmp_path / "c.csv", "model,prompt,seed\nwan-2.6-reference-to-video,hello,42\n")
    u = Manifest(write(tmp_path / "c.yaml", "unvalidated_models: [wan-2.6-reference-to-video]\nrows: c.csv\n"))
    [job] = list(u.expand())
    assert job.request == {"model": "wan-2.6-reference-to-video", "prompt": "hello", "seed": "42"}
    assert any("wan-2.6" in w for w in u.warnings)
    # listing a catalog model there sends it unchecked too (the user said so)
    write(tmp_path / "v.csv", "model,prompt,seed\nveo-3.1,hello,42\n")
    v = Manifest(write(tmp_path / "v.yaml", "unvalidated_models: [veo-3.1]\nrows: v.csv\n"))
    assert [j.request for j in v.expand()] == [{"model": "veo-3.1", "prompt": "hello", "seed": "42"}]
    with pytest.raises(ManifestError, match="not a field of grok-imagine-edit-video"):
        Manifest(write(tmp_path / "d.csv", "model,prompt,video_url,duration\ngrok-imagine-edit-video,x,https://v/a.mp4,5\n")).validate()


def test_template_errors(tmp_path):
    with pytest.raises(ManifestError, match=r"\{missing\}"):
        Manifest(write(tmp_path / "a.csv", f"model,prompt,reference_image_urls\n{R2V},a {{missing}},{IMG}\n")).validate()
    with pytest.raises(ManifestError, match="bad template placeholder"):
        Manifest(write(tmp_path / "b.csv", f"model,prompt,reference_image_urls\n{R2V},{{prompt.__class__}},{IMG}\n")).validate()


# ------------------------------------------------------------------ hostile input
def test_alias_bomb_is_rejected_quickly(tmp_path):
    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    t = time.process_time()  # CPU, not wall: the bound is on the work, not on a busy machine
    with pytest.raises(ManifestError, match="aliases"):
        Manifest(write(tmp_path / "bomb.yaml", bomb))
    assert time.process_time() - t < 5


def test_huge_yaml_is_rejected_without_reading_it(tmp_path):
    p = tmp_path / "huge.yaml"
    with open(p, "wb") as f:
        f.truncate(100 * 1024 * 1024)
    with pytest.raises(ManifestError, match="limited to"):
        Manifest(p)


def test_overlong_csv_line_is_rejected(tmp_path):
    p = tmp_path / "long.csv"
    p.write_text("model,prompt\nx," + "a" * (2 * 1024 * 1024) + "\n")
    with pytest.raises(ManifestError, match="longer than"):
        Manifest(p).validate()


@pytest.mark.parametrize("template", ["../{name}.mp4", "/etc/{name}.mp4", "a/../../b.mp4", "{name}", "NUL.mp4",
                                      ".hidden.mp4", "a//b.mp4", "C:/x.mp4"])
def test_output_names_cannot_escape(template):
    with pytest.raises(ValueError):
        safe_output_name(template, {"name": "clip"})


def test_hostile_values_are_sanitised_in_names(tmp_path):
    assert safe_output_name("{name}.mp4", {"name": "../../etc/passwd"}) == "etc_passwd.mp4"
    assert safe_output_name("{name}.mp4", {"name": "a\x00b"}) == "a_b.mp4"
    assert len(safe_output_name("{name}.mp4", {"name": "x" * 300})) <= 90
    m = Manifest(write(tmp_path / "h.yaml", f'defaults: {{model: {R2V}}}\noutput: "../{{name}}.mp4"\njobs:\n  - {{name: a, prompt: x, reference_image_urls: [{IMG}]}}\n'))
    with pytest.raises(ManifestError) as ei:
        m.validate()
    assert ei.value.problems[0].field == "output"


def test_csv_formula_cells_are_just_text(tmp_path):
    m = Manifest(write(tmp_path / "f.csv", f'name,model,prompt,reference_image_urls\n"=HYPERLINK(""x"")",{R2V},=1+1 @Image1,{IMG}\n'))
    [job] = list(m.expand())
    m.check()
    assert job.request["prompt"] == "=1+1 @Image1"
    assert job.output == "HYPERLINK_x.mp4"


def test_expansion_streams(tmp_path):
    p = write_big = tmp_path / "big.csv"
    with open(write_big, "w") as f:
        f.write("name,model,prompt\n")
        for i in range(20000):
            f.write(f"n{i},grok-imagine-text-to-video,clip {i}\n")
    m = Manifest(p)
    it = m.expand()
    first = next(it)
    assert first.name == "n0"
    assert sum(1 for _ in it) == 19999
    m.check()
