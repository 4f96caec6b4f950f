"""Data-driven regression cases, one folder each under ``cases/``.

A folder holds ``config.yaml`` (one device) and either ``init.err`` (the error loading it must
raise) or ``registers.json`` (the device's register image: table → start address → words or
bits), ``expected.jsonl`` (the samples one poll of every group must give) and optionally
``requests.txt`` (the planned requests, ``group: fcN start count``). Add a folder per bug.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from edge import Device
from edge.drivers.modbus.config import compile_device

CASES = sorted(p for p in (Path(__file__).parent / "cases").iterdir() if p.is_dir())


def load(case: Path) -> Device:
    return Device.model_validate(yaml.safe_load((case / "config.yaml").read_text("utf-8")))


def image(case: Path) -> dict[str, dict[int, int]]:
    raw = json.loads((case / "registers.json").read_text("utf-8"))
    return {
        table: {int(start) + i: v for start, values in blocks.items() for i, v in enumerate(values)}
        for table, blocks in raw.items()
    }


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: Path) -> None:
    if (case / "init.err").exists():
        with pytest.raises(ValidationError) as info:
            load(case)
        assert (case / "init.err").read_text("utf-8").strip() in str(info.value)
        return
    plan = compile_device(load(case))
    memory = image(case)
    got = []
    requests = []
    for group in plan.groups:
        for request in group.requests:
            requests.append(
                f"{group.name}: fc{request.function_code} {request.start} {request.count}"
            )
            table = memory.get(request.table.value, {})
            payload = [table.get(a, 0) for a in range(request.start, request.end + 1)]
            got += [
                {"tag": tag, "value": value, "quality": quality.value}
                for tag, value, quality in request.decode(payload)
            ]
    expected = [
        json.loads(line)
        for line in (case / "expected.jsonl").read_text("utf-8").split("\n")
        if line
    ]
    by_tag = {s["tag"]: s for s in got}
    assert sorted(by_tag) == sorted(e["tag"] for e in expected)
    assert len(got) == len(expected)
    for sample in expected:
        actual = by_tag[sample["tag"]]
        assert actual["quality"] == sample["quality"], sample["tag"]
        if isinstance(sample["value"], float):
            assert actual["value"] == pytest.approx(sample["value"], rel=1e-12), sample["tag"]
        else:
            assert actual["value"] == sample["value"], sample["tag"]
            assert type(actual["value"]) is type(sample["value"]), sample["tag"]
    if (case / "requests.txt").exists():
        assert requests == (case / "requests.txt").read_text("utf-8").splitlines()
