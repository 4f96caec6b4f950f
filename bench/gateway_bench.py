"""Gateway uplink throughput: prints figures and ratios, asserts nothing.

    .venv/bin/python bench/gateway_bench.py [--seconds 10] [--devices 50] [--tags 100]

Starts its own Mosquitto on a free 127.0.0.1 port, then measures in the same run:
1. baseline: a plain paho-mqtt QoS 1 loop publishing the very envelopes the gateway makes
   (in-flight window 100), i.e. what the broker and paho allow without outbox or signing;
2. the gateway pipeline (edge batches → envelopes signed → SQLite outbox → MQTT → PUBACK →
   delete): samples/s acknowledged by the broker, bytes on the wire per sample;
3. the outbox: commit rate with the broker away, then the replay rate once it is back, and
   the CPU the commit takes without and with counting samples for checkpoints.

The replay and the baseline publish the same envelopes to the same broker, so their ratio is
the cost of the outbox bookkeeping (peek, PUBACK tracking, delete). The pipeline figure is
bounded by building envelopes (sample conversion, validation, JSON, Ed25519), which the
baseline does not do. Peak RSS includes the prepared workload.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from _bench import Figures, add_json_option, start_mosquitto
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge import Batch, Quality, Sample
from gateway._envelopes import EnvelopeWriter
from gateway._outbox import Outbox
from gateway._uplink import MqttSettings, Uplink

GW = "88.709.911/gw.bench"
#: MQTT PUBLISH framing per message: fixed header, topic length, packet id (QoS 1)
MQTT_OVERHEAD = 2 + 2 + 2


def batches(devices: int, tags: int, rounds: int) -> list[Batch]:
    now = time.time_ns()
    return [
        Batch(
            f"d{d}",
            "g",
            tuple(
                Sample(f"tag{t}", float(r * tags + t) / 7, Quality.GOOD, now + r * 1_000_000)
                for t in range(tags)
            ),
        )
        for r in range(rounds)
        for d in range(devices)
    ]


async def fill(
    outbox: Outbox, work: list[Batch], devices: int, checkpoint_interval: float | None = None
) -> EnvelopeWriter:
    key = Ed25519PrivateKey.generate()
    ids = {f"d{d}": f"88.709.911/dev.{d}" for d in range(devices)}
    async with EnvelopeWriter(
        outbox, key, GW, ids, max_samples=500, max_delay=0.2,
        checkpoint_interval=checkpoint_interval,
    ) as writer:  # fmt: skip
        for i, batch in enumerate(work):
            writer.add(batch)
            if i % 50 == 0:
                await asyncio.sleep(0)  # let the committer run
    return writer


async def counting_cost(directory: Path, work: list[Batch], devices: int) -> tuple[float, float]:
    """CPU seconds of the outbox commit without and with counting for checkpoints (best of 2,
    alternating, so that a change in the machine's load hits both)."""
    cpu: dict[float | None, list[float]] = {None: [], 300.0: []}
    for i, interval in enumerate((None, 300.0, None, 300.0)):
        with Outbox(directory / f"count-{i}.db") as box:
            cpu0 = time.process_time()
            await fill(box, work, devices, interval)
            cpu[interval].append(time.process_time() - cpu0)
    return min(cpu[None]), min(cpu[300.0])


def baseline(port: int, payloads: list[tuple[str, bytes]], seconds: float) -> tuple[float, int]:
    """Messages/s of a plain QoS 1 publish loop with an in-flight window of 100."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="baseline")
    client.max_inflight_messages_set(100)
    window = threading.Semaphore(100)
    client.on_publish = lambda *_: window.release()
    client.connect("127.0.0.1", port)
    client.loop_start()
    sent = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        topic, payload = payloads[sent % len(payloads)]
        window.acquire()
        client.publish(topic, payload, qos=1)
        sent += 1
    for _ in range(100):
        window.acquire()
    elapsed = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()
    return sent / elapsed, sent


async def drain(outbox: Outbox, port: int) -> float:
    """Seconds for the uplink to deliver everything in ``outbox``."""
    uplink = Uplink(outbox, MqttSettings(host="127.0.0.1", port=port, inflight=100))
    start = time.perf_counter()
    async with uplink:
        await uplink.drained()
    return time.perf_counter() - start


async def main() -> None:  # noqa: PLR0915 - one measurement after another
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--tags", type=int, default=100)
    add_json_option(parser)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="guantong-bench-"))
    broker, port = start_mosquitto(directory, ["max_queued_messages 1000000"])
    try:
        # 3. the outbox alone: commit with the broker away, then replay
        rounds = 60
        work = batches(args.devices, args.tags, rounds)
        samples = len(work) * args.tags
        with Outbox(directory / "outbox.db") as box:
            start = time.perf_counter()
            writer = await fill(box, work, args.devices)
            commit_s = time.perf_counter() - start
            envelopes, size = box.depth()
            payloads = [(e.topic, e.payload) for e in box.peek(envelopes)]
            replay_s = await drain(box, port)
        per_sample = (size + sum(len(t) + MQTT_OVERHEAD for t, _ in payloads)) / samples

        plain, counted = await counting_cost(directory, work, args.devices)
        samples_per_envelope = samples / envelopes

        # 1. baseline: the same envelopes through a plain paho loop
        base_rate, _ = await asyncio.to_thread(baseline, port, payloads, args.seconds / 2)

        # 2. the whole pipeline, committing and publishing at once
        with Outbox(directory / "live.db") as box:
            uplink = Uplink(box, MqttSettings(host="127.0.0.1", port=port, inflight=100))
            async with uplink:
                start = time.perf_counter()
                cpu0 = time.process_time()
                writer = await fill(box, work, args.devices)
                uplink.notify()
                await uplink.drained()
                live_s = time.perf_counter() - start
                cpu = time.process_time() - cpu0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        broker.terminate()
        broker.wait()
        shutil.rmtree(directory, ignore_errors=True)

    print(f"workload: {samples:,} samples in {envelopes:,} envelopes "
          f"({samples_per_envelope:.0f} samples each), {args.devices} devices")  # fmt: skip
    print(f"bytes on the wire per sample (JSON envelope + MQTT framing): {per_sample:.1f}")
    print(f"outbox commit (sign + SQLite, broker away): {samples / commit_s:,.0f} samples/s, "
          f"{envelopes / commit_s:,.0f} envelopes/s, {size / commit_s / 1e6:.1f} MB/s")  # fmt: skip
    print(f"outbox commit CPU per 100k samples: {plain / samples * 1e5:.2f} s without checkpoint "
          f"counting, {counted / samples * 1e5:.2f} s with it (ratio {counted / plain:.2f}, "
          "best of 2 each)")  # fmt: skip
    print(f"outbox replay to the broker: {envelopes / replay_s:,.0f} envelopes/s = "
          f"{samples / replay_s:,.0f} samples/s")  # fmt: skip
    print(f"baseline, plain paho QoS 1 publish of the same envelopes: {base_rate:,.0f} msg/s = "
          f"{base_rate * samples_per_envelope:,.0f} samples/s")  # fmt: skip
    live_rate = samples / live_s
    print(f"gateway pipeline (commit + publish + PUBACK + delete): {live_rate:,.0f} samples/s, "
          f"{cpu / samples * 1e5:.2f} CPU s per 100k samples, peak RSS {rss:.0f} MB")  # fmt: skip
    print(
        f"ratio outbox replay / plain paho, same envelopes: {envelopes / replay_s / base_rate:.2f}"
    )
    print(f"writer stats: {writer.stats}")

    out = Figures("gateway")
    paho = base_rate * samples_per_envelope
    base = "plain paho QoS 1 loop, same envelopes"
    out.add("pipeline_rate", "pipeline: commit + publish + PUBACK + delete", live_rate,
            "samples/s", paho, base)  # fmt: skip
    out.add("pipeline_cpu", "pipeline CPU per 100k samples", cpu / samples * 1e5, "CPU s")
    out.add("commit_rate", "outbox commit, broker away (sign + SQLite)", samples / commit_s,
            "samples/s", paho, base)  # fmt: skip
    out.add("replay_rate", "outbox replay to the broker", samples / replay_s, "samples/s",
            paho, base)  # fmt: skip
    out.add("checkpoint_cpu", "outbox commit CPU with checkpoint counting",
            counted / samples * 1e5, "CPU s per 100k samples", plain / samples * 1e5,
            "without counting")  # fmt: skip
    out.add("wire_bytes", "bytes on the wire per sample", per_sample, "bytes")
    out.add("peak_rss", "peak RSS (with the prepared workload)", rss, "MB")
    out.write(args.json)


if __name__ == "__main__":
    asyncio.run(main())
