"""``guantong evidence``: serve the evidence API and web page, make access tokens, write a
firm's signed evidence report and verify one offline."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import sys
from pathlib import Path

import click
import psycopg
import yaml

import evidence
import identifiers
from common import KeyFileError, load_or_create_key
from gateway import protocol
from guantong.cli import _exit


@click.group("evidence")
def group() -> None:
    """Evidence of firms' data connectivity for the SME digitalization assessment."""


@group.command("serve")
@_exit.config_option("The evidence config file (kind: evidence).")
def serve(config_file: str) -> None:
    """Serve the API and the web page of CONFIG until SIGINT/SIGTERM."""
    config: evidence.EvidenceConfig = _exit.load_or_exit(config_file, "evidence")

    try:
        asyncio.run(
            _exit.serve_until_signal(
                evidence.Service(config), lambda s: f"evidence API and web page on {s.url}"
            )
        )
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


def _when(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if value.tzinfo is None:
        raise click.BadParameter(f"{text!r} needs a timezone, e.g. {text}Z or {text}+08:00")
    return value


@group.command("report")
@click.option("--firm", required=True, help="The firm's identifier, e.g. 88.709.911/firm.")
@click.option("--from", "start", required=True, help="Window start, ISO 8601 with timezone.")
@click.option("--to", "end", required=True, help="Window end (excluded), ISO 8601.")
@click.option("--store", required=True, envvar="GUANTONG_STORE_DSN", help="The ingest store's DSN.")
@click.option("--node", required=True, help="URL of the identifier node serving the firm.")
@click.option(
    "--token-file", type=click.Path(dir_okay=False, exists=True),
    help="A token for the firm's prefix, to list its device records.",
)  # fmt: skip
@click.option(
    "--key", "key_file", type=click.Path(dir_okay=False), default="platform.key",
    show_default=True, help="The platform's Ed25519 key file; made on first use.",
)  # fmt: skip
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False),
    help="The JSON report; its HTML rendering goes next to it (.html).",
)  # fmt: skip
def report(
    *,
    firm: str,
    start: str,
    end: str,
    store: str,
    node: str,
    token_file: str | None,
    key_file: str,
    output: str,
) -> None:
    """Write the signed evidence report of FIRM for [--from, --to).

    A window made of whole checkpoint periods (5 minutes by default) lets the verifier
    check every count exactly.
    """
    try:
        window = evidence.Window(_when(start), _when(end))
        key, made = load_or_create_key(Path(key_file))
    except (click.BadParameter, evidence.InvalidWindow, KeyFileError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(_exit.INVALID)
    if made:
        click.echo(f"made the platform key {key_file}; publish its fingerprint", err=True)
    token = Path(token_file).read_text(encoding="utf-8").strip() if token_file else None

    async def devices() -> list[evidence.RegisteredDevice]:
        async with identifiers.Client(node, token=token) as client:
            return await evidence.registered_devices(client, firm)

    try:
        registered = asyncio.run(devices())
        with psycopg.connect(store) as conn:
            signed = evidence.build_report(conn, firm, window, registered, key)
    except (evidence.RegistryError, evidence.StoreUnavailable, psycopg.OperationalError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(_exit.UNAVAILABLE)
    fingerprint = protocol.fingerprint(base64.b64decode(signed.report["platform_key"]))
    path = Path(output)
    path.write_bytes(signed.to_json())
    path.with_suffix(".html").write_text(evidence.render_html(signed, fingerprint), "utf-8")
    checkpoints = sum(len(a["checkpoints"]) for a in signed.report["attestation"])
    click.echo(
        f"{path}: {len(signed.report['facts']['devices'])} devices, {checkpoints} gateway "
        f"checkpoints, signed by {fingerprint}",
        err=True,
    )


@group.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--node", help="Identifier node to resolve the gateways' keys (HS_PUBKEY) from.")
@click.option(
    "--keys", "keys_file", type=click.Path(dir_okay=False, exists=True),
    help='JSON {"<gateway identifier>": "<base64 public key>"}, for use offline.',
)  # fmt: skip
@click.option("--platform-key", help="The platform key's published fingerprint, sha256:….")
@click.option(
    "--strict", is_flag=True,
    help="Exit 4 when nothing failed but something (the assessment aside) could not be checked.",
)  # fmt: skip
def verify(
    file: str, node: str | None, keys_file: str | None, platform_key: str | None, strict: bool
) -> None:
    """Check a report: the platform's signature, every gateway checkpoint's signature, the
    checkpoints' sequence, and every count against what the gateways attested.

    Prints what was verified, what failed and what could not be checked; exits 1 if
    anything failed, and with --strict 4 if nothing failed but anything besides the
    assessment (never recomputed) could not be checked.
    """
    if (node is None) == (keys_file is None):
        click.echo("error: give the gateways' keys with --node or with --keys", err=True)
        sys.exit(_exit.USAGE)
    try:
        signed = evidence.Report.from_json(Path(file).read_bytes())
    except evidence.ReportError as exc:
        click.echo(f"error: {file}: {exc}", err=True)
        sys.exit(_exit.INVALID)
    if keys_file is not None:
        try:
            given = json.loads(Path(keys_file).read_text(encoding="utf-8"))
            keys: dict[str, bytes | str] = {
                str(gw): base64.b64decode(text, validate=True) for gw, text in given.items()
            }
        except (ValueError, TypeError, AttributeError) as exc:
            click.echo(f'error: {keys_file}: not {{"gateway": "base64 key"}}: {exc}', err=True)
            sys.exit(_exit.INVALID)
    else:

        async def resolve() -> dict[str, bytes | str]:
            async with identifiers.Client(node or "") as client:
                return await evidence.gateway_keys(client, signed)

        try:
            keys = asyncio.run(resolve())
        except identifiers.NodeUnavailable as exc:
            click.echo(f"error: identifier node: {exc}", err=True)
            sys.exit(_exit.UNAVAILABLE)
    result = evidence.verify_report(signed, keys, platform_key=platform_key)
    click.echo(result.table())
    if not result.ok:
        sys.exit(_exit.INVALID)
    if strict and result.unchecked:
        click.echo(
            f"strict: {len(result.unchecked)} findings could not be checked, so the report is "
            "not verified in full",
            err=True,
        )
        sys.exit(_exit.UNCHECKED)
    sys.exit(_exit.OK)
