"""``guantong demo``: see a simulated factory's data flow into the platform's store."""

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
    help="Where the demo keeps its configs, the gateway key and outbox, logs and PostgreSQL.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0),
    help="Stop this many seconds after everything is up (default: at Ctrl-C).",
)
@click.option(
    "--size",
    type=click.IntRange(min=1),
    default=7,
    show_default=True,
    help="Machines in the factory; beyond those of the factory file, generated Modbus "
    "machines are added.",
)
@click.option(
    "--format",
    "payload",
    type=click.Choice(["json", "sparkplug"]),
    default="json",
    show_default=True,
    help="Wire format of the gateway's envelopes.",
)
@click.option(
    "--database",
    envvar="GUANTONG_DEMO_DSN",
    help="DSN of a running PostgreSQL database to use (env GUANTONG_DEMO_DSN); "
    "default: a cluster of the demo's own under --workdir.",
)
@click.option(
    "--broker",
    type=click.Choice(["auto", "mosquitto", "embedded"]),
    default="auto",
    show_default=True,
    help="MQTT broker: Mosquitto (MQTT 5), or the embedded amqtt (MQTT 3.1.1, sessions in "
    "memory only; for a machine without Mosquitto); auto: Mosquitto when installed.",
)
def demo(
    *,
    factory_file: Path,
    workdir: Path,
    duration: float | None,
    size: int,
    payload: str,
    database: str | None,
    broker: str,
) -> None:
    """Run a simulated factory and the platform: PostgreSQL, MQTT broker, identifier node,
    ingest, PLC simulators and the registered gateway.

    Every envelope the gateway publishes is verified by ingest against the key registered on
    the identifier node and stored; a status line shows what flows.
    """
    tty = sys.stderr.isatty()

    def status(line: str) -> None:
        click.echo(("\r" + line + "\x1b[K") if tty else line, err=True, nl=not tty)

    try:
        summary = asyncio.run(
            _demo.run_demo(
                factory_file,
                workdir,
                duration=duration,
                size=size,
                payload=payload,
                database=database,
                broker=broker,
                say=lambda text: click.echo(("\n" if tty else "") + text, err=True),
                status=status,
            )
        )
    except _demo.DemoError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(_exit.UNAVAILABLE)
    if tty:
        click.echo(err=True)
    if summary is not None:
        click.echo(str(summary))
