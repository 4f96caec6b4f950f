"""``guantong ingest bridge``: MQTT shared subscription → Kafka topic, nothing acknowledged early.

Each bridge subscribes as a member of one MQTT shared-subscription group (``$share/<group>/…``),
so several bridges split the messages. Every message becomes one record: the payload's bytes
unchanged (the gateway's signature covers them), the MQTT topic and the receive time as
headers, the gateway part of the topic as the key (:func:`ingest._kafka.partition_key`). The
MQTT message is acknowledged only after Kafka has acknowledged the record (``acks=all``), in
the order received. A produce that fails is sent again until it succeeds; meanwhile the queue
fills, paho stops reading and the MQTT broker keeps the rest in the bridge's session.

A message Kafka cannot take for its size (over ``kafka.max_request_size``, or refused by the
broker's ``message.max.bytes``) is not retried: sending it again would fail again and hold
back every message behind it. It is forwarded cut to what quarantine keeps, with its whole
size in a header (:data:`ingest._kafka.SIZE_HEADER`), and the sink quarantines it as
``oversized`` with the row single-node ingest writes. Its MQTT message is acknowledged once
Kafka has the cut record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from common import HttpServer
from ingest._consumer import Consumer
from ingest._errors import SourceUnavailable
from ingest._health import create_bridge_app
from ingest._kafka import (
    RECEIVED_HEADER,
    SIZE_HEADER,
    TOPIC_HEADER,
    client_args,
    partition_key,
    topic_record_limit,
)
from ingest._verify import KEEP_OVERSIZED, Message
from ingest.config import BridgeConfig

logger = logging.getLogger(__name__)

_BACKOFF_MAX = 5.0
#: what Kafka answers for a record over the producer's or the broker's size limit
_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


class BridgeStats:
    def __init__(self) -> None:
        self.produced = 0
        self.retries = 0
        #: messages over what Kafka takes, forwarded cut to their first bytes
        self.cut = 0
        self.kafka_up = True
        self.last_error: str | None = None


class Bridge:
    """Async context manager running one bridge until it is left."""

    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self.queue: asyncio.Queue[Message] = asyncio.Queue(config.queue_messages)
        self.consumer = Consumer(config.mqtt, self.queue, share=config.mqtt.share_group)
        #: made when entered: aiokafka clients belong to the running event loop
        self.producer: AIOKafkaProducer
        #: records handed to the producer, in the order received: the message, whether the
        #: record is cut, its delivery future
        self._sent: asyncio.Queue[tuple[Message, bool, asyncio.Future[Any]]] = asyncio.Queue(
            config.queue_messages
        )
        self.stats = BridgeStats()
        #: the largest record sent whole: ``kafka.max_request_size``, or the topic's
        #: ``max.message.bytes`` when the broker reports a smaller one
        self.record_limit = config.kafka.max_request_size
        self.health: HttpServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stack: contextlib.AsyncExitStack | None = None

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    def pending(self) -> int:
        """Messages received and not yet stored by Kafka (nor acknowledged to MQTT)."""
        return self.consumer.stats.received - self.stats.produced

    async def __aenter__(self) -> Bridge:
        k = self.config.kafka
        topic_limit = await topic_record_limit(k)
        if topic_limit is not None and topic_limit < k.max_request_size:
            # cut before sending rather than after the broker refused: a refused batch
            # leaves a hole in an idempotent producer's sequence numbers (aiokafka 0.14)
            logger.warning(
                "kafka topic %s takes records of up to %d bytes (max.message.bytes), less "
                "than kafka.max_request_size (%d): larger messages are forwarded cut and "
                "quarantined as oversized",
                k.topic, topic_limit, k.max_request_size,
            )  # fmt: skip
            self.record_limit = topic_limit
        self.producer = producer = AIOKafkaProducer(
            **client_args(k),
            acks="all",
            enable_idempotence=k.idempotent,
            linger_ms=round(k.linger * 1000),
            max_request_size=self.record_limit,
        )
        async with contextlib.AsyncExitStack() as stack:
            try:
                await producer.start()
            except KafkaConnectionError as exc:
                await producer.stop()
                raise SourceUnavailable(f"kafka {','.join(k.brokers)}: {exc}") from None
            # after the tasks stopped: sends what the producer still holds
            stack.push_async_callback(producer.stop)
            self._tasks = [
                asyncio.create_task(self._forward(), name="bridge-forward"),
                asyncio.create_task(self._confirm(), name="bridge-confirm"),
            ]
            stack.push_async_callback(self._stop_tasks)
            await stack.enter_async_context(self.consumer)
            if self.config.health is not None:
                host, port = self.config.health.address
                app = create_bridge_app(self, lambda: self.running)
                self.health = await stack.enter_async_context(
                    HttpServer(app, host, port, name="bridge health")
                )
            self._stack = stack.pop_all()
        logger.info(
            "bridge started: %s ($share/%s) → kafka %s topic %s",
            self.config.mqtt.broker, self.config.mqtt.share_group, ",".join(k.brokers), k.topic,
        )  # fmt: skip
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None

    async def wait(self) -> None:
        """Until a task stops (only on a bug: the exception is raised here)."""
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _forward(self) -> None:
        while True:
            msg = await self.queue.get()
            await self._sent.put((msg, *await self._send(msg)))

    async def _send(self, msg: Message, cut: bool = False) -> tuple[bool, asyncio.Future[Any]]:
        """Hand ``msg`` to the producer (which batches it), cut if ``cut`` or if it is over
        the producer's limit; return whether it is cut, and the future that says when Kafka
        has the record."""
        delay = 0.1
        while True:
            payload = msg.payload
            headers = [(TOPIC_HEADER, msg.topic.encode()), (RECEIVED_HEADER, b"%d" % msg.received)]
            if cut:
                payload = payload[:KEEP_OVERSIZED]
                headers.append((SIZE_HEADER, b"%d" % len(msg.payload)))
            try:
                return cut, await self.producer.send(
                    self.config.kafka.topic, payload, key=partition_key(msg.topic),
                    headers=headers,
                )  # fmt: skip
            except KafkaError as exc:
                if isinstance(exc, _TOO_LARGE) and self._cut(msg, cut, exc):
                    cut = True
                    continue
                self._trouble(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)

    def _cut(self, msg: Message, cut: bool, exc: KafkaError) -> bool:
        """Whether ``msg``, refused by Kafka for its size, is to be sent again cut: once per
        message. A cut record refused again (a broker whose limit is below what quarantine
        keeps) is Kafka trouble, waited out like an outage."""
        if cut or len(msg.payload) <= KEEP_OVERSIZED:
            return False
        self.stats.cut += 1
        logger.warning(
            "bridge: %s: a payload of %d bytes is more than Kafka takes (%s: %s); forwarded "
            "cut to its first %d bytes, to be quarantined as oversized",
            msg.topic, len(msg.payload), type(exc).__name__, exc, KEEP_OVERSIZED,
        )  # fmt: skip
        return True

    async def _confirm(self) -> None:
        """Acknowledge to MQTT, in order, each message whose record Kafka has stored."""
        while True:
            msg, cut, delivery = await self._sent.get()
            delay = 0.1
            while True:
                try:
                    await delivery
                    break
                except KafkaError as exc:
                    if isinstance(exc, _TOO_LARGE) and self._cut(msg, cut, exc):
                        cut = True
                    else:
                        # sent again: it may land after records sent behind it, which the
                        # sink's chain sees as a gap filled late; nothing is lost
                        self._trouble(exc)
                        self.stats.retries += 1
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, _BACKOFF_MAX)
                    cut, delivery = await self._send(msg, cut)
            if not self.stats.kafka_up:
                logger.info("kafka reachable again")
                self.stats.kafka_up = True
                self.stats.last_error = None
            self.stats.produced += 1
            await self.consumer.ack([msg])

    def _trouble(self, exc: Exception) -> None:
        text = f"{type(exc).__name__}: {exc}".strip()
        if self.stats.kafka_up:
            logger.error("bridge waits for kafka: %s", text)
        self.stats.kafka_up = False
        self.stats.last_error = text
