"""Loading config files: YAML → the model of their ``kind``, with errors a technician can act on.

Every problem is reported, each with the file, the line, and the device, group and tag it is
about (``gateway.yaml:23: device 'cnc-01' › tag 'spindle': …``). YAML that PyYAML would accept
silently but that hides a mistake, such as a key given twice, is an error too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from edge import Device
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
    context = {"base_dir": path.parent}
    try:
        try:
            data = _data(text, _streamed(kind, context))
        except ValidationError:
            data = _data(text)  # as in the file, for errors that say where they are
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
        _validate_items(kind, data, context)
    except ValidationError:
        data = _data(text)  # as in the file, for errors that say where they are
    try:
        return KINDS[kind].model_validate(data, context=context)
    except ValidationError as exc:
        tree = _tree(text)
        problems = [
            Problem(name, _line_of(tree, err["loc"]), _describe(data, err["loc"]), _message(err))
            for err in exc.errors()
        ]
        raise ConfigFileError(problems) from None


def _data(text: str, items: tuple[str, Callable[[Any], Any]] | None = None) -> Any:
    """The document's data; raises :class:`yaml.YAMLError`.

    Built from libyaml's events, without the node tree that ``yaml.load`` composes first
    (a 100,000-tag gateway config: 340 MB of nodes, which the process then keeps in its
    heap). Anything beyond plain mappings, sequences and scalars of the core schema (explicit
    tags, merge keys, unhashable keys), and every error, goes the way of ``yaml.load``, so
    results and messages stay PyYAML's. ``items`` (a top-level key and a function) turns each
    item of the list under that key as soon as it is built, so that the raw data of one item
    at a time is alive; what the function raises is raised.
    """
    try:
        return _from_events(text, items)
    except (_Unusual, yaml.YAMLError):
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


class _Unusual(Exception):
    """Not for the event path: ``yaml.load`` decides."""


_MAP = yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG
_SEQ = yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG


def _from_events(text: str, items: tuple[str, Callable[[Any], Any]] | None = None) -> Any:
    loader = _StrictLoader(text)
    try:
        loader.get_event()  # stream start
        if loader.check_event(yaml.StreamEndEvent):
            return None
        loader.get_event()  # document start
        data = _construct(loader, loader.get_event(), {}, items)
        loader.get_event()  # document end
        if not loader.check_event(yaml.StreamEndEvent):
            raise _Unusual  # a second document: yaml.load names the error
        return data
    finally:
        loader.dispose()


def _construct(
    loader: _StrictLoader,
    event: yaml.Event,
    anchors: dict[str, Any],
    items: tuple[str, Callable[[Any], Any]] | None = None,
) -> Any:
    if isinstance(event, yaml.AliasEvent):
        if event.anchor not in anchors:
            raise _Unusual
        return anchors[event.anchor]
    if isinstance(event, yaml.ScalarEvent):
        value = _scalar(loader, event)
        if event.anchor is not None:
            anchors[event.anchor] = value
        return value
    if isinstance(event, yaml.SequenceStartEvent) and event.tag in (None, "!", _SEQ):
        return _sequence(loader, event, anchors)
    if isinstance(event, yaml.MappingStartEvent) and event.tag in (None, "!", _MAP):
        mapping: dict[Any, Any] = {}
        if event.anchor is not None:
            anchors[event.anchor] = mapping
        while not loader.check_event(yaml.MappingEndEvent):
            key = _key(loader, loader.get_event(), anchors, mapping)
            value = loader.get_event()
            if items is not None and key == items[0] and isinstance(value, yaml.SequenceStartEvent):
                mapping[key] = _sequence(loader, value, anchors, items[1])
            else:
                mapping[key] = _construct(loader, value, anchors)
        loader.get_event()
        return mapping
    raise _Unusual


def _sequence(
    loader: _StrictLoader,
    event: yaml.SequenceStartEvent,
    anchors: dict[str, Any],
    each: Callable[[Any], Any] | None = None,
) -> list[Any]:
    if event.tag not in (None, "!", _SEQ):
        raise _Unusual
    items: list[Any] = []
    if event.anchor is not None:
        anchors[event.anchor] = items
    while not loader.check_event(yaml.SequenceEndEvent):
        item = _construct(loader, loader.get_event(), anchors)
        items.append(item if each is None else each(item))
    loader.get_event()
    return items


def _key(
    loader: _StrictLoader, event: yaml.Event, anchors: dict[str, Any], mapping: dict[Any, Any]
) -> Any:
    if isinstance(event, yaml.ScalarEvent) and event.value == "<<":
        raise _Unusual  # a merge key, perhaps
    key = _construct(loader, event, anchors)
    try:
        if key in mapping:
            raise _Unusual  # a duplicate: yaml.load says where
    except TypeError:
        raise _Unusual from None  # unhashable
    return key


def _scalar(loader: _StrictLoader, event: yaml.ScalarEvent) -> Any:
    tag = event.tag
    if tag is None or tag == "!":
        tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
    construct = loader.yaml_constructors.get(tag)
    if construct is None or tag in (_MAP, _SEQ) or tag.endswith(":merge"):
        raise _Unusual
    return construct(
        loader, yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
    )


#: per kind, a list field whose items are validated one at a time before the whole
_ITEMS: dict[str, tuple[str, type[BaseModel]]] = {"gateway": ("devices", Device)}


def _streamed(kind: str | None, context: dict[str, Any]) -> tuple[str, Callable[[Any], Any]] | None:
    """For a file read as ``kind``: its big list's key, and the validation of an item."""
    if kind not in _ITEMS:
        return None
    field, model = _ITEMS[kind]
    return field, lambda item: model.model_validate(item, context=context)


def _validate_items(kind: str, data: dict[str, Any], context: dict[str, Any]) -> None:
    """Replace the items of the kind's big list by their models, one at a time.

    Each item's dicts are freed as its model is made, so the data and the models of a
    100,000-tag config are never in memory together; the whole is validated after that
    (models in a model field are taken as they are). A ``ValidationError`` leaves ``data``
    half converted.
    """
    field, model = _ITEMS.get(kind, ("", BaseModel))
    items = data.get(field) if field else None
    if not isinstance(items, list):
        return
    for i, item in enumerate(items):
        if not isinstance(item, model):  # not validated as the file was read
            items[i] = model.model_validate(item, context=context)


def _tree(text: str) -> yaml.Node | None:
    """The document's nodes, for the line of an error: composed only then, since the nodes of
    a 100,000-tag config take hundreds of megabytes that the process would keep."""
    return yaml.compose(text, Loader=_StrictLoader)


def _message(err: Any) -> str:
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")
