"""The sample config in the driver's README is valid and plans as the README says."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from edge import Device, ModbusRtu, ModbusTcp
from edge.drivers.modbus.config import compile_device

README = Path(__file__).resolve().parents[3] / "edge" / "drivers" / "modbus" / "README.md"


def sample_devices() -> list[Device]:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text("utf-8"), flags=re.DOTALL)
    assert len(blocks) == 1
    return [Device.model_validate(d) for d in yaml.safe_load(blocks[0])["devices"]]


def test_the_readme_sample_config_loads_and_plans() -> None:
    kiln, meter, press = sample_devices()
    assert isinstance(kiln.connection, ModbusTcp)
    assert kiln.connection.backup_host == "192.0.2.11"
    assert kiln.connection.unreadable_ranges()[0][1:] == (300, 399)
    assert isinstance(meter.connection, ModbusRtu)
    assert meter.connection.frame_gap == 0.02
    assert isinstance(press.connection, ModbusTcp)
    assert press.connection.framer == "rtu"
    process = compile_device(kiln).groups[0]
    assert [(r.function_code, r.start, r.count) for r in process.requests] == [
        (3, 100, 4),
        (4, 10, 3),
    ]
    zone1 = kiln.groups[0].tags[0]
    assert (zone1.deadband, zone1.max_silence) == (0.5, 60.0)
