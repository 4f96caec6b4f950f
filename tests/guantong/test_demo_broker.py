"""Which MQTT broker ``guantong demo --broker auto|mosquitto|embedded`` runs, and what it says
when the one asked for is not installed (the demo itself runs in test_demo.py)."""

from __future__ import annotations

import pytest

from guantong._demo import _servers
from guantong._demo._servers import DemoError, choose_broker


def test_auto_is_mosquitto_when_installed() -> None:
    assert _servers.find_mosquitto() is not None  # scripts/setup installs it for the tests
    assert choose_broker("auto") == "mosquitto"
    assert choose_broker("embedded") == "embedded"


def test_without_mosquitto_auto_is_the_embedded_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_servers, "find_mosquitto", lambda: None)
    assert choose_broker("auto") == "embedded"
    with pytest.raises(DemoError, match=r"mosquitto is not installed \(Debian: apt-get"):
        choose_broker("mosquitto")


def test_without_either_broker_the_demo_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_servers, "find_mosquitto", lambda: None)
    monkeypatch.setattr(_servers, "embedded_broker_version", lambda: None)
    with pytest.raises(DemoError, match=r"no MQTT broker: mosquitto is not installed .* and the "
                       r"embedded broker is not installed \(scripts/setup --demo"):  # fmt: skip
        choose_broker("auto")
    with pytest.raises(DemoError, match=r"\[demo-broker\]"):
        choose_broker("embedded")
