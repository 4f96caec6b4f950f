"""OEE through the real pipeline, with the machine's state forced for known stretches.

A CNC simulator (Modbus TCP) → the gateway (every group polled each second) → Mosquitto →
ingest (verifies against a real identifier node) → PostgreSQL. The device records are made
from the gateway config as ``guantong identifiers register`` makes them, so the OEE
declaration travels from the config to the evidence through the record (``GT_OEE``).

The test forces the machine's state on whole seconds (T = the first of them): running for
[0, 30), idle [30, 45), alarm [45, 55), off [55, 65), running [65, 80); the window is
[5, 75). So the state tag must show 35 s running, 60 s planned (off is not planned) and
availability 35/60, each transition to within one poll (the gateway reads the state once a
second, at a phase of its own): at most 1 s per transition.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from _services import MosquittoBroker, PostgresServer, fetch, free_port, ingest_config, wait_until

import evidence
import identifiers
import simulators
from gateway._keys import create_key
from gateway._runtime import running
from gateway.config import GatewayConfig
from guantong.cli.identifiers import gateway_records
from guantong.cli.sim import gateway_config
from ingest import Ingest

pytestmark = pytest.mark.slow
FIRM = "88.709.911"
DEVICE = f"{FIRM}/dev.cnc-1"
#: (second from T, forced state)
PLAN = ((0, "running"), (30, "idle"), (45, "alarm"), (55, "off"), (65, "running"), (80, None))
WINDOW = (5, 75)


@dataclass
class Run:
    facts: evidence.FirmEvidence
    registered: list[evidence.RegisteredDevice]
    parts: list[tuple[dt.datetime, float]]  # the stored part counter, window and one before
    stopped: list[float]  # the part counter while the machine was forced out of running


def factory(port: int) -> dict[str, Any]:
    return {
        "kind": "factory", "name": "Works", "firm": {"name": "test firm", "prefix": FIRM},
        "seed": 7,
        "endpoints": [{"name": "plc", "protocol": "modbus-tcp", "host": "127.0.0.1",
                       "port": port}],
        "lines": [{"name": "Line1", "machines": [
            {"name": "cnc-1", "profile": "cnc", "endpoint": "plc", "unit_id": 1}]}],
    }  # fmt: skip


async def sleep_until(t: float) -> None:
    await asyncio.sleep(max(0.0, t - time.time()))


async def pipeline(dsn: str, broker: MosquittoBroker, tmp: Path) -> Run:
    fac_file = tmp / "factory.yaml"
    fac_file.write_text(yaml.safe_dump(factory(free_port())), encoding="utf-8")
    fac = simulators.load_factory(fac_file)
    doc = gateway_config(fac, base_dir=tmp)
    for group in doc["devices"][0]["groups"]:
        group["interval"] = "1s"
    doc["uplink"] = {"broker": broker.url}
    doc["envelope"] = {"max_samples": 200, "max_delay": "200ms"}
    doc["health"] = None
    config = GatewayConfig.model_validate(doc, context={"base_dir": tmp})
    create_key(config.gateway.key_file)
    node_config = identifiers.NodeConfig.model_validate(
        {"kind": "identifiers", "listen": {"host": "127.0.0.1", "port": 0},
         "database": {"dsn": dsn, "pool_max": 2}, "authoritative": ["88.709"]}
    )  # fmt: skip
    async with identifiers.Node(node_config) as node:
        _, token = await node.registry.create_token("88.709", days=1, label="oee tests")
        async with identifiers.Client(node.url, token=token) as client:
            await client.register(gateway_records(config, None))
            registered = await evidence.registered_devices(client, config.gateway.enterprise)
        settings = ingest_config(dsn, broker.port, node.url, tmp, health=None)
        async with (
            Ingest(settings) as ingest,
            simulators.Simulator(fac, base_dir=tmp) as sim,
        ):
            await wait_until(lambda: ingest.consumer.stats.subscribed)
            async with running(config, drain_timeout=20) as gw:
                await wait_until(lambda: gw.writer.stats.envelopes > 0)
                t0 = int(time.time()) + 3
                for second, state in PLAN:
                    await sleep_until(t0 + second + 0.3)
                    if state is None:
                        await sim.faults.clear("cnc-1", "state")
                    else:
                        await sim.faults.inject("cnc-1", "state", state=state)
            sent = gw.writer.stats.envelopes
            await wait_until(
                lambda: fetch(dsn, "SELECT count(*) FROM receipt WHERE kind = 1") == [(sent,)]
            )
    start = dt.datetime.fromtimestamp(t0 + WINDOW[0], dt.UTC)
    end = dt.datetime.fromtimestamp(t0 + WINDOW[1], dt.UTC)
    with psycopg.connect(dsn) as conn:
        facts = evidence.collect(conn, config.gateway.enterprise, evidence.Window(start, end),
                                 registered, params=evidence.Params(outage_after=10))  # fmt: skip
    counter = """
        SELECT ts, value FROM sample JOIN series s ON s.id = series_id
        WHERE s.tag = 'part_count' AND ts >= %s AND ts < %s ORDER BY ts"""
    before = fetch(dsn, counter.replace("ORDER BY ts", "ORDER BY ts DESC LIMIT 1"),
                   start - dt.timedelta(seconds=10), start)  # fmt: skip
    parts = before + fetch(dsn, counter, start, end)
    stopped = fetch(dsn, counter, *(dt.datetime.fromtimestamp(t0 + s, dt.UTC) for s in (31, 65)))
    return Run(facts, registered, parts, [v for _, v in stopped])


@pytest.fixture(scope="module")
def run(pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    with pg_server.database() as dsn, MosquittoBroker() as broker:
        yield asyncio.run(pipeline(dsn, broker, tmp_path_factory.mktemp("oee")))


def test_the_declaration_travels_from_the_config_through_the_record(run: Run) -> None:
    (record,) = run.registered
    assert record.oee == identifiers.OeeSignals(
        state="state", running=(2,), planned=(1, 2, 3), total="part_count", ideal_cycle=45
    )


def test_availability_follows_the_forced_states(run: Run) -> None:
    oee = run.facts.device(DEVICE).oee
    assert oee is not None
    # [5, 30) and [65, 75) running; [30, 55) idle and alarm; [55, 65) off
    assert abs(oee.running_seconds - 35) <= 2  # two transitions into or out of running
    assert abs(oee.planned_seconds - 60) <= 2  # two transitions into or out of off
    assert abs(oee.observed_seconds - 70) <= 1  # every second polled
    assert oee.availability == pytest.approx(oee.running_seconds / oee.planned_seconds)
    assert abs(oee.availability - 35 / 60) <= 0.05  # type: ignore[operator]


def test_parts_are_the_counters_increases_and_stop_while_forced_idle(run: Run) -> None:
    oee = run.facts.device(DEVICE).oee
    assert oee is not None
    assert len(run.stopped) >= 30
    assert len(set(run.stopped)) == 1  # idle, alarm and off make no parts
    values = [v for _, v in run.parts]
    assert values == sorted(values)  # the counter never went back
    assert oee.total == values[-1] - values[0]
    assert oee.counter_resets == 0
    # one part per 45 s of running: 35 s of running make at most one
    assert oee.total in (0, 1)
    assert oee.performance == pytest.approx(45 * oee.total / oee.running_seconds)
    # no reject counter on a CNC: quality, and so OEE, cannot be said, and the record says so
    assert oee.quality is None
    assert oee.oee is None
    assert oee.missing == ("quality: neither a good-part nor a reject counter declared",)
