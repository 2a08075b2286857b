"""Helpers for fault tests: numbered spans, a raw OTLP client, delivery accounting."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def batch(first: int, count: int, src: str = "172.18.0.5:40312") -> bytes:
    """A request of ``count`` gateway spans whose span ids encode ``first`` .. first+count-1."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "agentgateway"
    spans = rs.scope_spans.add().spans
    for n in range(first, first + count):
        span = spans.add(trace_id=n.to_bytes(16, "big"), span_id=n.to_bytes(8, "big"))
        span.name = "POST /*"
        span.start_time_unix_nano = 1_795_000_000_000_000_000 + n
        span.attributes.add(key="src.addr").value.string_value = src
    return request.SerializeToString()


def span_numbers(span_ids: list[bytes]) -> list[int]:
    """The numbers encoded in span ids by :func:`batch`."""
    return [int.from_bytes(s, "big") for s in span_ids]


@dataclass
class Ledger:
    """What a sender knows: spans acknowledged, and spans refused."""

    acked: list[int] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)

    async def send(
        self, channel: grpc.aio.Channel, first: int, count: int, deadline_s: float = 10
    ) -> grpc.StatusCode:
        """Export one numbered batch; record the outcome; returns the status."""
        call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        try:
            await call(batch(first, count), timeout=deadline_s)
        except grpc.aio.AioRpcError as exc:
            name = exc.code().name
            self.refused[name] = self.refused.get(name, 0) + count
            return exc.code()
        self.acked.extend(range(first, first + count))
        return grpc.StatusCode.OK
