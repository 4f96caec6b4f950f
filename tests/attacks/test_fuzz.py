"""Fuzzing: mutated valid envelopes against the decoders, and a batch of them into ingest.

The decoders (``gateway.protocol``'s JSON and Sparkplug B decoders, and ``precheck``, what
ingest's decode workers run on every message) may only refuse a mutated payload with a
``ProtocolError`` or a quarantine reason, never raise anything else; and no mutation may turn
into an envelope that verifies under the gateway's key with content the gateway never signed.
``GUANTONG_FUZZ_EXAMPLES`` sets the number of payloads (default 300; ``scripts/attacks``
runs 100,000). Then a seeded batch of such payloads goes through Mosquitto into a running
ingest: each one ends in quarantine, no sample is stored, ingest stays healthy.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from attacks._mutations import mutate
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gateway.protocol as p
import identifiers
from ingest import REASONS, Ingest
from ingest._decode import Checked, Refused, precheck

pytestmark = pytest.mark.attack

EXAMPLES = int(os.environ.get("GUANTONG_FUZZ_EXAMPLES", "300"))
#: payloads published into a running ingest (a QoS 1 round trip each)
PIPELINE_BATCH = min(EXAMPLES, 300)

FIRM = "88.709.911"
GATEWAY, DEVICE = f"{FIRM}/gw.fuzz", f"{FIRM}/dev.fuzz"
T0 = 1_764_000_000_000_000
KEY = Ed25519PrivateKey.generate()
TAGS = ("temp", "run", "mode", "count", "note")


def _bases() -> list[p.SignedEnvelope]:
    values: list[Any] = [21.5, True, "auto", -(2**53), None]
    data = [
        p.Envelope(GATEWAY, seq, p.GENESIS, T0 + seq, DEVICE, tuple(
            p.Sample(tag, T0 + seq * 1000 + i, values[(i + seq) % 5], p.Quality(seq % 3))
            for i, tag in enumerate(TAGS)))
        for seq in (1, 2, 3)
    ]  # fmt: skip
    loss = p.Envelope(GATEWAY, 4, data[-1].digest, T0 + 4, loss=p.Loss(2, 3, 10, "outbox full"))
    return [p.sign(env, KEY) for env in (*data, loss)]


BASES = _bases()
CANONICAL = {signed.envelope.canonical for signed in BASES}
#: Sparkplug B topics of a data envelope (DDATA, the device's) and of a loss (NDATA, the node's)
SPB_DATA = p.sparkplug_topic(
    FIRM, p.SparkplugMessageType.DDATA, p.sparkplug_edge_node(GATEWAY), p.sparkplug_device(DEVICE)
)
SPB_NODE = p.sparkplug_topic(FIRM, p.SparkplugMessageType.NDATA, p.sparkplug_edge_node(GATEWAY))


def spb_topic(signed: p.SignedEnvelope) -> str:
    return SPB_DATA if signed.envelope.device else SPB_NODE


def in_sparkplug(body: bytes) -> bytes:
    return p.encode_sparkplug(
        p.SparkplugPayload(timestamp=1, seq=0, uuid=p.SPARKPLUG_ENVELOPE_UUID, body=body)
    )


def prechecks() -> list[Callable[[str, bytes], object]]:
    """Ingest's decode entry points: ``precheck``, and, where it takes the device's known
    series (``known``), its one-pass fast path too. Adapt here if the entry point changes."""
    calls: list[Callable[[str, bytes], object]] = [precheck]
    if "known" in inspect.signature(precheck).parameters:
        series = {tag: i + 1 for i, tag in enumerate(TAGS)}
        calls.append(lambda topic, payload: precheck(topic, payload, (DEVICE, series)))  # type: ignore[call-arg]
    return calls


PRECHECKS = prechecks()


def test_the_unmutated_envelopes_pass_every_decoder() -> None:
    """Without this, every refusal below could be the base's fault, not the mutation's."""
    for signed in BASES:
        raw = p.encode_json(signed)
        topic = p.envelope_topic(signed.envelope)
        assert p.decode_json(raw).envelope.canonical == signed.envelope.canonical
        wrapped = p.decode_sparkplug_envelope(spb_topic(signed), in_sparkplug(raw))
        assert wrapped.envelope.canonical == signed.envelope.canonical
        for check in PRECHECKS:  # also teaches the fast path these tags, as ingest would
            checked = check(topic, raw)
            assert isinstance(checked, Checked)
            assert checked.canonical == signed.envelope.canonical


def refused_or_authentic(result: object, outcomes: Counter[str]) -> None:
    """A precheck result is a refusal with a known reason, or an envelope that verifies only
    if it is one the gateway signed."""
    if isinstance(result, Refused):
        assert result.reason in REASONS, result
        outcomes[result.reason] += 1
        return
    assert isinstance(result, Checked), result
    try:
        result.verify(KEY.public_key())
    except p.SignatureError:
        outcomes["bad_signature"] += 1  # what the verifier then quarantines it for
        return
    assert result.canonical in CANONICAL, "a mutation verified with unsigned content"
    # the mutation hit only what the signature does not cover (a Sparkplug B timestamp)
    outcomes["intact"] += 1


def decoded_or_refused(decode: Callable[[], p.SignedEnvelope]) -> None:
    try:
        signed = decode()
    except p.ProtocolError:
        return
    with contextlib.suppress(p.SignatureError):
        signed.verify(KEY.public_key())
        assert signed.envelope.canonical in CANONICAL, "a mutation verified with unsigned content"


#: what precheck made of the fuzzed payloads, and how many examples ran and crashed
OUTCOMES: Counter[str] = Counter()
RUNS: Counter[str] = Counter()


@pytest.mark.timeout(max(300, EXAMPLES // 20))  # 100,000 payloads take minutes, not seconds
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.sampled_from(BASES), st.randoms(use_true_random=False), st.booleans())
def test_mutated_envelopes_are_refused_by_every_decoder_and_never_crash_them(
    base: p.SignedEnvelope, rnd: random.Random, mutate_protobuf: bool
) -> None:
    try:
        fuzz_once(base, rnd, mutate_protobuf)
    except Exception:  # not hypothesis' own BaseExceptions for examples it abandons
        RUNS["failed"] += 1
        raise
    RUNS["examples"] += 1


def fuzz_once(base: p.SignedEnvelope, rnd: random.Random, mutate_protobuf: bool) -> None:
    _, raw = mutate(p.encode_json(base), rnd)
    topic = p.envelope_topic(base.envelope)
    decoded_or_refused(lambda: p.decode_json(raw))
    for check in PRECHECKS:
        refused_or_authentic(check(topic, raw), OUTCOMES)
    # the same bytes as the body of a Sparkplug B payload, or the protobuf itself mutated
    topic = spb_topic(base)
    spb = (
        mutate(in_sparkplug(p.encode_json(base)), rnd)[1] if mutate_protobuf else in_sparkplug(raw)
    )
    decoded_or_refused(lambda: p.decode_sparkplug_envelope(topic, spb))
    with contextlib.suppress(p.ProtocolError):
        p.decode_sparkplug(spb)
    for check in PRECHECKS:
        refused_or_authentic(check(topic, spb), OUTCOMES)


def test_fuzz_outcomes_are_reported(verdict: Any) -> None:
    """The table's row for the decoder fuzz above, which pytest runs before it (file order)."""
    if not RUNS["examples"] + RUNS["failed"]:
        pytest.skip("the decoder fuzz did not run in this session")
    top = ", ".join(f"{r} {n}" for r, n in OUTCOMES.most_common(3))
    failed = RUNS["failed"]
    row = verdict(
        f"{RUNS['examples']:,} fuzzed payloads → 3 decoders, JSON and Sparkplug B",
        "refused, no crash",
        f"{failed} crashes or forgeries; {top}…",
        0,
        as_expected=failed == 0,
    )
    assert row.held


async def test_a_fuzzed_batch_through_mosquitto_all_ends_in_quarantine(
    *, pg_dsn: str, broker: Any, node: identifiers.Node, register: Any, publisher: Any,
    kit: SimpleNamespace, tmp_path: Path, verdict: Any,
) -> None:  # fmt: skip
    chain = kit.Chain(GATEWAY, KEY)
    await register(chain, [DEVICE])
    rnd = random.Random(11)  # noqa: S311 - a reproducible batch, not a secret
    canary = chain.data(DEVICE, [("temp", T0, 1.0)])
    bases = [p.encode_json(chain.data(DEVICE, [("temp", T0 + i, 2.0)])) for i in range(1, 4)]
    batch = [mutate(rnd.choice(bases), rnd)[1] for _ in range(PIPELINE_BATCH)]
    topic = p.data_topic(GATEWAY, DEVICE)
    config = kit.ingest_config(pg_dsn, broker.port, node.url, tmp_path, decode_workers=1)
    async with Ingest(config) as ingest:
        await kit.wait_until(lambda: ingest.consumer.stats.subscribed)
        publisher.publish(*kit.message(canary))
        await kit.wait_until(lambda: kit.count(pg_dsn, "receipt") == 1)
        samples = kit.count(pg_dsn, "sample")
        for payload in batch:
            publisher.publish(topic, payload)
        await kit.wait_until(lambda: kit.count(pg_dsn, "quarantine") == len(batch), within=60)
        await kit.wait_until(lambda: ingest.consumer.stats.acked == len(batch) + 1)
        assert ingest.running
        assert ingest.health is not None
        async with httpx.AsyncClient(base_url=ingest.health.url) as http:
            health = (await http.get("/healthz")).json()
    leaked = kit.count(pg_dsn, "sample") - samples
    reasons = Counter(r for (r,) in kit.fetch(pg_dsn, "SELECT reason FROM quarantine"))
    top = ", ".join(f"{r} {n}" for r, n in reasons.most_common(3))
    row = verdict(
        f"{len(batch)} fuzzed payloads → Mosquitto → ingest",
        f"{len(batch)} quarantined, each for its own fault",
        f"{reasons.total()} quarantined: {top}…",
        leaked,
        # store_refused would mean one payload made the database refuse its whole batch
        as_expected=reasons.total() == len(batch) and not reasons["store_refused"],
    )
    assert row.held, reasons
    assert kit.count(pg_dsn, "receipt") == 1
    assert health["database"]["up"]
