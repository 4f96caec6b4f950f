"""The topic scheme: one level per identifier suffix, and topics that must match the payload."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import gateway.protocol as p
import identifiers

GW = "88.709.911/gw.kiln-line.01"
T0 = 1_764_000_000_000_000


def test_topics_of_the_scheme() -> None:
    assert p.data_topic(GW, "88.709.911/dev.kiln.01") == (
        "gt/v1/88.709.911/gw.kiln-line.01/data/dev.kiln.01"
    )
    assert p.loss_topic(GW) == "gt/v1/88.709.911/gw.kiln-line.01/loss"
    assert p.status_topic(GW) == "gt/v1/88.709.911/gw.kiln-line.01/status"
    assert p.data_topic("88.709.911/gw/a", "88.709.911/line+2/#3%") == (
        "gt/v1/88.709.911/gw%2Fa/data/line%2B2%2F%233%25"
    )


def test_a_gateway_has_no_topic_for_another_firms_device() -> None:
    with pytest.raises(p.TopicError, match="own firm"):
        p.data_topic(GW, "88.709.912/dev.1")


suffixes = st.text(
    st.characters(exclude_categories=("Cs", "Cc", "Cf", "Co", "Cn", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=40,
).filter(lambda s: s.isprintable())


@given(suffixes, suffixes)
def test_every_valid_suffix_is_one_level_and_comes_back(gw_suffix: str, dev_suffix: str) -> None:
    try:
        gateway = str(identifiers.Identifier.under("88.709.911", gw_suffix))
        device = str(identifiers.Identifier.under("88.709.911", dev_suffix))
    except identifiers.IdentifierError:
        return
    topic = p.data_topic(gateway, device)
    assert len(topic.split("/")) == 6
    assert "+" not in topic
    assert "#" not in topic
    assert p.parse_topic(topic) == p.Topic("data", gateway, device)


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("spBv1.0/x/NDATA/y", "not under"),
        ("gt/v1/88.709.911/gw", "not under"),
        ("gt/v1/88.709.911/gw/data", "unknown kind"),
        ("gt/v1/88.709.911/gw/data/a/b", "unknown kind"),
        ("gt/v1/88.709.911/gw/status/x", "unknown kind"),
        ("gt/v1/88.709.911/gw/config", "unknown kind"),
        ("gt/v1/89.709.911/gw/loss", "must start with '88'"),
        ("gt/v1/88.709.911/gw%2/loss", "bad escape"),
        ("gt/v1/88.709.911/gw%41/loss", "bad escape"),
        ("gt/v1/88.709.911/%2E%2E/loss", "bad escape"),
        ("gt/v1/88.709.911/../loss", "'..'"),
    ],
)
def test_topics_outside_the_scheme_are_refused(topic: str, reason: str) -> None:
    with pytest.raises(p.TopicError, match=reason):
        p.parse_topic(topic)


def test_the_topic_must_match_the_envelope() -> None:
    env = p.Envelope(GW, 1, p.GENESIS, T0, "88.709.911/dev.1", (p.Sample("a", T0, 1.0),))
    p.check_topic("gt/v1/88.709.911/gw.kiln-line.01/data/dev.1", env)
    for wrong in (
        "gt/v1/88.709.911/gw.kiln-line.01/data/dev.2",
        "gt/v1/88.709.911/gw.other/data/dev.1",
        "gt/v1/88.709.911/gw.kiln-line.01/loss",
    ):
        with pytest.raises(p.TopicError, match="belongs on"):
            p.check_topic(wrong, env)
    loss = p.Envelope(GW, 9, p.GENESIS, T0, loss=p.Loss(2, 8, 0, "outbox full"))
    p.check_topic("gt/v1/88.709.911/gw.kiln-line.01/loss", loss)
    with pytest.raises(p.TopicError):
        p.check_topic("gt/v1/88.709.911/gw.kiln-line.01/status", loss)
