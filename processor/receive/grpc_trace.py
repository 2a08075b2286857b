"""OTLP/gRPC TraceService receiver: decode, enrich, forward, answer.

The handler takes the request as raw bytes (no deserializer registered) so that
an undecodable payload becomes INVALID_ARGUMENT with a message instead of a
generic gRPC failure, and so that a batch nobody enriched is forwarded as the
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

from processor.correlate.enrich import METHOD_SESSION, Enricher, EnrichStats
from processor.errors import DownstreamError
from processor.export import Sender
from processor.metrics import Metrics
from processor.sessions.store import SessionLookup

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
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

    def __init__(
        self, enricher: Enricher, lookup: SessionLookup, sender: Sender, metrics: Metrics
    ) -> None:
        self._enricher = enricher
        self._lookup = lookup
        self._sender = sender
        self._metrics = metrics

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler to register on a ``grpc.aio`` server."""
        method = grpc.unary_unary_rpc_method_handler(
            self.export, request_deserializer=None, response_serializer=None
        )
        return grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": method}
        )

    async def export(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """Enrich and forward one Export request; answer only once it is delivered."""
        try:
            request = ExportTraceServiceRequest.FromString(raw)
        except DecodeError as exc:
            self._metrics.requests_received.labels(outcome="invalid").inc()
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"payload is not an ExportTraceServiceRequest: {exc}",
            )
        stats = self._enricher.enrich(request, raw, self._lookup)
        self._record(stats)
        if stats.spans == 0:
            self._metrics.requests_received.labels(outcome="empty").inc()
            return _EMPTY_RESPONSE
        payload = request.SerializeToString() if stats.enriched else raw
        try:
            with self._metrics.export_latency.time():
                await self._sender.send(payload)
        except DownstreamError as exc:
            self._metrics.requests_received.labels(outcome="export_failed").inc()
            self._metrics.export_failures.labels(code=exc.code).inc()
            log.warning("export_failed", code=exc.code, spans=stats.spans, error=str(exc))
            await context.abort(status_for(exc), f"downstream export failed: {exc}")
        self._metrics.requests_received.labels(outcome="ok").inc()
        self._metrics.spans_exported.inc(stats.spans)
        return _EMPTY_RESPONSE

    def _record(self, stats: EnrichStats) -> None:
        m = self._metrics
        m.spans_received.inc(stats.spans)
        if stats.enriched:
            m.spans_enriched.labels(method=METHOD_SESSION).inc(stats.enriched)
        if stats.unmatched:
            m.spans_unmatched.inc(stats.unmatched)
        if stats.ambiguous:
            m.spans_ambiguous.inc(stats.ambiguous)
        if stats.identified:
            m.spans_identified.inc(stats.identified)
        if stats.no_address:
            m.spans_no_address.inc(stats.no_address)
