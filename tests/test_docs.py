"""The documentation site (docs/, mkdocs.yml) builds in strict mode — a broken link or anchor, a
page left out of the nav, any warning fails — and says what the code does: every click command
and option in the CLI reference, every exit code in the runbook, every model of the catalog on
the catalog page; README stays the short front door and agrees with `batchgen run --help`."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from batchgen import errors
from batchgen.cli import EXIT_CODES_HELP, cli
from batchgen.specs import Catalog
from conftest import ARTIFACTS

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    # The mkdocs 2.0 announcement banners are not warnings about this site.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true", "NO_COLOR": "1"}
    p = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                        "--site-dir", str(out)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    log = p.stdout + p.stderr
    assert p.returncode == 0, f"mkdocs build --strict failed:\n{log}"
    warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    assert not warnings, "\n".join(warnings)
    assert (out / "index.html").is_file()
    return out


def _page(site: Path, name: str) -> str:
    return (site / name / "index.html").read_text(encoding="utf-8")


def _text(page: str) -> str:
    """A page's text without tags, entities decoded (what a reader sees, roughly)."""
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def _commands(cmd: click.Command, path: str = "batchgen") -> list[tuple[str, click.Command]]:
    out = [(path, cmd)]
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            out += _commands(cmd.commands[name], f"{path} {name}")
    return out


def _readme_exit_codes() -> dict[int, str]:
    rows = re.findall(r"^\| *(\d+) *\| *(.+?) *\|", README.read_text(encoding="utf-8"), flags=re.M)
    return {int(code): meaning for code, meaning in rows}


def _help_exit_codes() -> set[int]:
    return {int(c) for c in re.findall(r"^ *(\d+) +\S", EXIT_CODES_HELP, flags=re.M)}


def _exit_constants() -> set[int]:
    return {v for k, v in vars(errors).items() if k.startswith("EXIT_") and isinstance(v, int)}


@pytest.mark.slow
def test_site_builds_strict_with_every_page(site: Path) -> None:
    cfg = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))

    def pages(nav: list) -> list[str]:
        out: list[str] = []
        for item in nav:
            for v in item.values():
                out += pages(v) if isinstance(v, list) else [v]
        return out

    for md in pages(cfg["nav"]):
        built = site / ("index.html" if md == "index.md" else md.removesuffix(".md") + "/index.html")
        assert built.is_file(), md
    assert "Where to find what" in _text(_page(site, "."))


@pytest.mark.slow
def test_cli_reference_has_every_command_and_option(site: Path) -> None:
    page = _page(site, "cli")
    text = _text(page)
    for path, cmd in _commands(cli):
        anchor = path.replace(" ", "-")
        assert f'id="{anchor}"' in page, f"{path} has no section in the CLI reference"
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden:
                for opt in p.opts + p.secondary_opts:
                    assert opt in text, f"{path} {opt} is missing from the CLI reference"
    # the epilog of `run --help` (mkdocs-click leaves epilogs out; docs/_gen/cli_epilogs.py adds them)
    assert 'id="exit-codes"' in page
    for code in _help_exit_codes():
        assert re.search(rf"^\s*{code}\s+\S", text, flags=re.M), f"exit code {code} missing from the CLI reference"


@pytest.mark.slow
def test_runbook_says_what_to_do_for_every_exit_code(site: Path) -> None:
    page = _page(site, "runbook")
    for code in sorted(_exit_constants() | set(errors.EXIT_MEANINGS)):
        assert f'id="exit-{code}"' in page, f"exit code {code} has no section in the runbook"
        assert f'href="#exit-{code}"' in page, f"exit code {code} is not in the runbook's table"


def test_readme_run_help_and_the_code_agree_on_exit_codes() -> None:
    readme = _readme_exit_codes()
    assert set(readme) == _help_exit_codes() == set(errors.EXIT_MEANINGS) == _exit_constants(), (
        f"README {sorted(readme)}, run --help {sorted(_help_exit_codes())}, errors.py {sorted(_exit_constants())}")
    help_text = CliRunner().invoke(cli, ["run", "--help"], terminal_width=120).output
    for code in readme:
        assert re.search(rf"^\s*{code}\s+\S", help_text, flags=re.M), f"`batchgen run --help` lacks exit code {code}"


@pytest.mark.slow
def test_catalog_page_has_every_model_field_and_provenance(site: Path) -> None:
    page = _page(site, "catalog")
    text = _text(page)
    raw = yaml.safe_load(resources.files("batchgen").joinpath("models.yaml").read_text(encoding="utf-8"))
    models = Catalog.shipped().models
    assert len(models) > 5
    for name, spec in models.items():
        section = page.split(f'id="{name.replace(".", "")}"', 1)
        assert len(section) == 2, f"{name} has no section on the catalog page"
        body = _text(section[1].split("<h2", 1)[0])
        for field in spec.fields:
            assert field in body, f"{name}.{field} missing from the catalog page"
        for f in spec.fields.values():
            if f.default is not None:
                assert str(f.default).lower() in body.lower(), f"{name}: default {f.default} not shown"
        # provenance keys (doc, sources, read_on, …): every text in them is on the page
        for key, value in (raw.get(name) or {}).items():
            if key in ("fields", "rules", "refs", "output_seconds", "duration_tolerance", "audio", "aspect_field",
                       "open"):
                continue
            for leaf in _leaves(value):
                assert leaf in body, f"{name}: {key} {leaf!r} missing from the catalog page"
    assert "Model catalog" in text


def _leaves(v: object) -> list[str]:
    if isinstance(v, dict):
        return [str(k) for k in v] + [x for item in v.values() for x in _leaves(item)]
    if isinstance(v, list):
        return [x for item in v for x in _leaves(item)]
    return [str(v)]


@pytest.mark.slow
def test_users_meet_the_simulate_ledger_and_the_main_guard(site: Path) -> None:
    start = _text(_page(site, "getting-started"))
    assert "batchgen-sim.db" in start and "--ledger batchgen-sim.db" in start
    python = _text(_page(site, "python"))
    assert 'if __name__ == "__main__":' in python
    assert "if __name__" in start  # pointed at from getting started too


def test_readme_is_the_front_door() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200, "README is the front door: keep it short, move detail to docs/"
    command_2 = ("python3.11 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/python -m pytest")
    assert "python3.11 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/batchgen demo" in text
    assert command_2 in text
    assert command_2 in (ROOT / ".ci" / "run").read_text(encoding="utf-8")  # CI runs command 2 verbatim
    for target in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / target).is_file(), f"README links to {target}, which does not exist"


@pytest.mark.slow
@pytest.mark.chromium
def test_docs_home_renders_in_headless_chromium(site: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is required in CI (.ci/run installs it)")
        pytest.skip("chromium not installed")
    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    url = (site / "index.html").as_uri()
    dom = subprocess.run([*base, f"--user-data-dir={tmp_path / 'c1'}", "--dump-dom", "--virtual-time-budget=3000", url],
                         capture_output=True, text=True, timeout=120).stdout
    assert "md-nav" in dom and "Nightly runbook" in dom and "Where to find what" in dom
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "docs-home.png"
    shot.unlink(missing_ok=True)
    subprocess.run([*base, f"--user-data-dir={tmp_path / 'c2'}", f"--screenshot={shot}", "--window-size=1280,1000",
                    "--hide-scrollbars", url], capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
