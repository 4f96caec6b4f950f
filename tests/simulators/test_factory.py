"""The factory file, `guantong sim gateway-config` and `guantong sim run`."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
import yaml
from asyncua import Client
from click.testing import CliRunner
from pymodbus.client import AsyncModbusTcpClient

import simulators
from guantong import _configfile
from guantong.cli import cli
from simulators import FactoryConfig

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "factory.demo.yaml"
OPCUA_TYPES = {
    "Boolean": "bool", "Int16": "int16", "UInt16": "uint16", "Int32": "int32",
    "UInt32": "uint32", "Int64": "int64", "UInt64": "uint64", "Float": "float32",
    "Double": "float64", "String": "string",
}  # fmt: skip


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def demo_with_ports(tmp_path: Path, **changes: object) -> Path:
    """The demo factory on free ports (other runs of the demo may hold the usual ones)."""
    data = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    ports = iter(free_ports(len(data["endpoints"]) + 1))
    for endpoint in data["endpoints"]:
        endpoint["port"] = next(ports)
    data["control"]["port"] = next(ports)
    data.update(changes)
    path = tmp_path / "factory.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_the_demo_factory_is_valid() -> None:
    factory = _configfile.load(DEMO)
    assert isinstance(factory, simulators.FactoryConfig)
    protocols = {factory.endpoint(m.endpoint).protocol for m in factory.machines()}
    assert protocols == {"modbus-tcp", "opcua"}
    assert simulators.load_factory(DEMO) == factory


BASE = """\
kind: factory
name: F
firm: {name: Firm, prefix: 88.709.911}
endpoints:
  - {name: tcp, protocol: modbus-tcp, port: 0}
  - {name: ua, protocol: opcua, port: 0}
lines:
  - name: L1
    machines:
"""
BAD = {
    "unknown_field": (
        "      - {name: m1, profile: cnc, endpoint: tcp, unit_id: 1, colour: red}\n",
        "Extra inputs are not permitted",
    ),
    "unknown_profile": (
        "      - {name: m1, profile: lathe, endpoint: tcp, unit_id: 1}\n",
        "unknown profile 'lathe'",
    ),
    "unknown_endpoint": (
        "      - {name: m1, profile: cnc, endpoint: rtu, unit_id: 1}\n",
        "machine 'm1': no endpoint named 'rtu'",
    ),
    "unit_id_twice": (
        "      - {name: m1, profile: cnc, endpoint: tcp, unit_id: 1}\n"
        "      - {name: m2, profile: kiln, endpoint: tcp, unit_id: 1}\n",
        "unit id 1 is already used on 'tcp'",
    ),
    "no_unit_id": (
        "      - {name: m1, profile: cnc, endpoint: tcp}\n",
        "a Modbus machine needs 'unit_id'",
    ),
    "unit_id_on_opcua": (
        "      - {name: m1, profile: cnc, endpoint: ua, unit_id: 4}\n",
        "OPC UA has no unit ids",
    ),
    "duplicate_machine": (
        "      - {name: m1, profile: cnc, endpoint: ua}\n"
        "      - {name: m1, profile: cnc, endpoint: ua}\n",
        "duplicate machine name 'm1'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_factory_files_fail_with_a_located_message(tmp_path: Path, case: str) -> None:
    machines, message = BAD[case]
    path = tmp_path / "factory.yaml"
    path.write_text(BASE + machines, encoding="utf-8")
    with pytest.raises(_configfile.ConfigFileError) as err:
        _configfile.load(path)
    assert message in str(err.value)
    assert f"{path}:" in str(err.value)
    with pytest.raises(simulators.FactoryFileError, match=message.replace("(", r"\(")):
        simulators.load_factory(path)
    result = CliRunner().invoke(cli, ["sim", "run", "-c", str(path)])
    assert result.exit_code == 1
    assert message in result.output


def test_gateway_config_names_every_simulated_tag(tmp_path: Path) -> None:
    out = tmp_path / "gateway.yaml"
    result = CliRunner().invoke(
        cli, ["sim", "gateway-config", "-c", str(DEMO), "-o", str(out), "--opcua-security", "Sign"]
    )
    assert result.exit_code == 0, result.output
    check = CliRunner().invoke(cli, ["config", "check", str(out)])
    assert check.exit_code == 0, check.output
    config = _configfile.load(out)
    factory = simulators.load_factory(DEMO)
    devices = {d.name: d for d in config.devices}  # type: ignore[attr-defined]
    assert set(devices) == {m.name for m in factory.machines()}
    for line in factory.lines:
        for machine in line.machines:
            device = devices[machine.name]
            assert device.id.startswith(factory.firm.prefix + "/")
            endpoint = factory.endpoint(machine.endpoint)
            tags = {t.name: t for g in device.groups for t in g.tags}
            profile = simulators.profile(machine.profile)
            assert set(tags) == {spec.name for spec in profile.tags}
            for spec in profile.tags:
                tag = tags[spec.name]
                if endpoint.protocol == "opcua":
                    path = f"{factory.name}/{line.name}/{machine.name}/{spec.name}"
                    assert tag.address == f"ns=2;s={path}"
                    assert tag.type == OPCUA_TYPES[spec.opcua_type]
                    assert tag.scale == 1.0
                else:
                    assert (tag.address, tag.type, tag.order) == (
                        spec.address,
                        spec.type,
                        spec.order,
                    )
                    assert tag.scale == spec.scale
                    assert device.connection.unit_id == machine.unit_id
                    assert device.connection.port == endpoint.port
                assert tag.length == spec.length
                assert tag.unit == spec.unit
            if endpoint.protocol == "opcua":
                assert device.connection.endpoint == f"opc.tcp://127.0.0.1:{endpoint.port}/"
                assert device.connection.security_mode == "Sign"


def test_gateway_config_refuses_what_it_cannot_name(tmp_path: Path) -> None:
    path = tmp_path / "factory.yaml"
    path.write_text(BASE + "      - {name: m1, profile: cnc, endpoint: tcp, unit_id: 1}\n")
    result = CliRunner().invoke(cli, ["sim", "gateway-config", "-c", str(path)])
    assert result.exit_code == 1
    assert "port 0" in result.output
    bad_prefix = tmp_path / "prefix.yaml"
    bad_prefix.write_text(DEMO.read_text(encoding="utf-8").replace("88.709.911", "99.1"))
    result = CliRunner().invoke(cli, ["config", "check", str(bad_prefix)])
    assert result.exit_code == 1
    assert "firm › prefix" in result.output


async def _start(config: Path) -> tuple[asyncio.subprocess.Process, float, list[str]]:
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "guantong", "sim", "run", "-c", str(config),
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONWARNINGS": "error"},
    )  # fmt: skip
    assert process.stderr is not None
    lines: list[str] = []
    while True:
        line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        assert line, f"sim run ended: {''.join(lines)}"
        lines.append(line)
        if line.startswith("serving "):
            return process, time.perf_counter() - started, lines


async def _stop(process: asyncio.subprocess.Process, sig: int) -> str:
    process.send_signal(sig)
    assert process.stderr is not None
    rest = await asyncio.wait_for(process.stderr.read(), 20)
    assert await process.wait() == 0
    return rest.decode()


async def test_sim_run_serves_the_demo_over_both_protocols(tmp_path: Path) -> None:
    config = demo_with_ports(tmp_path)
    factory = simulators.load_factory(config)
    process, took, _ = await _start(config)
    try:
        print(f"guantong sim run started in {took:.2f} s")
        assert took < 10
        tcp = factory.endpoint("plc-gateway")
        client = AsyncModbusTcpClient("127.0.0.1", port=tcp.port, timeout=2, retries=0)
        assert await client.connect()
        try:
            while True:  # shot_count of imm-01, unit 3: uint32 ABCD at ir:30
                before = time.time()
                regs = (await client.read_input_registers(30, count=2, device_id=3)).registers
                if math.floor(before) == math.floor(time.time()):
                    break
        finally:
            client.close()
        expected = simulators.value(factory.seed, "injection", "imm-01", "shot_count", before)
        assert regs[0] << 16 | regs[1] == expected
        ua = factory.endpoint("opcua")
        async with Client(f"opc.tcp://127.0.0.1:{ua.port}/", watchdog_intervall=10) as opc:
            node = opc.get_node(f"ns=2;s={factory.name}/Moulding/imm-02/shot_count")
            dv = await node.read_data_value()
        assert dv.SourceTimestamp is not None
        t = dv.SourceTimestamp.timestamp()
        assert dv.Value.Value == simulators.value(
            factory.seed, "injection", "imm-02", "shot_count", t
        )
    finally:
        rest = await _stop(process, signal.SIGTERM)
    assert "stopped" in rest


async def test_sim_run_stops_on_sigint(tmp_path: Path) -> None:
    port, control = free_ports(2)
    config = tmp_path / "small.yaml"
    config.write_text(
        BASE.replace("port: 0}", f"port: {port}}}", 1).replace(
            "  - {name: ua, protocol: opcua, port: 0}\n", ""
        )
        + "      - {name: m1, profile: meter, endpoint: tcp, unit_id: 1}\n"
        + f"control: {{port: {control}}}\n",
        encoding="utf-8",
    )
    process, _, lines = await _start(config)
    assert f"endpoint tcp: 127.0.0.1:{port}\n" in lines
    assert "stopped" in await _stop(process, signal.SIGINT)


async def test_the_scale_factory_serves_over_100000_tags_split_by_endpoint() -> None:
    factory = simulators.load_factory(ROOT / "configs" / "factory.scale.yaml")
    tags = sum(len(simulators.profile(m.profile).tags) for m in factory.machines())
    assert tags >= 100_000
    assert len({e.port for e in factory.endpoints}) == len(factory.endpoints)  # type: ignore[union-attr]
    port = free_ports(1)[0]
    small = FactoryConfig.model_validate(
        {**factory.model_dump(exclude={"endpoints", "lines", "scale"}),
         "scale": {"endpoints": 3, "units": 247, "base_port": port}}
    )  # fmt: skip
    with pytest.raises(simulators.EndpointError, match="no such endpoint"):
        simulators.Simulator(small, only=["scale-009"])
    t = time.time() - 86400.5
    async with simulators.Simulator(small, only=["scale-001"], clock=lambda: t) as sim:
        assert list(sim.endpoints) == ["scale-001"]
        assert len(sim.machines) == 247
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        assert await client.connect()
        try:
            response = await client.read_holding_registers(0, count=1, device_id=247)
        finally:
            client.close()
        machine = next(m for m in sim.machines.values() if m.unit_id == 247)
        assert machine is sim.machine(f"{machine.profile_name}-001-247")
        assert response.registers[0] == simulators.value(
            factory.seed, machine.profile_name, machine.name, "state", t
        )


async def test_a_failed_start_stops_what_had_started() -> None:
    free, taken_port = free_ports(2)
    config = FactoryConfig.model_validate(
        {
            "kind": "factory", "name": "F", "firm": {"name": "F", "prefix": "88.709.911"},
            "endpoints": [
                {"name": "a", "protocol": "modbus-tcp", "port": free},
                {"name": "b", "protocol": "modbus-tcp", "port": taken_port},
            ],
            "lines": [{"name": "L", "machines": [
                {"name": "m1", "profile": "cnc", "endpoint": "a", "unit_id": 1},
                {"name": "m2", "profile": "cnc", "endpoint": "b", "unit_id": 1},
            ]}],
        }
    )  # fmt: skip
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", taken_port))
        taken.listen()
        with pytest.raises(simulators.EndpointError, match="endpoint 'b'"):
            async with simulators.Simulator(config):
                pass
        data = config.model_dump()
        data["endpoints"], data["control"] = data["endpoints"][:1], {"port": taken_port}
        data["lines"][0]["machines"] = data["lines"][0]["machines"][:1]
        control = FactoryConfig.model_validate(data)
        with pytest.raises(simulators.EndpointError, match="endpoint 'control'"):
            async with simulators.Simulator(control):
                pass
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", free))  # endpoint 'a' let its port go


def test_gateway_config_logs_in_as_a_factory_user(tmp_path: Path) -> None:
    out = tmp_path / "gateway.yaml"
    args = ["sim", "gateway-config", "-c", str(DEMO), "-o", str(out)]
    args += ["--opcua-security", "SignAndEncrypt", "--opcua-user", "gateway"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    secret = tmp_path / "opcua-password.txt"
    assert secret.read_text(encoding="utf-8") == "demo-only\n"
    assert secret.stat().st_mode & 0o077 == 0
    config = _configfile.load(out)
    opcua = [d.connection for d in config.devices if d.connection.protocol == "opcua"]  # type: ignore[attr-defined]
    assert opcua
    assert all(c.username == "gateway" for c in opcua)
    assert all(c.password_file == str(secret) for c in opcua)
    nobody = CliRunner().invoke(cli, [*args[:6], "--opcua-user", "nobody"])
    assert nobody.exit_code == 1
    assert "OPC UA user 'nobody'" in nobody.output
    to_stdout = CliRunner().invoke(
        cli, ["sim", "gateway-config", "-c", str(DEMO), "--opcua-user", "gateway"]
    )
    assert to_stdout.exit_code == 2
