"""MQTT uplink: publishes what the outbox holds and deletes it on PUBACK.

Each connection gets a fresh paho client. paho re-sends unacknowledged QoS 1 messages of its
own across reconnects, even with a clean session; with the outbox as the single source of what
is still unacknowledged, a second hidden queue would only publish things twice. After every
(re)connect the uplink starts again at the oldest unacknowledged envelope: at-least-once, with
duplicates absorbed by the store's unique key downstream.

paho runs its network loop in a thread of its own; its callbacks only hand events to the
asyncio loop (``call_soon_threadsafe``), so all bookkeeping happens on one thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway._outbox import Entry, Outbox, OutboxError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int = 1883
    client_id: str = ""
    username: str | None = None
    password: str | None = None
    #: MQTT version: "5" or "3.1.1"
    protocol: str = "5"
    #: TLS is on when ``ca_file`` is set; ``cert_file``/``key_file`` add a client certificate
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive: int = 30
    #: QoS 1 messages in flight; ~100 gives the best loopback throughput (docs/FINDINGS)
    inflight: int = 100
    connect_timeout: float = 10.0


@dataclass(frozen=True)
class Message:
    """One MQTT message to publish; ``properties`` become MQTT 5 user properties."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    properties: tuple[tuple[str, str], ...] = ()


class Session(Protocol):
    """What a payload format adds to the outbox pump: its Will, its births, the commands it
    answers, and how an outbox entry goes on the wire (``JsonSession``; Sparkplug B has its
    own). Called on the asyncio thread, one connection at a time."""

    def will(self) -> Message | None:
        """Set on every connection; the broker publishes it if the link dies."""

    def births(self) -> list[Message]:
        """Published after every CONNACK, before any data."""

    def subscriptions(self) -> list[str]:
        """Topic filters of the commands this session answers (QoS 1)."""

    def command(self, topic: str, payload: bytes) -> list[Message]:
        """The messages that answer a received command (e.g. a rebirth request)."""

    def data(self, entry: Entry, historical: bool) -> Message:
        """What is published for an outbox entry; ``historical`` for outage backlog."""

    def device(self, device: str, up: bool) -> list[Message]:
        """A device (identifier) stopped or started answering; sent only while connected."""

    def death(self) -> Message | None:
        """Published on a clean stop."""


@dataclass(frozen=True)
class JsonSession:
    """The JSON wire format: envelopes as stored, and a retained status with a Will."""

    status_topic: str
    online: bytes
    offline: bytes

    def will(self) -> Message:
        return Message(self.status_topic, self.offline, retain=True)

    def births(self) -> list[Message]:
        return [Message(self.status_topic, self.online, retain=True)]

    def subscriptions(self) -> list[str]:
        return []

    def command(self, topic: str, payload: bytes) -> list[Message]:
        return []

    def data(self, entry: Entry, historical: bool) -> Message:
        marks = (("historical", "true"),) if historical else ()
        return Message(entry.topic, entry.payload, properties=marks)

    def device(self, device: str, up: bool) -> list[Message]:
        return []  # the Bad samples in the envelopes show it

    def death(self) -> Message:
        return self.will()


@dataclass
class UplinkStats:
    connected: bool = False
    connects: int = 0
    published: int = 0
    #: publishes of backlog that was waiting when the connection came up
    replayed: int = 0
    acked: int = 0
    #: PUBACKs with an MQTT 5 failure reason (e.g. not authorized): kept in the outbox
    refused: int = 0
    inflight: int = 0
    #: publish → PUBACK time, summed over ``acks_timed`` acknowledgements
    ack_seconds: float = 0.0
    acks_timed: int = 0
    last_error: str | None = None


@dataclass
class _Connection:
    client: mqtt.Client
    events: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    inflight: dict[int, tuple[int, float]] = field(default_factory=dict)  # mid → (outbox id, t)


class Uplink:
    """Async context manager: while open, keeps publishing the outbox to the broker."""

    def __init__(
        self,
        outbox: Outbox,
        settings: MqttSettings,
        *,
        session: Session | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self._outbox = outbox
        self._settings = settings
        self._session = session
        self._live: _Connection | None = None  # the connection after CONNACK
        self._backoff = (backoff_initial, backoff_max)
        self._wake = asyncio.Event()
        self._acked = asyncio.Event()
        #: acknowledged envelopes the outbox could not delete yet (disk full): tried again
        self._undeleted: list[int] = []
        self._failure: str | None = None  # the last failure of the connection loop, logged
        self._task: asyncio.Task[None] | None = None
        self.stats = UplinkStats()

    def device_changed(self, device: str, up: bool) -> None:
        """Tell the session; what it answers goes out now if connected (births carry it later)."""
        if self._session is None:
            return
        messages = self._session.device(device, up)
        if self._live is not None:
            for message in messages:
                self._send(self._live, message)

    def notify(self) -> None:
        """Tell the uplink the outbox has new envelopes."""
        self._wake.set()

    async def __aenter__(self) -> Uplink:
        self._task = asyncio.create_task(self._run(), name="uplink")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def drained(self) -> None:
        """Return once the outbox is empty (wrap in ``asyncio.timeout`` to bound the wait)."""
        while self._outbox.depth()[0]:
            self._acked.clear()
            await self._acked.wait()

    # -- the connection loop --------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self._backoff[0]
        while True:
            conn = self._connect()
            try:
                if await self._await_connack(conn):
                    delay = self._backoff[0]
                    self._live = conn
                    await self._pump(conn)
            except asyncio.CancelledError:
                # off the event loop: the death message waits for its PUBACK (≤ 2 s) and the
                # join of paho's thread may wait for a pending connect
                await asyncio.to_thread(self._close, conn)
                raise
            except Exception as exc:  # e.g. the outbox failed: log, reconnect, try again
                if str(exc) != self._failure:  # with its traceback once, not at every retry
                    logger.exception("uplink: the connection loop failed")
                self._failure = str(exc)
                self._down(f"failed: {exc}")
            finally:
                self._live = None
            self.stats.connected = False
            # joining paho's thread can wait for its pending TCP connect (paho's own 5 s
            # timeout when the path drops packets silently): never on the event loop
            await asyncio.to_thread(_stop, conn.client)
            logger.debug("uplink: reconnecting in %.1f s", delay)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
            delay = min(delay * 2, self._backoff[1])

    def _connect(self) -> _Connection:
        s = self._settings
        v5 = s.protocol == "5"
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else True,  # v5: a fresh client starts clean by default
            # each connection gets a fresh client: paho retrying on its own thread would only
            # keep that thread busy (in a blocking connect) when the uplink stops it
            reconnect_on_failure=False,
        )
        client.max_inflight_messages_set(s.inflight)
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.ca_file is not None:
            client.tls_set(
                ca_certs=s.ca_file,
                certfile=s.cert_file,
                keyfile=s.key_file,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        will = None if self._session is None else self._session.will()
        if will is not None:
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        conn = _Connection(client)
        loop = asyncio.get_running_loop()

        def emit(kind: str, value: Any = None) -> None:
            loop.call_soon_threadsafe(self._event, conn, kind, value)

        client.on_connect = lambda _c, _u, _f, rc, _p: emit("connack", rc)
        client.on_disconnect = lambda _c, _u, _f, rc, _p: emit("disconnect", rc)
        client.on_publish = lambda _c, _u, mid, rc, _p: emit("puback", (mid, rc))
        client.on_message = lambda _c, _u, msg: emit("command", (msg.topic, msg.payload))
        try:
            client.connect_async(s.host, s.port, keepalive=s.keepalive)
            client.loop_start()
        except (OSError, ValueError) as exc:
            emit("disconnect", exc)
        return conn

    def _event(self, conn: _Connection, kind: str, value: Any) -> None:
        conn.events.put_nowait((kind, value))
        self._wake.set()

    async def _await_connack(self, conn: _Connection) -> bool:
        try:
            async with asyncio.timeout(self._settings.connect_timeout):
                kind, value = await conn.events.get()
        except TimeoutError:
            self._down(f"no CONNACK within {self._settings.connect_timeout} s")
            return False
        if kind != "connack" or value.is_failure:
            self._down(f"connect failed: {value}")
            return False
        self.stats.connected = True
        self.stats.connects += 1
        logger.info("uplink: connected to %s:%s", self._settings.host, self._settings.port)
        if self._session is not None:
            for topic in self._session.subscriptions():
                conn.client.subscribe(topic, qos=1)
            for message in self._session.births():
                self._send(conn, message)
        return True

    def _send(self, conn: _Connection, message: Message) -> mqtt.MQTTMessageInfo:
        properties = None
        if message.properties and self._settings.protocol == "5":
            properties = Properties(PacketTypes.PUBLISH)
            properties.UserProperty = list(message.properties)
        return conn.client.publish(
            message.topic,
            message.payload,
            qos=message.qos,
            retain=message.retain,
            properties=properties,
        )

    async def _pump(self, conn: _Connection) -> None:
        """Publish until the connection drops: new envelopes first, the backlog behind them.

        What was in the outbox when the connection came up is the backlog of an outage; it is
        replayed in order, but only in the room the live envelopes leave in the in-flight
        window, so a long catch-up never delays current data. MQTT 5 marks it with the user
        property ``historical=true``. Ingest orders by sequence number, not by arrival.
        """
        backlog_end = self._outbox.last_id()
        backlog_at = live_at = 0
        while True:
            room = self._settings.inflight - len(conn.inflight)
            if room > 0:
                live = self._outbox.peek(room, max(live_at, backlog_end))
                backlog = []
                if len(live) < room and backlog_at < backlog_end:
                    backlog = self._outbox.peek(room - len(live), backlog_at, backlog_end)
                for entry, historical in [(e, False) for e in live] + [(e, True) for e in backlog]:
                    if not self._publish(conn, entry, historical):
                        return
                if live:
                    live_at = live[-1].id
                if backlog:
                    backlog_at = backlog[-1].id
            self.stats.inflight = len(conn.inflight)
            if not await self._handle_events(conn):
                return

    def _publish(self, conn: _Connection, entry: Entry, historical: bool) -> bool:
        if self._session is None:
            info = conn.client.publish(entry.topic, entry.payload, qos=1)
        else:
            info = self._send(conn, self._session.data(entry, historical))
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._down(f"publish failed: {mqtt.error_string(info.rc)}")
            return False
        conn.inflight[info.mid] = (entry.id, time.monotonic())
        self.stats.published += 1
        self.stats.replayed += historical
        return True

    async def _handle_events(self, conn: _Connection) -> bool:
        """Apply PUBACKs (in one outbox transaction); False once the connection is gone."""
        if conn.events.empty():
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
        acked: list[int] = []
        alive = True
        while not conn.events.empty():
            kind, value = conn.events.get_nowait()
            if kind == "puback":
                mid, reason = value
                if (sent := conn.inflight.pop(mid, None)) is None:
                    continue
                if reason.is_failure:
                    # MQTT 5 brokers say "not authorized" (an ACL) or "quota exceeded"; the
                    # envelope stays in the outbox and the connection is retried with backoff
                    self.stats.refused += 1
                    self._down(f"the broker refused an envelope: {reason}")
                    alive = False
                    continue
                acked.append(sent[0])
                self.stats.ack_seconds += time.monotonic() - sent[1]
                self.stats.acks_timed += 1
            elif kind == "command" and self._session is not None:
                for message in self._session.command(*value):
                    self._send(conn, message)
            elif kind == "disconnect":
                self._down(f"disconnected: {value}")
                alive = False
        self._delete(acked)
        return alive

    def _delete(self, acked: list[int]) -> None:
        """Delete acknowledged envelopes; if the outbox cannot (its disk is full), keep their
        ids and try again with the next ones: they are delivered, only not yet deleted."""
        ids = self._undeleted + acked
        if not ids:
            return
        try:
            self.stats.acked += self._outbox.ack(ids)
        except OutboxError as exc:
            if not self._undeleted:
                logger.error("uplink: cannot delete acknowledged envelopes (%s); retrying", exc)
            self._undeleted = ids
            return
        if self._undeleted:
            logger.info("uplink: acknowledged envelopes are deleted again")
            self._undeleted = []
        self._acked.set()

    def _down(self, reason: str) -> None:
        if self.stats.connected or self.stats.last_error is None:
            logger.warning("uplink: %s", reason)
        self.stats.connected = False
        self.stats.last_error = reason

    def _close(self, conn: _Connection) -> None:
        """Stop the client gracefully: the death message first, when connected."""
        death = None if self._session is None else self._session.death()
        if self.stats.connected and death is not None:
            self._send(conn, death).wait_for_publish(timeout=2)
        _stop(conn.client)
        self.stats.connected = False


def _stop(client: mqtt.Client) -> None:
    """Disconnect and join the client's network thread (blocks while it is connecting)."""
    client.disconnect()
    client.loop_stop()
