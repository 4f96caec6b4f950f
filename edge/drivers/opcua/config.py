"""From a validated device config to what the driver runs: per group, its nodes and codecs.

The config model (:class:`edge.OpcUa` and the tags' NodeId addresses) lives in
``edge._model``; this module compiles it once, at start, so that reading and notifications
do no parsing. Every tag gets a client handle, its index in the device, which is how
subscription notifications find their tag again.
"""

from __future__ import annotations

from dataclasses import dataclass

from asyncua import ua

from edge._deadband import Rule
from edge._model import Device, OpcUa, Tag
from edge.drivers.opcua.convert import TagCodec


class NotOpcUa(ValueError):
    """The device is not reached over OPC UA."""


@dataclass(frozen=True, slots=True)
class GroupPlan:
    name: str
    interval: float
    tags: tuple[Tag, ...]
    nodes: tuple[ua.NodeId, ...]
    codecs: tuple[TagCodec, ...]
    #: client handle of each tag, for monitored items
    handles: tuple[int, ...]

    @property
    def tag_names(self) -> tuple[str, ...]:
        return tuple(tag.name for tag in self.tags)


@dataclass(frozen=True, slots=True)
class DevicePlan:
    name: str
    id: str
    connection: OpcUa
    groups: tuple[GroupPlan, ...]

    @property
    def tag_count(self) -> int:
        return sum(len(g.tags) for g in self.groups)

    def rules(self) -> dict[str, Rule]:
        return {
            tag.name: Rule(tag.deadband, tag.deadband_percent, tag.max_silence)
            for group in self.groups
            for tag in group.tags
        }


def compile_device(device: Device) -> DevicePlan:
    connection = device.connection
    if not isinstance(connection, OpcUa):
        raise NotOpcUa(f"device {device.name!r} uses {connection.protocol}, not OPC UA")
    groups = []
    handle = 1
    for group in device.groups:
        nodes = []
        for tag in group.tags:
            try:
                nodes.append(ua.NodeId.from_string(tag.address))
            except Exception as exc:  # asyncua raises several types for a bad NodeId
                raise ValueError(
                    f"device {device.name!r} tag {tag.name!r}: {tag.address!r}: {exc}"
                ) from None
        handles = tuple(range(handle, handle + len(group.tags)))
        handle += len(group.tags)
        groups.append(
            GroupPlan(
                group.name,
                group.interval,
                group.tags,
                tuple(nodes),
                tuple(TagCodec(tag) for tag in group.tags),
                handles,
            )
        )
    return DevicePlan(device.name, device.id, connection, tuple(groups))


def describe(connection: OpcUa) -> str:
    """Where the device is, for logs and events: ``opc.tcp://10.0.0.5:4840 (Sign)``."""
    mode = connection.security_mode
    return connection.endpoint if mode == "None" else f"{connection.endpoint} ({mode})"
