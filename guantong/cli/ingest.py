"""``guantong ingest``: migrate the store, run the single-node ingest, or scale out on Kafka."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import click
import psycopg

from guantong.cli import _exit
from ingest import Bridge, ConsumerError, Ingest, MigrationError, SourceUnavailable, migrate

logger = logging.getLogger(__name__)

_CONFIG = _exit.config_option("The ingest config file (kind: ingest).")


@click.group("ingest")
def group() -> None:
    """Verify gateways' envelopes from MQTT (or Kafka) and store them in PostgreSQL."""


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
    _serve(lambda: Ingest(config), f"ingest running from {config.mqtt.broker}")


@group.command("sink")
@_exit.config_option("The sink config file (kind: ingest-sink).")
def sink(config_file: str) -> None:
    """Verify and store envelopes from a Kafka consumer group until SIGTERM or SIGINT.

    Offsets are committed only after the database commit; several sinks of one group share
    the topic's partitions (docs/kafka.md).
    """
    config = _exit.load_or_exit(config_file, "ingest-sink")
    k = config.kafka
    _serve(lambda: Ingest(config), f"sink running from kafka topic {k.topic}, group {k.group}")


@group.command("bridge")
@_exit.config_option("The bridge config file (kind: ingest-bridge).")
def bridge(config_file: str) -> None:
    """Forward envelopes from an MQTT shared subscription to Kafka until SIGTERM or SIGINT.

    An MQTT message is acknowledged only after Kafka has stored its record.
    """
    config = _exit.load_or_exit(config_file, "ingest-bridge")
    banner = f"bridge running from {config.mqtt.broker} to kafka topic {config.kafka.topic}"
    _serve(lambda: Bridge(config), banner)


def _serve(service: Callable[[], AbstractAsyncContextManager[Any]], banner: str) -> None:
    """Run ``service()`` (an Ingest or a Bridge, made in the event loop that runs it: aiokafka
    clients must be) until a signal, or until it fails."""

    async def work() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with service() as running:
            click.echo(f"{banner}; SIGTERM or Ctrl-C stops it", err=True)
            stopped = asyncio.create_task(stop.wait())
            pipeline = asyncio.create_task(running.wait())
            await asyncio.wait({stopped, pipeline}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if pipeline.done():
                pipeline.result()
            pipeline.cancel()
        logger.info("stopped")

    try:
        asyncio.run(work())
    except (MigrationError, ConsumerError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(_exit.INVALID)
    except SourceUnavailable as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(_exit.UNAVAILABLE)
    except psycopg.OperationalError as exc:
        click.echo(f"error: database: {exc}", err=True)
        sys.exit(_exit.UNAVAILABLE)
