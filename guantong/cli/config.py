"""``guantong config``: validate config files, print their JSON Schema and reference."""

from __future__ import annotations

import json
import sys

import click

from guantong import _configfile, _reference
from guantong.cli import _exit


@click.group("config")
def group() -> None:
    """Check config files and show what they may contain."""


@group.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--kind", help="Config kind, when the file has no 'kind' field.")
def check(files: tuple[str, ...], kind: str | None) -> None:
    """Validate FILES; print every error with file, line, device and tag; exit 1 on any."""
    failed = False
    for file in files:
        try:
            _configfile.load(file, kind)
        except _configfile.ConfigFileError as exc:
            failed = True
            for problem in exc.problems:
                click.echo(f"error: {problem}", err=True)
            continue
        click.echo(f"ok: {file}")
    sys.exit(_exit.INVALID if failed else _exit.OK)


@group.command("schema")
@click.argument("kind", type=click.Choice(sorted(_configfile.KINDS)))
def schema(kind: str) -> None:
    """Print the JSON Schema of config KIND."""
    click.echo(
        json.dumps(_configfile.KINDS[kind].model_json_schema(), indent=2, ensure_ascii=False)
    )


@group.command("reference")
def reference_cmd() -> None:
    """Print the configuration reference of every kind (docs/configuration.md) as Markdown."""
    click.echo(_reference.reference(), nl=False)
