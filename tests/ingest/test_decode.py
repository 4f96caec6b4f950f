"""precheck without broker or database: what a decode worker hands back to ingest."""

from __future__ import annotations

import pickle

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import gateway.protocol as p
from ingest._decode import Checked, Refused, precheck, precheck_cut
from ingest._rows import PG_EPOCH_US, Packed
from ingest._store import Batch

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


def test_with_the_series_ids_of_its_device_an_envelope_comes_back_packed() -> None:
    topic, payload = message(1.5, 2, True, None, "text", -(2**53))
    ids = {f"t{i}": 100 + i for i in range(6)}
    plain = precheck(topic, payload)
    packed = precheck(topic, payload, (DEVICE, ids))
    assert isinstance(plain, Checked)
    assert isinstance(packed, Checked)
    assert packed.packed is not None
    assert packed.samples == []
    assert packed.count == 6
    assert (packed.digest, packed.canonical) == (plain.digest, plain.canonical)
    # the same rows and buckets the ingest process makes from the samples
    here = Batch()
    here.add_samples(plain.samples, ids)
    there = Batch()
    there.add_packed(pickle.loads(pickle.dumps(packed)).packed)  # noqa: S301 - our own bytes
    assert (there.data, there.rollup, there.days, there.samples, there.newest) == (
        here.data, here.rollup, here.days, here.samples, here.newest,
    )  # fmt: skip


def test_an_unknown_tag_or_another_device_leaves_the_packing_to_ingest() -> None:
    topic, payload = message(1.5, 2)
    for known in [(DEVICE, {"t0": 1}), ("88.709.911/dev.b", {"t0": 1, "t1": 2})]:
        checked = precheck(topic, payload, known)
        assert isinstance(checked, Checked)
        assert checked.packed is None
        assert len(checked.samples) == checked.count == 2


def test_packed_buckets_merge_into_a_batch_as_if_packed_there() -> None:
    ids = {"a": 1, "b": 2}
    envelopes = [
        [("a", T0, 1.0, 0), ("b", T0, None, 2), ("a", T0 + 1, -3.0, 0)],
        [("a", T0 + 2, 7.5, 0), ("b", T0 + 3, 4.0, 1), ("b", T0 + 61_000_000, "x", 0)],
        [("b", T0 + 4, None, 0), ("a", T0 + 5, False, 0)],
    ]
    here, there = Batch(), Batch()
    for samples in envelopes:
        here.add_samples(samples, ids)
        there.add_packed(Packed.of(samples, ids))
    assert (there.data, there.rollup, there.days, there.samples, there.newest) == (
        here.data, here.rollup, here.days, here.samples, here.newest,
    )  # fmt: skip
    assert here.rollup[2, T0 - PG_EPOCH_US] == [3, 1, 4.0, 4.0, 4.0]


def test_a_payload_cut_by_the_bridge_gets_the_outcome_of_the_whole_payload() -> None:
    """precheck_cut(topic, size) is precheck of the whole payload, whose size is all it knows."""
    topic, _ = message(1.5)
    spb = p.sparkplug_topic(
        "88.709.911", p.SparkplugMessageType.DDATA, p.sparkplug_edge_node(GATEWAY),
        p.sparkplug_device(DEVICE),
    )  # fmt: skip
    for topic_, size in [
        (topic, p.MAX_PAYLOAD_BYTES + 1),
        (spb, p.MAX_SPARKPLUG_BYTES + 1),
        ("gt/v1/nonsense", p.MAX_PAYLOAD_BYTES + 1),
        (p.status_topic(GATEWAY), p.MAX_PAYLOAD_BYTES + 1),
    ]:
        assert precheck_cut(topic_, size) == precheck(topic_, b" " * size), topic_
    # a Sparkplug payload within the contract that Kafka still refused: oversized all the same
    within = precheck_cut(spb, p.MAX_PAYLOAD_BYTES * 2)
    assert isinstance(within, Refused)
    assert within.reason == "oversized"
    assert "cut by the bridge" in within.detail
