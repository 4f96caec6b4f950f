"""The gateway against a real Mosquitto: signed chain delivered, outages survived, status kept."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from _services import MosquittoBroker, MqttServer

import gateway.protocol as p
from edge import Batch, ConnectivityEvent, Quality, Sample
from gateway._keys import create_key
from gateway._outbox import Head, Outbox
from gateway._runtime import Gateway, GatewayError, running
from gateway._uplink import JsonSession, MqttSettings, Uplink
from gateway.config import GatewayConfig

#: the ``subscribe`` fixture of conftest.py
Subscribe = Callable[[MqttServer, str], Any]

FIRM = "88.709.911"
NS = 1_764_000_000_000_000_000


def make_config(tmp_path: Path, port: int, firm_gw: str, **uplink: Any) -> GatewayConfig:
    doc = {
        "kind": "gateway",
        "gateway": {"id": f"{FIRM}/{firm_gw}", "enterprise": f"{FIRM}/firm", "key_file": "gw.key"},
        "devices": [
            {
                "name": name,
                "id": f"{FIRM}/dev.{name}",
                "connection": {"protocol": "modbus-tcp", "host": "127.0.0.1", "port": 1502},
                "groups": [
                    {
                        "name": "g",
                        "interval": "1s",
                        "tags": [{"name": "t0", "address": "hr:0", "type": "uint16"}],
                    }
                ],
            }
            for name in ("kiln", "press")
        ],
        "uplink": {"broker": f"mqtt://127.0.0.1:{port}", **uplink},
        "envelope": {"max_samples": 200, "max_delay": "50ms"},
        "health": {"listen": "127.0.0.1:0"},
    }
    return GatewayConfig.model_validate(doc, context={"base_dir": tmp_path})


def batch(device: str, n: int, size: int = 10) -> Batch:
    return Batch(
        device,
        "g",
        tuple(Sample(f"t{i}", n * size + i, Quality.GOOD, NS + n * 1_000_000) for i in range(size)),
    )


async def wait_committed(gw: Gateway, samples: int) -> None:
    """Until the writer has committed ``samples`` (it flushes every 50 ms)."""
    async with asyncio.timeout(10):
        while gw.writer.stats.samples < samples:  # noqa: ASYNC110 - polling a counter
            await asyncio.sleep(0.02)


def check_delivery(envelopes: list[p.SignedEnvelope], public: bytes, batches: int) -> None:
    """Every envelope verifies; after dedupe by seq the chain is whole and no sample is missing."""
    by_seq: dict[int, p.Envelope] = {}
    for signed in envelopes:
        signed.verify(public)
        by_seq.setdefault(signed.envelope.seq, signed.envelope)
    seqs = sorted(by_seq)
    assert seqs == list(range(1, len(seqs) + 1))
    for seq in seqs[1:]:
        assert by_seq[seq].prev == by_seq[seq - 1].digest
    values = sorted(s.value for e in by_seq.values() for s in e.samples)  # type: ignore[type-var]
    per_device = batches * 10
    assert values == sorted(list(range(per_device)) * 2)


async def test_envelopes_reach_the_broker_signed_chained_with_birth_and_offline_status(
    tmp_path: Path, mqtt_broker: MqttServer, subscribe: Subscribe
) -> None:
    config = make_config(tmp_path, mqtt_broker.port, f"gw.{uuid.uuid4().hex[:8]}")
    key = create_key(config.gateway.key_file)
    base = p.status_topic(config.gateway.id).rsplit("/", 1)[0]
    sub = subscribe(mqtt_broker, base + "/#")
    async with Gateway(config) as gw:
        await gw.stream.put(ConnectivityEvent("press", up=False, ts=NS, reason="timeout"))
        for n in range(30):
            await gw.stream.put(batch("kiln", n))
            await gw.stream.put(batch("press", n))
        await wait_committed(gw, 600)
        await asyncio.wait_for(gw.uplink.drained(), timeout=10)
        assert gw.health is not None
        async with httpx.AsyncClient(base_url=gw.health.url) as http:
            health = (await http.get("/healthz")).json()
            metrics = (await http.get("/metrics")).text
    assert health["status"] == "ok"
    assert health["uplink"]["connected"] is True
    assert health["devices_down"] == ["press"]
    assert health["outbox"]["disk_full"] is False
    assert "guantong_gateway_samples_committed_total 600.0" in metrics
    assert 'guantong_gateway_device_up{device="press"} 0.0' in metrics
    assert "guantong_gateway_outbox_envelopes 0.0" in metrics
    assert "guantong_gateway_outbox_disk_full 0.0" in metrics
    assert "guantong_gateway_outbox_disk_free_bytes " in metrics
    check_delivery(sub.envelopes(), p.public_key_bytes(key), 30)
    await asyncio.sleep(0.2)
    statuses = sub.statuses()
    assert statuses[0][0]["online"] is True
    assert statuses[0][0]["key"] == p.fingerprint(p.public_key_bytes(key))
    assert [d["id"] for d in statuses[0][0]["devices"]] == [f"{FIRM}/dev.kiln", f"{FIRM}/dev.press"]
    assert statuses[-1][0] == {"online": False, "gateway": config.gateway.id}


@pytest.mark.slow
async def test_a_broker_outage_loses_nothing(
    tmp_path: Path, subscribe: Subscribe, durable_broker: MosquittoBroker
) -> None:
    broker = durable_broker
    config = make_config(tmp_path, broker.port, "gw.outage")
    key = create_key(config.gateway.key_file)
    sub = subscribe(broker, "gt/v1/#")
    async with Gateway(config, drain_timeout=30) as gw:
        start = time.monotonic()
        n = 0
        stopped = restarted = False
        while time.monotonic() - start < 6:
            await gw.stream.put(batch("kiln", n))
            await gw.stream.put(batch("press", n))
            n += 1
            elapsed = time.monotonic() - start
            if elapsed > 1.5 and not stopped:
                await asyncio.to_thread(broker.stop)
                stopped = True
            if elapsed > 4 and not restarted:
                await asyncio.to_thread(broker.start)
                restarted = True
            await asyncio.sleep(0.01)
        await wait_committed(gw, n * 20)
        await asyncio.wait_for(gw.uplink.drained(), timeout=40)
        assert gw.uplink.stats.connects >= 2
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = {s.envelope.seq for s in sub.envelopes()}
        if len(got) == gw.writer.stats.envelopes:
            break
        await asyncio.sleep(0.1)
    check_delivery(sub.envelopes(), p.public_key_bytes(key), n)


def test_a_key_readable_by_others_is_refused(tmp_path: Path, mqtt_broker: MqttServer) -> None:
    config = make_config(tmp_path, mqtt_broker.port, "gw.open-key")
    create_key(config.gateway.key_file)
    config.gateway.key_file.chmod(0o644)
    with pytest.raises(GatewayError, match="chmod 600"):
        Gateway(config)


async def test_backlog_is_replayed_behind_live_envelopes_and_marked_historical(
    tmp_path: Path, mqtt_broker: MqttServer
) -> None:
    topic = f"gt/v1/88.709.911/gw.{uuid.uuid4().hex[:8]}/loss"
    received: list[tuple[bytes, bool]] = []
    ready = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    sub.on_subscribe = lambda *_: ready.set()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        props = dict(getattr(msg.properties, "UserProperty", []))
        received.append((msg.payload, props.get("historical") == "true"))

    sub.on_message = on_message
    sub.connect(mqtt_broker.host, mqtt_broker.port)
    sub.loop_start()
    try:
        assert ready.wait(10)
        with Outbox(tmp_path / "o.db") as box:
            for seq in range(1, 1001):  # an outage's backlog
                box.append([(seq, topic, b"backlog %d" % seq, 1)], Head(seq, bytes(32)))
            settings = MqttSettings(host=mqtt_broker.host, port=mqtt_broker.port, inflight=50)
            session = JsonSession(topic.replace("/loss", "/status"), b"{}", b"{}")
            async with Uplink(box, settings, session=session) as uplink:
                async with asyncio.timeout(10):
                    while not uplink.stats.connected:  # noqa: ASYNC110 - polling a flag
                        await asyncio.sleep(0.005)
                box.append([(1001, topic, b"live", 1)], Head(1001, bytes(32)))
                uplink.notify()
                await asyncio.wait_for(uplink.drained(), timeout=20)
        await asyncio.sleep(0.2)
    finally:
        sub.disconnect()
        sub.loop_stop()
    payloads = [payload for payload, _ in received]
    assert sorted(set(payloads)) == sorted([b"backlog %d" % s for s in range(1, 1001)] + [b"live"])
    assert all(historical for payload, historical in received if payload != b"live")
    assert not any(historical for payload, historical in received if payload == b"live")
    # the live envelope overtook most of the backlog instead of waiting behind all of it
    assert payloads.index(b"live") < payloads.index(b"backlog 1000")


async def test_a_running_gateway_keeps_no_device_model_of_its_config(
    tmp_path: Path, mqtt_broker: MqttServer
) -> None:
    """100,000 tags as pydantic models are some 83 MB: once ``running`` has built the gateway
    and its drivers, dropping the parsed config frees them (docs/gateway.md, Memory)."""
    config = make_config(tmp_path, mqtt_broker.port, f"gw.{uuid.uuid4().hex[:8]}")
    create_key(config.gateway.key_file)
    device = weakref.ref(config.devices[0])
    tag = weakref.ref(config.devices[1].groups[0].tags[0])
    gateway_run = running(config, drain_timeout=1)
    del config
    async with gateway_run as gw:
        gc.collect()
        assert device() is None
        assert tag() is None
        assert gw.devices == {"kiln": f"{FIRM}/dev.kiln", "press": f"{FIRM}/dev.press"}
