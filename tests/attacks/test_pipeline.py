"""An adversary on the broker: envelopes that must not become evidence.

Two firms, each with a registered gateway and device, publish through a private Mosquitto into
a running ingest (identifier node and PostgreSQL real). Once both firms' first envelopes are
stored, each attack publishes its messages, then the honest gateway publishes its next
envelope (the canary: ingest handles messages in order, so once the canary is stored every
attack message has been decided). The store must then hold exactly the honest rows, and the
quarantine exactly the attack's messages with the expected reasons.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import gateway.protocol as p
import identifiers
from ingest import Ingest

pytestmark = pytest.mark.attack

FIRM_A, FIRM_B = "88.709.911", "88.709.912"
KILN, PRESS, FAN = f"{FIRM_A}/dev.kiln", f"{FIRM_B}/dev.press", f"{FIRM_A}/dev.fan"
T0 = 1_764_000_000_000_000
#: what a replayed, already stored envelope should become: nothing, counted as a duplicate
DUPLICATE = "absorbed as duplicate"


@dataclass
class Scene:
    """The honest parties after their first envelopes: firm A's ``gw.a`` reads the kiln,
    ``gw.fan`` the fan; firm B's ``gw.b`` reads the press."""

    a: Any  # kit.Chain
    fan: Any
    b: Any
    first_a: p.SignedEnvelope
    kit: SimpleNamespace

    def side(self) -> Any:
        """A copy of A's chain: envelopes refused before the chain check do not advance it."""
        copy = self.kit.Chain(self.a.gateway, self.a.key)
        copy.seq, copy.prev = self.a.seq, self.a.prev
        return copy


#: an attack: the messages it publishes, and the outcome expected of each
Attack = Callable[[Scene], list[tuple[str, bytes, str]]]


def other_firms_device(s: Scene) -> list[tuple[str, bytes, str]]:
    # gw.a's next envelope, edited by hand to name firm B's press (the library refuses to
    # build it); the device's topic level holds suffixes only, so no topic can name the press
    topic, raw = s.kit.message(s.side().data(KILN, [("temp", T0, 9.0)]))
    doc = json.loads(raw)
    doc["device"] = PRESS
    edited = json.dumps(doc, separators=(",", ":")).encode()
    return [
        (topic, edited, "malformed"),
        (p.data_topic(s.b.gateway, PRESS), edited, "malformed"),
        (f"gt/v1/{FIRM_A}/gw.a/data/{PRESS}", edited, "bad_topic"),
    ]


def another_gateways_device(s: Scene) -> list[tuple[str, bytes, str]]:
    # same firm, but the fan is registered as read by gw.fan
    return [(*s.kit.message(s.side().data(FAN, [("rpm", T0, 1450.0)])), "foreign_device")]


def forged_signature(s: Scene) -> list[tuple[str, bytes, str]]:
    impostor = s.kit.Chain(s.a.gateway, Ed25519PrivateKey.generate())
    impostor.seq, impostor.prev = s.a.seq, s.a.prev
    forged = impostor.data(KILN, [("temp", T0 + 1, 999.0)])
    # the same forgery in Sparkplug B, and a real signature over other content
    spb = p.encode_sparkplug(
        p.SparkplugPayload(uuid=p.SPARKPLUG_ENVELOPE_UUID, body=p.encode_json(forged))
    )
    spb_topic = p.sparkplug_topic(
        FIRM_A, p.SparkplugMessageType.DDATA, p.sparkplug_edge_node(s.a.gateway),
        p.sparkplug_device(KILN),
    )  # fmt: skip
    honest = s.kit.message(s.side().data(KILN, [("temp", T0 + 1, 20.0)]))
    swapped = honest[1].replace(b"20.0", b"999.0")
    assert swapped != honest[1]
    return [
        (*s.kit.message(forged), "bad_signature"),
        (spb_topic, spb, "bad_signature"),
        (honest[0], swapped, "bad_signature"),
    ]


def replayed_envelope(s: Scene) -> list[tuple[str, bytes, str]]:
    topic, raw = s.kit.message(s.first_a)
    return [
        (topic, raw, DUPLICATE),
        # replayed in the name of firm B's gateway: the topic names another sender
        (p.data_topic(s.b.gateway, PRESS), raw, "topic_mismatch"),
    ]


def sequence_rewind(s: Scene) -> list[tuple[str, bytes, str]]:
    # the real key, seq 1 again with new content (a cloned or reset gateway, or a stolen key)
    rewound = s.kit.Chain(s.a.gateway, s.a.key)
    return [(*s.kit.message(rewound.data(KILN, [("temp", T0, -40.0)])), "fork")]


def oversized(s: Scene) -> list[tuple[str, bytes, str]]:
    topic, raw = s.kit.message(s.side().data(KILN, [("temp", T0 + 2, 1.0)]))
    padded = raw[:-1] + b',"pad":"' + b"x" * p.MAX_PAYLOAD_BYTES + b'"}'
    many = s.side().data(KILN, [(f"t{i}", T0, i) for i in range(p.MAX_SAMPLES)])
    more = json.loads(p.encode_json(many))
    more["samples"].append(["t", T0, 1, "good"])
    return [
        (topic, padded, "oversized"),
        (topic, json.dumps(more, separators=(",", ":")).encode(), "oversized"),
    ]


def deeply_nested(s: Scene) -> list[tuple[str, bytes, str]]:
    topic, raw = s.kit.message(s.side().data(KILN, [("temp", T0 + 3, 1.0)]))
    value = b"[" * 100_000 + b"1" + b"]" * 100_000
    return [
        (topic, raw.replace(b"1.0,", value + b","), "malformed"),
        (topic, b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "malformed"),
    ]


def huge_number(s: Scene) -> list[tuple[str, bytes, str]]:
    topic, raw = s.kit.message(s.side().data(KILN, [("temp", T0 + 4, 1.0)]))
    return [
        (topic, raw.replace(b"1.0,", b"9" * 5000 + b","), "malformed"),
        (topic, raw.replace(b"1.0,", b"1e999,"), "malformed"),
        (topic, raw.replace(b"1.0,", b"NaN,"), "malformed"),
    ]


def poisoned_field_name(s: Scene) -> list[tuple[str, bytes, str]]:
    # an unknown field named with U+0000 or a lone surrogate: its refusal quotes the name
    topic, raw = s.kit.message(s.side().data(KILN, [("temp", T0 + 5, 1.0)]))
    return [
        (topic, raw[:-1] + b',"\\u0000x":1}', "malformed"),
        (topic, raw[:-1] + b',"\\ud800":1}', "malformed"),
        # an honest envelope of firm B in the same batch must still be stored
        (*s.kit.message(s.b.data(PRESS, [("f", T0 + 5, 3.0)])), "stored"),
    ]


def unknown_gateway(s: Scene) -> list[tuple[str, bytes, str]]:
    ghost = s.kit.Chain(f"{FIRM_A}/gw.ghost")
    return [(*s.kit.message(ghost.data(KILN, [("temp", T0, 1.0)])), "unknown_gateway")]


ATTACKS: dict[str, tuple[str, Attack]] = {
    "other-firm": ("gateway publishes for another firm's device", other_firms_device),
    "other-gateway": ("gateway publishes for another gateway's device", another_gateways_device),
    "forged": ("forged signature (JSON, Sparkplug B, altered value)", forged_signature),
    "replay": ("replayed envelope (verbatim, as another gateway)", replayed_envelope),
    "rewind": ("sequence rewind: seq 1 again, new content", sequence_rewind),
    # a restarted ingest knows the chain only from the store: the rewind must still be seen
    "rewind-restart": ("sequence rewind after an ingest restart", sequence_rewind),
    "oversized": ("oversized: > 1 MiB, > 10,000 samples", oversized),
    "nested": ("deeply nested JSON (100,000 levels)", deeply_nested),
    "numbers": ("5,000-digit integer, 1e999, NaN", huge_number),
    "field-name": ("field named with U+0000 / lone surrogate", poisoned_field_name),
    "ghost": ("unregistered gateway", unknown_gateway),
}


def outcome(expected: list[str]) -> str:
    return ", ".join(f"{r} ×{n}" if n > 1 else r for r, n in sorted(Counter(expected).items()))


@pytest.mark.parametrize("name", list(ATTACKS))
async def test_attack_on_the_pipeline_is_quarantined_and_stores_nothing(
    *, name: str, pg_dsn: str, broker: Any, node: identifiers.Node, register: Any,
    publisher: Any, kit: SimpleNamespace, tmp_path: Path, verdict: Any,
) -> None:  # fmt: skip
    title, attack = ATTACKS[name]
    a, fan, b = (kit.Chain(f"{FIRM_A}/gw.a"), kit.Chain(f"{FIRM_A}/gw.fan"),
                 kit.Chain(f"{FIRM_B}/gw.b"))  # fmt: skip
    await register(a, [KILN], enterprise=f"{FIRM_A}/firm")
    await register(fan, [FAN], enterprise=f"{FIRM_A}/firm")
    await register(b, [PRESS], enterprise=f"{FIRM_B}/firm")
    config = kit.ingest_config(pg_dsn, broker.port, node.url, tmp_path)
    async with contextlib.AsyncExitStack() as stack:
        ingest = await stack.enter_async_context(Ingest(config))
        await kit.wait_until(lambda: ingest.consumer.stats.subscribed)
        first_a = a.data(KILN, [("temp", T0, 21.5), ("run", T0, True)])
        for signed in (first_a, b.data(PRESS, [("f", T0, 1.25)])):
            publisher.publish(*kit.message(signed))
        await kit.wait_until(lambda: kit.count(pg_dsn, "receipt") == 2)
        await kit.wait_until(lambda: ingest.consumer.stats.acked == 2)
        samples, receipts, acked = kit.count(pg_dsn, "sample"), 2, 2
        if name.endswith("-restart"):
            await stack.aclose()
            ingest = await stack.enter_async_context(Ingest(config))
            await kit.wait_until(lambda: ingest.consumer.stats.subscribed)
            acked = 0
        duplicates = ingest.verifier.stats.duplicates

        messages = attack(Scene(a, fan, b, first_a, kit))
        honest = [m for m in messages if m[2] == "stored"]
        canary = a.data(KILN, [("temp", T0 + 60_000_000, 22.0)])
        for topic, payload, _ in [*messages, (*kit.message(canary), "stored")]:
            publisher.publish(topic, payload)
        receipts += len(honest) + 1
        await kit.wait_until(lambda: kit.count(pg_dsn, "receipt") >= receipts)
        await kit.wait_until(lambda: ingest.consumer.stats.acked == acked + len(messages) + 1)
        assert ingest.running
        duplicates = ingest.verifier.stats.duplicates - duplicates

    quarantined = [r for (r,) in kit.fetch(pg_dsn, "SELECT reason FROM quarantine ORDER BY id")]
    observed = quarantined + [DUPLICATE] * duplicates + ["stored"] * len(honest)
    expected = [m[2] for m in messages]
    leaked = kit.count(pg_dsn, "sample") - samples - len(honest) - 1
    leaked += kit.count(pg_dsn, "receipt") - receipts
    row = verdict(title, outcome(expected), outcome(observed), leaked)
    assert row.held, (expected, observed, leaked)
    details = [d for (d,) in kit.fetch(pg_dsn, "SELECT detail FROM quarantine")]
    assert all(d for d in details)  # every refusal says why
