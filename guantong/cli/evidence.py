"""``guantong evidence``: serve the evidence API and web page; make access tokens."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import sys

import click
import yaml

import evidence
import identifiers
from guantong.cli import _exit


@click.group("evidence")
def group() -> None:
    """Evidence of firms' data connectivity for the SME digitalization assessment."""


@group.command("serve")
@_exit.config_option("The evidence config file (kind: evidence).")
def serve(config_file: str) -> None:
    """Serve the API and the web page of CONFIG until SIGINT/SIGTERM."""
    config: evidence.EvidenceConfig = _exit.load_or_exit(config_file, "evidence")

    async def work() -> None:
        async with evidence.Service(config) as service:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, service.stop)
            click.echo(f"evidence API and web page on {service.url}", err=True)
            await service.wait()

    try:
        asyncio.run(work())
    except OSError as exc:
        click.echo(f"error: {exc}", err=True)
        # a file the config names cannot be read (invalid input), or the port is taken
        sys.exit(_exit.INVALID if exc.filename else _exit.UNAVAILABLE)


@group.command("token")
@click.option("--name", required=True, help="Who holds it (shown in logs).")
@click.option(
    "--role", type=click.Choice(["admin", "provider", "evaluator"]), required=True,
    help="admin sees every firm; provider and evaluator see the firms given.",
)  # fmt: skip
@click.option("--firm", "firms", multiple=True, help="A firm it may see (repeatable).")
@click.option("--days", type=click.FloatRange(min=0.001), help="Valid for this many days.")
def token(name: str, role: str, firms: tuple[str, ...], days: float | None) -> None:
    """Print a new token's secret (stdout, once) and the config entry that admits it (stderr).

    The config holds only the secret's SHA-256: hand the secret to its holder and put the
    entry under ``tokens:`` in the evidence config.
    """
    if (role == "admin") == bool(firms):
        click.echo("error: an admin takes no --firm; a provider or evaluator needs one", err=True)
        sys.exit(_exit.USAGE)
    try:
        firms = tuple(str(identifiers.parse(f)) for f in firms)
    except identifiers.IdentifierError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(_exit.INVALID)
    secret, sha256 = evidence.new_token()
    entry: dict[str, object] = {"name": name, "role": role, "sha256": sha256}
    if firms:
        entry["firms"] = list(firms)
    if days is not None:
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
        entry["expires"] = expires.replace(microsecond=0).isoformat()
    click.echo(yaml.safe_dump([entry], sort_keys=False, allow_unicode=True), err=True, nl=False)
    click.echo(secret)
