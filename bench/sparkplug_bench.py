"""Sparkplug B cost per sample: prints figures, asserts nothing.

    .venv/bin/python bench/sparkplug_bench.py [--envelopes 400] [--samples 500]

Measures, on one core and without a broker:
1. the gateway side: ``SparkplugSession.data`` turning a committed JSON envelope into a DDATA
   (JSON parse, a metric per sample, protobuf encoding), which runs on the uplink's event
   loop thread at publish time;
2. the ingest side: ``decode_sparkplug_envelope`` (protobuf parsing, then the strict JSON
   envelope decoder on ``body``), the JSON decoder alone on the same envelope, so the
   difference is what Sparkplug adds, and ``decode_sparkplug``, which also checks every
   metric (what a host application that reads the metrics pays);
3. bytes per sample of the JSON envelope and of the DDATA that carries it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _bench import Figures, add_json_option
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import gateway.protocol as p
from gateway._outbox import Entry
from gateway._sparkplug import BdSeqStore, SparkplugDevice, SparkplugSession

GW, DEV = "88.709.911/gw.bench", "88.709.911/dev.bench"
T0 = 1_764_000_000_000_000


def rate(label: str, seconds: float, envelopes: int, samples: int) -> float:
    print(
        f"{label:<44} {seconds / envelopes * 1e3:7.2f} ms/envelope"
        f" {envelopes * samples / seconds:12,.0f} samples/s"
    )
    return envelopes * samples / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envelopes", type=int, default=400)
    parser.add_argument("--samples", type=int, default=500)
    add_json_option(parser)
    args = parser.parse_args()
    n, size = args.envelopes, args.samples

    tags = tuple((f"zone{i:03d}_temp", p.SparkplugDataType.DOUBLE) for i in range(size))
    envelope = p.Envelope(
        GW,
        1,
        p.GENESIS,
        T0,
        DEV,
        tuple(
            p.Sample(tag, T0 + i, 20 + i * 0.25, p.Quality.GOOD) for i, (tag, _) in enumerate(tags)
        ),
    )
    raw = p.encode_json(p.sign(envelope, Ed25519PrivateKey.generate()))
    entry = Entry(1, 1, p.envelope_topic(envelope), raw)
    with tempfile.TemporaryDirectory() as tmp:
        session = SparkplugSession(
            group="88.709.911",
            gateway=GW,
            enterprise="88.709.911/firm",
            key_fingerprint="sha256:bench",
            devices=[SparkplugDevice(DEV, tags)],
            bdseq=BdSeqStore(Path(tmp) / "bdseq"),
        )
        session.will()
        session.births()
        start = time.perf_counter()
        for _ in range(n):
            message = session.data(entry, historical=False)
        to_ddata = rate("gateway: JSON envelope -> DDATA", time.perf_counter() - start, n, size)

    start = time.perf_counter()
    for _ in range(n):
        p.decode_sparkplug_envelope(message.topic, message.payload)
    from_ddata = rate("ingest: DDATA -> signed envelope", time.perf_counter() - start, n, size)
    start = time.perf_counter()
    for _ in range(n):
        p.decode_sparkplug(message.payload)
    host = rate("host: DDATA metrics, every one checked", time.perf_counter() - start, n, size)
    start = time.perf_counter()
    for _ in range(n):
        p.decode_json(raw)
    json_alone = rate(
        "ingest: JSON envelope alone (for comparison)", time.perf_counter() - start, n, size
    )
    print(
        f"bytes per sample: JSON envelope {len(raw) / size:.1f},"
        f" DDATA {len(message.payload) / size:.1f} (the envelope in body plus its metrics)"
    )
    out = Figures("sparkplug")
    base = "strict JSON envelope decoder alone"
    out.add("to_ddata", "gateway: JSON envelope to DDATA", to_ddata, "samples/s", json_alone, base)
    out.add("from_ddata", "ingest: DDATA to signed envelope", from_ddata, "samples/s",
            json_alone, base)  # fmt: skip
    out.add("host_decode", "host: DDATA metrics, every one checked", host, "samples/s",
            json_alone, base)  # fmt: skip
    out.add("ddata_bytes", "DDATA bytes per sample", len(message.payload) / size, "bytes",
            len(raw) / size, "JSON envelope bytes per sample")  # fmt: skip
    out.write(args.json)


if __name__ == "__main__":
    main()
