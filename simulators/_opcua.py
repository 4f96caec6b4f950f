"""An OPC UA server (asyncua) with ``Objects/<Factory>/<Line>/<Machine>/<Tag>``.

Every tag is a variable with NodeId ``ns=2;s=<Factory>/<Line>/<Machine>/<Tag>``, its built-in
data type (scaled integers of the Modbus maps are served as Double engineering values), an
``EngineeringUnits`` property (UNECE codes) when it has a unit, and a SourceTimestamp: the
whole second the value belongs to, so a client checks ``value(..., t=SourceTimestamp)``.
Values are written once per second; the address space is built with one AddNodes call,
since creating nodes one by one takes seconds per thousand.

Security: endpoints with None and Basic256Sha256 Sign / SignAndEncrypt, with a self-signed
certificate made at start-up; anonymous and username logins. Connection faults are applied by
a :class:`~simulators._relay.Relay` in front of the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import logging
import math
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any, Self

from asyncua import Server, ua
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from simulators._exceptions import EndpointError
from simulators._machine import Machine
from simulators._profiles import TagSpec
from simulators._relay import Relay

logger = logging.getLogger(__name__)

NAMESPACE = "urn:guantong:simulators"
APPLICATION_URI = "urn:guantong:simulators:server"
#: security modes of the factory file → asyncua policy types
SECURITY = {
    "None": ua.SecurityPolicyType.NoSecurity,
    "Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}
#: our unit strings → UNECE Rec. 20 common codes, as OPC UA EUInformation wants them
_UNECE = {
    "°C": "CEL", "bar": "BAR", "rpm": "RPM", "%": "P1", "mm/min": "H81", "mm": "MMT",
    "h": "HUR", "s": "SEC", "m³/h": "MQH", "m³": "MTQ", "Pa": "PAL", "mm/s": "C16",
    "m/min": "2X", "cm/min": "H77", "ppm": "59", "kN": "B47", "V": "VLT", "A": "AMP",
    "kW": "KWT", "kWh": "KWH", "kvarh": "K3", "Hz": "HTZ",
}  # fmt: skip
_UNITS_URI = "http://www.opcfoundation.org/UA/units/un/cefact"


def unit_id(code: str) -> int:
    """The EUInformation UnitId of a UNECE code (its ASCII bytes as one integer)."""
    value = 0
    for char in code:
        value = value << 8 | ord(char)
    return value


def eu_information(unit: str) -> ua.EUInformation:
    code = _UNECE.get(unit)
    return ua.EUInformation(
        NamespaceUri=_UNITS_URI,
        UnitId=unit_id(code) if code else -1,
        DisplayName=ua.LocalizedText(unit),
        Description=ua.LocalizedText(unit),
    )


def node_path(factory: str, machine: Machine, tag: str) -> str:
    return f"{factory}/{machine.line}/{machine.name}/{tag}"


class _Users:
    """asyncua's user manager protocol: anonymous (if allowed) and named users."""

    def __init__(self, anonymous: bool, users: Mapping[str, str]) -> None:
        self.anonymous = anonymous
        self.users = dict(users)

    def get_user(
        self,
        iserver: object,
        username: str | None = None,
        password: str | None = None,
        certificate: object = None,
    ) -> User | None:
        if username is None:
            return User(role=UserRole.User) if self.anonymous else None
        if username in self.users and self.users[username] == password:
            return User(role=UserRole.User, name=username)
        return None


def _certificate(host: str) -> tuple[Any, x509.Certificate]:
    key = cert_gen.generate_private_key()
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(APPLICATION_URI),
        x509.DNSName("localhost"),
    ]
    with contextlib.suppress(ValueError):
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    for name in dict.fromkeys((socket.gethostname(), host)):
        if name and not name[0].isdigit() and name != "localhost":
            names.append(x509.DNSName(name))
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        "Guantong PLC simulator",
        {"organizationName": "Guantong"},
        names,
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    return key, cert


class OpcUaEndpoint:
    """The OPC UA server of a factory's machines; an async context manager.

    ``hang``, ``latency``, :meth:`drop` and :meth:`restart` act on client connections (through
    the relay); machine faults (bad status codes, NaN, out of range) show on the next update,
    or at once after :meth:`refresh`.
    """

    def __init__(
        self,
        name: str,
        factory: str,
        machines: Sequence[Machine],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        security: Sequence[str] = ("None",),
        anonymous: bool = True,
        users: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.factory = factory
        self.machines = list(machines)
        self.host = host
        self.port = port
        self.security = tuple(security)
        self.anonymous = anonymous
        self.users = dict(users or {})
        self.certificate: x509.Certificate | None = None
        self._server: Server | None = None
        self._relay: Relay | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._nodes: list[tuple[Machine, list[tuple[TagSpec, ua.NodeId, ua.VariantType]]]] = []

    @property
    def url(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}/"

    @property
    def namespace_index(self) -> int:
        return 2

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- connection faults, through the relay ---------------------------------------------

    @property
    def hang(self) -> bool:
        return self._relay is not None and self._relay.hang

    @hang.setter
    def hang(self, on: bool) -> None:
        if self._relay is not None:
            self._relay.hang = on

    @property
    def latency(self) -> float:
        return 0.0 if self._relay is None else self._relay.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if self._relay is not None:
            self._relay.latency = seconds

    def drop(self) -> int:
        return 0 if self._relay is None else self._relay.drop()

    def restart(self, downtime: float) -> None:
        if self._relay is not None:
            self._relay.restart(downtime)

    @property
    def running(self) -> bool:
        return self._relay is not None and self._relay.running

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        started = time.perf_counter()
        relay = Relay(self.name, self.host, self.port, ("127.0.0.1", 0))
        try:
            await relay.start()
        except OSError as exc:
            raise EndpointError(self.name, f"cannot listen on {self.host}:{self.port}") from exc
        self.port = relay.port
        self._relay = relay
        server: Server | None = None
        try:
            server = await self._make_server()
            await self._build(server)
            server.socket_address = ("127.0.0.1", 0)
            await server.start()
        except BaseException:
            await relay.stop()
            self._relay = None
            if server is not None:
                with contextlib.suppress(Exception):
                    await server.stop()
            raise
        relay.target = ("127.0.0.1", server.bserver.port)  # type: ignore[union-attr]
        self._server = server
        await self.refresh()
        self._ticker = asyncio.get_running_loop().create_task(
            self._tick(), name=f"opcua values {self.name}"
        )
        logger.info(
            "%s: OPC UA on %s, %d machines, started in %.2f s",
            self.name,
            self.url,
            len(self.machines),
            time.perf_counter() - started,
        )

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._relay is not None:
            await self._relay.stop()
            self._relay = None
        if self._server is not None:
            await self._server.stop()
            self._server = None

    async def _make_server(self) -> Server:
        server = Server(user_manager=_Users(self.anonymous, self.users))  # type: ignore[arg-type]
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name(f"Guantong simulator {self.factory}")
        await server.set_application_uri(APPLICATION_URI)
        server.set_security_policy([SECURITY[mode] for mode in self.security])
        tokens: list[type] = [ua.UserNameIdentityToken] if self.users else []
        if self.anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        server.set_identity_tokens(tokens)
        if any(mode != "None" for mode in self.security):
            key, cert = await asyncio.to_thread(_certificate, self.host)
            server.iserver.certificate = cert
            server.iserver.private_key = key
            self.certificate = cert
        index = await server.register_namespace(NAMESPACE)
        if index != self.namespace_index:
            raise EndpointError(self.name, f"namespace index {index}, expected 2")
        return server

    async def _build(self, server: Server) -> None:
        """Create the whole address space with one AddNodes call."""
        ns = self.namespace_index
        items: list[ua.AddNodesItem] = []
        factory_id = ua.NodeId(self.factory, ns)
        items.append(_folder(factory_id, self.factory, ua.NodeId(ua.ObjectIds.ObjectsFolder)))
        for line in dict.fromkeys(m.line for m in self.machines):
            items.append(_folder(ua.NodeId(f"{self.factory}/{line}", ns), line, factory_id))
        self._nodes = []
        for machine in self.machines:
            machine_id = ua.NodeId(f"{self.factory}/{machine.line}/{machine.name}", ns)
            line_id = ua.NodeId(f"{self.factory}/{machine.line}", ns)
            items.append(_object(machine_id, machine.name, line_id, machine.profile.title))
            raws = machine.raw(machine.profile.tags, math.floor(machine.clock()))
            nodes = []
            for spec in machine.profile.tags:
                nodeid = ua.NodeId(node_path(self.factory, machine, spec.name), ns)
                vtype = getattr(ua.VariantType, spec.opcua_type)
                initial = ua.Variant(spec.engineering(raws[spec.name]), vtype)
                items.append(_variable(nodeid, spec, machine_id, initial, ns))
                if spec.unit:
                    items.append(_eu_property(nodeid, spec.unit, ns))
                if not spec.writable:
                    nodes.append((spec, nodeid, vtype))
            self._nodes.append((machine, nodes))
        results = await server.iserver.isession.add_nodes(items)
        for item, result in zip(items, results, strict=True):
            if not result.StatusCode.is_good():
                raise EndpointError(
                    self.name, f"cannot add {item.RequestedNewNodeId}: {result.StatusCode}"
                )

    async def refresh(self) -> None:
        """Write the current value of every read-only tag (writable ones keep what clients
        wrote), with the machine's status-code fault if it has one."""
        server = self._server
        if server is None:
            return
        now = dt.datetime.now(dt.UTC)
        for machine, nodes in self._nodes:
            t = math.floor(machine.clock())
            stamp = dt.datetime.fromtimestamp(t, dt.UTC)
            raws = machine.raw([spec for spec, _, _ in nodes], t)
            status = machine.faults.status
            code = ua.StatusCode(getattr(ua.StatusCodes, status) if status else 0)
            for spec, nodeid, vtype in nodes:
                value = ua.DataValue(
                    ua.Variant(spec.engineering(raws[spec.name]), vtype),
                    StatusCode=code,
                    SourceTimestamp=stamp,
                    ServerTimestamp=now,
                )
                await server.write_attribute_value(nodeid, value)

    async def _tick(self) -> None:
        while True:
            now = time.time()
            await asyncio.sleep(math.floor(now) + 1.0 - now + 0.001)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("%s: updating values failed", self.name)


def _folder(nodeid: ua.NodeId, name: str, parent: ua.NodeId) -> ua.AddNodesItem:
    return _object(nodeid, name, parent, name, ua.ObjectIds.FolderType)


def _object(
    nodeid: ua.NodeId,
    name: str,
    parent: ua.NodeId,
    description: str,
    type_id: int = ua.ObjectIds.BaseObjectType,
) -> ua.AddNodesItem:
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = nodeid
    item.BrowseName = ua.QualifiedName(name, nodeid.NamespaceIndex)
    item.NodeClass = ua.NodeClass.Object
    item.ParentNodeId = parent
    item.ReferenceTypeId = ua.NodeId(ua.ObjectIds.Organizes)
    item.TypeDefinition = ua.NodeId(type_id)
    attrs = ua.ObjectAttributes()
    attrs.DisplayName = ua.LocalizedText(name)
    attrs.Description = ua.LocalizedText(description)
    attrs.EventNotifier = 0
    item.NodeAttributes = attrs
    return item


def _variable(
    nodeid: ua.NodeId, spec: TagSpec, parent: ua.NodeId, initial: ua.Variant, ns: int
) -> ua.AddNodesItem:
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = nodeid
    item.BrowseName = ua.QualifiedName(spec.name, ns)
    item.NodeClass = ua.NodeClass.Variable
    item.ParentNodeId = parent
    item.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HasComponent)
    item.TypeDefinition = ua.NodeId(ua.ObjectIds.BaseDataVariableType)
    attrs = ua.VariableAttributes()
    attrs.DisplayName = ua.LocalizedText(spec.name)
    attrs.Description = ua.LocalizedText(spec.description or spec.name)
    attrs.DataType = ua.NodeId(getattr(ua.ObjectIds, spec.opcua_type))
    attrs.Value = initial
    attrs.ValueRank = ua.ValueRank.Scalar
    access = ua.AccessLevel.CurrentRead.mask
    if spec.writable:
        access |= ua.AccessLevel.CurrentWrite.mask
    attrs.AccessLevel = access
    attrs.UserAccessLevel = access
    item.NodeAttributes = attrs
    return item


def _eu_property(parent: ua.NodeId, unit: str, ns: int) -> ua.AddNodesItem:
    item = ua.AddNodesItem()
    item.RequestedNewNodeId = ua.NodeId(f"{parent.Identifier}/EngineeringUnits", ns)
    item.BrowseName = ua.QualifiedName("EngineeringUnits", 0)
    item.NodeClass = ua.NodeClass.Variable
    item.ParentNodeId = parent
    item.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HasProperty)
    item.TypeDefinition = ua.NodeId(ua.ObjectIds.PropertyType)
    attrs = ua.VariableAttributes()
    attrs.DisplayName = ua.LocalizedText("EngineeringUnits")
    attrs.DataType = ua.NodeId(ua.ObjectIds.EUInformation)
    attrs.Value = ua.Variant(eu_information(unit), ua.VariantType.ExtensionObject)
    attrs.ValueRank = ua.ValueRank.Scalar
    attrs.AccessLevel = ua.AccessLevel.CurrentRead.mask
    attrs.UserAccessLevel = ua.AccessLevel.CurrentRead.mask
    item.NodeAttributes = attrs
    return item
