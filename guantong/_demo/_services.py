"""The demo's services after the servers, each an async context manager over the shared
:class:`~guantong._demo.Demo`: the identifier node (with the gateway registered on it),
ingest, the evidence service, the PLC simulators and the gateway. Each reads the config file
the demo wrote for it, exactly as its ``guantong … run`` command would, and leaves what later
services need on the demo (the node's URL, the running ingest and gateway).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import evidence
import identifiers
import simulators
from gateway._keys import create_key
from gateway._runtime import running
from guantong import _configfile
from guantong._demo._servers import DemoError
from guantong.cli.identifiers import gateway_records
from ingest import Ingest

if TYPE_CHECKING:
    from guantong._demo import Demo

#: the evidence service's token for the firm's prefix on the node, beside its config
NODE_TOKEN_FILE = "identifiers.token"  # noqa: S105 - a file name, not a secret


@contextlib.asynccontextmanager
async def identifier_node(demo: Demo) -> AsyncIterator[None]:
    """The node of the firm's prefix, and the gateway and its devices registered on it with
    the gateway's public key, as ``guantong gateway init --node`` does."""
    config = _configfile.load(demo.files["identifiers"], "identifiers")
    gateway = _configfile.load(demo.files["gateway"], "gateway")
    if not gateway.gateway.key_file.exists():
        create_key(gateway.gateway.key_file)
    async with identifiers.Node(config) as node:
        prefix = identifiers.parse(gateway.gateway.id).prefix
        _, token = await node.registry.create_token(prefix, days=1, label="guantong demo")
        async with identifiers.Client(node.url, token=token) as client:
            await client.register(gateway_records(gateway, None), overwrite=True)
        token_file = demo.workdir / NODE_TOKEN_FILE
        token_file.touch(mode=0o600)
        token_file.write_text(token, encoding="utf-8")
        demo.node_url = node.url
        demo.say(f"identifier node: {node.url} (gateway and {len(gateway.devices)} devices "
                 f"registered under {prefix})")  # fmt: skip
        yield


@contextlib.asynccontextmanager
async def ingest(demo: Demo) -> AsyncIterator[None]:
    """Ingest, subscribed before the gateway starts: the broker keeps messages only for
    sessions that exist when they are published."""
    config = _configfile.load(demo.files["ingest"], "ingest")
    async with Ingest(config) as running_ingest:
        try:
            async with asyncio.timeout(30):
                while not running_ingest.consumer.stats.subscribed:  # noqa: ASYNC110 - a flag
                    await asyncio.sleep(0.02)
        except TimeoutError:
            error = running_ingest.stats.last_error or "no answer from the broker"
            raise DemoError(f"ingest did not subscribe within 30 s: {error}") from None
        demo.ingest = running_ingest
        health = running_ingest.health.url if running_ingest.health else "off"
        demo.say(f"ingest: verifying into PostgreSQL; health {health}")
        yield


@contextlib.asynccontextmanager
async def evidence_service(demo: Demo) -> AsyncIterator[None]:
    """The evidence API and web page over the store, with an admin token made for this run."""
    config = _configfile.load(demo.files["evidence"], "evidence")
    async with evidence.Service(config) as service:
        demo.say(f"evidence page: {service.url}/  token: {demo.token}")
        yield


@contextlib.asynccontextmanager
async def plcs(demo: Demo) -> AsyncIterator[None]:
    factory = _configfile.load(demo.files["factory"], "factory")
    async with simulators.Simulator(factory, base_dir=demo.workdir) as sim:
        demo.say(f"factory {factory.title or factory.name}: {len(sim.machines)} machines simulated")
        yield


@contextlib.asynccontextmanager
async def gateway(demo: Demo) -> AsyncIterator[None]:
    config = _configfile.load(demo.files["gateway"], "gateway")
    async with running(config) as gw:
        demo.gateway = gw
        protocols = sorted({d.connection.protocol for d in config.devices})
        demo.say(f"gateway {config.gateway.id} ({config.uplink.format}), reading "
                 f"{len(config.devices)} devices over {', '.join(protocols)}")  # fmt: skip
        yield
