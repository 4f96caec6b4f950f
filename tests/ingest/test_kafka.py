"""Scale-out ingest on a real Kafka-protocol broker: MQTT → bridge → Kafka → sinks → PostgreSQL.

Gateways' signed chains are published to a private Mosquitto (or produced straight to Kafka as
a bridge would), sinks run in-process or as ``guantong ingest sink`` when one is to be killed.
After every scenario the store holds each envelope exactly once, with no gap or chain event,
and the group's committed offsets are at the end of every partition.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import yaml
from _services import KafkaNamespace, MosquittoBroker, TansuBroker, free_port
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

import gateway.protocol as wire
import identifiers
from ingest import Batch, Bridge, BridgeConfig, Ingest, Message, SinkConfig, migrate
from ingest._kafka import RECEIVED_HEADER, TOPIC_HEADER, partition_key

PARTITIONS = 4
TAGS = 5
#: gateways of the fleets. Their keys go to partitions a, b, e → 2; c, g → 1; d, f, h → 3:
#: whichever two partitions a sink of two is given, some of the first six gateways are there
GATEWAYS = [f"gw.{name}" for name in ("a", "b", "c", "d", "e", "f", "g", "h")]


class Fleet:
    """Gateways, one device each, building their signed chains as real gateways do."""

    def __init__(self, kit: SimpleNamespace, gateways: int = 6) -> None:
        self.kit = kit
        self.chains = [kit.Chain(f"{kit.FIRM}/{name}") for name in GATEWAYS[:gateways]]
        self.sent = 0

    def device(self, chain: Any) -> str:
        return chain.gateway.replace("/gw.", "/dev.")

    async def register(self, register: Any) -> None:
        for chain in self.chains:
            await register(chain, [self.device(chain)])

    def messages(self, rounds: int) -> Iterator[tuple[str, bytes]]:
        """``rounds`` data envelopes from every gateway, interleaved."""
        for _ in range(rounds):
            for chain in self.chains:
                n = chain.seq
                samples = [(f"t{i}", self.kit.T0 + n * 1000 + i, float(n)) for i in range(TAGS)]
                self.sent += 1
                yield self.kit.message(chain.data(self.device(chain), samples))


async def create_topic(ns: KafkaNamespace, name: str, **configs: str) -> str:
    topic = ns.topic(name)
    admin = AIOKafkaAdminClient(bootstrap_servers=ns.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1, topic_configs=configs)])
    finally:
        await admin.close()
    return topic


@asynccontextmanager
async def producer(ns: KafkaNamespace) -> AsyncIterator[AIOKafkaProducer]:
    """A producer writing records as the bridge does (Tansu has no idempotent producer)."""
    prod = AIOKafkaProducer(bootstrap_servers=ns.bootstrap, acks="all")
    await prod.start()
    try:
        yield prod
    finally:
        await prod.stop()


async def produce(prod: AIOKafkaProducer, topic: str, messages: Iterator[tuple[str, bytes]]) -> int:
    futures = [
        await prod.send(topic, payload, key=partition_key(mqtt_topic),
                        headers=[(TOPIC_HEADER, mqtt_topic.encode()), (RECEIVED_HEADER, b"1")])
        for mqtt_topic, payload in messages
    ]  # fmt: skip
    await asyncio.gather(*futures)
    return len(futures)


def sink_doc(dsn: str, node_url: str, ns: KafkaNamespace, topic: str, **kafka: Any) -> dict:
    return {
        "kind": "ingest-sink",
        "database": {"dsn": dsn, "partitions_ahead": 1},
        "identifiers": {"node": node_url},
        "kafka": {"brokers": [ns.bootstrap], "topic": topic, "group": ns.group("sinks"),
                  "client_id": f"sink-{uuid.uuid4().hex[:6]}", "session_timeout": "6s",
                  "rebalance_timeout": "20s", **kafka},
        "batch": {"max_delay": "50ms", "decode_workers": 0},
        "health": {"listen": "127.0.0.1:0"},
    }  # fmt: skip


def sink_config(*args: Any, **kafka: Any) -> SinkConfig:
    return SinkConfig.model_validate(sink_doc(*args, **kafka))


def bridge_config(broker: MosquittoBroker, ns: KafkaNamespace, topic: str) -> BridgeConfig:
    return BridgeConfig.model_validate(
        {
            "kind": "ingest-bridge",
            "mqtt": {
                "broker": broker.url,
                "client_id": f"bridge-{uuid.uuid4().hex[:6]}",
                "share_group": "bridges",
                "keepalive": 5,
            },
            "kafka": {"brokers": [ns.bootstrap], "topic": topic, "idempotent": False},
            "health": {"listen": "127.0.0.1:0"},
        }
    )


async def committed_offsets(ns: KafkaNamespace, topic: str) -> int:
    """The sum of the sinks' committed offsets, read by a consumer that joins no group
    (Tansu's answer to the admin client's OffsetFetch version does not decode)."""
    reader = AIOKafkaConsumer(bootstrap_servers=ns.bootstrap, group_id=ns.group("sinks"),
                              enable_auto_commit=False)  # fmt: skip
    await reader.start()
    try:
        offsets = [await reader.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)]
    finally:
        await reader.stop()
    return sum(o or 0 for o in offsets)


def check_store(
    dsn: str, kit: SimpleNamespace, fleet: Fleet, quarantined: int = 0, samples: int | None = None
) -> None:
    """Every envelope once, every sample once (``TAGS`` an envelope unless ``samples`` says
    how many in all), no gap or chain event."""
    assert kit.count(dsn, "receipt") == fleet.sent
    per_gateway = kit.fetch(dsn, "SELECT count(*), min(seq), max(seq) FROM receipt "
                            "GROUP BY gateway_id ORDER BY 1")  # fmt: skip
    assert per_gateway == [(c.seq, 1, c.seq) for c in sorted(fleet.chains, key=lambda c: c.seq)]
    assert kit.count(dsn, "sample") == (fleet.sent * TAGS if samples is None else samples)
    assert kit.count(dsn, "connectivity_event") == 0
    assert kit.count(dsn, "quarantine") == quarantined


def owned(sink: Ingest) -> list[int]:
    return sink.consumer.health()["partitions"]  # type: ignore[return-value]


def test_every_envelope_of_a_gateway_gets_the_gateway_key() -> None:
    assert partition_key("gt/v1/88.709.911/gw.a/data/dev.x") == b"gt/v1/88.709.911/gw.a"
    assert partition_key("gt/v1/88.709.911/gw.a/loss") == b"gt/v1/88.709.911/gw.a"
    assert partition_key("spBv1.0/grp/DDATA/gw.a/dev.x") == b"spBv1.0/grp/gw.a"
    assert partition_key("spBv1.0/grp/NDATA/gw.a") == b"spBv1.0/grp/gw.a"
    assert partition_key("elsewhere/x") == b"elsewhere/x"


async def test_two_bridges_and_two_sinks_store_every_envelope_once_and_pass_poison(
    *, pg_dsn: str, broker: MosquittoBroker, node: identifiers.Node, register: Any,
    publisher: Any, kafka_namespace: KafkaNamespace, kit: SimpleNamespace, tmp_path: Path,
) -> None:  # fmt: skip
    ns = kafka_namespace
    topic = await create_topic(ns, "envelopes")
    fleet = Fleet(kit)
    await fleet.register(register)
    async with (
        Bridge(bridge_config(broker, ns, topic)) as bridge,
        Bridge(bridge_config(broker, ns, topic)) as other,
        Ingest(sink_config(pg_dsn, node.url, ns, topic)) as one,
        Ingest(sink_config(pg_dsn, node.url, ns, topic)) as two,
    ):
        await kit.wait_until(lambda: bridge.consumer.stats.subscribed)
        await kit.wait_until(lambda: other.consumer.stats.subscribed)
        await kit.wait_until(lambda: owned(one) and owned(two) and
                             len(owned(one) + owned(two)) == PARTITIONS, within=60)  # fmt: skip
        for mqtt_topic, payload in fleet.messages(30):
            publisher.publish(mqtt_topic, payload)
        # poison: through the bridge an envelope that is not JSON, straight into Kafka a
        # record without the MQTT topic header
        publisher.publish(f"gt/v1/{kit.FIRM}/gw.a/data/dev.a", b"not an envelope")
        async with producer(ns) as prod:
            await (await prod.send(topic, b"\x00garbage", key=b"gt/v1/88.709.911/gw.a"))
        records = fleet.sent + 2
        await kit.wait_until(lambda: one.consumer.stats.acked + two.consumer.stats.acked
                             == records, within=60)  # fmt: skip
        # the two bridges of one share group split the messages
        bridges = (bridge, other)
        await kit.wait_until(lambda: sum(b.consumer.stats.acked for b in bridges) == fleet.sent + 1)
        assert sum(b.stats.produced for b in bridges) == fleet.sent + 1
        assert all(b.stats.produced > 0 for b in bridges)
        assert one.consumer.stats.received > 0
        assert two.consumer.stats.received > 0
        check_store(pg_dsn, kit, fleet, quarantined=2)
        reasons = kit.fetch(pg_dsn, "SELECT reason, topic FROM quarantine ORDER BY reason")
        assert reasons[0][0] == "bad_topic"
        assert reasons[0][1].startswith(f"kafka:{topic}/")  # names where the record is
        assert reasons[1] == ("malformed", f"gt/v1/{kit.FIRM}/gw.a/data/dev.a")
        assert await committed_offsets(ns, topic) == records
        # lag is read from the fetch responses' high watermarks
        assert one.health is not None
        async with httpx.AsyncClient(timeout=5) as http:
            text = (await http.get(f"{one.health.url}/metrics")).text
            health = (await http.get(f"{two.health.url}/healthz")).json()  # type: ignore[union-attr]
        lag = [line for line in text.splitlines()
               if line.startswith("guantong_ingest_kafka_lag_messages{")]  # fmt: skip
        assert sorted(int(line.split('partition="')[1].split('"')[0]) for line in lag) == owned(one)
        assert all(line.endswith(" 0.0") for line in lag)
        assert health["kafka"]["partitions"] == owned(two)
        assert health["kafka"]["lag"] == 0


@pytest.mark.slow
async def test_a_sink_added_and_removed_during_the_run_loses_nothing(
    *, pg_dsn: str, node: identifiers.Node, register: Any, kafka_namespace: KafkaNamespace,
    kit: SimpleNamespace,
) -> None:  # fmt: skip
    ns = kafka_namespace
    topic = await create_topic(ns, "envelopes")
    fleet = Fleet(kit, gateways=8)
    await fleet.register(register)
    # batches of the first sink wait up to a second: a rebalance finds one unfinished
    doc = sink_doc(pg_dsn, node.url, ns, topic)
    doc["batch"]["max_delay"] = "1s"
    async with producer(ns) as prod, Ingest(SinkConfig.model_validate(doc)) as first:
        await kit.wait_until(lambda: len(owned(first)) == PARTITIONS, within=60)

        async def stream(rounds: int) -> None:
            for _ in range(rounds):
                await produce(prod, topic, fleet.messages(1))
                await asyncio.sleep(0.02)

        feeding = asyncio.create_task(stream(400))
        async with Ingest(sink_config(pg_dsn, node.url, ns, topic)) as second:
            await kit.wait_until(lambda: owned(second) and second.stats.batches > 2, within=60)
            assert len(owned(first)) < PARTITIONS
        # the second left the group: its partitions come back to the first
        await kit.wait_until(lambda: len(owned(first)) == PARTITIONS, within=60)
        await feeding
        await kit.wait_until(lambda: kit.count(pg_dsn, "receipt") == fleet.sent, within=60)
        check_store(pg_dsn, kit, fleet)
        assert second.consumer.stats.received > 0
        # the first committed what it held before the partitions went: the second read on
        # exactly after it, nothing twice
        assert second.verifier.stats.duplicates == 0
        assert first.consumer.stats.commit_failures == 0
        assert first.consumer.stats.rebalances >= 2  # the second joined, then left
        await kit.wait_until(lambda: first.consumer.stats.acked + second.consumer.stats.acked
                             >= fleet.sent)  # fmt: skip
        assert await committed_offsets(ns, topic) == fleet.sent


def sink_process(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "guantong", "ingest", "sink", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def lag(url: str) -> int:
    try:
        return int(httpx.get(url, timeout=2).json()["kafka"]["lag"])
    except (httpx.HTTPError, KeyError):
        return 0


@pytest.mark.slow
async def test_a_sink_killed_with_sigkill_mid_batch_and_restarted_loses_nothing(
    *, pg_dsn: str, node: identifiers.Node, register: Any, kafka_namespace: KafkaNamespace,
    kit: SimpleNamespace, tmp_path: Path,
) -> None:  # fmt: skip
    ns = kafka_namespace
    topic = await create_topic(ns, "envelopes")
    fleet = Fleet(kit, gateways=8)
    await fleet.register(register)
    async with producer(ns) as prod:
        records = await produce(prod, topic, fleet.messages(150))
    health = f"127.0.0.1:{free_port()}"
    doc = sink_doc(pg_dsn, node.url, ns, topic, fetch_records=50)
    doc["batch"].update(max_rows=500, decode_workers=1)
    doc["health"] = {"listen": health}
    path = tmp_path / "sink.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    migrate(pg_dsn)
    first = sink_process(path)
    second: subprocess.Popen[str] | None = None
    try:
        # a backlog: the sink reports how far behind it is, and is killed in its midst
        await kit.wait_until(lambda: lag(f"http://{health}/healthz") > 0, within=60)
        await kit.wait_until(lambda: kit.count(pg_dsn, "receipt") > 0, within=30)
        os.kill(first.pid, signal.SIGKILL)
        await asyncio.to_thread(first.communicate, timeout=10)
        before = await asyncio.to_thread(kit.count, pg_dsn, "receipt")
        assert 0 < before < records
        second = sink_process(path)
        await kit.wait_until(lambda: kit.count(pg_dsn, "receipt") == records, within=120)
        check_store(pg_dsn, kit, fleet)
        await kit.wait_until(lambda: lag(f"http://{health}/healthz") == 0)
        second.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(second.communicate, timeout=30)
        assert second.returncode == 0, err
        # the stop committed the offsets of everything stored
        assert await committed_offsets(ns, topic) == records
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()


async def test_a_batch_whose_receipts_another_sink_stored_meanwhile_is_verified_again(
    *, pg_dsn: str, broker: MosquittoBroker, node: identifiers.Node, register: Any,
    kit: SimpleNamespace, tmp_path: Path,
) -> None:  # fmt: skip
    """The moment of a rebalance that did not wait: the former owner of a partition commits
    envelopes the new owner has verified too. The receipts' primary key refuses the new
    owner's batch; verified again, the stored envelopes are duplicates and the rest is kept."""
    chain = kit.Chain(f"{kit.FIRM}/gw.race")
    dev = f"{kit.FIRM}/dev.race"
    await register(chain, [dev])
    # QoS 0 positions: nothing to acknowledge to the broker
    msgs = [
        Message(*kit.message(chain.data(dev, [("t", kit.T0 + i, float(i))])), kit.T0, (0, 0, 0))
        for i in range(4)
    ]
    async with (
        Ingest(kit.ingest_config(pg_dsn, broker.port, node.url, tmp_path)) as former,
        Ingest(kit.ingest_config(pg_dsn, broker.port, node.url, tmp_path)) as new,
    ):
        batch = Batch()
        for msg in msgs:
            await new.verifier.add(msg, batch)
        stored = Batch()
        for msg in msgs[:2]:
            await former.verifier.add(msg, stored)
        await asyncio.to_thread(former.store.write, stored)
        await new._commit(batch, msgs)
    assert kit.fetch(pg_dsn, "SELECT seq FROM receipt ORDER BY seq") == [(1,), (2,), (3,), (4,)]
    assert kit.count(pg_dsn, "sample") == 4
    assert kit.count(pg_dsn, "quarantine") == 0
    assert kit.count(pg_dsn, "connectivity_event") == 0
    assert new.verifier.stats.duplicates == 2
    assert new.stats.messages == 4


@pytest.mark.slow
async def test_the_bridge_acknowledges_mqtt_only_once_kafka_has_the_record(
    *, broker: MosquittoBroker, publisher: Any, kit: SimpleNamespace, tmp_path: Path,
) -> None:  # fmt: skip
    """Kafka away: the bridge holds the messages unacknowledged, and delivers them after."""
    with TansuBroker() as kafka:
        ns = KafkaNamespace(kafka, "outage-")
        topic = await create_topic(ns, "envelopes")
        chain = kit.Chain(f"{kit.FIRM}/gw.outage")
        dev = f"{kit.FIRM}/dev.outage"
        sent = [kit.message(chain.data(dev, [("t", kit.T0 + i, float(i))])) for i in range(6)]
        async with Bridge(bridge_config(broker, ns, topic)) as bridge:
            await kit.wait_until(lambda: bridge.consumer.stats.subscribed)
            for mqtt_topic, payload in sent[:2]:
                publisher.publish(mqtt_topic, payload)
            await kit.wait_until(lambda: bridge.consumer.stats.acked == 2)
            await asyncio.to_thread(kafka.kill)
            for mqtt_topic, payload in sent[2:]:
                publisher.publish(mqtt_topic, payload)
            await kit.wait_until(lambda: bridge.consumer.stats.received == 6)
            await asyncio.sleep(2)
            assert bridge.consumer.stats.acked == 2  # nothing acknowledged that Kafka lacks
            assert bridge.pending() == 4
            # Tansu keeps nothing across a restart: the topic comes back empty
            await asyncio.to_thread(kafka.start)
            await create_topic(ns, "envelopes")
            await kit.wait_until(lambda: bridge.consumer.stats.acked == 6, within=120)
        reader = AIOKafkaConsumer(
            topic, bootstrap_servers=ns.bootstrap, auto_offset_reset="earliest"
        )
        await reader.start()
        try:
            records = []
            async with asyncio.timeout(30):
                while len(records) < 4:
                    for batch in (await reader.getmany(timeout_ms=1000)).values():
                        records += batch
        finally:
            await reader.stop()
    # the four held back, in order, bytes unchanged, with their MQTT topic
    assert [r.value for r in records] == [payload for _, payload in sent[2:]]
    assert {dict(r.headers)[TOPIC_HEADER].decode() for r in records} == {sent[2][0]}
    assert all(r.key == partition_key(sent[2][0]) for r in records)


async def test_a_topic_created_again_under_a_sink_is_read_from_its_start(
    *, pg_dsn: str, node: identifiers.Node, register: Any, kafka_namespace: KafkaNamespace,
    kit: SimpleNamespace,
) -> None:  # fmt: skip
    """The topic deleted and created again while a sink reads it (as a broker that lost its
    data presents it): the partition's offsets go back below what the sink committed. The
    sink counts the reset, reads the new log from its start and commits offsets of the new
    log only; every envelope is stored once and the chain has no gap."""
    ns = kafka_namespace
    topic = await create_topic(ns, "envelopes")
    fleet = Fleet(kit, gateways=1)
    await fleet.register(register)
    async with Ingest(sink_config(pg_dsn, node.url, ns, topic)) as sink:
        await kit.wait_until(lambda: len(owned(sink)) == PARTITIONS, within=60)
        async with producer(ns) as prod:
            await produce(prod, topic, fleet.messages(20))
        await kit.wait_until(lambda: sink.consumer.stats.acked == 20, within=60)
        assert await committed_offsets(ns, topic) == 20
        admin = AIOKafkaAdminClient(bootstrap_servers=ns.bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([topic])
            await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        finally:
            await admin.close()
        async with producer(ns) as prod:
            await produce(prod, topic, fleet.messages(5))
        await kit.wait_until(lambda: sink.consumer.stats.acked == 25, within=60)
        assert sink.consumer.stats.offset_resets == 1
        check_store(pg_dsn, kit, fleet)
        assert await committed_offsets(ns, topic) == 5


def largest_envelope(kit: SimpleNamespace, fleet: Fleet, chain: Any) -> tuple[str, bytes]:
    """The next data envelope of ``chain``: 256 texts, exactly as large as the contract allows."""
    ts = kit.T0 + chain.seq * 1000

    def build(c: Any, lengths: list[int]) -> tuple[str, bytes]:
        samples = [(f"x{i:03d}", ts + i, "a" * n) for i, n in enumerate(lengths)]
        return kit.message(c.data(fleet.device(chain), samples))  # type: ignore[no-any-return]

    trial = kit.Chain(chain.gateway, chain.key)
    trial.seq, trial.prev = chain.seq, chain.prev
    _, payload = build(trial, [4000] * 256)
    short = wire.MAX_PAYLOAD_BYTES - len(payload)
    lengths = [4000 + short // 256 + (i < short % 256) for i in range(256)]
    fleet.sent += 1
    topic, payload = build(chain, lengths)
    assert len(payload) == wire.MAX_PAYLOAD_BYTES
    return topic, payload


async def test_oversized_messages_between_good_ones_are_quarantined_and_stall_nothing(
    *, pg_dsn: str, broker: MosquittoBroker, node: identifiers.Node, register: Any,
    publisher: Any, kafka_namespace: KafkaNamespace, kit: SimpleNamespace,
) -> None:  # fmt: skip
    """Messages over what the topic takes are cut by the bridge (one over the contract, one
    within it), one over the contract but under the topic's limit travels whole: the sink
    quarantines them as single-node ingest does (first 64 KiB, whole size), and the good
    envelopes around them are stored, among them one as large as the contract allows (over
    aiokafka's default limit: the message of the defect)."""
    ns = kafka_namespace
    # the bridge reads the topic's limit and cuts before sending (Tansu does not enforce it)
    topic = await create_topic(ns, "envelopes", **{"max.message.bytes": str(3 << 20)})
    fleet = Fleet(kit, gateways=2)
    await fleet.register(register)
    mqtt_topic = f"gt/v1/{kit.FIRM}/gw.a/data/dev.a"
    pattern = bytes(range(256)) * (6 << 12)
    over_contract = pattern[: wire.MAX_PAYLOAD_BYTES + 100_000]  # whole through Kafka
    over_kafka = pattern[: wire.MAX_SPARKPLUG_BYTES + 100_000]  # over every limit
    # within the Sparkplug B contract, over the topic's limit
    spb_topic = wire.sparkplug_topic(
        kit.FIRM, wire.SparkplugMessageType.DDATA, wire.sparkplug_edge_node(f"{kit.FIRM}/gw.a"),
        wire.sparkplug_device(f"{kit.FIRM}/dev.a"),
    )  # fmt: skip
    over_topic = pattern[: (3 << 20) + 100_000]
    async with (
        Bridge(bridge_config(broker, ns, topic)) as bridge,
        Ingest(sink_config(pg_dsn, node.url, ns, topic)) as sink,
    ):
        await kit.wait_until(lambda: bridge.consumer.stats.subscribed)
        await kit.wait_until(lambda: len(owned(sink)) == PARTITIONS, within=60)
        start = datetime.now(UTC)
        for mqtt_topic_, payload in fleet.messages(2):
            publisher.publish(mqtt_topic_, payload)
        publisher.publish(mqtt_topic, over_kafka)
        publisher.publish(mqtt_topic, over_contract)
        publisher.publish(spb_topic, over_topic)
        publisher.publish(*largest_envelope(kit, fleet, fleet.chains[1]))
        for mqtt_topic_, payload in fleet.messages(2):
            publisher.publish(mqtt_topic_, payload)
        # another producer, with a higher limit, writes a record over the contract straight
        # into Kafka
        other = AIOKafkaProducer(bootstrap_servers=ns.bootstrap, acks="all",
                                 max_request_size=len(over_kafka) + 4096)  # fmt: skip
        await other.start()
        try:
            await (await other.send(topic, over_kafka, key=partition_key(mqtt_topic),
                                    headers=[(TOPIC_HEADER, mqtt_topic.encode())]))  # fmt: skip
        finally:
            await other.stop()
        for mqtt_topic_, payload in fleet.messages(1):
            publisher.publish(mqtt_topic_, payload)
        records = fleet.sent + 4
        await kit.wait_until(lambda: sink.consumer.stats.acked == records, within=30)
        assert bridge.consumer.stats.acked == records - 1
        assert bridge.stats.cut == 2
        assert bridge.record_limit == 3 << 20
        assert bridge.health is not None
        async with httpx.AsyncClient(timeout=5) as http:
            metrics = (await http.get(f"{bridge.health.url}/metrics")).text
        assert "guantong_ingest_bridge_messages_cut_total 2.0" in metrics
        end = datetime.now(UTC)
    check_store(pg_dsn, kit, fleet, quarantined=4, samples=(fleet.sent - 1) * TAGS + 256)
    rows = kit.fetch(pg_dsn, "SELECT topic, payload, size, reason, gateway, detail "
                     "FROM quarantine ORDER BY size DESC, id")  # fmt: skip
    keep = 64 * 1024
    gateway = f"{kit.FIRM}/gw.a"
    # the row single-node ingest writes, whether the record came cut or whole
    assert rows == [
        (mqtt_topic, over_kafka[:keep], len(over_kafka), "oversized", gateway,
         f"payload: {len(over_kafka)} exceeds the limit of {wire.MAX_PAYLOAD_BYTES}"),
    ] * 2 + [
        (spb_topic, over_topic[:keep], len(over_topic), "oversized", None,
         f"payload: {len(over_topic)} bytes, more than the Kafka broker or the bridge's "
         f"kafka.max_request_size takes (the contract allows {wire.MAX_SPARKPLUG_BYTES}); "
         "cut by the bridge"),
        (mqtt_topic, over_contract[:keep], len(over_contract), "oversized", gateway,
         f"payload: {len(over_contract)} exceeds the limit of {wire.MAX_PAYLOAD_BYTES}"),
    ]  # fmt: skip
    received = kit.fetch(pg_dsn, "SELECT received FROM quarantine")
    assert all(start <= at <= end for (at,) in received)
    assert await committed_offsets(ns, topic) == records
