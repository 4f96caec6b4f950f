"""The running gateway: drivers → sample stream → envelope writer → outbox → MQTT uplink.

Shutdown order is what makes a stop lossless: drivers stop first, the writer commits every
buffered sample to the outbox, the uplink gets ``drain_timeout`` seconds to deliver the
backlog, and only then publishes the offline status and disconnects. What is not delivered by
then stays in the outbox for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator
from typing import Any

from common import HttpServer
from edge import SampleStream
from edge.drivers import drivers_for
from gateway import protocol
from gateway._envelopes import EnvelopeWriter
from gateway._health import create_app
from gateway._keys import load_key
from gateway._outbox import Outbox
from gateway._sparkplug import sparkplug_session
from gateway._uplink import JsonSession, MqttSettings, Uplink
from gateway.config import GatewayConfig, UplinkSettings

logger = logging.getLogger(__name__)


class GatewayError(Exception):
    """The gateway cannot start: a file it needs is missing or wrong, or a device is unsupported."""


def mqtt_settings(uplink: UplinkSettings, gateway_id: str) -> MqttSettings:
    password = None
    if uplink.password_file is not None:
        try:
            password = uplink.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise GatewayError(f"password_file {uplink.password_file}: {exc.strerror}") from None
    tls = uplink.tls
    if tls is not None:  # fail at start, not in the reconnect loop
        try:
            context = ssl.create_default_context(cafile=tls.ca_file)
            if tls.cert_file is not None:
                context.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise GatewayError(f"uplink tls: {exc}") from None
    return MqttSettings(
        host=uplink.host,
        port=uplink.port,
        client_id=uplink.client_id or gateway_id,
        username=uplink.username,
        password=password,
        protocol=uplink.protocol,
        ca_file=None if tls is None else str(tls.ca_file),
        cert_file=None if tls is None or tls.cert_file is None else str(tls.cert_file),
        key_file=None if tls is None or tls.key_file is None else str(tls.key_file),
        keepalive=max(1, round(uplink.keepalive)),
        inflight=uplink.inflight,
    )


def json_session(config: GatewayConfig, public_key: bytes) -> JsonSession:
    """The retained birth (online, with devices, tags and key fingerprint) and its Will."""
    gw = config.gateway.id
    birth = {
        "online": True,
        "gateway": gw,
        "enterprise": config.gateway.enterprise,
        "key": protocol.fingerprint(public_key),
        "devices": [
            {
                "id": d.id,
                "name": d.name,
                "tags": [t.name for g in d.groups for t in g.tags],
            }
            for d in config.devices
        ],
    }
    will = {"online": False, "gateway": gw}
    return JsonSession(
        protocol.status_topic(gw),
        json.dumps(birth, ensure_ascii=False, separators=(",", ":")).encode(),
        json.dumps(will, separators=(",", ":")).encode(),
    )


class Gateway:
    """Owns the outbox, writer and uplink of one gateway config; drivers are added by the caller.

    ``async with Gateway(config) as gw:`` opens everything; put samples into ``gw.stream``
    (drivers do); leaving the block shuts down in the lossless order described above.
    """

    def __init__(self, config: GatewayConfig, *, drain_timeout: float = 5.0) -> None:
        # Nothing per tag is kept from ``config``: the sessions keep their birth messages, the
        # writer the device identifiers. 100,000 tags as pydantic models are some 83 MB.
        self.id = config.gateway.id
        #: device name in the config → identifier
        self.devices = {d.name: d.id for d in config.devices}
        self.health_settings = config.health
        self.drain_timeout = drain_timeout
        try:
            self.key = load_key(config.gateway.key_file)
        except Exception as exc:
            raise GatewayError(str(exc)) from None
        self.public_key = protocol.public_key_bytes(self.key)
        self.stream = SampleStream()
        self.outbox = Outbox(config.outbox.path, max_bytes=config.outbox.max_bytes)
        self.uplink = Uplink(
            self.outbox,
            mqtt_settings(config.uplink, config.gateway.id),
            session=(sparkplug_session if config.uplink.format == "sparkplug" else json_session)(
                config, self.public_key
            ),
        )
        self.writer = EnvelopeWriter(
            self.outbox,
            self.key,
            config.gateway.id,
            self.devices,
            max_samples=config.envelope.max_samples,
            max_delay=config.envelope.max_delay,
            checkpoint_interval=config.uplink.checkpoint_interval,
            on_commit=self.uplink.notify,
            on_device=self.uplink.device_changed,
        )
        self.health: HttpServer | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._consumer: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Gateway:
        async with contextlib.AsyncExitStack() as stack:
            stack.enter_context(self.outbox)
            await stack.enter_async_context(self.uplink)
            stack.push_async_callback(self._drain)
            await stack.enter_async_context(self.writer)
            self._consumer = asyncio.create_task(
                self.writer.consume(self.stream), name="envelope-consumer"
            )
            stack.push_async_callback(self._stop_consumer)
            if self.health_settings is not None:
                host, port = self.health_settings.address
                app = create_app(self, lambda: self.writer.running and self.uplink.running)
                self.health = await stack.enter_async_context(
                    HttpServer(app, host, port, name="gateway health")
                )
            self._stack = stack.pop_all()
        logger.info(
            "gateway %s started: %d devices, key %s",
            self.id,
            len(self.devices),
            protocol.fingerprint(self.public_key),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None

    async def _stop_consumer(self) -> None:
        self.stream.close()
        if self._consumer is not None:
            await self._consumer

    async def _drain(self) -> None:
        try:
            async with asyncio.timeout(self.drain_timeout):
                await self.uplink.drained()
        except TimeoutError:
            left, size = self.outbox.depth()
            logger.warning("stopping with %d envelopes (%d bytes) still in the outbox", left, size)


def running(
    config: GatewayConfig, **kwargs: float
) -> contextlib.AbstractAsyncContextManager[Gateway]:
    """The gateway with its drivers: what ``guantong gateway run`` runs until it is stopped.

    Both are built at once and keep nothing per tag from ``config`` (the driver keeps its
    request plans), so the parsed config can go once this returns: a caller that drops its
    own reference frees the device models, some 83 MB for 100,000 tags.
    """
    gateway = Gateway(config, **kwargs)
    return _running(gateway, drivers_for(config.devices, gateway.stream))


@contextlib.asynccontextmanager
async def _running(gateway: Gateway, drivers: list[Any]) -> AsyncIterator[Gateway]:
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(gateway)
        for driver in drivers:
            await stack.enter_async_context(driver)
        yield gateway
