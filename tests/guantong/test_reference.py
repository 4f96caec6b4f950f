"""docs/configuration.md is what the config models say, so the reference cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from guantong import _configfile
from guantong._reference import reference

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "configuration.md"


def test_the_committed_reference_is_what_the_models_say() -> None:
    assert PAGE.read_text(encoding="utf-8") == reference(), (
        "docs/configuration.md differs from the config models: "
        "run `guantong config reference > docs/configuration.md`"
    )


def test_every_kind_and_its_nested_fields_are_described() -> None:
    page = reference()
    for kind in _configfile.KINDS:
        assert f"\n## `kind: {kind}`\n" in page
    # nested lists, tagged unions, durations and enums each have rows of their own
    assert "| `devices[].groups[].tags[].address` |" in page
    opcua = "| `devices[].connection (protocol: opcua).security_mode` | one of `None`, `Sign`, "
    assert opcua in page
    assert '| `uplink.format` | one of `json`, `sparkplug` | `"json"` |' in page
    delay = "| `batch.max_delay` | duration | `0.2` | longest a message waits to be committed |"
    assert delay in page


def test_the_command_prints_the_reference() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "guantong", "config", "reference"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert out == reference()
