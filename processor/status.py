"""One table: the gRPC code and the HTTP status of every answer a listener gives
other than success, and of each error a handler may raise.

Every listener (OTLP over gRPC and HTTP, the session API, webhooks, telemetry)
takes its codes from here, so one kind of mistake is answered alike everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError

from processor.errors import Backpressure, InvalidInput

__all__ = [
    "INTERNAL",
    "INVALID",
    "NOT_READY",
    "RETRY_LATER",
    "TIMEOUT",
    "TOO_LARGE",
    "UNAUTHENTICATED",
    "UNSUPPORTED",
    "Status",
    "of",
    "retry_after",
]


@dataclass(frozen=True, slots=True)
class Status:
    """One kind of refusal, as gRPC and as HTTP say it."""

    grpc: grpc.StatusCode
    http: int

    @property
    def code(self) -> int:
        """The ``google.rpc.Code`` number (the ``code`` of an OTLP/HTTP Status body)."""
        number: int = self.grpc.value[0]
        return number


_C = grpc.StatusCode
# The sender's mistake (undecodable, invalid, incomplete): do not retry as is.
INVALID = Status(_C.INVALID_ARGUMENT, 400)
UNAUTHENTICATED = Status(_C.UNAUTHENTICATED, 401)
TIMEOUT = Status(_C.DEADLINE_EXCEEDED, 408)  # the request did not arrive in time
TOO_LARGE = Status(_C.RESOURCE_EXHAUSTED, 413)
UNSUPPORTED = Status(_C.INVALID_ARGUMENT, 415)  # content type or coding
# Full for now (queue, spool, in-flight budget, rate limit): retry after a delay.
RETRY_LATER = Status(_C.RESOURCE_EXHAUSTED, 429)
INTERNAL = Status(_C.INTERNAL, 500)  # our failure, logged
NOT_READY = Status(_C.UNAVAILABLE, 503)

# What a raised error is answered with; anything else is INTERNAL.
_OF_ERROR: tuple[tuple[type[BaseException], Status], ...] = (
    (InvalidInput, INVALID),
    (DecodeError, INVALID),
    (Backpressure, RETRY_LATER),
)


def of(error: BaseException) -> Status:
    """The answer to ``error`` (INTERNAL for anything not the sender's doing)."""
    for kind, status in _OF_ERROR:
        if isinstance(error, kind):
            return status
    return INTERNAL


def retry_after(delay_s: float) -> str:
    """A ``Retry-After`` value: whole seconds (RFC 9110 section 10.2.3), rounded up, >= 1."""
    # Rounding down would send a client that honours the header straight back into a 429.
    return str(max(1, math.ceil(delay_s)))
