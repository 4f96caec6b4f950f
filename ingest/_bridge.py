"""``guantong ingest bridge``: MQTT shared subscription → Kafka topic, nothing acknowledged early.

Each bridge subscribes as a member of one MQTT shared-subscription group (``$share/<group>/…``),
so several bridges split the messages. Every message becomes one record: the payload's bytes
unchanged (the gateway's signature covers them), the MQTT topic and the receive time as
headers, the gateway part of the topic as the key (:func:`ingest._kafka.partition_key`). The
MQTT message is acknowledged only after Kafka has acknowledged the record (``acks=all``), in
the order received. A produce that fails is sent again until it succeeds; meanwhile the queue
fills, paho stops reading and the MQTT broker keeps the rest in the bridge's session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError

from common import HttpServer
from ingest._consumer import Consumer
from ingest._errors import SourceUnavailable
from ingest._health import create_bridge_app
from ingest._kafka import RECEIVED_HEADER, TOPIC_HEADER, client_args, partition_key
from ingest._verify import Message
from ingest.config import BridgeConfig

logger = logging.getLogger(__name__)

_BACKOFF_MAX = 5.0


class BridgeStats:
    def __init__(self) -> None:
        self.produced = 0
        self.retries = 0
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
        #: records handed to the producer, in the order received, with their delivery futures
        self._sent: asyncio.Queue[tuple[Message, asyncio.Future[Any]]] = asyncio.Queue(
            config.queue_messages
        )
        self.stats = BridgeStats()
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
        self.producer = producer = AIOKafkaProducer(
            **client_args(k),
            acks="all",
            enable_idempotence=k.idempotent,
            linger_ms=round(k.linger * 1000),
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
            await self._sent.put((msg, await self._send(msg)))

    async def _send(self, msg: Message) -> asyncio.Future[Any]:
        """Hand ``msg`` to the producer (which batches it); the future says when it is stored."""
        headers = [(TOPIC_HEADER, msg.topic.encode()), (RECEIVED_HEADER, b"%d" % msg.received)]
        delay = 0.1
        while True:
            try:
                return await self.producer.send(
                    self.config.kafka.topic, msg.payload, key=partition_key(msg.topic),
                    headers=headers,
                )  # fmt: skip
            except KafkaError as exc:
                self._trouble(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)

    async def _confirm(self) -> None:
        """Acknowledge to MQTT, in order, each message whose record Kafka has stored."""
        while True:
            msg, delivery = await self._sent.get()
            delay = 0.1
            while True:
                try:
                    await delivery
                    break
                except KafkaError as exc:
                    # sent again: it may land after records sent behind it, which the sink's
                    # chain sees as a gap filled late; nothing is lost
                    self._trouble(exc)
                    self.stats.retries += 1
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _BACKOFF_MAX)
                    delivery = await self._send(msg)
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
