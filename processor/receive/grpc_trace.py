"""OTLP/gRPC TraceService receiver: decode, hand to the pipeline, answer.

The handler takes the request as raw bytes (no deserializer registered) so that
an undecodable payload becomes INVALID_ARGUMENT with a message instead of a
generic gRPC failure, and so that a batch nobody changed is forwarded as the
very bytes that arrived.
"""

from __future__ import annotations

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from processor.metrics import Metrics
from processor.pipeline import Backpressure, Pipeline
from processor.security import ReceiverAuth

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
        self, pipeline: Pipeline, metrics: Metrics, *, auth: ReceiverAuth | None = None
    ) -> None:
        self._pipeline = pipeline
        self._metrics = metrics
        self._auth = auth

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler to register on a ``grpc.aio`` server."""
        method = grpc.unary_unary_rpc_method_handler(
            self.export, request_deserializer=None, response_serializer=None
        )
        return grpc.method_handlers_generic_handler(SERVICE, {"Export": method})

    async def export(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """Accept one Export request into the pipeline; answer once it is queued (and spooled)."""
        if self._auth is not None and not self._auth.allows(context.invocation_metadata()):
            self._outcome("unauthenticated")
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
        try:
            received = self._pipeline.admit(raw)
        except DecodeError as exc:
            self._outcome("invalid")
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"payload is not an ExportTraceServiceRequest: {exc}",
            )
        try:
            spans = await self._pipeline.accept(received)
        except Backpressure as exc:
            self._outcome("backpressure")
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                str(exc),
                trailing_metadata=retry_trailers(exc.retry_after_s, str(exc)),
            )
        self._outcome("ok" if spans else "empty")
        return _EMPTY_RESPONSE

    def _outcome(self, outcome: str) -> None:
        self._metrics.requests_received.add((outcome,))
