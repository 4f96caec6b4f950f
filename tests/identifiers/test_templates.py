"""Record templates: values at fixed indexes, and back again."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

import identifiers
from identifiers import DeviceRecord, EnterpriseRecord, GatewayRecord, HandleRecord

USCI = "91410100MA44XXXX1" + identifiers.usci_check_char("91410100MA44XXXX1")


def test_usci_check_character() -> None:
    # GB 32100-2015 worked example
    assert identifiers.usci_check_char("91350100M000100Y4") == "3"
    with pytest.raises(ValidationError, match="check character"):
        EnterpriseRecord(name="x", usci=USCI[:-1] + ("0" if USCI[-1] != "0" else "1"),
                         industry="refractory", city="郑州")  # fmt: skip
    with pytest.raises(ValidationError, match="18 characters"):
        EnterpriseRecord(name="x", usci="91410100MA44XXXXI1", industry="i", city="c")


def test_enterprise_round_trip() -> None:
    firm = EnterpriseRecord(name="郑州某耐材有限公司", usci=USCI, industry="耐火材料", city="郑州",
                            url="https://evidence.example.org/firms/911")  # fmt: skip
    values = firm.to_values()
    assert [(v.index, v.type) for v in values] == [
        (1, "GT_TEMPLATE"), (2, "GT_NAME"), (5, "GT_USCI"), (6, "GT_INDUSTRY"), (7, "GT_CITY"),
        (60, "URL"),
    ]  # fmt: skip
    record = HandleRecord(handle="88.709.911/firm", values=tuple(values))
    assert EnterpriseRecord.from_record(record) == firm


def test_gateway_round_trip_and_key_length() -> None:
    key = bytes(range(32))
    gw = GatewayRecord(enterprise="88.709.911/firm", public_key=key)
    values = gw.to_values()
    pubkey = [v for v in values if v.type == "HS_PUBKEY"]
    assert [(v.index, v.data.format, v.text) for v in pubkey] == [
        (300, "base64", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
    ]
    record = HandleRecord(handle="88.709.911/gw.1", values=tuple(values))
    assert GatewayRecord.from_record(record).public_key == key
    with pytest.raises(ValidationError, match="32 bytes"):
        GatewayRecord(enterprise="88.709.911/firm", public_key=b"short")
    with pytest.raises(identifiers.InvalidValue, match="not a device record"):
        DeviceRecord.from_record(record)


def test_device_round_trip_with_stages() -> None:
    device = DeviceRecord(
        enterprise="88.709.911/firm", gateway="88.709.911/gw.1", name="kiln-1",
        manufacturer="Siemens", model="S7-1200", serial="K1-2023-0042",
        location="2号车间", key_equipment=False, stages=("设备管理", "能耗管理"),
        url="https://evidence.example.org/devices/88.709.911/dev.kiln.01",
    )  # fmt: skip
    values = device.to_values()
    stage_values = [(v.index, v.text) for v in values if v.type == "GT_STAGE"]
    assert stage_values == [(20, "设备管理"), (21, "能耗管理")]
    assert next(v.text for v in values if v.type == "GT_KEY_EQUIPMENT") == "false"
    record = HandleRecord(handle="88.709.911/dev.kiln.01", values=tuple(values))
    assert DeviceRecord.from_record(record) == device
    filtered = record.filtered(types=["GT_STAGE"])
    assert len(filtered.values) == 2
    with pytest.raises(ValidationError):
        DeviceRecord(enterprise="not an id", gateway="88.709.911/gw.1")


def test_device_tag_stages_one_value_per_stage_and_back() -> None:
    device = DeviceRecord(
        enterprise="88.709.911/firm", gateway="88.709.911/gw.1", stages=("设备管理",),
        tag_stages={"能耗管理": ("power", "kwh"), "质量管理": ("temp",)},
    )  # fmt: skip
    values = device.to_values()
    assert [(v.index, v.text) for v in values if v.type == "GT_TAG_STAGE"] == [
        (70, "能耗管理:power,kwh"), (71, "质量管理:temp"),
    ]  # fmt: skip
    record = HandleRecord(handle="88.709.911/dev.press", values=tuple(values))
    assert DeviceRecord.from_record(record) == device
    for bad in ({"能耗管理": ()}, {"能耗管理": ("a,b",)}, {"能耗管理": ("x:y",)}):
        with pytest.raises(ValidationError):
            DeviceRecord(enterprise="88.709.911/firm", gateway="88.709.911/gw.1", tag_stages=bad)
    broken = [*values[:-1], identifiers.string_value(71, "GT_TAG_STAGE", "no separator")]
    with pytest.raises(identifiers.InvalidValue, match="GT_TAG_STAGE value 71"):
        DeviceRecord.from_record(HandleRecord(handle="88.709.911/dev.press", values=tuple(broken)))


def test_device_oee_signals_one_value_and_back() -> None:
    oee = identifiers.OeeSignals(
        state="state", running=(2,), planned=(1, 2, 3), total="boards", defects="defects",
        ideal_cycle=22.5,
    )  # fmt: skip
    device = DeviceRecord(enterprise="88.709.911/firm", gateway="88.709.911/gw.1", oee=oee)
    values = device.to_values()
    assert [(v.index, v.text) for v in values if v.type == "GT_OEE"] == [
        (110, "state=state;running=2;planned=1,2,3;total=boards;defects=defects;ideal_cycle=22.5")
    ]
    record = HandleRecord(handle="88.709.911/dev.reflow", values=tuple(values))
    assert DeviceRecord.from_record(record) == device
    assert DeviceRecord.from_record(record).oee == oee
    for bad in (
        {"running": (4,)},  # running but not planned
        {"good": "good"},  # both a good and a reject counter
        {"total": None},  # rejects without parts
        {"ideal_cycle": 0},
        {"state": "a;b"},  # not a tag name: the value's separators
    ):
        with pytest.raises(ValidationError):
            identifiers.OeeSignals.model_validate({**oee.model_dump(), **bad})
    broken = [*values[:-1], identifiers.string_value(110, "GT_OEE", "state=s;state=t")]
    with pytest.raises(identifiers.InvalidValue, match="GT_OEE value is not valid"):
        DeviceRecord.from_record(HandleRecord(handle="88.709.911/dev.x", values=tuple(broken)))
