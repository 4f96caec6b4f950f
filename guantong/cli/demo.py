"""``guantong demo``: see a simulated factory's data flow, signed and verified, in one command."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from guantong import _demo
from guantong.cli import _exit

ROOT = Path(__file__).resolve().parents[2]


@click.command("demo")
@click.option(
    "-c",
    "--factory",
    "factory_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=ROOT / "configs" / "factory.demo.yaml",
    show_default="configs/factory.demo.yaml",
    help="The simulated factory to run.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var/demo"),
    show_default=True,
    help="Where the demo keeps the gateway key, outbox, configs and the broker log.",
)
@click.option("--duration", type=float, help="Stop after this many seconds (default: Ctrl-C).")
def demo(factory_file: Path, workdir: Path, duration: float | None) -> None:
    """Run the demo factory's PLC simulators, a broker, the gateway and a verifier.

    Every envelope the gateway publishes is checked against the gateway's public key and the
    chain, as a platform checks it; a status line shows what flows.
    """
    tty = sys.stderr.isatty()

    def status(line: str) -> None:
        click.echo(("\r" + line + "\x1b[K") if tty else line, err=True, nl=not tty)

    try:
        check = asyncio.run(
            _demo.run_demo(
                factory_file,
                workdir,
                duration=duration,
                say=lambda text: click.echo(text, err=True),
                status=status,
            )
        )
    except _demo.DemoError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(_exit.UNAVAILABLE)
    if tty:
        click.echo(err=True)
    click.echo(
        f"verified {check.samples} samples in {check.envelopes} envelopes from "
        f"{len(check.devices)} devices; {check.duplicates} duplicates, {check.rejected} "
        f"rejected, {check.gaps()} sequence numbers missing"
    )
