"""Browse a server for the variables a gateway config could read.

Starts at the Objects folder and follows hierarchical references through objects and
folders (not into variables, whose children are properties, nor into the server's own
``Server`` object), then reads each variable's DataType, ValueRank and AccessLevel in bulk.
Scalars of the built-in types the gateway knows and that the server lets us read are kept.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from asyncua import Node, ua

from edge._model import OpcUa
from edge.drivers.opcua.errors import DeviceUnavailable
from edge.drivers.opcua.session import configure, new_client

#: built-in DataType ids → gateway data types
TYPES = {
    ua.ObjectIds.Boolean: "bool", ua.ObjectIds.SByte: "int8", ua.ObjectIds.Byte: "uint8",
    ua.ObjectIds.Int16: "int16", ua.ObjectIds.UInt16: "uint16", ua.ObjectIds.Int32: "int32",
    ua.ObjectIds.UInt32: "uint32", ua.ObjectIds.Int64: "int64", ua.ObjectIds.UInt64: "uint64",
    ua.ObjectIds.Float: "float32", ua.ObjectIds.Double: "float64",
    ua.ObjectIds.String: "string", ua.ObjectIds.ByteString: "bytes",
}  # fmt: skip
_READ = 1000


@dataclass(frozen=True, slots=True)
class Variable:
    """A readable scalar variable: its NodeId, browse path below Objects and gateway type."""

    node_id: str
    path: tuple[str, ...]
    type: str


@dataclass
class Found:
    variables: list[Variable]
    #: variables left out: arrays, types the gateway does not read, not readable
    skipped: int = 0
    truncated: bool = False


async def discover(settings: OpcUa, *, max_variables: int = 10_000, depth: int = 12) -> Found:
    """Every readable scalar variable below Objects, at most ``max_variables``."""
    client = new_client(settings)
    try:
        async with asyncio.timeout(4 * settings.timeout + 1):
            await configure(client, settings)
            await client.connect()
    except Exception as exc:
        raise DeviceUnavailable(settings.endpoint, f"cannot connect: {exc}") from exc
    try:
        return await _browse(client.nodes.objects, max_variables, depth)
    finally:
        await client.disconnect()


async def _browse(objects: Node, max_variables: int, depth: int) -> Found:
    server = ua.NodeId(ua.ObjectIds.Server)
    candidates: list[tuple[Node, tuple[str, ...]]] = []
    level: list[tuple[Node, tuple[str, ...]]] = [(objects, ())]
    truncated = False
    for _ in range(depth):
        below: list[tuple[Node, tuple[str, ...]]] = []
        for node, path in level:
            for ref in await node.get_references(
                refs=ua.ObjectIds.HierarchicalReferences,
                direction=ua.BrowseDirection.Forward,
                nodeclassmask=ua.NodeClass.Object | ua.NodeClass.Variable,
            ):
                child = Node(node.session, ref.NodeId)
                if ref.NodeId == server:
                    continue
                name = (*path, ref.BrowseName.Name)
                if ref.NodeClass == ua.NodeClass.Variable:
                    if len(candidates) >= max_variables:
                        truncated = True
                        continue
                    candidates.append((child, name))
                else:
                    below.append((child, name))
        if not below:
            break
        level = below
    found = Found([], truncated=truncated)
    for start in range(0, len(candidates), _READ):
        chunk = candidates[start : start + _READ]
        nodes = [node for node, _ in chunk]
        session = objects.session
        kinds = await session.read_attributes([n.nodeid for n in nodes], ua.AttributeIds.DataType)
        ranks = await session.read_attributes([n.nodeid for n in nodes], ua.AttributeIds.ValueRank)
        access = await session.read_attributes(
            [n.nodeid for n in nodes], ua.AttributeIds.UserAccessLevel
        )
        for (node, path), kind, rank, level_dv in zip(chunk, kinds, ranks, access, strict=True):
            datatype = kind.Value.Value if kind.Value is not None else None
            gateway_type = (
                TYPES.get(datatype.Identifier)
                if isinstance(datatype, ua.NodeId) and datatype.NamespaceIndex == 0
                else None
            )
            scalar = rank.Value is not None and rank.Value.Value == ua.ValueRank.Scalar
            readable = (
                level_dv.Value is not None
                and int(level_dv.Value.Value or 0) & ua.AccessLevel.CurrentRead.mask
            )
            if gateway_type is None or not scalar or not readable:
                found.skipped += 1
                continue
            found.variables.append(Variable(node.nodeid.to_string(), path, gateway_type))
    return found
