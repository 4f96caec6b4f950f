"""The demo's embedded MQTT broker as a test server: amqtt (MQTT 3.1.1), run exactly as the
demo runs it (``guantong/_demo/_amqtt.py`` with the same kind of config), on a free port."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import yaml

from ._base import ServiceError, accepts_tcp, free_port, make_server_dir
from ._mosquitto import MqttServer

RUNNER = Path(__file__).resolve().parents[2] / "guantong" / "_demo" / "_amqtt.py"


class AmqttBroker(MqttServer):
    """amqtt on 127.0.0.1; clients must give a user name (any, no password), since amqtt
    keeps no messages for an anonymous session while it is disconnected."""

    kind = "amqtt"

    def __init__(self) -> None:
        super().__init__(host="127.0.0.1", port=free_port(), directory=make_server_dir("amqtt"))
        try:
            self.version = importlib.metadata.version("amqtt")
        except importlib.metadata.PackageNotFoundError:
            raise ServiceError("amqtt is not installed (extra test or demo-broker)") from None
        self.config_path = self.directory / "amqtt.yaml"  # type: ignore[operator]

    def _start(self) -> None:
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": False}
            },
        }
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self._spawn(
            [sys.executable, str(RUNNER), str(self.config_path)],
            lambda: accepts_tcp(self.host, self.port),
            "listening",
        )
