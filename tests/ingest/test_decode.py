"""precheck without broker or database: what a decode worker hands back to ingest."""

from __future__ import annotations

import pickle

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import gateway.protocol as p
from ingest._decode import Checked, precheck

T0 = 1_764_000_000_000_000
GATEWAY, DEVICE = "88.709.911/gw.a", "88.709.911/dev.a"


def message(*values: object) -> tuple[str, bytes]:
    samples = tuple(p.Sample(f"t{i}", T0 + i, v) for i, v in enumerate(values))
    env = p.Envelope(GATEWAY, 1, p.GENESIS, T0, DEVICE, samples)
    return p.envelope_topic(env), p.encode_json(p.sign(env, Ed25519PrivateKey.generate()))


def test_only_a_real_u0000_makes_a_text_unstorable() -> None:
    for text, has_nul in [("a\x00b", True), ("a\\u0000b", False), ("\\\x00", True), ("ok", False)]:
        checked = precheck(*message(1.5, text))
        assert isinstance(checked, Checked)
        assert checked.has_nul is has_nul, text


def test_a_checked_envelope_crosses_processes_unchanged() -> None:
    checked = precheck(*message(1.5, 2, True, None, "text", -(2**53)))
    assert isinstance(checked, Checked)
    copy = pickle.loads(pickle.dumps(checked))  # noqa: S301 - our own bytes
    assert copy == checked
    assert [type(s[2]) for s in copy.samples] == [float, int, bool, type(None), str, int]
