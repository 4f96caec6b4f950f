"""The systemd units and the compose file of deploy/ run commands that exist, with config
files that load. Neither systemd nor docker runs here: what can be checked is checked."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from guantong import _configfile
from guantong.cli import cli

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = sorted(DEPLOY.glob("*.service"))
COMPOSE = DEPLOY / "compose" / "compose.yaml"


def check_command(argv: list[str], configs: dict[str, Path]) -> None:
    """``argv`` (after ``guantong``) names a command and only its options; its ``-c`` file,
    found through ``configs`` (path as deployed → file in the repository), loads as the kind
    of the command group (``ingest``, ``identifiers``, ``gateway``)."""
    words, command = list(argv), cli
    while isinstance(command, click.Group):
        name = words.pop(0)
        assert name in command.commands, f"no command {name!r} in {argv}"
        command = command.commands[name]
    options = {opt for param in command.params for opt in param.opts}
    for word in words:
        if word.startswith("-"):
            assert word in options, f"{argv}: {command.name} has no option {word}"
    if "-c" in words:
        deployed = words[words.index("-c") + 1]
        assert deployed in configs, f"{argv}: {deployed} is not a file of deploy/"
        # the Kafka modes of ingest read their own kinds
        kind = {("ingest", "bridge"): "ingest-bridge", ("ingest", "sink"): "ingest-sink"}
        _configfile.load(configs[deployed], kind.get((argv[0], argv[1]), argv[0]))


def exec_start(unit: Path) -> list[str]:
    lines = [
        ln for ln in unit.read_text(encoding="utf-8").splitlines() if ln.startswith("ExecStart=")
    ]
    assert len(lines) == 1, unit
    return shlex.split(lines[0].removeprefix("ExecStart="))


def test_every_service_of_the_platform_and_the_factory_has_a_unit() -> None:
    assert {u.name for u in UNITS} >= {
        "guantong-gateway.service", "guantong-ingest.service", "guantong-identifiers.service",
        "guantong-ingest-bridge.service", "guantong-ingest-sink.service",
        "guantong-evidence.service",
    }  # fmt: skip


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_a_unit_runs_a_guantong_command_with_a_deploy_config(unit: Path) -> None:
    argv = exec_start(unit)
    assert argv[0] == "/opt/guantong/bin/guantong"
    configs = {f"/etc/guantong/{p.name}": p for p in DEPLOY.glob("*.yaml")}
    check_command(argv[1:], configs)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_systemd_accepts_the_unit(unit: Path, tmp_path: Path) -> None:
    # the venv's guantong stands in for /opt/guantong's, which verify wants to exist
    guantong = Path(sys.executable).parent / "guantong"
    copy = tmp_path / unit.name
    copy.write_text(
        unit.read_text(encoding="utf-8").replace("/opt/guantong/bin/guantong", str(guantong)),
        encoding="utf-8",
    )
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    # unknown keys and sections are only warnings to systemd, but mistakes here
    assert str(copy) not in done.stderr, done.stderr


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def test_the_compose_services_run_guantong_commands_with_their_configs() -> None:
    services = compose()["services"]
    assert set(services) == {"db", "mosquitto", "identifiers", "ingest"}
    checked = 0
    for name, service in services.items():
        mounts = dict(v.rsplit(":", 2)[:2] if v.count(":") == 2 else v.split(":", 1)
                      for v in service.get("volumes", ()) if v.startswith("."))  # fmt: skip
        configs = {target: COMPOSE.parent / source for source, target in mounts.items()}
        for source in mounts:
            if not source.startswith("./secrets"):  # made by the operator
                assert (COMPOSE.parent / source).exists(), f"{name}: {source}"
        command = service.get("command")
        if isinstance(command, list) and command[0] == "guantong":
            check_command(command[1:], configs)
            checked += 1
    assert checked == 2


def test_the_compose_broker_runs_the_deployed_mosquitto_config() -> None:
    volumes = compose()["services"]["mosquitto"]["volumes"]
    assert "../mosquitto/guantong.conf:/etc/mosquitto/conf.d/guantong.conf:ro" in volumes
    main = (COMPOSE.parent / "mosquitto.conf").read_text(encoding="utf-8")
    assert re.search(r"^include_dir /etc/mosquitto/conf.d$", main, re.MULTILINE)


def test_the_compose_file_is_consistent() -> None:
    doc = compose()
    for name, service in doc["services"].items():
        image = service["image"]
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{name}: {image} has no tag"
        assert not image.endswith(":latest"), f"{name}: pin {image}"
        for dependency in service.get("depends_on", {}):
            assert dependency in doc["services"], f"{name} depends on unknown {dependency}"
        for secret in service.get("secrets", ()):
            assert secret in doc["secrets"], f"{name}: undeclared secret {secret}"
        for volume in service.get("volumes", ()):
            source = volume.split(":", 1)[0]
            if not source.startswith("."):
                assert source in doc["volumes"], f"{name}: undeclared volume {source}"


def test_the_image_holds_every_package_of_the_project() -> None:
    build = compose()["services"]["identifiers"]["build"]
    dockerfile = (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve()
    copied = set(re.findall(r"^COPY (\S+) ", dockerfile.read_text(encoding="utf-8"), re.MULTILINE))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert packages <= copied
    for source in copied - {"pyproject.toml"}:
        assert (ROOT / source).exists(), source
