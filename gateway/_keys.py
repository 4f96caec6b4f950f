"""The gateway's Ed25519 key file; the helpers are shared with the evidence platform's key."""

from common import KeyFileError, create_key, load_key

__all__ = ["KeyFileError", "create_key", "load_key"]
