"""Waiting for a condition and reading the store, as every pipeline test does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg


async def wait_until(check: Callable[[], Any], within: float = 60.0, what: str = "") -> Any:
    """Poll ``check`` (in a thread: it may query the database) until it returns something
    truthy, and return that; ``TimeoutError`` after ``within`` seconds, naming ``what``."""
    try:
        async with asyncio.timeout(within):
            while True:
                value = await asyncio.to_thread(check)
                if value:
                    return value
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise TimeoutError(f"not {what or 'true'} within {within:.0f} s") from None


def fetch(dsn: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    """The rows of one query, on a connection of its own."""
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        return conn.execute(query, params or None).fetchall()  # type: ignore[arg-type]


def count(dsn: str, table: str) -> int:
    return int(fetch(dsn, f"SELECT count(*) FROM {table}")[0][0])  # noqa: S608 - test constant
