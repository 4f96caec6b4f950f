"""The exceptions of the simulators; the tree is drawn in the package docstring."""

from __future__ import annotations


class SimulatorError(Exception):
    """Base of every error the simulators raise."""


class UnknownProfile(SimulatorError, KeyError):
    """A machine names a profile that does not exist."""

    def __init__(self, profile: str) -> None:
        self.profile = profile
        super().__init__(f"unknown machine profile {profile!r}")

    def __str__(self) -> str:
        return str(self.args[0])


class UnknownTag(SimulatorError, KeyError):
    """A tag name that the machine's profile does not have."""

    def __init__(self, profile: str, tag: str) -> None:
        self.profile = profile
        self.tag = tag
        super().__init__(f"profile {profile!r} has no tag {tag!r}")

    def __str__(self) -> str:
        return str(self.args[0])


class UnknownMachine(SimulatorError, KeyError):
    """A machine name that the factory does not have."""

    def __init__(self, machine: str) -> None:
        self.machine = machine
        super().__init__(f"the factory has no machine {machine!r}")

    def __str__(self) -> str:
        return str(self.args[0])


class FactoryFileError(SimulatorError, ValueError):
    """A factory file that cannot be served; ``problems`` lists every error as text."""

    def __init__(self, file: str, problems: list[str]) -> None:
        self.file = file
        self.problems = problems
        super().__init__("\n".join(f"{file}: {p}" for p in problems))


class EndpointError(SimulatorError, OSError):
    """An endpoint could not be started (port in use, serial line missing...)."""

    def __init__(self, endpoint: str, reason: str) -> None:
        self.endpoint = endpoint
        super().__init__(f"endpoint {endpoint!r}: {reason}")


class FaultError(SimulatorError, ValueError):
    """A fault that cannot be applied: unknown kind, target or parameter."""
