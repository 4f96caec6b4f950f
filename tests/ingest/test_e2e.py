"""Gateway → Mosquitto → ingest → PostgreSQL, with exact counts, through faults.

The gateway is the real one (outbox, signing, uplink) fed with edge batches; ingest runs
in-process, or as ``guantong ingest run`` in a process of its own when it is to be killed.
After every scenario the store holds each sample the gateway committed exactly once, and a
receipt for each envelope.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
import yaml
from _services import AmqttBroker, MosquittoBroker, PostgresCluster, free_port, kiln_works

import gateway.protocol as p
import identifiers
import simulators
from edge import Batch, Quality, Sample
from gateway._keys import create_key
from gateway._runtime import Gateway, running
from gateway.config import GatewayConfig
from guantong.cli.sim import gateway_config as sim_gateway_config
from ingest import Ingest, IngestConfig, migrate

NS = 1_764_000_000_000_000_000
TAGS = 10


def gateway_config(tmp_path: Path, port: int, firm: str, **uplink: Any) -> GatewayConfig:
    doc = {
        "kind": "gateway",
        "gateway": {"id": f"{firm}/gw.{uuid.uuid4().hex[:6]}", "enterprise": f"{firm}/firm",
                    "key_file": "gw.key"},
        "devices": [
            {
                "name": name,
                "id": f"{firm}/dev.{name}",
                "connection": {"protocol": "modbus-tcp", "host": "127.0.0.1", "port": 1502},
                "groups": [{"name": "g", "interval": "1s",
                            "tags": [{"name": "t0", "address": "hr:0", "type": "uint16"}]}],
            }
            for name in ("kiln", "press")
        ],
        "uplink": {"broker": f"mqtt://127.0.0.1:{port}", **uplink},
        "envelope": {"max_samples": 100, "max_delay": "20ms"},
        "health": None,
    }  # fmt: skip
    return GatewayConfig.model_validate(doc, context={"base_dir": tmp_path})


def batch(device: str, n: int) -> Batch:
    ts = NS + n * 1_000_000
    return Batch(
        device, "g", tuple(Sample(f"t{i}", n * TAGS + i, Quality.GOOD, ts) for i in range(TAGS))
    )


async def registered_gateway(
    tmp_path: Path, port: int, register: Any, kit: SimpleNamespace, **uplink: Any
) -> GatewayConfig:
    config = gateway_config(tmp_path, port, kit.FIRM, **uplink)
    key = create_key(config.gateway.key_file)
    await register(kit.Chain(config.gateway.id, key), [d.id for d in config.devices])
    return config


async def feed(
    gw: Gateway,
    batches: int,
    *,
    first: int = 0,
    pause: float = 0.0,
    at: dict[int, Any] | None = None,
) -> None:
    """Put ``batches`` polls of both devices, numbered from ``first``; ``at[n]`` is awaited
    before poll ``n``."""
    for n in range(first, first + batches):
        if at and n in at:
            await at[n]()
        await gw.stream.put(batch("kiln", n))
        await gw.stream.put(batch("press", n))
        if pause:
            await asyncio.sleep(pause)


def sent(gw: Gateway) -> int:
    """Envelopes the gateway committed: data, and checkpoints if a period ended meanwhile."""
    return gw.writer.stats.envelopes + gw.writer.stats.checkpoints


async def settled(gw: Gateway, dsn: str, kit: SimpleNamespace, samples: int) -> None:
    """The gateway committed and delivered ``samples``, and the store holds all of them."""
    await kit.wait_until(lambda: gw.writer.stats.samples >= samples)
    await asyncio.wait_for(gw.uplink.drained(), timeout=30)
    await kit.wait_until(lambda: kit.count(dsn, "receipt") >= sent(gw), within=60)


def check_store(dsn: str, kit: SimpleNamespace, gw: Gateway, batches: int) -> None:
    assert kit.count(dsn, "receipt") == sent(gw)
    assert kit.fetch(dsn, "SELECT min(seq), max(seq), count(DISTINCT seq) FROM receipt") == [
        (1, sent(gw), sent(gw))
    ]
    assert kit.count(dsn, "sample") == batches * 2 * TAGS
    values = kit.fetch(dsn, "SELECT value FROM sample ORDER BY value")
    per_device = sorted(list(range(batches * TAGS)) * 2)
    assert [int(v) for (v,) in values] == per_device
    # receipts count the samples of each envelope; together they are every row
    assert kit.fetch(dsn, "SELECT sum(samples) FROM receipt")[0][0] == batches * 2 * TAGS
    assert kit.count(dsn, "quarantine") == 0
    assert kit.count(dsn, "connectivity_event") == 0
    rollup = kit.fetch(dsn, "SELECT sum(samples), sum(value_sum) FROM sample_1m")
    assert rollup == [(batches * 2 * TAGS, float(sum(per_device)))]


@pytest.mark.parametrize("workers", [0, 2], ids=["decode-here", "decode-workers"])
async def test_exact_counts_and_redelivered_messages_add_no_rows(
    *, pg_dsn: str, broker: MosquittoBroker, node: identifiers.Node, register: Any,
    publisher: Any, kit: SimpleNamespace, tmp_path: Path, workers: int,
) -> None:  # fmt: skip
    config = await registered_gateway(tmp_path, broker.port, register, kit)
    copies: list[tuple[str, bytes]] = []
    spy = kit.Subscriber(broker.port, copies)
    async with (
        Ingest(
            kit.ingest_config(pg_dsn, broker.port, node.url, tmp_path, decode_workers=workers)
        ) as ingest,
        Gateway(config) as gw,
    ):
        await kit.wait_until(lambda: ingest.consumer.stats.subscribed)

        async def devices_known() -> None:  # their next envelopes can come packed
            await kit.wait_until(lambda: len(ingest.verifier.known) == 2)

        await feed(gw, 50, at={1: devices_known})
        await settled(gw, pg_dsn, kit, 50 * 2 * TAGS)
        check_store(pg_dsn, kit, gw, 50)
        # envelopes after a device's first are packed in one pass (in a worker, if any)
        assert ingest.verifier.stats.packed > 0
        # every envelope once more, as a broker would after a lost acknowledgement
        data = [(t, pl) for t, pl in copies if not t.endswith("/status")]
        assert len(data) == sent(gw)
        for topic, payload in data:
            publisher.publish(topic, payload)
        await kit.wait_until(lambda: ingest.verifier.stats.duplicates == len(data))
        await kit.wait_until(lambda: ingest.consumer.stats.acked == ingest.consumer.stats.received)
        check_store(pg_dsn, kit, gw, 50)
    spy.close()


def check_checkpoints(dsn: str, kit: SimpleNamespace, gw: Gateway) -> None:
    """Ingest stored every checkpoint, whole and as counts, and they attest the stored rows."""
    assert kit.count(dsn, "checkpoint") == gw.writer.stats.checkpoints
    assert kit.fetch(dsn, "SELECT count(*) FROM receipt WHERE kind = 3") == [
        (gw.writer.stats.checkpoints,)
    ]
    for (envelope,) in kit.fetch(dsn, "SELECT envelope FROM checkpoint"):
        p.decode_json(bytes(envelope)).verify(gw.public_key)
    attested = kit.fetch(
        dsn,
        "SELECT device, tag, period_from, sum(samples) FROM checkpoint_count "
        "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    stored = kit.fetch(
        dsn,
        "SELECT d.identifier, s.tag, date_trunc('second', x.ts), count(*) FROM sample x "
        "JOIN series s ON s.id = x.series_id JOIN device d ON d.id = s.device_id "
        "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    assert attested == stored


def subscribed(url: str) -> bool:
    try:
        return bool(httpx.get(url, timeout=2).json()["mqtt"]["subscribed"])
    except httpx.HTTPError:
        return False


def ingest_process(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "guantong", "ingest", "run", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


async def kill_once_storing(proc: subprocess.Popen[str], dsn: str, kit: SimpleNamespace) -> None:
    """SIGKILL the ingest ``proc`` once it has stored a first envelope."""
    await kit.wait_until(lambda: kit.count(dsn, "receipt") > 0)
    os.kill(proc.pid, signal.SIGKILL)
    await asyncio.to_thread(proc.communicate, timeout=10)


async def stop_ingest(proc: subprocess.Popen[str] | None) -> None:
    """SIGTERM: ingest commits what it received, and must exit cleanly."""
    assert proc is not None
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.to_thread(proc.communicate, timeout=20)
    assert proc.returncode == 0, err


def kill_left(*procs: subprocess.Popen[str] | None) -> None:
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()


def ingest_file(config: IngestConfig, path: Path, *, health: str) -> Path:
    """``config`` as a file for ``guantong ingest run``, with MQTT 5's settings only if it
    speaks MQTT 5 (under 3.1.1 they are refused, not ignored)."""
    doc = config.model_dump(mode="json")
    if config.mqtt.protocol != "5":
        for mqtt5 in ("session_expiry", "receive_maximum"):
            del doc["mqtt"][mqtt5]
    doc["health"] = {"listen": health}
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_ingest_killed_with_sigkill_and_restarted_loses_nothing(
    *, pg_dsn: str, broker: MosquittoBroker, node: identifiers.Node, register: Any,
    kit: SimpleNamespace, tmp_path: Path, protocol: str,
) -> None:  # fmt: skip
    """With MQTT 3.1.1 too (clean_session=false): Mosquitto keeps the session and sends again
    what ingest had received but not acknowledged when it was killed."""
    config = await registered_gateway(tmp_path, broker.port, register, kit, protocol=protocol)
    config_ = kit.ingest_config(
        pg_dsn, broker.port, node.url, tmp_path, mqtt={"protocol": protocol}, decode_workers=2
    )
    health = f"127.0.0.1:{free_port()}"
    path = ingest_file(config_, tmp_path / "ingest.yaml", health=health)
    first = ingest_process(path)
    second: subprocess.Popen[str] | None = None
    before = 0
    try:
        # gateways publishing before ingest's first subscription would not be kept for it
        await kit.wait_until(lambda: subscribed(f"http://{health}/healthz"))
        async with Gateway(config) as gw:

            async def restart() -> None:
                nonlocal second, before
                before = await asyncio.to_thread(kit.count, pg_dsn, "receipt")
                second = ingest_process(path)

            await feed(
                gw,
                150,
                pause=0.01,
                at={40: lambda: kill_once_storing(first, pg_dsn, kit), 100: restart},
            )
            await settled(gw, pg_dsn, kit, 150 * 2 * TAGS)
            check_store(pg_dsn, kit, gw, 150)
        assert first.returncode == -signal.SIGKILL
        assert 0 < before < sent(gw)  # the rest waited in the broker's session
        await stop_ingest(second)
    finally:
        kill_left(first, second)


@pytest.mark.slow
async def test_postgresql_restarted_mid_stream_loses_nothing(
    *, broker: MosquittoBroker, node: identifiers.Node, register: Any,
    kit: SimpleNamespace, tmp_path: Path,
) -> None:  # fmt: skip
    config = await registered_gateway(tmp_path, broker.port, register, kit)
    with PostgresCluster() as cluster, cluster.database() as dsn:
        migrate(dsn)
        async with (
            Ingest(kit.ingest_config(dsn, broker.port, node.url, tmp_path)) as ingest,
            Gateway(config) as gw,
        ):

            async def restart() -> None:
                started = time.monotonic()
                await kit.wait_until(lambda: not ingest.stats.database_up)
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
                await asyncio.to_thread(cluster.start)

            restarted: list[asyncio.Task[None]] = []

            async def crash() -> None:
                await kit.wait_until(lambda: kit.count(dsn, "receipt") > 0)
                await asyncio.to_thread(cluster.kill)  # immediate shutdown: a crash
                # restarted once ingest met the outage, which it does when it writes the polls
                # fed meanwhile: ingest may have committed every earlier one already
                restarted.append(asyncio.create_task(restart()))

            await kit.wait_until(lambda: ingest.consumer.stats.subscribed)
            await feed(gw, 120, pause=0.01, at={40: crash})
            await restarted[0]
            await settled(gw, dsn, kit, 120 * 2 * TAGS)
            check_store(dsn, kit, gw, 120)
            assert ingest.stats.waits > 0  # the crash was met, and waited out
            assert ingest.stats.database_up


@pytest.mark.slow
async def test_simulated_plcs_through_the_gateway_arrive_complete(
    *, pg_dsn: str, broker: MosquittoBroker, node: identifiers.Node, register: Any,
    kit: SimpleNamespace, tmp_path: Path,
) -> None:  # fmt: skip
    """Modbus simulators → gateway (drivers, outbox, signing) → Mosquitto → ingest → store."""
    factory_file = tmp_path / "factory.yaml"
    factory_file.write_text(yaml.safe_dump(kiln_works(free_port())), encoding="utf-8")
    fac = simulators.load_factory(factory_file)
    doc = sim_gateway_config(fac, base_dir=tmp_path)
    doc["uplink"] = {"broker": broker.url}
    doc["envelope"] = {"max_samples": 100, "max_delay": "100ms"}
    doc["health"] = None
    config = GatewayConfig.model_validate(doc, context={"base_dir": tmp_path})
    key = create_key(config.gateway.key_file)
    await register(kit.Chain(config.gateway.id, key), [d.id for d in config.devices])
    async with (
        Ingest(kit.ingest_config(pg_dsn, broker.port, node.url, tmp_path)) as ingest,
        simulators.Simulator(fac, base_dir=tmp_path),
    ):
        await kit.wait_until(lambda: ingest.consumer.stats.subscribed)
        async with running(config, drain_timeout=20) as gw:
            await kit.wait_until(lambda: kit.count(pg_dsn, "receipt") > 2)
            await asyncio.sleep(2)
        samples, envelopes = gw.writer.stats.samples, sent(gw)
        await kit.wait_until(lambda: kit.count(pg_dsn, "receipt") == envelopes)
    assert kit.count(pg_dsn, "sample") == samples
    assert kit.fetch(pg_dsn, "SELECT sum(samples), max(seq) FROM receipt") == [(samples, envelopes)]
    devices = kit.fetch(pg_dsn, "SELECT DISTINCT d.identifier FROM receipt r "
                        "JOIN device d ON d.id = r.device_id ORDER BY 1")  # fmt: skip
    assert devices == [("88.709.911/dev.kiln-1",), ("88.709.911/dev.meter-1",)]
    assert kit.count(pg_dsn, "quarantine") == 0


@pytest.mark.slow
async def test_a_stop_during_a_database_outage_does_not_wait_for_the_database(
    *, broker: MosquittoBroker, node: identifiers.Node, register: Any, publisher: Any,
    kit: SimpleNamespace, tmp_path: Path,
) -> None:  # fmt: skip
    chain = kit.Chain(f"{kit.FIRM}/gw.stop")
    dev = f"{kit.FIRM}/dev.kiln"
    await register(chain, [dev])
    with PostgresCluster() as cluster, cluster.database() as dsn:
        config = kit.ingest_config(dsn, broker.port, node.url, tmp_path)
        ingest = Ingest(config, stop_timeout=0.5)
        async with asyncio.timeout(60):  # a stop that waited for the database would hang here
            async with ingest:
                await kit.wait_until(lambda: ingest.consumer.stats.subscribed)
                publisher.publish(*kit.message(chain.data(dev, [("t", kit.T0, 1.0)])))
                await kit.wait_until(lambda: kit.count(dsn, "receipt") == 1)
                await asyncio.to_thread(cluster.kill)
                publisher.publish(*kit.message(chain.data(dev, [("t", kit.T0 + 1, 2.0)])))
                await kit.wait_until(lambda: ingest.stats.write_retries > 0)
            assert not ingest.running
        await asyncio.to_thread(cluster.start)
        # the second envelope was not acknowledged: the broker keeps it for the next start
        async with Ingest(config) as again:
            await kit.wait_until(lambda: kit.count(dsn, "receipt") == 2)
            await kit.wait_until(lambda: again.consumer.stats.acked == 1)


async def test_a_sparkplug_gateway_is_verified_and_stored_like_a_json_one(
    *, pg_dsn: str, broker: MosquittoBroker, node: identifiers.Node, register: Any,
    kit: SimpleNamespace, tmp_path: Path,
) -> None:  # fmt: skip
    config = await registered_gateway(tmp_path, broker.port, register, kit)
    uplink = {"format": "sparkplug", "checkpoint_interval": 1.0}
    config = config.model_copy(update={"uplink": config.uplink.model_copy(update=uplink)})
    async with (
        Ingest(kit.ingest_config(pg_dsn, broker.port, node.url, tmp_path)) as ingest,
        Gateway(config) as gw,
    ):
        await kit.wait_until(lambda: ingest.consumer.stats.subscribed)
        await feed(gw, 20)
        await kit.wait_until(lambda: gw.writer.stats.checkpoints >= 1, within=10)
        await settled(gw, pg_dsn, kit, 20 * 2 * TAGS)
        check_store(pg_dsn, kit, gw, 20)
        check_checkpoints(pg_dsn, kit, gw)
        # births and deaths carry no envelope: not stored, not quarantined, not subscribed to
        assert ingest.consumer.stats.received == sent(gw)


# --- the demo's embedded broker (amqtt, MQTT 3.1.1) ---------------------------------------------

#: amqtt keeps messages for a disconnected session only if its client gave a user name
AMQTT_GATEWAY = {"protocol": "3.1.1", "username": "gateway"}
AMQTT_INGEST = {"protocol": "3.1.1", "username": "ingest"}


@pytest.fixture
def amqtt() -> Iterator[AmqttBroker]:
    with AmqttBroker() as server:
        yield server


@pytest.mark.slow
async def test_through_the_embedded_broker_a_restarted_ingest_gets_what_came_meanwhile(
    *, pg_dsn: str, amqtt: AmqttBroker, node: identifiers.Node, register: Any,
    kit: SimpleNamespace, tmp_path: Path,
) -> None:  # fmt: skip
    """amqtt keeps ingest's session (in memory) while ingest is stopped, and what the gateway
    published meanwhile arrives after the restart: nothing lost, nothing twice."""
    config = await registered_gateway(tmp_path, amqtt.port, register, kit, **AMQTT_GATEWAY)
    ingest_config = kit.ingest_config(pg_dsn, amqtt.port, node.url, tmp_path, mqtt=AMQTT_INGEST)
    async with Gateway(config) as gw:
        async with Ingest(ingest_config) as ingest:
            await kit.wait_until(lambda: ingest.consumer.stats.subscribed)
            await feed(gw, 30)
            await settled(gw, pg_dsn, kit, 30 * 2 * TAGS)
            await kit.wait_until(
                lambda: ingest.consumer.stats.acked == ingest.consumer.stats.received
            )
        await feed(gw, 30, first=30)
        await kit.wait_until(lambda: gw.writer.stats.samples >= 60 * 2 * TAGS)
        await asyncio.wait_for(gw.uplink.drained(), timeout=30)  # all with the broker
        before = kit.count(pg_dsn, "receipt")
        async with Ingest(ingest_config) as again:
            await settled(gw, pg_dsn, kit, 60 * 2 * TAGS)
            check_store(pg_dsn, kit, gw, 60)
            assert before < sent(gw)  # the rest waited in the broker's session
            # and acknowledged (amqtt sends the retained status again, at QoS 0: not counted)
            await kit.wait_until(lambda: again.consumer.stats.acked >= sent(gw) - before)


@pytest.mark.slow
async def test_ingest_killed_through_the_embedded_broker_loses_only_what_shows_as_a_gap(
    *, pg_dsn: str, amqtt: AmqttBroker, node: identifiers.Node, register: Any,
    kit: SimpleNamespace, tmp_path: Path,
) -> None:  # fmt: skip
    """amqtt drops what ingest had received but not acknowledged when it was killed (see the
    next test): unlike with Mosquitto, a SIGKILL may lose envelopes. The loss is not silent:
    every envelope missing from the store lies in a gap the chain recorded."""
    config = await registered_gateway(tmp_path, amqtt.port, register, kit, **AMQTT_GATEWAY)
    health = f"127.0.0.1:{free_port()}"
    path = ingest_file(
        kit.ingest_config(pg_dsn, amqtt.port, node.url, tmp_path, mqtt=AMQTT_INGEST),
        tmp_path / "ingest.yaml",
        health=health,
    )
    first = ingest_process(path)
    second: subprocess.Popen[str] | None = None
    try:
        await kit.wait_until(lambda: subscribed(f"http://{health}/healthz"))
        async with Gateway(config) as gw:

            async def restart() -> None:
                nonlocal second
                second = ingest_process(path)

            await feed(
                gw,
                150,
                pause=0.01,
                at={40: lambda: kill_once_storing(first, pg_dsn, kit), 100: restart},
            )
            await kit.wait_until(lambda: gw.writer.stats.samples >= 150 * 2 * TAGS)
            await asyncio.wait_for(gw.uplink.drained(), timeout=30)
            last = sent(gw)
            await kit.wait_until(
                lambda: kit.fetch(pg_dsn, "SELECT max(seq) FROM receipt")[0][0] == last, within=60
            )
        await stop_ingest(second)  # what it received, it commits before it stops
    finally:
        kill_left(first, second)
    stored = {seq for (seq,) in kit.fetch(pg_dsn, "SELECT seq FROM receipt")}
    gaps = kit.fetch(pg_dsn, "SELECT kind, first_seq, last_seq FROM connectivity_event")
    assert {kind for kind, _, _ in gaps} <= {"gap"}
    in_gaps = {seq for _, a, b in gaps for seq in range(a, b + 1)}
    missing = set(range(1, last + 1)) - stored
    assert missing <= in_gaps
    assert kit.fetch(pg_dsn, "SELECT sum(samples) FROM receipt") == [(kit.count(pg_dsn, "sample"),)]
    assert kit.count(pg_dsn, "quarantine") == 0


class Session311:
    """A plain MQTT 3.1.1 subscriber with a persistent session (clean_session=false) that
    acknowledges what it receives only if told to, as ingest does after its commit."""

    def __init__(self, port: int, client_id: str, *, ack: bool) -> None:
        self.got: list[bytes] = []
        self.subscribed = threading.Event()
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=False,
            manual_ack=True,
        )
        client.username_pw_set("ingest")
        client.on_connect = lambda c, *_: c.subscribe("held/#", qos=1)
        client.on_subscribe = lambda *_: self.subscribed.set()

        def on_message(c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            self.got.append(msg.payload)
            if ack:
                c.ack(msg.mid, msg.qos)

        client.on_message = on_message
        client.connect("127.0.0.1", port)
        client.loop_start()
        assert self.subscribed.wait(10)
        self.client = client

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.parametrize(
    ("server", "sent_again"), [("broker", 20), ("amqtt", 0)], ids=["mosquitto", "amqtt"]
)
async def test_what_a_broker_sends_again_to_a_3_1_1_session_that_had_not_acknowledged(
    request: pytest.FixtureRequest, kit: SimpleNamespace, server: str, sent_again: int
) -> None:
    """The embedded broker's limitation, as docs/demo.md states it: Mosquitto sends a QoS 1
    message again on the session's next connection until it is acknowledged; amqtt 0.12
    forgets it when the connection ends."""
    port = request.getfixturevalue(server).port
    client_id = f"held-{uuid.uuid4().hex[:8]}"
    holder = Session311(port, client_id, ack=False)
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    publisher.username_pw_set("gateway")
    publisher.connect("127.0.0.1", port)
    publisher.loop_start()
    try:
        for n in range(20):
            publisher.publish(f"held/{n}", str(n).encode(), qos=1).wait_for_publish(10)
        await kit.wait_until(lambda: len(holder.got) == 20)
        holder.close()  # received, never acknowledged
        again = Session311(port, client_id, ack=True)
        try:
            await asyncio.sleep(1.5)  # what the broker sends again, it sends at the reconnect
            assert sorted(again.got) == sorted(str(n).encode() for n in range(sent_again))
        finally:
            again.close()
    finally:
        publisher.disconnect()
        publisher.loop_stop()
