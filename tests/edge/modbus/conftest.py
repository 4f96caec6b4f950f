"""The project's PLC simulators as real Modbus peers, and device configs that match them.

Simulated machines run on a frozen clock, so every value the driver reads is exactly
``simulators.value(SEED, profile, machine, tag, T)`` (times the tag's scale).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from edge import Device
from simulators import Machine, ModbusEndpoint

SEED = 20261123
T = 1_795_000_000.0  # a fixed instant: the machines' clocks stand still there

#: one machine of each profile, behind one endpoint as behind an RS-485 gateway
PROFILES = ("cnc", "injection", "kiln", "extrusion", "reflow", "meter", "compressor")


def machine(profile: str, unit_id: int = 1, name: str | None = None) -> Machine:
    return Machine(name or f"{profile}-1", profile, seed=SEED, unit_id=unit_id, clock=lambda: T)


def device_for(m: Machine, port: int, **connection: Any) -> Device:
    """A device config reading every tag of a simulated machine, grouped as its profile says."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for spec in m.profile.tags:
        tag: dict[str, Any] = {"name": spec.name, "address": spec.address, "type": spec.type}
        if spec.order:
            tag["order"] = spec.order
        if spec.length:
            tag["length"] = spec.length
        if spec.scale != 1.0:
            tag["scale"] = spec.scale
        groups.setdefault(spec.group, []).append(tag)
    settings = {"timeout": 0.3, "retries": 0, "backoff_max": 0.2, "busy_delay": 0.05}
    settings.update(connection)
    return Device.model_validate(
        {
            "name": m.name,
            "id": f"88.709.911/dev.{m.name}",
            "connection": {
                "protocol": "modbus-tcp",
                "host": "127.0.0.1",
                "port": port,
                "unit_id": m.unit_id,
                **settings,
            },
            "groups": [
                {"name": group, "interval": "100ms", "tags": tags} for group, tags in groups.items()
            ],
        }
    )


def expected(m: Machine) -> dict[str, object]:
    """What a correct driver reads from ``m``: raw values, scaled like the config says."""
    raws = m.raw(m.profile.tags, T)
    return {
        spec.name: raws[spec.name] * spec.scale if spec.scale != 1.0 else raws[spec.name]  # type: ignore[operator]
        for spec in m.profile.tags
    }


class Sim:
    """The helpers above, handed to tests as the ``sim`` fixture (conftest is not importable)."""

    SEED = SEED
    T = T
    PROFILES = PROFILES
    machine = staticmethod(machine)
    device_for = staticmethod(device_for)
    expected = staticmethod(expected)


@pytest.fixture
def sim() -> type[Sim]:
    return Sim


@pytest.fixture
async def make_endpoint() -> AsyncIterator[Callable[..., Awaitable[ModbusEndpoint]]]:
    """Start simulator endpoints on free ports; all are stopped after the test."""
    started: list[ModbusEndpoint] = []

    async def start(*machines: Machine, **options: Any) -> ModbusEndpoint:
        endpoint = ModbusEndpoint(f"sim{len(started)}", list(machines), **options)
        await endpoint.start()
        started.append(endpoint)
        return endpoint

    yield start
    for endpoint in started:
        await endpoint.stop()
