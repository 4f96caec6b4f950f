"""Every config block in the docs is a config that loads: documentation that cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from guantong import _configfile

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([*(ROOT / "docs").glob("*.md"), *ROOT.glob("*/drivers/*/README.md")])
BLOCK = re.compile(r"```yaml\n(.*?)```", re.DOTALL)


def config_blocks() -> list[tuple[str, str]]:
    return [
        (f"{doc.relative_to(ROOT)}#{i}", block)
        for doc in DOCS
        for i, block in enumerate(BLOCK.findall(doc.read_text(encoding="utf-8")))
        if re.search(r"^kind: ", block, re.MULTILINE)
    ]


def test_the_docs_have_config_blocks() -> None:
    assert any(name.startswith("docs/gateway.md") for name, _ in config_blocks())


@pytest.mark.parametrize(("name", "block"), config_blocks(), ids=[n for n, _ in config_blocks()])
def test_every_config_block_loads(name: str, block: str, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(block, encoding="utf-8")
    try:
        _configfile.load(path, None)
    except _configfile.ConfigFileError as exc:
        pytest.fail(f"{name}: " + "; ".join(str(p) for p in exc.problems))
