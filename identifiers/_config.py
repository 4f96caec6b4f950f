"""The identifier node's config file (``kind: identifiers``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, HttpUrl, model_validator

from identifiers._codec import parse_prefix


def _prefix(value: str) -> str:
    return parse_prefix(value) if value != "88" else value


def _prefix_or_root(value: str) -> str:
    """A prefix, or a bare node code like ``88.709`` that covers every firm under that node."""
    segments = value.split(".")
    if len(segments) == 2 and segments[0] == "88":
        if not segments[1].isascii() or not segments[1].isdigit():
            raise ValueError(f"{segments[1]!r} is not a numeric node code")
        return value
    return _prefix(value)


Prefix = Annotated[str, AfterValidator(_prefix_or_root)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Listen(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8088, ge=0, le=65535, description="0 picks a free port")


class Database(_Strict):
    dsn: str = Field(
        description="libpq connection string; leave the password out and use PGPASSFILE"
    )
    pool_min: int = Field(default=1, ge=1, le=100)
    pool_max: int = Field(default=8, ge=1, le=100)

    @model_validator(mode="after")
    def _pool(self) -> Database:
        if self.pool_max < self.pool_min:
            raise ValueError("pool_max is smaller than pool_min")
        return self


class Referral(_Strict):
    """Another node that answers for ``prefix`` (and everything under it)."""

    prefix: Prefix
    url: HttpUrl


class Limits(_Strict):
    batch_records: int = Field(default=2000, ge=1, le=2000)
    values_per_handle: int = Field(default=64, ge=1, le=1024)
    value_bytes: int = Field(default=8192, ge=64, le=1 << 20)
    body_bytes: int = Field(default=32 << 20, ge=1024, le=256 << 20)
    list_page: int = Field(default=1000, ge=1, le=10000)


class NodeConfig(_Strict):
    """One identifier node: where it listens, its registry, what it answers for, whom it refers to.

    A prefix here is component-wise: ``88.709`` covers ``88.709.911`` and ``88.709.911.2``.
    The longest match wins, so a city node authoritative for ``88.709`` can still refer
    ``88.709.911`` to that firm's own enterprise node.
    """

    kind: Literal["identifiers"]
    listen: Listen = Listen()
    database: Database
    authoritative: Annotated[tuple[Prefix, ...], Field(min_length=1)]
    referrals: tuple[Referral, ...] = ()
    limits: Limits = Limits()
    token_max_days: int = Field(
        default=366, ge=1, le=3660, description="longest validity a write token may be given"
    )

    @model_validator(mode="after")
    def _no_overlap(self) -> NodeConfig:
        seen: dict[str, str] = {}
        for prefix in self.authoritative:
            if prefix in seen:
                raise ValueError(f"prefix {prefix!r} is listed twice")
            seen[prefix] = "authoritative"
        for ref in self.referrals:
            if ref.prefix in seen:
                raise ValueError(f"prefix {ref.prefix!r} is both {seen[ref.prefix]} and referred")
            seen[ref.prefix] = "referred"
        return self


def covers(prefix: str, handle_prefix: str) -> bool:
    """Whether ``prefix`` is ``handle_prefix`` or one of its ancestors, segment by segment."""
    return handle_prefix == prefix or handle_prefix.startswith(prefix + ".")
