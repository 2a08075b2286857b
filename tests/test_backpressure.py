"""The backpressure answer carries a retry delay that OTLP clients understand."""

from __future__ import annotations

import pytest
from google.rpc import error_details_pb2

from processor.export.classify import retry_delay_from_trailers
from processor.receive.grpc_trace import retry_trailers


@pytest.mark.parametrize("delay", [0.2, 1.0, 2.5])
def test_retry_trailers_round_trip(delay: float) -> None:
    """Both the standard status details and the SDK's bare RetryInfo carry the delay."""
    trailers = dict(retry_trailers(delay, "queue full"))
    assert retry_delay_from_trailers(list(trailers.items())) == pytest.approx(delay)
    info = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
    assert info.retry_delay.ToNanoseconds() == int(delay * 1e9)
