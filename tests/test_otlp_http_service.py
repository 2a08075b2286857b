"""OTLP/HTTP through the running service: the SDK's HTTP exporter in, OTLP/HTTP out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from conftest import Clock, service_config
from correlation_kit import GW, MIKE, MS, event
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from processor.app.service import Service


class HttpSink:
    """Jaeger's OTLP/HTTP port stand-in: records every POST /v1/traces body."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.arrived = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.endpoint = ""

    async def start(self) -> None:
        """Listen on 127.0.0.1, any free port."""
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.endpoint = f"127.0.0.1:{self.runner.addresses[0][1]}"

    async def _traces(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        self.requests.append(ExportTraceServiceRequest.FromString(await request.read()))
        self.arrived.set()
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")


@pytest.fixture
async def http_sink() -> AsyncIterator[HttpSink]:
    """A running OTLP/HTTP sink."""
    sink = HttpSink()
    await sink.start()
    yield sink
    assert sink.runner is not None
    await sink.runner.cleanup()


def sdk_http_export(endpoint: str, start_ns: int) -> None:
    """One gateway span through the SDK's OTLP/HTTP exporter, gzip on (blocking)."""
    exporter = OTLPSpanExporter(
        endpoint=f"http://{endpoint}/v1/traces", compression=Compression.Gzip, timeout=10
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "agentgateway"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = provider.get_tracer("agentgateway").start_span(
        "POST /*", start_time=start_ns, attributes={"src.addr": f"{GW}:40312"}
    )
    span.end(end_time=start_ns + 1000)
    provider.shutdown()


async def test_http_in_http_out(http_sink: HttpSink, clock: Clock) -> None:
    """A span sent over OTLP/HTTP leaves over OTLP/HTTP with its user attached."""
    config = service_config(
        http_sink.endpoint,
        exporter={"endpoint": http_sink.endpoint, "insecure": True, "protocol": "http"},
    )
    svc = Service(config, clock_ns=clock)
    await svc.start()
    try:
        svc.store.add(event(MIKE, clock.now_ns - 300 * MS))
        assert svc.addresses.otlp_http is not None
        await asyncio.to_thread(sdk_http_export, svc.addresses.otlp_http, clock.now_ns)
        async with asyncio.timeout(10):
            await http_sink.arrived.wait()
    finally:
        await svc.shutdown(grace_s=1.0)
    (request,) = http_sink.requests
    span = request.resource_spans[0].scope_spans[0].spans[0]
    attrs = {kv.key: kv.value.string_value for kv in span.attributes}
    assert attrs["user.email"] == MIKE.email
    assert attrs["user.attribution.method"] == "session"
