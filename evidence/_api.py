"""The evidence HTTP API (``/api/v1``) and the web page, as one FastAPI app.

Firms and devices are named by their identifiers in query parameters (``?firm=88.709.911/firm``):
a Handle's suffix may itself hold ``/``, which a path segment cannot carry through proxies.
Every answer but ``/healthz`` and the page's static files (which hold no data) needs a bearer
token; the firm of every request is checked against the token's scope before anything is read,
so the answer to a firm outside the scope is the same 403 whether the firm exists or not.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import AwareDatetime

import identifiers
from evidence import _live
from evidence._access import Grant
from evidence._errors import AccessDenied, InvalidWindow, RegistryError, StoreUnavailable
from evidence._html import render_html
from evidence._mapping import Assessment
from evidence._models import FirmEvidence, Window

if TYPE_CHECKING:
    from evidence._service import Service

logger = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
_bearer = HTTPBearer(auto_error=False, description="a token from the evidence config")


class _Refused(Exception):
    """A request that names something wrong (422) or missing (404)."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Me:
    name: str
    role: str
    #: None for an admin, who sees every firm
    firms: list[str] | None
    expires: dt.datetime | None


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    identifier: str
    name: str | None
    gateway: str | None
    #: on the firm's identifier records; a device only in the store is shown, never counted
    registered: bool
    key_equipment: bool
    stages: tuple[str, ...]
    #: stages some of its tags serve: stage → tag names
    tag_stages: dict[str, tuple[str, ...]]
    tags: int
    last_sample: dt.datetime | None
    age: float | None
    #: live: newest sample at most ``fresh_within`` old; stale: older; silent: never sent
    status: Literal["live", "stale", "silent"]
    #: the tags its OEE is computed from, as its record declares them (``GT_OEE``)
    oee: identifiers.OeeSignals | None = None


@dataclass(frozen=True, slots=True)
class Devices:
    firm: str
    as_of: dt.datetime
    fresh_within: float
    #: when the device records were read; older than ``cache_seconds`` while the identifier
    #: node cannot answer
    records_read: dt.datetime
    devices: list[DeviceStatus]


@dataclass(frozen=True, slots=True)
class Live:
    firm: str
    device: str
    as_of: dt.datetime
    values: list[_live.TagValue]


@dataclass(frozen=True, slots=True)
class EvidenceAnswer:
    evidence: FirmEvidence
    assessment: Assessment
    #: when the device records behind the networking rate and the stages were read
    records_read: dt.datetime


def _firm_id(value: str, what: str = "firm") -> str:
    try:
        return str(identifiers.parse(value))
    except identifiers.IdentifierError as exc:
        raise _Refused(422, f"{what} {value!r} is not an identifier: {exc}") from None


def _error(status: int, reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


def _window(start: dt.datetime | None, end: dt.datetime | None, default: float) -> Window:
    end = end or dt.datetime.now(dt.UTC)
    return Window(start or end - dt.timedelta(seconds=default), end)


async def _grant(request: Request, _: Annotated[Any, Security(_bearer)]) -> Grant:
    """The token's grant; ``_bearer`` only puts the scheme into the OpenAPI spec."""
    return request.app.state.service.tokens.check(request.headers.get("authorization"))


Token = Annotated[Grant, Depends(_grant)]
FirmParam = Annotated[str, Query(description="the firm's identifier, e.g. 88.709.911/firm")]
DeviceParam = Annotated[str, Query(description="the device's identifier")]
Start = Annotated[AwareDatetime | None, Query(description="ISO 8601 with offset")]
End = Annotated[AwareDatetime | None, Query(description="ISO 8601 with offset; default now")]


def create_app(service: Service) -> FastAPI:  # noqa: PLR0915 - one route each
    """The ASGI app over a running :class:`Service`."""
    config = service.config
    fresh = config.metrics.fresh_within
    app = FastAPI(
        title="Guantong evidence",
        summary="Measured data connectivity of firms for the SME digitalization assessment",
        version="1",
        openapi_url=None,  # served below, behind a token like everything with content
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service

    @app.exception_handler(AccessDenied)
    async def _denied(request: Request, exc: AccessDenied) -> JSONResponse:
        logger.info("%s %s refused (%d): %s", request.method, request.url.path, exc.status,
                    exc.reason)  # fmt: skip
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _error(exc.status, exc.reason, headers)

    @app.exception_handler(_Refused)
    async def _refused(request: Request, exc: _Refused) -> JSONResponse:
        return _error(exc.status, exc.reason)

    @app.exception_handler(InvalidWindow)
    async def _invalid(request: Request, exc: InvalidWindow) -> JSONResponse:
        return _error(422, exc.reason)

    @app.exception_handler(RequestValidationError)
    async def _bad_query(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        return _error(422, f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}")

    @app.exception_handler(StoreUnavailable)
    async def _store(request: Request, exc: StoreUnavailable) -> JSONResponse:
        return _error(503, str(exc))

    @app.exception_handler(RegistryError)
    async def _registry(request: Request, exc: RegistryError) -> JSONResponse:
        return _error(502, str(exc))

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        if request.url.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        else:  # uPlot sets element styles: inline styles, but no inline or foreign scripts
            response.headers["Content-Security-Policy"] = (
                "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
            )
        return response

    async def device_of(token: Grant, firm: str, device: str) -> tuple[str, str]:
        firm, device = _firm_id(firm), _firm_id(device, "device")
        token.require(firm)
        if await service.query(_live.firm_of_device, device) != firm:
            raise _Refused(404, f"device {device} of firm {firm} is not in the store")
        return firm, device

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, str]:
        """Alive; the only answer without a token."""
        return {"status": "ok"}

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(token: Token) -> dict[str, Any]:
        return app.openapi()

    @app.get("/api/v1/me", tags=["access"])
    async def me(token: Token) -> Me:
        """The token's name, role, scope and expiry."""
        firms = None if token.role == "admin" else sorted(token.firms)
        return Me(token.name, token.role, firms, token.expires)

    @app.get("/api/v1/firms", tags=["firms"])
    async def firms(token: Token) -> list[_live.StoredFirm]:
        """The firms in the token's scope (all for an admin), with what the store holds."""
        scope = None if token.role == "admin" else token.firms
        return await service.query(_live.firms, scope)

    @app.get("/api/v1/devices", tags=["firms"])
    async def devices(token: Token, firm: FirmParam) -> Devices:
        """The firm's registered devices and those the store knows, with live status."""
        firm = _firm_id(firm)
        token.require(firm)
        records = await service.registered(firm)
        registered = {d.identifier: d for d in records.devices}
        stored = {d.identifier: d for d in await service.query(_live.devices, firm)}
        now = dt.datetime.now(dt.UTC)
        out = []
        for name in sorted({*registered, *stored}):
            record, seen = registered.get(name), stored.get(name)
            last = seen.last_sample if seen else None
            age = None if last is None else (now - last).total_seconds()
            status: Literal["live", "stale", "silent"] = (
                "silent" if age is None else "live" if age <= fresh else "stale"
            )
            out.append(
                DeviceStatus(
                    identifier=name,
                    name=record.name if record else None,
                    gateway=record.gateway if record else seen.gateway if seen else None,
                    registered=record is not None,
                    key_equipment=bool(record and record.key_equipment),
                    stages=record.stages if record else (),
                    tag_stages=record.tag_stages if record else {},
                    tags=seen.tags if seen else 0,
                    last_sample=last,
                    age=age,
                    status=status,
                    oee=record.oee if record else None,
                )
            )
        return Devices(firm, now, fresh, records.read, out)

    @app.get("/api/v1/live", tags=["data"])
    async def live(token: Token, firm: FirmParam, device: DeviceParam) -> Live:
        """The newest sample of every tag of a device."""
        firm, device = await device_of(token, firm, device)
        values = await service.query(_live.live_values, device)
        return Live(firm, device, dt.datetime.now(dt.UTC), values)

    @app.get("/api/v1/series", tags=["data"])
    async def series(
        *,
        token: Token,
        firm: FirmParam,
        device: DeviceParam,
        tag: Annotated[str, Query(min_length=1, max_length=255)],
        start: Start = None,
        end: End = None,
        points: Annotated[int, Query(ge=1, le=_live.MAX_POINTS)] = 300,
    ) -> _live.Series:
        """A tag over a range in at most ``points`` steps (default: the last hour): raw samples
        for steps under a minute, the 1-minute rollup from there on."""
        firm, device = await device_of(token, firm, device)
        window = _window(start, end, 3600)
        found = await service.query(
            _live.series, device, tag, start=window.start, end=window.end, points=points
        )
        if found is None:
            raise _Refused(404, f"device {device} has no tag {tag!r}")
        return found

    @app.get("/api/v1/evidence", tags=["evidence"])
    async def evidence_(
        token: Token, firm: FirmParam, start: Start = None, end: End = None
    ) -> EvidenceAnswer:
        """The firm's metrics in ``[start, end)`` (default: the last hour) and the indicator
        items they support (docs/evidence.md)."""
        firm = _firm_id(firm)
        token.require(firm)
        window = _window(start, end, 3600)
        return EvidenceAnswer(*await service.evidence(firm, window))

    @app.get(
        "/api/v1/report",
        tags=["evidence"],
        response_class=Response,
        responses={200: {"content": {"application/json": {}, "text/html": {}}}},
    )
    async def report(
        token: Token,
        firm: FirmParam,
        start: Start = None,
        end: End = None,
        format: Annotated[Literal["json", "html"], Query()] = "json",
    ) -> Response:
        """The firm's evidence report for ``[start, end)`` (default: the last hour), signed by
        the platform (JSON), or its HTML rendering; ``guantong evidence verify`` checks the
        JSON against the gateways' own signed counts (docs/evidence.md, "Signed report").
        Windows of whole checkpoint periods let every count be checked exactly."""
        firm = _firm_id(firm)
        token.require(firm)
        if service.report_key is None:
            raise _Refused(404, "this service exports no reports: its config has no report_key")
        signed = await service.report(firm, _window(start, end, 3600))
        name = f"evidence-{firm.replace('/', '_')}"
        if format == "html":
            body = render_html(signed, service.report_fingerprint).encode()
            return Response(body, media_type="text/html; charset=utf-8")
        return Response(
            signed.to_json(),
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="{name}.json"'},
        )

    app.mount("/", StaticFiles(directory=STATIC, html=True), name="page")
    return app
