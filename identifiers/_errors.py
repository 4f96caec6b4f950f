"""Handle response codes and the exceptions that carry them.

One exception per Handle response code the node and its client use, so a caller can catch
``HandleNotFound`` instead of comparing numbers, and the service can turn any of them into the
Handle.Net REST answer: the code in the body, the HTTP status as the Handle.Net server maps it
(``BaseHandleRequestProcessingServlet.statusCodeFromResponse`` in Handle.Net 9).
"""

from __future__ import annotations

from typing import ClassVar

#: Handle protocol response codes (RFC 3652 §2.2.2.1, Handle.Net REST API)
SUCCESS = 1
ERROR = 2
PROTOCOL_ERROR = 4
HANDLE_NOT_FOUND = 100
HANDLE_ALREADY_EXISTS = 101
INVALID_HANDLE = 102
VALUES_NOT_FOUND = 200
VALUE_ALREADY_EXISTS = 201
INVALID_VALUE = 202
SERVER_NOT_RESPONSIBLE = 301
SERVICE_REFERRAL = 302
INSUFFICIENT_PERMISSIONS = 401
AUTHENTICATION_NEEDED = 402
AUTHENTICATION_FAILED = 403

#: HTTP status of each code, as the Handle.Net server answers it; any other code is 500
HTTP_STATUS = {
    SUCCESS: 200,  # 201 when a record was created
    ERROR: 500,
    PROTOCOL_ERROR: 400,  # 404/405 for an unknown endpoint or method
    HANDLE_NOT_FOUND: 404,
    HANDLE_ALREADY_EXISTS: 409,
    INVALID_HANDLE: 400,
    VALUES_NOT_FOUND: 400,  # 200 OK when it is the answer to a resolution with filters
    VALUE_ALREADY_EXISTS: 409,
    INVALID_VALUE: 400,
    SERVER_NOT_RESPONSIBLE: 400,
    SERVICE_REFERRAL: 300,
    INSUFFICIENT_PERMISSIONS: 403,
    AUTHENTICATION_NEEDED: 401,
    AUTHENTICATION_FAILED: 403,
}


class HandleError(Exception):
    """A node answered (or would answer) with a Handle response code other than success."""

    code: ClassVar[int] = ERROR

    def __init__(self, handle: str, message: str) -> None:
        self.handle = handle
        self.message = message
        super().__init__(f"{handle}: {message} (Handle code {self.code})")

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)


class HandleNotFound(HandleError):
    code = HANDLE_NOT_FOUND


class HandleExists(HandleError):
    code = HANDLE_ALREADY_EXISTS


class InvalidHandle(HandleError):
    code = INVALID_HANDLE


class ValuesNotFound(HandleError):
    code = VALUES_NOT_FOUND


class ValueExists(HandleError):
    code = VALUE_ALREADY_EXISTS


class InvalidValue(HandleError):
    code = INVALID_VALUE


class ProtocolError(HandleError):
    """A request the API does not have: unknown endpoint or method."""

    code = PROTOCOL_ERROR


class NotResponsible(HandleError):
    """The node does not serve the handle's prefix and knows no node that does."""

    code = SERVER_NOT_RESPONSIBLE

    def __init__(self, handle: str, message: str, referral: Referral | None = None) -> None:
        self.referral = referral
        super().__init__(handle, message)


class ServiceReferral(NotResponsible):
    """The node does not serve the handle's prefix; ``referral`` names the node that does."""

    code = SERVICE_REFERRAL


class InsufficientPermissions(HandleError):
    code = INSUFFICIENT_PERMISSIONS


class AuthenticationNeeded(HandleError):
    code = AUTHENTICATION_NEEDED


class AuthenticationFailed(HandleError):
    code = AUTHENTICATION_FAILED


class ServerError(HandleError):
    code = ERROR


class ReferralError(HandleError):
    """Referrals that loop or go deeper than the client allows."""

    code = SERVER_NOT_RESPONSIBLE


class NodeUnavailable(Exception):
    """No node could be reached for a handle and no answer, not even a stale one, is cached."""

    def __init__(self, handle: str, url: str, reason: str) -> None:
        self.handle = handle
        self.url = url
        self.reason = reason
        super().__init__(f"{handle}: identifier node {url} unavailable: {reason}")


class Referral:
    """Where to ask instead: the ``HS_SITE`` role of the Handle system, reduced to a URL."""

    __slots__ = ("prefix", "url")

    def __init__(self, prefix: str, url: str) -> None:
        self.prefix = prefix
        self.url = url

    def as_dict(self) -> dict[str, str]:
        return {"prefix": self.prefix, "url": self.url}

    def __repr__(self) -> str:
        return f"Referral({self.prefix!r}, {self.url!r})"


_BY_CODE: dict[int, type[HandleError]] = {
    cls.code: cls
    for cls in (
        ProtocolError,
        HandleNotFound,
        HandleExists,
        InvalidHandle,
        ValuesNotFound,
        ValueExists,
        InvalidValue,
        NotResponsible,
        ServiceReferral,
        InsufficientPermissions,
        AuthenticationNeeded,
        AuthenticationFailed,
        ServerError,
    )
}


def error_for(
    code: int, handle: str, message: str, referral: Referral | None = None
) -> HandleError:
    """The exception for a response code read from a node's answer."""
    cls = _BY_CODE.get(code)
    if cls is None:
        err = HandleError(handle, message)
        err.code = code  # type: ignore[misc]  # an unknown code is kept, not rewritten
        return err
    if issubclass(cls, NotResponsible):
        return cls(handle, message, referral)
    return cls(handle, message)
