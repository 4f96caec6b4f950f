"""``guantong identifiers``: the identifier codec, node, client and registration from configs."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

import identifiers
from guantong.cli import _exit

T = TypeVar("T")

_NODE = click.option(
    "--node",
    envvar="GUANTONG_IDENTIFIERS_URL",
    default="http://127.0.0.1:8088",
    show_default=True,
    help="Base URL of the identifier node (env GUANTONG_IDENTIFIERS_URL).",
)
_TOKEN = click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the write token (else env GUANTONG_IDENTIFIERS_TOKEN).",
)
_CONFIG = _exit.config_option("Node config file (kind: identifiers).", exists=False)


@click.group("identifiers")
def group() -> None:
    """Industrial Internet identifiers (Handle-style 88.<node>.<enterprise>/<suffix>)."""


@group.command("parse")
@click.argument("identifier")
def parse_cmd(identifier: str) -> None:
    """Print the parts of IDENTIFIER as JSON; exit 1 with the reason if it is invalid."""
    try:
        parsed = identifiers.parse(identifier)
    except identifiers.IdentifierError as exc:
        click.echo(
            json.dumps(
                {"valid": False, "input": exc.value, "part": exc.part, "reason": exc.reason},
                ensure_ascii=False,
            )
        )
        click.echo(f"error: {exc}", err=True)
        sys.exit(_exit.INVALID)
    click.echo(json.dumps({"valid": True, **parsed.as_dict()}, ensure_ascii=False))


# --- helpers ---------------------------------------------------------------------------------


def _fail(code: int, message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _run(work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work``, turning identifier errors into the documented exit codes."""
    try:
        return asyncio.run(work())  # type: ignore[arg-type]
    except identifiers.NodeUnavailable as exc:
        _fail(_exit.UNAVAILABLE, str(exc))
    except (identifiers.HandleError, identifiers.IdentifierError) as exc:
        _fail(_exit.INVALID, str(exc))
    except (OSError, psycopg.OperationalError) as exc:  # the database is unreachable
        _fail(_exit.UNAVAILABLE, str(exc).strip())
    except KeyboardInterrupt:
        sys.exit(_exit.INTERRUPTED)


def _token(token_file: Path | None) -> str | None:
    if token_file is not None:
        try:
            return token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            _fail(_exit.INVALID, f"cannot read token file {token_file}: {exc.strerror}")
    return os.environ.get("GUANTONG_IDENTIFIERS_TOKEN") or None


# --- the node --------------------------------------------------------------------------------


@group.command("serve")
@_CONFIG
def serve(config_file: str) -> None:
    """Run the identifier node of CONFIG until SIGINT/SIGTERM (migrates its schema first)."""
    config: identifiers.NodeConfig = _exit.load_or_exit(config_file, "identifiers")

    def work() -> Awaitable[None]:
        return _exit.serve_until_signal(
            identifiers.Node(config),
            lambda node: f"serving {', '.join(config.authoritative)} on {node.url}",
        )

    _run(work)


@group.command("migrate")
@_CONFIG
def migrate(config_file: str) -> None:
    """Create or update the node's schema in PostgreSQL; running it again changes nothing."""
    config: identifiers.NodeConfig = _exit.load_or_exit(config_file, "identifiers")

    async def work() -> list[int]:
        async with identifiers.Registry(config.database.dsn) as registry:
            return await registry.migrate()

    applied = _run(work)
    click.echo(f"applied migrations {applied}" if applied else "schema up to date")


@group.group("token")
def token_group() -> None:
    """Write tokens, each bound to a prefix (a firm writes only under its own)."""


@token_group.command("create")
@_CONFIG
@click.option("--prefix", required=True, help="Prefix the token may write under.")
@click.option("--days", type=click.FloatRange(min=0.0001), default=90.0, show_default=True)
@click.option("--label", default="", help="Who holds it, for the token list.")
def token_create(config_file: str, prefix: str, days: float, label: str) -> None:
    """Create a token; it is printed once on stdout and stored only as its SHA-256."""
    config: identifiers.NodeConfig = _exit.load_or_exit(config_file, "identifiers")
    try:
        normal = identifiers.parse_prefix(prefix)
    except identifiers.IdentifierError as exc:
        _fail(_exit.INVALID, str(exc))
    if days > config.token_max_days:
        _fail(_exit.INVALID, f"--days over the node's token_max_days ({config.token_max_days})")

    async def work() -> tuple[identifiers.Token, str]:
        async with identifiers.Registry(config.database.dsn) as registry:
            await registry.migrate()
            return await registry.create_token(normal, days=days, label=label)

    token, secret = _run(work)
    click.echo(f"token {token.id} for {token.prefix}, expires {token.expires:%Y-%m-%d}", err=True)
    click.echo(secret)


@token_group.command("list")
@_CONFIG
def token_list(config_file: str) -> None:
    """List tokens (id, prefix, expiry, state); secrets are never shown again."""
    config: identifiers.NodeConfig = _exit.load_or_exit(config_file, "identifiers")

    async def work() -> list[identifiers.Token]:
        async with identifiers.Registry(config.database.dsn) as registry:
            return await registry.tokens()

    for token in _run(work):
        state = "revoked" if token.revoked else ("valid" if token.valid else "expired")
        click.echo(f"{token.id}\t{token.prefix}\t{token.expires:%Y-%m-%d}\t{state}\t{token.label}")


@token_group.command("revoke")
@_CONFIG
@click.argument("token_id")
def token_revoke(config_file: str, token_id: str) -> None:
    """Revoke token TOKEN_ID at once."""
    config: identifiers.NodeConfig = _exit.load_or_exit(config_file, "identifiers")

    async def work() -> bool:
        async with identifiers.Registry(config.database.dsn) as registry:
            return await registry.revoke_token(token_id)

    if not _run(work):
        _fail(_exit.INVALID, f"no unrevoked token {token_id!r}")
    click.echo(f"revoked {token_id}")


# --- the client ------------------------------------------------------------------------------


@group.command("resolve")
@click.argument("identifier")
@_NODE
@click.option("--type", "types", multiple=True, help="Only values of this type (repeatable).")
@click.option("--index", "indexes", type=int, multiple=True, help="Only this index (repeatable).")
def resolve(identifier: str, node: str, types: tuple[str, ...], indexes: tuple[int, ...]) -> None:
    """Print the record of IDENTIFIER as JSON, following referrals."""

    async def work() -> identifiers.HandleRecord:
        async with identifiers.Client(node, cache=False) as client:
            return await client.resolve(identifier, types=types, indexes=indexes)

    record = _run(work)
    click.echo(json.dumps(record.model_dump(mode="json"), ensure_ascii=False, indent=2))


def gateway_public_key(key_file: Path) -> bytes:
    """Raw 32-byte Ed25519 public key of the gateway's private key file (PEM or raw seed)."""
    data = key_file.read_bytes()
    if len(data) == 32:
        private = ed25519.Ed25519PrivateKey.from_private_bytes(data)
    else:
        try:
            loaded = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise identifiers.InvalidValue(str(key_file), f"not an Ed25519 key: {exc}") from None
        if not isinstance(loaded, ed25519.Ed25519PrivateKey):
            raise identifiers.InvalidValue(str(key_file), "the key is not Ed25519")
        private = loaded
    return private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def gateway_records(config: Any, evidence_url: str | None) -> list[tuple[str, list[Any]]]:
    """The gateway's record and one per device, built from a gateway config: the stages of
    each device's tags go into its record too (``GT_TAG_STAGE``), and the tags its OEE is
    computed from (``GT_OEE``)."""
    gw = config.gateway
    records = [
        (
            gw.id,
            identifiers.GatewayRecord(
                enterprise=gw.enterprise, public_key=gateway_public_key(gw.key_file)
            ).to_values(),
        )
    ]
    for device in config.devices:
        info = device.info
        tag_stages: dict[str, list[str]] = {}
        for group in device.groups:
            for tag in group.tags:
                for stage in tag.stages:
                    tag_stages.setdefault(stage.label, []).append(tag.name)
        record = identifiers.DeviceRecord(
            enterprise=gw.enterprise,
            gateway=gw.id,
            name=device.name,
            manufacturer=info.manufacturer,
            model=info.model,
            serial=info.serial,
            location=info.location,
            key_equipment=info.key_equipment,
            stages=tuple(stage.label for stage in info.stages),
            tag_stages={stage: tuple(tags) for stage, tags in tag_stages.items()},
            url=evidence_url.format(id=device.id) if evidence_url else None,
            oee=_oee(info.oee),
        )
        records.append((device.id, record.to_values()))
    return records


def _oee(oee: Any) -> identifiers.OeeSignals | None:
    """The device's OEE declaration as its record carries it (``GT_OEE``)."""
    if oee is None:
        return None
    return identifiers.OeeSignals(
        state=oee.state, running=oee.running, planned=oee.planned, total=oee.total,
        good=oee.good, defects=oee.defects, ideal_cycle=oee.ideal_cycle,
    )  # fmt: skip


@group.command("register")
@click.option(
    "-c", "--config", "config_file", required=True, type=click.Path(dir_okay=False),
    help="Gateway config file (kind: gateway).",
)  # fmt: skip
@_NODE
@_TOKEN
@click.option(
    "--evidence-url",
    help="Evidence page of each device, with {id} for its identifier, "
    "e.g. https://evidence.example.org/devices/{id}.",
)
def register(
    config_file: str, node: str, token_file: Path | None, evidence_url: str | None
) -> None:
    """Register a gateway (with its public key) and all its devices from its config.

    Idempotent: records already as the config says stay untouched, and a second run says that
    nothing changed. Each batch of up to 2,000 records is one transaction: either all of its
    records are written or none.
    """
    config = _exit.load_or_exit(config_file, "gateway")
    token = _token(token_file)
    if token is None:
        _fail(_exit.INVALID, "a write token is needed: --token-file or GUANTONG_IDENTIFIERS_TOKEN")
    records = gateway_records_or_fail(config, evidence_url)

    async def work() -> list[tuple[str, str]]:
        async with identifiers.Client(node, token=token) as client:
            return await client.register(records, overwrite=True)

    results = _run(work)
    for handle, status in results:
        click.echo(f"{status}\t{handle}")
    changed = [s for _, s in results if s != "unchanged"]
    if changed:
        counts = {s: changed.count(s) for s in ("created", "updated") if s in changed}
        summary = ", ".join(f"{n} {s}" for s, n in counts.items())
        click.echo(f"{summary}, {len(results) - len(changed)} unchanged", err=True)
    else:
        click.echo(f"nothing changed: all {len(results)} records already registered", err=True)


def gateway_records_or_fail(config: Any, evidence_url: str | None) -> list[tuple[str, list[Any]]]:
    try:
        return gateway_records(config, evidence_url)
    except OSError as exc:
        _fail(_exit.INVALID, f"cannot read key file {config.gateway.key_file}: {exc.strerror}")
    except (KeyError, IndexError) as exc:
        _fail(_exit.INVALID, f"--evidence-url: unknown placeholder {exc}")
    except (identifiers.HandleError, ValueError) as exc:
        _fail(_exit.INVALID, str(exc))


@group.command("register-enterprise")
@click.argument("identifier")
@click.option("--name", required=True, help="Registered name of the firm.")
@click.option("--usci", required=True, help="Unified social credit code (18 characters).")
@click.option("--industry", required=True)
@click.option("--city", required=True)
@click.option("--url", help="The firm's evidence page.")
@_NODE
@_TOKEN
def register_enterprise(
    *,
    identifier: str,
    name: str,
    usci: str,
    industry: str,
    city: str,
    url: str | None,
    node: str,
    token_file: Path | None,
) -> None:
    """Register (or update) the enterprise record IDENTIFIER of a firm; idempotent."""
    token = _token(token_file)
    if token is None:
        _fail(_exit.INVALID, "a write token is needed: --token-file or GUANTONG_IDENTIFIERS_TOKEN")
    try:
        record = identifiers.EnterpriseRecord(
            name=name, usci=usci, industry=industry, city=city, url=url
        )
    except ValueError as exc:  # pydantic's ValidationError is one
        _fail(_exit.INVALID, str(exc))

    async def work() -> str:
        async with identifiers.Client(node, token=token) as client:
            return await client.put(identifier, record.to_values())

    click.echo(f"{_run(work)}\t{identifiers.parse(identifier)}")


@group.command("delete")
@click.argument("identifier")
@_NODE
@_TOKEN
def delete(identifier: str, node: str, token_file: Path | None) -> None:
    """Delete the record IDENTIFIER (needs a token for its prefix)."""
    token = _token(token_file)

    async def work() -> None:
        async with identifiers.Client(node, token=token) as client:
            await client.delete(identifier)

    _run(work)
    click.echo(f"deleted\t{identifiers.parse(identifier)}")
