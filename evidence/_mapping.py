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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evidence._errors import IndicatorFileError
from evidence._models import FirmEvidence

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


class SceneStageRule(_Strict):
    kind: Literal["scene_stage"]
    stage: str
    min_completeness: float = Field(ge=0, le=1)
    #: the entry of ``not_evidenced`` that OEE computed for a key device serving the stage
    #: evidences (it is then left out of what the evaluator must still check)
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
    not_evidenced: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _scored(self) -> Item:
        if not isinstance(self.rule, SceneStageRule) and self.points is None:
            raise ValueError(f"{self.id}: a scored item needs points")
        if isinstance(self.rule, SceneStageRule) and self.level is None:
            raise ValueError(f"{self.id}: a scene item needs its level")
        oee = getattr(self.rule, "oee_evidences", None)
        if oee is not None and oee not in self.not_evidenced:
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


@dataclass(frozen=True, slots=True)
class Assessment:
    """Item by item; deliberately without a total or a level (see the module docstring)."""

    version: str
    firm: str
    items: tuple[ItemSupport, ...]
    #: reasons the evidence's integrity is in doubt; any makes every strength ``weak``
    doubts: tuple[str, ...]

    def item(self, item_id: str) -> ItemSupport:
        for it in self.items:
            if it.id == item_id:
                return it
        raise KeyError(item_id)


def _cap(strength: Strength, item: Item, doubts: tuple[str, ...]) -> Strength:
    ranks = [STRENGTHS.index(strength), STRENGTHS.index(item.max_strength)]
    if doubts:
        ranks.append(STRENGTHS.index("weak"))
    return STRENGTHS[min(ranks)]  # type: ignore[return-value]


def _doubts(ev: FirmEvidence) -> tuple[str, ...]:
    i = ev.integrity
    found = []
    if i.bad_signatures:
        found.append(f"{i.bad_signatures} envelopes with an invalid signature")
    if i.undeclared_missing:
        found.append(f"{i.undeclared_missing} envelopes missing without a declared loss")
    if i.chain_breaks:
        found.append(f"{i.chain_breaks} chain breaks")
    return tuple(found)


def _bands(item: Item, rule: BandsRule, ev: FirmEvidence, doubts: tuple[str, ...]) -> ItemSupport:
    net = ev.networking
    facts = {"key_registered": net.key_registered, "key_networked": net.key_networked,
             "rate": net.rate}  # fmt: skip
    if net.rate is None:
        return ItemSupport(item.id, item.dimension, item.item, item.level, "none", None,
                           item.points, "no key equipment registered for the firm", facts,
                           item.not_evidenced)  # fmt: skip
    points = next(b.points for b in rule.bands if b.max is None or net.rate <= b.max)
    basis = (f"{net.key_networked} of {net.key_registered} registered key devices sent fresh "
             f"good data in the window ({net.rate:.1%})")  # fmt: skip
    return ItemSupport(item.id, item.dimension, item.item, item.level,
                       _cap("strong", item, doubts), points, item.points, basis, facts,
                       item.not_evidenced)  # fmt: skip


def _per_stage(
    item: Item, rule: PerStageRule, ev: FirmEvidence, doubts: tuple[str, ...]
) -> ItemSupport:
    automatic = [s for s in rule.stages if (c := ev.stage(s)) is not None and c.automatic]
    other = [c.stage for c in ev.stages if c.automatic and c.stage not in rule.stages]
    facts = {"automatic": automatic, "not_in_item": other}
    points = min(item.points or 0.0, round(rule.points_each * len(automatic), 6))
    strength: Strength = "strong" if automatic else "none"
    basis = (f"automatic collection in {len(automatic)} of the {len(rule.stages)} stages "
             f"listed: {'、'.join(automatic) or '—'}")  # fmt: skip
    return ItemSupport(item.id, item.dimension, item.item, item.level,
                       _cap(strength, item, doubts), points, item.points, basis, facts,
                       item.not_evidenced)  # fmt: skip


def _scene(
    item: Item, rule: SceneStageRule, ev: FirmEvidence, doubts: tuple[str, ...]
) -> ItemSupport:
    serving = [d for d in ev.devices if rule.stage in d.stages and d.key_equipment]
    live = [d for d in serving if d.networked]
    complete = [d for d in live if (d.completeness or 0.0) >= rule.min_completeness]
    facts = {"key_devices": [d.identifier for d in serving],
             "networked": [d.identifier for d in live],
             "complete": [d.identifier for d in complete],
             "min_completeness": rule.min_completeness}  # fmt: skip
    if complete:
        strength: Strength = "strong"
        basis = (f"{len(complete)} key devices of {rule.stage} collected in real time with "
                 f"completeness >= {rule.min_completeness:.0%}")  # fmt: skip
    elif live:
        strength = "weak"
        basis = (f"{len(live)} key devices of {rule.stage} networked, none with completeness "
                 f">= {rule.min_completeness:.0%}")  # fmt: skip
    else:
        strength = "none"
        basis = f"no networked key device serves {rule.stage}"
    not_evidenced = item.not_evidenced
    if rule.oee_evidences is not None:
        oee = {d.identifier: d.oee.oee for d in serving if d.oee and d.oee.oee is not None}
        facts["oee"] = oee
        if oee:
            basis += f"; OEE computed for {len(oee)} of them"
            not_evidenced = tuple(n for n in not_evidenced if n != rule.oee_evidences)
    return ItemSupport(item.id, item.dimension, item.item, item.level,
                       _cap(strength, item, doubts), None, None, basis, facts,
                       not_evidenced)  # fmt: skip


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
    return Assessment(indicators.version, ev.firm, tuple(items), doubts)
