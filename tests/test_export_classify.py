"""Tests for the OTLP/gRPC failure classification of the export path."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.rpc import (  # type: ignore[import-untyped, unused-ignore]
    error_details_pb2,
    status_pb2,
)

from processor.export.classify import (
    STATUS_DETAILS_KEY,
    Verdict,
    classify,
    retry_delay_from_trailers,
)

_S = grpc.StatusCode

# OTLP spec, OTLP/gRPC "Failures" table, plus OK (not a failure: nothing to retry).
_TABLE = [
    (_S.OK, False),
    (_S.CANCELLED, True),
    (_S.UNKNOWN, False),
    (_S.INVALID_ARGUMENT, False),
    (_S.DEADLINE_EXCEEDED, True),
    (_S.NOT_FOUND, False),
    (_S.ALREADY_EXISTS, False),
    (_S.PERMISSION_DENIED, False),
    (_S.RESOURCE_EXHAUSTED, False),
    (_S.FAILED_PRECONDITION, False),
    (_S.ABORTED, True),
    (_S.OUT_OF_RANGE, True),
    (_S.UNIMPLEMENTED, False),
    (_S.INTERNAL, False),
    (_S.UNAVAILABLE, True),
    (_S.DATA_LOSS, True),
    (_S.UNAUTHENTICATED, False),
]


def _status_details(*details: object) -> bytes:
    """Serialize a google.rpc.Status carrying the given detail messages."""
    status = status_pb2.Status(code=8, message="slow down")
    for detail in details:
        status.details.add().Pack(detail)
    return bytes(status.SerializeToString())


def _retry_info(seconds: int, nanos: int = 0) -> object:
    """Build a google.rpc.RetryInfo with the given delay."""
    return error_details_pb2.RetryInfo(retry_delay=Duration(seconds=seconds, nanos=nanos))


def test_table_covers_every_status_code() -> None:
    """The classification table lists every gRPC status code exactly once."""
    assert sorted(c.name for c, _ in _TABLE) == sorted(c.name for c in grpc.StatusCode)


@pytest.mark.parametrize(("code", "retryable"), _TABLE, ids=[c.name for c, _ in _TABLE])
def test_classify_without_delay(code: grpc.StatusCode, retryable: bool) -> None:
    """Without a RetryInfo delay each code gets the verdict of the OTLP spec table."""
    assert classify(code, None) == Verdict(retryable=retryable, min_delay=None)


@pytest.mark.parametrize(("code", "retryable"), _TABLE, ids=[c.name for c, _ in _TABLE])
def test_classify_with_delay(code: grpc.StatusCode, retryable: bool) -> None:
    """A RetryInfo delay makes RESOURCE_EXHAUSTED retryable and floors every retry."""
    retryable = retryable or code is _S.RESOURCE_EXHAUSTED
    expected = Verdict(retryable=retryable, min_delay=2.5 if retryable else None)
    assert classify(code, 2.5) == expected


@pytest.mark.parametrize(
    ("trailers", "expected"),
    [
        (None, None),
        ((), None),
        ((("x-other", "1"),), None),
        (((STATUS_DETAILS_KEY, _status_details(_retry_info(3))),), 3.0),
        (((STATUS_DETAILS_KEY, _status_details(_retry_info(1, 500_000_000))),), 1.5),
        (((STATUS_DETAILS_KEY, _status_details(_retry_info(0))),), 0.0),
        (((STATUS_DETAILS_KEY, _status_details(error_details_pb2.RetryInfo())),), None),
        (((STATUS_DETAILS_KEY, _status_details()),), None),
        (((STATUS_DETAILS_KEY, _status_details(error_details_pb2.ErrorInfo())),), None),
        (((STATUS_DETAILS_KEY, b"\xff\xff\xff"),), None),
        (((STATUS_DETAILS_KEY, "not-bytes"),), None),
    ],
    ids=[
        "none",
        "empty",
        "unrelated",
        "whole-seconds",
        "fractional",
        "zero",
        "retryinfo-without-delay",
        "no-details",
        "other-detail",
        "garbage",
        "str-value",
    ],
)
def test_retry_delay_from_trailers(
    trailers: tuple[tuple[str, str | bytes], ...] | None, expected: float | None
) -> None:
    """The RetryInfo delay is read from a google.rpc.Status trailer, else None."""
    assert retry_delay_from_trailers(trailers) == expected


def test_retry_delay_after_other_details() -> None:
    """RetryInfo is found even when other details precede it in the Status."""
    raw = _status_details(error_details_pb2.ErrorInfo(reason="QUOTA"), _retry_info(7))
    assert retry_delay_from_trailers([(STATUS_DETAILS_KEY, raw)]) == 7.0
