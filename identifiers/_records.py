"""Handle values and records, the JSON shape of the Handle.Net REST API.

A record is a list of typed values ``{index, type, data: {format, value}, ttl, timestamp}``.
The same models validate what a node accepts and what a client receives, so a record read from
one node can be written to another unchanged.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

#: TTL of a value when the writer gives none (Handle.Net's default, one day)
DEFAULT_TTL = 86400
#: clients ignore TTLs longer than this (two days): a key change must reach everyone in time
MAX_CACHE_TTL = 172800
#: value types that only the prefix's own token may read (Handle admin and secret keys)
NON_PUBLIC_TYPES = frozenset({"HS_ADMIN", "HS_SECKEY"})
#: index of the admin value the node adds when a writer gives none (Handle.Net's convention)
ADMIN_INDEX = 100

_TYPE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,63}")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})*")
_INT32 = 2**31 - 1
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(text: str) -> str:
    """Refuse text that UTF-8 or PostgreSQL cannot hold, so it is a 202 and not a failed write.

    JSON can carry both ``\\u0000`` and an unpaired surrogate such as ``\\ud800``; neither is
    valid in a PostgreSQL text or jsonb value, and a surrogate is not even encodable as UTF-8.
    """
    bad = _UNSTORABLE.search(text)
    if bad is None:
        return text
    if bad.group() == "\x00":
        raise ValueError("text must not contain U+0000")
    raise ValueError(f"text holds an unpaired surrogate U+{ord(bad.group()):04X}, not Unicode")


Storable = Annotated[str, AfterValidator(_storable)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AdminRef(_Strict):
    """``HS_ADMIN`` data: who may change the record (a handle and index of its key)."""

    handle: Storable = Field(min_length=1, max_length=255)
    index: int = Field(ge=1, le=_INT32)
    permissions: Annotated[str, Field(pattern=r"^[01]{12}$")] = "011111110011"


class ValueData(_Strict):
    format: Literal["string", "base64", "hex", "admin"]
    value: str | AdminRef

    @model_validator(mode="after")
    def _matches_format(self) -> ValueData:
        if self.format == "admin":
            if not isinstance(self.value, AdminRef):
                raise ValueError("format 'admin' needs an object {handle, index, permissions}")
            return self
        if not isinstance(self.value, str):
            raise ValueError(f"format {self.format!r} needs a string value")
        _storable(self.value)
        if self.format == "base64":
            try:
                base64.b64decode(self.value, validate=True)
            except binascii.Error:
                raise ValueError("value is not valid base64") from None
        if self.format == "hex" and not _HEX.fullmatch(self.value):
            raise ValueError("value is not an even number of hex digits")
        return self

    def size(self) -> int:
        """Bytes of the value as stored, the measure the node's size limit applies to."""
        if isinstance(self.value, AdminRef):
            return len(self.value.handle.encode()) + 16
        return len(self.value.encode())


class HandleValue(_Strict):
    index: int = Field(ge=1, le=_INT32)
    type: Annotated[str, Field(pattern=f"^{_TYPE.pattern}$")]
    data: ValueData
    ttl: int = Field(default=DEFAULT_TTL, ge=0, le=_INT32)
    #: set by the node when the value is written; ignored when a client sends it
    timestamp: str | None = None

    @property
    def text(self) -> str:
        """The value as a string: the string itself, or base64/hex text, or the admin handle."""
        value = self.data.value
        return value.handle if isinstance(value, AdminRef) else value

    def content(self) -> dict[str, Any]:
        """What the value says, without when it was written: two writes compare equal on this."""
        return self.model_dump(mode="json", exclude={"timestamp"})


class HandleRecord(_Strict):
    """A resolved record; ``values`` may be filtered by type and index."""

    handle: str
    values: tuple[HandleValue, ...] = ()

    def of_type(self, type_: str) -> tuple[HandleValue, ...]:
        return tuple(v for v in self.values if v.type == type_)

    def first(self, type_: str) -> HandleValue | None:
        """The lowest-index value of ``type_``; Handle clients take that one when there are many."""
        found = sorted(self.of_type(type_), key=lambda v: v.index)
        return found[0] if found else None

    def filtered(self, types: Iterable[str] = (), indexes: Iterable[int] = ()) -> HandleRecord:
        """Values matching any of ``types`` or ``indexes``, as Handle.Net's ``type=``/``index=``."""
        types, indexes = set(types), set(indexes)
        if not types and not indexes:
            return self
        kept = tuple(v for v in self.values if v.type in types or v.index in indexes)
        return self.model_copy(update={"values": kept})

    def ttl(self, cap: int = MAX_CACHE_TTL) -> int:
        """How long a cache may keep the record: its shortest TTL, never over ``cap``."""
        return min([cap, *(v.ttl for v in self.values)])


def string_value(index: int, type_: str, value: str, ttl: int = DEFAULT_TTL) -> HandleValue:
    return HandleValue(
        index=index, type=type_, data=ValueData(format="string", value=value), ttl=ttl
    )


def admin_value(prefix: str) -> HandleValue:
    """The ``HS_ADMIN`` value naming the prefix's owner, added when a writer gives none."""
    return HandleValue(
        index=ADMIN_INDEX,
        type="HS_ADMIN",
        data=ValueData(format="admin", value=AdminRef(handle=f"0.NA/{prefix}", index=200)),
    )
