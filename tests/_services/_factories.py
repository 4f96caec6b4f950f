"""The factory file the pipeline tests run the PLC simulators with, and their ingest config."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from ingest.config import IngestConfig

HEALTH = {"listen": "127.0.0.1:0"}


def kiln_works(port: int) -> dict[str, object]:
    """A kiln and an energy meter behind one Modbus TCP endpoint on ``port``, firm 88.709.911:
    two machines of different profiles, enough for a whole pipeline and quick to poll."""
    return {
        "kind": "factory",
        "name": "KilnWorks",
        "firm": {"name": "test firm", "prefix": "88.709.911"},
        "seed": 7,
        "endpoints": [{"name": "plc", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": port}],
        "lines": [
            {
                "name": "Line1",
                "machines": [
                    {"name": "kiln-1", "profile": "kiln", "endpoint": "plc", "unit_id": 1},
                    {"name": "meter-1", "profile": "meter", "endpoint": "plc", "unit_id": 2},
                ],
            }
        ],
    }


def ingest_config(
    dsn: str,
    broker_port: int,
    node_url: str,
    tmp_path: Path,
    *,
    mqtt: dict[str, Any] | None = None,
    health: dict[str, Any] | None = HEALTH,
    **batch: Any,
) -> IngestConfig:
    """An ingest config for the tests; ``mqtt`` adds to (or replaces) its MQTT settings, and
    the other keywords to its batch settings; ``health`` None runs no
    health endpoint."""
    return IngestConfig.model_validate(
        {
            "kind": "ingest",
            "database": {"dsn": dsn, "partitions_ahead": 1},
            "identifiers": {"node": node_url},
            "mqtt": {
                "broker": f"mqtt://127.0.0.1:{broker_port}",
                "client_id": f"ingest-{uuid.uuid4().hex[:8]}",
                "keepalive": 5,
                **(mqtt or {}),
            },
            # decoding in the ingest process keeps each start fast; tests that mean to
            # exercise the worker processes ask for them
            "batch": {"max_delay": "50ms", "decode_workers": 0, **batch},
            "health": health,
        },
        context={"base_dir": tmp_path},
    )
