"""``guantong sim``: serve a factory file's simulated PLCs, and write the matching gateway config.

The gateway config is generated from the same profiles the simulators serve, so demo and
benchmark configs never drift from what is on the wire.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
import yaml

import simulators
from gateway.config import GatewayConfig
from guantong.cli import _exit

#: poll interval of each tag group of the profiles
GROUP_INTERVALS = {"fast": "1s", "status": "5s", "counters": "10s", "setpoints": "30s"}
#: OPC UA built-in types → gateway data types
_OPCUA_TYPES = {
    "Boolean": "bool", "Int16": "int16", "UInt16": "uint16", "Int32": "int32",
    "UInt32": "uint32", "Int64": "int64", "UInt64": "uint64", "Float": "float32",
    "Double": "float64", "String": "string",
}  # fmt: skip
#: where `--opcua-user` puts the password, next to the generated config
PASSWORD_FILE = "opcua-password.txt"  # noqa: S105 - a file name, not a password
#: production devices count for the networking rate; utilities do not
_NOT_PRODUCTION = {"meter", "compressor"}

_CONFIG = _exit.config_option("The factory file (kind: factory).", exists=False)


@click.group("sim")
def group() -> None:
    """Simulated PLCs of a factory file, over Modbus TCP/RTU and OPC UA."""


def _load(path: str) -> simulators.FactoryConfig:
    factory = _exit.load_or_exit(path, "factory")
    assert isinstance(factory, simulators.FactoryConfig)  # noqa: S101 - load() keyed by kind
    return factory


@group.command("run")
@_CONFIG
@click.option(
    "--only",
    multiple=True,
    metavar="ENDPOINT",
    help="Serve only this endpoint (repeatable): share a big factory between processes.",
)
def run(config_file: str, only: tuple[str, ...]) -> None:
    """Serve the factory of CONFIG until SIGINT/SIGTERM."""
    factory = _load(config_file)
    started = time.perf_counter()
    if logging.getLogger().level > logging.DEBUG:  # asyncua logs every standard node at INFO
        logging.getLogger("asyncua").setLevel(logging.WARNING)

    async def work() -> None:
        sim = simulators.Simulator(factory, base_dir=Path(config_file).parent, only=only)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # a signal while starting stops once started
            loop.add_signal_handler(sig, sim.request_stop)
        async with sim:
            for name in list(sim.endpoints)[:20]:
                click.echo(f"endpoint {name}: {sim.address(name)}", err=True)
            if len(sim.endpoints) > 20:
                click.echo(f"… and {len(sim.endpoints) - 20} more endpoints", err=True)
            if sim.control_url:
                click.echo(f"fault interface: {sim.control_url}/faults", err=True)
            tags = sum(len(m.profile.tags) for m in sim.machines.values())
            click.echo(
                f"serving {len(sim.machines)} machines, {tags} tags of {factory.name} "
                f"(started in {time.perf_counter() - started:.1f} s)",
                err=True,
            )
            await sim.wait()
        click.echo("stopped", err=True)

    try:
        asyncio.run(work())
    except simulators.EndpointError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(_exit.UNAVAILABLE)
    except KeyboardInterrupt:
        sys.exit(_exit.INTERRUPTED)


@group.command("gateway-config")
@_CONFIG
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Default: stdout."
)
@click.option(
    "--key-file", default="gateway.key", show_default=True, help="The gateway's key file entry."
)
@click.option("--host", help="Address the gateway reaches the simulators at (default: theirs).")
@click.option(
    "--opcua-security",
    type=click.Choice(["None", "Sign", "SignAndEncrypt"]),
    default="None",
    show_default=True,
    help="Security mode for OPC UA devices (Basic256Sha256 unless None).",
)
@click.option(
    "--opcua-user",
    metavar="NAME",
    help="Log in to OPC UA as this user of the factory file; its password is written to "
    f"{PASSWORD_FILE} next to --output.",
)
def gateway_config_cmd(
    *,
    config_file: str,
    output: Path | None,
    key_file: str,
    host: str | None,
    opcua_security: str,
    opcua_user: str | None,
) -> None:
    """Write the gateway config (kind: gateway) that reads every tag of CONFIG."""
    factory = _load(config_file)
    if opcua_user is not None and output is None:
        click.echo("error: --opcua-user writes a password file: give --output", err=True)
        sys.exit(_exit.USAGE)
    try:
        data = gateway_config(
            factory, key_file=key_file, host=host, opcua_security=opcua_security,
            opcua_user=opcua_user, base_dir=Path(config_file).parent,
        )  # fmt: skip
    except ValueError as exc:
        click.echo(f"error: {config_file}: {exc}", err=True)
        sys.exit(_exit.INVALID)
    if opcua_user is not None and output is not None:
        password = _password(factory, opcua_user)
        secret = output.parent / PASSWORD_FILE
        secret.touch(mode=0o600, exist_ok=True)
        secret.write_text(password + "\n", encoding="utf-8")
    text = (
        f"# Generated by `guantong sim gateway-config -c {config_file}`: the devices and tags\n"
        "# of the simulated factory. Regenerate it rather than editing it.\n"
        + yaml.safe_dump(
            data, sort_keys=False, allow_unicode=True, width=100, default_flow_style=None
        )
    )
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)


def gateway_config(
    factory: simulators.FactoryConfig,
    *,
    key_file: str = "gateway.key",
    host: str | None = None,
    opcua_security: str = "None",
    opcua_user: str | None = None,
    base_dir: Path | None = None,
) -> dict[str, Any]:
    """The ``kind: gateway`` config for ``factory``, validated; raise ValueError if it cannot
    be made (a port chosen at run time, a security mode or user the endpoint does not have).
    With ``opcua_user`` the OPC UA devices log in with :data:`PASSWORD_FILE`."""
    if opcua_user is not None:
        _password(factory, opcua_user)
    prefix = factory.firm.prefix
    devices = []
    for line in factory.lines:
        for machine in line.machines:
            endpoint = factory.endpoint(machine.endpoint)
            profile = simulators.profile(machine.profile)
            devices.append(
                {
                    "name": machine.name,
                    "id": f"{prefix}/dev.{machine.name}",
                    "connection": _connection(
                        endpoint,
                        machine,
                        host=host,
                        opcua_security=opcua_security,
                        opcua_user=opcua_user,
                        base_dir=base_dir or Path.cwd(),
                    ),
                    "info": {
                        "manufacturer": profile.manufacturer,
                        "model": profile.model,
                        "location": f"{factory.title or factory.name}, {line.name}",
                        "key_equipment": machine.profile not in _NOT_PRODUCTION,
                        "stages": list(profile.stages),
                        **_oee(profile),
                    },
                    "groups": _groups(
                        profile, None if endpoint.protocol != "opcua" else (factory, line, machine)
                    ),
                }
            )
    data = {
        "kind": "gateway",
        "gateway": {
            "id": f"{prefix}/gw.{factory.name.lower()}",
            "enterprise": f"{prefix}/firm",
            "key_file": key_file,
        },
        "devices": devices,
    }
    try:
        GatewayConfig.model_validate(data)
    except Exception as exc:
        raise ValueError(f"the generated gateway config is invalid: {exc}") from None
    return data


def _oee(profile: simulators.Profile) -> dict[str, Any]:
    """The ``oee`` entry of a device's ``info`` for a profile that declares the signals."""
    spec = profile.oee
    if spec is None:
        return {}
    oee: dict[str, Any] = {"state": spec.state, "running": list(spec.running),
                           "planned": list(spec.planned), "total": spec.total}  # fmt: skip
    if spec.defects is not None:
        oee["defects"] = spec.defects
    oee["ideal_cycle"] = spec.ideal_cycle
    return {"oee": oee}


def _connection(
    endpoint: Any,
    machine: Any,
    *,
    host: str | None,
    opcua_security: str,
    opcua_user: str | None,
    base_dir: Path,
) -> dict[str, Any]:
    if endpoint.protocol == "modbus-rtu":
        port = endpoint.device or str(base_dir / endpoint.pty_link)
        return {
            "protocol": "modbus-rtu", "port": port, "baudrate": endpoint.baudrate,
            "parity": endpoint.parity, "stopbits": endpoint.stopbits,
            "unit_id": machine.unit_id,
        }  # fmt: skip
    if endpoint.port == 0:
        raise ValueError(f"endpoint {endpoint.name!r} has port 0, chosen only at run time")
    address = host or ("127.0.0.1" if endpoint.host in ("0.0.0.0", "") else endpoint.host)  # noqa: S104 - a listen address, mapped to where clients go
    if endpoint.protocol == "modbus-tcp":
        return {
            "protocol": "modbus-tcp", "host": address, "port": endpoint.port,
            "unit_id": machine.unit_id,
        }  # fmt: skip
    if opcua_security not in endpoint.security:
        raise ValueError(f"endpoint {endpoint.name!r} does not offer security {opcua_security}")
    policy = "None" if opcua_security == "None" else "Basic256Sha256"
    connection = {
        "protocol": "opcua",
        "endpoint": f"opc.tcp://{address}:{endpoint.port}/",
        "security_policy": policy,
        "security_mode": opcua_security,
    }
    if opcua_user is not None:
        connection |= {"username": opcua_user, "password_file": PASSWORD_FILE}
    return connection


def _password(factory: simulators.FactoryConfig, user: str) -> str:
    """The password of ``user`` on every OPC UA endpoint of the factory (one user, one
    password file)."""
    passwords = {
        next((u.password for u in e.users if u.name == user), None)
        for e in factory.endpoints
        if e.protocol == "opcua"
    }
    if len(passwords) != 1 or None in passwords:
        raise ValueError(f"OPC UA user {user!r} is not defined, alike, on every OPC UA endpoint")
    return str(passwords.pop())


def _groups(profile: simulators.Profile, opcua: tuple[Any, Any, Any] | None) -> list[Any]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for spec in profile.tags:
        if opcua is None:
            tag: dict[str, Any] = {"name": spec.name, "address": spec.address, "type": spec.type}
            if spec.order is not None:
                tag["order"] = spec.order
            if spec.scale != 1.0:
                tag["scale"] = spec.scale
        else:
            factory, line, machine = opcua
            path = f"{factory.name}/{line.name}/{machine.name}/{spec.name}"
            tag = {
                "name": spec.name,
                "address": f"ns=2;s={path}",
                "type": _OPCUA_TYPES[spec.opcua_type],
            }
        if spec.length is not None:
            tag["length"] = spec.length
        if spec.unit:
            tag["unit"] = spec.unit
        if spec.stages:
            tag["stages"] = list(spec.stages)
        if spec.description:
            tag["description"] = spec.description
        groups.setdefault(spec.group, []).append(tag)
    return [
        {"name": name, "interval": GROUP_INTERVALS[name], "tags": tags}
        for name, tags in groups.items()
    ]
