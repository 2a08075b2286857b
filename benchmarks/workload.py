"""AgentGateway-shaped OTLP batches and matching sessions, shared by the benchmarks."""

from __future__ import annotations

import random
from collections.abc import Callable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from processor.model import Session, User

T0 = 1_795_000_000_000_000_000
ADDRESSES = ("172.18.0.5", "172.18.0.6", "fd00::7", "fd00::8")
DIVERSE_ADDRESSES = 2048  # and as many users, one session each
# Every span of every workload carries this once (the sink counts spans by it).
SPAN_MARK = b"default/agentgateway"


def _kv(key: str, value: str | int) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _src(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def gateway_batch(spans: int, seed: int = 1) -> bytes:
    """One serialized Export request of ``spans`` spans, ~15 attributes each, mixed IPv4/IPv6.

    The *narrow* shape: every span comes from one of 4 addresses and 7 ports.
    """
    return _batch(spans, seed, lambda i, rng: _src(ADDRESSES[i % len(ADDRESSES)], 40000 + i % 7))


def diverse_address(index: int) -> str:
    """The ``index``-th address of the diverse shape (the harness's ``other_sessions`` too)."""
    return f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"


def diverse_batch(
    spans: int, seed: int = 1, part: int = 0, addresses: int = DIVERSE_ADDRESSES
) -> bytes:
    """A busy gateway's batch: every span its own ``ip:port``, ``spans`` distinct
    addresses (part ``part`` of ``addresses``), one span in 20 without token counts
    (a failed call: two attribute layouts), and the identity-free gateway attributes."""

    def address(i: int, rng: random.Random) -> str:
        return f"{diverse_address((part * spans + i) % addresses)}:{rng.randrange(1024, 65536)}"

    return _batch(spans, seed + part, address, every=20)


def identity_batch(spans: int, seed: int = 1, part: int = 0) -> bytes:
    """:func:`diverse_batch` with the identity Open WebUI forwards on every span
    (``ENABLE_FORWARD_USER_INFO_HEADERS`` copied into attributes), one user per address."""
    request = ExportTraceServiceRequest.FromString(diverse_batch(spans, seed, part))
    for i, span in enumerate(request.resource_spans[0].scope_spans[0].spans):
        who = (part * spans + i) % DIVERSE_ADDRESSES
        span.attributes.append(_kv("x-openwebui-user-id", f"owui-{who}"))
        span.attributes.append(_kv("x-openwebui-user-email", f"owui{who}@example.com"))
    return request.SerializeToString()


def _batch(
    spans: int,
    seed: int,
    address: Callable[[int, random.Random], str],
    every: int = 0,
) -> bytes:
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
            ("src.addr", address(i, rng)),
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
        if every and i % every == every - 1:
            del span.attributes[13:]
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
