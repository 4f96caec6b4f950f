"""Loading config files: YAML → the model of their ``kind``, with errors a technician can act on.

Every problem is reported, each with the file, the line, and the device, group and tag it is
about (``gateway.yaml:23: device 'cnc-01' › tag 'spindle': …``). YAML that PyYAML would accept
silently but that hides a mistake, such as a key given twice, is an error too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from evidence import EvidenceConfig
from gateway.config import GatewayConfig
from identifiers import NodeConfig
from ingest.config import BridgeConfig, IngestConfig, SinkConfig
from simulators import FactoryConfig

#: config kinds by the value of their top-level ``kind`` field
KINDS: dict[str, type[BaseModel]] = {
    "evidence": EvidenceConfig,
    "factory": FactoryConfig,
    "gateway": GatewayConfig,
    "identifiers": NodeConfig,
    "ingest": IngestConfig,
    "ingest-bridge": BridgeConfig,
    "ingest-sink": SinkConfig,
}

#: names shown for list items: a list under this key is named by the item's ``name``
_NAMED_LISTS = {"devices": "device", "groups": "group", "tags": "tag", "machines": "machine",
                "tokens": "token"}  # fmt: skip


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    where: str
    message: str

    def __str__(self) -> str:
        place = f"{self.file}:{self.line}" if self.line else self.file
        where = f" {self.where}:" if self.where else ""
        return f"{place}:{where} {self.message}"


class ConfigFileError(Exception):
    """A config file that cannot be used; ``problems`` lists every error found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader that rejects duplicate keys instead of keeping the last one; on libyaml's
    parser where PyYAML has it (a 100,000-tag gateway config loads in seconds, not a minute)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"key {key!r} appears twice (first on line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the deepest node along ``loc`` that exists in the document."""
    line = None if node is None else node.start_mark.line + 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if part < len(node.value) else None
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line


def _describe(data: Any, loc: tuple[int | str, ...]) -> str:
    """``device 'cnc-01' › group 'fast' › tag 'spindle' › type`` from a pydantic location."""
    parts: list[str] = []
    node = data
    pending: str | None = None
    for part in loc:
        if isinstance(part, int) and pending is not None:
            item = node[part] if isinstance(node, list) and part < len(node) else None
            name = item.get("name") if isinstance(item, dict) else None
            label = _NAMED_LISTS[pending]
            parts.append(f"{label} {name!r}" if isinstance(name, str) else f"{label} #{part + 1}")
            node, pending = item, None
            continue
        if pending is not None:
            parts.append(pending)
            pending = None
        if isinstance(part, str) and part in _NAMED_LISTS:
            pending = part
        elif isinstance(node, dict) and part not in node and node.get("protocol") == part:
            continue  # the branch of a tagged union, named after the value the file already has
        else:
            parts.append(str(part))
        node = node.get(part) if isinstance(node, dict) else None
    if pending is not None:
        parts.append(pending)
    return " › ".join(parts)


def load(path: str | Path, kind: str | None = None) -> BaseModel:
    """Read, parse and validate a config file; raise :class:`ConfigFileError` with every error."""
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError([Problem(name, None, "", f"cannot read: {exc.strerror}")]) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigFileError([Problem(name, line, "", f"not valid YAML: {problem}")]) from None
    if not isinstance(data, dict):
        raise ConfigFileError([Problem(name, 1, "", "expected a mapping with a 'kind' field")])
    if kind is not None and data.setdefault("kind", kind) != kind:
        problem = f"the file says kind {data['kind']!r}, not {kind!r}"
        raise ConfigFileError([Problem(name, _line_of(_tree(text), ("kind",)), "", problem)])
    kind = data.get("kind")
    if kind not in KINDS:
        known = ", ".join(sorted(KINDS))
        why = f"unknown kind {kind!r}" if kind else "no 'kind' field"
        raise ConfigFileError(
            [Problem(name, _line_of(_tree(text), ("kind",)), "", f"{why}; one of {known}")]
        )
    try:
        return KINDS[kind].model_validate(data, context={"base_dir": path.parent})
    except ValidationError as exc:
        tree = _tree(text)
        problems = [
            Problem(name, _line_of(tree, err["loc"]), _describe(data, err["loc"]), _message(err))
            for err in exc.errors()
        ]
        raise ConfigFileError(problems) from None


def _tree(text: str) -> yaml.Node | None:
    """The document's nodes, for the line of an error: composed only then, since the nodes of
    a 100,000-tag config take hundreds of megabytes that the process would keep."""
    return yaml.compose(text, Loader=_StrictLoader)


def _message(err: Any) -> str:
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")
