"""The store's schema: versioned migrations, daily partitions, TimescaleDB when present.

Two flavours share every table and column name, so the same queries run on both:

- ``plain``: ``sample`` is range-partitioned by day (partitions made ahead of time and on
  demand); ``sample_1m`` is a table the writer keeps exact in the same transaction as the
  samples it adds.
- ``timescaledb``: ``sample`` is a hypertable with compression segmented by series;
  ``sample_1m`` is a real-time continuous aggregate.

The flavour is chosen when migration 1 runs (the extension is available, or not) and recorded
in ``ingest_schema``; it never changes for a database.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

import psycopg

from ingest import _checkpoints
from ingest._errors import MigrationError

logger = logging.getLogger(__name__)

PLAIN = "plain"
TIMESCALE = "timescaledb"
#: serialises migrations of concurrent ingest processes on one database
_LOCK_KEY = 0x6775616E74 + 7

_COMMON = [
    """CREATE TABLE enterprise (
        id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        identifier text NOT NULL UNIQUE,
        first_seen timestamptz NOT NULL DEFAULT now())""",
    """CREATE TABLE gateway (
        id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        identifier text NOT NULL UNIQUE,
        enterprise_id integer NOT NULL REFERENCES enterprise,
        first_seen timestamptz NOT NULL DEFAULT now())""",
    """CREATE TABLE device (
        id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        identifier text NOT NULL UNIQUE,
        enterprise_id integer NOT NULL REFERENCES enterprise,
        gateway_id integer NOT NULL REFERENCES gateway,
        first_seen timestamptz NOT NULL DEFAULT now())""",
    """CREATE TABLE series (
        id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        device_id integer NOT NULL REFERENCES device,
        tag text NOT NULL,
        first_seen timestamptz NOT NULL DEFAULT now(),
        UNIQUE (device_id, tag))""",
    """CREATE TABLE receipt (
        gateway_id integer NOT NULL REFERENCES gateway,
        seq bigint NOT NULL,
        hash bytea NOT NULL,
        prev bytea NOT NULL,
        signature_valid boolean NOT NULL,
        kind smallint NOT NULL,
        device_id integer REFERENCES device,
        samples integer NOT NULL,
        created timestamptz NOT NULL,
        received timestamptz NOT NULL,
        committed timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (gateway_id, seq))""",
    """CREATE TABLE connectivity_event (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        gateway_id integer NOT NULL REFERENCES gateway,
        kind text NOT NULL CHECK (kind IN ('gap', 'loss', 'chain_break')),
        first_seq bigint NOT NULL,
        last_seq bigint NOT NULL,
        samples bigint,
        reason text NOT NULL,
        seq bigint NOT NULL,
        detected timestamptz NOT NULL DEFAULT now())""",
    "CREATE INDEX connectivity_event_gateway ON connectivity_event (gateway_id, detected)",
    """CREATE TABLE quarantine (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        received timestamptz NOT NULL,
        topic text NOT NULL,
        payload bytea NOT NULL,
        size integer NOT NULL,
        reason text NOT NULL,
        detail text NOT NULL,
        gateway text,
        seq bigint,
        stored timestamptz NOT NULL DEFAULT now())""",
    "CREATE INDEX quarantine_received ON quarantine (received)",
]

_SAMPLE_COLUMNS = """
        series_id integer NOT NULL,
        ts timestamptz NOT NULL,
        value double precision,
        text_value text,
        quality smallint NOT NULL,
        PRIMARY KEY (series_id, ts)"""

_PLAIN = [
    f"CREATE TABLE sample ({_SAMPLE_COLUMNS}) PARTITION BY RANGE (ts)",
    """CREATE TABLE sample_1m (
        series_id integer NOT NULL,
        bucket timestamptz NOT NULL,
        samples bigint NOT NULL,
        numeric_samples bigint NOT NULL,
        value_sum double precision,
        value_min double precision,
        value_max double precision,
        PRIMARY KEY (series_id, bucket))""",
]


def _timescale(compress_after: float) -> list[str]:
    after = f"{int(compress_after)} seconds"
    return [
        "CREATE EXTENSION IF NOT EXISTS timescaledb",
        f"CREATE TABLE sample ({_SAMPLE_COLUMNS})",
        "SELECT create_hypertable('sample', 'ts', chunk_time_interval => INTERVAL '1 day')",
        """ALTER TABLE sample SET (timescaledb.compress,
            timescaledb.compress_segmentby = 'series_id', timescaledb.compress_orderby = 'ts')""",
        f"SELECT add_compression_policy('sample', INTERVAL '{after}')",
        """CREATE MATERIALIZED VIEW sample_1m
            WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
            SELECT series_id, time_bucket(INTERVAL '1 minute', ts) AS bucket,
                   count(*) AS samples, count(value) AS numeric_samples,
                   sum(value) AS value_sum, min(value) AS value_min, max(value) AS value_max
            FROM sample GROUP BY series_id, time_bucket(INTERVAL '1 minute', ts)
            WITH NO DATA""",
        """SELECT add_continuous_aggregate_policy('sample_1m', start_offset => NULL,
            end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute')""",
    ]


#: version → statements; a migration never changes once released, a new one is appended
def _migrations(flavour: str, compress_after: float) -> dict[int, list[str]]:
    sample = _PLAIN if flavour == PLAIN else _timescale(compress_after)
    return {1: [*_COMMON, *sample], 2: _checkpoints.SCHEMA}


LATEST = 2


def timescale_available(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    return row is not None


def migrate(conn: psycopg.Connection, *, compress_after: float = 7 * 86400.0) -> list[int]:
    """Apply the migrations this database lacks; return their versions (``[]`` if none).

    Each migration runs in its own transaction with the version row, under an advisory lock,
    so two processes starting at once apply it once.
    """
    applied: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            """CREATE TABLE IF NOT EXISTS ingest_schema (
                version integer PRIMARY KEY,
                flavour text NOT NULL,
                applied timestamptz NOT NULL DEFAULT now())"""
        )
        rows = conn.execute("SELECT version, flavour FROM ingest_schema").fetchall()
        done = {version for version, _ in rows}
        if done and max(done) > LATEST:
            raise MigrationError(
                f"the database has schema version {max(done)}, this ingest knows up to {LATEST}"
            )
        flavour = rows[0][1] if rows else (TIMESCALE if timescale_available(conn) else PLAIN)
        for version, statements in sorted(_migrations(flavour, compress_after).items()):
            if version in done:
                continue
            for statement in statements:
                conn.execute(statement)  # type: ignore[arg-type]  # constant text
            conn.execute(
                "INSERT INTO ingest_schema (version, flavour) VALUES (%s, %s)", (version, flavour)
            )
            applied.append(version)
    if applied:
        logger.info("ingest schema (%s): applied migrations %s", flavour, applied)
    return applied


def flavour_of(conn: psycopg.Connection) -> str:
    row = None
    if conn.execute("SELECT to_regclass('ingest_schema')").fetchone() != (None,):
        row = conn.execute("SELECT flavour FROM ingest_schema ORDER BY version LIMIT 1").fetchone()
    if row is None:
        raise MigrationError("the database has no ingest schema: run 'guantong ingest migrate'")
    return str(row[0])


# --- daily partitions (plain flavour) -------------------------------------------------------

_EPOCH = dt.date(1970, 1, 1)
_DAY_US = 86_400_000_000


def day_of(ts_us: int) -> int:
    """Days since 1970-01-01 (UTC) of a µs timestamp: the partition it belongs to."""
    return ts_us // _DAY_US


def existing_partitions(conn: psycopg.Connection) -> set[int]:
    rows = conn.execute(
        """SELECT c.relname FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
           JOIN pg_class p ON p.oid = i.inhparent
           WHERE p.relname = 'sample' AND p.relnamespace = to_regnamespace(current_schema())"""
    ).fetchall()
    days = set()
    for (name,) in rows:
        if name.startswith("sample_p") and name[8:].isdigit():
            days.add((dt.date.fromisoformat(name[8:]) - _EPOCH).days)
    return days


def create_partitions(conn: psycopg.Connection, days: Iterable[int]) -> list[int]:
    """Create the daily partitions of ``days`` that do not exist yet (each committed alone).

    Under the migrations' advisory lock: two ingests (Kafka sinks) meeting the same new day at
    once would otherwise both create it, and one fail despite ``IF NOT EXISTS``.
    """
    made = []
    for day in sorted(set(days)):
        start = _EPOCH + dt.timedelta(days=day)
        end = start + dt.timedelta(days=1)
        name = f"sample_p{start:%Y%m%d}"
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF sample "
                f"FOR VALUES FROM ('{start:%Y-%m-%d} 00:00:00+00') "
                f"TO ('{end:%Y-%m-%d} 00:00:00+00')"
            )
        made.append(day)
    return made
