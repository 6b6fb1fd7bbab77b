"""Build-time addition to docs/cli.md, run by mkdocs-gen-files: the epilog of every command
(`batchgen run --help` ends with the exit codes), which mkdocs-click does not render. Taken
from the click commands themselves, so the page says exactly what `--help` says."""

from __future__ import annotations

import inspect

import click
import mkdocs_gen_files

from batchgen.cli import cli


def _walk(cmd: click.Command, path: str) -> list[tuple[str, click.Command]]:
    out = [(path, cmd)]
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            out += _walk(cmd.commands[name], f"{path} {name}")
    return out


lines = []
for path, cmd in _walk(cli, "batchgen"):
    if not cmd.epilog:
        continue
    text = "\n".join(line for line in inspect.cleandoc(cmd.epilog).splitlines() if line.strip() != "\b")
    title = text.splitlines()[0].rstrip(":") if text.splitlines()[0].endswith(":") else f"{path}: more"
    body = "\n".join(text.splitlines()[1:]) if text.splitlines()[0].endswith(":") else text
    anchor = "exit-codes" if title.lower() == "exit codes" else path.replace(" ", "-") + "-epilog"
    lines += [f"## {title} {{#{anchor}}}", "", f"The end of `{path} --help`:", "", "```text", body, "```", ""]

with mkdocs_gen_files.open("cli.md", "a") as f:
    f.write("\n" + "\n".join(lines))
