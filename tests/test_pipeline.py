"""End to end: the real OTel SDK exporter -> the service -> a real grpc.aio sink."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from conftest import TOKEN, Clock, push_sessions
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from processor.app.service import Service
from processor.identity.intake.gen.user_enricher.v1 import sessions_pb2 as pb
from processor.tools.demo_scenario import GatewayCall, gateway_attributes
from processor.tools.sink import TraceSink

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
START = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def ns(moment: datetime) -> int:
    """Unix nanoseconds of ``moment``."""
    return int(moment.timestamp()) * 1_000_000_000


def emit(endpoint: str, calls: list[GatewayCall], *, gzip: bool = False) -> None:
    """Send ``calls`` as AgentGateway spans with the SDK's OTLP/gRPC exporter (blocking)."""
    provider = TracerProvider(resource=Resource.create({"service.name": "agentgateway"}))
    exporter = OTLPSpanExporter(
        endpoint=f"http://{endpoint}",
        insecure=True,
        compression=grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression,
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("agentgateway")
    for call in calls:
        begin = ns(START + timedelta(minutes=call.minute))
        span = tracer.start_span(
            "POST /*", kind=SpanKind.SERVER, start_time=begin, attributes=gateway_attributes(call)
        )
        span.end(end_time=begin + 1000)
    provider.shutdown()


def attr(span: Span, key: str) -> str | None:
    """A string attribute of ``span``, or None."""
    for kv in span.attributes:
        if kv.key == key:
            return kv.value.string_value
    return None


async def push_grpc(service: Service, session: pb.Session) -> None:
    """Push one session over the gRPC SessionService."""
    async with grpc.aio.insecure_channel(service.addresses.grpc) as channel:
        push = channel.unary_unary(
            "/user_enricher.v1.SessionService/PushSessions",
            request_serializer=pb.PushSessionsRequest.SerializeToString,
            response_deserializer=pb.PushSessionsResponse.FromString,
        )
        reply = await push(
            pb.PushSessionsRequest(sessions=[session]),
            metadata=(("authorization", f"Bearer {TOKEN}"),),
        )
        assert reply.accepted == 1


async def raw_export(endpoint: str, payload: bytes) -> bytes:
    """Call TraceService/Export with arbitrary bytes."""
    async with grpc.aio.insecure_channel(endpoint) as channel:
        call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        result: bytes = await call(payload, timeout=10)
        return result


@pytest.mark.parametrize("gzip", [False, True])
async def test_sdk_spans_arrive_enriched(
    service: Service, sink: TraceSink, clock: Clock, gzip: bool
) -> None:
    """Sessions pushed over HTTP and gRPC attribute the SDK's spans; the sink gets each once."""
    clock.now_ns = int(START.timestamp()) * 1_000_000_000  # sessions start within a week of now
    await push_sessions(
        service,
        {
            "source_ip": "172.18.0.5",
            "user": {"id": "mike", "email": "mike.chen@example.com", "name": "Mike Chen"},
            "start": "2026-11-26T09:00:00Z",
            "end": "2026-11-26T09:20:00Z",
        },
    )
    session = pb.Session(source_ip="fd00::7", user=pb.User(email="raj.patel@example.com"))
    session.start.FromDatetime(START)
    session.ttl_seconds = 3600
    await push_grpc(service, session)
    calls = [
        GatewayCall(2, "172.18.0.5:40312", "anthropic", "claude-sonnet-4-5", 41, 281),
        GatewayCall(5, "[fd00::7]:51022", "openai", "gpt-4o", 812, 96),
        GatewayCall(30, "172.18.0.5:40312", "openai", "gpt-4o", 1, 2),
        GatewayCall(31, "10.99.0.14:1", "openai", "gpt-4o", 1, 2),
    ]
    await asyncio.to_thread(emit, service.addresses.grpc, calls, gzip=gzip)
    spans = await sink.wait_for_spans(len(calls))
    assert len(spans) == len(calls)
    emails = sorted((attr(s, "src.addr") or "", attr(s, "user.email") or "-") for s in spans)
    assert emails == [
        ("10.99.0.14:1", "-"),
        ("172.18.0.5:40312", "-"),
        ("172.18.0.5:40312", "mike.chen@example.com"),
        ("[fd00::7]:51022", "raj.patel@example.com"),
    ]
    mike = next(s for s in spans if attr(s, "user.email") == "mike.chen@example.com")
    assert attr(mike, "user.attribution.method") == "session"
    assert attr(mike, "enduser.id") == "mike"
    assert attr(mike, "gen_ai.request.model") == "claude-sonnet-4-5"


async def test_unenriched_batch_is_forwarded_byte_for_byte(
    service: Service, sink: TraceSink
) -> None:
    """A batch in which no span matched reaches the sink as the exact bytes sent."""
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = b"\x01" * 16, b"\x02" * 8, "POST /*"
    span.attributes.add(key="src.addr").value.string_value = "10.0.0.1:5"
    payload = request.SerializeToString()
    await raw_export(service.addresses.grpc, payload)
    await sink.wait_for_spans(1)
    assert sink.raw == [payload]


async def test_empty_request_is_a_success(service: Service, sink: TraceSink) -> None:
    """An empty Export request succeeds and forwards nothing."""
    reply = await raw_export(service.addresses.grpc, b"")
    assert ExportTraceServiceResponse.FromString(reply) == ExportTraceServiceResponse()
    assert sink.raw == []


async def test_undecodable_payload_is_invalid_argument(service: Service, sink: TraceSink) -> None:
    """Garbage gets INVALID_ARGUMENT with a message, and the service keeps serving."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw_export(service.addresses.grpc, b"\x0a\xff\xff\xff\xff\x0f garbage")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ExportTraceServiceRequest" in (caught.value.details() or "")
    await test_empty_request_is_a_success(service, sink)


async def test_large_request_above_grpc_default_limit(service: Service, sink: TraceSink) -> None:
    """A 6 MiB request (over grpcio's 4 MiB default) is accepted and forwarded whole."""
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for i in range(3000):
        s = spans.add(trace_id=i.to_bytes(16, "big"), span_id=b"\x01" * 8, name="big")
        s.attributes.add(key="blob").value.string_value = "x" * 2048
    payload = request.SerializeToString()
    assert len(payload) > 6 << 20
    await raw_export(service.addresses.grpc, payload)
    assert len(await sink.wait_for_spans(3000)) == 3000
