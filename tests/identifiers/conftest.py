"""Identifier nodes on free 127.0.0.1 ports over the shared PostgreSQL (``pg_dsn``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest

import identifiers

NodeFactory = Callable[..., AbstractAsyncContextManager[identifiers.Node]]


def node_config(dsn: str, authoritative: list[str], **extra: Any) -> identifiers.NodeConfig:
    return identifiers.NodeConfig.model_validate(
        {
            "kind": "identifiers",
            "listen": {"host": "127.0.0.1", "port": 0},
            "database": {"dsn": dsn, "pool_max": 4},
            "authoritative": authoritative,
            **extra,
        }
    )


async def raw_request(
    url: str, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """Send ``method target`` as given to the node at ``url``; return (status, parsed JSON)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        head = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body or method in ("PUT", "POST"):
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = response.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    status = int(status_line.split()[1])
    return status, json.loads(payload) if payload else None


RawRequest = Callable[..., Awaitable[tuple[int, Any]]]


@pytest.fixture
def raw() -> RawRequest:
    return raw_request


@pytest.fixture
def make_node(pg_dsn: str) -> NodeFactory:
    """Start a node (all nodes of a test share one database, each its own prefixes)."""

    @asynccontextmanager
    async def start(authoritative: list[str], **extra: Any) -> AsyncIterator[identifiers.Node]:
        async with identifiers.Node(node_config(pg_dsn, authoritative, **extra)) as node:
            yield node

    return start


@pytest.fixture
async def node(make_node: NodeFactory) -> AsyncIterator[identifiers.Node]:
    async with make_node(["88.709"]) as running:
        yield running


@pytest.fixture
async def token(node: identifiers.Node) -> str:
    """A write token for the firm 88.709.911."""
    _, secret = await node.registry.create_token("88.709.911", days=1, label="test firm")
    return secret
