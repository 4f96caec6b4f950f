"""The ingest config: the example file loads, mistakes are refused, and the CLI migrates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _services import free_port

from guantong import _configfile
from ingest import BridgeConfig, IngestConfig, SinkConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "ingest.example.yaml"


def test_the_example_config_loads() -> None:
    config = _configfile.load(EXAMPLE, "ingest")
    assert isinstance(config, IngestConfig)
    assert config.mqtt.port == 1883
    assert config.mqtt.password_file == EXAMPLE.parent / "ingest.password"
    assert config.batch.max_delay == 0.2
    assert config.database.compress_after == 7 * 86400
    assert config.health is not None
    assert config.health.address == ("127.0.0.1", 9109)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mqtt": {"brokr": "mqtt://x"}}, "brokr"),
        ({"mqtt": {"broker": "mqtts://x:8883"}}, "tls section"),
        ({"mqtt": {"broker": "http://x"}}, "mqtt://host:port"),
        ({"batch": {"max_delay": "soon"}}, "not a duration"),
        ({"identifiers": {"node": "ftp://x"}}, "http"),
        ({"mqtt": {"password_file": "p"}}, "needs a username"),
        ({"mqtt": {"protocol": "3"}}, "'3.1.1' or '5'"),
    ],
)
def test_mistakes_are_refused_naming_the_field(
    tmp_path: Path, change: dict[str, dict[str, str]], message: str
) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    for section, fields in change.items():
        doc[section] = {k: v for k, v in doc[section].items() if k not in ("username",)}
        doc[section].update(fields)
    path = tmp_path / "ingest.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(_configfile.ConfigFileError, match=message):
        _configfile.load(path, "ingest")


def test_mqtt_3_1_1_refuses_the_mqtt_5_settings_instead_of_ignoring_them(tmp_path: Path) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    doc["mqtt"]["protocol"] = "3.1.1"  # the example sets session_expiry and receive_maximum
    path = tmp_path / "ingest.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(
        _configfile.ConfigFileError, match="receive_maximum, session_expiry: MQTT 5 only"
    ):
        _configfile.load(path, "ingest")


def test_mqtt_3_1_1_without_mqtt_5_settings_loads(tmp_path: Path) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    for mqtt5 in ("session_expiry", "receive_maximum"):
        del doc["mqtt"][mqtt5]
    doc["mqtt"]["protocol"] = "3.1.1"
    path = tmp_path / "ingest.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    config = _configfile.load(path, "ingest")
    assert isinstance(config, IngestConfig)
    assert config.mqtt.protocol == "3.1.1"
    assert IngestConfig.model_fields["mqtt"].default.protocol == "5"


def test_a_bridge_refuses_mqtt_3_1_1_for_its_shared_subscription(tmp_path: Path) -> None:
    doc = yaml.safe_load((EXAMPLE.parent / "ingest-bridge.example.yaml").read_text("utf-8"))
    for mqtt5 in ("session_expiry", "receive_maximum"):
        del doc["mqtt"][mqtt5]
    doc["mqtt"]["protocol"] = "3.1.1"
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(_configfile.ConfigFileError, match=r"shared subscription .*use protocol 5"):
        _configfile.load(path, "ingest-bridge")


def test_guantong_ingest_migrate_applies_once(pg_dsn: str, tmp_path: Path) -> None:
    path = tmp_path / "ingest.yaml"
    path.write_text(
        yaml.safe_dump({"kind": "ingest", "database": {"dsn": pg_dsn},
                        "identifiers": {"node": "http://127.0.0.1:8088"}}),
        encoding="utf-8",
    )  # fmt: skip
    argv = [sys.executable, "-m", "guantong", "ingest", "migrate", "-c", str(path)]
    first = subprocess.run(argv, capture_output=True, text=True, check=True)
    assert json.loads(first.stdout) == {"applied": [1, 2]}
    again = subprocess.run(argv, capture_output=True, text=True, check=True)
    assert json.loads(again.stdout) == {"applied": []}


def test_guantong_ingest_migrate_without_a_database_exits_3(tmp_path: Path) -> None:
    path = tmp_path / "ingest.yaml"
    path.write_text(
        yaml.safe_dump({"kind": "ingest",
                        "database": {"dsn": "host=127.0.0.1 port=1 connect_timeout=2"},
                        "identifiers": {"node": "http://127.0.0.1:8088"}}),
        encoding="utf-8",
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "guantong", "ingest", "migrate", "-c", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 3
    assert "error: database" in done.stderr


def test_the_kafka_example_configs_load() -> None:
    sink = _configfile.load(EXAMPLE.parent / "ingest-sink.example.yaml", "ingest-sink")
    assert isinstance(sink, SinkConfig)
    assert sink.kafka.brokers == ["kafka-1:9092", "kafka-2:9092", "kafka-3:9092"]
    assert sink.kafka.rebalance_timeout == 30.0
    assert sink.batch.max_delay == 0.2
    bridge = _configfile.load(EXAMPLE.parent / "ingest-bridge.example.yaml", "ingest-bridge")
    assert isinstance(bridge, BridgeConfig)
    assert bridge.mqtt.share_group == "guantong-bridge"
    assert bridge.kafka.linger == 0.005
    assert bridge.kafka.idempotent
    # every payload the contract allows (Sparkplug B: 4 MiB) fits with topic, key and headers
    assert bridge.kafka.max_request_size == 4 * 1024 * 1024 + 64 * 1024
    assert bridge.health is not None
    assert bridge.health.address == ("127.0.0.1", 9110)


@pytest.mark.parametrize(
    ("kind", "change", "message"),
    [
        ("ingest-sink", {"kafka": {"brokers": ["kafka-1"]}}, "host:port"),
        ("ingest-sink", {"kafka": {"brokers": []}}, "at least 1"),
        ("ingest-sink", {"kafka": {"topic": "a/b"}}, "pattern"),
        ("ingest-bridge", {"mqtt": {"share_group": "a/b"}}, "pattern"),
        ("ingest-bridge", {"kafka": {"linger": "soon"}}, "not a duration"),
        ("ingest-bridge", {"mqtt": {"protocol": "3.1.1"}}, "MQTT 5 only"),
        # a record cut to the 64 KiB quarantine keeps, with a 64 KiB topic, must still fit
        ("ingest-bridge", {"kafka": {"max_request_size": "255KiB"}}, "max_request_size"),
        ("ingest-bridge", {"kafka": {"max_request_size": "65MiB"}}, "max_request_size"),
        ("ingest-bridge", {"kafka": {"max_request_size": "lots"}}, "a size is a number"),
    ],
)
def test_kafka_config_mistakes_are_refused_naming_the_field(
    tmp_path: Path, kind: str, change: dict[str, dict[str, object]], message: str
) -> None:
    doc = yaml.safe_load((EXAMPLE.parent / f"{kind}.example.yaml").read_text(encoding="utf-8"))
    for section, fields in change.items():
        doc[section].update(fields)
    path = tmp_path / "kafka.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    with pytest.raises(_configfile.ConfigFileError, match=message):
        _configfile.load(path, kind)


@pytest.mark.parametrize("kind", ["ingest-sink", "ingest-bridge"])
def test_guantong_ingest_sink_and_bridge_without_a_kafka_broker_exit_3(
    pg_dsn: str, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "kafka.yaml"
    doc: dict[str, object] = {"kind": kind, "kafka": {"brokers": [f"127.0.0.1:{free_port()}"]},
                              "health": None}  # fmt: skip
    if kind == "ingest-sink":
        doc |= {"database": {"dsn": pg_dsn}, "identifiers": {"node": "http://127.0.0.1:8088"}}
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "guantong", "ingest", kind.removeprefix("ingest-"), "-c", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 3, done.stderr
    assert "error: kafka 127.0.0.1:" in done.stderr
