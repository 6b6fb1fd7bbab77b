"""Wide plain rows of the seed's model (issue 31, part 3), expanded both ways as in
``test_manifest_plainrows``: the short path takes a field every row of a shape leaves to
``defaults`` as worked out once, checks ``@ImageN`` by one pattern a list length, and names a
matrix's files from what it remembers of each combination and of the row before. Every job
(key, request, output name), problem (row, field, message) and warning must be the same as
the general path's."""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from batchgen import modelspec
from batchgen import specs as catalog
from batchgen.manifest import plainrequest
from test_manifest_plainrows import R2V, T2V, URL, VEO_R2V, _csv, _write, assert_same, expansion

ASPECTS = ["16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16"]


def _refs(i: int) -> str:
    return "|".join(URL.format((i * 7 + j * 13) % 40) for j in range(1 + i % 3))


def test_the_benchmarks_reference_rows_expand_the_same_both_ways(tmp_path: Path) -> None:
    """The million scenario's shape (bench/planbench.py): 1-3 images a row, an @ImageN in every
    prompt, duration, aspect ratio and resolution columns; with bad cells and repeats mixed in."""
    rows = [["name", "model", "prompt", "reference_image_urls", "duration", "aspect_ratio", "resolution"]]
    for i in range(400):
        k = 1 + i % 3
        rows.append([f"clip{i:06d}", R2V, f"@Image{k} beside @Image1: clip {i}", _refs(i), str(1 + i % 10),
                     ASPECTS[i % 7], "720p" if i % 2 else "480p"])
    bad = [["bad1", R2V, "@Image3 of two", _refs(1), "5", "16:9", "480p"],  # names no item
           ["bad2", R2V, "@Image01 x", _refs(0), "5", "16:9", "480p"],  # the general path reads it (accepted)
           ["bad3", R2V, "@Image12 x", _refs(0), "5", "16:9", "480p"],
           ["bad4", R2V, "@Image1 x", "ftp://a.example/x.png", "5", "16:9", "480p"],
           ["bad5", R2V, "@Image1 x", f"{URL.format(1)}|https://", "5", "16:9", "480p"],
           ["bad6", R2V, "@Image1 x", "|".join(URL.format(i) for i in range(8)), "5", "16:9", "480p"],
           ["bad7", R2V, "@Image1 x", _refs(0), "11", "21:9", "1080p"],
           ["bad8", R2V, "@Image\u0663 x", _refs(0), "5", "16:9", "480p"],  # an Arabic-Indic digit
           ["bad9", R2V, "@Image0 x", _refs(0), "5", "16:9", "480p"],
           ["clip000003", R2V, "@Image1 x", _refs(500), "5", "16:9", "480p"],  # a name already used
           list(rows[5]), ["again", *rows[6][1:]]]  # the identical request twice
    path = _write(tmp_path, _csv(rows + bad), None)
    assert assert_same(path) == 1
    fast, _ = expansion(path, True)
    assert len(fast["jobs"]) == 400 + 1  # bad2: "@Image01" names item 1
    assert [(p.where, p.field) for p in fast["problems"]] == [
        ("row 401 (line 402)", "prompt"), ("row 403 (line 404)", "prompt"), ("row 404 (line 405)", "reference_image_urls"),
        ("row 405 (line 406)", "reference_image_urls"), ("row 406 (line 407)", "reference_image_urls"),
        ("row 407 (line 408)", "duration"), ("row 407 (line 408)", "aspect_ratio"), ("row 407 (line 408)", "resolution"),
        ("row 408 (line 409)", "prompt"), ("row 409 (line 410)", "prompt"), ("row 410 (line 411)", "output"),
        ("row 411 (line 412)", None), ("row 412 (line 413)", None)]


@pytest.mark.parametrize("defaults", ["", "defaults: {duration: 8}\n", "defaults: {duration: '8'}\n",
                                      "defaults: {duration: 9}\n", "defaults: {duration: true}\n",
                                      "defaults: {duration: 8.0}\n", "defaults: {aspect_ratio: '4:3'}\n",
                                      "defaults: {aspect_ratio: '9:16', resolution: 720p}\n",
                                      f"defaults: {{reference_image_urls: ['{URL.format(1)}'], duration: 8}}\n",
                                      f"defaults: {{reference_image_urls: '{URL.format(1)}|{URL.format(2)}'}}\n",
                                      "defaults: {generate_audio: true}\n", "defaults: {resolution: 1080p}\n"])
def test_a_two_model_matrix_with_defaults_expands_the_same_both_ways(tmp_path: Path, defaults: str) -> None:
    """The benchmark's matrix: rows × {grok, veo} reference-to-video. A field every row leaves to
    ``defaults`` is worked out once a shape; one that a model refuses (veo takes 8 s only, grok
    no generate_audio, neither 1080p) sends every row of that shape to the general path."""
    rows = [["name", "prompt", "reference_image_urls", "aspect_ratio"]]
    rows += [[f"clip{i:06d}", f"@Image{1 + i % 3} beside @Image1: {i}", _refs(i), "16:9" if i % 2 else "9:16"]
             for i in range(150)]
    rows += [["s1", "@Image1 no images", "", "16:9"], ["s2", "@Image1 x", _refs(2), ""], ["clip000004", "x", _refs(9), "1:1"],
             ["s3", "@Image4 x", "|".join(URL.format(i) for i in range(4)), "16:9"]]  # veo: 3 images at most
    path = _write(tmp_path, _csv(rows), f"matrix:\n  model: [{R2V}, {VEO_R2V}]\n{defaults}rows: rows.csv\n")
    assert assert_same(path) >= 1
    fast, _ = expansion(path, True)
    assert fast["problems"]
    if defaults in ("", "defaults: {duration: 8}\n"):
        assert len(fast["jobs"]) >= 300 and fast["jobs"][0]["output"] == f"clip000000-{R2V}.mp4"


@pytest.mark.parametrize("matrix", [f"model: [{R2V}, {VEO_R2V}]", "aspect_ratio: ['16:9', '9:16']",
                                    f"model: [{R2V}]\n  duration: [8, '8', 4]",
                                    f"model: [{R2V}, {T2V}]\n  resolution: [480p, 720p]",
                                    "take: [1, 2, '{name}']", "output: [a.mp4, b.mp4]", "seed: [1]"])
@pytest.mark.parametrize("output", ["", "output: '{name}-{matrix}.mp4'\n", "output: '{name}-{seq}.mp4'\n"])
def test_matrix_file_names_of_plain_rows_are_the_general_paths(tmp_path: Path, matrix: str, output: str) -> None:
    """"{name}-{matrix}.mp4" made from each combination's remembered part: a value the file
    name does not keep as it is ("16:9"), several keys, a repeated or reserved name, a YAML name
    that is a number, a combination that holds a template or sets a row's field."""
    rows = [["name", "prompt", "reference_image_urls"], ["a", "@Image1 x", URL.format(1)], ["a", "@Image1 y", URL.format(2)],
            ["con", "@Image1 z", URL.format(3)], ["b.c", "@Image1 w", URL.format(4)], ["", "@Image1 v", URL.format(5)]]
    yaml = (f"defaults: {{model: {R2V}}}\nmatrix:\n  {matrix}\n{output}"
            "jobs:\n  - {name: 5, prompt: '@Image1 j', reference_image_urls: ['" + URL.format(6) + "']}\n"
            "  - {name: 5, prompt: '@Image1 k', reference_image_urls: ['" + URL.format(7) + "'], aspect_ratio: '1:1'}\n"
            "rows: rows.csv\n")
    path = _write(tmp_path, _csv(rows), yaml)
    assert_same(path)


def test_references_past_nine_items_are_read_the_same_both_ways(tmp_path: Path) -> None:
    """@Image10 of 12 images, @Image13 of 12, @Image010, @Image1 of 0 (a model of the manifest's
    own whose list may hold up to 20 items, or none)."""
    yaml = ("models:\n  many-refs:\n    output_seconds: 5\n    fields:\n"
            "      prompt: {type: text, required: true}\n      image_urls: {type: urls, min: 0, max: 20}\n"
            "    refs: {'@Image': image_urls}\nrows: rows.csv\n")
    rows = [["name", "model", "prompt", "image_urls"]]
    prompts = ["@Image10 x", "@Image12", "@Image13", "@Image010", "@Image1@Image11", "@Image2 and @Image20", "@Image",
               "@Image9 @Image1", "no refs", "@Image1"]
    for i, p in enumerate(prompts * 4):
        n = [12, 20, 9, 1][i // len(prompts)]
        rows.append([f"r{i}", "many-refs", p, "|".join(URL.format(j) for j in range(n))])
    rows.append(["none", "many-refs", "@Image1 of none", ""])
    path = _write(tmp_path, _csv(rows), yaml)
    assert assert_same(path) >= 1
    fast, _ = expansion(path, True)
    assert {p.field for p in fast["problems"]} == {"prompt"} and len(fast["jobs"]) > 20


@settings(max_examples=500, deadline=None)
@example(prompt="@Image1@Image2", n=2)
@example(prompt="@Image@Image1", n=1)
@example(prompt="@Image\u0663 x", n=3)
@example(prompt="@Image10", n=7)
@example(prompt="@Image7", n=7)
@example(prompt="@Image1\u0663", n=1)
@given(prompt=st.lists(st.sampled_from(["@Image", "@Image", "@Imag", "1", "2", "3", "7", "8", "0", "9", "\u0663", "\u00b2",
                                        " ", "x", "@"]), max_size=10).map("".join), n=st.integers(1, 7))
def test_a_prompts_references_are_read_as_the_pattern_reads_them(prompt: str, n: int) -> None:
    """``@ImageN`` is read by the pattern's search, bound once per list length
    (plainrequest.RequestMaker): a row is handed to the general path exactly when the pattern
    finds a reference naming no item of its list."""
    spec = catalog.SHIPPED.get(R2V)
    assert spec is not None
    maker = plainrequest.RequestMaker(R2V, spec, ("prompt", "reference_image_urls"))
    cell = "|".join(URL.format(i) for i in range(n))
    assert maker.request({"prompt": "x", "reference_image_urls": cell}) is not None  # the items are good
    made = maker.request({"prompt": prompt, "reference_image_urls": cell})
    named_none = plainrequest._BAD_REFS["@Image", n].search(prompt) is not None
    assert (made is None) == (named_none or not prompt.strip())


def test_urls_json_writes_with_escapes_or_in_another_case_expand_the_same(tmp_path: Path) -> None:
    """A list of URLs each already found good and written as they are is put in the request's
    JSON by one ``str.replace`` of its cell; a URL JSON escapes (a quote, a backslash, a control
    character) never is, however often it repeats, and a bad URL in the middle of a file, after
    its neighbours were remembered, is still named by its row and field."""
    odd = ['https://a.example/q"uote.png', "https://a.example/back\\slash.png", "https://a.example/c\x01trl.png",
           "HTTPS://A.EXAMPLE/X.PNG", "https://a.example/x.png", "https://a.example/%22.png", "https://a.example/\u00e9.png",
           "https://a.example/\x7f.png"]
    rows = [["name", "model", "prompt", "reference_image_urls", "duration"]]
    for i in range(60):
        cell = "|".join(odd[(i + j) % len(odd)] for j in range(1 + i % 3))
        rows.append([f"c{i}", R2V, f"@Image{1 + i % 3} at \"dusk\" \\ {i}", cell, str(1 + i % 10)])
        if i in (20, 40):  # bad ones in the middle, after every good URL was remembered
            rows.append([f"bad{i}", R2V, "@Image1 x", f"{odd[4]}|ftp://a.example/x.png", "3"])
            rows.append([f"bad{i}b", R2V, "@Image1 x", f"{odd[4]}|https://", "3"])
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)  # quotes doubled: _csv does not
    path = _write(tmp_path, text.getvalue(), None)
    assert assert_same(path) == 1
    fast, _ = expansion(path, True)
    upper = {f"c{i}" for i in range(60) if odd[3] in rows[1 + i + 2 * (i > 20) + 2 * (i > 40)][3]}
    assert upper and {j["name"] for j in fast["jobs"]} == {f"c{i}" for i in range(60)} - upper  # the scheme's case
    assert {(p.where, p.field) for p in fast["problems"] if "ftp:" in p.message or "'https://'" in p.message} == {
        ("row 22 (line 23)", "reference_image_urls"), ("row 23 (line 24)", "reference_image_urls"),
        ("row 44 (line 45)", "reference_image_urls"), ("row 45 (line 46)", "reference_image_urls")}
    assert any('q\\"uote' in j["request_json"] and "back\\\\slash" in j["request_json"] for j in fast["jobs"])


def test_each_place_of_a_list_is_read(tmp_path: Path) -> None:
    """A list's cell is read whole by one pattern (plainrequest._clean_urls): after other good
    URLs were met, a row whose list holds one that the pattern does not take (bad, JSON-escaped,
    with a comma, a space or a quote, non-ASCII, blank; plain http and a new URL are good) at any
    place of one, two, three or four items, or holds a good one twice, or none, or one too many,
    is the same job or problem both ways, named by its row and field."""
    good = [URL.format(i) for i in range(7)]
    odd = [URL.format(99), "ftp://cdn.example.com/a.png", "https://a.example/a,b.png", "https://a.example/x y.png",
           'https://a.example/q"uote.png', "https://a.example/\u00e9.png", "http://a.example/x.png", "https://",
           " ", ""]
    rows = [["name", "model", "prompt", "reference_image_urls"]]
    for i, url in enumerate(good):  # every good URL met and remembered first
        rows.append([f"seed{i}", R2V, f"@Image1 seed {i}", url])
    for n in (1, 2, 3, 4):
        for at in range(n):
            for k, url in enumerate(odd):
                cell = [good[(at + j) % len(good)] for j in range(n)]
                cell[at] = url
                rows.append([f"r{n}-{at}-{k}", R2V, f"@Image{n} of {n}", "|".join(cell)])
        rows.append([f"twice{n}", R2V, f"@Image1 twice {n}", "|".join([good[0]] * n)])
        rows.append([f"clean{n}", R2V, f"@Image{n} clean {n}", "|".join(good[:n])])
    rows.append(["none", R2V, "@Image1 x", ""])
    rows.append(["bars", R2V, "@Image1 x", "|"])
    rows.append(["many", R2V, "@Image1 x", "|".join(good + [good[0]])])  # eight: one too many
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    path = _write(tmp_path, text.getvalue(), None)
    assert assert_same(path) >= 1
    fast, _ = expansion(path, True)
    names = {j["name"] for j in fast["jobs"]}
    assert {f"clean{n}" for n in (1, 2, 3, 4)} | {f"twice{n}" for n in (1, 2, 3, 4)} <= names
    assert {f"r{n}-{at}-0" for n in (1, 2, 3, 4) for at in range(n)} <= names  # a new good URL
    assert not {f"r{n}-{at}-1" for n in (1, 2, 3, 4) for at in range(n)} & names  # ftp
    bad = {(p.where, p.field) for p in fast["problems"] if "ftp:" in p.message}
    assert len(bad) == 10 and {f for _, f in bad} == {"reference_image_urls"}
    assert any('q\\"uote' in j["request_json"] for j in fast["jobs"])


_CHARS = [chr(c) for c in range(0x80)] + ["\u00e9", "\u00a0", "\u2028", "\u3000", "\ud800", "\U0001f600"]


def _takes(cell: str) -> None:
    """What the short path's pattern takes of a urls cell, ``modelspec.quick_value`` takes too,
    as the same items, each of which canonical JSON writes as it is."""
    if plainrequest._clean_urls(cell) is None:
        return
    fs = catalog.SHIPPED.get(R2V).fields["reference_image_urls"]  # type: ignore[union-attr]
    items = cell.split("|")
    assert modelspec._WEB_URLS.fullmatch(cell) is not None
    assert modelspec.quick_value(dataclasses.replace(fs, min=None, max=None), cell) == items
    assert all(plainrequest._quoted(u) == f'"{u}"' for u in items)


def test_the_url_pattern_takes_only_what_quick_value_takes_and_json_keeps() -> None:
    """Every character in every place of one and two items: the pattern takes a cell only when
    quick_value does (web URLs, "|"-joined, no whitespace or comma) and JSON writes each item
    as it is (no quote, backslash or control character); it takes the benchmark's cells."""
    taken = 0
    for c in _CHARS:
        for cell in (f"https://{c}", f"https://a{c}", f"https://a.example/{c}.png", f"http{c}://a", f"https:/{c}/a",
                     f"https://a|https://{c}b", f"https://a{c}|https://b", f"{c}https://a", f"https://a|{c}",
                     f"https://a{c}https://b"):
            _takes(cell)
            taken += plainrequest._clean_urls(cell) is not None
    assert taken > 300  # printable ASCII is taken in most places
    for i in range(60):
        assert plainrequest._clean_urls(_refs(i)) is not None
    for bad in ("https://a.example/x y.png", 'https://a.example/q"uote.png', "https://a.example/b\\s.png", "https://",
                "https:///a", "https://a|", "|https://a", "https://a||https://b", "ftp://a", "HTTPS://A", ""):
        assert plainrequest._clean_urls(bad) is None, bad


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["https://", "http://", "a", ".", "/", "|", ",", " ", '"', "\\", "\x01", "\x7f", "%",
                                 "\u00e9", ":", "~", "{", "}"]), max_size=12).map("".join))
def test_the_url_pattern_never_takes_a_cell_quick_value_refuses(cell: str) -> None:
    _takes(cell)
