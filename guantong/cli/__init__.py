"""The ``guantong`` command: one group per package, each in its own module here."""

from __future__ import annotations

import logging

import click

from guantong import __version__
from guantong.cli import config as config_cmd
from guantong.cli import demo as demo_cmd
from guantong.cli import edge as edge_cmd
from guantong.cli import evidence as evidence_cmd
from guantong.cli import gateway as gateway_cmd
from guantong.cli import identifiers as identifiers_cmd
from guantong.cli import ingest as ingest_cmd
from guantong.cli import sim as sim_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="guantong")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Guantong (贯通): collect PLC data and turn it into verifiable connectivity evidence.

    Exit codes: 0 success, 1 invalid input (bad identifier, config errors), 2 usage error,
    3 a needed server or device is unreachable, 130 interrupted.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


cli.add_command(config_cmd.group)
cli.add_command(demo_cmd.demo)
cli.add_command(edge_cmd.group)
cli.add_command(evidence_cmd.group)
cli.add_command(gateway_cmd.group)
cli.add_command(identifiers_cmd.group)
cli.add_command(ingest_cmd.group)
cli.add_command(sim_cmd.group)


def main() -> None:
    cli(prog_name="guantong")
