"""``guantong ingest``: migrate the store and run the single-node ingest."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys

import click
import psycopg

from guantong.cli import _exit
from ingest import ConsumerError, Ingest, MigrationError, migrate

logger = logging.getLogger(__name__)

_CONFIG = _exit.config_option("The ingest config file (kind: ingest).")


@click.group("ingest")
def group() -> None:
    """Verify gateways' envelopes from MQTT and store them in PostgreSQL."""


@group.command("migrate")
@_CONFIG
def migrate_cmd(config_file: str) -> None:
    """Create or upgrade the ingest schema (also done by 'run'); print what was applied."""
    config = _exit.load_or_exit(config_file, "ingest")
    db = config.database
    try:
        applied = migrate(db.dsn, compress_after=db.compress_after)
    except MigrationError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(_exit.INVALID)
    except psycopg.OperationalError as exc:
        click.echo(f"error: database: {exc}", err=True)
        sys.exit(_exit.UNAVAILABLE)
    click.echo(json.dumps({"applied": applied}))


@group.command("run")
@_CONFIG
def run(config_file: str) -> None:
    """Consume, verify and store until SIGTERM or SIGINT.

    A message is acknowledged to the broker only after its rows are committed; on a stop the
    batch being written is finished and the rest stays with the broker for the next start.
    """
    config = _exit.load_or_exit(config_file, "ingest")

    async def work() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with Ingest(config) as running:
            click.echo(f"ingest running from {config.mqtt.broker}; SIGTERM or Ctrl-C stops it",
                       err=True)  # fmt: skip
            stopped = asyncio.create_task(stop.wait())
            pipeline = asyncio.create_task(running.wait())
            await asyncio.wait({stopped, pipeline}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if pipeline.done():
                pipeline.result()
            pipeline.cancel()
        logger.info("ingest stopped")

    try:
        asyncio.run(work())
    except (MigrationError, ConsumerError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(_exit.INVALID)
    except psycopg.OperationalError as exc:
        click.echo(f"error: database: {exc}", err=True)
        sys.exit(_exit.UNAVAILABLE)
