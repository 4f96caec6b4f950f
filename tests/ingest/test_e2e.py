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
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import yaml
from _services import MosquittoBroker, PostgresCluster, free_port, kiln_works

import gateway.protocol as p
import identifiers
import simulators
from edge import Batch, Quality, Sample
from gateway._keys import create_key
from gateway._runtime import Gateway, running
from gateway.config import GatewayConfig
from guantong.cli.sim import gateway_config as sim_gateway_config
from ingest import Ingest, migrate

NS = 1_764_000_000_000_000_000
TAGS = 10


def gateway_config(tmp_path: Path, port: int, firm: str) -> GatewayConfig:
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
        "uplink": {"broker": f"mqtt://127.0.0.1:{port}"},
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
    tmp_path: Path, port: int, register: Any, kit: SimpleNamespace
) -> GatewayConfig:
    config = gateway_config(tmp_path, port, kit.FIRM)
    key = create_key(config.gateway.key_file)
    await register(kit.Chain(config.gateway.id, key), [d.id for d in config.devices])
    return config


async def feed(
    gw: Gateway, batches: int, *, pause: float = 0.0, at: dict[int, Any] | None = None
) -> None:
    """Put ``batches`` polls of both devices; ``at[n]`` is awaited before poll ``n``."""
    for n in range(batches):
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
        await feed(gw, 50)
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


@pytest.mark.slow
async def test_ingest_killed_with_sigkill_and_restarted_loses_nothing(
    *, pg_dsn: str, broker: MosquittoBroker, node: identifiers.Node, register: Any,
    kit: SimpleNamespace, tmp_path: Path,
) -> None:  # fmt: skip
    config = await registered_gateway(tmp_path, broker.port, register, kit)
    config_ = kit.ingest_config(pg_dsn, broker.port, node.url, tmp_path, decode_workers=2)
    doc = config_.model_dump(mode="json")
    health = f"127.0.0.1:{free_port()}"
    doc["health"] = {"listen": health}
    path = tmp_path / "ingest.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    first = ingest_process(path)
    second: subprocess.Popen[str] | None = None
    before = 0
    try:
        # gateways publishing before ingest's first subscription would not be kept for it
        await kit.wait_until(lambda: subscribed(f"http://{health}/healthz"))
        async with Gateway(config) as gw:

            async def kill() -> None:
                await kit.wait_until(lambda: kit.count(pg_dsn, "receipt") > 0)
                os.kill(first.pid, signal.SIGKILL)
                await asyncio.to_thread(first.communicate, timeout=10)

            async def restart() -> None:
                nonlocal second, before
                before = await asyncio.to_thread(kit.count, pg_dsn, "receipt")
                second = ingest_process(path)

            await feed(gw, 150, pause=0.01, at={40: kill, 100: restart})
            await settled(gw, pg_dsn, kit, 150 * 2 * TAGS)
            check_store(pg_dsn, kit, gw, 150)
        assert first.returncode == -signal.SIGKILL
        assert 0 < before < sent(gw)  # the rest waited in the broker's session
        assert second is not None
        second.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(second.communicate, timeout=20)
        assert second.returncode == 0, err
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()


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
