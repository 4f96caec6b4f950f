"""The store against a real PostgreSQL: migrations, partitions, COPY, conflicts, the rollup."""

from __future__ import annotations

import psycopg
import pytest
from _services import fetch

from ingest import Batch, MigrationError, Store, migrate
from ingest._schema import existing_partitions

#: 2025-11-24 16:00:00 UTC in µs since 2000-01-01, the zero of binary timestamps
T0 = 1_764_000_000_000_000 - 946_684_800_000_000
DAY = 86_400_000_000
MINUTE = 60_000_000

ROLLUP_FROM_SAMPLES = """
    SELECT series_id, date_trunc('minute', ts) AS bucket, count(*), count(value),
           sum(value), min(value), max(value)
    FROM sample GROUP BY 1, 2 ORDER BY 1, 2"""
ROLLUP = """
    SELECT series_id, bucket, samples, numeric_samples, value_sum, value_min, value_max
    FROM sample_1m ORDER BY 1, 2"""


@pytest.fixture
def store(pg_dsn: str):
    assert migrate(pg_dsn) == [1, 2]
    s = Store(pg_dsn, partitions_ahead=3)
    s.connect()
    yield s
    s.close()


def series(store: Store, tags: list[str]) -> dict[str, int]:
    firm = store.enterprise_id("88.709.911/firm")
    gw = store.gateway_id("88.709.911/gw.a", firm)
    dev = store.device_id("88.709.911/dev.a", firm, gw)
    return store.series_ids(dev, tags)


def rows_batch(rows: list[tuple]) -> Batch:
    """A batch of (series_id, ts µs since 2000, value, text, quality) rows."""
    batch = Batch()
    for sid, ts, value, text, quality in rows:
        batch.add_sample(sid, ts + 946_684_800_000_000, value, text, quality)
    return batch


def test_migrations_apply_once_and_a_newer_schema_is_refused(pg_dsn: str) -> None:
    assert migrate(pg_dsn) == [1, 2]
    assert migrate(pg_dsn) == []
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT flavour FROM ingest_schema").fetchone() == ("plain",)
        conn.execute("INSERT INTO ingest_schema (version, flavour) VALUES (99, 'plain')")
    with pytest.raises(MigrationError, match="schema version 99"):
        migrate(pg_dsn)


def test_store_without_schema_is_refused(pg_dsn: str) -> None:
    with pytest.raises(MigrationError, match="guantong ingest migrate"):
        Store(pg_dsn).connect()


def test_daily_partitions_exist_ahead_and_on_demand(store: Store, pg_dsn: str) -> None:
    ahead = existing_partitions(store.lookup)
    assert len(ahead) == 5  # yesterday, today and 3 days ahead
    sid = series(store, ["t"])["t"]
    old = T0 - 400 * DAY  # a gateway's backlog from over a year ago
    store.write(rows_batch([(sid, old, 1.0, None, 0), (sid, T0, 2.0, None, 0)]))
    assert len(existing_partitions(store.lookup)) >= len(ahead) + 1
    assert fetch(pg_dsn, "SELECT count(*) FROM sample")[0][0] == 2
    names = fetch(pg_dsn, "SELECT tableoid::regclass::text FROM sample ORDER BY ts")
    assert names[0][0] == "sample_p20241020"


def test_dimension_ids_are_stable_and_upserted(store: Store) -> None:
    firm = store.enterprise_id("88.709.911/firm")
    assert store.enterprise_id("88.709.911/firm") == firm
    gw = store.gateway_id("88.709.911/gw.a", firm)
    assert store.gateway_id("88.709.911/gw.a", firm) == gw
    dev = store.device_id("88.709.911/dev.a", firm, gw)
    gw2 = store.gateway_id("88.709.911/gw.b", firm)
    assert store.device_id("88.709.911/dev.a", firm, gw2) == dev  # moved to another gateway
    first = store.series_ids(dev, ["a", "b"])
    again = store.series_ids(dev, ["b", "c"])
    assert again["b"] == first["b"]
    assert len({*first.values(), *again.values()}) == 3


def test_copy_then_conflicts_go_through_on_conflict_and_the_rollup_stays_exact(
    store: Store, pg_dsn: str
) -> None:
    ids = series(store, ["temp", "state", "flag"])
    t, s, f = ids["temp"], ids["state"], ids["flag"]
    first = [(t, T0 + i * 10_000_000, float(i), None, 0) for i in range(12)]  # two minutes
    first += [(s, T0, None, "RUN", 0), (f, T0 + 1, None, None, 2)]
    result = store.write(rows_batch(first))
    assert (result.rows_inserted, result.conflicts) == (14, False)
    assert fetch(pg_dsn, ROLLUP) == fetch(pg_dsn, ROLLUP_FROM_SAMPLES)

    # half of it again, plus new rows, and one key twice within the batch
    second = first[6:] + [(t, T0 + 3 * MINUTE, 100.0, None, 1)] * 2 + [(t, T0 + 5, -1.5, None, 0)]
    result = store.write(rows_batch(second))
    assert (result.rows_inserted, result.conflicts) == (2, True)
    assert fetch(pg_dsn, "SELECT count(*) FROM sample")[0][0] == 16
    assert fetch(pg_dsn, ROLLUP) == fetch(pg_dsn, ROLLUP_FROM_SAMPLES)
    text = fetch(pg_dsn, "SELECT value, text_value, quality FROM sample WHERE series_id = %s", s)
    assert text == [(None, "RUN", 0)]


def test_the_rollup_merges_batch_after_batch_and_after_a_new_writer_session(
    store: Store, pg_dsn: str
) -> None:
    ids = series(store, ["temp", "state"])
    t, s = ids["temp"], ids["state"]
    # the staging table is made once per session: batches without a rollup merge (receipts
    # only) in between, and the writer's connection replaced, must not lose it
    batches = [
        [(t, T0 + i, float(i), None, 0) for i in range(5)] + [(s, T0, None, "RUN", 0)],
        [],
        [(t, T0 + 10 + i, -float(i), None, 0) for i in range(5)] + [(s, T0 + 1, 2.5, None, 0)],
        [(s, T0 + 2, None, None, 1), (t, T0 + MINUTE, 7.0, None, 0)],
    ]
    for n, rows in enumerate(batches):
        if n == 3:
            assert store._writer is not None
            store._writer.close()  # as after a server restart: the next write reconnects
        batch = rows_batch(rows)
        if not rows:
            firm = store.enterprise_id("88.709.911/firm")
            gw = store.gateway_id("88.709.911/gw.a", firm)
            batch.receipts.append((gw, 1, b"h" * 32, bytes(32), True, 2, None, 0, T0, T0))
        store.write(batch)
        assert fetch(pg_dsn, ROLLUP) == fetch(pg_dsn, ROLLUP_FROM_SAMPLES)
    assert fetch(pg_dsn, "SELECT numeric_samples, value_sum FROM sample_1m WHERE series_id = %s",
                 s) == [(1, 2.5)]  # fmt: skip


def test_receipts_events_and_quarantine_commit_with_the_batch(store: Store, pg_dsn: str) -> None:
    firm = store.enterprise_id("88.709.911/firm")
    gw = store.gateway_id("88.709.911/gw.a", firm)
    batch = Batch()
    batch.receipts.append((gw, 1, b"h" * 32, bytes(32), True, 2, None, 0, T0, T0 + 5))
    batch.events.append((gw, "loss", 1, 1, 10, "outbox full", 1))
    batch.quarantine.append(
        (T0, "gt/v1/x", b"\xff", 1, "malformed", "payload: not UTF-8", None, None)
    )
    assert not store.committed(batch)
    store.write(batch)
    assert store.committed(batch)
    assert store.head(gw) == (1, b"h" * 32, bytes(32))
    assert fetch(pg_dsn, "SELECT kind, first_seq, samples, reason FROM connectivity_event") == [
        ("loss", 1, 10, "outbox full")
    ]
    rows = fetch(
        pg_dsn, "SELECT topic, payload, reason, received = '2025-11-24 16:00Z' FROM quarantine"
    )
    assert rows == [("gt/v1/x", b"\xff", "malformed", True)]
