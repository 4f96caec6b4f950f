"""``/healthz`` and Prometheus ``/metrics`` of a running ingest, on a local HTTP port.

As in the gateway, counters are read from the components' own stats at scrape time, so the
hot path pays nothing for them. ``/healthz`` answers 200 while the pipeline runs, even while
the broker or the database is away (ingest then waits and loses nothing), and 503 once it has
stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from ingest._runtime import Ingest


class _IngestCollector(Collector):
    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest

    def collect(self) -> Iterator[Metric]:
        pipe, mqtt = self.ingest.stats, self.ingest.consumer.stats
        ver = self.ingest.verifier.stats

        def gauge(name: str, doc: str, value: float) -> Metric:
            return GaugeMetricFamily(f"guantong_ingest_{name}", doc, value=value)

        def counter(name: str, doc: str, value: float) -> Metric:
            return CounterMetricFamily(f"guantong_ingest_{name}", doc, value=value)

        yield gauge("mqtt_connected", "1 while connected to the broker", mqtt.connected)
        yield counter("mqtt_connects", "successful broker connections", mqtt.connects)
        yield counter("messages_received", "MQTT messages received (with redeliveries)",
                      mqtt.received)  # fmt: skip
        yield counter("messages_acked", "messages acknowledged after their commit", mqtt.acked)
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


def create_app(ingest: Ingest, alive: Callable[[], bool]) -> Starlette:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_IngestCollector(ingest))

    async def healthz(_: Request) -> JSONResponse:
        pipe, mqtt = ingest.stats, ingest.consumer.stats
        body = {
            "status": "ok" if alive() else "stopped",
            "mqtt": {
                "connected": mqtt.connected,
                "subscribed": mqtt.subscribed,
                "last_error": mqtt.last_error,
            },
            "database": {"up": pipe.database_up, "flavour": ingest.store.flavour},
            "last_error": pipe.last_error,
            "queue": ingest.queue.qsize(),
            "committed": {"batches": pipe.batches, "rows": pipe.rows},
        }
        return JSONResponse(body, status_code=200 if alive() else 503)

    async def metrics(_: Request) -> Response:
        data = await asyncio.to_thread(generate_latest, registry)
        return Response(data, media_type="text/plain; version=0.0.4; charset=utf-8")

    return Starlette(routes=[Route("/healthz", healthz), Route("/metrics", metrics)])
