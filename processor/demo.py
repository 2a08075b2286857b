"""``user-enricher demo``: the whole flow in one process, with no outside services.

An embedded sink stands in for Jaeger, a few Open WebUI users push sessions over
the HTTP session API, and the real OpenTelemetry SDK exporter sends
AgentGateway-shaped spans through the service. The table printed at the end is
what Jaeger would show.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from processor.config import Config, parse_config
from processor.metrics import Metrics
from processor.service import Service
from processor.sink import TraceSink

OPENWEBUI_V4 = "172.18.0.5"  # the shared Open WebUI container, as AgentGateway sees it
OPENWEBUI_V6 = "fd00::7"  # a second Open WebUI replica on an IPv6 network


@dataclass(frozen=True, slots=True)
class GatewayCall:
    """One LLM call as AgentGateway would trace it."""

    minute: int  # minutes after the demo's start
    source: str  # the src.addr AgentGateway records
    provider: str
    model: str
    tokens_in: int
    tokens_out: int
    status: int = 200


def gateway_attributes(call: GatewayCall) -> dict[str, Any]:
    """The span attributes AgentGateway v1.x writes for an LLM call (see DOMAIN.md)."""
    return {
        "gateway": "default/agentgateway",
        "listener": "http",
        "route": "default/llm",
        "endpoint": f"api.{call.provider}.com:443",
        "protocol": "llm",
        "src.addr": call.source,
        "http.method": "POST",
        "http.host": "agentgateway:3000",
        "http.path": f"/{call.provider}/v1/chat/completions",
        "http.status": call.status,
        "http.version": "HTTP/1.1",
        "url.scheme": "http",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": call.provider,
        "gen_ai.request.model": call.model,
        "gen_ai.response.model": call.model,
        "gen_ai.usage.input_tokens": call.tokens_in,
        "gen_ai.usage.output_tokens": call.tokens_out,
    }


SESSIONS: tuple[tuple[str, str, str, int, int], ...] = (
    # (email, name, address, from minute, to minute)
    ("mike.chen@example.com", "Mike Chen", OPENWEBUI_V4, 0, 20),
    ("ana.lima@example.com", "Ana Lima", OPENWEBUI_V4, 25, 50),
    ("raj.patel@example.com", "Raj Patel", OPENWEBUI_V6, 0, 60),
    ("sam.okafor@example.com", "Sam Okafor", OPENWEBUI_V4, 45, 60),
)

CALLS: tuple[GatewayCall, ...] = (
    GatewayCall(2, f"{OPENWEBUI_V4}:40312", "anthropic", "claude-sonnet-4-5", 41, 281),
    GatewayCall(5, f"[{OPENWEBUI_V6}]:51022", "openai", "gpt-4o", 812, 96),
    GatewayCall(9, f"{OPENWEBUI_V4}:40312", "anthropic", "claude-sonnet-4-5", 1204, 530),
    GatewayCall(14, f"[::ffff:{OPENWEBUI_V4}]:40318", "openai", "gpt-4o-mini", 96, 12),
    GatewayCall(18, f"[{OPENWEBUI_V6}]:51022", "gcp.gemini", "gemini-2.5-pro", 2210, 704),
    GatewayCall(27, f"{OPENWEBUI_V4}:40330", "openai", "gpt-4o", 380, 190),
    GatewayCall(33, f"{OPENWEBUI_V4}:40330", "anthropic", "claude-haiku-4-5", 150, 44, 429),
    GatewayCall(39, f"[{OPENWEBUI_V6}]:51040", "openai", "gpt-4o", 55, 300),
    GatewayCall(47, f"{OPENWEBUI_V4}:40330", "openai", "gpt-4o", 610, 233),  # ana + sam
    GatewayCall(52, f"{OPENWEBUI_V4}:40344", "anthropic", "claude-sonnet-4-5", 77, 640),
    GatewayCall(55, "10.99.0.14:33001", "openai", "gpt-4o-mini", 30, 8),  # nobody's address
    GatewayCall(58, f"[{OPENWEBUI_V6}]:51040", "aws.bedrock", "claude-sonnet-4-5", 990, 410),
)


def demo_config(sink_endpoint: str, token: str) -> Config:
    """A service config on ephemeral loopback ports, exporting to ``sink_endpoint``."""
    return parse_config(
        {
            "receiver": {"grpc_endpoint": "127.0.0.1:0"},
            "exporter": {"endpoint": sink_endpoint, "insecure": True},
            "api": {"endpoint": "127.0.0.1:0", "token": token},
            "sessions": {"ttl": "30m"},
            # Short hold: the demo has no Open WebUI traces to wait for.
            "correlation": {"hold": "200ms"},
            "logging": {"level": "warning"},
        },
        base_dir=Path.cwd(),
        env={},
    )


def session_payloads(start: datetime) -> list[dict[str, Any]]:
    """The sessions the identity sources push, as session API JSON."""
    return [
        {
            "source_ip": address,
            "user": {"email": email, "name": name, "id": email.split("@")[0]},
            "start": _rfc3339(start + timedelta(minutes=lo)),
            "end": _rfc3339(start + timedelta(minutes=hi)),
        }
        for email, name, address, lo, hi in SESSIONS
    ]


def send_gateway_spans(endpoint: str, calls: Sequence[GatewayCall], start: datetime) -> None:
    """Emit ``calls`` as AgentGateway spans through the real OTel SDK OTLP/gRPC exporter.

    Blocking (the SDK exporter is synchronous): call it from a worker thread.
    """
    provider = TracerProvider(resource=Resource.create({"service.name": "agentgateway"}))
    exporter = OTLPSpanExporter(endpoint=f"http://{endpoint}", insecure=True)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("agentgateway")
    for call in calls:
        begin = _ns(start + timedelta(minutes=call.minute))
        span = tracer.start_span(
            "POST /*",
            kind=SpanKind.SERVER,
            start_time=begin,
            attributes=gateway_attributes(call),
        )
        span.end(end_time=begin + 1_800_000_000)
    provider.force_flush()
    provider.shutdown()


async def push_sessions(http_address: str, token: str, payloads: list[dict[str, Any]]) -> int:
    """POST the sessions to the service's session API; returns how many it accepted."""
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            f"http://{http_address}/v1/sessions",
            json={"sessions": payloads},
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        body = await response.json()
        if response.status != 200:
            raise RuntimeError(f"session push refused: {response.status} {body}")
        return int(body["accepted"])


async def run_demo(spans: int = len(CALLS)) -> int:
    """Run the demo end to end and print the result; returns the exit status."""
    calls = list(_cycle(CALLS, spans))
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    sink = TraceSink()
    await sink.start()
    token = secrets.token_urlsafe(24)
    service = Service(demo_config(sink.endpoint, token))
    await service.start()
    try:
        assert service.addresses.http is not None
        accepted = await push_sessions(service.addresses.http, token, session_payloads(start))
        print(f"Open WebUI identity sources pushed {accepted} sessions to the session API.")
        await asyncio.to_thread(send_gateway_spans, service.addresses.grpc, calls, start)
        received = await sink.wait_for_spans(len(calls))
    finally:
        await service.shutdown(grace_s=1.0)
        await sink.stop()
    print(render_table(received))
    print(_summary(received, service.metrics))
    print(NEXT_STEPS)
    return 0


def render_table(spans: Sequence[Span]) -> str:
    """The spans as Jaeger would list them, with the user the service attached."""
    header = ("time", "route", "model", "tokens in/out", "source", "user.email", "method")
    rows = [header] + [_row(s) for s in sorted(spans, key=lambda s: s.start_time_unix_nano)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _row(span: Span) -> tuple[str, ...]:
    attrs = {kv.key: kv.value for kv in span.attributes}
    when = datetime.fromtimestamp(span.start_time_unix_nano / 1e9, UTC).strftime("%H:%M:%S")
    tokens = (
        f"{_text(attrs, 'gen_ai.usage.input_tokens')}/{_text(attrs, 'gen_ai.usage.output_tokens')}"
    )
    return (
        when,
        _text(attrs, "http.path"),
        _text(attrs, "gen_ai.request.model"),
        tokens,
        _text(attrs, "src.addr"),
        _text(attrs, "user.email") or "-",
        _text(attrs, "user.attribution.method") or "-",
    )


def _text(attrs: Mapping[str, AnyValue], key: str) -> str:
    value = attrs.get(key)
    if value is None:
        return ""
    return str(value.int_value) if value.HasField("int_value") else value.string_value


def _summary(spans: Sequence[Span], metrics: Metrics) -> str:
    def total(name: str) -> int:
        return int(metrics.registry.get_sample_value(f"user_enricher_{name}_total") or 0)

    return (
        f"\n{len(spans)} spans forwarded unchanged but for the user: "
        f"{total('spans_received') - total('spans_unmatched') - total('spans_ambiguous')} "
        f"given a user, {total('spans_ambiguous')} left alone because two users' sessions "
        f"covered them (never guessed), {total('spans_unmatched')} from an address with no session."
    )


NEXT_STEPS = """
Run the real thing:
  1. user-enricher check-config deploy/examples/config.yaml
  2. user-enricher serve --config deploy/examples/config.yaml
  3. Point AgentGateway's tracing at it (frontendPolicies.tracing.host: <enricher>:4317)
  4. Push sessions to POST /v1/sessions (see README), then search Jaeger:
     Service agentgateway, Tags user.email=mike.chen@example.com
"""


def _cycle(calls: Sequence[GatewayCall], n: int) -> Iterator[GatewayCall]:
    for i in range(n):
        yield calls[i % len(calls)]


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
