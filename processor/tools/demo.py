"""``user-enricher demo``: the whole flow in one process, with no outside services.

An embedded sink stands in for Jaeger, a few Open WebUI users push sessions over
the HTTP session API, and the real OpenTelemetry SDK exporter sends
AgentGateway-shaped spans through the service. The table printed at the end is
what Jaeger would show.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from processor.app.config import Config, parse_config
from processor.app.service import Service
from processor.tools.demo_scenario import (
    CALLS,
    DIRECTORY_YAML,
    OPENWEBUI_V4,
    OPENWEBUI_V6,
    USERS,
    GatewayCall,
    gateway_attributes,
)
from processor.tools.sink import TraceSink


def demo_config(sink_endpoint: str, token: str, directory_file: str) -> Config:
    """A service config on ephemeral loopback ports, exporting to ``sink_endpoint``."""
    return parse_config(
        {
            "receiver": {"grpc_endpoint": "127.0.0.1:0", "http_endpoint": "127.0.0.1:0"},
            "exporter": {"endpoint": sink_endpoint, "insecure": True},
            "api": {"endpoint": "127.0.0.1:0", "token": token},
            "sessions": {"ttl": "30m"},
            # A short hold keeps the demo quick; Open WebUI's spans arrive within it.
            "correlation": {"hold": "1s"},
            "directory": {"file": directory_file},
            "logging": {"level": "warning"},
        },
        base_dir=Path.cwd(),
        env={},
    )


def session_payloads(start: datetime, calls: Sequence[GatewayCall]) -> list[dict[str, Any]]:
    """What the identity sources push: raj's login session, and the filter's request events."""
    pushes: list[dict[str, Any]] = [
        {
            "source_ip": OPENWEBUI_V6,
            "user": USERS["raj.patel"].as_json(),
            "start": _rfc3339(start),
            "end": _rfc3339(start + timedelta(minutes=60)),
        }
    ]
    for call in calls:
        if not call.identity.startswith("event:"):
            continue
        for n, user_id in enumerate(call.identity.removeprefix("event:").split(",")):
            at = start + timedelta(minutes=call.minute, milliseconds=-300 + 150 * n)
            pushes.append(
                {
                    "kind": "request",
                    "source_ip": OPENWEBUI_V4,
                    "user": USERS[user_id].as_json(),
                    "start": _rfc3339(at),
                    "model": call.model,
                }
            )
    return pushes


def send_spans(endpoint: str, calls: Sequence[GatewayCall], start: datetime) -> int:
    """Emit ``calls`` through the real OTel SDK OTLP/gRPC exporter, as two services would.

    AgentGateway's spans go first; Open WebUI's own spans (for the calls whose user
    it knows from its traces) follow in a separate export, as its SDK batches them
    later. Returns how many spans were sent. Blocking: call from a worker thread.
    """
    gateway = _provider(endpoint, "agentgateway")
    webui = _provider(endpoint, "open-webui")
    gw_tracer, ui_tracer = gateway.get_tracer("agentgateway"), webui.get_tracer("open-webui")
    sent = 0
    for call in calls:
        begin = _ns(start + timedelta(minutes=call.minute))
        context = None
        if call.identity.startswith("trace:"):
            user = USERS[call.identity.removeprefix("trace:")]
            ui_span = ui_tracer.start_span(
                "POST /api/chat/completions",
                kind=SpanKind.SERVER,
                start_time=begin - 40_000_000,
                attributes={
                    "client.user.id": user.id,
                    "client.user.email": user.email,
                    "client.user.role": "user",
                },
            )
            ui_span.end(end_time=begin + 1_850_000_000)
            context = trace.set_span_in_context(ui_span)
            sent += 1
        span = gw_tracer.start_span(
            "POST /*",
            kind=SpanKind.SERVER,
            start_time=begin,
            attributes=gateway_attributes(call),
            context=context,
        )
        span.end(end_time=begin + 1_800_000_000)
        sent += 1
    gateway.force_flush()
    webui.force_flush()
    gateway.shutdown()
    webui.shutdown()
    return sent


def _provider(endpoint: str, service: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=f"http://{endpoint}", insecure=True)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


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
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "directory.yaml"
        directory.write_text(DIRECTORY_YAML)
        service = Service(demo_config(sink.endpoint, token, str(directory)))
        await service.start()
        try:
            assert service.addresses.http is not None
            payloads = session_payloads(start, calls)
            accepted = await push_sessions(service.addresses.http, token, payloads)
            print(f"Identity sources pushed {accepted} sessions and request events.")
            total = await asyncio.to_thread(send_spans, service.addresses.grpc, calls, start)
            await sink.wait_for_spans(total)
        finally:
            await service.shutdown(grace_s=1.0)
            await sink.stop()
    gateway_spans = sink.spans("agentgateway")
    print(render_table(gateway_spans))
    print(_summary(gateway_spans))
    print(NEXT_STEPS)
    return 0


def render_table(spans: Sequence[Span]) -> str:
    """The spans as Jaeger would list them, with the user the service attached."""
    header = ("time", "route", "model", "tokens", "source", "user.email", "method", "confidence")
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
        _text(attrs, "user.attribution.confidence") or "-",
    )


def _text(attrs: Mapping[str, AnyValue], key: str) -> str:
    value = attrs.get(key)
    if value is None:
        return ""
    return str(value.int_value) if value.HasField("int_value") else value.string_value


def _summary(spans: Sequence[Span]) -> str:
    rows = [_row(s) for s in spans]
    methods = Counter(r[6] for r in rows if r[5] != "-")
    ambiguous = sum(1 for r in rows if r[5] == "-" and r[7] == "ambiguous")
    nobody = sum(1 for r in rows if r[5] == "-" and r[7] != "ambiguous")
    by = ", ".join(f"{n} by {m}" for m, n in methods.most_common())
    return (
        f"\n{len(spans)} AgentGateway spans forwarded, unchanged but for the user: "
        f"{sum(methods.values())} given a user ({by}); {ambiguous} that two users could have "
        f"sent (never guessed); {nobody} with no identity anywhere."
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
