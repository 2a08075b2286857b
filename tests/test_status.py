"""The one table of answers: each refusal's gRPC code and HTTP status, and what a raised
error is answered with."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.message import DecodeError

from processor import status
from processor.errors import Backpressure, DownstreamError, InvalidInput, Problem


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (InvalidInput([Problem("sessions[0].source_ip", "not an IP")]), status.INVALID),
        (DecodeError("truncated"), status.INVALID),
        (Backpressure(1.0), status.RETRY_LATER),
        (DownstreamError("jaeger down", code="UNAVAILABLE", retryable=True), status.INTERNAL),
        (RuntimeError("a bug"), status.INTERNAL),
    ],
    ids=["invalid-input", "undecodable", "backpressure", "downstream", "bug"],
)
def test_each_error_has_one_answer(error: BaseException, expected: status.Status) -> None:
    """The sender's mistakes are INVALID, a full queue RETRY_LATER; anything else,
    a downstream failure included, is ours (INTERNAL, never the sender's fault)."""
    assert status.of(error) == expected


def test_grpc_and_http_say_the_same_thing() -> None:
    """Both halves of each entry, and the rpc code number an OTLP/HTTP Status body carries."""
    assert (status.INVALID.grpc, status.INVALID.http) == (grpc.StatusCode.INVALID_ARGUMENT, 400)
    assert (status.RETRY_LATER.grpc, status.RETRY_LATER.http) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        429,
    )
    assert status.UNAUTHENTICATED.code == 16 and status.INVALID.code == 3


@pytest.mark.parametrize(("delay_s", "header"), [(0.0, "1"), (0.2, "1"), (1.0, "1"), (1.01, "2")])
def test_retry_after_rounds_up_to_whole_seconds(delay_s: float, header: str) -> None:
    """Retry-After is whole seconds, at least 1, never rounded down into another 429."""
    assert status.retry_after(delay_s) == header
