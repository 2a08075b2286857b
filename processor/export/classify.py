"""Classify OTLP/gRPC export failures as retryable or permanent (OTLP spec, "Failures")."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped, unused-ignore]

from processor.errors import DownstreamError

# google.rpc comes from googleapis-common-protos, which ships .pyi stubs but no py.typed
# marker: mypy skips it unless configured otherwise, hence the (possibly unused) ignore.

# Trailer carrying a serialized google.rpc.Status (gRPC "richer error model").
STATUS_DETAILS_KEY = "grpc-status-details-bin"

# Code of the error raised when a send is abandoned because the exporter shuts down.
SHUTDOWN_CODE = "SHUTDOWN"

# OTLP spec, OTLP/gRPC "Failures" table: the codes a client SHOULD retry.
_RETRYABLE = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a failed export may be retried, and the server's minimum delay if any."""

    retryable: bool
    min_delay: float | None


class ExportFailed(DownstreamError):
    """A downstream export failure; ``min_delay`` is the server's RetryInfo hint in seconds."""

    def __init__(
        self, message: str, *, code: str, retryable: bool, min_delay: float | None = None
    ) -> None:
        super().__init__(message, code=code, retryable=retryable)
        self.min_delay = min_delay


def classify(code: grpc.StatusCode, retry_delay: float | None) -> Verdict:
    """Map a gRPC status code and optional RetryInfo delay to a retry verdict."""
    if code in _RETRYABLE:
        # OTLP spec, "OTLP/gRPC Throttling": honour RetryInfo on retryable codes too.
        return Verdict(retryable=True, min_delay=retry_delay)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and retry_delay is not None:
        # OTLP spec: RESOURCE_EXHAUSTED is retryable only if the server signals that
        # recovery is possible, i.e. includes a RetryInfo with a delay.
        return Verdict(retryable=True, min_delay=retry_delay)
    # Everything else (INVALID_ARGUMENT, UNAUTHENTICATED, INTERNAL, ... and OK, which is
    # not a failure at all) is permanent: retrying the same request cannot succeed.
    return Verdict(retryable=False, min_delay=None)


def export_failed(
    code: grpc.StatusCode,
    details: str,
    trailers: Iterable[tuple[str, str | bytes]] | None,
) -> ExportFailed:
    """An ExportFailed for a call that ended with ``code``, classified per the OTLP spec."""
    verdict = classify(code, retry_delay_from_trailers(trailers))
    return ExportFailed(
        f"OTLP export failed: {code.name}: {details}",
        code=code.name,
        retryable=verdict.retryable,
        min_delay=verdict.min_delay,
    )


def retry_delay_from_trailers(
    metadata: Iterable[tuple[str, str | bytes]] | None,
) -> float | None:
    """Return the RetryInfo delay in seconds from a ``grpc-status-details-bin`` trailer."""
    if metadata is None:
        return None
    for key, value in metadata:
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return _retry_delay_from_status(value)
    return None


def _retry_delay_from_status(raw: bytes) -> float | None:
    """Parse a serialized google.rpc.Status and return its first RetryInfo delay."""
    status = status_pb2.Status()
    try:
        status.ParseFromString(raw)
    except DecodeError:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            if not detail.Unpack(info) or not info.HasField("retry_delay"):
                return None
            seconds = float(info.retry_delay.seconds) + float(info.retry_delay.nanos) / 1e9
            return max(seconds, 0.0)
    return None
