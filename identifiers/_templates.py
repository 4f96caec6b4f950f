"""Record templates: what the records of a firm, a gateway and a device hold, at fixed indexes.

Fixed indexes make ``index=`` filters meaningful across nodes (``?index=300`` is always a
gateway's key) and let a record be read back into its template with :meth:`from_record`,
which ingest uses to find a gateway's key and evidence uses to find a device's firm.

==========  =========================  ===============================================
index       type                       template
==========  =========================  ===============================================
1           GT_TEMPLATE                all: ``enterprise/1``, ``gateway/1``, ``device/1``
2           GT_NAME                    enterprise name; gateway and device names
3           GT_ENTERPRISE              gateway, device: the firm's identifier
4           GT_GATEWAY                 device: the gateway that reads it
5           GT_USCI                    enterprise: unified social credit code (GB 32100)
6           GT_INDUSTRY                enterprise
7           GT_CITY                    enterprise
8..12       GT_MANUFACTURER, GT_MODEL, GT_SERIAL, GT_LOCATION, GT_KEY_EQUIPMENT (device)
20..51      GT_STAGE                   device: one value per business stage it serves
60          URL                        enterprise, device: evidence page
70..101     GT_TAG_STAGE               device: one value per business stage some of its tags
                                       serve, ``<stage>:<tag>,<tag>…``
110         GT_OEE                     device: the tags OEE is computed from,
                                       ``state=<tag>;running=2;planned=1,2,3;total=<tag>…``
300         HS_PUBKEY                  gateway: its Ed25519 public key
==========  =========================  ===============================================
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from identifiers._codec import parse
from identifiers._errors import InvalidValue
from identifiers._records import DEFAULT_TTL, HandleRecord, HandleValue, ValueData, string_value

_USCI_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCI_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
MAX_STAGES = 32
STAGE_INDEX = 20
TAG_STAGE_INDEX = 70
OEE_INDEX = 110
PUBKEY_INDEX = 300


def usci_check_char(first17: str) -> str:
    """The check character of a unified social credit code (GB 32100-2015)."""
    total = sum(_USCI_CHARS.index(c) * w for c, w in zip(first17, _USCI_WEIGHTS, strict=True))
    return _USCI_CHARS[(31 - total % 31) % 31]


def _usci(value: str) -> str:
    if len(value) != 18 or any(c not in _USCI_CHARS for c in value):
        raise ValueError(
            "a unified social credit code is 18 characters of 0-9 and A-Y (no I O S V Z)"
        )
    if usci_check_char(value[:17]) != value[17]:
        raise ValueError(f"check character should be {usci_check_char(value[:17])!r}")
    return value


def _ed25519(value: bytes) -> bytes:
    if len(value) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, not {len(value)}")
    return value


def _identifier(value: str) -> str:
    return str(parse(value))


IdentifierText = Annotated[str, AfterValidator(_identifier)]
Text = Annotated[str, Field(min_length=1, max_length=256)]
#: a tag name as a gateway config allows it; never ``:`` or ``,``, the separators of a
#: ``GT_TAG_STAGE`` value
TagName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]


class _Template(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    template: ClassVar[str]
    ttl: int = Field(default=DEFAULT_TTL, ge=0, le=2**31 - 1, exclude=True)

    def _head(self) -> list[HandleValue]:
        return [string_value(1, "GT_TEMPLATE", f"{self.template}/1", self.ttl)]

    def _opt(self, out: list[HandleValue], index: int, type_: str, value: str | None) -> None:
        if value is not None:
            out.append(string_value(index, type_, value, self.ttl))

    @classmethod
    def _fields(cls, record: HandleRecord) -> dict[str, str]:
        kind = record.first("GT_TEMPLATE")
        if kind is None or kind.text.split("/")[0] != cls.template:
            raise InvalidValue(record.handle, f"record is not a {cls.template} record")
        return {v.type: v.text for v in sorted(record.values, key=lambda v: v.index)
                if v.data.format == "string"
                and v.type not in ("GT_STAGE", "GT_TAG_STAGE", "GT_OEE")}  # fmt: skip


class EnterpriseRecord(_Template):
    template: ClassVar[str] = "enterprise"
    name: Text
    usci: Annotated[str, AfterValidator(_usci)]
    industry: Text
    city: Text
    url: Annotated[str, Field(max_length=2048)] | None = None

    def to_values(self) -> list[HandleValue]:
        out = self._head()
        for index, type_, value in ((2, "GT_NAME", self.name), (5, "GT_USCI", self.usci),
                                    (6, "GT_INDUSTRY", self.industry), (7, "GT_CITY", self.city),
                                    (60, "URL", self.url)):  # fmt: skip
            self._opt(out, index, type_, value)
        return out

    @classmethod
    def from_record(cls, record: HandleRecord) -> EnterpriseRecord:
        f = cls._fields(record)
        return cls(name=f.get("GT_NAME", ""), usci=f.get("GT_USCI", ""),
                   industry=f.get("GT_INDUSTRY", ""), city=f.get("GT_CITY", ""),
                   url=f.get("URL"))  # fmt: skip


class GatewayRecord(_Template):
    """A gateway: its firm and the Ed25519 public key its envelopes are verified with."""

    template: ClassVar[str] = "gateway"
    enterprise: IdentifierText
    public_key: Annotated[bytes, AfterValidator(_ed25519)] = Field(
        description="raw 32-byte Ed25519 public key"
    )
    name: Text | None = None

    def to_values(self) -> list[HandleValue]:
        out = self._head()
        self._opt(out, 2, "GT_NAME", self.name)
        self._opt(out, 3, "GT_ENTERPRISE", self.enterprise)
        out.append(
            HandleValue(
                index=PUBKEY_INDEX,
                type="HS_PUBKEY",
                data=ValueData(format="base64", value=base64.b64encode(self.public_key).decode()),
                ttl=self.ttl,
            )
        )
        return out

    @classmethod
    def from_record(cls, record: HandleRecord) -> GatewayRecord:
        f = cls._fields(record)
        key = record.first("HS_PUBKEY")
        if key is None or key.data.format != "base64":
            raise InvalidValue(record.handle, "gateway record has no base64 HS_PUBKEY value")
        raw = base64.b64decode(key.text)
        return cls(enterprise=f.get("GT_ENTERPRISE", ""), public_key=raw, name=f.get("GT_NAME"))


class OeeSignals(BaseModel):
    """The tags of a device that OEE is computed from (``GT_OEE``): ``state``, whose values
    in ``running`` count as running and in ``planned`` as planned production time; ``total``,
    a counter of the parts made, and ``good`` or ``defects`` (a counter of good parts, or of
    rejects); ``ideal_cycle``, the seconds one part takes at the rated speed. Only ``state``
    is required: OEE names the signals a device does not declare."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    state: TagName
    running: Annotated[tuple[float, ...], Field(min_length=1, max_length=16)]
    planned: Annotated[tuple[float, ...], Field(min_length=1, max_length=16)]
    total: TagName | None = None
    good: TagName | None = None
    defects: TagName | None = None
    ideal_cycle: float | None = Field(default=None, gt=0, le=86400 * 365)

    @model_validator(mode="after")
    def _consistent(self) -> OeeSignals:
        self.check(self)
        return self

    @staticmethod
    def check(signals: Any) -> None:
        """Raise ValueError unless ``signals`` (these or the gateway config's declaration, which
        has the same fields) hang together."""
        if not set(signals.running) <= set(signals.planned):
            raise ValueError("every 'running' value must also be a 'planned' value")
        if signals.good is not None and signals.defects is not None:
            raise ValueError("declare either 'good' or 'defects', not both")
        if (signals.good or signals.defects) and signals.total is None:
            raise ValueError("'good' and 'defects' need the 'total' counter")

    def to_text(self) -> str:
        parts = [f"state={self.state}", f"running={','.join(map(_fmt, self.running))}",
                 f"planned={','.join(map(_fmt, self.planned))}"]  # fmt: skip
        for key in ("total", "good", "defects"):
            if (tag := getattr(self, key)) is not None:
                parts.append(f"{key}={tag}")
        if self.ideal_cycle is not None:
            parts.append(f"ideal_cycle={_fmt(self.ideal_cycle)}")
        return ";".join(parts)

    @classmethod
    def from_text(cls, text: str) -> OeeSignals:
        """Raise ValueError if ``text`` is not what :meth:`to_text` writes."""
        fields: dict[str, Any] = {}
        for part in text.split(";"):
            key, sep, value = part.partition("=")
            if not sep or key in fields:
                raise ValueError(f"{part!r} is not one 'key=value' of GT_OEE")
            fields[key] = tuple(value.split(",")) if key in ("running", "planned") else value
        return cls.model_validate(fields)


def _fmt(value: float) -> str:
    return f"{value:g}" if value == int(value) and abs(value) < 1e15 else repr(value)


class DeviceRecord(_Template):
    """A device: its firm, the gateway that reads it, and the business stages it serves, as a
    whole (``stages``) or through some of its tags (``tag_stages``: stage → tag names): a
    press whose power tag feeds 能耗管理 serves that stage, not the press as a whole."""

    template: ClassVar[str] = "device"
    enterprise: IdentifierText
    gateway: IdentifierText
    name: Text | None = None
    manufacturer: Text | None = None
    model: Text | None = None
    serial: Text | None = None
    location: Text | None = None
    key_equipment: bool = True
    stages: Annotated[tuple[Text, ...], Field(max_length=MAX_STAGES)] = ()
    tag_stages: Annotated[
        dict[Text, Annotated[tuple[TagName, ...], Field(min_length=1)]],
        Field(max_length=MAX_STAGES),
    ] = {}
    url: Annotated[str, Field(max_length=2048)] | None = None
    oee: OeeSignals | None = None

    def to_values(self) -> list[HandleValue]:
        out = self._head()
        for index, type_, value in (
            (2, "GT_NAME", self.name),
            (3, "GT_ENTERPRISE", self.enterprise),
            (4, "GT_GATEWAY", self.gateway),
            (8, "GT_MANUFACTURER", self.manufacturer),
            (9, "GT_MODEL", self.model),
            (10, "GT_SERIAL", self.serial),
            (11, "GT_LOCATION", self.location),
            (12, "GT_KEY_EQUIPMENT", "true" if self.key_equipment else "false"),
            (60, "URL", self.url),
        ):
            self._opt(out, index, type_, value)
        for i, stage in enumerate(dict.fromkeys(self.stages)):
            out.append(string_value(STAGE_INDEX + i, "GT_STAGE", stage, self.ttl))
        for i, (stage, tags) in enumerate(self.tag_stages.items()):
            text = f"{stage}:{','.join(dict.fromkeys(tags))}"
            out.append(string_value(TAG_STAGE_INDEX + i, "GT_TAG_STAGE", text, self.ttl))
        if self.oee is not None:
            out.append(string_value(OEE_INDEX, "GT_OEE", self.oee.to_text(), self.ttl))
        return out

    @classmethod
    def from_record(cls, record: HandleRecord) -> DeviceRecord:
        f = cls._fields(record)
        stages = tuple(v.text for v in sorted(record.of_type("GT_STAGE"), key=lambda v: v.index))
        tag_stages: dict[str, tuple[str, ...]] = {}
        for value in sorted(record.of_type("GT_TAG_STAGE"), key=lambda v: v.index):
            stage, _, tags = value.text.rpartition(":")
            if not stage or not tags:
                raise InvalidValue(
                    record.handle, f"GT_TAG_STAGE value {value.index} is not '<stage>:<tag>,…'"
                )
            tag_stages[stage] = tag_stages.get(stage, ()) + tuple(tags.split(","))
        oee = None
        if (value := record.first("GT_OEE")) is not None:
            try:
                oee = OeeSignals.from_text(value.text)
            except ValueError as exc:
                raise InvalidValue(record.handle, f"GT_OEE value is not valid: {exc}") from None
        return cls(
            enterprise=f.get("GT_ENTERPRISE", ""),
            gateway=f.get("GT_GATEWAY", ""),
            name=f.get("GT_NAME"),
            manufacturer=f.get("GT_MANUFACTURER"),
            model=f.get("GT_MODEL"),
            serial=f.get("GT_SERIAL"),
            location=f.get("GT_LOCATION"),
            key_equipment=f.get("GT_KEY_EQUIPMENT", "true") == "true",
            stages=stages,
            tag_stages=tag_stages,
            url=f.get("URL"),
            oee=oee,
        )


Template = EnterpriseRecord | GatewayRecord | DeviceRecord
TemplateName = Literal["enterprise", "gateway", "device"]
