"""``guantong edge``: read devices straight from a gateway config, for technicians on site."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys

import click

from edge import Batch, ConnectivityEvent, Device, SampleStream
from edge._samples import format_ts
from edge.drivers import drivers_for
from gateway.config import GatewayConfig
from guantong import _configfile
from guantong.cli import _exit
from guantong.cli.discover import discover


@click.group("edge")
def group() -> None:
    """Read PLCs the way the gateway does."""


@group.command("read")
@click.option(
    "-c",
    "--config",
    "config_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="Gateway config file (kind: gateway).",
)
@click.option(
    "--device", "names", multiple=True, help="Read only this device (repeatable); default all."
)
@click.option(
    "--once", is_flag=True, help="Read every tag once and exit; else poll until interrupted."
)
def read(config_file: str, names: tuple[str, ...], once: bool) -> None:
    """Print one JSON line per sample: device, group, tag, value, quality, ts.

    Connectivity events go to stderr. With --once the exit code is 3 if a device could not be
    reached (its samples are printed as quality "bad").
    """
    try:
        config = _configfile.load(config_file, "gateway")
    except _configfile.ConfigFileError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        sys.exit(_exit.INVALID)
    assert isinstance(config, GatewayConfig)  # noqa: S101 - loaded as kind gateway
    devices = _select(config, names)
    try:
        code = asyncio.run(_read_once(devices) if once else _follow(devices))
    except KeyboardInterrupt:
        code = _exit.INTERRUPTED
    sys.exit(code)


group.add_command(discover)


def _select(config: GatewayConfig, names: tuple[str, ...]) -> list[Device]:
    known = {d.name: d for d in config.devices}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise click.BadParameter(
            f"no device {unknown[0]!r} in the config; it has {', '.join(known)}",
            param_hint="--device",
        )
    return [known[n] for n in names] if names else list(config.devices)


def _print(item: Batch | ConnectivityEvent) -> None:
    if isinstance(item, ConnectivityEvent):
        state = "up" if item.up else f"down: {item.reason}"
        click.echo(f"{format_ts(item.ts)} device {item.device!r} {state}", err=True)
        return
    lines = []
    for sample in item.samples:
        doc = {"device": item.device, "group": item.group, **sample.to_json()}
        lines.append(json.dumps(doc, ensure_ascii=False, allow_nan=False))
    if lines:
        click.echo("\n".join(lines))


async def _read_once(devices: list[Device]) -> int:
    drivers = drivers_for(devices)
    try:
        results = await asyncio.gather(*(driver.read_once() for driver in drivers))
    finally:
        for driver in drivers:
            if hasattr(driver, "close"):  # Modbus links stay open after read_once; OPC UA
                driver.close()  # sessions are closed by read_once itself
    for items in results:
        for item in items:
            _print(item)
    down = [r for driver in drivers for r in driver.readers if not r.up]
    return _exit.UNAVAILABLE if down else _exit.OK


async def _follow(devices: list[Device]) -> int:
    stream = SampleStream()
    async with contextlib.AsyncExitStack() as stack:
        for driver in drivers_for(devices, stream):
            await stack.enter_async_context(driver)
        async for item in stream:
            _print(item)
    return _exit.OK
