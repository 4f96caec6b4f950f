"""From metrics to indicator items: which items the evidence supports, and how strongly.

The items and their rules are data (``indicators_2024.yaml``), validated strictly when
loaded. Applying them never yields a level: a level also depends on items no machine data
can show (strategy, management, results), so an assessment lists item by item what the
measured facts support, with the points a scored item's rule gives for them, and what the
evaluator must still check.

Strength, weakest first: ``none`` (nothing measured supports it), ``weak`` (measured, but
the data's integrity is in doubt or below the item's completeness limit), ``partial`` (only
part of the item can be shown by machine data), ``strong`` (its measurable content is
evidenced by verified data). An item's ``max_strength`` caps it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evidence._errors import IndicatorFileError
from evidence._metrics import serves
from evidence._models import DeviceEvidence, FirmEvidence, TagEvidence

INDICATORS_2024 = Path(__file__).with_name("indicators_2024.yaml")
STRENGTHS = ("none", "weak", "partial", "strong")
Strength = Literal["none", "weak", "partial", "strong"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Band(_Strict):
    max: float | None = Field(ge=0, le=1)
    points: float = Field(ge=0)


class BandsRule(_Strict):
    kind: Literal["bands"]
    bands: tuple[Band, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> BandsRule:
        limits = [b.max for b in self.bands]
        if limits[-1] is not None or None in limits[:-1]:
            raise ValueError("only the last band has max: null, and it must have it")
        if limits[:-1] != sorted(set(limits[:-1])):  # type: ignore[type-var]
            raise ValueError("band limits must increase")
        return self


class PerStageRule(_Strict):
    kind: Literal["per_stage"]
    points_each: float = Field(gt=0)
    stages: tuple[str, ...] = Field(min_length=1)


class Text(_Strict):
    """A fixed text of the indicator file in both languages of the page and the report."""

    zh: str = Field(min_length=1)
    en: str = Field(min_length=1)


class SceneStageRule(_Strict):
    kind: Literal["scene_stage"]
    stage: str
    min_completeness: float = Field(ge=0, le=1)
    #: the entry of ``not_evidenced`` (its ``en`` text) that OEE computed for a key device
    #: serving the stage evidences (it is then left out of what the evaluator must still check)
    oee_evidences: str | None = None


Rule = Annotated[BandsRule | PerStageRule | SceneStageRule, Field(discriminator="kind")]


class Item(_Strict):
    id: str = Field(pattern=r"^[a-z_]+(\.[a-z0-9_]+)+$")
    dimension: str
    item: str
    text: str | None = None
    description: str | None = None
    points: float | None = Field(default=None, gt=0)
    level: int | None = Field(default=None, ge=1, le=4)
    metric: Literal["networking.rate", "stages"]
    rule: Rule
    max_strength: Literal["partial", "strong"]
    not_evidenced: tuple[Text, ...] = ()

    @model_validator(mode="after")
    def _scored(self) -> Item:
        if not isinstance(self.rule, SceneStageRule) and self.points is None:
            raise ValueError(f"{self.id}: a scored item needs points")
        if isinstance(self.rule, SceneStageRule) and self.level is None:
            raise ValueError(f"{self.id}: a scene item needs its level")
        oee = getattr(self.rule, "oee_evidences", None)
        if oee is not None and oee not in (n.en for n in self.not_evidenced):
            raise ValueError(f"{self.id}: oee_evidences {oee!r} is not one of not_evidenced")
        return self


class Indicators(_Strict):
    version: str
    edition: int
    title: str
    issued_by: str
    levels: dict[int, float]
    items: tuple[Item, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Indicators:
        ids = [i.id for i in self.items]
        if len(ids) != len(set(ids)):
            raise ValueError("item ids must be unique")
        return self


def load_indicators(path: Path | str = INDICATORS_2024) -> Indicators:
    """Read and validate an indicator file; every problem is named in the error."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise IndicatorFileError(str(path), [str(exc)]) from exc
    try:
        return Indicators.model_validate(doc)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise IndicatorFileError(str(path), problems) from None


@dataclass(frozen=True, slots=True)
class ItemSupport:
    """One item's support. Every text is given in English (``basis``, ``not_evidenced``) and
    in Chinese (``basis_zh``, ``not_evidenced_zh``, entry for entry)."""

    id: str
    dimension: str
    item: str
    level: int | None
    strength: Strength
    #: the points the item's rule gives the measured facts (scored items), else None
    points: float | None
    max_points: float | None
    basis: str
    facts: dict[str, Any] = field(default_factory=dict)
    not_evidenced: tuple[str, ...] = ()
    basis_zh: str = ""
    not_evidenced_zh: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Assessment:
    """Item by item; deliberately without a total or a level (see the module docstring)."""

    version: str
    firm: str
    items: tuple[ItemSupport, ...]
    #: reasons the evidence's integrity is in doubt; any makes every strength ``weak``
    doubts: tuple[str, ...]
    #: the same reasons in Chinese, one for one
    doubts_zh: tuple[str, ...] = ()

    def item(self, item_id: str) -> ItemSupport:
        for it in self.items:
            if it.id == item_id:
                return it
        raise KeyError(item_id)


#: a text in English and in Chinese
Said = tuple[str, str]


def _support(
    item: Item,
    strength: Strength,
    points: float | None,
    basis: Said,
    facts: dict[str, Any],
    *,
    doubts: tuple[Said, ...],
    not_evidenced: tuple[Text, ...] | None = None,
) -> ItemSupport:
    if not_evidenced is None:
        not_evidenced = item.not_evidenced
    return ItemSupport(
        id=item.id,
        dimension=item.dimension,
        item=item.item,
        level=item.level,
        strength=_cap(strength, item, doubts),
        points=points,
        max_points=item.points,
        basis=basis[0],
        facts=facts,
        not_evidenced=tuple(n.en for n in not_evidenced),
        basis_zh=basis[1],
        not_evidenced_zh=tuple(n.zh for n in not_evidenced),
    )


def _cap(strength: Strength, item: Item, doubts: tuple[Said, ...]) -> Strength:
    ranks = [STRENGTHS.index(strength), STRENGTHS.index(item.max_strength)]
    if doubts:
        ranks.append(STRENGTHS.index("weak"))
    return STRENGTHS[min(ranks)]  # type: ignore[return-value]


def _doubts(ev: FirmEvidence) -> tuple[Said, ...]:
    i = ev.integrity
    found = []
    if i.bad_signatures:
        found.append((f"{i.bad_signatures} envelopes with an invalid signature",
                      f"{i.bad_signatures}个数据包签名无效"))  # fmt: skip
    if i.undeclared_missing:
        found.append((f"{i.undeclared_missing} envelopes missing without a declared loss",
                      f"{i.undeclared_missing}个数据包缺失，且网关未声明丢失"))  # fmt: skip
    if i.chain_breaks:
        found.append((f"{i.chain_breaks} chain breaks", f"哈希链断裂{i.chain_breaks}处"))
    return tuple(found)


def _bands(item: Item, rule: BandsRule, ev: FirmEvidence, doubts: tuple[Said, ...]) -> ItemSupport:
    net = ev.networking
    facts = {"key_registered": net.key_registered, "key_networked": net.key_networked,
             "rate": net.rate}  # fmt: skip
    if net.rate is None:
        basis = ("no key equipment registered for the firm", "企业未登记关键设备")
        return _support(item, "none", None, basis, facts, doubts=doubts)
    points = next(b.points for b in rule.bands if b.max is None or net.rate <= b.max)
    basis = (f"{net.key_networked} of {net.key_registered} registered key devices sent fresh "
             f"good data in the window ({net.rate:.1%})",
             f"已登记关键设备{net.key_registered}台，其中{net.key_networked}台在评估窗口内"
             f"有及时、质量良好的数据（{net.rate:.1%}）")  # fmt: skip
    return _support(item, "strong", points, basis, facts, doubts=doubts)


def _per_stage(
    item: Item, rule: PerStageRule, ev: FirmEvidence, doubts: tuple[Said, ...]
) -> ItemSupport:
    automatic = [s for s in rule.stages if (c := ev.stage(s)) is not None and c.automatic]
    other = [c.stage for c in ev.stages if c.automatic and c.stage not in rule.stages]
    facts = {"automatic": automatic, "not_in_item": other}
    points = min(item.points or 0.0, round(rule.points_each * len(automatic), 6))
    strength: Strength = "strong" if automatic else "none"
    listed = "、".join(automatic) or "—"
    basis = (f"automatic collection in {len(automatic)} of the {len(rule.stages)} stages "
             f"listed: {listed}",
             f"所列{len(rule.stages)}个业务环节中，{len(automatic)}个实现数据自动采集："
             f"{listed}")  # fmt: skip
    return _support(item, strength, points, basis, facts, doubts=doubts)


def _by_tags(basis: Said, devices: list[DeviceEvidence]) -> Said:
    if not devices:
        return basis
    n = len(devices)
    return (f"{basis[0]} ({n} of them through the tags that serve the stage, judged by those)",
            f"{basis[1]}（其中{n}台经服务于该环节的点位采集，按这些点位计）")  # fmt: skip


def _scene(
    item: Item, rule: SceneStageRule, ev: FirmEvidence, doubts: tuple[Said, ...]
) -> ItemSupport:
    limit, stage = f"{rule.min_completeness:.0%}", rule.stage
    tags: dict[str, list[TagEvidence]] = defaultdict(list)
    for t in ev.tags:
        tags[t.device].append(t)
    # a key device serves the stage as a whole, or through some of its tags (then judged by them)
    services = {d.identifier: s for d in ev.devices if d.key_equipment
                and (s := serves(d, stage, tags[d.identifier], ev.params, ev.as_of))}  # fmt: skip
    serving = [d for d in ev.devices if d.identifier in services]
    live = [d for d in serving if services[d.identifier].networked]
    complete = [
        d for d in live if (services[d.identifier].completeness or 0.0) >= rule.min_completeness
    ]
    through = {name: list(s.tags) for name, s in services.items() if s.tags is not None}
    facts = {"key_devices": [d.identifier for d in serving],
             "networked": [d.identifier for d in live],
             "complete": [d.identifier for d in complete],
             "through_tags": through,
             "min_completeness": rule.min_completeness}  # fmt: skip
    if complete:
        strength: Strength = "strong"
        basis = (f"{len(complete)} key devices of {stage} collected in real time with "
                 f"completeness >= {limit}",
                 f"{stage}关键设备{len(complete)}台实时采集，数据完整率≥{limit}")  # fmt: skip
        basis = _by_tags(basis, [d for d in complete if d.identifier in through])
    elif live:
        strength = "weak"
        basis = (f"{len(live)} key devices of {stage} networked, none with completeness "
                 f">= {limit}",
                 f"{stage}关键设备{len(live)}台已联网，但数据完整率均未达到{limit}")  # fmt: skip
        basis = _by_tags(basis, [d for d in live if d.identifier in through])
    else:
        strength = "none"
        basis = (f"no networked key device serves {stage}", f"没有服务于{stage}的已联网关键设备")
    not_evidenced = item.not_evidenced
    if rule.oee_evidences is not None:
        oee = {d.identifier: d.oee.oee for d in serving if d.oee and d.oee.oee is not None}
        facts["oee"] = oee
        if oee:
            basis = (basis[0] + f"; OEE computed for {len(oee)} of them",
                     basis[1] + f"；其中{len(oee)}台已计算OEE")  # fmt: skip
            not_evidenced = tuple(n for n in not_evidenced if n.en != rule.oee_evidences)
    return _support(item, strength, None, basis, facts, doubts=doubts, not_evidenced=not_evidenced)


def assess(ev: FirmEvidence, indicators: Indicators | None = None) -> Assessment:
    """Apply the indicator file (default: the 2024 one) to a firm's evidence."""
    indicators = indicators or load_indicators()
    doubts = _doubts(ev)
    items = []
    for item in indicators.items:
        rule = item.rule
        if isinstance(rule, BandsRule):
            items.append(_bands(item, rule, ev, doubts))
        elif isinstance(rule, PerStageRule):
            items.append(_per_stage(item, rule, ev, doubts))
        else:
            items.append(_scene(item, rule, ev, doubts))
    return Assessment(
        indicators.version,
        ev.firm,
        tuple(items),
        tuple(en for en, _ in doubts),
        tuple(zh for _, zh in doubts),
    )
