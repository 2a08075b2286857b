"""Exception hierarchy, split by whose fault a failure is."""

from __future__ import annotations

from dataclasses import dataclass


class EnricherError(Exception):
    """Base class of every error this package raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input, located by its dotted path (``user.email``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InvalidInput(EnricherError):
    """The client sent something we cannot accept (their fault: 400 / INVALID_ARGUMENT)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class ConfigError(EnricherError):
    """The configuration is invalid; ``problems`` lists every error found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class DownstreamError(EnricherError):
    """The export target failed (not the sender's fault)."""

    def __init__(self, message: str, *, code: str, retryable: bool) -> None:
        self.code = code
        self.retryable = retryable
        super().__init__(message)


class Backpressure(EnricherError):
    """The queue (or spool, or in-flight budget) is full: retry after ``retry_after_s``."""

    def __init__(self, retry_after_s: float, reason: str = "export queue") -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"{reason} full; retry in {retry_after_s:g}s")
