"""The simulator on the command line: ``batchgen simulator`` (serve the fake foxapi until
interrupted) and ``batchgen demo`` (the example manifest against the embedded simulator), and
``parse_sets``, the typed reading of ``KEY=VALUE`` knobs ``run --sim-set`` shares. The
simulator and the runner load inside the commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from .. import logs
from ..errors import UsageError
from .handler import Command, echo_err
from .printers import print_result


def parse_sets(values: tuple[str, ...]) -> dict[str, Any]:
    """``--sim-set KEY=VALUE`` items as the simulator's typed knobs: every wrong one is named
    (knob, value, the type it takes) before anything starts."""
    import typing

    from ..simulator import SimConfig

    types = typing.get_type_hints(SimConfig)
    out: dict[str, Any] = {}
    problems: list[str] = []
    for item in values:
        k, sep, v = item.partition("=")
        if not sep or k not in types:
            problems.append(f"{item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(types))}")
            continue
        want = types[k]
        allowed = typing.get_args(want) or (want,)  # float | None → (float, NoneType)
        if v.lower() in ("none", "null") and type(None) in allowed:
            out[k] = None
            continue
        try:
            value = json.loads(v)
        except ValueError:
            value = v
        if str in allowed and not isinstance(value, str):
            value = v
        if float in allowed and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, tuple(t for t in allowed if t is not type(None))) or \
                (isinstance(value, bool) and bool not in allowed):
            names = " or ".join("none" if t is type(None) else t.__name__ for t in allowed)
            problems.append(f"{k}={v!r}: {k} takes {names}")
            continue
        out[k] = value
    if problems:
        raise click.BadParameter("; ".join(problems), param_hint="'--sim-set'")
    return out


@click.command(cls=Command)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8787, show_default=True, help="0 picks a free port.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Simulator knob, e.g. --set p429=0.1 --set render_min=0.5 (repeatable).")
def simulator(host: str, port: int, sets: tuple[str, ...]) -> None:
    """Run the foxapi simulator until interrupted. Prints its base URL on stdout.

    Ground truth (every create accepted, file hashes) is at GET /_sim/ground-truth; knobs
    can be changed at run time with POST /_sim/config."""
    from ..runner import serve_simulator
    from ..simulator import SimConfig

    def ready(url: str) -> None:
        click.echo(url)
        sys.stdout.flush()

    serve_simulator(SimConfig(**parse_sets(sets)), host, port, on_ready=ready)


@click.command(cls=Command)
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-out"),
              show_default=True, help="Directory for the demo's videos, ledger, results.csv and report.html.")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Default: manifests/example.yaml.")
def demo(out_dir: Path, manifest: Path | None) -> None:
    """Run the example manifest against the embedded simulator: real files, ledger, results CSV."""
    from ..runner import demo as run_demo

    logs.setup()
    manifest = manifest or _example_manifest()
    echo_err(f"demo: {manifest} → {out_dir}/ (simulated API, nothing is billed)")
    result, paths = run_demo(manifest, out_dir)
    print_result(result, False)
    echo_err(f"demo: {paths['videos']} video(s) in {out_dir / 'videos'}, {paths['rows']} row(s) in "
             f"{paths['csv']}, report {paths['report']}, ledger {paths['ledger']}")
    sys.exit(result.exit_code)


def _example_manifest() -> Path:
    # batchgen/cli/sim.py → the checkout (or the current folder) holds manifests/example.yaml
    for base in (Path.cwd(), Path(__file__).resolve().parent.parent.parent):
        p = base / "manifests" / "example.yaml"
        if p.is_file():
            return p
    raise UsageError("manifests/example.yaml not found; pass --manifest")
