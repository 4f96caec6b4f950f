"""From a validated device config to what the driver runs: per group, its planned requests.

The config model itself (tags, addresses, :class:`edge.ModbusTcp`, :class:`edge.ModbusRtu`
and their :class:`edge.ModbusOptions`) lives in ``edge._model`` with the rest of the gateway
config; this module compiles it once, at start, so that polling does no parsing.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge._model import Device, Group, ModbusRtu, ModbusTcp
from edge.drivers.modbus.codec import compile_tag
from edge.drivers.modbus.planner import Limits, Request, plan


class NotModbus(ValueError):
    """The device is not reached over Modbus."""


@dataclass(frozen=True, slots=True)
class GroupPlan:
    """A group as the driver polls it. Only names are kept of the tags, not the config
    models: with 100,000 tags the pydantic models would double the driver's memory."""

    name: str
    interval: float
    requests: tuple[Request, ...]
    tag_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DevicePlan:
    name: str
    id: str
    connection: ModbusTcp | ModbusRtu
    groups: tuple[GroupPlan, ...]

    @property
    def request_count(self) -> int:
        return sum(len(g.requests) for g in self.groups)

    @property
    def tag_count(self) -> int:
        return sum(len(g.tag_names) for g in self.groups)


def compile_group(group: Group, connection: ModbusTcp | ModbusRtu) -> GroupPlan:
    limits = Limits(connection.max_registers, connection.max_bits, connection.max_gap)
    requests = plan(
        [compile_tag(tag) for tag in group.tags], limits, connection.unreadable_ranges()
    )
    return GroupPlan(
        group.name, group.interval, tuple(requests), tuple(tag.name for tag in group.tags)
    )


def compile_device(device: Device) -> DevicePlan:
    """Plan every group of a Modbus device; the model has already checked what the plan needs."""
    connection = device.connection
    if not isinstance(connection, ModbusTcp | ModbusRtu):
        raise NotModbus(f"device {device.name!r} uses {connection.protocol}, not Modbus")
    groups = tuple(compile_group(group, connection) for group in device.groups)
    return DevicePlan(device.name, device.id, connection, groups)


def describe(connection: ModbusTcp | ModbusRtu) -> str:
    """Where the device is, for logs and events: ``tcp 10.0.0.5:502 unit 1``."""
    if isinstance(connection, ModbusTcp):
        kind = "rtu-over-tcp" if connection.framer == "rtu" else "tcp"
        return f"{kind} {connection.host}:{connection.port} unit {connection.unit_id}"
    return f"rtu {connection.port} unit {connection.unit_id}"
