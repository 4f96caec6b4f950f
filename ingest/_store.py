"""The PostgreSQL side: dimension ids, chain heads, and one transaction per batch.

Blocking psycopg on purpose: the pipeline runs :meth:`Store.write` in a worker thread, so the
event loop keeps verifying the next batch while this one is copied and committed. Two
connections: ``writer`` for batches, ``lookup`` (autocommit) for dimension upserts and chain
lookups, which the verifier needs while a batch is being written.

Samples go in by binary COPY. Timestamps travel as ``int8`` microseconds since 2000-01-01:
that is exactly the binary form of ``timestamptz``, and saves building a ``datetime`` per row.
If the COPY meets a row already stored (a unique violation), the batch is rolled back to a
savepoint and goes through a temporary table and ``INSERT … ON CONFLICT DO NOTHING``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import errors

from ingest import _checkpoints, _schema
from ingest._rows import COPY_HEADER, COPY_TRAILER, Packed, Rollup, pack_rollup, pack_samples

logger = logging.getLogger(__name__)

_RECEIPT_TYPES = ["int4", "int8", "bytea", "bytea", "bool", "int2", "int4", "int4", "int8", "int8"]

_ROLLUP_MERGE = """
    ON CONFLICT (series_id, bucket) DO UPDATE SET
        samples = sample_1m.samples + EXCLUDED.samples,
        numeric_samples = sample_1m.numeric_samples + EXCLUDED.numeric_samples,
        value_sum = CASE WHEN sample_1m.value_sum IS NULL THEN EXCLUDED.value_sum
                         WHEN EXCLUDED.value_sum IS NULL THEN sample_1m.value_sum
                         ELSE sample_1m.value_sum + EXCLUDED.value_sum END,
        value_min = LEAST(sample_1m.value_min, EXCLUDED.value_min),
        value_max = GREATEST(sample_1m.value_max, EXCLUDED.value_max)"""


class Batch:
    """What one transaction writes; built by the verifier, written by :meth:`Store.write`.

    Samples are added with :meth:`add_samples` (timestamps in µs since the Unix epoch), which
    encodes the COPY rows at once and folds the values into the 1-minute rollup, or with
    :meth:`add_packed` when a decode worker did that already.
    ``receipts``: (gateway_id, seq, hash, prev, signature_valid, kind, device_id, samples,
    created, received), times as µs since 2000.
    ``events``: (gateway_id, kind, first_seq, last_seq, samples, reason, seq).
    ``quarantine``: (received µs since 2000, topic, payload, size, reason, detail, gateway, seq).
    ``checkpoints``: ``ingest._checkpoints.rows`` of each checkpoint envelope.
    """

    def __init__(self) -> None:
        self.data = bytearray()
        self.samples = 0
        self.newest = 0
        self.days: set[int] = set()
        self.rollup: Rollup = {}
        self.receipts: list[tuple[object, ...]] = []
        self.events: list[tuple[object, ...]] = []
        self.quarantine: list[tuple[object, ...]] = []
        self.checkpoints: list[_checkpoints.Rows] = []

    def add_sample(
        self, sid: int, ts: int, value: float | None, text: str | None, quality: int
    ) -> None:
        self.add_samples([("", ts, text if value is None else value, quality)], {"": sid})

    def add_samples(
        self, samples: Iterable[tuple[str, int, object, int]], series: dict[str, int]
    ) -> None:
        """Add (tag, ts µs since the Unix epoch, value, quality) samples of one device."""
        count, newest = pack_samples(samples, series, self.data, self.rollup, self.days)
        self.samples += count
        self.newest = max(self.newest, newest)

    def add_packed(self, packed: Packed) -> None:
        """Add what :func:`pack_samples` made elsewhere: bytes appended, buckets merged."""
        self.data += packed.rows
        self.samples += packed.count
        self.newest = max(self.newest, packed.newest)
        self.days.update(packed.days)
        rollup = self.rollup
        for key, part in packed.rollup.items():
            acc = rollup.get(key)
            if acc is None:
                rollup[key] = list(part)  # not shared with the envelope
                continue
            acc[0] += part[0]
            if not part[1]:
                continue
            if acc[1]:
                acc[2] += part[2]
                acc[3] = min(acc[3], part[3])
                acc[4] = max(acc[4], part[4])
            else:
                acc[2:] = part[2:]
            acc[1] += part[1]

    def copy_data(self) -> bytes:
        return COPY_HEADER + bytes(self.data) + COPY_TRAILER

    def __len__(self) -> int:
        return self.samples + len(self.receipts) + len(self.quarantine)


@dataclass
class WriteResult:
    rows_inserted: int
    conflicts: bool
    seconds: float


class Store:
    """Owns the two connections; every method blocks (call it through ``asyncio.to_thread``)."""

    def __init__(self, dsn: str, *, partitions_ahead: int = 7) -> None:
        self.dsn = dsn
        self.partitions_ahead = partitions_ahead
        self.flavour = _schema.PLAIN
        self._writer: psycopg.Connection | None = None
        self._lookup: psycopg.Connection | None = None
        self._partitions: set[int] = set()
        #: the writer connection whose session has the rollup's staging table, committed
        self._staged: psycopg.Connection | None = None

    # --- connections ---------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect both; raise ``psycopg.OperationalError`` if the server is away."""
        self.close()
        try:
            self.flavour = _schema.flavour_of(self.lookup)
            _ = self.writer
            if self.flavour == _schema.PLAIN:
                self._partitions = _schema.existing_partitions(self.lookup)
                self.ensure_ahead()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for conn in (self._writer, self._lookup):
            if conn is not None:
                conn.close()
        self._writer = self._lookup = None

    # A connection that broke (the server restarted) is replaced on next use; the caller saw
    # the OperationalError of the failed operation and retries.
    @property
    def lookup(self) -> psycopg.Connection:
        if self._lookup is None or self._lookup.broken or self._lookup.closed:
            if self._lookup is not None:
                self._lookup.close()
            self._lookup = psycopg.connect(self.dsn, autocommit=True)
        return self._lookup

    @property
    def writer(self) -> psycopg.Connection:
        if self._writer is None or self._writer.broken or self._writer.closed:
            if self._writer is not None:
                self._writer.close()
            self._writer = psycopg.connect(self.dsn)
        return self._writer

    # --- partitions -----------------------------------------------------------------------------

    def ensure_ahead(self) -> None:
        today = _schema.day_of(int(time.time() * 1_000_000))
        self.ensure_days(range(today - 1, today + self.partitions_ahead + 1))

    def ensure_days(self, days: Iterable[int]) -> None:
        if self.flavour != _schema.PLAIN:
            return
        missing = set(days) - self._partitions
        if missing:
            self._partitions.update(_schema.create_partitions(self.lookup, missing))

    # --- dimensions and chain (lookup connection) ---------------------------------------------

    def _upsert_id(self, table: str, columns: Sequence[str], values: Sequence[object]) -> int:
        cols = ", ".join(columns)
        marks = ", ".join(["%s"] * len(values))
        updates = (
            ", ".join(f"{c} = EXCLUDED.{c}" for c in columns[1:])
            or "identifier = EXCLUDED.identifier"
        )
        changed = " OR ".join(f"{table}.{c} IS DISTINCT FROM EXCLUDED.{c}" for c in columns[1:])
        on_conflict = f"UPDATE SET {updates} WHERE {changed}" if changed else "NOTHING"
        query = (
            f"WITH ins AS (INSERT INTO {table} ({cols}) VALUES ({marks}) "  # noqa: S608 - constants
            f"ON CONFLICT (identifier) DO {on_conflict} RETURNING id) "
            f"SELECT id FROM ins UNION ALL SELECT id FROM {table} WHERE identifier = %s LIMIT 1"
        )
        row = self.lookup.execute(query, (*values, values[0])).fetchone()  # type: ignore[arg-type]
        if row is None:
            raise psycopg.OperationalError(f"{table} {values[0]!r}: upsert returned nothing")
        return int(row[0])

    def enterprise_id(self, identifier: str) -> int:
        return self._upsert_id("enterprise", ["identifier"], [identifier])

    def gateway_id(self, identifier: str, enterprise_id: int) -> int:
        return self._upsert_id(
            "gateway", ["identifier", "enterprise_id"], [identifier, enterprise_id]
        )

    def device_id(self, identifier: str, enterprise_id: int, gateway_id: int) -> int:
        return self._upsert_id(
            "device",
            ["identifier", "enterprise_id", "gateway_id"],
            [identifier, enterprise_id, gateway_id],
        )

    def series_ids(self, device_id: int, tags: Sequence[str]) -> dict[str, int]:
        conn = self.lookup
        conn.execute(
            "INSERT INTO series (device_id, tag) SELECT %s, unnest(%s::text[]) "
            "ON CONFLICT (device_id, tag) DO NOTHING",
            (device_id, list(tags)),
        )
        rows = conn.execute(
            "SELECT tag, id FROM series WHERE device_id = %s AND tag = ANY(%s)",
            (device_id, list(tags)),
        ).fetchall()
        return dict(rows)

    def head(self, gateway_id: int) -> tuple[int, bytes, bytes] | None:
        """(seq, hash, prev) of the highest receipt of a gateway, or None."""
        row = self.lookup.execute(
            "SELECT seq, hash, prev FROM receipt WHERE gateway_id = %s ORDER BY seq DESC LIMIT 1",
            (gateway_id,),
        ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]), bytes(row[2]))

    def receipts(self, gateway_id: int, seqs: Sequence[int]) -> dict[int, tuple[bytes, bytes]]:
        """seq → (hash, prev) of the stored receipts among ``seqs``."""
        rows = self.lookup.execute(
            "SELECT seq, hash, prev FROM receipt WHERE gateway_id = %s AND seq = ANY(%s)",
            (gateway_id, list(seqs)),
        ).fetchall()
        return {int(s): (bytes(h), bytes(p)) for s, h, p in rows}

    # --- the batch transaction (writer connection) --------------------------------------------

    def committed(self, batch: Batch) -> bool:
        """Whether ``batch`` is already stored: after a commit whose answer was lost."""
        if not batch.receipts:
            return False
        gateway_id, seq, digest = batch.receipts[0][:3]
        row = self.lookup.execute(
            "SELECT hash FROM receipt WHERE gateway_id = %s AND seq = %s", (gateway_id, seq)
        ).fetchone()
        return row is not None and bytes(row[0]) == digest

    def write(self, batch: Batch) -> WriteResult:
        started = time.perf_counter()
        self.ensure_days(batch.days)
        conn = self.writer
        conflicts = merged = False
        inserted = batch.samples
        with conn.transaction():
            if batch.samples:
                data = batch.copy_data()
                try:
                    with conn.transaction():
                        self._copy_samples(conn, data)
                except errors.UniqueViolation:
                    conflicts = True
                    inserted = self._merge_samples(conn, data)
                else:
                    if self.flavour == _schema.PLAIN:
                        self._merge_rollup(conn, pack_rollup(batch.rollup))
                        merged = True
            with conn.cursor() as cur:
                if batch.receipts:
                    with cur.copy(
                        "COPY receipt (gateway_id, seq, hash, prev, signature_valid, kind, "
                        "device_id, samples, created, received) FROM STDIN (FORMAT BINARY)"
                    ) as copy:
                        copy.set_types(_RECEIPT_TYPES)
                        for receipt in batch.receipts:
                            copy.write_row(receipt)
                if batch.checkpoints:
                    _checkpoints.write(cur, batch.checkpoints)
                if batch.events:
                    cur.executemany(
                        "INSERT INTO connectivity_event "
                        "(gateway_id, kind, first_seq, last_seq, samples, reason, seq) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        batch.events,
                    )
                if batch.quarantine:
                    cur.executemany(
                        "INSERT INTO quarantine "
                        "(received, topic, payload, size, reason, detail, gateway, seq) "
                        "VALUES (timestamptz '2000-01-01Z' + %s * interval '1 microsecond', "
                        "%s, %s, %s, %s, %s, %s, %s)",
                        batch.quarantine,
                    )
        if merged:  # committed: the staging table lasts as long as the session now
            self._staged = conn
        return WriteResult(inserted, conflicts, time.perf_counter() - started)

    @staticmethod
    def _copy_samples(conn: psycopg.Connection, data: bytes) -> None:
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY sample (series_id, ts, value, text_value, quality) FROM STDIN (FORMAT BINARY)"
            ) as copy,
        ):
            copy.write(data)

    def _merge_samples(self, conn: psycopg.Connection, data: bytes) -> int:
        with conn.cursor() as cur:
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS sample_stage "
                "(LIKE sample INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            cur.execute("TRUNCATE sample_stage")
            with cur.copy(
                "COPY sample_stage (series_id, ts, value, text_value, quality) "
                "FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.write(data)
            # one row per key even if the batch itself repeats a key: the first one wins
            insert = (
                "INSERT INTO sample SELECT DISTINCT ON (series_id, ts) * FROM sample_stage "
                "ORDER BY series_id, ts ON CONFLICT DO NOTHING"
            )
            if self.flavour != _schema.PLAIN:
                cur.execute(insert)
                return cur.rowcount
            cur.execute(
                f"WITH ins AS ({insert} RETURNING series_id, ts, value), "  # noqa: S608
                "agg AS (INSERT INTO sample_1m SELECT series_id, date_trunc('minute', ts), "
                "count(*), count(value), sum(value), min(value), max(value) FROM ins "
                f"GROUP BY 1, 2 {_ROLLUP_MERGE} RETURNING 1) "
                "SELECT (SELECT count(*) FROM ins)"
            )
            row = cur.fetchone()
            return int(row[0]) if row else 0

    def _merge_rollup(self, conn: psycopg.Connection, data: bytes) -> None:
        with conn.cursor() as cur:
            if self._staged is not conn:  # a new session (a round trip saved on every other)
                cur.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS rollup_stage "
                    "(LIKE sample_1m) ON COMMIT DELETE ROWS"
                )
            with cur.copy("COPY rollup_stage FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(data)
            cur.execute(f"INSERT INTO sample_1m SELECT * FROM rollup_stage {_ROLLUP_MERGE}")  # noqa: S608
