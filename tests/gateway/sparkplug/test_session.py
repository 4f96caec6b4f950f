"""The gateway in Sparkplug B mode against a real Mosquitto: a host-side subscriber decodes
births, data and deaths and checks them against the specification's rules."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from _services import MqttServer

import gateway.protocol as p
from edge import Batch, ConnectivityEvent, Quality, Sample
from gateway._keys import create_key
from gateway._runtime import Gateway
from gateway.config import GatewayConfig

T = p.SparkplugDataType
M = p.SparkplugMessageType
FIRM = "88.709.911"
NS = 1_764_000_000_000_000_000
#: the tags of every test device: (name, config), with the datatype the DBIRTH must declare
TAGS = {
    "count": ({"address": "hr:0", "type": "uint16"}, T.UINT16),
    "delta": ({"address": "hr:1", "type": "int16"}, T.INT16),
    "temp": ({"address": "hr:2", "type": "float32", "scale": 0.5}, T.DOUBLE),
    "running": ({"address": "co:0", "type": "bool"}, T.BOOLEAN),
    "code": ({"address": "hr:10", "type": "string", "length": 4}, T.STRING),
    "trim": ({"address": "hr:20", "type": "int8", "byte": "low"}, T.INT8),
}


def make_config(tmp_path: Path, port: int, group: str, **uplink: Any) -> GatewayConfig:
    tags = [{"name": name, **cfg} for name, (cfg, _) in TAGS.items()]
    doc = {
        "kind": "gateway",
        "gateway": {"id": f"{FIRM}/gw.spb", "enterprise": f"{FIRM}/firm", "key_file": "gw.key"},
        "devices": [
            {
                "name": name,
                "id": f"{FIRM}/dev.{name}",
                "connection": {"protocol": "modbus-tcp", "host": "127.0.0.1", "port": 1502},
                "groups": [{"name": "g", "interval": "1s", "tags": tags}],
            }
            for name in ("kiln", "press")
        ],
        "uplink": {
            "broker": f"mqtt://127.0.0.1:{port}",
            "format": "sparkplug",
            "sparkplug_group": group,
            "checkpoint_interval": None,  # these tests count messages exactly
            **uplink,
        },
        "envelope": {"max_samples": len(TAGS), "max_delay": "50ms"},
        "health": None,
    }
    return GatewayConfig.model_validate(doc, context={"base_dir": tmp_path})


def batch(device: str, n: int) -> Batch:
    """One poll: one sample per tag, so that one batch is one envelope (``max_samples``)."""
    values: dict[str, Any] = {
        "count": n % 65536,
        "delta": -n,
        "temp": None if n % 7 == 3 else n * 0.5,
        "running": n % 2 == 0,
        "code": f"c{n % 100}",
        "trim": -(n % 128),
    }
    ts = NS + n * 1_000_000
    return Batch(
        device,
        "g",
        tuple(
            Sample(tag, v, Quality.BAD if v is None else Quality.GOOD, ts)
            for tag, v in values.items()
        ),
    )


@dataclass(frozen=True)
class Received:
    topic: p.SparkplugTopic
    payload: p.SparkplugPayload
    raw: bytes
    qos: int
    retain: bool


class Host:
    """A Sparkplug host application's view: every message of the group, decoded, in order."""

    def __init__(self, server: MqttServer, group: str) -> None:
        self.group = group
        self.messages: list[Received] = []
        self.lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"host-{group}")
        self.client.on_connect = lambda c, *_: c.subscribe(f"spBv1.0/{group}/#", qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(server.host, server.port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        topic = p.parse_sparkplug_topic(msg.topic)
        if topic.type in (M.NCMD, M.DCMD):
            return
        got = Received(topic, p.decode_sparkplug(msg.payload), msg.payload, msg.qos, msg.retain)
        with self.lock:
            self.messages.append(got)

    def of(self, *types: p.SparkplugMessageType) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if m.topic.type in types]

    async def wait_for(self, what: Callable[[], Any]) -> None:
        async with asyncio.timeout(10):
            while not what():  # noqa: ASYNC110 - polling what a paho thread collects
                await asyncio.sleep(0.02)

    def command(self, kind: p.SparkplugMessageType, payload: bytes, device: str = "") -> None:
        topic = f"spBv1.0/{self.group}/{kind}/gw.spb" + (f"/{device}" if device else "")
        self.client.publish(topic, payload, qos=0).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Ingest:
    """Subscribes as ingest does and decodes every message into a signed envelope."""

    def __init__(self, server: MqttServer) -> None:
        self.envelopes: list[p.SignedEnvelope] = []
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, *_: c.subscribe(
            [(topic, 1) for topic in p.SPARKPLUG_SUBSCRIPTIONS]
        )
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = lambda _c, _u, msg: self.envelopes.append(
            p.decode_sparkplug_envelope(msg.topic, msg.payload)
        )
        self.client.connect(server.host, server.port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def ingest(mqtt_broker: MqttServer) -> Iterator[Ingest]:
    i = Ingest(mqtt_broker)
    yield i
    i.close()


@pytest.fixture
def host(mqtt_broker: MqttServer) -> Iterator[Host]:
    h = Host(mqtt_broker, f"test-{uuid.uuid4().hex[:10]}")
    yield h
    h.close()


def bdseq_of(message: Received) -> int:
    (metric,) = [m for m in message.payload.metrics if m.name == p.SPARKPLUG_BDSEQ]
    assert metric.datatype is T.INT64
    return metric.value  # type: ignore[return-value]


def check_stream(messages: list[Received], public_key: bytes) -> dict[int, p.Envelope]:
    """The specification's rules over a stream of edge node messages; the envelopes by seq.

    seq is 0 in every NBIRTH and +1 (mod 256) in every message after it, NDEATH excepted;
    births come at QoS 0, data at QoS 1, nothing retained; births name every metric with an
    alias (unique across the node), except the rebirth command; data carries aliases only,
    each resolving to a metric of its device's DBIRTH, and its signed envelope in ``body``,
    whose samples the metrics repeat in order.
    """
    envelopes: dict[int, p.Envelope] = {}
    seq: int | None = None
    aliases: dict[int, tuple[str | None, str, p.SparkplugDataType | None]] = {}
    for m in messages:
        kind, payload = m.topic.type, m.payload
        assert m.retain is False
        assert payload.timestamp is not None
        if kind is M.NDEATH:
            assert payload.seq is None
            assert m.qos == 1
            continue
        if kind is M.NBIRTH:
            assert payload.seq == 0
            aliases = {}
        else:
            assert seq is not None, f"{kind} before NBIRTH"
            assert payload.seq == (seq + 1) % 256
        seq = payload.seq
        if kind in (M.NBIRTH, M.DBIRTH):
            assert m.qos == 0
            for metric in payload.metrics:
                assert metric.name is not None
                assert metric.timestamp is not None
                assert metric.datatype is not None
                if metric.name == p.SPARKPLUG_REBIRTH:
                    assert metric.alias is None
                    assert metric.value is False
                    continue
                assert metric.alias is not None
                assert metric.alias not in aliases, "aliases are unique across the edge node"
                aliases[metric.alias] = (m.topic.device, metric.name, metric.datatype)
            continue
        assert kind in (M.DDATA, M.NDATA)
        assert m.qos == 1
        signed = p.decode_sparkplug_envelope(str(m.topic), m.raw)
        signed.verify(public_key)
        env = signed.envelope
        envelopes.setdefault(env.seq, env)
        historical = {metric.is_historical for metric in payload.metrics}
        assert len(historical) == 1
        if kind is M.NDATA:
            continue
        assert len(payload.metrics) == len(env.samples)
        for metric, sample in zip(payload.metrics, env.samples, strict=True):
            assert metric.name is None
            assert metric.alias is not None
            device, name, datatype = aliases[metric.alias]
            assert (device, name) == (m.topic.device, sample.tag)
            assert metric.datatype == datatype
            assert metric.timestamp == sample.ts // 1000
            assert metric.value == sample.value
            if sample.quality is p.Quality.GOOD:
                assert metric.quality is None
            else:
                assert metric.quality == p.SPARKPLUG_QUALITY_BAD
    return envelopes


async def wait_committed(gw: Gateway, envelopes: int) -> None:
    async with asyncio.timeout(10):
        while gw.writer.stats.envelopes < envelopes:  # noqa: ASYNC110 - polling a counter
            await asyncio.sleep(0.02)


async def test_births_data_aliases_seq_wrap_and_death_then_bdseq_goes_on_after_a_restart(
    tmp_path: Path, mqtt_broker: MqttServer, host: Host, ingest: Ingest
) -> None:
    config = make_config(tmp_path, mqtt_broker.port, host.group)
    public = p.public_key_bytes(create_key(config.gateway.key_file))
    host.client.publish(f"spBv1.0/STATE/{host.group}", b'{"online":true}', qos=1).wait_for_publish(
        5
    )
    rounds = 140  # 2 devices: 280 DDATA after 3 births, so seq wraps past 255
    async with Gateway(config) as gw:
        await host.wait_for(lambda: len(host.of(M.DBIRTH)) == 2)
        for n in range(rounds):
            await gw.stream.put(batch("kiln", n))
            await gw.stream.put(batch("press", n))
        await wait_committed(gw, 2 * rounds)
        await asyncio.wait_for(gw.uplink.drained(), timeout=20)
    await host.wait_for(lambda: host.of(M.NDEATH))
    await host.wait_for(lambda: len(ingest.envelopes) == 2 * rounds)
    first = list(host.messages)
    kinds = [m.topic.type for m in first]
    assert kinds[:3] == [M.NBIRTH, M.DBIRTH, M.DBIRTH]
    assert kinds[-1] is M.NDEATH
    assert kinds.count(M.DDATA) == 2 * rounds
    assert [m.payload.seq for m in first[-3:-1]] == [25, 26]  # 282 messages after NBIRTH
    envelopes = check_stream(first, public)
    assert sorted(envelopes) == list(range(1, 2 * rounds + 1))
    assert len(ingest.envelopes) == 2 * rounds  # DDATA only: no birth, death or STATE
    nbirth = first[0]
    assert bdseq_of(nbirth) == 0 == bdseq_of(first[-1])
    births = {m.name: m for m in nbirth.payload.metrics}
    assert births["Properties/Gateway"].value == config.gateway.id
    assert births["Properties/Key"].value == p.fingerprint(public)
    dbirth = {m.topic.device: m.payload.metrics for m in first[1:3]}
    assert set(dbirth) == {"dev.kiln", "dev.press"}
    for metrics in dbirth.values():
        assert {m.name: m.datatype for m in metrics} == {n: dt for n, (_, dt) in TAGS.items()}
        assert all(m.value is None for m in metrics)  # nothing read yet: null, not made up
    floats = [m.value for m in first[-2].payload.metrics if m.datatype is T.DOUBLE]
    assert floats == [69.5]  # the last DDATA: temp of n=139

    # a restart: bdSeq goes on from the file beside the outbox
    host.messages.clear()
    async with Gateway(config):
        await host.wait_for(lambda: len(host.of(M.DBIRTH)) == 2)
    await host.wait_for(lambda: host.of(M.NDEATH))
    again = host.of(M.NBIRTH)[0]
    assert bdseq_of(again) == 1 == bdseq_of(host.of(M.NDEATH)[0])
    check_stream(list(host.messages), public)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_rebirth_on_ncmd_repeats_the_births_with_the_same_bdseq(
    tmp_path: Path, mqtt_broker: MqttServer, host: Host, protocol: str
) -> None:
    config = make_config(tmp_path, mqtt_broker.port, host.group, protocol=protocol)
    public = p.public_key_bytes(create_key(config.gateway.key_file))
    now = int(time.time() * 1000)
    rebirth = p.encode_sparkplug(
        p.SparkplugPayload(
            timestamp=now,
            metrics=(
                p.SparkplugMetric(
                    name=p.SPARKPLUG_REBIRTH, timestamp=now, datatype=T.BOOLEAN, value=True
                ),
            ),
        )
    )
    async with Gateway(config) as gw:
        await host.wait_for(lambda: len(host.of(M.DBIRTH)) == 2)
        for n in range(5):
            await gw.stream.put(batch("kiln", n))
        await wait_committed(gw, 5)
        await asyncio.wait_for(gw.uplink.drained(), timeout=10)
        await host.wait_for(lambda: len(host.of(M.DDATA)) == 5)
        # commands the gateway does not act on: garbage, a DCMD write, an NCMD without rebirth
        host.command(M.NCMD, b"\xff\xff")
        host.command(M.DCMD, rebirth, device="dev.kiln")
        host.command(M.NCMD, p.encode_sparkplug(p.SparkplugPayload(timestamp=now)))
        host.command(M.NCMD, rebirth)
        await host.wait_for(lambda: len(host.of(M.DBIRTH)) == 4)
        for n in range(5, 8):
            await gw.stream.put(batch("kiln", n))
        await wait_committed(gw, 8)
        await asyncio.wait_for(gw.uplink.drained(), timeout=10)
        await host.wait_for(lambda: len(host.of(M.DDATA)) == 8)
    await host.wait_for(lambda: host.of(M.NDEATH))
    kinds = [m.topic.type for m in host.messages]
    assert kinds == [M.NBIRTH, M.DBIRTH, M.DBIRTH] + [M.DDATA] * 5 + [
        M.NBIRTH, M.DBIRTH, M.DBIRTH] + [M.DDATA] * 3 + [M.NDEATH]  # fmt: skip
    first, second = host.of(M.NBIRTH)
    assert bdseq_of(first) == bdseq_of(second) == 0
    # the rebirth's DBIRTH carries the last value read of every tag of the kiln
    kiln = next(m for m in host.of(M.DBIRTH)[2:] if m.topic.device == "dev.kiln")
    assert {m.name: m.value for m in kiln.payload.metrics} == {
        "count": 4, "delta": -4, "temp": 2.0, "running": True, "code": "c4", "trim": -4,
    }  # fmt: skip
    envelopes = check_stream(list(host.messages), public)
    assert sorted(envelopes) == list(range(1, 9))


def envelope_seqs(host: Host) -> set[int]:
    return {p.decode_json(m.payload.body or b"").envelope.seq for m in host.of(M.DDATA)}


class Cable:
    """The network between the gateway and the broker, which the test can cut: a TCP relay."""

    def __init__(self, server: MqttServer) -> None:
        self.target = (server.host, server.port)
        self.up = True
        self.refused = 0
        self.links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.port = 0

    async def __aenter__(self) -> Cable:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        self.server.close()
        await self.server.wait_closed()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            self.refused += 1
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.links.append((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.transport.abort()

    def cut(self) -> None:
        """Both sides see the connection reset, as when a cable is pulled and a router resets."""
        for a, b in self.links:
            a.transport.abort()
            b.transport.abort()
        self.links.clear()


async def test_link_loss_gives_the_will_ndeath_then_a_new_bdseq_and_historical_backlog(
    tmp_path: Path, mqtt_broker: MqttServer, host: Host
) -> None:
    async with Cable(mqtt_broker) as cable:
        config = make_config(tmp_path, cable.port, host.group)
        public = p.public_key_bytes(create_key(config.gateway.key_file))
        async with Gateway(config, drain_timeout=10) as gw:
            await host.wait_for(lambda: len(host.of(M.DBIRTH)) == 2)
            await gw.stream.put(batch("kiln", 0))
            await wait_committed(gw, 1)
            await asyncio.wait_for(gw.uplink.drained(), timeout=10)

            cable.up = False
            cable.cut()
            await host.wait_for(lambda: host.of(M.NDEATH))
            (will,) = host.of(M.NDEATH)
            assert will.qos == 1
            assert will.payload.seq is None
            assert [m.name for m in will.payload.metrics] == [p.SPARKPLUG_BDSEQ]
            assert bdseq_of(will) == bdseq_of(host.of(M.NBIRTH)[0]) == 0

            for n in range(1, 21):  # read while the link is down: the outage's backlog
                await gw.stream.put(batch("kiln", n))
            await wait_committed(gw, 21)
            await host.wait_for(lambda: cable.refused >= 1)  # a reconnect attempt failed
            cable.up = True
            await host.wait_for(lambda: len(host.of(M.NBIRTH)) == 2)
            await asyncio.wait_for(gw.uplink.drained(), timeout=10)
            await host.wait_for(lambda: envelope_seqs(host) == set(range(1, 22)))
        await host.wait_for(lambda: len(host.of(M.NDEATH)) == 2)

    reborn = host.of(M.NBIRTH)[1]
    last_death = host.of(M.NDEATH)[1]
    # one more than the session before, although attempts failed while the link was down
    assert bdseq_of(reborn) == bdseq_of(last_death) == 1
    assert gw.uplink.stats.connects == 2
    after = host.messages[host.messages.index(reborn) :]
    backlog = [m for m in after if m.topic.type is M.DDATA]
    assert len(backlog) == 20
    assert all(metric.is_historical for m in backlog for metric in m.payload.metrics)
    before = host.messages[: host.messages.index(will)]
    envelopes = check_stream(before, public) | check_stream(after, public)
    assert sorted(envelopes) == list(range(1, 22))


async def test_a_device_that_stops_answering_gets_a_ddeath_and_a_dbirth_when_back(
    tmp_path: Path, mqtt_broker: MqttServer, host: Host
) -> None:
    config = make_config(tmp_path, mqtt_broker.port, host.group)
    create_key(config.gateway.key_file)
    async with Gateway(config) as gw:
        await host.wait_for(lambda: len(host.of(M.DBIRTH)) == 2)
        await gw.stream.put(ConnectivityEvent("kiln", up=False, ts=NS, reason="timeout"))
        await host.wait_for(lambda: host.of(M.DDEATH))
        await gw.stream.put(ConnectivityEvent("kiln", up=False, ts=NS, reason="still down"))
        await gw.stream.put(ConnectivityEvent("kiln", up=True, ts=NS))
        await host.wait_for(lambda: len(host.of(M.DBIRTH)) == 3)
    await host.wait_for(lambda: host.of(M.NDEATH))
    kinds = [(m.topic.type, m.topic.device) for m in host.messages]
    assert kinds == [
        (M.NBIRTH, None),
        (M.DBIRTH, "dev.kiln"),
        (M.DBIRTH, "dev.press"),
        (M.DDEATH, "dev.kiln"),  # once, though the device was reported down twice
        (M.DBIRTH, "dev.kiln"),
        (M.NDEATH, None),
    ]
    seqs = [m.payload.seq for m in host.messages if m.topic.type is not M.NDEATH]
    assert seqs == [0, 1, 2, 3, 4]
