"""Where the pipeline's messages come from: the MQTT consumer or a Kafka consumer group.

A source puts :class:`~ingest._verify.Message` s into the pipeline's bounded queue, each with
a ``position`` of its own, and acknowledges them only when the pipeline says their batch has
committed: MQTT by a manual PUBACK, Kafka by committing the offsets after them. Everything
else (decoding, verification, the chains, the store, quarantine) is the same pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, Self

from prometheus_client.core import Metric

from ingest._verify import Message


class SourceStats(Protocol):
    received: int
    acked: int


class Source(Protocol):
    """An async context manager: entered before the pipeline starts, left after it stopped."""

    #: ``mqtt`` or ``kafka``: the section of ``/healthz`` and the log name
    name: str
    stats: SourceStats

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...

    def describe(self) -> str:
        """Where messages come from, for the log line at start."""
        ...

    async def stop_receiving(self) -> None:
        """Take no more messages; called before the pipeline writes its last batch."""
        ...

    async def ack(self, messages: Sequence[Message]) -> None:
        """Acknowledge ``messages`` upstream: their batch has committed."""
        ...

    def health(self) -> dict[str, object]:
        """The source's section of ``/healthz``."""
        ...

    def metrics(self) -> Iterator[Metric]:
        """The source's own Prometheus metrics, besides received and acknowledged."""
        ...
