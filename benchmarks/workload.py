"""AgentGateway-shaped OTLP batches and matching sessions, shared by the benchmarks."""

from __future__ import annotations

import random

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from processor.model import Session, User

T0 = 1_795_000_000_000_000_000
ADDRESSES = ("172.18.0.5", "172.18.0.6", "fd00::7", "fd00::8")


def _kv(key: str, value: str | int) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _src(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def gateway_batch(spans: int, seed: int = 1) -> bytes:
    """One serialized Export request of ``spans`` spans, ~15 attributes each, mixed IPv4/IPv6."""
    rng = random.Random(seed)
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.append(_kv("service.name", "agentgateway"))
    ss = rs.scope_spans.add()
    ss.scope.name = "agentgateway"
    for i in range(spans):
        span = ss.spans.add(
            trace_id=rng.randbytes(16), span_id=rng.randbytes(8), name="POST /*", kind=2
        )
        span.start_time_unix_nano = T0 + i * 1_000_000
        span.end_time_unix_nano = span.start_time_unix_nano + 1_500_000_000
        provider, model = rng.choice((("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5")))
        for key, value in (
            ("gateway", "default/agentgateway"),
            ("listener", "http"),
            ("route", "default/llm"),
            ("endpoint", f"api.{provider}.com:443"),
            ("protocol", "llm"),
            ("src.addr", _src(ADDRESSES[i % len(ADDRESSES)], 40000 + i % 7)),
            ("http.method", "POST"),
            ("http.host", "agentgateway:3000"),
            ("http.path", f"/{provider}/v1/chat/completions"),
            ("http.status", 200),
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.provider.name", provider),
            ("gen_ai.request.model", model),
            ("gen_ai.usage.input_tokens", rng.randrange(10, 4000)),
            ("gen_ai.usage.output_tokens", rng.randrange(10, 2000)),
        ):
            span.attributes.append(_kv(key, value))
    return request.SerializeToString()


def mixed_batch(spans: int, every: int = 20, seed: int = 1) -> bytes:
    """:func:`gateway_batch` with one span in ``every`` lacking its token counts (a
    failed call), so the batch has two attribute layouts."""
    request = ExportTraceServiceRequest.FromString(gateway_batch(spans, seed))
    for i, span in enumerate(request.resource_spans[0].scope_spans[0].spans):
        if i % every == 0:
            del span.attributes[13:]
    return request.SerializeToString()


def sessions(count: int, seed: int = 2) -> list[Session]:
    """One covering session per gateway address plus ``count - 4`` sessions elsewhere."""
    hour = 3600 * 1_000_000_000
    out = [
        Session(address, User(id=f"user{i}", email=f"user{i}@example.com"), T0 - hour, T0 + hour)
        for i, address in enumerate(ADDRESSES)
    ]
    rng = random.Random(seed)
    for i in range(max(0, count - len(out))):
        address = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        start = T0 + rng.randrange(-hour, hour)
        out.append(Session(address, User(id=f"other{i}"), start, start + hour // 2))
    return out
