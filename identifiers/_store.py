"""The registry: handle records and write tokens in PostgreSQL, schema ``identifiers``.

A record is one row with its values as a JSONB array: a handle is read and written whole, so a
batch is one transaction over whole rows, and concurrent creation of one handle is decided by
the primary key (one ``INSERT`` wins, the other sees the conflict and answers 101).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import psycopg
from psycopg_pool import AsyncConnectionPool

from identifiers._errors import (
    HandleExists,
    HandleNotFound,
    InvalidValue,
    ValueExists,
    ValuesNotFound,
)
from identifiers._records import HandleValue

logger = logging.getLogger(__name__)

SCHEMA = "identifiers"

#: versioned migrations; append only, never edit one that has shipped
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE identifiers.handles (
            handle  text PRIMARY KEY,
            prefix  text NOT NULL,
            vals    jsonb NOT NULL,
            created timestamptz NOT NULL DEFAULT now(),
            updated timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX handles_prefix ON identifiers.handles (prefix, handle);
        CREATE TABLE identifiers.tokens (
            id         text PRIMARY KEY,
            sha256     bytea NOT NULL,
            prefix     text NOT NULL,
            label      text NOT NULL DEFAULT '',
            created    timestamptz NOT NULL DEFAULT now(),
            expires    timestamptz NOT NULL,
            revoked    timestamptz
        );
        """,
    ),
)

Status = Literal["created", "updated", "unchanged"]
_TOKEN_TAG = "gti"  # noqa: S105 - the public tag of a token, not a secret
#: retries of a batch that lost a race or a deadlock to a concurrent writer
_RETRIES = 3


@dataclass(frozen=True)
class Token:
    id: str
    prefix: str
    label: str
    created: datetime
    expires: datetime
    revoked: datetime | None

    @property
    def valid(self) -> bool:
        return self.revoked is None and self.expires > datetime.now(UTC)


class _LostRace(Exception):
    """An INSERT found a row a concurrent transaction committed after our SELECT."""

    def __init__(self, handle: str) -> None:
        self.handle = handle


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stamp(new: Sequence[HandleValue], old: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """JSON of ``new`` with timestamps: kept for values that did not change, now for the rest."""
    before = {v["index"]: v for v in old or ()}
    now = _now()
    out = []
    for value in sorted(new, key=lambda v: v.index):
        doc = value.content()
        prev = before.get(value.index)
        if prev is not None and {k: v for k, v in prev.items() if k != "timestamp"} == doc:
            doc["timestamp"] = prev.get("timestamp", now)
        else:
            doc["timestamp"] = now
        out.append(doc)
    return out


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    return a == b


class Registry:
    """Async context manager owning a connection pool; ``migrate`` brings the schema up to date."""

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 8) -> None:
        self._dsn = dsn
        self._pool = AsyncConnectionPool(
            dsn, min_size=min_size, max_size=max_size, open=False, name="identifiers"
        )

    async def __aenter__(self) -> Registry:
        # one plain connection first: a wrong DSN fails at once with libpq's reason, where the
        # pool would retry in the background and time out with a message that hides it
        conn = await psycopg.AsyncConnection.connect(self._dsn)
        await conn.close()
        await self._pool.open(wait=True, timeout=15)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._pool.close()

    # --- schema ------------------------------------------------------------------------------

    async def migrate(self) -> list[int]:
        """Apply missing migrations under an advisory lock; return the versions applied."""
        applied: list[int] = []
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('identifiers.migrate'))")
            await conn.execute("CREATE SCHEMA IF NOT EXISTS identifiers")
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS identifiers.schema_version ("
                " version int PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT version FROM identifiers.schema_version")
            done = {row[0] for row in await cur.fetchall()}
            for version, sql in MIGRATIONS:
                if version in done:
                    continue
                await conn.execute(sql)  # type: ignore[arg-type]  # constant text
                await conn.execute(
                    "INSERT INTO identifiers.schema_version (version) VALUES (%s)", [version]
                )
                applied.append(version)
        if applied:
            logger.info("identifier registry migrated to version %d", applied[-1])
        return applied

    # --- records -----------------------------------------------------------------------------

    async def get(self, handle: str) -> list[dict[str, Any]]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT vals FROM identifiers.handles WHERE handle = %s", [handle]
            )
            row = await cur.fetchone()
        if row is None:
            raise HandleNotFound(handle, "handle not found")
        return row[0]  # type: ignore[no-any-return]

    async def write(
        self,
        records: Sequence[tuple[str, str, Sequence[HandleValue]]],
        *,
        overwrite: bool,
    ) -> list[Status]:
        """Create or replace whole records ``(handle, prefix, values)`` in one transaction.

        Without ``overwrite`` an existing handle fails the whole batch with 101. A record whose
        values equal what is stored is left alone (``unchanged``), timestamps included.
        """
        for attempt in range(_RETRIES):
            try:
                return await self._write_once(records, overwrite=overwrite)
            except _LostRace as race:
                if not overwrite:
                    raise HandleExists(race.handle, "handle already exists") from None
                logger.debug("batch lost a race on %s, retrying (%d)", race.handle, attempt)
            except psycopg.errors.DeadlockDetected:
                logger.debug("batch deadlocked with a concurrent batch, retrying (%d)", attempt)
        raise psycopg.OperationalError("batch kept conflicting with concurrent writers")

    async def _write_once(
        self, records: Sequence[tuple[str, str, Sequence[HandleValue]]], *, overwrite: bool
    ) -> list[Status]:
        order = sorted(range(len(records)), key=lambda i: records[i][0])
        handles = [records[i][0] for i in order]
        statuses: dict[str, Status] = {}
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT handle, vals FROM identifiers.handles WHERE handle = ANY(%s)"
                " ORDER BY handle FOR UPDATE",
                [handles],
            )
            existing: dict[str, list[dict[str, Any]]] = dict(await cur.fetchall())
            if existing and not overwrite:
                first = min(existing)
                raise HandleExists(first, "handle already exists")
            new: list[tuple[str, str, str]] = []
            changed: list[tuple[str, str]] = []
            for i in order:
                handle, prefix, values = records[i]
                old = existing.get(handle)
                doc = _stamp(values, old)
                if old is None:
                    new.append((handle, prefix, json.dumps(doc)))
                    statuses[handle] = "created"
                elif _same(old, doc):
                    statuses[handle] = "unchanged"
                else:
                    changed.append((handle, json.dumps(doc)))
                    statuses[handle] = "updated"
            if new:
                cur = await conn.execute(
                    "INSERT INTO identifiers.handles (handle, prefix, vals)"
                    " SELECT h, p, v::jsonb FROM unnest(%s::text[], %s::text[], %s::text[])"
                    " AS t(h, p, v) ON CONFLICT (handle) DO NOTHING RETURNING handle",
                    [[n[0] for n in new], [n[1] for n in new], [n[2] for n in new]],
                )
                inserted = {row[0] for row in await cur.fetchall()}
                lost = sorted({n[0] for n in new} - inserted)
                if lost:
                    raise _LostRace(lost[0])
            if changed:
                await conn.execute(
                    "UPDATE identifiers.handles SET vals = t.v::jsonb, updated = now()"
                    " FROM unnest(%s::text[], %s::text[]) AS t(h, v)"
                    " WHERE identifiers.handles.handle = t.h",
                    [[c[0] for c in changed], [c[1] for c in changed]],
                )
        return [statuses[r[0]] for r in records]

    async def merge(
        self,
        handle: str,
        values: Sequence[HandleValue],
        *,
        overwrite: bool,
        max_values: int | None = None,
    ) -> Status:
        """Add or replace single values of an existing record (``PUT ?index=``), keeping others.

        ``max_values`` bounds the merged record, so values added one call at a time cannot grow
        a record past the limit a whole write is held to.
        """
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT vals FROM identifiers.handles WHERE handle = %s FOR UPDATE", [handle]
            )
            row = await cur.fetchone()
            if row is None:
                raise HandleNotFound(handle, "handle not found")
            old: list[dict[str, Any]] = row[0]
            given = {v.index for v in values}
            clash = sorted(given & {v["index"] for v in old})
            if clash and not overwrite:
                raise ValueExists(handle, f"value with index {clash[0]} already exists")
            kept = [HandleValue.model_validate(v) for v in old if v["index"] not in given]
            if max_values is not None and len(kept) + len(values) > max_values:
                raise InvalidValue(handle, f"the record would hold more than {max_values} values")
            doc = _stamp([*kept, *values], old)
            if _same(old, doc):
                return "unchanged"
            await conn.execute(
                "UPDATE identifiers.handles SET vals = %s::jsonb, updated = now()"
                " WHERE handle = %s",
                [json.dumps(doc), handle],
            )
        return "updated"

    async def delete(self, handle: str, indexes: Sequence[int] = ()) -> None:
        """Delete a record, or only the values with ``indexes``."""
        async with self._pool.connection() as conn, conn.transaction():
            if not indexes:
                cur = await conn.execute(
                    "DELETE FROM identifiers.handles WHERE handle = %s RETURNING handle", [handle]
                )
                if await cur.fetchone() is None:
                    raise HandleNotFound(handle, "handle not found")
                return
            cur = await conn.execute(
                "SELECT vals FROM identifiers.handles WHERE handle = %s FOR UPDATE", [handle]
            )
            row = await cur.fetchone()
            if row is None:
                raise HandleNotFound(handle, "handle not found")
            kept = [v for v in row[0] if v["index"] not in set(indexes)]
            if len(kept) == len(row[0]):
                raise ValuesNotFound(handle, f"no value with index {sorted(indexes)}")
            await conn.execute(
                "UPDATE identifiers.handles SET vals = %s::jsonb, updated = now()"
                " WHERE handle = %s",
                [json.dumps(kept), handle],
            )

    async def list(self, prefix: str, *, page: int, size: int) -> tuple[int, list[str]]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM identifiers.handles WHERE prefix = %s", [prefix]
            )
            total = (await cur.fetchone() or (0,))[0]
            cur = await conn.execute(
                "SELECT handle FROM identifiers.handles WHERE prefix = %s"
                " ORDER BY handle LIMIT %s OFFSET %s",
                [prefix, size, page * size],
            )
            return total, [row[0] for row in await cur.fetchall()]

    # --- tokens ------------------------------------------------------------------------------

    async def create_token(self, prefix: str, *, days: float, label: str = "") -> tuple[Token, str]:
        """A new write token for ``prefix``; the secret is returned once and stored only hashed."""
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        expires = datetime.now(UTC) + timedelta(days=days)
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO identifiers.tokens (id, sha256, prefix, label, expires)"
                " VALUES (%s, %s, %s, %s, %s) RETURNING created",
                [token_id, hashlib.sha256(secret.encode()).digest(), prefix, label, expires],
            )
            row = await cur.fetchone()
        created = row[0] if row else datetime.now(UTC)
        token = Token(token_id, prefix, label, created, expires, None)
        return token, f"{_TOKEN_TAG}.{token_id}.{secret}"

    async def check_token(self, text: str) -> Token | None:
        """The token ``text`` stands for if it is known, unrevoked and unexpired; else None."""
        tag, _, rest = text.partition(".")
        token_id, _, secret = rest.partition(".")
        if tag != _TOKEN_TAG or not token_id or not secret or len(text) > 128:
            return None
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT sha256, prefix, label, created, expires, revoked"
                " FROM identifiers.tokens WHERE id = %s",
                [token_id],
            )
            row = await cur.fetchone()
        digest = hashlib.sha256(secret.encode()).digest()
        if row is None:
            hmac.compare_digest(digest, digest)  # same work whether or not the id exists
            return None
        if not hmac.compare_digest(bytes(row[0]), digest):
            return None
        token = Token(token_id, row[1], row[2], row[3], row[4], row[5])
        return token if token.valid else None

    async def tokens(self) -> list[Token]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, prefix, label, created, expires, revoked FROM identifiers.tokens"
                " ORDER BY created, id"
            )
            return [Token(*row) for row in await cur.fetchall()]

    async def revoke_token(self, token_id: str) -> bool:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE identifiers.tokens SET revoked = now() WHERE id = %s AND revoked IS NULL"
                " RETURNING id",
                [token_id],
            )
            return await cur.fetchone() is not None
