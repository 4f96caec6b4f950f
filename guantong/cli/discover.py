"""``guantong edge discover``: browse an OPC UA server and write a gateway config skeleton.

Each object that holds variables directly (a machine, in most address spaces) becomes a
device with one 1 s group of its readable scalar variables, named after their browse names.
The skeleton is validated before it is written; the technician then prunes tags, sets
intervals and fills in the device information.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import click
import yaml

import identifiers
from edge import OpcUa
from gateway.config import GatewayConfig
from guantong.cli import _exit

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


def _name(text: str, taken: set[str]) -> str:
    """A config name (``[A-Za-z0-9][A-Za-z0-9_.-]{0,63}``) from a browse name, unique."""
    base = _UNSAFE.sub("_", text).strip("_.-")[:60] or "x"
    if not base[0].isalnum():
        base = "x" + base
    name, n = base, 2
    while name in taken:
        name = f"{base[:58]}-{n}"
        n += 1
    taken.add(name)
    return name


@click.command("discover")
@click.argument("endpoint")
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the config skeleton (kind: gateway).",
)  # fmt: skip
@click.option("--prefix", required=True, help="The firm's identifier prefix, e.g. 88.709.911.")
@click.option(
    "--security-mode",
    type=click.Choice(["None", "Sign", "SignAndEncrypt"]),
    default="None",
    show_default=True,
    help="Basic256Sha256 unless None; the client certificate is made next to OUTPUT.",
)
@click.option("--username", help="Log in as this user (with --password-file).")
@click.option("--password-file", type=click.Path(dir_okay=False), help="File holding the password.")
@click.option("--interval", default="1s", show_default=True, help="Interval of every group.")
@click.option(
    "--max-variables", default=10_000, show_default=True, help="Stop browsing after this many."
)
def discover(
    endpoint: str,
    *,
    output: Path,
    prefix: str,
    security_mode: str,
    username: str | None,
    password_file: str | None,
    interval: str,
    max_variables: int,
) -> None:
    """Browse the OPC UA server at ENDPOINT (opc.tcp://host:port/) and write a gateway config
    with one device per object that holds variables."""
    from edge.drivers.opcua.discover import discover as browse  # noqa: PLC0415 - asyncua on use
    from edge.drivers.opcua.errors import OpcUaError  # noqa: PLC0415

    try:
        identifiers.parse(f"{prefix}/firm")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--prefix") from None
    base = output.resolve().parent
    connection: dict[str, Any] = {"protocol": "opcua", "endpoint": endpoint}
    if security_mode != "None":
        connection |= {"security_policy": "Basic256Sha256", "security_mode": security_mode}
    if username is not None or password_file is not None:
        # absolute: the config may be written elsewhere than where the command runs
        secret = None if password_file is None else str(Path(password_file).resolve())
        connection |= {"username": username, "password_file": secret}
    try:
        settings = OpcUa.model_validate(connection, context={"base_dir": base})
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(_exit.USAGE)
    try:
        found = asyncio.run(browse(settings, max_variables=max_variables))
    except OpcUaError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(_exit.UNAVAILABLE)
    except KeyboardInterrupt:
        sys.exit(_exit.INTERRUPTED)
    data = skeleton(found.variables, prefix, connection, interval)
    devices = data["devices"]
    if not devices:
        click.echo(f"error: {endpoint} has no readable scalar variables below Objects", err=True)
        sys.exit(_exit.INVALID)
    try:
        GatewayConfig.model_validate(data, context={"base_dir": base})
    except ValueError as exc:
        click.echo(f"error: the skeleton does not validate: {exc}", err=True)
        sys.exit(_exit.INVALID)
    header = (
        f"# Written by `guantong edge discover {endpoint}`: every readable scalar variable,\n"
        "# one device per object that holds them. Prune the tags, set the intervals, fill in\n"
        "# each device's info, then check it with `guantong config check`.\n"
    )
    output.write_text(
        header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100),
        encoding="utf-8",
    )
    tags = len(found.variables)
    note = f", {found.skipped} variables skipped (arrays, other types, unreadable)"
    more = "; stopped at --max-variables" if found.truncated else ""
    click.echo(
        f"wrote {output}: {len(devices)} devices, {tags} tags{note if found.skipped else ''}{more}",
        err=True,
    )


def skeleton(
    variables: list[Any], prefix: str, connection: dict[str, Any], interval: str
) -> dict[str, Any]:
    """The ``kind: gateway`` document: one device per object holding variables."""
    devices: dict[tuple[str, ...], dict[str, Any]] = {}
    device_names: set[str] = set()
    tag_names: dict[tuple[str, ...], set[str]] = {}
    for var in variables:
        parent = var.path[:-1]
        if parent not in devices:
            name = _name(parent[-1] if parent else "server", device_names)
            devices[parent] = {
                "name": name,
                "id": f"{prefix}/dev.{name}",
                "connection": dict(connection),  # a copy each: no YAML anchors
                "info": {"location": "/".join(parent)},
                "groups": [{"name": "default", "interval": interval, "tags": []}],
            }
            tag_names[parent] = set()
        tag: dict[str, Any] = {
            "name": _name(var.path[-1], tag_names[parent]),
            "address": var.node_id,
            "type": var.type,
        }
        if var.type in ("string", "bytes"):
            tag["length"] = 64
        devices[parent]["groups"][0]["tags"].append(tag)
    return {
        "kind": "gateway",
        "gateway": {
            "id": f"{prefix}/gw.01",
            "enterprise": f"{prefix}/firm",
            "key_file": "gateway.key",
        },
        "devices": list(devices.values()),
    }
