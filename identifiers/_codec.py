"""Handle-style identifier codec.

Syntax (RFC 3650/3651 as profiled by the Industrial Internet identifier system)::

    handle  = prefix "/" suffix                 ; at most 255 bytes of UTF-8
    prefix  = "88" "." node "." enterprise *("." segment)   ; at most 64 characters
    node    = 1*DIGIT                           ; industry or city secondary node code
    enterprise, segment = 1*(ALPHA / DIGIT / "-")

The first "/" separates prefix and suffix; the suffix may contain further "/" (RFC 3651 §2.1).

Normalisation, done once here and nowhere else:
- Unicode NFC, so visually identical handles typed on different systems compare equal;
- the prefix is lower-cased: naming authorities are ASCII case-insensitive;
- the suffix keeps its case: handles are case-sensitive by default (RFC 3651 §2.1).

Deliberate restrictions beyond the RFC, because identifiers are printed on QR codes and typed
by technicians: no whitespace and no control or format characters anywhere, no empty
suffix segment at either end, and no ``.`` or ``..`` suffix segment (HTTP clients and proxies
collapse those in a URL path, so such a handle could not be resolved over the REST API).
Nothing is silently repaired: surrounding spaces are an error.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

MAX_HANDLE_BYTES = 255
MAX_PREFIX_CHARS = 64
ROOT = "88"

_NODE = re.compile(r"[0-9]{1,16}")
_SEGMENT = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")


class IdentifierError(ValueError):
    """An identifier that does not follow the syntax; ``part`` names where it went wrong."""

    def __init__(self, value: str, part: str, reason: str) -> None:
        self.value = value
        self.part = part
        self.reason = reason
        super().__init__(f"invalid identifier {value!r}: {part}: {reason}")


@dataclass(frozen=True, slots=True)
class Identifier:
    """A validated, normalised identifier. Build it with :func:`parse` or :meth:`under`."""

    prefix: str
    suffix: str

    def __str__(self) -> str:
        return f"{self.prefix}/{self.suffix}"

    @property
    def node(self) -> str:
        """The secondary node code, e.g. ``709`` in ``88.709.911/x``."""
        return self.prefix.split(".")[1]

    @property
    def enterprise(self) -> str:
        """Everything after the node code, e.g. ``911`` in ``88.709.911/x``."""
        return ".".join(self.prefix.split(".")[2:])

    def as_dict(self) -> dict[str, object]:
        return {
            "handle": str(self),
            "prefix": self.prefix,
            "suffix": self.suffix,
            "root": ROOT,
            "node": self.node,
            "enterprise": self.enterprise,
            "prefix_segments": self.prefix.split("."),
            "utf8_bytes": len(str(self).encode()),
        }

    @classmethod
    def under(cls, prefix: str, suffix: str) -> Identifier:
        """Compose and validate ``prefix/suffix``."""
        return parse(f"{prefix}/{suffix}")


def _bad_char(text: str) -> str | None:
    for ch in text:
        if ch.isspace():
            return f"whitespace {ch!r} is not allowed"
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            return f"character U+{ord(ch):04X} is not a printable character"
    return None


def parse_prefix(text: str, *, whole: str | None = None) -> str:
    """Validate and normalise a prefix on its own (for tokens and node config)."""
    whole = text if whole is None else whole
    prefix = unicodedata.normalize("NFC", text).lower()
    if not prefix:
        raise IdentifierError(whole, "prefix", "is empty")
    if len(prefix) > MAX_PREFIX_CHARS:
        raise IdentifierError(whole, "prefix", f"longer than {MAX_PREFIX_CHARS} characters")
    if problem := _bad_char(prefix):
        raise IdentifierError(whole, "prefix", problem)
    segments = prefix.split(".")
    if segments[0] != ROOT:
        raise IdentifierError(whole, "prefix", f"must start with {ROOT!r}, not {segments[0]!r}")
    if len(segments) < 3:
        raise IdentifierError(whole, "prefix", "needs the form 88.<node>.<enterprise>")
    if not _NODE.fullmatch(segments[1]):
        raise IdentifierError(whole, "prefix.node", f"{segments[1]!r} is not a numeric node code")
    for i, segment in enumerate(segments[2:]):
        part = "prefix.enterprise" if i == 0 else f"prefix.segment[{i + 2}]"
        if not _SEGMENT.fullmatch(segment):
            raise IdentifierError(
                whole, part, f"{segment!r} must be letters, digits or inner hyphens"
            )
    return prefix


def parse(text: str) -> Identifier:
    """Parse and normalise ``prefix/suffix``; raise :class:`IdentifierError` naming the part."""
    if not isinstance(text, str):
        raise IdentifierError(repr(text), "handle", "must be a string")
    return _parse(text)


@functools.lru_cache(maxsize=8192)
def _parse(text: str) -> Identifier:
    # the same few gateways and devices are parsed several times for every envelope ingest
    # receives; an Identifier is immutable, and a refusal is not cached (it raises)
    if not text:
        raise IdentifierError(text, "handle", "is empty")
    normal = unicodedata.normalize("NFC", text)
    try:
        size = len(normal.encode())
    except UnicodeEncodeError:  # a lone surrogate, e.g. from a JSON "\ud800" escape
        raise IdentifierError(repr(text), "handle", "is not valid Unicode") from None
    if size > MAX_HANDLE_BYTES:
        raise IdentifierError(text, "handle", f"longer than {MAX_HANDLE_BYTES} bytes of UTF-8")
    prefix_text, slash, suffix = normal.partition("/")
    if not slash:
        raise IdentifierError(text, "handle", "has no '/' between prefix and suffix")
    prefix = parse_prefix(prefix_text, whole=text)
    if not suffix:
        raise IdentifierError(text, "suffix", "is empty")
    if problem := _bad_char(suffix):
        raise IdentifierError(text, "suffix", problem)
    if suffix.startswith("/") or suffix.endswith("/"):
        raise IdentifierError(text, "suffix", "must not begin or end with '/'")
    if any(segment in (".", "..") for segment in suffix.split("/")):
        raise IdentifierError(text, "suffix", "must not contain a '.' or '..' path segment")
    return Identifier(prefix, suffix)
