"""Open WebUI's own traces through the service: the trace join, in both arrival orders."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import Clock, service_config
from correlation_kit import attrs, who
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from processor.app.service import Service
from processor.tools.demo_scenario import GatewayCall, gateway_attributes
from processor.tools.sink import TraceSink

CALL = GatewayCall(0, "172.18.0.5:40312", "openai", "gpt-4o", 10, 20)


def provider(endpoint: str, service: str) -> TracerProvider:
    """An SDK provider exporting each span at once over OTLP/gRPC."""
    p = TracerProvider(resource=Resource.create({"service.name": service}))
    p.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(f"http://{endpoint}", insecure=True)))
    return p


def emit(endpoint: str, start_ns: int, gateway_first: bool, headers: dict[str, Any]) -> None:
    """Open WebUI's request span and AgentGateway's child span, exported in the given order."""
    ui, gw = provider(endpoint, "open-webui"), provider(endpoint, "agentgateway")
    ui_span = ui.get_tracer("open-webui").start_span(
        "POST /api/chat/completions",
        kind=SpanKind.SERVER,
        start_time=start_ns - 40_000_000,
        attributes={
            "client.user.id": "u-ana",
            "client.user.email": "ana.lima@example.com",
            "client.user.role": "user",
        },
    )
    gw_span = gw.get_tracer("agentgateway").start_span(
        "POST /*",
        kind=SpanKind.SERVER,
        start_time=start_ns,
        attributes={**gateway_attributes(CALL), **headers},
        context=trace.set_span_in_context(ui_span),
    )
    first, second = (gw_span, ui_span) if gateway_first else (ui_span, gw_span)
    first.end(end_time=start_ns + 1_000_000_000)
    second.end(end_time=start_ns + 1_100_000_000)
    ui.shutdown()
    gw.shutdown()


def send_one(endpoint: str, headers: dict[str, Any]) -> None:
    """One gateway span carrying ``headers`` as attributes (blocking: the SDK exports inline)."""
    gw = provider(endpoint, "agentgateway")
    span = gw.get_tracer("agentgateway").start_span(
        "POST /*", attributes={**gateway_attributes(CALL), **headers}
    )
    span.end()
    gw.shutdown()


@pytest.mark.parametrize("gateway_first", [True, False], ids=["gateway-first", "webui-first"])
async def test_trace_join_in_both_orders(
    sink: TraceSink, clock: Clock, gateway_first: bool
) -> None:
    """The gateway span gets Open WebUI's user by trace, whichever span arrives first."""
    svc = Service(service_config(sink.endpoint, correlation={"hold": "1h"}), clock_ns=clock)
    await svc.start()
    try:
        await asyncio.to_thread(emit, svc.addresses.grpc, clock.now_ns, gateway_first, {})
        spans = await sink.wait_for_spans(2)
    finally:
        await svc.shutdown(grace_s=1.0)
    gateway = next(s for s in spans if s.name == "POST /*")
    webui = next(s for s in spans if s.name != "POST /*")
    assert gateway.trace_id == webui.trace_id
    assert who(gateway) == ("ana.lima@example.com", "trace", "exact")
    assert who(webui) == ("ana.lima@example.com", "span", "exact")
    released = svc.metrics.registry.get_sample_value(
        "user_enricher_spans_released_total", {"reason": "early"}
    )
    assert released == (1 if gateway_first else 0)


async def test_forwarded_headers_are_normalised(sink: TraceSink, clock: Clock) -> None:
    """Headers AgentGateway captured from Open WebUI become user.* keys, name URL-decoded."""
    headers = {
        "http.request.header.x-openwebui-user-email": ("jose.perez@example.com",),
        "http.request.header.x-openwebui-user-name": ("Jos%C3%A9%20P%C3%A9rez",),
        "http.request.header.x-openwebui-user-id": ("u-jose",),
    }
    svc = Service(service_config(sink.endpoint), clock_ns=clock)
    await svc.start()
    try:
        await asyncio.to_thread(send_one, svc.addresses.grpc, headers)
        (got,) = await sink.wait_for_spans(1)
    finally:
        await svc.shutdown(grace_s=1.0)
    assert attrs(got)["user.name"] == "José Pérez"
    assert who(got) == ("jose.perez@example.com", "span", "exact")
