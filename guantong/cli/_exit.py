"""Exit codes of the ``guantong`` command, documented in docs/cli.md; scripts rely on them."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

import click

from guantong import _configfile

OK = 0
#: the input was read and found wrong: an invalid identifier, a config with errors
INVALID = 1
#: the command line itself was wrong (click's own code for usage errors)
USAGE = 2
#: a server or device the command needs could not be reached
UNAVAILABLE = 3
#: ``evidence verify --strict``: nothing failed, but something could not be checked
UNCHECKED = 4
#: stopped by SIGINT
INTERRUPTED = 130


def load_or_exit(path: str, kind: str) -> Any:
    """The config file ``path`` of ``kind``; on errors print each one and exit ``INVALID``."""
    try:
        return _configfile.load(path, kind)
    except _configfile.ConfigFileError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        sys.exit(INVALID)


def config_option(help_text: str, *, exists: bool = True) -> Any:
    """The ``-c/--config FILE`` option of a command that loads one config file."""
    return click.option(
        "-c",
        "--config",
        "config_file",
        required=True,
        type=click.Path(dir_okay=False, exists=exists),
        help=help_text,
    )


class _Server(Protocol):
    def stop(self) -> None: ...
    async def wait(self) -> None: ...


S = TypeVar("S", bound=_Server)


async def serve_until_signal(
    server: AbstractAsyncContextManager[S], banner: Callable[[S], str]
) -> None:
    """Run ``server`` (a service with ``stop`` and ``wait``) until SIGINT or SIGTERM stops it,
    after saying ``banner(server)`` on stderr."""
    async with server as running:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, running.stop)
        click.echo(banner(running), err=True)
        await running.wait()
