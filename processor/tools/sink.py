"""An in-process OTLP/gRPC trace sink: Jaeger's stand-in for the demo and the tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


class TraceSink:
    """Records every Export request it receives on 127.0.0.1 (port chosen by the OS)."""

    def __init__(
        self, host: str = "127.0.0.1", *, failures: list[grpc.StatusCode] | None = None
    ) -> None:
        self._host = host
        # Status codes to answer, in order, before accepting anything (fault tests).
        self.failures = list(failures or [])
        # When set, every call waits for the gate before answering (a slow downstream).
        self.gate: asyncio.Event | None = None
        self.attempts = 0
        self.requests: list[ExportTraceServiceRequest] = []
        self.raw: list[bytes] = []
        self._changed = asyncio.Condition()
        self._server: grpc.aio.Server | None = None
        self.endpoint = ""

    async def start(self, port: int = 0) -> str:
        """Listen on ``port`` (0: any free port); returns ``host:port``."""
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 256 << 20)])
        method = grpc.unary_unary_rpc_method_handler(
            self._export, request_deserializer=None, response_serializer=None
        )
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(_SERVICE, {"Export": method})]
        )
        port = server.add_insecure_port(f"{self._host}:{port}")
        await server.start()
        self._server = server
        self.endpoint = f"{self._host}:{port}"
        return self.endpoint

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop listening (calls in progress get ``grace_s`` to finish)."""
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None

    def span_ids(self) -> list[bytes]:
        """The span id of every span received, duplicates included."""
        return [span.span_id for span in self.spans()]

    def spans(self, service: str | None = None) -> list[Span]:
        """Every span received so far, in arrival order; with ``service``, only those
        whose resource names that ``service.name``."""
        return [
            span
            for request in self.requests
            for rs in request.resource_spans
            if service is None or _service_of(rs.resource.attributes) == service
            for ss in rs.scope_spans
            for span in ss.spans
        ]

    async def wait_for_spans(self, count: int, timeout_s: float = 10.0) -> list[Span]:
        """Wait until at least ``count`` spans arrived; TimeoutError otherwise."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: len(self.spans()) >= count)
        return self.spans()

    async def _export(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.attempts += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            await context.abort(self.failures.pop(0), "injected failure")
        async with self._changed:
            self.raw.append(raw)
            self.requests.append(ExportTraceServiceRequest.FromString(raw))
            self._changed.notify_all()
        return ExportTraceServiceResponse().SerializeToString()


def _service_of(attributes: Iterable[KeyValue]) -> str | None:
    """The ``service.name`` of a resource, if it has one."""
    return next((kv.value.string_value for kv in attributes if kv.key == "service.name"), None)
