"""The project's OPC UA simulator as a real peer over TCP, and device configs that match it.

``frozen`` machines stand still at :data:`T`, so every value a driver reads is exactly
``spec.engineering(simulators.values(SEED, profile, machine, T)[tag])`` with SourceTimestamp
``floor(T)``; ``live`` machines follow the real clock, for subscriptions that must see changes.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import simulators
from edge import Device
from simulators import Faults, Machine, OpcUaEndpoint

SEED = 20261123
FACTORY = "TestWorks"
T = math.floor(time.time()) - 7200 + 0.5
#: the OPC UA type a profile tag is served as → the gateway data type
TYPES = {
    "Boolean": "bool", "Int16": "int16", "UInt16": "uint16", "Int32": "int32",
    "UInt32": "uint32", "Int64": "int64", "UInt64": "uint64", "Float": "float32",
    "Double": "float64", "String": "string",
}  # fmt: skip


def machine(profile: str, name: str | None = None, *, live: bool = False) -> Machine:
    clock = time.time if live else (lambda: T)
    return Machine(name or f"{profile}-1", profile, SEED, line="Line1", clock=clock)


def node_id(m: Machine, tag: str) -> str:
    return f"ns=2;s={FACTORY}/{m.line}/{m.name}/{tag}"


def device_for(
    m: Machine, url: str, *, interval: str = "1s", groups: bool = True, **connection: Any
) -> Device:
    """A device reading every tag of ``m``, grouped as its profile says (or in one group)."""
    by_group: dict[str, list[dict[str, Any]]] = {}
    for spec in m.profile.tags:
        tag: dict[str, Any] = {
            "name": spec.name,
            "address": node_id(m, spec.name),
            "type": TYPES[spec.opcua_type],
        }
        if spec.length:
            tag["length"] = spec.length
        by_group.setdefault(spec.group if groups else "all", []).append(tag)
    base_dir = connection.pop("base_dir", None)
    settings: dict[str, Any] = {"timeout": 1.0, "watchdog": 1.0, "backoff_max": 0.5}
    settings.update(connection)
    return Device.model_validate(
        {
            "name": m.name,
            "id": f"88.709.911/dev.{m.name}",
            "connection": {"protocol": "opcua", "endpoint": url, **settings},
            "groups": [
                {"name": name, "interval": interval, "tags": tags}
                for name, tags in by_group.items()
            ],
        },
        context={"base_dir": base_dir},
    )


def expected(m: Machine, t: float = T) -> dict[str, object]:
    """What a correct client reads from ``m`` for the second of ``t``."""
    raws = simulators.values(SEED, m.profile_name, m.name, math.floor(t))
    return {spec.name: spec.engineering(raws[spec.name]) for spec in m.profile.tags}


class Sim:
    """The helpers above, handed to tests as the ``sim`` fixture (conftest is not importable)."""

    SEED = SEED
    T = T
    FACTORY = FACTORY
    machine = staticmethod(machine)
    node_id = staticmethod(node_id)
    device_for = staticmethod(device_for)
    expected = staticmethod(expected)

    @staticmethod
    def faults(endpoint: OpcUaEndpoint) -> Faults:
        return Faults(
            {endpoint.name: endpoint}, {m.name: (m, endpoint, "opcua") for m in endpoint.machines}
        )


@pytest.fixture(scope="session")
def sim() -> type[Sim]:
    return Sim


@pytest.fixture
async def make_server() -> AsyncIterator[Callable[..., Awaitable[OpcUaEndpoint]]]:
    """Start simulator endpoints on free ports; all are stopped after the test."""
    started: list[OpcUaEndpoint] = []

    async def start(*machines: Machine, **options: Any) -> OpcUaEndpoint:
        endpoint = OpcUaEndpoint(f"ua{len(started)}", FACTORY, list(machines), **options)
        await endpoint.start()
        started.append(endpoint)
        return endpoint

    yield start
    for endpoint in started:
        await endpoint.stop()
