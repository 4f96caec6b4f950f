"""The package import rules of docs/architecture.md, checked on every source file.

An import is checked by where it lands: ``gateway.protocol`` is its own unit (the wire
contract, a leaf), the rest of ``gateway`` is another.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNITS = ("common", "identifiers", "edge", "gateway.protocol", "gateway", "ingest", "evidence",
         "simulators", "guantong")  # fmt: skip
ALLOWED = {
    "common": set(),
    "identifiers": {"common"},
    "edge": {"common", "identifiers"},
    "gateway.protocol": {"identifiers"},
    "gateway": {"common", "edge", "identifiers", "gateway.protocol"},
    "ingest": {"common", "gateway.protocol", "identifiers"},
    "evidence": {"common", "gateway.protocol", "ingest", "identifiers"},
    "simulators": set(),
    "guantong": set(UNITS),
}
#: third-party modules the leaf wire contract must not pull in
HEAVY = {"paho", "asyncua", "pymodbus", "aiokafka", "psycopg", "psycopg_pool", "pydantic",
         "fastapi", "starlette", "uvicorn", "httpx", "yaml"}  # fmt: skip


def unit_of(module: str) -> str | None:
    for unit in UNITS:  # most specific first: gateway.protocol before gateway
        if module == unit or module.startswith(unit + "."):
            return unit
    return None


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in a file, relative ones resolved."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def source_files() -> list[Path]:
    return sorted(
        p
        for unit in {u.split(".")[0] for u in UNITS}
        if (ROOT / unit).is_dir()
        for p in (ROOT / unit).rglob("*.py")
    )


def violations() -> list[str]:
    found = []
    for path in source_files():
        own = unit_of(".".join(path.relative_to(ROOT).with_suffix("").parts))
        assert own is not None
        for line, module in imports_of(path):
            target = unit_of(module)
            if target is None or target == own:
                continue
            if target not in ALLOWED[own]:
                found.append(f"{path.relative_to(ROOT)}:{line}: {own} imports {module}")
        if own == "gateway.protocol":
            found += [
                f"{path.relative_to(ROOT)}:{line}: the leaf imports {module}"
                for line, module in imports_of(path)
                if module.split(".")[0] in HEAVY
            ]
    return sorted(set(found))


def test_every_package_respects_the_import_rules() -> None:
    assert len(source_files()) > 10
    assert violations() == []


def test_the_checker_catches_a_forbidden_import() -> None:
    bad = ROOT / "edge" / "_import_rule_probe.py"
    bad.write_text("from gateway import config\nfrom ..ingest import store\n", encoding="utf-8")
    try:
        found = violations()
    finally:
        bad.unlink()
    assert found == [
        "edge/_import_rule_probe.py:1: edge imports gateway",
        "edge/_import_rule_probe.py:1: edge imports gateway.config",
        "edge/_import_rule_probe.py:2: edge imports ingest",
        "edge/_import_rule_probe.py:2: edge imports ingest.store",
    ]


def test_importing_the_wire_contract_loads_nothing_heavy() -> None:
    code = (
        "import sys, gateway.protocol\n"
        f"heavy = {sorted(HEAVY)!r}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
