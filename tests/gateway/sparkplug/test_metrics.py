"""How the session turns envelope samples into metrics: datatypes from the tag config, values
the envelope had to carry as text or null, and values a driver got wrong."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import gateway.protocol as p
from edge import DataType as TagType
from gateway._outbox import Entry
from gateway._sparkplug import BdSeqStore, SparkplugDevice, SparkplugSession, tag_datatype

T = p.SparkplugDataType
GW, DEV = "88.709.911/gw.a", "88.709.911/dev.b"
TS = 1_764_000_000_000_000


def session(tmp_path: Path, *tags: tuple[str, p.SparkplugDataType]) -> SparkplugSession:
    s = SparkplugSession(
        group="g",
        gateway=GW,
        enterprise="88.709.911/firm",
        key_fingerprint="sha256:x",
        devices=[SparkplugDevice(DEV, tags)],
        bdseq=BdSeqStore(tmp_path / "bdseq"),
    )
    s.will()
    s.births()
    return s


def entry(*samples: p.Sample, seq: int = 1) -> Entry:
    env = p.Envelope(GW, seq, p.GENESIS, TS, DEV, samples)
    return Entry(seq, seq, p.envelope_topic(env), p.encode_json(p.sign(env, KEY)))


KEY = Ed25519PrivateKey.generate()


def metrics(s: SparkplugSession, e: Entry) -> tuple[p.SparkplugMetric, ...]:
    return p.decode_sparkplug(s.data(e, historical=False).payload).metrics


def test_datatypes_follow_the_tag_config() -> None:
    assert tag_datatype(TagType.INT16, transformed=False) is T.INT16
    assert tag_datatype(TagType.INT16, transformed=True) is T.DOUBLE
    assert tag_datatype(TagType.UINT64, transformed=False) is T.UINT64
    assert tag_datatype(TagType.FLOAT32, transformed=False) is T.FLOAT
    assert tag_datatype(TagType.BYTES, transformed=False) is T.STRING
    assert tag_datatype(TagType.BOOL, transformed=False) is T.BOOLEAN


def test_values_the_envelope_carries_as_text_or_null_go_back_to_their_type(
    tmp_path: Path,
) -> None:
    s = session(tmp_path, ("big", T.UINT64), ("neg", T.INT64), ("f", T.FLOAT), ("raw", T.STRING))
    got = metrics(
        s,
        entry(
            p.Sample("big", TS, str(2**64 - 1)),  # over 2**53: text in the envelope
            p.Sample("neg", TS, -(2**40)),
            p.Sample("f", TS, None, p.Quality.UNCERTAIN),  # a NaN reading
            p.Sample("raw", TS, "00ff"),  # bytes as hex
        ),
    )
    assert [m.value for m in got] == [2**64 - 1, -(2**40), None, "00ff"]
    assert [m.quality for m in got] == [None, None, p.SPARKPLUG_QUALITY_STALE, None]


def test_a_value_that_does_not_fit_its_tag_goes_out_null_and_bad_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = session(tmp_path, ("small", T.INT8), ("ok", T.DOUBLE))
    with caplog.at_level(logging.ERROR, logger="gateway._sparkplug"):
        for seq in (1, 2):
            got = metrics(s, entry(p.Sample("small", TS, 300), p.Sample("ok", TS, 1.5), seq=seq))
            assert [(m.value, m.quality) for m in got] == [
                (None, p.SPARKPLUG_QUALITY_BAD),
                (1.5, None),
            ]
    assert len([r for r in caplog.records if "does not fit" in r.message]) == 1
    # and the next birth reports what was sent, not the value that did not fit
    dbirth = p.decode_sparkplug(s.births()[1].payload)
    assert [(m.value, m.quality) for m in dbirth.metrics] == [
        (None, p.SPARKPLUG_QUALITY_BAD),
        (1.5, None),
    ]


def test_an_envelope_of_a_device_no_longer_in_the_config_still_carries_its_body(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = session(tmp_path, ("t", T.DOUBLE))
    env = p.Envelope(GW, 1, p.GENESIS, TS, "88.709.911/dev.gone", (p.Sample("t", TS, 1.0),))
    e = Entry(1, 1, p.envelope_topic(env), p.encode_json(p.sign(env, KEY)))
    with caplog.at_level(logging.ERROR, logger="gateway._sparkplug"):
        message = s.data(e, historical=True)
    assert message.topic == "spBv1.0/g/DDATA/gw.a/dev.gone"
    signed = p.decode_sparkplug_envelope(message.topic, message.payload)
    assert signed.envelope == env
    assert p.decode_sparkplug(message.payload).metrics == ()
    assert "not in the config" in caplog.text


def test_a_tag_missing_from_the_dbirth_is_left_out_of_the_metrics_not_the_body(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = session(tmp_path, ("known", T.DOUBLE))
    e = entry(p.Sample("known", TS, 1.0), p.Sample("stranger", TS, 2.0))
    with caplog.at_level(logging.ERROR, logger="gateway._sparkplug"):
        message = s.data(e, historical=True)
    payload = p.decode_sparkplug(message.payload)
    assert [(m.value, m.is_historical) for m in payload.metrics] == [(1.0, True)]
    assert payload.body == e.payload
    assert "'stranger'" in caplog.text


def test_historical_values_do_not_become_the_current_value_of_a_rebirth(tmp_path: Path) -> None:
    s = session(tmp_path, ("t", T.DOUBLE))
    s.data(entry(p.Sample("t", TS, 1.0)), historical=False)
    s.data(entry(p.Sample("t", TS - 10, 0.5), seq=2), historical=True)
    dbirth = p.decode_sparkplug(s.births()[1].payload)
    assert [(m.name, m.value, m.timestamp) for m in dbirth.metrics] == [("t", 1.0, TS // 1000)]


def test_bdseq_wraps_after_255_and_a_broken_state_file_starts_again_at_zero(
    tmp_path: Path,
) -> None:
    store = BdSeqStore(tmp_path / "bdseq")
    assert store.next() == 0
    store.store(255)
    assert store.next() == 0
    store.store(41)
    assert store.next() == 42
    store.path.write_text("garbage", encoding="ascii")
    assert store.next() == 0
