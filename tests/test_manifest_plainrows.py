"""Plain rows (issue 21) take a shorter path through expansion (``manifest/plainrows.py``) and
``plan`` works out each distinct request's cost once (``cost.Costs``): neither may change
anything a user sees. Every manifest here is expanded both ways, with the short path and with
every row sent the general way, and must give the same jobs (every field), the same problems
in the same order and the same warnings."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from batchgen import modelspec, names
from batchgen.cost import Costs, PriceTable
from batchgen.errors import ManifestError
from batchgen.manifest import Manifest, plainrows

T2V = "grok-imagine-text-to-video"
R2V = "grok-imagine-reference-to-video"
I2V = "grok-imagine-image-to-video"


def expansion(path: Path, plain: bool) -> tuple[dict[str, Any], int]:
    """Everything an expansion shows, and how many shapes took the short path."""
    m = Manifest(path)
    builder = m._expander.builder
    builder.plain.enabled = builder.plain.enabled and plain
    jobs = [dataclasses.asdict(j) for j in m.expand()]
    try:
        m.check()
        error = None
    except ManifestError as e:
        error = str(e)
    seen = {"jobs": jobs, "problems": list(m.problems), "truncated": m.truncated, "warnings": m.warnings,
            "local_files": m.local_files, "error": error}
    return seen, sum(1 for s in builder.plain._shapes.values() if s is not None)


def assert_same(path: Path) -> int:
    fast, shapes = expansion(path, True)
    slow, none = expansion(path, False)
    assert none == 0
    assert fast == slow
    return shapes


NAMES = ["clip1", "a", "Z9", "con", "CON", "con.x", "Nul.mp4", "com1", "COM10", "lpt9", "aux1", "Café", "e\u0301",
         "a b", "_x", "x_", ".x", "x.", "-x", "x-", "x..y", "a.b.c", "a" * 79, "a" * 80, "a" * 81, "a" * 200, "海边",
         "x/y", "x\\y", "{prompt}", "{nope}", " spaced ", "tab\there", "1", "00", "dup"]
MODELS = [T2V, R2V, I2V, f"  {T2V} ", "veo-3.1", "sora-2", "sora-2-character", "seedance-2.0-text-to-video",
          "grok-imagine-text-to-vide", "not-a-model", "{kind}"]
PROMPTS = ["a lighthouse", "a {kind} at dusk", "@Image1 waves", "@Image2 waves", "  ", "dup", "x" * 70, "{{braces}}"]
DURATIONS = ["1", "6", "15", "16", "auto", "-1", "x", "6.0", "0", "+3"]
MEDIA = ["https://a.example/x.png", "./local.png", "missing.png", "../x.png", "local.txt", "ftp://a.example/x.png"]
COLUMNS = {"name": NAMES, "model": MODELS, "prompt": PROMPTS, "duration": DURATIONS,
           "resolution": ["480p", "720p", "8k"], "aspect_ratio": ["16:9", "9:16", "3:2"], "take": ["1", "2", "{name}"],
           "image_url": MEDIA, "reference_image_urls": MEDIA, "notes": ["n", "{name}"], "kind": ["ship", "{kind}"],
           "seed": ["1", "x"], "output": ["{name}-o.mp4", "o.mp4"], "durtion": ["5"],
           "generate_audio": ["true", "no"]}


def _csv(rows: list[list[str]]) -> str:
    return "\n".join(",".join(f'"{c}"' if ("," in c or '"' in c) else c for c in r) for r in rows) + "\n"


@st.composite
def manifests(draw: st.DrawFn) -> tuple[str, str | None]:
    """(a CSV of rows, a YAML naming it or None): mostly plain rows, some not, some repeated."""
    cols = draw(st.lists(st.sampled_from(sorted(COLUMNS)), min_size=1, max_size=6, unique=True))
    if draw(st.integers(0, 3)):
        cols = ["name", "model", "prompt", *[c for c in cols if c not in ("name", "model", "prompt")]]
    body = [cols]
    plain = {"name": st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True), "model": st.just(T2V),
             "prompt": st.sampled_from(["a lighthouse", "a ship"]), "duration": st.sampled_from(["1", "6", "10"])}
    for _ in range(draw(st.integers(0, 12))):
        cells = []
        for c in cols:
            if c in plain and draw(st.integers(0, 2)):
                cells.append(draw(plain[c]))
            elif draw(st.integers(0, 5)) == 0:
                cells.append("")  # an empty cell: another shape
            else:
                cells.append(draw(st.sampled_from(COLUMNS[c])))
        body.append(cells)
        if draw(st.integers(0, 5)) == 0:
            body.append(list(cells))  # the identical row again
    csv = _csv(body)
    if draw(st.booleans()):
        return csv, None
    lines = []
    if draw(st.booleans()):
        lines.append("defaults:")
        for k, v in draw(st.dictionaries(st.sampled_from(["model", "resolution", "duration", "notes", "prompt",
                                                          "generate_audio", "image_url", "aspect_ratio", "seed"]),
                                         st.sampled_from(["720p", "480p", "6", T2V, R2V, "'{name}'", "'{name} x'", "x",
                                                          "true", "https://a.example/d.png", "16:9", "null", "7"]),
                                         max_size=3)).items():
            lines.append(f"  {k}: {v}")
    if draw(st.integers(0, 3)) == 0:
        lines.append(f"per_model:\n  {draw(st.sampled_from([T2V, R2V]))}:\n    resolution: 480p")
    if draw(st.integers(0, 3)) == 0:
        lines.append(f"unvalidated_models: [{draw(st.sampled_from([T2V, 'not-a-model', 'sora-2']))}]")
    if draw(st.integers(0, 3)) == 0:
        lines.append(f"output: '{draw(st.sampled_from(['{name}.mp4', '{name}-{seq}.mp4', 'x.mp4']))}'")
    if draw(st.integers(0, 5)) == 0:
        lines.append("matrix:\n  aspect_ratio: ['16:9', '9:16']")
    if draw(st.integers(0, 2)) == 0:
        lines.append("jobs:")
        for _ in range(draw(st.integers(1, 3))):
            name = draw(st.sampled_from(["j1", "dup", "con", "1", "Café", "[a, b]", "5", "true"]))
            prompt = draw(st.sampled_from(["a ship", "[x, y]", "7", "null", "'{name} x'"]))
            lines.append(f"  - {{name: {name}, model: {T2V}, prompt: {prompt}}}")
    lines.append("rows: rows.csv")
    return csv, "\n".join(lines) + "\n"


def _write(tmp: Path, csv: str, yaml: str | None) -> Path:
    (tmp / "local.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp / "local.txt").write_text("not media")
    (tmp / "rows.csv").write_text(csv, encoding="utf-8")
    if yaml is None:
        return tmp / "rows.csv"
    (tmp / "m.yaml").write_text(yaml, encoding="utf-8")
    return tmp / "m.yaml"


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(doc=manifests())
def test_varied_manifests_expand_the_same_both_ways(tmp_path_factory: pytest.TempPathFactory,
                                                    doc: tuple[str, str | None]) -> None:
    assert_same(_write(tmp_path_factory.mktemp("m"), *doc))


def test_plain_rows_take_the_short_path_and_match(tmp_path: Path) -> None:
    rows = [["name", "model", "prompt", "duration", "resolution"]]
    rows += [[f"clip{i}", T2V, f"shot {i}", str(1 + i % 15), "720p" if i % 3 else ""] for i in range(300)]
    rows += [["clip7", T2V, "again", "3", ""], ["other", T2V, "shot 9", "10", ""],  # name clash, same request
             ["con", T2V, "reserved", "2", ""], ["Café", T2V, "accent", "2", ""], ["", T2V, "unnamed", "2", ""],
             ["late", T2V, "bad", "99", ""], ["aux", T2V, "x", "x", "8k"]]
    path = _write(tmp_path, _csv(rows), "defaults: {aspect_ratio: '9:16'}\nrows: rows.csv\n")
    assert assert_same(path) == 3  # with and without `resolution`, and without `name`
    fast, _ = expansion(path, True)
    # con_, Café and job00305 survive; the clash, the duplicate and the two bad rows do not
    assert len(fast["jobs"]) == 300 + 3
    assert {j["output"] for j in fast["jobs"]} >= {"clip0.mp4", "con_.mp4", "Café.mp4"}
    assert fast["jobs"][0]["source"] == "rows.csv row 1 (line 2)"
    assert {p.where for p in fast["problems"]} == {"row 301 (line 302)", "row 302 (line 303)",
                                                  "row 306 (line 307)", "row 307 (line 308)"}


def test_local_files_of_plain_rows_become_uploads_the_same_way(tmp_path: Path) -> None:
    rows = [["name", "model", "prompt", "image_url", "reference_image_urls"],
            ["a", I2V, "x", "./local.png", ""], ["b", I2V, "y", "https://a.example/x.png", ""],
            ["c", I2V, "z", "missing.png", ""], ["d", R2V, "@Image1 w", "", "local.png"],
            ["e", I2V, "v", "local.txt", ""]]
    path = _write(tmp_path, _csv(rows), None)
    assert assert_same(path) == 2
    fast, _ = expansion(path, True)
    assert len(fast["local_files"]) == 1
    assert [j["request"].get("image_url", "")[:7] for j in fast["jobs"]] == ["upload:", "https:/", ""]
    assert [(p.where, p.field) for p in fast["problems"]] == [("row 3 (line 4)", "image_url"),
                                                             ("row 5 (line 6)", "image_url")]


def test_rows_that_are_not_plain_take_the_general_path(tmp_path: Path) -> None:
    rows = [["name", "model", "prompt", "notes"], ["a", T2V, "x {notes}", "n"], ["b", T2V, "y", "typo?"]]
    path = _write(tmp_path, _csv(rows), None)
    assert assert_same(path) == 0  # `notes` is not a request field: every shape holding it is general
    rows = [["name", "model", "duration"], ["a", T2V, "3"], ["b", T2V, "4"]]
    path = _write(tmp_path, _csv(rows), "defaults: {prompt: '{name} at dusk'}\nrows: rows.csv\n")
    assert assert_same(path) == 0  # a template in `defaults` is rendered for every row
    assert [j["request"]["prompt"] for j in expansion(path, True)[0]["jobs"]] == ["a at dusk", "b at dusk"]
    rows = [["name", "model", "prompt"], ["a", T2V, "x"], ["b", R2V, "@Image1 x"], ["c", "sora-2-character", "x"]]
    # An `output:` template names the files through the general code; the rows stay plain,
    # but a model whose request has a `name` (sora-2-character) is never plain.
    assert assert_same(_write(tmp_path, _csv(rows), "output: '{name}-{key}.mp4'\nrows: rows.csv\n")) == 2


@pytest.mark.parametrize("name", [*NAMES, "a.mp4", "x" * 78 + ".z", "LPT1.tar", "CONSOLE", "prn."])
def test_output_name_of_plain_names_is_what_the_template_renders(name: str) -> None:
    fast = plainrows.output_name(name)
    if fast is not None:
        assert (fast, False) == names.render_output_name("{name}.mp4", {"name": name}.get)


@given(name=st.text(alphabet="aZ09._-\u00e9CcOoNnLlPpTtUuXx1 /", max_size=90))
def test_output_name_never_differs_from_the_template(name: str) -> None:
    fast = plainrows.output_name(name)
    try:
        slow: tuple[str, bool] | None = names.render_output_name("{name}.mp4", {"name": name}.get)
    except ValueError:
        slow = None
    if fast is not None:
        assert (fast, False) == slow


def test_costs_are_those_of_the_price_table() -> None:
    table = PriceTable.load()
    costs = Costs(table)
    requests: list[dict[str, Any]] = []
    for model in (T2V, "veo-3.1", "grok-imagine-edit-video", "unpriced-model"):
        for res in ("720p", "480p", None, 720, "absent"):
            for d in (1, 6, True, 6.0, -0.0, "auto", -1, None, [6], "absent", float("nan")):
                req: dict[str, Any] = {"model": model}
                if res != "absent":
                    req["resolution"] = res
                if d != "absent":
                    req["duration"] = d
                requests.append(req)
    for _ in range(2):  # the second round is answered from the memo
        for req in requests:
            got = costs.of(req)
            want = (table.seconds(req), table.estimate(req))
            assert repr(got) == repr(want), req  # repr: -0.0 and nan compare as themselves


# ----------------------------------------------------------------------------- reference-to-video rows
# The seed's model: a list of reference images in one cell ("a|b"), @ImageN in the prompt naming
# one of them. The short path makes these requests itself (plainrequest.RequestMaker) and hands
# anything it would have to say to the general path.
URL = "https://cdn.example.com/r/{}.png"
REF_CELLS = [URL.format(1), f"{URL.format(1)}|{URL.format(2)}", "|".join(URL.format(i) for i in range(7)),
             "|".join(URL.format(i) for i in range(8)),  # one too many
             f" {URL.format(1)} | {URL.format(2)} ", f"{URL.format(1)}||{URL.format(2)}|", "|", " | ",
             f"{URL.format(1)},{URL.format(2)}", "https://cdn.example.com/a,b.png", "https://x.example/w_1,h_2/a.png",
             "ftp://cdn.example.com/a.png", "https://", "https:///a.png", "http://a", "HTTPS://A.EXAMPLE/x.png",
             "https://a.example/x y.png", "https://a.example/\u00e9.png", "./local.png", "local.png|" + URL.format(1),
             URL.format(1) + "|local.png", "missing.png", "upload:sha256:" + "0" * 64, "upload:sha256:xyz", "  ",
             "https://a.example/x.png\u00a0", "\u2003https://a.example/x.png"]
REF_PROMPTS = ["@Image1 at dusk", "@Image2 and @Image1", "@Image7 waves", "@Image8 waves", "@Image0 x", "@Image01 y",
               "no reference", "@image1 lower case", "@Image", "@Image1@Image2", "x" * 4096, "x" * 4097, "  ", "é @Image1"]


def _r2v_rows(n: int) -> list[list[str]]:
    rows = [["name", "model", "prompt", "reference_image_urls", "duration", "aspect_ratio", "resolution"]]
    for i in range(n):
        rows.append([f"clip{i}", R2V, REF_PROMPTS[i % len(REF_PROMPTS)], REF_CELLS[i % len(REF_CELLS)],
                     ["1", "8", "10", "11", "", "x", " 5 ", "6.0"][i % 8], ["16:9", "9:16", "", "21:9"][i % 4],
                     ["480p", "720p", "", "1080p"][i % 4]])
    return rows


def test_reference_rows_expand_the_same_both_ways(tmp_path: Path) -> None:
    rows = _r2v_rows(len(REF_CELLS) * len(REF_PROMPTS))
    rows += [list(rows[1]), ["dup", *rows[2][1:]], [""] * 7, ["blank", R2V, "@Image1 x", "", "", "", ""],
             ["clip1", R2V, "@Image1 other", URL.format(9), "", "", ""]]  # same request twice; same name twice
    path = _write(tmp_path, _csv(rows), None)
    assert assert_same(path) > 1
    fast, _ = expansion(path, True)
    assert len(fast["jobs"]) > 50 and len(fast["problems"]) > 50  # both kinds, many times
    assert any(j["request"]["reference_image_urls"] == [URL.format(1), URL.format(2)] for j in fast["jobs"])
    assert fast["local_files"]  # ./local.png became an upload on both ways
    fields = {p.field for p in fast["problems"]}
    assert {"reference_image_urls", "prompt", "duration", "aspect_ratio", "resolution", None} <= fields


def test_a_reference_row_without_a_model_is_the_same_problem_both_ways(tmp_path: Path) -> None:
    """A row whose model cell is empty, with no default: the short path hands it over, the
    general one names the missing model (a case the slow lane's varied manifests also draw)."""
    rows = _r2v_rows(2) + [["nomodel", "", "@Image1 x", URL.format(1), "8", "16:9", "720p"]]
    path = _write(tmp_path, _csv(rows), None)
    assert assert_same(path) >= 1
    fast, _ = expansion(path, True)
    assert [j["name"] for j in fast["jobs"]] == ["clip0", "clip1"]
    assert [p.field for p in fast["problems"]] == ["model"]


def test_reference_rows_with_defaults_and_yaml_jobs(tmp_path: Path) -> None:
    rows = [["name", "prompt", "reference_image_urls"], ["a", "@Image1 x", URL.format(1)],
            ["b", "@Image2 x", URL.format(1)], ["c", "@Image1 x", ""], ["d", "@Image1 y", f"{URL.format(1)}|{URL.format(3)}"]]
    yaml = (f"defaults: {{model: {R2V}, resolution: 720p, reference_image_urls: ['{URL.format(5)}']}}\n"
            "jobs:\n"
            f"  - {{name: y1, prompt: '@Image2 z', reference_image_urls: ['{URL.format(1)}', '{URL.format(2)}']}}\n"
            f"  - {{name: y2, prompt: '@Image1 z', reference_image_urls: []}}\n"
            f"  - {{name: y3, prompt: '@Image1 z', reference_image_urls: '{URL.format(1)}|{URL.format(2)}'}}\n"
            f"  - {{name: y4, prompt: '@Image1 z', reference_image_urls: [' {URL.format(1)} ', local.png]}}\n"
            "rows: rows.csv\n")
    path = _write(tmp_path, _csv(rows), yaml)
    assert assert_same(path) >= 2
    fast, _ = expansion(path, True)
    # y2: an empty list leaves a required field unset; b: @Image2 of one image
    assert [j["name"] for j in fast["jobs"]] == ["y1", "y3", "y4", "a", "c", "d"]
    assert fast["jobs"][4]["request"]["reference_image_urls"] == [URL.format(5)]  # c: the default list


VEO_R2V = "veo-3.1-fast-reference-to-video"


@pytest.mark.parametrize("extra", ["", "output: '{name}-{model}-{duration}.mp4'\n", "output: '{name}.mp4'\n",
                                   "defaults: {resolution: 720p, aspect_ratio: '9:16'}\n",
                                   f"per_model: {{{VEO_R2V}: {{generate_audio: true}}}}\n"])
def test_a_two_model_matrix_expands_the_same_both_ways(tmp_path: Path, extra: str) -> None:
    rows = [["name", "prompt", "reference_image_urls", "duration"]]
    rows += [[f"s{i}", f"@Image1 shot {i}", "|".join(URL.format(j) for j in range(1 + i % 4)), str(1 + i % 11)]
             for i in range(120)]
    rows += [["s3", "@Image2 again", URL.format(1), "8"], ["clash", "x", URL.format(2), "3"]]
    yaml = f"matrix:\n  model: [{R2V}, {VEO_R2V}]\n{extra}rows: rows.csv\n"
    path = _write(tmp_path, _csv(rows), yaml)
    shapes = assert_same(path)
    # per_model fields take the general path for that model; the other is plain
    assert shapes == (1 if "per_model" in extra else 2)
    fast, _ = expansion(path, True)
    assert fast["problems"]  # veo takes 8 s, 3 images at most; @Image2 of one image; names may clash
    assert {j["model"] for j in fast["jobs"]} == ({R2V} if extra == "output: '{name}.mp4'\n" else {R2V, VEO_R2V})


def test_a_matrix_over_a_row_field_is_a_problem_both_ways(tmp_path: Path) -> None:
    rows = [["name", "model", "prompt", "duration"], ["a", T2V, "x", "3"], ["b", T2V, "y", ""]]
    path = _write(tmp_path, _csv(rows), "matrix: {duration: [2, 4], take: [1, 2]}\nrows: rows.csv\n")
    assert assert_same(path) == 1  # row b; row a sets duration too: the general path's problem
    fast, _ = expansion(path, True)
    assert [j["output"] for j in fast["jobs"]] == ["b-2-1.mp4", "b-2-2.mp4", "b-4-1.mp4", "b-4-2.mp4"]
    assert {(p.where, p.field) for p in fast["problems"]} == {("row 1 (line 2)", "duration")}


@st.composite
def reference_manifests(draw: st.DrawFn) -> tuple[str, str | None]:
    """Reference-to-video rows, mostly good, with every kind of cell the short path must either
    make exactly or hand over; sometimes under a two-model matrix or with defaults."""
    # The two free forms are the regular languages https?://[a-z,/ .|]{0,12} and
    # (@Image[0-9]{1,2} ?){0,3}[a-z ]{0,5}, built from text draws: st.from_regex draws them a
    # character at a time through filters, which was most of this test's CPU.
    lower = "abcdefghijklmnopqrstuvwxyz"
    item = st.one_of(st.sampled_from([URL.format(i) for i in range(9)]),
                     st.sampled_from(["local.png", "./local.png", "missing.png", "ftp://a.example/x", "https://",
                                      "https://a.example/a,b.png", "upload:sha256:" + "a" * 64, " ", ""]),
                     st.builds("http{}://{}".format, st.sampled_from(["", "s"]), st.text(lower + ",/ .|", max_size=12)))
    cell = st.lists(item, max_size=9).map(lambda xs: "|".join(xs))
    ref = st.builds("@Image{}{}".format, st.text("0123456789", min_size=1, max_size=2), st.sampled_from(["", " "]))
    prompt = st.one_of(st.sampled_from(REF_PROMPTS[:10]),
                       st.builds(lambda refs, tail: "".join(refs) + tail, st.lists(ref, max_size=3),
                                 st.text(lower + " ", max_size=5)))
    matrix = draw(st.integers(0, 3)) == 0
    cols = ["name", "prompt", "reference_image_urls", "duration", "aspect_ratio"] + ([] if matrix else ["model"])
    body = [cols]
    for i in range(draw(st.integers(1, 15))):
        cells = [draw(st.sampled_from([f"c{i}", "dup", ""])), draw(prompt), draw(cell),
                 draw(st.sampled_from(["", "3", "10", "11", "x"])), draw(st.sampled_from(["", "16:9", "5:4"]))]
        if not matrix:
            cells.append(draw(st.sampled_from([R2V, R2V, R2V, T2V, ""])))
        body.append(cells)
        if draw(st.integers(0, 6)) == 0:
            body.append(list(cells))
    lines = []
    if draw(st.booleans()):
        # A field no row sets is the default in every row of a shape (worked out once a shape).
        more = draw(st.sampled_from(["", ", duration: 8", ", duration: 9", ", duration: '8'", ", duration: true",
                                     ", aspect_ratio: '9:16'", f", reference_image_urls: ['{URL.format(1)}']"]))
        lines.append(f"defaults: {{model: {R2V}, resolution: {draw(st.sampled_from(['480p', '720p', '1080p']))}{more}}}")
    if matrix:
        lines.append(f"matrix:\n  model: [{R2V}, {draw(st.sampled_from([T2V, I2V, 'veo-3.1', VEO_R2V]))}]")
        output = draw(st.sampled_from([None, "{name}-{matrix}.mp4", "{name}-{model}.mp4", "{name}-{matrix}-{seq}.mp4"]))
        if output is not None:
            lines.append(f"output: '{output}'")
    if not lines and draw(st.booleans()):
        return _csv(body), None
    lines.append("rows: rows.csv")
    return _csv(body), "\n".join(lines) + "\n"


@pytest.mark.slow  # 5-9 s of CPU, like its sibling above; the fast lane keeps the fixed reference cases
@settings(max_examples=300, deadline=None)
@given(doc=reference_manifests())
def test_varied_reference_manifests_expand_the_same_both_ways(tmp_path_factory: pytest.TempPathFactory,
                                                              doc: tuple[str, str | None]) -> None:
    assert_same(_write(tmp_path_factory.mktemp("m"), *doc))


FIELD_SPECS = [modelspec.FieldSpec("urls", True, None, None, 1, 7), modelspec.FieldSpec("urls", False, None, None, None, 3),
               modelspec.FieldSpec("urls", False, None, None, 2, None), modelspec.FieldSpec("str", True, None, None, None, None, 10),
               modelspec.FieldSpec("str", False, None, None, None, None, 10), modelspec.FieldSpec("str", True, None, ("a", "b")),
               modelspec.FieldSpec("int", False, 6, None, 1, 15), modelspec.FieldSpec("url", True)]


@settings(max_examples=500, deadline=None)
@example(fs=FIELD_SPECS[3], cell=" ")
@example(fs=FIELD_SPECS[3], cell="\u2003")
@example(fs=FIELD_SPECS[4], cell=" ")
@example(fs=FIELD_SPECS[0], cell="https://a.example/x|https://b")
@example(fs=FIELD_SPECS[2], cell="https://a")
@given(fs=st.sampled_from(FIELD_SPECS),
       cell=st.one_of(st.lists(st.sampled_from(["https://a.example/x.png", "http://b", "https://", "ftp://c", " ", "",
                                                "https://a.example/x,y", "a.png", "\u00a0", "https://d.example/\u00e9",
                                                "upload:sha256:" + "a" * 64]), max_size=9).map(lambda xs: "|".join(xs)),
                      st.text(alphabet="ab |,:/hts.\u00a0\u2003\t", max_size=14)))
def test_quick_value_is_what_coerce_and_check_make(fs: modelspec.FieldSpec, cell: str) -> None:
    for quick in (modelspec.quick_value(fs, cell), modelspec.quick_value(fs, cell, GOOD_URLS)):
        if quick is not None:  # with URLs remembered across examples too
            value = modelspec.coerce(fs, cell)
            assert modelspec.check_value(fs, value) is None
            assert quick == value and type(quick) is type(value)


GOOD_URLS: set[str] = set()


def test_rules_and_empty_lists_of_plain_rows_are_worded_by_the_general_path(tmp_path: Path) -> None:
    """Cross-field rules (an error, a warning), ``[]`` meaning "not set", and a list field:
    what the short path hands over must come back the same."""
    img = "https://a.example/i.png"
    rows = [["name", "model", "prompt", "generation_type", "image_urls"],
            ["t", "veo-3.1", "x", "text-to-video", ""], ["i", "veo-3.1", "y", "image-to-video", img],
            ["i0", "veo-3.1", "z", "image-to-video", ""], ["t1", "veo-3.1", "w", "text-to-video", img],
            ["r4", "veo-3.1", "v", "reference-to-video", "|".join([img] * 4)]]
    yaml = ("jobs:\n"
            "  - {name: s1, model: sora-2, prompt: a, image_urls: [], character_ids: []}\n"
            "  - {name: s2, model: sora-2, prompt: b, image_urls: ['https://a.example/j.png'], character_ids: [c1]}\n"
            f"  - {{name: k1, model: kling-o3-reference-to-video, prompt: '@Image1 c', image_urls: [{img}, {img}, {img}],"
            " elements: [e1, e2]}\n"
            f"  - {{name: k2, model: kling-o3-reference-to-video, prompt: '@Element2 d', image_urls: [{img}],"
            " elements: [e1]}\n"
            "rows: rows.csv\n")
    path = _write(tmp_path, _csv(rows), yaml)
    assert assert_same(path) >= 4
    fast, _ = expansion(path, True)
    assert [j["name"] for j in fast["jobs"]] == ["s1", "s2", "k1", "t", "i"]
    assert "image_urls" not in fast["jobs"][0]["request"] and "character_ids" not in fast["jobs"][0]["request"]
    assert fast["warnings"] and {p.field for p in fast["problems"]} == {"image_urls", "prompt"}


def test_a_list_in_a_request_is_never_shared_with_another_job(tmp_path: Path) -> None:
    cell = f"{URL.format(1)}|{URL.format(2)}"
    rows = [["name", "model", "prompt", "reference_image_urls"]] + [[f"c{i}", R2V, f"x{i}", cell] for i in range(3)]
    jobs = Manifest(_write(tmp_path, _csv(rows), None)).expand()
    first = next(jobs)
    first.request["reference_image_urls"].append("changed")  # a caller may edit what it was given
    assert [j.request["reference_image_urls"] for j in jobs] == [[URL.format(1), URL.format(2)]] * 2


def test_a_models_entry_reading_a_media_field_as_text_gets_it_localised(tmp_path: Path) -> None:
    """Only a field the entry reads as URLs may skip localising (its coercion strips each item):
    a field of another kind with a media field's name is sent as localising makes it."""
    rows = [["name", "model", "prompt", "image_url"], ["a", "my-model", "x", "https://a.example/x.png "]]
    yaml = ("models:\n  my-model:\n    output_seconds: 5\n    fields:\n      prompt: {type: text, required: true}\n"
            "      image_url: {type: text}\nrows: rows.csv\n")
    path = _write(tmp_path, _csv(rows), yaml)
    assert assert_same(path) == 1
    assert expansion(path, True)[0]["jobs"][0]["request"]["image_url"] == "https://a.example/x.png"


@example(name="con", matrix="x")
@example(name="x", matrix="nul")
@example(name="a" * 80, matrix="b" * 80)
@given(name=st.text(alphabet="aZ09._-\u00e9CcOoNnLlPpTtUuXx1 /", max_size=90),
       matrix=st.text(alphabet="aZ09._-:\u00e9CcOoNnLlPpTtUuXx1 /", max_size=90))
def test_matrix_output_name_never_differs_from_the_template(name: str, matrix: str) -> None:
    fast = plainrows.output_name(name, matrix)
    try:
        slow: tuple[str, bool] | None = names.render_output_name(plainrows.MATRIX_OUTPUT,
                                                                 {"name": name, "matrix": matrix}.get)
    except ValueError:
        slow = None
    if fast is not None:
        assert (fast, False) == slow


def test_repeating_cells_of_yaml_jobs_are_never_confused(tmp_path: Path) -> None:
    """The short path looks up a row's repeating cells (duration, ratio, resolution) together
    (``plainrequest._Settled``): a YAML 1 and True are equal keys but not equal cells, a list
    or a mapping is no key at all, and a value made from a number is not one made from text."""
    ref = URL.format(1)
    jobs = "".join(f"  - {{name: y{i}, prompt: '@Image1 z{i}', reference_image_urls: ['{ref}'], duration: {d}, "
                   f"aspect_ratio: {a}}}\n"
                   for i, (d, a) in enumerate([("1", "'16:9'"), ("true", "'16:9'"), ("'1'", "'16:9'"), ("1", "'16:9'"),
                                               ("[1]", "'16:9'"), ("{a: 1}", "'16:9'"), ("1.0", "'16:9'"),
                                               ("8", "[x]"), ("8", "'9:16'"), ("8", "'9:16'"), ("' 8 '", "'9:16'")]))
    path = tmp_path / "m.yaml"
    path.write_text(f"defaults: {{model: {R2V}}}\njobs:\n{jobs}")
    assert assert_same(path) >= 1
    fast, _ = expansion(path, True)
    durations = {j["name"]: j["request"]["duration"] for j in fast["jobs"]}
    assert durations["y0"] == durations["y2"] == durations["y3"] == 1 and "y1" not in durations
    assert "y4" not in durations and "y5" not in durations and "y7" not in durations


def test_wide_rows_with_blank_cells_and_result_columns_read_the_same(tmp_path: Path) -> None:
    """The CSV reader keeps a row whole in one C call when no cell is blank: a row with an
    empty or a whitespace-only cell, and a results CSV's ignored columns, still drop them."""
    from batchgen.manifest.csvreader import csv_rows
    from batchgen.manifest.problems import Problems

    path = tmp_path / "rows.csv"
    path.write_text("name,prompt,duration,job_key,state\na,x,1,k,done\nb, ,2,k,done\nc,y,\t,,\nd,z,3,k,\n")
    rows = list(csv_rows(path, Problems(str(path))))
    assert [r.values for r in rows] == [{"name": "a", "prompt": "x", "duration": "1"},
                                        {"name": "b", "duration": "2"}, {"name": "c", "prompt": "y"},
                                        {"name": "d", "prompt": "z", "duration": "3"}]
    plain = tmp_path / "plain.csv"
    plain.write_text("name,prompt,duration\na,x,1\nb, ,2\nc,y,\u3000\n")
    assert [r.values for r in csv_rows(plain, Problems(str(plain)))] == [
        {"name": "a", "prompt": "x", "duration": "1"}, {"name": "b", "duration": "2"}, {"name": "c", "prompt": "y"}]
