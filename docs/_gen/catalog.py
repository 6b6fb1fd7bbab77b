"""Build-time generator of the model catalog page (docs/catalog.md), run by mkdocs-gen-files.

The page is made from the shipped ``batchgen/models.yaml`` on every build, so it cannot drift
from what ``batchgen models`` prints and what a run validates: the models and their rules come
from ``batchgen.operations.models`` (the same data as ``batchgen models --json``), the fields as
written in the YAML (the vocabulary a ``--models`` file uses), and any other key an entry has
(``doc``, ``sources``, ``read_on``, …: where the entry was read) is shown as its provenance.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import mkdocs_gen_files
import yaml

from batchgen import operations

# Keys of an entry that describe the request (rendered as fields and rules); every other key
# is provenance and is rendered as such, whatever a later catalog adds.
_SPEC_KEYS = {"fields", "rules", "refs", "output_seconds", "duration_tolerance", "audio", "aspect_field", "open",
              "typical_render_s"}


def _cell(v: Any) -> str:
    """A value as table-safe inline code (pipes would split the Markdown table)."""
    if v is None:
        return ""
    if isinstance(v, bool):
        v = str(v).lower()
    return "`" + str(v).replace("|", "\\|") + "`"


def _link_or_text(v: Any) -> str:
    s = str(v)
    if s.startswith(("http://", "https://")):
        return f"<{s}>"
    return s.replace("|", "\\|")


def _provenance(value: Any) -> list[str]:
    """Markdown lines for one provenance value: a URL, text, a list or a mapping of them."""
    if isinstance(value, dict):
        return [f"    - {k}: {_link_or_text(v) if not isinstance(v, (list, dict)) else _inline(v)}"
                for k, v in value.items()]
    if isinstance(value, list):
        return [f"    - {_inline(item)}" for item in value]
    return [f"    - {_link_or_text(value)}"]


def _inline(v: Any) -> str:
    if isinstance(v, dict):
        return "; ".join(f"{k}: {_inline(x)}" for k, x in v.items())
    if isinstance(v, list):
        return ", ".join(_inline(x) for x in v)
    return _link_or_text(v)


def _allowed(spec: dict[str, Any]) -> str:
    if spec.get("choices") is not None:
        return ", ".join(_cell(c) for c in spec["choices"])
    lo, hi = spec.get("min"), spec.get("max")
    if lo is None and hi is None:
        return ""
    unit = " items" if spec.get("type") in ("urls", "list") else ""
    if lo is not None and hi is not None:
        return f"{lo}–{hi}{unit}"
    return f"≥ {lo}{unit}" if lo is not None else f"≤ {hi}{unit}"


def _notes(spec: dict[str, Any]) -> str:
    bits = []
    if spec.get("max_len") is not None:
        bits.append(f"≤ {spec['max_len']} characters")
    if spec.get("auto") is not None:
        bits.append(f"{_cell(spec['auto'])} = the model decides")
    return "; ".join(bits)


def _output(doc: dict[str, Any]) -> str:
    o = doc["output_seconds"]
    if o == "duration":
        return "as long as `duration`"
    if o == "input":
        return "follows the input video"
    return f"{o} s"


def _audio(doc: dict[str, Any]) -> str:
    a = doc["audio"]
    return {True: "yes", False: "no", None: "not documented"}.get(a, f"when `{a}` is true")


def render() -> str:
    raw = yaml.safe_load(resources.files("batchgen").joinpath("models.yaml").read_text(encoding="utf-8"))
    docs = operations.models(operations.catalog(None))
    out = [
        "# Model catalog",
        "",
        "Every model batchgen validates, generated from the shipped `batchgen/models.yaml` when this",
        "site is built: the same data `batchgen models` prints (`--json` for scripts). How to read",
        "an entry, and how to add or replace one with `--models FILE`, is on [Models](models.md).",
        "",
        "| model | output | audio | open | fields | typical render (guess) |",
        "|---|---|---|---|---|---|",
    ]
    for d in docs:
        out.append(f"| [`{d['model']}`](#{d['model'].replace('.', '')}) | {_output(d)} | {_audio(d)} | "
                   f"{'yes' if d['open'] else 'no'} | {len(d['fields'])} | "
                   f"{'' if d.get('typical_render_s') is None else format(d['typical_render_s'], 'g') + ' s'} |")
    out += ["", "*Open*: a field the entry does not list is sent as written, with a warning, instead of",
            "refused (the provider's page names optional fields that could not be read).",
            "*Typical render*: what `plan`'s forecast assumes for a model the ledger has never seen rendered,",
            "and says so (a guess); foxapi states no generation time, so each value is a labelled guess",
            "whose source is the family's comment in `batchgen/models.yaml`.", ""]
    for d in docs:
        name = d["model"]
        entry = raw.get(name) or {}
        out += [f"## {name} {{#{name.replace('.', '')}}}", ""]
        facts = [f"output {_output(d)}", f"audio: {_audio(d)}"]
        if d["open"]:
            facts.append("open: unlisted fields pass with a warning")
        if entry.get("aspect_field", "aspect_ratio") != "aspect_ratio":
            facts.append(f"aspect ratio field: `{entry['aspect_field']}`")
        if entry.get("duration_tolerance"):
            facts.append(f"duration tolerance: {entry['duration_tolerance']} s")
        if d.get("typical_render_s"):
            facts.append(f"typical render {d['typical_render_s']:g} s (a labelled guess: `plan`'s forecast for a "
                         "model never rendered here; the YAML comment says its source)")
        line = "; ".join(facts)
        out += [line[0].upper() + line[1:] + ".", ""]
        out += ["| field | type | required | default | allowed values | notes |",
                "|---|---|---|---|---|---|"]
        for fname, spec in (entry.get("fields") or {}).items():
            spec = spec or {}
            out.append(f"| `{fname}` | {spec.get('type', '')} | {'yes' if spec.get('required') else ''} | "
                       f"{_cell(spec.get('default'))} | {_allowed(spec)} | {_notes(spec)} |")
        out.append("")
        if d["rules"]:
            out += ["Rules:", ""] + ["- " + r.replace("|", "\\|") for r in d["rules"]] + [""]
        prov = {k: v for k, v in entry.items() if k not in _SPEC_KEYS}
        if prov:
            out += ["Provenance:", ""]
            for k, v in prov.items():
                label = {"doc": "provider's page", "sources": "sources", "read_on": "read on"}.get(k, k)
                out.append(f"- {label}:")
                out += _provenance(v)
            out.append("")
    return "\n".join(out) + "\n"


with mkdocs_gen_files.open("catalog.md", "w") as f:
    f.write(render())
