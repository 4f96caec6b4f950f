"""The report on the store's TimescaleDB flavour: a hypertable with compressed chunks and a
continuous aggregate (``sample_1m``) instead of partitions and a rollup table.

A month-old plant is delivered through the real path (signed envelopes and minute checkpoints
→ Mosquitto → ingest → plain PostgreSQL), its rows are copied into TimescaleDB 2.23 in PGlite
(which ingest cannot write to itself: PGlite has one session for all connections), and the
report read from TimescaleDB must be the one read from PostgreSQL: before the aggregate is
materialised, and after ``CALL run_job`` has refreshed it and compressed the chunk.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _services import PostgresServer, pglite_installed, pglite_timescale
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import evidence
import gateway.protocol as p
import identifiers
from ingest import migrate

FIRM = "88.709.914"
KILN, METER = f"{FIRM}/dev.kiln", f"{FIRM}/dev.meter"
TAGS = {KILN: ("power", "temp"), METER: ("kwh",)}
MINUTES, SLOT = 3, 5
#: the tables ingest writes, parents first (``sample_1m`` is TimescaleDB's own aggregate)
TABLES = ("enterprise", "gateway", "device", "series", "receipt", "connectivity_event",
          "quarantine", "checkpoint", "checkpoint_count", "sample")  # fmt: skip
PARAMS = evidence.Params(fresh_within=60, outage_after=30)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not pglite_installed(),
        reason="TimescaleDB in PGlite is not installed: npm install --prefix tests/ingest/pglite",
    ),
]


def us(t: dt.datetime) -> int:
    return int(t.timestamp() * 1_000_000)


def plant(chain: Any, start: dt.datetime) -> list[tuple[str, bytes]]:
    """1 Hz samples of both devices in 5 s envelopes, a checkpoint closing each minute; the
    kiln's envelope of 70..74 s is dropped from the outbox and declared lost."""
    sent, previous = [], None
    for minute in range(MINUTES):
        for slot in range(minute * 60 // SLOT, (minute + 1) * 60 // SLOT):
            created = us(start) + ((slot + 1) * SLOT) * 1_000_000 - 1
            for device, tags in TAGS.items():
                times = range(slot * SLOT, (slot + 1) * SLOT)
                samples = [p.Sample(tag, us(start) + t * 1_000_000, float(t))
                           for t in times for tag in tags]  # fmt: skip
                message = chain.data(created, device, samples)
                if (device, slot) == (KILN, 14):
                    dropped = chain.seq
                else:
                    sent.append(message)
            if slot == 15:
                sent.append(chain.loss(created + 1, dropped, dropped, 10))
        period = (us(start) + minute * 60_000_000, us(start) + (minute + 1) * 60_000_000)
        counts = tuple(p.Count(d, tag, 60) for d, tags in TAGS.items() for tag in tags)
        cp = p.Checkpoint(*period, *(previous or (0, p.GENESIS)), previous is None,
                          (p.Period(*period, counts),))  # fmt: skip
        sent.append(chain._next(period[1] + 500_000, checkpoint=cp))
        previous = (chain.seq, chain.prev)
    return sent


def copy_store(source: str, target: str) -> None:
    with psycopg.connect(source) as src, psycopg.connect(target) as dst:
        for table in TABLES:
            with (
                src.cursor().copy(f"COPY (SELECT * FROM {table}) TO STDOUT (FORMAT binary)") as out,  # noqa: S608
                dst.cursor().copy(f"COPY {table} FROM STDIN (FORMAT binary)") as into,
            ):
                for block in out:
                    into.write(block)


def content(report: evidence.Report) -> dict[str, Any]:
    return {k: v for k, v in report.report.items() if k != "generated"}


async def test_the_report_reads_the_same_from_timescaledb_compressed_or_not(
    pg_server: PostgresServer, kit: Any, tmp_path: Path
) -> None:
    # a month ago: older than the compression policy's 7 days
    start = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(days=30)
    window = evidence.Window(start, start + dt.timedelta(minutes=MINUTES))
    edges = evidence.Window(start + dt.timedelta(seconds=30), start + dt.timedelta(seconds=150))
    chain = kit.Chain(f"{FIRM}/gw.1")
    records = {
        device: identifiers.DeviceRecord(
            enterprise=f"{FIRM}/firm", gateway=chain.gateway, key_equipment=True,
            stages=(stage,), name=device.split("/")[1],
        )
        for device, stage in ((KILN, "设备管理"), (METER, "能耗管理"))
    }  # fmt: skip
    key = Ed25519PrivateKey.generate()

    def read(dsn: str) -> tuple[evidence.Report, evidence.FirmEvidence]:
        with psycopg.connect(dsn) as conn:
            report = evidence.build_report(conn, f"{FIRM}/firm", window, registered, key,
                                           params=PARAMS)  # fmt: skip
            facts = evidence.collect(conn, f"{FIRM}/firm", edges, registered, params=PARAMS)
        return report, facts

    with pg_server.database() as plain, pglite_timescale() as timescale:
        registered = await kit.deliver(plain, tmp_path, chain, records, plant(chain, start))
        expected, expected_edges = read(plain)
        assert migrate(timescale) == [1, 2]
        copy_store(plain, timescale)
        with psycopg.connect(timescale) as conn:
            flavour = conn.execute("SELECT DISTINCT flavour FROM ingest_schema").fetchall()
            assert flavour == [("timescaledb",)]
        # the continuous aggregate is not materialised yet: its real-time part answers
        fresh, fresh_edges = read(timescale)
        with psycopg.connect(timescale, autocommit=True) as conn:
            jobs = conn.execute(
                "SELECT proc_name, job_id FROM timescaledb_information.jobs "
                "WHERE proc_name IN ('policy_compression', 'policy_refresh_continuous_aggregate')"
            ).fetchall()
            for _, job in sorted(jobs, reverse=True):  # refresh, then compress
                conn.execute(f"CALL run_job({int(job)})")
            compressed = conn.execute(
                "SELECT count(*) FILTER (WHERE is_compressed), count(*) "
                "FROM timescaledb_information.chunks WHERE hypertable_name = 'sample'"
            ).fetchone()
            schema, table = conn.execute(
                "SELECT materialization_hypertable_schema, materialization_hypertable_name "
                "FROM timescaledb_information.continuous_aggregates WHERE view_name = 'sample_1m'"
            ).fetchone()  # type: ignore[misc]
            materialised = conn.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()  # noqa: S608
        assert compressed == (1, 1), compressed
        assert materialised == (MINUTES * 3,)  # a bucket per minute and series
        stored, stored_edges = read(timescale)

    facts = expected.report["facts"]
    kiln = next(d for d in facts["devices"] if d["identifier"] == KILN)
    assert kiln["samples"] == 2 * (MINUTES * 60 - SLOT)  # less the dropped envelope
    assert facts["integrity"]["declared_lost_samples"] == 10
    for report, edge_facts in ((fresh, fresh_edges), (stored, stored_edges)):
        assert content(report) == content(expected)
        assert edge_facts == expected_edges
        result = evidence.verify_report(report, {chain.gateway: p.public_key_bytes(chain.key)})
        assert result.ok, result.table()
        window_count = [f.detail for f in result.findings if f.check == "window count"]
        assert window_count == ["3 series match the attested counts exactly"], result.table()
