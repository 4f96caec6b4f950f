"""Every kind of bad message lands in quarantine with its reason, and ingest keeps running.

A running ingest (real Mosquitto, identifier node and PostgreSQL) receives good envelopes,
a redelivery, every refusal the verifier knows, a gap, a declared loss and a chain break.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import httpx
import psycopg
import pytest
from _services import MosquittoBroker, free_port
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import gateway.protocol as p
import identifiers
from ingest import Batch, Ingest, Store, migrate
from ingest._verify import Message, Verifier


@pytest.mark.parametrize("workers", [0, 1], ids=["decode-here", "decode-worker"])
async def test_bad_messages_are_quarantined_with_their_reason_and_good_ones_stored(
    *,
    workers: int,
    pg_dsn: str,
    broker: MosquittoBroker,
    node: identifiers.Node,
    register,
    publisher,
    kit: SimpleNamespace,
    tmp_path: Path,
) -> None:
    firm, t0 = kit.FIRM, kit.T0
    dev, other_dev = f"{firm}/dev.kiln", f"{firm}/dev.press"
    gw = kit.Chain(f"{firm}/gw.line1")
    other_gw = kit.Chain(f"{firm}/gw.line2")
    await register(gw, [dev])
    await register(other_gw, [other_dev])
    await register(kit.Chain(f"{firm}/gw.x"), [f"{firm}/dev.foreign"], enterprise=f"{firm}/other")

    expected: Counter[str] = Counter()
    sent: list[tuple[str, bytes]] = []

    def bad(reason: str, topic: str, payload: bytes) -> None:
        expected[reason] += 1
        sent.append((topic, payload))

    first = gw.data(dev, [("temp", t0, 21.5), ("run", t0, True), ("mode", t0, "auto")])
    sent += [kit.message(first), kit.message(first)]  # the second is a redelivery
    topic1, raw1 = kit.message(first)
    doc = json.loads(raw1)

    bad("bad_topic", "gt/v1/nonsense", raw1)
    bad("oversized", topic1, b" " * (p.MAX_PAYLOAD_BYTES + 1))
    bad("unsupported_version", topic1, json.dumps({**doc, "v": 2}).encode())
    bad("malformed", topic1, b"not json at all")
    bad("unsigned", topic1, json.dumps({k: v for k, v in doc.items() if k != "sig"}).encode())
    bad("topic_mismatch", p.data_topic(gw.gateway, other_dev), raw1)
    # the same envelope in Sparkplug B: on another edge node's topic, and a broken payload
    ddata = p.SparkplugMessageType.DDATA
    in_sparkplug = p.encode_sparkplug(
        p.SparkplugPayload(timestamp=1, seq=0, uuid=p.SPARKPLUG_ENVELOPE_UUID, body=raw1)
    )
    edge_node = p.sparkplug_edge_node(gw.gateway)
    other_edge_node = p.sparkplug_edge_node(other_gw.gateway)
    spb_dev = p.sparkplug_device(dev)
    bad("topic_mismatch", p.sparkplug_topic(firm, ddata, other_edge_node, spb_dev), in_sparkplug)
    bad("malformed", p.sparkplug_topic(firm, ddata, edge_node, spb_dev), b"\x0a\xff not protobuf")
    ghost = kit.Chain(f"{firm}/gw.ghost")
    bad("unknown_gateway", *kit.message(ghost.data(dev, [("t", t0, 1)])))
    forger = kit.Chain(gw.gateway, Ed25519PrivateKey.generate())
    bad("bad_signature", *kit.message(forger.data(dev, [("t", t0, 1)])))
    # envelopes refused before the chain do not advance it: copy the chain to make them
    side = kit.Chain(gw.gateway, gw.key)
    side.seq, side.prev = gw.seq, gw.prev
    bad("unknown_device", *kit.message(side.data(f"{firm}/dev.ghost", [("t", t0, 1)])))
    side.seq, side.prev = gw.seq, gw.prev
    bad("foreign_device", *kit.message(side.data(other_dev, [("t", t0, 1)])))
    side.seq, side.prev = gw.seq, gw.prev
    bad("foreign_device", *kit.message(side.data(f"{firm}/dev.foreign", [("t", t0, 1)])))
    fork = kit.Chain(gw.gateway, gw.key)
    bad("fork", *kit.message(fork.data(dev, [("temp", t0, 99.0)])))
    side.seq, side.prev = gw.seq, gw.prev
    bad("unstorable", *kit.message(side.data(dev, [("mode", t0 + 1, "a\x00b")])))

    gw.seq += 3  # envelopes 2..4 never arrive
    fifth = gw.data(dev, [("temp", t0 + 5_000_000, 22.0)])
    sent.append(kit.message(fifth))
    sent.append(kit.message(gw.loss(2, 4, 30, "outbox full")))
    gw.prev = bytes(32)  # envelope 7 names a wrong predecessor: stored, and a chain break
    sent.append(kit.message(gw.data(dev, [("temp", t0 + 7_000_000, None)])))
    other = other_gw.data(other_dev, [("p", t0, 1.25)])
    sent.append(kit.message(other))

    config = kit.ingest_config(pg_dsn, broker.port, node.url, tmp_path, decode_workers=workers)
    async with Ingest(config) as ingest:
        await kit.wait_until(lambda: ingest.consumer.stats.subscribed)
        for topic, payload in sent:
            publisher.publish(topic, payload)
        total = sum(expected.values())
        await kit.wait_until(lambda: kit.count(pg_dsn, "receipt") == 5)
        await kit.wait_until(lambda: kit.count(pg_dsn, "quarantine") == total)
        await kit.wait_until(lambda: ingest.consumer.stats.acked == len(sent))
        assert ingest.health is not None
        async with httpx.AsyncClient(base_url=ingest.health.url) as http:
            health = await http.get("/healthz")
            metrics = (await http.get("/metrics")).text
    assert health.status_code == 200
    assert health.json()["database"] == {"up": True, "flavour": "plain"}

    reasons = Counter(r for (r,) in kit.fetch(pg_dsn, "SELECT reason FROM quarantine"))
    assert reasons == expected
    stored = kit.fetch(
        pg_dsn, "SELECT topic, payload, size FROM quarantine WHERE reason = 'oversized'"
    )
    assert stored == [(topic1, b" " * (64 * 1024), p.MAX_PAYLOAD_BYTES + 1)]
    details = dict(kit.fetch(pg_dsn, "SELECT reason, detail FROM quarantine"))
    assert "sig" in details["unsigned"]
    assert f"{firm}/dev.press is read by {other_gw.gateway}" in details["foreign_device"] or (
        "belongs to" in details["foreign_device"]
    )

    receipts = kit.fetch(
        pg_dsn,
        "SELECT g.identifier, r.seq, r.kind, r.samples, r.hash FROM receipt r "
        "JOIN gateway g ON g.id = r.gateway_id ORDER BY 1, 2",
    )
    assert [(g, s, k, n) for g, s, k, n, _ in receipts] == [
        (gw.gateway, 1, 1, 3), (gw.gateway, 5, 1, 1), (gw.gateway, 6, 2, 0),
        (gw.gateway, 7, 1, 1), (other_gw.gateway, 1, 1, 1),
    ]  # fmt: skip
    assert receipts[0][4] == first.envelope.digest
    assert receipts[1][4] == fifth.envelope.digest
    events = kit.fetch(
        pg_dsn, "SELECT kind, first_seq, last_seq, samples, seq FROM connectivity_event ORDER BY id"
    )
    assert events == [("gap", 2, 4, None, 5), ("loss", 2, 4, 30, 6), ("chain_break", 7, 7, None, 7)]

    values = kit.fetch(
        pg_dsn,
        "SELECT d.identifier, s.tag, x.ts, x.value, x.text_value, x.quality FROM sample x "
        "JOIN series s ON s.id = x.series_id JOIN device d ON d.id = s.device_id ORDER BY 1, 2, 3",
    )
    as_us = [(d, tag, int(ts.timestamp() * 1_000_000), v, t, q) for d, tag, ts, v, t, q in values]
    assert as_us == [
        (dev, "mode", t0, None, "auto", 0),
        (dev, "run", t0, 1.0, None, 0),
        (dev, "temp", t0, 21.5, None, 0),
        (dev, "temp", t0 + 5_000_000, 22.0, None, 0),
        (dev, "temp", t0 + 7_000_000, None, None, 0),
        (other_dev, "p", t0, 1.25, None, 0),
    ]
    assert 'guantong_ingest_quarantined_total{reason="foreign_device"} 2.0' in metrics
    assert "guantong_ingest_envelopes_duplicate_total 1.0" in metrics
    assert "guantong_ingest_rows_inserted_total 6.0" in metrics
    assert 'guantong_ingest_connectivity_events_total{kind="gap"} 1.0' in metrics


def alter(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]  # a test constant


async def test_a_batch_the_database_refuses_goes_to_quarantine_and_ingest_carries_on(
    *, pg_dsn: str, broker: MosquittoBroker, node: identifiers.Node, register,
    publisher, kit: SimpleNamespace, tmp_path: Path,
) -> None:  # fmt: skip
    dev = f"{kit.FIRM}/dev.kiln"
    gw = kit.Chain(f"{kit.FIRM}/gw.line1")
    await register(gw, [dev])
    config = kit.ingest_config(pg_dsn, broker.port, node.url, tmp_path)
    async with Ingest(config) as ingest:
        await kit.wait_until(lambda: ingest.consumer.stats.subscribed)
        # a constraint the schema does not have: the database now refuses this value for good
        await asyncio.to_thread(
            alter, pg_dsn, "ALTER TABLE sample ADD CONSTRAINT no_666 CHECK (value <> 666)"
        )
        refused = gw.data(dev, [("temp", kit.T0, 666.0)])
        publisher.publish(*kit.message(refused))
        await kit.wait_until(lambda: kit.count(pg_dsn, "quarantine") == 1)
        publisher.publish(*kit.message(gw.data(dev, [("temp", kit.T0 + 1, 21.0)])))
        await kit.wait_until(lambda: kit.count(pg_dsn, "receipt") == 1)
        await kit.wait_until(lambda: ingest.consumer.stats.acked == 2)
        assert ingest.running
    rows = kit.fetch(pg_dsn, "SELECT reason, detail, payload FROM quarantine")
    assert [(r, "no_666" in d, pl) for r, d, pl in rows] == [
        ("store_refused", True, kit.message(refused)[1])
    ]
    assert kit.fetch(pg_dsn, "SELECT seq FROM receipt") == [(2,)]
    assert kit.fetch(pg_dsn, "SELECT value FROM sample") == [(21.0,)]
    # the refused envelope is missing from the chain: a gap, visible as such
    assert kit.fetch(pg_dsn, "SELECT kind, first_seq, last_seq FROM connectivity_event") == [
        ("gap", 1, 1)
    ]


async def test_an_unreachable_identifier_node_is_waited_out_not_quarantined(
    *, pg_dsn: str, broker: MosquittoBroker, publisher, kit: SimpleNamespace, tmp_path: Path,
) -> None:  # fmt: skip
    port = free_port()
    config = kit.ingest_config(pg_dsn, broker.port, f"http://127.0.0.1:{port}", tmp_path)
    gw = kit.Chain(f"{kit.FIRM}/gw.line1")
    dev = f"{kit.FIRM}/dev.kiln"
    async with Ingest(config) as ingest:
        await kit.wait_until(lambda: ingest.consumer.stats.subscribed)
        publisher.publish(*kit.message(gw.data(dev, [("temp", kit.T0, 1.0)])))
        await kit.wait_until(lambda: ingest.stats.waits > 0)
        assert ingest.stats.last_error is not None
        assert ingest.consumer.stats.acked == 0  # nothing decided: the message waits
        # the records are in the registry before the node answers: no "not found" race
        async with identifiers.Registry(pg_dsn) as registry:
            await registry.migrate()
            await registry.write(
                [
                    (gw.gateway, kit.FIRM, identifiers.GatewayRecord(
                        enterprise=kit.ENTERPRISE, public_key=gw.public).to_values()),
                    (dev, kit.FIRM, identifiers.DeviceRecord(
                        enterprise=kit.ENTERPRISE, gateway=gw.gateway).to_values()),
                ],
                overwrite=True,
            )  # fmt: skip
        node_config = identifiers.NodeConfig.model_validate({
            "kind": "identifiers", "listen": {"host": "127.0.0.1", "port": port},
            "database": {"dsn": pg_dsn, "pool_max": 2}, "authoritative": ["88.709"],
        })  # fmt: skip
        async with identifiers.Node(node_config):
            await kit.wait_until(lambda: kit.count(pg_dsn, "sample") == 1, within=30)
            await kit.wait_until(lambda: ingest.consumer.stats.acked == 1)
    assert kit.count(pg_dsn, "quarantine") == 0


async def test_the_senders_of_waiting_messages_are_looked_up_together(
    *, pg_dsn: str, node: identifiers.Node, register, kit: SimpleNamespace
) -> None:
    """One look-up after another would be a round trip to the node per device at start."""
    gw = kit.Chain(f"{kit.FIRM}/gw.ahead")
    devices = [f"{kit.FIRM}/dev.ahead{i}" for i in range(5)]
    await register(gw, devices)
    messages = [
        kit.message(gw.data(dev, [("t", kit.T0 + i, float(i))])) for i, dev in enumerate(devices)
    ]
    stranger = kit.message(
        kit.Chain(gw.gateway).data(f"{kit.FIRM}/dev.nobody", [("t", kit.T0, 1.0)])
    )
    migrate(pg_dsn)
    store = Store(pg_dsn)
    await asyncio.to_thread(store.connect)
    try:
        async with identifiers.Client(node.url) as resolver:
            verifier = Verifier(store, resolver, asyncio.to_thread)
            verifier.prefetch([t for t, _ in messages] + [stranger[0], "gt/v1/nonsense"])
            assert len(verifier._prefetching) == 7  # the gateway and 6 devices, under way at once
            await kit.wait_until(lambda: not verifier._prefetching, within=10)
            assert resolver.stats.misses == 7  # the unknown device too, which did not raise
            batch = Batch()
            for topic, payload in messages:
                await verifier.add(Message(topic, payload, kit.T0), batch)
            assert verifier.stats.accepted == 5
            assert resolver.stats.misses == 7  # verification found every party looked up
    finally:
        store.close()
