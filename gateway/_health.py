"""``/healthz`` and Prometheus ``/metrics`` of a running gateway, on a local HTTP port.

Counters are read from the components' own stats at scrape time, so the hot path pays nothing
for them. ``/healthz`` answers 200 while the writer and the uplink run (the broker may be away:
the gateway then keeps data on disk, which is healthy), 503 once either has stopped.
"""

from __future__ import annotations

import asyncio
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
    from gateway._runtime import Gateway


class _GatewayCollector(Collector):
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    def collect(self) -> Iterator[Metric]:
        up, writer, stream = self.gw.uplink.stats, self.gw.writer.stats, self.gw.stream.stats
        box = self.gw.outbox
        envelopes, size = box.depth()

        def gauge(name: str, doc: str, value: float) -> Metric:
            return GaugeMetricFamily(f"guantong_gateway_{name}", doc, value=value)

        def counter(name: str, doc: str, value: float) -> Metric:
            return CounterMetricFamily(f"guantong_gateway_{name}", doc, value=value)

        yield gauge("uplink_connected", "1 while connected to the broker", up.connected)
        yield counter("uplink_connects", "successful broker connections", up.connects)
        yield counter("envelopes_published", "PUBLISH packets sent (with resends)", up.published)
        yield counter("envelopes_replayed", "publishes of outage backlog", up.replayed)
        yield counter("envelopes_acked", "envelopes acknowledged by the broker", up.acked)
        yield counter("envelopes_refused", "PUBACKs refusing an envelope (MQTT 5)", up.refused)
        yield gauge("envelopes_inflight", "envelopes published, awaiting PUBACK", up.inflight)
        yield counter(
            "publish_ack_seconds_sum", "time from publish to PUBACK, summed", up.ack_seconds
        )
        yield counter("publish_ack_seconds_count", "PUBACKs timed", up.acks_timed)
        yield counter("samples_read", "samples the drivers handed over", stream.samples)
        yield counter("stream_waits", "times drivers waited for a full stream", stream.waited)
        yield counter("samples_committed", "samples committed to the outbox", writer.samples)
        yield counter("envelopes_committed", "envelopes committed to the outbox", writer.envelopes)
        yield gauge("outbox_envelopes", "envelopes waiting in the outbox", envelopes)
        yield gauge("outbox_bytes", "payload bytes waiting in the outbox", size)
        yield gauge(
            "outbox_disk_full", "1 while the outbox refuses commits for want of disk", box.disk_full
        )
        yield gauge("outbox_disk_free_bytes", "free bytes on the outbox's disk", box.free_bytes())
        yield counter("losses_declared", "loss envelopes committed", writer.losses)
        yield counter("checkpoints", "checkpoint envelopes committed", writer.checkpoints)
        yield counter("commit_errors", "commits the outbox refused, retried", writer.commit_errors)
        yield counter(
            "envelopes_dropped", "envelopes dropped from a full outbox", writer.dropped_envelopes
        )
        devices = GaugeMetricFamily(
            "guantong_gateway_device_up", "1 while the device answers", labels=["device"]
        )
        for name, is_up in sorted(writer.device_up.items()):
            devices.add_metric([name], is_up)
        yield devices


def create_app(gateway: Gateway, alive: Callable[[], bool]) -> Starlette:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_GatewayCollector(gateway))

    async def healthz(_: Request) -> JSONResponse:
        envelopes, size = gateway.outbox.depth()
        body = {
            "status": "ok" if alive() else "stopped",
            "gateway": gateway.id,
            "uplink": {
                "connected": gateway.uplink.stats.connected,
                "last_error": gateway.uplink.stats.last_error,
            },
            "outbox": {
                "envelopes": envelopes,
                "bytes": size,
                "disk_full": gateway.outbox.disk_full,
            },
            "devices_down": sorted(d for d, up in gateway.writer.stats.device_up.items() if not up),
        }
        return JSONResponse(body, status_code=200 if alive() else 503)

    async def metrics(_: Request) -> Response:
        data = await asyncio.to_thread(generate_latest, registry)
        return Response(data, media_type="text/plain; version=0.0.4; charset=utf-8")

    return Starlette(routes=[Route("/healthz", healthz), Route("/metrics", metrics)])
