"""OTLP/gRPC TraceService receiver: decode, hand to the pipeline, answer.

The handler takes the request as raw bytes (no deserializer registered) so that
an undecodable payload becomes INVALID_ARGUMENT with a message instead of a
generic gRPC failure, and so that a batch nobody changed is forwarded as the
very bytes that arrived.
"""

from __future__ import annotations

import grpc
import structlog
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from processor.errors import DownstreamError
from processor.metrics import Metrics
from processor.pipeline import Pipeline

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
_EMPTY_RESPONSE = ExportTraceServiceResponse().SerializeToString()

log = structlog.get_logger("processor.receive")


def status_for(exc: DownstreamError) -> grpc.StatusCode:
    """The status the sender sees when the downstream failed (OTLP failure table).

    Retryable downstream failures become UNAVAILABLE so the sender's exporter
    retries and nothing is lost; permanent ones are passed on as INVALID_ARGUMENT
    so the sender does not retry a batch that can never be delivered.
    """
    return grpc.StatusCode.UNAVAILABLE if exc.retryable else grpc.StatusCode.INVALID_ARGUMENT


class TraceReceiver:
    """Handles TraceService/Export calls."""

    def __init__(self, pipeline: Pipeline, metrics: Metrics) -> None:
        self._pipeline = pipeline
        self._metrics = metrics

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler to register on a ``grpc.aio`` server."""
        method = grpc.unary_unary_rpc_method_handler(
            self.export, request_deserializer=None, response_serializer=None
        )
        return grpc.method_handlers_generic_handler(SERVICE, {"Export": method})

    async def export(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """Attribute and forward one Export request; answer once it is delivered or held."""
        try:
            request = ExportTraceServiceRequest.FromString(raw)
        except DecodeError as exc:
            self._outcome("invalid")
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"payload is not an ExportTraceServiceRequest: {exc}",
            )
        try:
            spans = await self._pipeline.export(request, raw)
        except DownstreamError as exc:
            self._outcome("export_failed")
            self._metrics.export_failures.labels(code=exc.code).inc()
            log.warning("export_failed", code=exc.code, error=str(exc))
            await context.abort(status_for(exc), f"downstream export failed: {exc}")
        self._outcome("ok" if spans else "empty")
        return _EMPTY_RESPONSE

    def _outcome(self, outcome: str) -> None:
        self._metrics.requests_received.labels(outcome=outcome).inc()
