"""Exceptions of ingest; the tree is drawn in ``ingest``'s docstring."""

from __future__ import annotations


class IngestError(Exception):
    """Base of everything ingest raises on purpose."""


class StoreError(IngestError):
    """The database refused something that retrying will not fix."""


class MigrationError(StoreError):
    """The schema in the database is newer than this code, or of another flavour."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ConsumerError(IngestError):
    """The MQTT consumer cannot start: bad credentials, TLS files or broker address."""


class SourceUnavailable(IngestError):
    """The Kafka brokers cannot be reached at start (later outages are waited out)."""
