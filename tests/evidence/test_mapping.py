"""The 2024 indicator file, and what the two firms' evidence supports of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import evidence

HEALTHY, FAULTY = "88.709.911", "88.709.912"


def test_the_2024_file_quotes_the_items_and_their_rules() -> None:
    ind = evidence.load_indicators()
    assert (ind.version, ind.edition, ind.issued_by) == ("2024.2", 2024, "工信厅企业〔2024〕56号")
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


def assessed(plant: Any, firm: str) -> evidence.Assessment:
    return evidence.assess(plant.collect(firm))


def test_the_healthy_firm(plant: Any) -> None:
    a = assessed(plant, HEALTHY)
    assert a.doubts == ()
    net = a.item("basis.device_networking")
    assert (net.strength, net.points, net.max_points) == ("strong", 6, 6)  # 75 % > 60 %
    assert net.facts == {"key_registered": 4, "key_networked": 3, "rate": 0.75}
    assert a.item("basis.device_digitalization").strength == "partial"  # a lower bound only
    col = a.item("basis.data_collection")
    assert col.facts["automatic"] == ["设备管理", "能耗管理", "质量管理", "安全生产"]
    assert (col.strength, col.points) == ("strong", 2.8)
    for scene in ("equipment_management", "energy_management", "quality_management"):
        item = a.item(f"scene.{scene}.3")
        assert (item.strength, item.points, item.level) == ("partial", None, 3)
    equipment = a.item("scene.equipment_management.3")
    # no device of the plant declares its OEE signals: left to the evaluator
    assert equipment.facts["oee"] == {}
    assert "OEE statistics" in equipment.not_evidenced
    # 生产管控: its only device (spare) never sent anything
    assert a.item("scene.production_control.3").strength == "none"
    assert not hasattr(a, "level")


def test_the_faulty_firm_loses_exactly_what_its_faults_took(plant: Any) -> None:
    a = assessed(plant, FAULTY)
    assert a.doubts == ("1 envelopes missing without a declared loss",)
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
    assert a.item("scene.quality_management.3").strength == "none"


def test_a_complete_device_stays_weak_evidence_while_the_chain_has_an_undeclared_gap(
    plant: Any,
) -> None:
    """Measured against a 2 s interval the kiln is complete, but the gap keeps the doubt."""
    ev = plant.collect(FAULTY, params=evidence.Params(expected_interval=2.0, fresh_within=60))
    a = evidence.assess(ev)
    assert a.item("scene.equipment_management.3").facts["complete"] == [f"{FAULTY}/dev.kiln"]
    assert a.item("scene.equipment_management.3").strength == "weak"  # still in doubt


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: d["items"][0]["rule"]["bands"].pop(), "only the last band has max: null"),
        (lambda d: d["items"][0].update(colour="red"), "items.0.colour: Extra inputs"),
        (lambda d: d["items"][2]["rule"].update(kind="guess"), "items.2.rule"),
        (lambda d: d["items"].append(d["items"][0]), "item ids must be unique"),
        (lambda d: d["items"][3].pop("level"), "needs its level"),
        (lambda d: d["items"][3]["rule"].update(oee_evidences="OEE"), "is not one of not_evid"),
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
