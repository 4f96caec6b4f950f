"""``/healthz`` and Prometheus ``/metrics`` of a running ingest or bridge, on a local HTTP port.

As in the gateway, counters are read from the components' own stats at scrape time, so the
hot path pays nothing for them. ``/healthz`` answers 200 while the pipeline runs, even while
the broker or the database is away (ingest then waits and loses nothing), and 503 once it has
stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from ingest._bridge import Bridge
    from ingest._runtime import Ingest


class _IngestCollector(Collector):
    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    def collect(self) -> Iterator[Metric]:
        pipe, source = self.ingest.stats, self.ingest.consumer
        ver = self.ingest.verifier.stats

        def gauge(name: str, doc: str, value: float) -> Metric:
            return GaugeMetricFamily(f"guantong_ingest_{name}", doc, value=value)

        def counter(name: str, doc: str, value: float) -> Metric:
            return CounterMetricFamily(f"guantong_ingest_{name}", doc, value=value)

        yield from source.metrics()
        yield counter("messages_received", "messages received (with redeliveries)",
                      source.stats.received)  # fmt: skip
        yield counter("messages_acked", "messages acknowledged after their commit",
                      source.stats.acked)  # fmt: skip
        yield counter("messages_committed", "messages whose batch committed", pipe.messages)
        yield counter("envelopes_accepted", "envelopes verified and stored", ver.accepted)
        yield counter("envelopes_duplicate", "redelivered envelopes absorbed", ver.duplicates)
        yield counter("status_messages", "gateway status messages (not stored)", ver.ignored)
        yield counter("rows_inserted", "sample rows inserted", pipe.rows)
        yield counter("batches", "batches committed", pipe.batches)
        yield counter("batches_with_conflicts", "batches that met stored rows",
                      pipe.conflict_batches)  # fmt: skip
        yield counter("commit_seconds_sum", "time writing and committing batches",
                      pipe.commit_seconds)  # fmt: skip
        yield counter("commit_seconds_count", "batches timed", pipe.batches)
        yield counter("write_retries", "batch writes retried (database away)", pipe.write_retries)
        yield gauge("database_up", "1 unless the last database operation failed",
                    pipe.database_up)  # fmt: skip
        yield gauge("queue_messages", "messages received, waiting for verification",
                    self.ingest.queue.qsize())  # fmt: skip
        yield gauge("lag_seconds", "receipt of the oldest message of the last batch to its commit",
                    pipe.lag_seconds)  # fmt: skip
        newest = pipe.newest_sample / 1e6 if pipe.newest_sample else 0.0
        yield gauge("newest_sample_age_seconds", "now minus the newest committed sample time",
                    time.time() - newest if newest else 0.0)  # fmt: skip
        events = CounterMetricFamily(
            "guantong_ingest_connectivity_events", "chain events recorded", labels=["kind"]
        )
        for kind, value in (
            ("gap", ver.gaps),
            ("loss", ver.losses),
            ("chain_break", ver.chain_breaks),
        ):
            events.add_metric([kind], value)
        yield events
        quarantine = CounterMetricFamily(
            "guantong_ingest_quarantined", "messages put in quarantine", labels=["reason"]
        )
        for reason, value in sorted(ver.quarantined.items()):
            quarantine.add_metric([reason], value)
        yield quarantine


class _BridgeCollector(Collector):
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    def collect(self) -> Iterator[Metric]:
        bridge, mqtt = self.bridge.stats, self.bridge.consumer
        yield from mqtt.metrics()
        for name, doc, value in (
            ("messages_received", "MQTT messages received (with redeliveries)",
             mqtt.stats.received),
            ("messages_produced", "messages Kafka acknowledged (then acknowledged to MQTT)",
             bridge.produced),
            ("produce_retries", "produces that failed and were sent again", bridge.retries),
            ("messages_cut", "messages over what Kafka takes, forwarded cut to their first "
             "64 KiB with their size (the sink quarantines them as oversized)", bridge.cut),
        ):  # fmt: skip
            yield CounterMetricFamily(f"guantong_ingest_bridge_{name}", doc, value=value)
        yield GaugeMetricFamily(
            "guantong_ingest_bridge_kafka_up", "1 unless the last produce failed",
            value=bridge.kafka_up,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "guantong_ingest_bridge_pending_messages",
            "messages received and not yet acknowledged by Kafka",
            value=self.bridge.pending(),
        )


def _ingest_health(ingest: Ingest, alive: bool) -> dict[str, Any]:
    pipe, source = ingest.stats, ingest.consumer
    return {
        "status": "ok" if alive else "stopped",
        source.name: source.health(),
        "database": {"up": pipe.database_up, "flavour": ingest.store.flavour},
        "last_error": pipe.last_error,
        "queue": ingest.queue.qsize(),
        "committed": {"batches": pipe.batches, "rows": pipe.rows},
    }


def _bridge_health(bridge: Bridge, alive: bool) -> dict[str, Any]:
    s = bridge.stats
    return {
        "status": "ok" if alive else "stopped",
        "mqtt": bridge.consumer.health(),
        "kafka": {"up": s.kafka_up, "last_error": s.last_error},
        "pending": bridge.pending(),
        "produced": s.produced,
        "cut": s.cut,
    }


def create_app(ingest: Ingest, alive: Callable[[], bool]) -> Starlette:
    """The endpoints of a running ingest (``ingest run`` or ``ingest sink``)."""
    return _app(_IngestCollector(ingest), lambda: _ingest_health(ingest, alive()))


def create_bridge_app(bridge: Bridge, alive: Callable[[], bool]) -> Starlette:
    return _app(_BridgeCollector(bridge), lambda: _bridge_health(bridge, alive()))


def _app(collector: Collector, health: Callable[[], dict[str, Any]]) -> Starlette:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)

    async def healthz(_: Request) -> JSONResponse:
        body = health()
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    async def metrics(_: Request) -> Response:
        data = await asyncio.to_thread(generate_latest, registry)
        return Response(data, media_type="text/plain; version=0.0.4; charset=utf-8")

    return Starlette(routes=[Route("/healthz", healthz), Route("/metrics", metrics)])
