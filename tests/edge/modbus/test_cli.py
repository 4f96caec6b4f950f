"""``guantong edge read``, run as a technician would, against a simulator over TCP."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

from simulators import ModbusEndpoint

ROOT = Path(__file__).resolve().parents[3]


async def guantong(*args: str) -> tuple[int, str, str]:
    """Run the command in its own process while this event loop keeps serving the simulator."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "guantong",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def write_config(path: Path, devices: list[dict[str, Any]]) -> Path:
    config = {
        "kind": "gateway",
        "gateway": {
            "id": "88.709.911/gw.test",
            "enterprise": "88.709.911/firm",
            "key_file": "gw.key",
        },
        "devices": devices,
    }
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


async def test_read_once_prints_one_json_line_per_sample(
    sim: Any, make_endpoint: Callable[..., Awaitable[ModbusEndpoint]], tmp_path: Path
) -> None:
    meter, kiln = sim.machine("meter", unit_id=1), sim.machine("kiln", unit_id=2)
    endpoint = await make_endpoint(meter, kiln)
    devices = [
        sim.device_for(m, endpoint.port).model_dump(mode="json", exclude_defaults=True)
        for m in (meter, kiln)
    ]
    config = write_config(tmp_path / "gateway.yaml", devices)

    code, out, err = await guantong(
        "edge", "read", "-c", str(config), "--device", "meter-1", "--once"
    )
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert {line["tag"]: line["value"] for line in lines} == sim.expected(meter)
    assert {line["device"] for line in lines} == {"meter-1"}
    assert all(line["quality"] == "good" for line in lines)
    assert all(line["ts"].endswith("Z") for line in lines)
    assert err == ""

    code, out, err = await guantong("edge", "read", "-c", str(config), "--once")
    assert code == 0, err
    tags = {(line["device"], line["tag"]) for line in map(json.loads, out.splitlines())}
    assert len(tags) == len(meter.profile.tags) + len(kiln.profile.tags)


async def test_unreachable_device_exits_3_and_prints_bad_samples(
    sim: Any, make_endpoint: Callable[..., Awaitable[ModbusEndpoint]], tmp_path: Path
) -> None:
    meter = sim.machine("meter")
    endpoint = await make_endpoint(meter)
    endpoint.hang = True
    device = sim.device_for(meter, endpoint.port).model_dump(mode="json", exclude_defaults=True)
    config = write_config(tmp_path / "gateway.yaml", [device])
    code, out, err = await guantong("edge", "read", "-c", str(config), "--once")
    assert code == 3
    assert "device 'meter-1' down" in err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == len(meter.profile.tags)
    assert all(line["quality"] == "bad" and line["value"] is None for line in lines)


async def test_config_errors_and_unknown_devices(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: gateway\ndevices: []\n", encoding="utf-8")
    code, _, err = await guantong("edge", "read", "-c", str(broken), "--once")
    assert code == 1
    assert err.startswith(f"error: {broken}")
    config = ROOT / "configs" / "gateway.example.yaml"
    code, _, err = await guantong("edge", "read", "-c", str(config), "--device", "x", "--once")
    assert code == 2
    assert "no device 'x'" in err
