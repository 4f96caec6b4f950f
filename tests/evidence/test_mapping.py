"""The 2024 indicator file, and what the two firms' evidence supports of it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

import evidence

HEALTHY, FAULTY = "88.709.911", "88.709.912"


def test_the_2024_file_quotes_the_items_and_their_rules() -> None:
    ind = evidence.load_indicators()
    assert (ind.version, ind.edition, ind.issued_by) == ("2024.3", 2024, "工信厅企业〔2024〕56号")
    by_id = {i.id: i for i in ind.items}
    net = by_id["basis.device_networking"]
    assert (net.dimension, net.item, net.text, net.points) == (
        "数字化基础", "设备联网", "生产设备联网率", 6
    )  # fmt: skip
    assert [(b.max, b.points) for b in net.rule.bands] == [  # type: ignore[union-attr]
        (0.10, 0), (0.20, 1.5), (0.40, 3), (0.60, 4.5), (None, 6)
    ]  # fmt: skip
    collection = by_id["basis.data_collection"]
    assert collection.rule.points_each == 0.7  # type: ignore[union-attr]
    assert {"设备管理", "能耗管理", "质量管理", "生产管控", "安全生产"} <= set(
        collection.rule.stages  # type: ignore[union-attr]
    )
    scenes = {(i.item, i.level) for i in ind.items if i.dimension == "数字化经营"}
    assert {("设备管理", 3), ("能耗管理", 3)} <= scenes
    assert all(i.max_strength == "partial" for i in ind.items if i.level is not None)
    # what is left to the evaluator is said in both languages
    equipment = by_id["scene.equipment_management.3"]
    assert [(n.zh, n.en) for n in equipment.not_evidenced] == [
        ("故障分析", "fault analysis"),
        ("远程诊断", "remote diagnosis"),
        ("OEE统计", "OEE statistics"),
    ]


def assessed(plant: Any, firm: str) -> evidence.Assessment:
    return evidence.assess(plant.collect(firm))


def test_the_healthy_firm(plant: Any) -> None:
    a = assessed(plant, HEALTHY)
    assert a.doubts == ()
    net = a.item("basis.device_networking")
    assert (net.strength, net.points, net.max_points) == ("strong", 6, 6)  # 75 % > 60 %
    assert net.facts == {"key_registered": 4, "key_networked": 3, "rate": 0.75}
    assert net.basis == "3 of 4 registered key devices sent fresh good data in the window (75.0%)"
    assert net.basis_zh == "已登记关键设备4台，其中3台在评估窗口内有及时、质量良好的数据（75.0%）"
    assert net.not_evidenced_zh == ("设备台账包含全部生产设备（现场核实）",)
    assert a.item("basis.device_digitalization").strength == "partial"  # a lower bound only
    col = a.item("basis.data_collection")
    assert col.facts["automatic"] == ["设备管理", "能耗管理", "质量管理", "安全生产"]
    assert (col.strength, col.points) == ("strong", 2.8)
    assert (
        col.basis_zh
        == "所列7个业务环节中，4个实现数据自动采集：设备管理、能耗管理、质量管理、安全生产"
    )
    assert col.not_evidenced_zh == (
        "由业务系统而非设备采集数据的业务环节", "问卷所列其余业务环节，以及人力资源（0.9分）"
    )  # fmt: skip
    assert len(col.not_evidenced) == len(col.not_evidenced_zh)
    for scene in ("equipment_management", "energy_management", "quality_management"):
        item = a.item(f"scene.{scene}.3")
        assert (item.strength, item.points, item.level) == ("partial", None, 3)
    equipment = a.item("scene.equipment_management.3")
    # no device of the plant declares its OEE signals: left to the evaluator
    assert equipment.facts["oee"] == {}
    assert "OEE statistics" in equipment.not_evidenced
    assert "OEE统计" in equipment.not_evidenced_zh
    assert equipment.basis_zh == "设备管理关键设备2台实时采集，数据完整率≥95%"
    # 生产管控: its only device (spare) never sent anything
    assert a.item("scene.production_control.3").strength == "none"
    assert not hasattr(a, "level")


def test_the_faulty_firm_loses_exactly_what_its_faults_took(plant: Any) -> None:
    a = assessed(plant, FAULTY)
    assert a.doubts == ("1 envelopes missing without a declared loss",)
    assert a.doubts_zh == ("1个数据包缺失，且网关未声明丢失",)
    net = a.item("basis.device_networking")
    assert (net.points, net.facts["rate"]) == (3, 0.25)  # 25 %: the ≤40 % band
    assert net.strength == "weak"  # an undeclared gap puts every item in doubt
    col = a.item("basis.data_collection")
    # the press (质量管理) went offline, the fan (安全生产) sends only bad quality
    assert col.facts["automatic"] == ["设备管理", "能耗管理"]
    assert col.points == 1.4
    # the kiln alone serves both scenes, at 330 of 360 samples: below 95 %
    equipment = a.item("scene.equipment_management.3")
    assert equipment.facts["networked"] == [f"{FAULTY}/dev.kiln"]
    assert equipment.facts["complete"] == []
    assert equipment.strength == "weak"
    assert equipment.basis_zh == "设备管理关键设备1台已联网，但数据完整率均未达到95%"
    quality = a.item("scene.quality_management.3")
    assert quality.strength == "none"
    assert quality.basis_zh == "没有服务于质量管理的已联网关键设备"


def test_a_complete_device_stays_weak_evidence_while_the_chain_has_an_undeclared_gap(
    plant: Any,
) -> None:
    """Measured against a 2 s interval the kiln is complete, but the gap keeps the doubt."""
    ev = plant.collect(FAULTY, params=evidence.Params(expected_interval=2.0, fresh_within=60))
    a = evidence.assess(ev)
    assert a.item("scene.equipment_management.3").facts["complete"] == [f"{FAULTY}/dev.kiln"]
    assert a.item("scene.equipment_management.3").strength == "weak"  # still in doubt


def assessed_with(plant: Any, firm: str, records: dict[str, dict[str, Any]]) -> Any:
    """The assessment of ``firm`` with its device records changed as ``records`` says
    (device suffix → fields of :class:`evidence.RegisteredDevice`)."""
    registered = [
        dataclasses.replace(d, **records.get(d.identifier.split("/")[1], {}))
        for d in plant.registered[firm]
    ]
    with psycopg.connect(plant.dsn) as conn:
        ev = evidence.collect(
            conn, f"{firm}/firm", plant.window(), registered, as_of=plant.at(180),
            params=evidence.Params(fresh_within=60, outage_after=30),
        )  # fmt: skip
    return evidence.assess(ev)


def test_a_key_device_serves_a_scene_through_some_of_its_tags_judged_by_those_tags(
    plant: Any,
) -> None:
    """The kiln serves 能耗管理 through its power tag only (``GT_TAG_STAGE``), and the meter,
    which served it as a whole, no longer does."""

    def energy(firm: str, tags: tuple[str, ...]) -> evidence.ItemSupport:
        records = {
            "dev.kiln": {"stages": ("设备管理",), "tag_stages": {"能耗管理": tags}},
            "dev.meter": {"stages": ()},
        }
        return assessed_with(plant, firm, records).item("scene.energy_management.3")

    kiln = f"{HEALTHY}/dev.kiln"
    healthy = energy(HEALTHY, ("power",))
    assert healthy.strength == "partial"  # the scene's cap: its collection part is evidenced
    assert (healthy.facts["key_devices"], healthy.facts["complete"]) == ([kiln], [kiln])
    assert healthy.facts["through_tags"] == {kiln: ["power"]}
    assert healthy.basis_zh == (
        "能耗管理关键设备1台实时采集，数据完整率≥95%（其中1台经服务于该环节的点位采集，按这些点位计）"
    )
    assert healthy.basis.startswith("1 key devices of 能耗管理 collected in real time")
    # the faulty kiln's power tag is networked, at 165 of 180 samples: below 95 %
    faulty = energy(FAULTY, ("power",))
    assert faulty.facts["networked"] == [f"{FAULTY}/dev.kiln"]
    assert faulty.facts["complete"] == []
    assert faulty.strength == "weak"
    # judged by its tags, not by the device: a tag that never sent anything does not serve
    # the stage, however live and complete the kiln's other tags are
    idle = energy(HEALTHY, ("level",))
    assert (idle.facts["key_devices"], idle.facts["networked"]) == ([kiln], [])
    assert idle.strength == "none"
    assert idle.basis_zh == "没有服务于能耗管理的已联网关键设备"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: d["items"][0]["rule"]["bands"].pop(), "only the last band has max: null"),
        (lambda d: d["items"][0].update(colour="red"), "items.0.colour: Extra inputs"),
        (lambda d: d["items"][2]["rule"].update(kind="guess"), "items.2.rule"),
        (lambda d: d["items"].append(d["items"][0]), "item ids must be unique"),
        (lambda d: d["items"][3].pop("level"), "needs its level"),
        (lambda d: d["items"][3]["rule"].update(oee_evidences="OEE"), "is not one of not_evid"),
        (lambda d: d["items"][0]["not_evidenced"][0].pop("zh"), "items.0.not_evidenced.0.zh"),
        (lambda d: d["items"][0]["not_evidenced"].append("a text"), "items.0.not_evidenced.1"),
    ],
)
def test_a_bad_indicator_file_is_refused_naming_the_problem(
    tmp_path: Path, change: Any, problem: str
) -> None:
    doc = yaml.safe_load(evidence.INDICATORS_2024.read_text(encoding="utf-8"))
    change(doc)
    path = tmp_path / "indicators.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    with pytest.raises(evidence.IndicatorFileError) as err:
        evidence.load_indicators(path)
    assert err.value.path == str(path)
    assert any(problem in p for p in err.value.problems), err.value.problems
