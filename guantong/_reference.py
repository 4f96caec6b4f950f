"""The configuration reference (docs/configuration.md), generated from the config models.

Written from each kind's JSON Schema, so that it says what the loader accepts and nothing else:
a test compares the committed page with :func:`reference`, and ``guantong config reference``
rewrites it. A new config kind appears here once it is in ``_configfile.KINDS``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from guantong._configfile import KINDS

_HEADER = """\
# Configuration reference

Every config file is YAML with a `kind` field that says which of the kinds below it is.
`guantong config check FILE…` validates files and names the file, line, device, group and tag
of every error; `guantong config schema KIND` prints the JSON Schema these tables come from.
Unknown fields are errors. Paths are relative to the config file. A **duration** is a number of
seconds or a string such as `500ms`, `2s`, `5m`, `1h`, `7d`; a **size** is a number of bytes or
a string such as `512MiB`, `1GiB`, `500MB`.

Generated from the config models by `guantong config reference > docs/configuration.md`; a test
fails when this page and the models differ. Examples of each kind are in the guides:

"""

#: the guide with examples of each kind
_GUIDES = {
    "factory": "[simulators.md](simulators.md)",
    "gateway": "[gateway.md](gateway.md)",
    "identifiers": "[identifiers.md](identifiers.md)",
    "ingest": "[ingest.md](ingest.md)",
    "ingest-bridge": "[kafka.md](kafka.md)",
    "ingest-sink": "[kafka.md](kafka.md)",
    "evidence": "[evidence.md](evidence.md)",
}


def reference() -> str:
    """The whole page, one section per config kind."""
    guides = "".join(
        f"- `kind: {kind}`: {_GUIDES.get(kind, 'no guide yet')}\n" for kind in sorted(KINDS)
    )
    sections = [_HEADER + guides]
    for kind in sorted(KINDS):
        schema = KINDS[kind].model_json_schema()
        rows = "".join(
            f"| `{path}` | {kind_} | {default} | {what} |\n"
            for path, kind_, default, what in _rows(schema, schema.get("$defs", {}), "")
        )
        about = _text(schema.get("description", ""))
        sections.append(
            f"## `kind: {kind}`\n\n"
            + (f"{about}\n\n" if about else "")
            + "| field | type | default | meaning |\n|---|---|---|---|\n"
            + rows
        )
    return "\n".join(sections)


def _rows(
    schema: dict[str, Any], defs: dict[str, Any], prefix: str
) -> Iterator[tuple[str, str, str, str]]:
    required = set(schema.get("required", ()))
    for name, raw in schema.get("properties", {}).items():
        if name == "kind" and not prefix:
            continue
        prop = _resolve(raw, defs)
        path = prefix + name
        default = ""
        if name in required:
            default = "required"
        elif isinstance(raw.get("default"), dict) and raw["default"]:
            default = "as below"  # a section whose fields have their own defaults
        elif "default" in raw:
            default = _value(raw["default"])
        what = _text(raw.get("description") or prop.get("description", ""))
        yield path, _type(prop, defs), default, what
        for suffix, model in _children(prop, defs):
            yield from _rows(model, defs, f"{path}{suffix}.")


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """The schema with a ``$ref`` replaced by its definition (the field's own keys win)."""
    ref = schema.get("$ref")
    if ref is None:
        return schema
    target = _resolve(defs[ref.rsplit("/", 1)[1]], defs)
    return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}


def _variants(schema: dict[str, Any], defs: dict[str, Any]) -> list[dict[str, Any]]:
    options = schema.get("anyOf") or schema.get("oneOf")
    if options is None:
        return [schema]
    return [_resolve(o, defs) for o in options if o.get("type") != "null"]


def _children(schema: dict[str, Any], defs: dict[str, Any]) -> Iterator[tuple[str, dict]]:
    """Nested models under a field: ``("", model)``, ``("[]", item)``, or per union member
    ``(" (protocol: opcua)", model)``, named by the member's discriminating constant."""
    outer = _variants(schema, defs)
    for variant in outer:
        inner, suffix = variant, ""
        if variant.get("type") == "array":
            inner, suffix = variant.get("items", {}), "[]"
        elif variant.get("type") == "object" and "properties" not in variant:
            inner, suffix = variant.get("additionalProperties", {}), ".<name>"
        members = _variants(_resolve(inner, defs), defs)
        for member in members:
            if "properties" in member:
                tag = _discriminator(member) if len(outer) > 1 or len(members) > 1 else ""
                yield suffix + tag, member


def _discriminator(model: dict[str, Any]) -> str:
    for name, prop in model.get("properties", {}).items():
        if "const" in prop:
            return f" ({name}: {prop['const']})"
        if len(prop.get("enum", ())) == 1:
            return f" ({name}: {prop['enum'][0]})"
    return f" ({model.get('title', 'variant')})"


def _type(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    options = schema.get("anyOf") or schema.get("oneOf")
    if options is not None:
        return " or ".join(dict.fromkeys(_type(_resolve(o, defs), defs) for o in options))
    if "const" in schema:
        return _value(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("x-format") or schema.get("type", "any")
    if kind == "array":
        return f"list of {_type(_resolve(schema.get('items', {}), defs), defs)}"
    if kind == "object":
        kind = "mapping"
    bounds = [f"{word} {schema[key]}" for key, word in _BOUNDS.items() if key in schema]
    return kind + (f" ({', '.join(bounds)})" if bounds else "")


_BOUNDS = {
    "minimum": "≥",
    "exclusiveMinimum": ">",
    "maximum": "≤",
    "exclusiveMaximum": "<",
    "minLength": "min length",
    "maxLength": "max length",
    "minItems": "min items",
    "maxItems": "max items",
}


def _value(value: Any) -> str:
    return f"`{_cell(json.dumps(value, ensure_ascii=False))}`"


def _text(text: str) -> str:
    return _cell(" ".join(text.split()))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
