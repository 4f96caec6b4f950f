"""``guantong gateway``: create a gateway's identity and run it."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

import click

from gateway import protocol
from gateway._keys import KeyFileError, create_key
from gateway._runtime import GatewayError, running
from gateway.config import GatewayConfig
from guantong.cli import _exit
from guantong.cli import identifiers as identifiers_cmd

logger = logging.getLogger(__name__)

_CONFIG = _exit.config_option("The gateway config file (kind: gateway).")


@click.group("gateway")
def group() -> None:
    """Create the gateway's identity, and run it next to the machines."""


@group.command("init")
@_CONFIG
@click.option(
    "--node",
    help="Also register the gateway and its devices with this identifier node "
    "(as 'guantong identifiers register' does).",
)
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def init(ctx: click.Context, config_file: str, node: str | None, token_file: Path | None) -> None:
    """Create the gateway's Ed25519 key (mode 0600) at the config's key_file.

    Prints the gateway identifier, the public key as it goes into the identifier record
    (HS_PUBKEY) and its fingerprint. An existing key is never overwritten.
    """
    config = _exit.load_or_exit(config_file, "gateway")
    try:
        key = create_key(config.gateway.key_file)
    except KeyFileError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(_exit.INVALID)
    public = protocol.public_key_bytes(key)
    click.echo(
        json.dumps(
            {
                "gateway": config.gateway.id,
                "key_file": str(config.gateway.key_file),
                "public_key": public.hex(),
                "fingerprint": protocol.fingerprint(public),
            },
            ensure_ascii=False,
        )
    )
    if node is None:
        click.echo(
            f"next: guantong identifiers register -c {config_file} --node URL --token-file FILE",
            err=True,
        )
        return
    ctx.invoke(
        identifiers_cmd.register,
        config_file=config_file,
        node=node,
        token_file=token_file,
        evidence_url=None,
    )


@group.command("run")
@_CONFIG
@click.option(
    "--drain-timeout",
    default=5.0,
    show_default=True,
    help="Seconds a stop waits for the outbox to be delivered (the rest stays on disk).",
)
def run(config_file: str, drain_timeout: float) -> None:
    """Read the devices and publish signed envelopes until SIGTERM or SIGINT.

    A stop commits every sample read, lets the uplink deliver for --drain-timeout seconds,
    publishes the offline status and exits 0. What was not delivered is sent after the next
    start.
    """
    try:
        asyncio.run(_run(_exit.load_or_exit(config_file, "gateway"), drain_timeout))
    except GatewayError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(_exit.INVALID)


async def _run(config: GatewayConfig, drain_timeout: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gateway_run = running(config, drain_timeout=drain_timeout)
    del config  # the only other reference: the device models go (83 MB for 100,000 tags)
    async with gateway_run as gateway:
        click.echo(f"gateway {gateway.id} running; SIGTERM or Ctrl-C stops it", err=True)
        await stop.wait()
    logger.info("gateway %s stopped", gateway.id)
