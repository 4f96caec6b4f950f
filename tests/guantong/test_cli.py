"""The ``guantong`` command tree: every command answers --help, and --version is the package's."""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from guantong import __version__
from guantong.cli import cli


def all_commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        if isinstance(command, click.Group):
            found += all_commands(command, (*path, name))
        else:
            found.append((*path, name))
    return found


def test_every_command_has_help() -> None:
    commands = all_commands(cli)
    assert ("config", "check") in commands
    assert ("identifiers", "parse") in commands
    runner = CliRunner()
    for path in commands:
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage: " in result.output
        short = runner.invoke(cli, [*path, "-h"])
        assert short.output == result.output


def test_version_and_usage_errors() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "guantong", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout == f"guantong, version {__version__}\n"
    bad = subprocess.run(
        [sys.executable, "-m", "guantong", "no-such-command"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "No such command 'no-such-command'" in bad.stderr
