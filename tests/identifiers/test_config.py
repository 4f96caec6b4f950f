"""The node config model: the shipped example loads, mistakes fail at load time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

import identifiers

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "identifiers.example.yaml"


def load(**change: Any) -> identifiers.NodeConfig:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    data.update(change)
    return identifiers.NodeConfig.model_validate(data)


def test_example_loads() -> None:
    config = load()
    assert config.authoritative == ("88.709",)
    assert [(r.prefix, str(r.url)) for r in config.referrals] == [
        ("88.709.150", "https://id.firm-150.example.com/"),
        ("88", "https://top-level-node.example.cn/"),
    ]
    assert config.limits.batch_records == 2000


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"authoritative": []}, "at least 1 item"),
        ({"authoritative": ["88.7x9"]}, "numeric node code"),
        ({"authoritative": ["88.709", "88.709"]}, "listed twice"),
        ({"referrals": [{"prefix": "88.709", "url": "http://x"}]}, "both authoritative"),
        ({"referrals": [{"prefix": "88.710", "url": "ftp://x"}]}, "URL scheme"),
        ({"limits": {"batch_records": 2001}}, "less than or equal to 2000"),
        ({"listen": {"port": 8088, "hots": "x"}}, "Extra inputs are not permitted"),
        ({"database": {"dsn": "x", "pool_min": 4, "pool_max": 2}}, "pool_max"),
        ({"kind": "gateway"}, "identifiers"),
    ],
)
def test_mistakes_fail_at_load(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        load(**change)
