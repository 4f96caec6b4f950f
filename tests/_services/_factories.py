"""The factory file the pipeline tests run the PLC simulators with."""

from __future__ import annotations


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
