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
from faults._harness import Outcome, Plant, fetch

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


async def test_plc_hang_drop_and_slow_response(
    pg_dsn: str, plant_factory: Any, outcome: Record
) -> None:
    """The PLC answers late, then hangs, drops every connection, and one unit goes silent.

    The gateway marks what it could not read as Bad samples (no value), and every Good
    sample it stored is a value the simulator served: nothing false is stored.
    """
    plant: Plant = await plant_factory(pg_dsn)
    await plant.grows()
    await plant.fault("plc", "latency", seconds=0.2)  # slow, within the 0.5 s timeout
    await asyncio.sleep(2)
    await plant.fault("plc", "hang")
    await asyncio.sleep(2)
    await plant.clear_faults()
    await plant.fault("plc", "drop")
    await plant.fault("kiln-1", "silent")
    await asyncio.sleep(2)
    await plant.clear_faults()
    await plant.grows()
    await asyncio.sleep(2)  # back up: good samples again
    row = outcome(await plant.reconcile("PLC slow, hung, dropped, silent unit"))
    rows = await asyncio.to_thread(
        fetch, pg_dsn, "SELECT quality, count(*) FROM sample GROUP BY 1 ORDER BY 1"
    )
    by_quality = dict(rows)
    good, false = await asyncio.to_thread(plant.false_values)
    row.notes.append(f"{by_quality.get(2, 0)} Bad samples, {good} Good checked, {false} false")
    if false:
        row.reasons.append(f"{false} Good samples with a value the PLC never served")
    if not by_quality.get(2):
        row.reasons.append("no Bad sample: the faults were not recorded")
    check(row)
    assert good > 0


async def test_the_reconciliation_sees_a_missing_and_an_extra_row(
    pg_dsn: str, plant_factory: Any
) -> None:
    """Control: the counts that make a PASS do fail when the store is short or has extra."""
    plant: Plant = await plant_factory(pg_dsn)
    await plant.grows()
    row = await plant.reconcile("control")
    assert row.passed, row.verdict
    # a loss declared for an envelope that arrived all the same (sent before the outbox
    # dropped it): stored, so the declaration overstates the loss; no FAIL
    (samples,) = (await asyncio.to_thread(
        fetch, pg_dsn,
        "INSERT INTO connectivity_event (gateway_id, kind, first_seq, last_seq, samples, reason, "
        "seq) SELECT gateway_id, 'loss', seq, seq, samples, 'control', seq FROM receipt "
        "WHERE device_id IS NOT NULL ORDER BY seq LIMIT 1 RETURNING samples",
    ))[0]  # fmt: skip
    over = await plant.recount("control: a stored envelope declared lost")
    assert over.passed, over.verdict
    assert (over.stored, over.lost) == (row.stored, 0)
    assert any(f"overstates the loss by {samples} samples" in n for n in over.notes)
    await asyncio.to_thread(
        fetch, pg_dsn, "DELETE FROM connectivity_event WHERE reason = 'control' RETURNING 1"
    )
    await asyncio.to_thread(
        fetch, pg_dsn,
        "DELETE FROM sample WHERE (series_id, ts) IN (SELECT series_id, ts FROM sample LIMIT 1) "
        "RETURNING 1",
    )  # fmt: skip
    short = await plant.recount("control: one row deleted")
    assert not short.passed
    assert short.stored == row.stored - 1
    assert "expected − stored − declared = 1" in short.verdict
    # the same sample once more, a millisecond later: a row the gateway never attested
    await asyncio.to_thread(
        fetch, pg_dsn,
        "INSERT INTO sample SELECT series_id, ts + interval '1 millisecond', value, text_value, "
        "quality FROM sample ORDER BY ts DESC LIMIT 2 RETURNING 1",
    )  # fmt: skip
    extra = await plant.recount("control: a row added")
    assert extra.duplicates >= 1, extra.verdict
    assert not extra.passed
    # a Good value altered in the store is a value the PLC never served
    good, false = await asyncio.to_thread(plant.false_values)
    assert good > 0
    assert false == 0
    await asyncio.to_thread(
        fetch, pg_dsn,
        "UPDATE sample SET value = value + 12345.678 WHERE (series_id, ts) IN "
        "(SELECT series_id, ts FROM sample WHERE quality = 0 AND value IS NOT NULL LIMIT 1) "
        "RETURNING 1",
    )  # fmt: skip
    assert (await asyncio.to_thread(plant.false_values))[1] == 1
