"""OPC UA: a plain asyncua client browses and reads every profile as value() predicts."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import Client, ua
from asyncua.crypto import cert_gen
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

import simulators
from simulators import PROFILES, Machine, OpcUaEndpoint

pytestmark = pytest.mark.asyncio(loop_scope="module")

SEED = 77
FACTORY = "TestWorks"
T = math.floor(time.time()) - 3600 + 0.25  # a frozen instant: every read sees this second
LINES = {name: ("Line1" if i % 2 else "Line2") for i, name in enumerate(sorted(PROFILES))}


def frozen() -> float:
    return T


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server() -> AsyncIterator[OpcUaEndpoint]:
    machines = [
        Machine(f"{name}-01", name, SEED, line=LINES[name], clock=frozen) for name in PROFILES
    ]
    async with OpcUaEndpoint("ua", FACTORY, machines) as ep:
        yield ep


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(server: OpcUaEndpoint) -> AsyncIterator[Client]:
    async with Client(server.url, watchdog_intervall=30) as c:
        yield c


def node_id(profile: str, tag: str) -> str:
    return f"ns=2;s={FACTORY}/{LINES[profile]}/{profile}-01/{tag}"


async def test_the_address_space_is_factory_line_machine_tag(client: Client) -> None:
    factory = await client.nodes.objects.get_child(f"2:{FACTORY}")
    lines = {(await n.read_browse_name()).Name: n for n in await factory.get_children()}
    assert set(lines) == set(LINES.values())
    for name, line in LINES.items():
        machine = await lines[line].get_child(f"2:{name}-01")
        tags = {(await n.read_browse_name()).Name for n in await machine.get_children()}
        assert tags == {spec.name for spec in PROFILES[name].tags}


@pytest.mark.parametrize("name", sorted(PROFILES))
async def test_every_tag_reads_as_predicted(client: Client, name: str) -> None:
    specs = PROFILES[name].tags
    nodes = [client.get_node(node_id(name, spec.name)) for spec in specs]
    values = await client.read_attributes(nodes)
    types = await client.read_attributes(nodes, ua.AttributeIds.DataType)
    expected = simulators.values(SEED, name, f"{name}-01", T)
    for spec, dv, datatype in zip(specs, values, types, strict=True):
        assert dv.StatusCode.is_good(), spec.name
        assert dv.Value.VariantType.name == spec.opcua_type, spec.name
        assert datatype.Value.Value == ua.NodeId(getattr(ua.ObjectIds, spec.opcua_type))
        assert dv.Value.Value == spec.engineering(expected[spec.name]), spec.name
        if not spec.writable:
            assert dv.SourceTimestamp == dt.datetime.fromtimestamp(math.floor(T), dt.UTC)


async def test_engineering_units(client: Client) -> None:
    for name, profile in PROFILES.items():
        for spec in profile.tags:
            if spec.unit:
                eu = await client.get_node(
                    f"{node_id(name, spec.name)}/EngineeringUnits"
                ).read_value()
                assert eu.DisplayName.Text == spec.unit
                assert eu.UnitId != -1, spec.unit
    celsius = await client.get_node(
        node_id("kiln", "zone1_temp") + "/EngineeringUnits"
    ).read_value()
    assert celsius.UnitId == 4408652  # UNECE "CEL"


async def test_setpoints_are_writable_and_process_values_are_not(client: Client) -> None:
    setpoint = client.get_node(node_id("kiln", "zone2_setpoint"))
    await setpoint.write_value(ua.DataValue(ua.Variant(1490.5, ua.VariantType.Float)))
    assert await setpoint.read_value() == 1490.5
    process = client.get_node(node_id("kiln", "zone2_temp"))
    with pytest.raises(ua.UaStatusCodeError):
        await process.write_value(ua.DataValue(ua.Variant(1.0, ua.VariantType.Float)))


async def test_values_follow_the_real_clock_by_source_timestamp() -> None:
    live = Machine("comp-9", "compressor", SEED)
    async with OpcUaEndpoint("live", FACTORY, [live]) as ep, Client(ep.url) as c:
        node = c.get_node(f"ns=2;s={FACTORY}/Line1/comp-9/running_hours")
        stamps = set()
        for _ in range(2):
            dv = await node.read_data_value()
            t = dv.SourceTimestamp.timestamp()
            assert abs(time.time() - t) < 3
            spec = PROFILES["compressor"].tag("running_hours")
            raw = simulators.value(SEED, "compressor", "comp-9", "running_hours", t)
            assert dv.Value.Value == spec.engineering(raw)
            stamps.add(t)
            await _sleep_to_next_second()
        assert len(stamps) == 2  # values are updated every second


async def _sleep_to_next_second() -> None:
    await asyncio.sleep(math.floor(time.time()) + 1.2 - time.time())


# --- security --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        "test client",
        {},
        [x509.UniformResourceIdentifier("urn:guantong:test:client")],
        [ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    folder = tmp_path_factory.mktemp("client-cert")
    (folder / "cert.der").write_bytes(cert.public_bytes(Encoding.DER))
    (folder / "key.pem").write_bytes(cert_gen.dump_private_key_as_pem(key))
    return folder / "cert.der", folder / "key.pem"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def secure() -> AsyncIterator[OpcUaEndpoint]:
    machine = Machine("meter-7", "meter", SEED, clock=frozen)
    async with OpcUaEndpoint(
        "secure", FACTORY, [machine], security=("Sign", "SignAndEncrypt"), anonymous=False,
        users={"gateway": "s3cret"},
    ) as ep:  # fmt: skip
        yield ep


async def _secure_client(
    ep: OpcUaEndpoint, cert: tuple[Path, Path], mode: ua.MessageSecurityMode, password: str
) -> Client:
    c = Client(ep.url, watchdog_intervall=30)
    c.application_uri = "urn:guantong:test:client"
    await c.set_security(SecurityPolicyBasic256Sha256, str(cert[0]), str(cert[1]), mode=mode)
    c.set_user("gateway")
    c.set_password(password)
    return c


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
async def test_basic256sha256_with_a_username(
    secure: OpcUaEndpoint, client_cert: tuple[Path, Path], mode: str
) -> None:
    c = await _secure_client(secure, client_cert, getattr(ua.MessageSecurityMode, mode), "s3cret")
    async with c:
        node = c.get_node(f"ns=2;s={FACTORY}/Line1/meter-7/energy_import")
        value = await node.read_value()
    spec = PROFILES["meter"].tag("energy_import")
    assert value == spec.engineering(simulators.value(SEED, "meter", "meter-7", "energy_import", T))
    endpoints = await _endpoints(secure)
    assert {(e.SecurityPolicyUri.rsplit("#")[-1], e.SecurityMode.name) for e in endpoints} == {
        ("Basic256Sha256", "Sign"),
        ("Basic256Sha256", "SignAndEncrypt"),
    }


async def _endpoints(ep: OpcUaEndpoint) -> list[ua.EndpointDescription]:
    c = Client(ep.url)
    return list(await c.connect_and_get_server_endpoints())


async def test_wrong_password_and_anonymous_are_refused(
    secure: OpcUaEndpoint, client_cert: tuple[Path, Path]
) -> None:
    c = await _secure_client(secure, client_cert, ua.MessageSecurityMode.SignAndEncrypt, "nope")
    with pytest.raises(ua.UaError):
        await c.connect()
    await c.disconnect()
    anonymous = Client(secure.url)
    with pytest.raises(ua.UaError):
        await anonymous.connect()  # no None endpoint, no anonymous login
    await anonymous.disconnect()


async def test_subscriptions_get_each_new_second() -> None:
    """A monitored item is notified when the second (and so the value) changes."""
    start = next(  # a minute when the kiln runs, so that its O2 reading moves every second
        t
        for t in range(simulators.EPOCH + 86400 * 100, simulators.EPOCH + 86400 * 101, 60)
        if simulators.state(SEED, "kiln", "kiln-5", t) is simulators.State.RUNNING
    )
    now = [float(start)]
    kiln = Machine("kiln-5", "kiln", SEED, clock=lambda: now[0])
    spec = PROFILES["kiln"].tag("o2")
    later = next(
        start + k
        for k in range(1, 60)
        if simulators.value(SEED, "kiln", "kiln-5", "o2", start + k)
        != simulators.value(SEED, "kiln", "kiln-5", "o2", start)
    )
    seen: asyncio.Queue[ua.DataValue] = asyncio.Queue()

    class Handler:
        def datachange_notification(self, node: object, val: object, data: object) -> None:
            seen.put_nowait(data.monitored_item.Value)  # type: ignore[attr-defined]

    async with OpcUaEndpoint("sub", FACTORY, [kiln]) as ep, Client(ep.url) as c:
        subscription = await c.create_subscription(100, Handler())
        await subscription.subscribe_data_change(c.get_node(f"ns=2;s={FACTORY}/Line1/kiln-5/o2"))
        first = await asyncio.wait_for(seen.get(), 5)
        now[0] = later
        second = await asyncio.wait_for(seen.get(), 5)
        await subscription.delete()
    for dv, t in ((first, start), (second, later)):
        assert dv.SourceTimestamp.timestamp() == math.floor(t)
        assert dv.Value.Value == spec.engineering(simulators.value(SEED, "kiln", "kiln-5", "o2", t))
