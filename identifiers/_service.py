"""The resolution service: the Handle.Net-shaped REST API over the registry.

Every answer carries a Handle response code in its body and the HTTP status Handle.Net maps it
to, including the answers to requests the API does not have (code 4, as Handle.Net). Handles
are read from the raw request path and percent-decoded here, strictly, so that ``%2F`` means
``/`` (as in Handle.Net), invalid UTF-8 is a 102 rather than a replacement character, and
nothing a client or proxy does to the path is trusted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError
from starlette.exceptions import HTTPException

from identifiers._codec import IdentifierError, parse, parse_prefix
from identifiers._config import NodeConfig, covers
from identifiers._errors import (
    ERROR,
    PROTOCOL_ERROR,
    SUCCESS,
    VALUES_NOT_FOUND,
    AuthenticationFailed,
    AuthenticationNeeded,
    HandleError,
    InsufficientPermissions,
    InvalidHandle,
    InvalidValue,
    NotResponsible,
    Referral,
    ServiceReferral,
)
from identifiers._records import MAX_CACHE_TTL, NON_PUBLIC_TYPES, HandleValue, admin_value
from identifiers._store import Registry, Token

logger = logging.getLogger(__name__)

_HANDLES = "/api/handles/"
#: bound of integer query parameters, so that page * size stays far inside PostgreSQL's bigint
_INT32 = 2**31 - 1
_VALUES = TypeAdapter(list[HandleValue])
_VALUES_SCHEMA = {
    "type": "object",
    "properties": {"handle": {"type": "string"}, "values": _VALUES.json_schema()},
    "required": ["values"],
}


def _batch_schema(max_records: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "overwrite": {"type": "boolean", "default": False},
            "records": {"type": "array", "maxItems": max_records, "items": _VALUES_SCHEMA},
        },
        "required": ["records"],
    }


class Routing:
    """Which prefixes this node answers for and where it refers the rest (longest match wins)."""

    def __init__(self, config: NodeConfig) -> None:
        self._entries: list[tuple[str, Referral | None]] = sorted(
            [(p, None) for p in config.authoritative]
            + [(r.prefix, Referral(r.prefix, str(r.url).rstrip("/"))) for r in config.referrals],
            key=lambda e: -len(e[0]),
        )

    def local(self, handle: str, prefix: str) -> None:
        """Return if this node serves ``prefix``; else raise 302 naming who does, or 301."""
        for entry, referral in self._entries:
            if entry == "88" or covers(entry, prefix):
                if referral is None:
                    return
                raise ServiceReferral(handle, f"prefix {prefix} is served elsewhere", referral)
        raise NotResponsible(handle, f"this node does not serve prefix {prefix} nor knows who does")


def _answer(code: int, http: int, /, **body: Any) -> JSONResponse:
    return JSONResponse({"responseCode": code, **body}, status_code=http)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def _error(exc: HandleError, status: int | None = None) -> JSONResponse:
    # what a request sent is echoed only in part: a 10 MB "handle" is refused, not sent back
    body: dict[str, Any] = {"handle": _clip(exc.handle, 300), "message": _clip(exc.message, 1000)}
    if isinstance(exc, NotResponsible) and exc.referral is not None:
        body["referral"] = exc.referral.as_dict()
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthenticationNeeded) else None
    response = _answer(exc.code, status or exc.http_status, **body)
    if headers:
        response.headers.update(headers)
    return response


def _handle_of(request: Request) -> tuple[str, str]:
    """(normalised handle, prefix) from the raw path, or 102."""
    raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
    raw = raw.split(b"?", 1)[0]
    start = raw.find(_HANDLES.encode())
    try:
        text = unquote_to_bytes(raw[start + len(_HANDLES) :]).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidHandle(
            raw.decode("ascii", "replace"), "handle is not valid UTF-8 once percent-decoded"
        ) from None
    try:
        ident = parse(text)
    except IdentifierError as exc:
        raise InvalidHandle(text, f"{exc.part}: {exc.reason}") from None
    return str(ident), ident.prefix


def _created_or_ok(overwrite: bool) -> int:
    """HTTP status of a successful write, as Handle.Net gives it.

    201 only when the request forbade overwriting, so that success means everything it named
    was created; a write allowed to overwrite answers 200 whether it created or replaced (the
    body's ``status`` says which).
    """
    return 200 if overwrite else 201


def _first_error(exc: ValidationError, where: str) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{where}{'.' + loc if loc else ''}: {str(err['msg']).removeprefix('Value error, ')}"


def create_app(config: NodeConfig, registry: Registry) -> FastAPI:  # noqa: PLR0915 - one route each
    """The ASGI app of one node; ``registry`` must be open for as long as the app serves."""
    routing = Routing(config)
    limits = config.limits
    app = FastAPI(
        title="Guantong identifier node",
        summary="Industrial Internet identifiers, resolved in the shape of the Handle.Net REST API",
        version="1",
        # a redirect answers with no Handle code; an unknown path is a protocol error (code 4)
        redirect_slashes=False,
    )

    @app.exception_handler(HandleError)
    async def _on_handle_error(request: Request, exc: HandleError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(Exception)
    async def _on_bug(request: Request, exc: Exception) -> JSONResponse:
        logger.error("%s %s failed: %r", request.method, request.url.path, exc)
        return _answer(ERROR, 500, message="internal error of the identifier node")

    @app.exception_handler(HTTPException)
    async def _on_no_route(request: Request, exc: HTTPException) -> JSONResponse:
        message = f"no API endpoint {request.method} {request.url.path}"
        response = _answer(PROTOCOL_ERROR, exc.status_code, message=message)
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def _on_bad_query(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        return _error(InvalidValue("", f"{where}: {err['msg']}"))

    async def token_of(request: Request, handle: str) -> Token | None:
        header = request.headers.get("authorization")
        if header is None:
            return None
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise AuthenticationFailed(handle, "the Authorization header must be 'Bearer <token>'")
        token = await registry.check_token(credential.strip())
        if token is None:
            raise AuthenticationFailed(handle, "token unknown, expired or revoked")
        return token

    async def writer(request: Request, handle: str, prefix: str) -> Token:
        token = await token_of(request, handle)
        if token is None:
            raise AuthenticationNeeded(handle, "writing needs a bearer token for the prefix")
        if not covers(token.prefix, prefix):
            raise InsufficientPermissions(
                handle, f"token {token.id} may write under {token.prefix} only"
            )
        return token

    async def body_of(request: Request, handle: str) -> Any:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limits.body_bytes:
            raise InvalidValue(handle, f"request body over {limits.body_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.body_bytes:
                raise InvalidValue(handle, f"request body over {limits.body_bytes} bytes")
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks))
        except ValueError:
            raise InvalidValue(handle, "request body is not JSON") from None
        except RecursionError:
            raise InvalidValue(handle, "request body nests too deeply") from None

    def values_of(handle: str, doc: Any, where: str = "body") -> list[HandleValue]:
        if not isinstance(doc, dict) or not set(doc) <= {"handle", "values", "responseCode"}:
            raise InvalidValue(handle, f"{where} must be an object {{handle?, values}}")
        if "handle" in doc:
            try:
                named = str(parse(doc["handle"]))
            except (IdentifierError, TypeError):
                named = None
            if named != handle:
                raise InvalidHandle(handle, f"{where}.handle {doc['handle']!r} is not {handle!r}")
        try:
            values = _VALUES.validate_python(doc.get("values"))
        except ValidationError as exc:
            raise InvalidValue(handle, _first_error(exc, f"{where}.values")) from None
        if len(values) > limits.values_per_handle:
            raise InvalidValue(handle, f"more than {limits.values_per_handle} values")
        seen: set[int] = set()
        for value in values:
            if value.index in seen:
                raise InvalidValue(handle, f"index {value.index} appears twice")
            seen.add(value.index)
            if value.data.size() > limits.value_bytes:
                raise InvalidValue(
                    handle, f"value {value.index} is over {limits.value_bytes} bytes"
                )
        return values

    def with_admin(values: list[HandleValue], token: Token) -> list[HandleValue]:
        if any(v.type == "HS_ADMIN" for v in values):
            return values
        admin = admin_value(token.prefix)
        if any(v.index == admin.index for v in values):
            return values
        return [*values, admin]

    @app.get("/api", summary="What this node serves and whom it refers to")
    async def info() -> JSONResponse:
        return _answer(
            SUCCESS,
            200,
            authoritative=list(config.authoritative),
            referrals=[{"prefix": r.prefix, "url": str(r.url)} for r in config.referrals],
            limits=limits.model_dump(),
        )

    @app.get(
        "/api/handles/{handle:path}",
        summary="Resolve a handle; admin values only with a token for its prefix",
    )
    async def resolve(
        request: Request,
        handle: str,
        index: Annotated[list[int], Query()] = [],  # noqa: B006 - FastAPI copies defaults
        type: Annotated[list[str], Query()] = [],  # noqa: B006 - Handle.Net's name
        auth: bool = False,
    ) -> JSONResponse:
        name, prefix = _handle_of(request)
        routing.local(name, prefix)
        token = await token_of(request, name)
        admin = token is not None and covers(token.prefix, prefix)
        values = [v for v in await registry.get(name) if admin or v["type"] not in NON_PUBLIC_TYPES]
        if index or type:
            values = [v for v in values if v["index"] in index or v["type"] in type]
        if not values:  # nothing matches the filters, or nothing of the record is public
            return _answer(VALUES_NOT_FOUND, 200, handle=name, values=[])
        response = _answer(SUCCESS, 200, handle=name, values=values)
        # HTTP caches in front of the node keep a public answer as long as Handle clients may
        if token is None:
            ttl = min([MAX_CACHE_TTL, *(v["ttl"] for v in values)])
            response.headers["Cache-Control"] = f"public, max-age={ttl}"
        else:
            response.headers["Cache-Control"] = "private, no-store"
        return response

    @app.put(
        "/api/handles/{handle:path}",
        summary="Create or replace a record; with index=, add or replace single values",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _VALUES_SCHEMA}},
            }
        },
    )
    async def put(
        request: Request,
        handle: str,
        overwrite: bool = True,
        index: Annotated[list[str], Query()] = [],  # noqa: B006
    ) -> JSONResponse:
        name, prefix = _handle_of(request)
        routing.local(name, prefix)
        token = await writer(request, name, prefix)
        values = values_of(name, await body_of(request, name))
        if not values:
            raise InvalidValue(name, "no values given: a record needs at least one")
        if index:
            status = await registry.merge(
                name, values, overwrite=overwrite, max_values=limits.values_per_handle
            )
        else:
            [status] = await registry.write(
                [(name, prefix, with_admin(values, token))], overwrite=overwrite
            )
        return _answer(SUCCESS, _created_or_ok(overwrite), handle=name, status=status)

    @app.delete("/api/handles/{handle:path}", summary="Delete a record, or values with index=")
    async def delete(
        request: Request,
        handle: str,
        index: Annotated[list[int], Query()] = [],  # noqa: B006
    ) -> JSONResponse:
        name, prefix = _handle_of(request)
        routing.local(name, prefix)
        await writer(request, name, prefix)
        try:
            await registry.delete(name, index)
        except HandleError as exc:
            if exc.code == VALUES_NOT_FOUND:
                return _error(exc, 400)
            raise
        return _answer(SUCCESS, 200, handle=name)

    @app.get("/api/handles", summary="List the handles under a prefix (needs its token)")
    async def list_handles(
        request: Request,
        prefix: str,
        page: Annotated[int, Query(ge=0, le=_INT32)] = 0,
        pageSize: Annotated[int | None, Query(ge=1)] = None,
    ) -> JSONResponse:
        try:
            normal = parse_prefix(prefix)
        except IdentifierError as exc:
            raise InvalidHandle(prefix, f"{exc.part}: {exc.reason}") from None
        routing.local(normal, normal)
        await writer(request, normal, normal)
        size = min(pageSize or limits.list_page, limits.list_page)
        total, handles = await registry.list(normal, page=page, size=size)
        return _answer(
            SUCCESS, 200, prefix=normal, totalCount=total, page=page, pageSize=size,
            handles=handles,
        )  # fmt: skip

    @app.post(
        "/api/batch",
        summary=f"Register up to {limits.batch_records} records in one transaction",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _batch_schema(limits.batch_records)}},
            }
        },
    )
    async def batch(request: Request) -> JSONResponse:
        doc = await body_of(request, "")
        if not isinstance(doc, dict) or not set(doc) <= {"records", "overwrite"}:
            raise InvalidValue("", "body must be an object {records, overwrite?}")
        overwrite = doc.get("overwrite", False)
        records = doc.get("records")
        if not isinstance(overwrite, bool) or not isinstance(records, list) or not records:
            raise InvalidValue("", "records must be a non-empty list and overwrite a boolean")
        if len(records) > limits.batch_records:
            raise InvalidValue("", f"more than {limits.batch_records} records in one batch")
        token: Token | None = None
        parsed: list[tuple[str, str, Sequence[HandleValue]]] = []
        seen: set[str] = set()
        for i, record in enumerate(records):
            where = f"records[{i}]"
            raw = record.get("handle") if isinstance(record, dict) else None
            if not isinstance(raw, str):
                raise InvalidHandle("", f"{where}.handle is missing or not a string")
            try:
                ident = parse(raw)
            except IdentifierError as exc:
                raise InvalidHandle(raw, f"{where}: {exc.part}: {exc.reason}") from None
            name = str(ident)
            if name in seen:
                raise InvalidHandle(name, f"{where}: handle appears twice in the batch")
            seen.add(name)
            routing.local(name, ident.prefix)
            token = token or await writer(request, name, ident.prefix)
            if not covers(token.prefix, ident.prefix):
                raise InsufficientPermissions(
                    name, f"token {token.id} may write under {token.prefix} only"
                )
            values = values_of(name, record, where)
            if not values:
                raise InvalidValue(name, f"{where}: a record needs at least one value")
            parsed.append((name, ident.prefix, with_admin(values, token)))
        statuses = await registry.write(parsed, overwrite=overwrite)
        counts = {s: statuses.count(s) for s in ("created", "updated", "unchanged")}
        results = [{"handle": r[0], "status": s} for r, s in zip(parsed, statuses, strict=True)]
        return _answer(SUCCESS, _created_or_ok(overwrite), results=results, **counts)

    return app
