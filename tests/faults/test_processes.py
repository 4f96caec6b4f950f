"""Fault scenarios against the pipeline as processes: simulators, gateway, Mosquitto, ingest
and PostgreSQL, each killed or restarted for real while the gateway polls at a fixed load.

Each scenario ends with the reconciliation of ``_harness`` and must PASS: every sample the
gateway committed is stored once or declared lost, and the chain has no hole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from _services import MosquittoBroker, PostgresCluster, PostgresServer
from faults._harness import Outcome, Plant

Record = Callable[[Outcome], Outcome]


def check(row: Outcome) -> None:
    assert row.passed, f"{row.scenario}: {row.verdict} ({'; '.join(row.notes)})"


async def test_broker_restart(pg_dsn: str, plant_factory: Any, outcome: Record) -> None:
    """Mosquitto stopped and started on the same port: its persistence keeps ingest's
    session, so what the gateway publishes before ingest is back waits in the broker."""
    broker = MosquittoBroker(
        listener_config=["allow_anonymous true", "persistence true", "autosave_interval 1"]
    )
    with broker:
        plant: Plant = await plant_factory(pg_dsn, broker=broker)
        await plant.grows()
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(2)  # the gateway keeps polling into its outbox meanwhile
        await asyncio.to_thread(broker.start)
        await plant.grows()
        connects = await asyncio.to_thread(plant.gateway_metric, "uplink_connects")
        row = outcome(await plant.reconcile("broker restart"))
        row.notes.append(f"gateway connected {connects:.0f} times")
        assert connects >= 2
    check(row)


async def test_gateway_sigkill(pg_dsn: str, plant_factory: Any, outcome: Record) -> None:
    """SIGKILL of the gateway with envelopes in its outbox; the next start sends them."""
    plant: Plant = await plant_factory(pg_dsn)
    await plant.grows()
    await asyncio.sleep(1)
    assert await asyncio.to_thread(plant.gateway.kill) == -9
    await asyncio.sleep(1)
    plant.gateway.start()
    await plant.gateway_up()
    await plant.grows()
    row = outcome(await plant.reconcile("gateway SIGKILL and restart"))
    check(row)


async def test_ingest_sigkill(pg_dsn: str, plant_factory: Any, outcome: Record) -> None:
    """SIGKILL of ingest mid-stream; the broker keeps its session, the restart catches up."""
    plant: Plant = await plant_factory(pg_dsn)
    await plant.grows()
    assert await asyncio.to_thread(plant.ingest.kill) == -9
    await asyncio.sleep(2)
    plant.ingest.start()
    await plant.ingest_subscribed()
    await plant.grows()
    row = outcome(await plant.reconcile("ingest SIGKILL and restart"))
    check(row)


async def test_postgresql_restart(pg_server: PostgresServer, plant_factory: Any,
                                  outcome: Record) -> None:  # fmt: skip
    """An immediate shutdown (a crash) of the store's own PostgreSQL, then a start."""
    with PostgresCluster() as cluster, cluster.database() as dsn:
        plant: Plant = await plant_factory(dsn)
        await plant.grows()
        await asyncio.to_thread(cluster.kill)
        await asyncio.sleep(2)
        await asyncio.to_thread(cluster.start)
        await plant.grows(within=60)
        row = outcome(await plant.reconcile("PostgreSQL crash and restart"))
    check(row)
