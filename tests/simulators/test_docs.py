"""docs/simulators.md is documentation that is tested: its tables and its example file."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

import simulators
from guantong import _configfile
from simulators._faults import ENDPOINT_FAULTS, MACHINE_FAULTS

DOC = Path(__file__).resolve().parents[2] / "docs" / "simulators.md"


def render_profiles() -> str:
    out = []
    for p in simulators.PROFILES.values():
        out += [
            f"### `{p.name}`: {p.title} ({p.manufacturer} {p.model})",
            "",
            "| tag | address | type | order | scale | unit | access |",
            "|---|---|---|---|---|---|---|",
        ]
        for t in p.tags:
            type_ = f"{t.type}[{t.length}]" if t.length else t.type
            scale = "" if t.scale == 1.0 else f"{t.scale:g}"
            access = "rw" if t.writable else "r"
            out.append(
                f"| {t.name} | `{t.address}` | {type_} | {t.order or ''} | {scale} | "
                f"{t.unit or ''} | {access} |"
            )
        out.append("")
    return "\n".join(out)


def test_the_profile_tables_match_the_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    found = re.search(r"<!-- profiles:begin[^\n]*-->\n(.*)<!-- profiles:end -->", text, re.S)
    assert found is not None
    assert found[1].strip() == render_profiles().strip()


def test_the_example_factory_file_loads(tmp_path: Path) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    example = next(b for b in blocks if "kind: factory" in b)
    path = tmp_path / "factory.yaml"
    path.write_text(example, encoding="utf-8")
    factory = _configfile.load(path)
    assert isinstance(factory, simulators.FactoryConfig)
    assert {e.protocol for e in factory.endpoints} == {"modbus-tcp", "modbus-rtu", "opcua"}
    scale = next(b for b in blocks if b.startswith("scale:"))
    expanded = simulators.FactoryConfig.model_validate(
        {"kind": "factory", "name": "S", "firm": {"name": "S", "prefix": "88.1.2"},
         **yaml.safe_load(scale)}
    )  # fmt: skip
    tags = sum(len(simulators.profile(m.profile).tags) for m in expanded.machines())
    assert f"{len(expanded.machines()):,} machines, {tags:,} tags" in scale


def test_every_fault_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    for kind in ENDPOINT_FAULTS + MACHINE_FAULTS:
        assert f"| `{kind}` |" in text
    for code in simulators.MODBUS_EXCEPTIONS:
        assert f"`{code}`" in text
