"""Exceptions of evidence; the tree is drawn in ``evidence``'s docstring."""

from __future__ import annotations


class EvidenceError(Exception):
    """Base of everything evidence raises on purpose."""


class InvalidWindow(EvidenceError, ValueError):
    """A window that is empty, reversed or has naive times; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class StoreUnavailable(EvidenceError):
    """The ingest store cannot be read: unreachable, or no ingest schema in it."""


class RegistryError(EvidenceError):
    """The firm's device records cannot be read from the identifier node (``.firm``)."""

    def __init__(self, firm: str, reason: str) -> None:
        self.firm = firm
        self.reason = reason
        super().__init__(f"{firm}: {reason}")


class IndicatorFileError(EvidenceError):
    """The indicator file is not valid: ``.path`` and the ``.problems`` found."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


class AccessDenied(EvidenceError):
    """A request the API refuses: ``status`` 401 (no, unknown or expired token) or 403 (a firm
    outside the token's scope); ``reason`` says which."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)


class ReportError(EvidenceError, ValueError):
    """A report file that cannot be read as one; ``where`` names the part."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")
