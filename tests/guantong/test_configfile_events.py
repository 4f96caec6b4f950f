"""Config data built from libyaml's events is what ``yaml.load`` builds from the node tree."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.config import GatewayConfig
from guantong._configfile import ConfigFileError, _data, _from_events, _StrictLoader, _Unusual, load

ROOT = Path(__file__).resolve().parents[2]

PLAIN = [
    "",
    "a: 1\nb: [1, 2.5, -3, 0x1f, 1_000]\nc: {d: null, e: ~, f: true, g: no}\n",
    "s: '012'\nt: \"tab\\there\"\nu: |\n  two\n  lines\nv: >\n  folded\n  text\nw: 2024-01-02\n",
    "x: .inf\ny: -.Inf\nz: .nan\nq: 1e3\nr: 12:30\n",  # NaN compared as text below
    "devices:\n  - &d {name: a, groups: [{name: g, interval: 1}]}\n  - *d\nk: &v 5\nl: *v\n",
    "- 1\n- [2, [3, {4: 5}]]\n",
    "a: !!str 5\nb: !!float 1\n",  # explicit tags on scalars
    "名前: 设备\n'quoted key': \"ü\"\n",
]

UNUSUAL = [
    "base: &b {x: 1}\nderived:\n  <<: *b\n  y: 2\n",  # merge key
    "a: !!set {x, y}\n",
    "? [a, b]\n: c\n",  # an unhashable key: yaml.load's error
]


@pytest.mark.parametrize("text", PLAIN)
def test_events_build_the_same_data_as_yaml_load(text: str) -> None:
    expected = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    got = _from_events(text)
    assert repr(got) == repr(expected)
    assert got == expected or "nan" in text


@pytest.mark.parametrize("text", UNUSUAL)
def test_anything_else_goes_the_way_of_yaml_load(text: str) -> None:
    with pytest.raises(_Unusual):
        _from_events(text)
    try:
        expected = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except Exception as exc:  # whatever yaml.load raises, _data raises
        with pytest.raises(type(exc)):
            _data(text)
    else:
        assert _data(text) == expected


def test_aliases_are_the_same_object_as_with_yaml_load() -> None:
    data = _from_events("a: &x [1]\nb: *x\n")
    assert data["a"] is data["b"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "kind: gateway\nkind: gateway\n",
            "gateway.yaml:2: not valid YAML: key 'kind' appears twice",
        ),
        ("a: [1,\n", "gateway.yaml:2: not valid YAML:"),
        ("a: 1\n---\nb: 2\n", "gateway.yaml:2: not valid YAML: but found another document"),
    ],
)
def test_yaml_errors_are_pyyaml_s(tmp_path, text: str, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "gateway.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigFileError) as info:
        load(path, "gateway")
    assert str(info.value).startswith(str(tmp_path / message))


CASES = [
    case
    for case in sorted((Path(__file__).parent / "config_cases").iterdir())
    if (case / "config.yaml").read_text(encoding="utf-8").startswith("kind: gateway\n")
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_devices_validated_as_the_file_is_read_give_the_same_errors(case: Path) -> None:
    """``load(path, "gateway")`` validates each device as it is read; ``load(path)`` (the kind
    from the file) afterwards: the errors are the same, with file, line, device and tag."""
    config = case / "config.yaml"
    with pytest.raises(ConfigFileError) as own:
        load(config)
    with pytest.raises(ConfigFileError) as streamed:
        load(config, "gateway")
    assert str(streamed.value) == str(own.value)


def test_devices_validated_as_the_file_is_read_make_the_same_config(tmp_path: Path) -> None:
    text = (ROOT / "configs" / "gateway.example.yaml").read_text(encoding="utf-8")
    path = tmp_path / "gateway.yaml"
    path.write_text(text, encoding="utf-8")
    (tmp_path / "gateway.key").write_bytes(b"")
    data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    whole = GatewayConfig.model_validate(data, context={"base_dir": tmp_path})
    assert len(whole.devices) > 1
    assert load(path, "gateway") == whole
    assert load(path) == whole
