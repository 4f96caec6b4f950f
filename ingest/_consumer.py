"""The MQTT side: a persistent session at QoS 1 with manual acknowledgement.

MQTT 5 by default (``clean_start=False`` with a Session Expiry Interval and a Receive Maximum);
MQTT 3.1.1 (``clean_session=False``) for a broker without MQTT 5, where the broker alone
decides how long the session lasts and how many messages are in flight.

paho-mqtt runs its network loop in a thread; each message is handed to the event loop through
a bounded queue. The paho thread appends to an inbox and goes on reading; a task of the event
loop moves the inbox into the queue, woken once per burst rather than once per message (a
round trip to the event loop per message kept the paho thread from reading ahead, and cost
both threads a wake-up each). When the inbox holds as many messages as the queue takes, the
paho thread waits, stops reading the socket, and the broker keeps the messages
(``max_queued_messages`` must be large enough on the broker: Mosquitto drops QoS 1 messages
beyond it, see docs/ingest.md).

A message is acknowledged only by :meth:`Consumer.ack`, which the pipeline calls after the
commit that holds it; its ``position`` is (packet id, QoS, connection generation). Packet ids
are per connection: a message received before a reconnect is never acknowledged on the new
connection (the broker sends it again, and the chain absorbs the copy).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Iterator, Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.protocol import SPARKPLUG_SUBSCRIPTIONS, SUBSCRIPTION
from ingest._errors import ConsumerError
from ingest._verify import Message
from ingest.config import MqttSettings

logger = logging.getLogger(__name__)


class ConsumerStats:
    def __init__(self) -> None:
        self.connected = False
        #: the broker has acknowledged the subscription on the current connection
        self.subscribed = False
        self.connects = 0
        self.received = 0
        self.acked = 0
        self.last_error: str | None = None


class Consumer:
    """Async context manager feeding ``queue`` with :class:`Message` s from the broker.

    ``share``: subscribe as a member of this MQTT shared-subscription group
    (``$share/<share>/…``), so that several consumers split the messages between them.
    """

    name = "mqtt"

    def __init__(
        self, settings: MqttSettings, queue: asyncio.Queue[Message], *, share: str | None = None
    ) -> None:
        self.settings = settings
        self.queue = queue
        filters = (SUBSCRIPTION, *SPARKPLUG_SUBSCRIPTIONS)
        self.filters = [f"$share/{share}/{f}" if share else f for f in filters]
        self.stats = ConsumerStats()
        self.generation = 0
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        #: received by the paho thread, not yet in ``queue``; ``_room`` bounds it
        self._inbox: collections.deque[Message] = collections.deque()
        self._room = threading.Semaphore(max(1, queue.maxsize))
        self._lock = threading.Lock()
        #: the feeder waits for ``_wake``: the next message received must set it
        self._idle = False
        self._wake = asyncio.Event()
        self._feeder: asyncio.Task[None] | None = None
        self.client = self._make_client(settings)

    def _make_client(self, s: MqttSettings) -> mqtt.Client:
        v5 = s.protocol == "5"
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            # 3.1.1: the persistent session; MQTT 5 asks for it with clean_start at connect
            clean_session=None if v5 else False,
            manual_ack=True,
        )
        if s.username is not None:
            password = None
            if s.password_file is not None:
                try:
                    password = s.password_file.read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise ConsumerError(
                        f"password_file {s.password_file}: {exc.strerror}"
                    ) from None
            client.username_pw_set(s.username, password)
        if s.tls is not None:
            try:
                context = ssl.create_default_context(cafile=s.tls.ca_file)
                if s.tls.cert_file is not None:
                    context.load_cert_chain(s.tls.cert_file, s.tls.key_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConsumerError(f"mqtt tls: {exc}") from None
            client.tls_set_context(context)
        client.reconnect_delay_set(0.1, 5)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    async def __aenter__(self) -> Consumer:
        self._loop = asyncio.get_running_loop()
        keepalive = max(1, round(self.settings.keepalive))
        if self.settings.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = int(self.settings.session_expiry)
            props.ReceiveMaximum = self.settings.receive_maximum
            self.client.connect_async(
                self.settings.host,
                self.settings.port,
                keepalive=keepalive,
                clean_start=False,
                properties=props,
            )
        else:
            self.client.connect_async(self.settings.host, self.settings.port, keepalive=keepalive)
        self.client.loop_start()
        # what arrives before it starts waits in the inbox: it empties that first
        self._feeder = asyncio.create_task(self._feed(), name="mqtt-feeder")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_receiving()
        if self._feeder is not None:
            self._feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feeder

    async def stop_receiving(self) -> None:
        """Disconnect: what is not acknowledged stays in the broker's session."""
        if not self._stopping.is_set():
            self._stopping.set()
            await asyncio.to_thread(self._stop)

    def _stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def describe(self) -> str:
        return self.settings.broker

    def health(self) -> dict[str, object]:
        s = self.stats
        return {"connected": s.connected, "subscribed": s.subscribed, "last_error": s.last_error}

    def metrics(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("guantong_ingest_mqtt_connected", "1 while connected to the broker",
                                value=self.stats.connected)  # fmt: skip
        yield CounterMetricFamily("guantong_ingest_mqtt_connects", "successful broker connections",
                                  value=self.stats.connects)  # fmt: skip

    # --- paho thread ------------------------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: object, flags: mqtt.ConnectFlags,
                    reason: mqtt.ReasonCode, _p: object) -> None:  # fmt: skip
        if reason.is_failure:
            if self.stats.last_error != str(reason):
                logger.error("broker %s refused the connection: %s", self.settings.broker, reason)
            self.stats.last_error = str(reason)
            return
        self.generation += 1
        self.stats.connected = True
        self.stats.connects += 1
        self.stats.last_error = None
        logger.info(
            "connected to %s (MQTT %s, session %s)",
            self.settings.broker,
            self.settings.protocol,
            "resumed" if flags.session_present else "new",
        )
        # JSON envelopes, and Sparkplug B DDATA/NDATA (which carry the same signed envelopes)
        client.subscribe([(f, 1) for f in self.filters])

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object,
                       reason: mqtt.ReasonCode, _p: object) -> None:  # fmt: skip
        if self.stats.connected and not self._stopping.is_set():
            logger.warning("disconnected from %s: %s", self.settings.broker, reason)
        self.stats.connected = self.stats.subscribed = False
        self.stats.last_error = str(reason)

    def _on_subscribe(self, _c: mqtt.Client, _u: object, _mid: int,
                      reasons: list[mqtt.ReasonCode], _p: object) -> None:  # fmt: skip
        refused = [r for r in reasons if r.is_failure]
        if refused:
            logger.error("broker refused a subscription: %s", refused[0])
            self.stats.last_error = str(refused[0])
            return
        self.stats.subscribed = True

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        received = time.time_ns() // 1000
        message = Message(msg.topic, msg.payload, received, (msg.mid, msg.qos, self.generation))
        self.stats.received += 1
        loop = self._loop
        if loop is None:  # not entered yet: cannot happen before connect_async
            return
        while not self._room.acquire(timeout=0.5):  # the inbox is full: backpressure
            if self._stopping.is_set():
                return  # unacknowledged: the broker keeps it for the next session
        with self._lock:
            self._inbox.append(message)
            wake, self._idle = self._idle, False
        if wake:
            loop.call_soon_threadsafe(self._wake.set)

    # --- event loop -------------------------------------------------------------------------------

    async def _feed(self) -> None:
        """Move the inbox into the queue, in the order received."""
        inbox, queue = self._inbox, self.queue
        while True:
            while inbox:
                await queue.put(inbox.popleft())
                self._room.release()
            with self._lock:
                if inbox:
                    continue
                self._idle = True
            await self._wake.wait()
            self._wake.clear()

    async def ack(self, messages: Sequence[Message]) -> None:
        """Acknowledge committed messages received on the current connection."""
        current = self.generation
        for msg in messages:
            mid, qos, generation = msg.position  # type: ignore[misc]
            if qos > 0 and generation == current:
                self.client.ack(mid, qos)
                self.stats.acked += 1
