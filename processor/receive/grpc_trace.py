"""OTLP/gRPC TraceService receiver: decode, hand to the pipeline, answer.

The method is registered through ``processor.receive.rpc`` with raw bytes, so an
undecodable payload becomes INVALID_ARGUMENT with a message instead of grpcio's
UNKNOWN, and a batch nobody changed is forwarded as the very bytes that arrived.
"""

from __future__ import annotations

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from processor import status
from processor.errors import Backpressure
from processor.metrics import Metrics
from processor.pipeline import Pipeline
from processor.receive import rpc
from processor.receive.auth import BearerToken
from processor.receive.budget import InflightBudget

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
_EMPTY_RESPONSE = ExportTraceServiceResponse().SerializeToString()


def retry_trailers(retry_after_s: float, message: str) -> tuple[tuple[str, bytes], ...]:
    """Trailers telling a sender when to retry (OTLP spec: RESOURCE_EXHAUSTED + RetryInfo).

    ``grpc-status-details-bin`` is the standard carrier (a google.rpc.Status with a
    RetryInfo detail); the OpenTelemetry Python SDK reads the bare
    ``google.rpc.retryinfo-bin`` trailer instead, so both are sent.
    """
    delay = Duration()
    delay.FromNanoseconds(int(retry_after_s * 1e9))
    info = error_details_pb2.RetryInfo(retry_delay=delay)
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message)
    status.details.add().Pack(info)
    return (
        ("grpc-status-details-bin", status.SerializeToString()),
        ("google.rpc.retryinfo-bin", info.SerializeToString()),
    )


class TraceReceiver:
    """Handles TraceService/Export calls."""

    def __init__(
        self,
        pipeline: Pipeline,
        metrics: Metrics,
        *,
        auth: BearerToken | None = None,
        budget: InflightBudget | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._metrics = metrics
        self._auth = auth
        self._budget = budget or InflightBudget(1 << 62, 1.0)

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler to register on a ``grpc.aio`` server (see ``rpc``).

        The bytes are decoded inside :meth:`export`, once the in-flight budget
        has room for them.
        """
        method = rpc.unary(
            bytes,
            self.export,
            what="an ExportTraceServiceRequest",
            serialize=None,
            auth=self._auth,
            reject=self._outcome,
        )
        return grpc.method_handlers_generic_handler(SERVICE, {"Export": method})

    async def export(self, raw: bytes, context: rpc.Context) -> bytes:
        """Accept one Export request into the pipeline; answer once it is queued (and spooled)."""
        try:
            with self._budget.holding(len(raw)):
                spans = await self._pipeline.accept(self._pipeline.admit(raw))
        except Backpressure as exc:
            self._outcome("backpressure")
            trailers = retry_trailers(exc.retry_after_s, str(exc))
            raise rpc.Refuse(status.of(exc).grpc, str(exc), trailers) from None
        self._outcome("ok" if spans else "empty")
        return _EMPTY_RESPONSE

    def _outcome(self, outcome: str) -> None:
        self._metrics.requests_received.add((outcome,))
