"""The Kafka side of scale-out ingest: the topic's record format, and the sink's source.

A record is one MQTT message as the bridge received it: the value is the payload, unchanged
(the signature covers it); headers carry the MQTT topic and the time the bridge received it;
the key is the gateway part of the topic, so that one gateway's whole chain stays in order on
one partition and is verified by one sink at a time (docs/kafka.md says why the gateway and
not the device).

:class:`KafkaSource` is a consumer group member feeding the ingest pipeline. Offsets are
committed by :meth:`KafkaSource.ack`, after the database commit of the batch that holds the
records. Before a rebalance takes partitions away, the rebalance listener waits until every
record already handed to the pipeline is committed (offsets included), so that the next owner
starts exactly after them; records fetched for a partition no longer owned are dropped, and
read again by its new owner.

A broker that comes back without a partition's records or the group's offsets (a broker
without durable storage restarted, a topic deleted and created again, offsets reset by hand)
shows here as a partition whose offsets went back: a record, or the end of the log, below
what this sink had already read or committed. The sink then starts a new *epoch* of that
partition: it logs the event, counts it (``kafka_offset_resets``), reads the new log from where
the group stands (from its start when the log ends below), and no longer commits offsets of
records read before (they would point past records of the new log). Records the broker
lost before the sink stored them are gone from Kafka; their gateways' next envelopes show the
hole as a gap event in the store. An offset commit is bounded in time (aiokafka retries one
for a topic the broker does not know forever): the records are stored, so a commit that fails
only means they may come again, absorbed as duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

import gateway.protocol as wire
from ingest._errors import SourceUnavailable
from ingest._verify import Message
from ingest.config import KafkaSettings, SinkKafkaSettings

logger = logging.getLogger(__name__)

#: record headers the bridge sets: the MQTT topic, and the time it received the message
#: (µs since the Unix epoch, decimal)
TOPIC_HEADER = "gt-mqtt-topic"
RECEIVED_HEADER = "gt-received-us"
#: header of a record the bridge cut because Kafka would not take it whole: the payload's
#: whole size in bytes (decimal); the value holds its first 64 KiB (what quarantine keeps)
SIZE_HEADER = "gt-size"
_BACKOFF_MAX = 5.0


def partition_key(topic: str) -> bytes:
    """The gateway part of an MQTT topic: every envelope of a gateway gets the same key.

    ``gt/v1/<prefix>/<gateway>/…`` → ``gt/v1/<prefix>/<gateway>``; Sparkplug
    ``spBv1.0/<group>/<type>/<edge node>[/<device>]`` → ``spBv1.0/<group>/<edge node>`` (the
    edge node is the gateway). Any other topic is its own key; ingest quarantines it.
    """
    levels = topic.split("/")
    if len(levels) >= 4 and levels[0] == wire.SPARKPLUG_NAMESPACE:
        return f"{levels[0]}/{levels[1]}/{levels[3]}".encode()
    if len(levels) >= 4 and f"{levels[0]}/{levels[1]}/#" == wire.SUBSCRIPTION:
        return "/".join(levels[:4]).encode()
    return topic.encode()


def client_args(settings: KafkaSettings) -> dict[str, Any]:
    return {"bootstrap_servers": list(settings.brokers), "client_id": settings.client_id}


async def topic_record_limit(settings: KafkaSettings, within: float = 10.0) -> int | None:
    """The largest record batch the topic takes (``max.message.bytes``, which Kafka reports
    with the broker's ``message.max.bytes`` when the topic does not set it), or None when the
    broker does not say within ``within`` seconds (away, no DescribeConfigs, not allowed)."""
    admin = AIOKafkaAdminClient(**client_args(settings), request_timeout_ms=int(within * 1000))
    try:
        async with asyncio.timeout(within):
            await admin.start()
            responses = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, settings.topic)]
            )
    except (KafkaError, OSError, TimeoutError) as exc:
        logger.debug("kafka: the topic's max.message.bytes is unknown: %r", exc)
        return None
    finally:
        await admin.close()
    for response in responses:
        for resource in response.resources:
            # (error code, message, type, name, entries of (name, value, …))
            for entry in resource[4] if resource[0] == 0 else ():
                if entry[0] == "max.message.bytes" and str(entry[1]).isdigit():
                    return int(entry[1])
    return None


def record_message(record: Any, epoch: int = 0) -> Message:
    """The MQTT message a record carries; ``position`` is (partition, offset, epoch), the
    epoch counting how often the partition's offsets went back under this sink.

    A record without the topic header gets a topic naming its partition and offset, which
    the verifier quarantines as ``bad_topic``: a poison record is kept and passed, never
    retried forever. A record with the size header carries a cut payload, quarantined as
    ``oversized`` with that size.
    """
    headers = dict(record.headers or ())
    try:
        topic = headers[TOPIC_HEADER].decode()
    except (KeyError, UnicodeDecodeError):
        topic = f"kafka:{record.topic}/{record.partition}@{record.offset}"
    try:
        received = int(headers[RECEIVED_HEADER])
    except (KeyError, ValueError):
        received = record.timestamp * 1000
    try:
        size: int | None = int(headers[SIZE_HEADER])
    except (KeyError, ValueError):
        size = None
    tp = TopicPartition(record.topic, record.partition)
    return Message(topic, record.value or b"", received, (tp, record.offset, epoch), size)


class KafkaStats:
    def __init__(self) -> None:
        self.received = 0
        self.acked = 0
        self.commits = 0
        self.commit_failures = 0
        self.rebalances = 0
        #: records fetched for partitions revoked before they reached the pipeline
        self.dropped = 0
        #: times a partition's offsets went back (the broker lost its records or the group's
        #: offsets), and acknowledgements of records read before that, not committed
        self.offset_resets = 0
        self.stale_acks = 0
        self.last_error: str | None = None


class KafkaSource(ConsumerRebalanceListener):
    """A member of the sinks' consumer group; async context manager (see the module doc)."""

    name = "kafka"

    def __init__(
        self,
        settings: SinkKafkaSettings,
        queue: asyncio.Queue[Message],
        *,
        on_assigned: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.on_assigned = on_assigned
        self.stats = KafkaStats()
        #: made when entered: aiokafka clients belong to the running event loop
        self.consumer: AIOKafkaConsumer | None = None
        self._owned: set[TopicPartition] = set()
        #: owned partitions a rebalance is taking away: still committed, no longer fetched
        self._revoking: set[TopicPartition] = set()
        #: per partition: the offset after the last record handed to the pipeline, and after
        #: the last one whose batch committed (its offset commit may have failed)
        self._handed: dict[TopicPartition, int] = {}
        self._done: dict[TopicPartition, int] = {}
        #: per partition, kept while partitions come and go: the offset of the last commit that
        #: succeeded (the group's offset never goes below it unless the broker lost it), and
        #: the epoch (see the module doc)
        self._committed: dict[TopicPartition, int] = {}
        self._epoch: dict[TopicPartition, int] = {}
        self._progress = asyncio.Event()
        self._fetching: asyncio.Task[None] | None = None

    async def __aenter__(self) -> KafkaSource:
        settings = self.settings
        self.consumer = consumer = AIOKafkaConsumer(
            **client_args(settings),
            group_id=settings.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(settings.session_timeout * 1000),
            rebalance_timeout_ms=int(settings.rebalance_timeout * 1000),
            max_poll_records=settings.fetch_records,
        )
        consumer.subscribe([settings.topic], listener=self)
        try:
            await consumer.start()
        except KafkaConnectionError as exc:
            await consumer.stop()
            raise SourceUnavailable(f"kafka {','.join(self.settings.brokers)}: {exc}") from None
        self._fetching = asyncio.create_task(self._fetch(), name="ingest-kafka-fetch")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_receiving()
        # leaves the group now, so the partitions go to the other sinks without waiting
        # for the session timeout
        if self.consumer is not None:
            await self.consumer.stop()

    async def stop_receiving(self) -> None:
        if self._fetching is not None:
            self._fetching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._fetching
            self._fetching = None

    def describe(self) -> str:
        s = self.settings
        return f"kafka {','.join(s.brokers)} topic {s.topic} group {s.group}"

    # --- fetching ---------------------------------------------------------------------------------

    async def _fetch(self) -> None:
        delay = 0.1
        while True:
            try:
                fetched = await self.consumer.getmany(timeout_ms=1000)
            except KafkaError as exc:
                self._trouble(f"fetch: {exc}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            delay = 0.1
            for tp, records in fetched.items():
                for record in records:
                    if tp not in self._owned or tp in self._revoking:
                        # revoked meanwhile: its next owner reads it
                        self.stats.dropped += 1
                        continue
                    if record.offset < max(self._handed.get(tp, 0), self._committed.get(tp, 0)):
                        self._went_back(tp, record.offset)
                    await self.queue.put(record_message(record, self._epoch.get(tp, 0)))
                    self._handed[tp] = record.offset + 1
                    self.stats.received += 1
            await self._check_watermarks()

    async def _check_watermarks(self) -> None:
        """A partition whose log ends below what this sink read or committed is a new log.

        Some brokers (Tansu) answer a fetch beyond the end of a partition with no records and
        no OffsetOutOfRange: the consumer would wait there, and skip the new log's records
        below that offset once it grows past it. Read it from its start instead.
        """
        for tp in self._owned - self._revoking:
            high = self.consumer.highwater(tp)
            if high is not None and high < max(self._handed.get(tp, 0), self._committed.get(tp, 0)):
                self._went_back(tp, high)
                await self.consumer.seek_to_beginning(tp)

    def _went_back(self, tp: TopicPartition, offset: int) -> None:
        """A record, or the end of the log, below what this sink read or committed: a new log
        under the same name."""
        read, committed = self._handed.get(tp, 0), self._committed.get(tp, 0)
        logger.error(
            "kafka: partition %d of topic %s went back to offset %d (this sink had read to "
            "%d, committed %d): the broker lost the partition's records or the group's "
            "offsets (a broker without durable storage restarted?), or they were reset. "
            "Records it lost before they were stored are gone; the gateways' chains show "
            "them as gaps",
            tp.partition, tp.topic, offset, read, committed,
        )  # fmt: skip
        self.stats.offset_resets += 1
        self.stats.last_error = f"partition {tp.partition} went back to offset {offset}"
        self._epoch[tp] = self._epoch.get(tp, 0) + 1
        self._committed.pop(tp, None)
        # what the pipeline holds of the old log is acknowledged without an offset commit
        self._handed.pop(tp, None)
        self._done.pop(tp, None)
        self._progress.set()
        self._ask_for_topic()

    def _ask_for_topic(self) -> None:
        """Ask the broker for the topic's metadata now, rather than in 5 minutes.

        A broker that forgot the topic creates it again on that request when it creates topics
        automatically (Tansu does; Kafka with ``auto.create.topics.enable``), and the group's
        offset commits work again. Tansu, restarted empty, accepts records and fetches for a
        partition of a topic it does not know but refuses their offset commits
        (UnknownTopicOrPartition), so without this the sink could not commit until the
        metadata's age ran out. aiokafka 0.14 has no public call for it: its consumer does the
        same on errors of its own.
        """
        client = getattr(self.consumer, "_client", None)
        if client is not None:
            client.force_metadata_update()

    def _trouble(self, text: str) -> None:
        if self.stats.last_error != text:
            logger.error("kafka: %s", text)
        self.stats.last_error = text

    # --- acknowledgement --------------------------------------------------------------------------

    async def ack(self, messages: Sequence[Message]) -> None:
        """Commit the offsets after ``messages``, whose batch has committed."""
        offsets: dict[TopicPartition, int] = {}
        for msg in messages:
            tp, offset, epoch = msg.position  # type: ignore[misc]
            if epoch != self._epoch.get(tp, 0):
                # read from a log the broker has lost since: its offset means nothing now
                self.stats.stale_acks += 1
                continue
            offsets[tp] = max(offsets.get(tp, 0), offset + 1)
        for tp, offset in offsets.items():
            self._done[tp] = max(self._done.get(tp, 0), offset)
        owned = {tp: offset for tp, offset in offsets.items() if tp in self._owned}
        if owned:
            epochs = {tp: self._epoch.get(tp, 0) for tp in owned}
            try:
                # aiokafka retries a commit it deems retriable without end (a topic the broker
                # forgot: UnknownTopicOrPartition); past a session timeout the group has
                # moved on anyway
                async with asyncio.timeout(self.settings.session_timeout):
                    await self.consumer.commit(owned)
            except (KafkaError, TimeoutError) as exc:
                # the records are stored: whoever reads them again finds duplicates
                self.stats.commit_failures += 1
                self._trouble(f"offset commit: {type(exc).__name__}: {exc}".rstrip(": "))
                self._ask_for_topic()
            else:
                self.stats.commits += 1
                self.stats.last_error = None
                for tp, offset in owned.items():
                    if self._epoch.get(tp, 0) == epochs[tp]:
                        self._committed[tp] = max(self._committed.get(tp, 0), offset)
        self.stats.acked += len(messages)
        self._progress.set()

    # --- rebalancing ------------------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Before the partitions go: let the pipeline commit what it holds of them."""
        revoked = list(revoked)
        if not revoked:
            return
        self.stats.rebalances += 1
        self._revoking.update(revoked)
        if self._membership_lost():
            # the group no longer knows this sink (its session expired, or the broker forgot
            # the group): the partitions may be someone else's, or their log a new one, and
            # an empty group accepts a commit from a non-member, so offsets committed now
            # could point past records of a new log. What the pipeline holds is still
            # stored; its offsets are not committed (a new epoch), and read again by the
            # next owner, whose copies are duplicates.
            logger.warning(
                "kafka: the group no longer knows this sink; no offset commit for what it "
                "holds of partitions %s", sorted(tp.partition for tp in revoked),
            )  # fmt: skip
            for tp in revoked:
                self._epoch[tp] = self._epoch.get(tp, 0) + 1
                self._handed.pop(tp, None)
                self._done.pop(tp, None)
        try:
            await asyncio.wait_for(self._drained(revoked), self.settings.rebalance_timeout / 2)
        except TimeoutError:
            left = {
                tp.partition: self._handed[tp] - self._done.get(tp, 0)
                for tp in revoked
                if self._handed.get(tp, 0) > self._done.get(tp, 0)
            }
            logger.warning(
                "rebalance: records of partitions %s not committed in time (database away?); "
                "their next owner reads them again",
                left,
            )
        self._owned.difference_update(revoked)
        self._revoking.clear()
        for tp in revoked:
            self._handed.pop(tp, None)
            self._done.pop(tp, None)
        logger.info("partitions %s revoked", sorted(tp.partition for tp in revoked))

    def _membership_lost(self) -> bool:
        """Whether the coordinator reset this member (UnknownMemberId or IllegalGeneration):
        aiokafka then forgets its member id before the rejoin calls the listener, which has
        no "partitions lost" callback of its own (aiokafka 0.14)."""
        coordinator = getattr(self.consumer, "_coordinator", None)
        return coordinator is not None and coordinator.member_id == ""

    async def _drained(self, partitions: list[TopicPartition]) -> None:
        while any(self._handed.get(tp, 0) > self._done.get(tp, 0) for tp in partitions):
            self._progress.clear()
            await self._progress.wait()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._owned = set(assigned)
        self.on_assigned()
        logger.info("partitions %s assigned", sorted(tp.partition for tp in assigned))

    # --- health -----------------------------------------------------------------------------------

    def lag(self) -> dict[TopicPartition, int]:
        """Records behind the high watermark of the last fetch, per owned partition.

        From fetch responses, not ListOffsets: some brokers answer "latest" wrongly after
        batched produces.
        """
        lags: dict[TopicPartition, int] = {}
        if self.consumer is None:
            return lags
        for tp in self._owned:
            high = self.consumer.highwater(tp)
            if high is not None:
                lags[tp] = max(0, high - self._done.get(tp, self._handed.get(tp, high)))
        return lags

    def health(self) -> dict[str, object]:
        return {
            "group": self.settings.group,
            "partitions": sorted(tp.partition for tp in self._owned),
            "lag": sum(self.lag().values()),
            "offset_resets": self.stats.offset_resets,
            "last_error": self.stats.last_error,
        }

    def metrics(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "guantong_ingest_kafka_lag_messages",
            "records behind the partition's high watermark, not yet committed by this sink",
            labels=["topic", "partition"],
        )
        for tp, value in sorted(self.lag().items()):
            lag.add_metric([tp.topic, str(tp.partition)], value)
        yield lag
        yield GaugeMetricFamily("guantong_ingest_kafka_partitions", "partitions owned",
                                value=len(self._owned))  # fmt: skip
        for name, doc, value in (
            ("kafka_commits", "offset commits after a database commit", self.stats.commits),
            ("kafka_commit_failures", "offset commits refused (the records come again)",
             self.stats.commit_failures),
            ("kafka_rebalances", "rebalances that took partitions from this sink",
             self.stats.rebalances),
            ("kafka_dropped", "records fetched for partitions revoked before use",
             self.stats.dropped),
            ("kafka_offset_resets", "times a partition's offsets went back: the broker lost "
             "its records or the group's offsets", self.stats.offset_resets),
            ("kafka_stale_acks", "records stored but read before their partition's offsets "
             "went back: no offset committed for them", self.stats.stale_acks),
        ):  # fmt: skip
            yield CounterMetricFamily(f"guantong_ingest_{name}", doc, value=value)
