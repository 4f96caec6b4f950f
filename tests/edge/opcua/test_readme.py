"""The sample config in the driver's README is valid and compiles."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from edge import Device, OpcUa
from edge.drivers.opcua import compile_device

README = Path(__file__).resolve().parents[3] / "edge" / "drivers" / "opcua" / "README.md"


def test_the_readme_sample_config_loads_and_compiles(tmp_path: Path) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text("utf-8"), flags=re.DOTALL)
    assert len(blocks) == 1
    cnc, imm = (
        Device.model_validate(d, context={"base_dir": tmp_path})
        for d in yaml.safe_load(blocks[0])["devices"]
    )
    assert isinstance(cnc.connection, OpcUa)
    assert cnc.connection.mode == "subscribe"
    assert cnc.connection.password_file == str(tmp_path / "opcua-password.txt")
    assert cnc.connection.certificate == str(tmp_path / "opcua-client.der")
    assert cnc.connection.sampling_interval == 0.5
    assert isinstance(imm.connection, OpcUa)
    assert (imm.connection.mode, imm.connection.certificate) == ("poll", None)
    plan = compile_device(cnc)
    assert [len(g.nodes) for g in plan.groups] == [3, 2]
    assert plan.groups[0].nodes[2].Identifier == 1001
    assert [h for g in plan.groups for h in g.handles] == [1, 2, 3, 4, 5]
    rules = plan.rules()
    assert (rules["feed_rate"].percent, rules["feed_rate"].max_silence) == (2, 60.0)
