"""The OPC UA connection settings: paths relative to the config, defaults, what goes together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge import OpcUa


def opcua(base: Path | None = None, **fields: Any) -> OpcUa:
    data = {"protocol": "opcua", "endpoint": "opc.tcp://plc:4840", **fields}
    return OpcUa.model_validate(data, context={"base_dir": base} if base else None)


def test_defaults_suit_a_plc_on_the_local_network() -> None:
    c = opcua()
    assert (c.mode, c.timeout, c.watchdog) == ("poll", 5.0, 5.0)
    assert (c.max_nodes_per_read, c.items_per_subscription, c.queue_size) == (1000, 1000, 1)
    assert (c.certificate, c.private_key, c.sampling_interval) == (None, None, None)
    assert c.watchdog > 1.0  # asyncua's 1 s default disconnects from slow servers


def test_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    c = opcua(
        tmp_path, security_policy="Basic256Sha256", security_mode="Sign", username="gw",
        password_file="secret.txt",  # noqa: S106 - a file name, not a password
    )  # fmt: skip
    assert c.password_file == str(tmp_path / "secret.txt")
    # a secure connection without a configured certificate gets one next to the config
    assert c.certificate == str(tmp_path / "opcua-client.der")
    assert c.private_key == str(tmp_path / "opcua-client.pem")
    mine = opcua(tmp_path, security_policy="Basic256Sha256", security_mode="SignAndEncrypt",
                 certificate="/etc/gw/cert.der", private_key="pki/key.pem")  # fmt: skip
    assert (mine.certificate, mine.private_key) == (
        "/etc/gw/cert.der",
        str(tmp_path / "pki/key.pem"),
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"certificate": "c.der"}, "certificate and private_key go together"),
        ({"security_mode": "Sign"}, "must both be None or both set"),
        ({"username": "gw"}, "username and password_file go together"),
        ({"mode": "push"}, "'poll' or 'subscribe'"),
        ({"max_nodes_per_read": 0}, "greater than or equal to 1"),
        ({"watchdog": "0s"}, "greater than zero"),
        ({"sampling": "1s"}, "Extra inputs are not permitted"),
    ],
)
def test_errors_are_raised_not_repaired(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        opcua(**fields)
