"""``guantong edge discover`` and ``guantong edge read`` against the simulators, as a
technician runs them: discover writes a config that checks and reads exactly."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

from simulators import Machine, ModbusEndpoint, OpcUaEndpoint

ROOT = Path(__file__).resolve().parents[3]
Start = Callable[..., Awaitable[OpcUaEndpoint]]


async def guantong(*args: str) -> tuple[int, str, str]:
    """Run the command in its own process while this event loop keeps serving the simulator."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "guantong", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def modbus_device(m: Machine, port: int) -> dict[str, Any]:
    tags = []
    for spec in m.profile.tags:
        tag: dict[str, Any] = {"name": spec.name, "address": spec.address, "type": spec.type}
        for key in ("order", "length"):
            if getattr(spec, key):
                tag[key] = getattr(spec, key)
        if spec.scale != 1.0:
            tag["scale"] = spec.scale
        tags.append(tag)
    return {
        "name": m.name,
        "id": f"88.709.911/dev.{m.name}",
        "connection": {"protocol": "modbus-tcp", "host": "127.0.0.1", "port": port,
                       "unit_id": m.unit_id},
        "groups": [{"name": "all", "interval": "1s", "tags": tags}],
    }  # fmt: skip


async def test_discover_writes_a_config_that_reads_exactly(
    sim: Any, make_server: Start, tmp_path: Path
) -> None:
    cnc, kiln = sim.machine("cnc"), sim.machine("kiln")
    server = await make_server(cnc, kiln)
    config = tmp_path / "gateway.yaml"
    code, _, err = await guantong(
        "edge", "discover", server.url, "-o", str(config), "--prefix", "88.709.911"
    )
    assert code == 0, err
    assert f"wrote {config}: 2 devices" in err
    doc = yaml.safe_load(config.read_text(encoding="utf-8"))
    devices = {d["name"]: d for d in doc["devices"]}
    assert set(devices) == {"cnc-1", "kiln-1"}
    for m in (cnc, kiln):
        tags = {t["name"]: t for t in devices[m.name]["groups"][0]["tags"]}
        assert set(tags) == {spec.name for spec in m.profile.tags}
        for spec in m.profile.tags:
            assert tags[spec.name]["address"] == sim.node_id(m, spec.name)
            assert tags[spec.name]["type"] == sim_type(spec.opcua_type)
    code, _, err = await guantong("config", "check", str(config))
    assert code == 0, err

    # a Modbus device in the same file: one command reads both protocols
    meter = Machine("meter-9", "meter", sim.SEED, clock=lambda: sim.T, unit_id=1)
    modbus = ModbusEndpoint("mb", [meter])
    await modbus.start()
    try:
        doc["devices"].append(modbus_device(meter, modbus.port))
        config.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        code, out, err = await guantong("edge", "read", "-c", str(config), "--once")
    finally:
        await modbus.stop()
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    for m in (cnc, kiln):
        got = {x["tag"]: x["value"] for x in lines if x["device"] == m.name}
        assert got == sim.expected(m)
        assert all(x["quality"] == "good" for x in lines if x["device"] == m.name)
    raws = meter.raw(meter.profile.tags, sim.T)
    got = {x["tag"]: x["value"] for x in lines if x["device"] == "meter-9"}
    assert got == {
        s.name: raws[s.name] * s.scale if s.scale != 1.0 else raws[s.name]  # type: ignore[operator]
        for s in meter.profile.tags
    }


def sim_type(opcua_type: str) -> str:
    return {"Boolean": "bool", "UInt16": "uint16", "UInt32": "uint32", "Float": "float32",
            "Double": "float64", "String": "string"}[opcua_type]  # fmt: skip


async def test_unreachable_opcua_device_exits_3_with_bad_samples(sim: Any, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    url = f"opc.tcp://127.0.0.1:{port}/"
    device = sim.device_for(sim.machine("meter"), url).model_dump(mode="json")
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump({
            "kind": "gateway",
            "gateway": {"id": "88.709.911/gw.t", "enterprise": "88.709.911/firm",
                        "key_file": "gw.key"},
            "devices": [device],
        }),
        encoding="utf-8",
    )  # fmt: skip
    code, out, err = await guantong("edge", "read", "-c", str(config), "--once")
    assert code == 3
    assert "device 'meter-1' down" in err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == len(sim.machine("meter").profile.tags)
    assert all(x["quality"] == "bad" and x["value"] is None for x in lines)
    code, _, err = await guantong(
        "edge", "discover", url, "-o", str(tmp_path / "x.yaml"), "--prefix", "88.709.911"
    )
    assert code == 3
    assert err.startswith("error: ")
    assert not (tmp_path / "x.yaml").exists()


async def test_discover_over_sign_and_encrypt_with_a_login(
    sim: Any, make_server: Start, tmp_path: Path
) -> None:
    m = sim.machine("meter")
    server = await make_server(
        m, security=("SignAndEncrypt",), anonymous=False, users={"gateway": "s3cret"}
    )
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret\n", encoding="utf-8")
    config = tmp_path / "site" / "gateway.yaml"
    config.parent.mkdir()
    code, _, err = await guantong(
        "edge", "discover", server.url, "-o", str(config), "--prefix", "88.709.911",
        "--security-mode", "SignAndEncrypt", "--username", "gateway",
        "--password-file", str(secret),
    )  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "site" / "opcua-client.der").exists()  # made next to the config
    (device,) = yaml.safe_load(config.read_text(encoding="utf-8"))["devices"]
    assert device["connection"]["security_mode"] == "SignAndEncrypt"
    assert device["connection"]["password_file"] == str(secret)
    code, out, err = await guantong("edge", "read", "-c", str(config), "--once")
    assert code == 0, err
    got = {x["tag"]: x["value"] for x in map(json.loads, out.splitlines())}
    assert got == sim.expected(m)
