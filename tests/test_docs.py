"""Every config block in the docs is a config that loads: documentation that cannot rot.

A block with a ``kind`` is loaded as it is. A block without one is a fragment of a config
(the ``devices`` of a gateway in a driver's README, say): it is loaded inside the smallest
config of the kind its top-level keys belong to, so a fragment that no kind accepts fails.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from guantong import _configfile

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted(
    [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *ROOT.glob("*/drivers/*/README.md")]
)
BLOCK = re.compile(r"```yaml\n(.*?)```", re.DOTALL)

#: the smallest config of each kind that a fragment is loaded into
SKELETONS: dict[str, dict[str, Any]] = {
    "gateway": {
        "kind": "gateway",
        "gateway": {"id": "88.709.911/gw.docs", "enterprise": "88.709.911/firm",
                    "key_file": "gateway.key"},
    },
    "factory": {"kind": "factory", "name": "Docs",
                "firm": {"name": "docs", "prefix": "88.709.911"}},
}  # fmt: skip


def config_blocks() -> list[tuple[str, str]]:
    return [
        (f"{doc.relative_to(ROOT)}#{i}", block)
        for doc in DOCS
        for i, block in enumerate(BLOCK.findall(doc.read_text(encoding="utf-8")))
    ]


def as_config(block: str) -> str:
    """The block, or the fragment inside the skeleton of the kind whose fields it uses."""
    data = yaml.safe_load(block)
    if not isinstance(data, dict) or "kind" in data:
        return block
    for kind, skeleton in SKELETONS.items():
        fields = _configfile.KINDS[kind].model_fields
        if set(data) <= set(fields) - set(skeleton):
            return yaml.safe_dump({**skeleton, **data}, allow_unicode=True)
    return block  # no kind takes these fields: loading it reports why


def test_the_docs_have_config_blocks_and_fragments() -> None:
    names = [name for name, _ in config_blocks()]
    assert any(name.startswith("docs/gateway.md") for name in names)
    assert any(name.startswith("edge/drivers/modbus/README.md") for name in names)


@pytest.mark.parametrize(("name", "block"), config_blocks(), ids=[n for n, _ in config_blocks()])
def test_every_config_block_loads(name: str, block: str, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(as_config(block), encoding="utf-8")
    try:
        _configfile.load(path, None)
    except _configfile.ConfigFileError as exc:
        pytest.fail(f"{name}: " + "; ".join(str(p) for p in exc.problems))
