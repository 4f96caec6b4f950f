"""``guantong config check`` and ``schema``, run as a user would: in a process of its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CASES = sorted((Path(__file__).parent / "config_cases").iterdir())


def guantong(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "guantong", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_invalid_config_is_reported_with_file_line_device_and_tag(case: Path) -> None:
    """Each folder holds a broken config and the exact errors it must produce."""
    config = case / "config.yaml"
    result = guantong("config", "check", str(config))
    assert result.returncode == 1
    expected = (case / "errors.txt").read_text(encoding="utf-8").replace("{file}", str(config))
    assert result.stderr == "".join(f"error: {line}\n" for line in expected.splitlines())
    assert result.stdout == ""


def test_duplicate_tag_names_file_device_and_tag() -> None:
    config = "tests/guantong/config_cases/duplicate_tag/config.yaml"
    result = guantong("config", "check", config)
    assert result.returncode == 1
    assert config in result.stderr
    assert "device 'press-1'" in result.stderr
    assert "tag 'ram_pressure'" in result.stderr


def test_every_shipped_config_passes() -> None:
    configs = sorted(
        str(p.relative_to(ROOT)) for d in ("configs", "deploy") for p in (ROOT / d).glob("*.yaml")
    )
    assert configs
    result = guantong("config", "check", *configs)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"ok: {c}" for c in configs]


def test_all_files_are_checked_even_after_a_failure() -> None:
    bad = "tests/guantong/config_cases/duplicate_tag/config.yaml"
    good = "configs/gateway.example.yaml"
    result = guantong("config", "check", bad, good)
    assert result.returncode == 1
    assert result.stdout == f"ok: {good}\n"


def test_missing_file_and_non_yaml(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: gateway\ndevices: [\n", encoding="utf-8")
    result = guantong("config", "check", str(missing), str(broken))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == f"error: {missing}: cannot read: No such file or directory"
    assert lines[1].startswith(f"error: {broken}:3: not valid YAML:")


def test_kind_option_for_files_without_kind(tmp_path: Path) -> None:
    text = (ROOT / "configs/gateway.example.yaml").read_text(encoding="utf-8")
    config = tmp_path / "gateway.yaml"
    config.write_text(text.replace("kind: gateway\n", ""), encoding="utf-8")
    assert guantong("config", "check", str(config)).returncode == 1
    assert guantong("config", "check", "--kind", "gateway", str(config)).returncode == 0


def test_schema_is_json_schema_of_the_model() -> None:
    result = guantong("config", "schema", "gateway")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "GatewayConfig"
    assert schema["additionalProperties"] is False
    assert {"kind", "gateway", "devices"} <= set(schema["properties"])
    assert guantong("config", "schema", "nonsense").returncode == 2
