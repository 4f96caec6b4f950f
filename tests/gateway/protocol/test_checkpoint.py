"""Checkpoint envelopes (kind 3): strict validation naming the field, and every field signed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import gateway.protocol as p

GW = "88.709.911/gw.kiln-line.01"
DEV = "88.709.911/dev.kiln.01"
T0 = 1_764_000_000_000_000
MIN5 = 300_000_000


def checkpoint(**changes: Any) -> p.Checkpoint:
    fields: dict[str, Any] = {
        "start": T0,
        "end": T0 + MIN5,
        "previous": 4,
        "previous_hash": bytes(range(32)),
        "restarted": False,
        "periods": (p.Period(T0, T0 + MIN5, (p.Count(DEV, "a", 300), p.Count(DEV, "b", 1))),),
        **changes,
    }
    return p.Checkpoint(**fields)


def envelope(cp: p.Checkpoint, seq: int = 9) -> p.Envelope:
    return p.Envelope(GW, seq, p.GENESIS, T0 + MIN5 + 1, checkpoint=cp)


def test_a_checkpoint_round_trips_through_json_on_its_own_topic() -> None:
    key = Ed25519PrivateKey.generate()
    env = envelope(checkpoint())
    assert env.kind is p.Kind.CHECKPOINT
    assert env.checkpoint is not None
    assert env.checkpoint.samples == 301
    raw = p.encode_json(p.sign(env, key))
    decoded = p.decode_json(raw)
    decoded.verify(p.public_key_bytes(key))
    assert decoded.envelope == env
    topic = p.envelope_topic(env)
    assert topic == "gt/v1/88.709.911/gw.kiln-line.01/checkpoint"
    assert p.parse_topic(topic) == p.Topic("checkpoint", GW)
    p.check_topic(topic, env)
    with pytest.raises(p.TopicError):
        p.check_topic("gt/v1/88.709.911/gw.kiln-line.01/loss", env)


def test_every_count_is_signed() -> None:
    key = Ed25519PrivateKey.generate()
    signed = p.sign(envelope(checkpoint()), key)
    variants = [
        checkpoint(start=T0 - 1),
        checkpoint(end=T0 + MIN5 + 1),
        checkpoint(previous=3),
        checkpoint(previous_hash=bytes(31) + b"\x01"),
        checkpoint(restarted=True),
        checkpoint(periods=(p.Period(T0, T0 + MIN5, (p.Count(DEV, "a", 299),)),)),
        checkpoint(periods=(p.Period(T0, T0 + MIN5, (p.Count(DEV, "a", 300),)),)),
        checkpoint(periods=()),
    ]
    for variant in variants:
        with pytest.raises(p.SignatureError):
            p.SignedEnvelope(envelope(variant), signed.signature).verify(p.public_key_bytes(key))


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"end": T0 - 1}, "checkpoint.to", "outside"),
        ({"end": T0, "periods": ()}, "checkpoint.periods", "partial checkpoint holds counts"),
        ({"end": T0}, "checkpoint.periods[0].from", "outside"),  # ends after the partial's to
        ({"previous": 9}, "checkpoint.previous", "outside"),
        ({"previous": 0}, "checkpoint.previous_hash", "zeros"),
        ({"restarted": 1}, "checkpoint.restarted", "true or false"),
        ({"periods": (p.Period(T0, T0 + MIN5 + 1, (p.Count(DEV, "a", 1),)),)},
         "checkpoint.periods[0].to", "outside"),
        ({"periods": (p.Period(T0, T0 + 5, (p.Count(DEV, "a", 1),)),
                      p.Period(T0 + 4, T0 + 9, (p.Count(DEV, "a", 1),)))},
         "checkpoint.periods[1].from", "outside"),
        ({"periods": (p.Period(T0, T0 + 5, ()),)}, "checkpoint.periods[0].counts", "non-empty"),
        ({"periods": (p.Period(T0, T0 + 5, (p.Count(DEV, "b", 1), p.Count(DEV, "a", 1))),)},
         "checkpoint.periods[0].counts[1]", "sorted"),
        ({"periods": (p.Period(T0, T0 + 5, (p.Count("88.709.912/d", "a", 1),)),)},
         "checkpoint.periods[0].counts[0].device", "firm prefix"),
        ({"periods": (p.Period(T0, T0 + 5, (p.Count(DEV, "a", 0),)),)},
         "checkpoint.periods[0].counts[0].samples", "outside"),
        ({"periods": (p.Period(T0, T0 + 5, (p.Count(DEV, "a\n", 1),)),)},
         "checkpoint.periods[0].counts[0].tag", "control"),
    ],
)  # fmt: skip
def test_construction_names_the_bad_field(changes: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(p.MalformedEnvelope) as caught:
        envelope(checkpoint(**changes))
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_a_partial_checkpoint_closes_no_time_and_round_trips() -> None:
    """``from == to``: counts of periods over by ``to`` that the closing checkpoint of ``to``,
    which follows, could not hold (docs/protocol.md, "Checkpoints")."""
    key = Ed25519PrivateKey.generate()
    env = envelope(checkpoint(start=T0 + MIN5))
    assert env.checkpoint is not None
    assert env.checkpoint.partial
    assert not checkpoint().partial
    decoded = p.decode_json(p.encode_json(p.sign(env, key)))
    decoded.verify(p.public_key_bytes(key))
    assert decoded.envelope == env


def test_json_decoding_is_strict() -> None:
    raw = p.encode_json(p.sign(envelope(checkpoint()), Ed25519PrivateKey.generate()))
    doc = json.loads(raw)
    doc["checkpoint"]["extra"] = 1
    with pytest.raises(p.MalformedEnvelope, match=r"checkpoint\.extra"):
        p.decode_json(json.dumps(doc).encode())
    doc = json.loads(raw)
    doc["checkpoint"]["periods"][0]["counts"][0] = [DEV, "a"]
    with pytest.raises(p.MalformedEnvelope, match=r"periods\[0\].counts\[0\]"):
        p.decode_json(json.dumps(doc).encode())
    doc = json.loads(raw)
    doc["device"] = DEV
    with pytest.raises(p.MalformedEnvelope, match="device"):
        p.decode_json(json.dumps(doc).encode())


def test_a_checkpoint_travels_in_ndata() -> None:
    signed = p.sign(envelope(checkpoint()), Ed25519PrivateKey.generate())
    body = p.encode_json(signed)
    payload = p.encode_sparkplug(
        p.SparkplugPayload(timestamp=1, seq=1, uuid=p.SPARKPLUG_ENVELOPE_UUID, body=body)
    )
    topic = "spBv1.0/88.709.911/NDATA/gw.kiln-line.01"
    assert p.decode_sparkplug_envelope(topic, payload).envelope == signed.envelope
    with pytest.raises(p.TopicError):
        p.decode_sparkplug_envelope(topic + "/dev.kiln.01", payload)
