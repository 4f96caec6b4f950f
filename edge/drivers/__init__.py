"""Drivers: one sub-package per protocol, each self-contained (driver, config, codec, README)."""
