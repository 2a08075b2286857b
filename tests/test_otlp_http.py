"""Tests for OTLP/HTTP: the receiver against the real OTel SDK exporter and hand-made requests,
the HTTP sender against a recording sink, and the config keys that select them."""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest
from aiohttp import web
from conftest import free_port, wait_until
from google.protobuf import json_format
from google.rpc import (  # type: ignore[import-untyped, unused-ignore]
    code_pb2,
    error_details_pb2,
    status_pb2,
)
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from processor.app.config import Config, parse_config
from processor.errors import Backpressure, ConfigError
from processor.export import RetryConfig, RetrySender
from processor.export.classify import SHUTDOWN_CODE, ExportFailed
from processor.export.config import ExporterConfig
from processor.export.otlp_http import OtlpHttpSender, export_url, parse_retry_after
from processor.metrics import Metrics
from processor.receive.auth import BearerToken
from processor.receive.body import MAX_GZIP_MEMBERS, Rejected, decompress
from processor.receive.budget import InflightBudget
from processor.receive.http_trace import HttpTraceReceiver, build_app, build_runner
from processor.wire.received import Received

TOKEN = "receiver-token-0123456789"
TRACE_HEX = "5b8efff798038103d269b633813fc60c"
SPAN_HEX = "eee19b7ec3c1b174"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MiB = 1024 * 1024

# --------------------------------------------------------------------------- receiver harness


class FakePipeline:
    """Records accepted requests; raises Backpressure or any error when told to."""

    def __init__(self) -> None:
        self.accepted: list[tuple[ExportTraceServiceRequest, bytes]] = []
        self.backpressure: float | None = None
        self.error: Exception | None = None
        self.hold: asyncio.Event | None = None  # set: accept waits for it
        self.holding = asyncio.Event()  # set while an accept waits on ``hold``

    def admit(self, raw: bytes) -> Received:
        """Read ``raw`` in full, as the service does for a request it cannot read by columns."""
        received = Received.parse(raw)
        received.message()
        return received

    async def accept(self, received: Received) -> int:
        """Take ``received`` unless scripted to refuse; returns its span count."""
        if self.error is not None:
            raise self.error
        if self.backpressure is not None:
            raise Backpressure(self.backpressure)
        if self.hold is not None:
            self.holding.set()
            await self.hold.wait()
        self.accepted.append((received.message(), received.raw))
        return received.spans


@dataclass
class Receiver:
    """A running receiver: its URL, the fake pipeline behind it and its metrics."""

    url: str
    pipeline: FakePipeline
    metrics: Metrics

    def outcome(self, outcome: str) -> float:
        """How many requests ended with ``outcome``."""
        value = self.metrics.registry.get_sample_value(
            "user_enricher_requests_received_total", {"outcome": outcome}
        )
        return value or 0.0


@asynccontextmanager
async def serve(
    *,
    auth: BearerToken | None = None,
    max_message_bytes: int = 64 * MiB,
    offload_bytes: int = 256 * 1024,
    make_runner: Callable[[HttpTraceReceiver], web.AppRunner] = build_runner,
    budget: InflightBudget | None = None,
) -> AsyncIterator[Receiver]:
    """An HTTP trace receiver on 127.0.0.1:<free port> around a FakePipeline."""
    pipeline, metrics = FakePipeline(), Metrics()
    receiver = HttpTraceReceiver(
        pipeline,
        metrics,
        max_message_bytes=max_message_bytes,
        auth=auth,
        offload_bytes=offload_bytes,
        budget=budget,
    )
    runner = make_runner(receiver)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Receiver(f"http://127.0.0.1:{port}/v1/traces", pipeline, metrics)
    finally:
        await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A receiver with no token and the default 64 MiB limit."""
    async with serve() as running:
        yield running


@dataclass
class Answer:
    """An HTTP answer as the tests inspect it."""

    status: int
    content_type: str
    headers: dict[str, str]
    body: bytes


async def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> Answer:
    """POST ``body`` as is (no compression added by the client)."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers or {}) as response,
    ):
        return Answer(
            response.status, response.content_type, dict(response.headers), await response.read()
        )


def rpc_status(answer: Answer) -> Any:
    """The google.rpc.Status in an error answer, decoded by its content type."""
    status = status_pb2.Status()
    if answer.content_type == JSON:
        json_format.Parse(answer.body, status)
    else:
        assert answer.content_type == PROTOBUF
        status.ParseFromString(answer.body)
    return status


def sdk_spans() -> list[ReadableSpan]:
    """Two finished spans from the real OpenTelemetry SDK."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=SdkResource.create({"service.name": "agentgateway"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("agentgateway")
    with tracer.start_as_current_span("POST /*", kind=SpanKind.SERVER) as span:
        span.set_attribute("src.addr", "10.0.0.7:40312")
        with tracer.start_as_current_span("upstream", kind=SpanKind.CLIENT):
            pass
    provider.shutdown()
    return list(exporter.get_finished_spans())


async def sdk_export(exporter: OTLPSpanExporter, spans: list[ReadableSpan]) -> SpanExportResult:
    """Run the SDK's blocking export in a thread, then shut the exporter down."""
    try:
        return await asyncio.to_thread(exporter.export, spans)
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]


def one_span_request() -> ExportTraceServiceRequest:
    """A request with one gateway span."""
    span = Span(
        trace_id=bytes.fromhex(TRACE_HEX),
        span_id=bytes.fromhex(SPAN_HEX),
        name="POST /*",
        kind=Span.SPAN_KIND_SERVER,
    )
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
    )


ONE_SPAN_JSON = {
    "resourceSpans": [
        {
            "scopeSpans": [
                {
                    "spans": [
                        {
                            "traceId": TRACE_HEX.upper(),
                            "spanId": SPAN_HEX,
                            "name": "POST /*",
                            "kind": 2,
                        }
                    ]
                }
            ]
        }
    ]
}

# --------------------------------------------------------------------------- the real SDK exporter


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
async def test_sdk_exporter_delivers_to_the_receiver(
    receiver: Receiver, compression: Compression
) -> None:
    """The SDK's OTLP/HTTP exporter succeeds, gzip on or off; the pipeline gets its bytes."""
    spans = sdk_spans()
    exporter = OTLPSpanExporter(endpoint=receiver.url, compression=compression, timeout=10)
    assert await sdk_export(exporter, spans) is SpanExportResult.SUCCESS
    [(request, raw)] = receiver.pipeline.accepted
    assert request == encode_spans(spans)
    assert raw == request.SerializeToString()
    assert receiver.outcome("ok") == 1


async def test_sdk_exporter_needs_the_receiver_token() -> None:
    """With receiver.auth the SDK exporter is refused without the token and served with it."""
    async with serve(auth=BearerToken(TOKEN)) as running:
        spans = sdk_spans()
        anonymous = OTLPSpanExporter(endpoint=running.url, timeout=10)
        assert await sdk_export(anonymous, spans) is SpanExportResult.FAILURE
        assert running.pipeline.accepted == []
        assert running.outcome("unauthenticated") == 1
        headers = {"authorization": f"Bearer {TOKEN}"}
        trusted = OTLPSpanExporter(endpoint=running.url, headers=headers, timeout=10)
        assert await sdk_export(trusted, spans) is SpanExportResult.SUCCESS
        assert len(running.pipeline.accepted) == 1


async def test_sdk_exporter_sees_backpressure_as_a_failure_to_retry(receiver: Receiver) -> None:
    """Under backpressure the SDK exporter is told to wait longer than its timeout, so it fails."""
    receiver.pipeline.backpressure = 1.5  # Retry-After: 2 > the 1 s timeout: no retry wait
    exporter = OTLPSpanExporter(endpoint=receiver.url, timeout=1)
    assert await sdk_export(exporter, sdk_spans()) is SpanExportResult.FAILURE
    assert receiver.outcome("backpressure") == 1


# --------------------------------------------------------------------------- hand-made requests


@pytest.mark.parametrize(
    ("gzipped", "offload_bytes"),
    [(False, 256 * 1024), (True, 256 * 1024), (True, 0)],
    ids=["plain", "gzip", "gzip-in-a-worker-thread"],
)
async def test_otlp_json_request_is_answered_in_json(gzipped: bool, offload_bytes: int) -> None:
    """Hand-written OTLP/JSON is decoded, handed on as protobuf bytes and answered with ``{}``."""
    body = json.dumps(ONE_SPAN_JSON).encode()
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if gzipped:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    async with serve(offload_bytes=offload_bytes) as running:
        answer = await post(running.url, body, headers)
        assert (answer.status, answer.content_type, answer.body) == (200, JSON, b"{}")
        [(request, raw)] = running.pipeline.accepted
        assert request == one_span_request()
        assert raw == request.SerializeToString()


@pytest.mark.parametrize("content_type", [PROTOBUF, "application/protobuf"])
async def test_protobuf_request_is_answered_in_protobuf(
    receiver: Receiver, content_type: str
) -> None:
    """Both protobuf media types are accepted; the answer is an x-protobuf response message."""
    body = one_span_request().SerializeToString()
    answer = await post(receiver.url, body, {"Content-Type": content_type})
    assert (answer.status, answer.content_type) == (200, PROTOBUF)
    assert ExportTraceServiceResponse.FromString(answer.body) == ExportTraceServiceResponse()
    assert receiver.pipeline.accepted == [(one_span_request(), body)]


async def test_deflate_bodies_are_accepted(receiver: Receiver) -> None:
    """A zlib-framed ``deflate`` body (the SDK's other compression) is inflated."""
    import zlib

    body = one_span_request().SerializeToString()
    headers = {"Content-Type": PROTOBUF, "Content-Encoding": "deflate"}
    answer = await post(receiver.url, zlib.compress(body), headers)
    assert answer.status == 200
    assert receiver.pipeline.accepted == [(one_span_request(), body)]


async def test_concatenated_gzip_members_are_one_body(receiver: Receiver) -> None:
    """A body of two gzip members decompresses to their concatenation, as gzip readers do."""
    body = one_span_request().SerializeToString()
    halves = gzip.compress(body[:10]) + gzip.compress(body[10:])
    answer = await post(
        receiver.url, halves, {"Content-Type": PROTOBUF, "Content-Encoding": "gzip"}
    )
    assert answer.status == 200
    assert receiver.pipeline.accepted == [(one_span_request(), body)]


async def test_empty_request_is_ok_and_counted_as_empty(receiver: Receiver) -> None:
    """A request without spans is answered 200 and counted as ``empty``."""
    answer = await post(receiver.url, b"{}", {"Content-Type": JSON})
    assert (answer.status, answer.body) == (200, b"{}")
    assert receiver.outcome("empty") == 1


async def test_a_runner_that_decompresses_itself_still_works() -> None:
    """Served by a default AppRunner (aiohttp decompresses), gzip bodies are not inflated twice."""
    body = one_span_request().SerializeToString()

    def default_runner(receiver: HttpTraceReceiver) -> web.AppRunner:
        return web.AppRunner(build_app(receiver))

    async with serve(make_runner=default_runner) as running:
        headers = {"Content-Type": PROTOBUF, "Content-Encoding": "gzip"}
        answer = await post(running.url, gzip.compress(body), headers)
        assert answer.status == 200
        assert running.pipeline.accepted == [(one_span_request(), body)]


# --------------------------------------------------------------------------- error answers


def _truncated_gzip() -> bytes:
    return gzip.compress(one_span_request().SerializeToString())[:-8]


ERRORS: list[tuple[str, dict[str, str], bytes, int, str, str, str]] = [
    # (id, headers, body, HTTP status, answer content type, message fragment, outcome)
    ("text-plain", {"Content-Type": "text/plain"}, b"x", 415, JSON, "Content-Type", "unsupported"),
    ("no-content-type", {}, b"x", 415, JSON, "application/x-protobuf", "unsupported"),
    (
        "brotli",
        {"Content-Type": PROTOBUF, "Content-Encoding": "br"},
        b"x",
        415,
        PROTOBUF,
        "Content-Encoding 'br'",
        "unsupported",
    ),
    (
        "garbage-protobuf",
        {"Content-Type": PROTOBUF},
        b"\xff\xff\xff",
        400,
        PROTOBUF,
        "not an ExportTraceServiceRequest",
        "invalid",
    ),
    (
        "bad-json-trace-id",
        {"Content-Type": JSON},
        json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "abc"}]}]}]}).encode(),
        400,
        JSON,
        "resourceSpans[0].scopeSpans[0].spans[0].traceId: expected 32 hex digits",
        "invalid",
    ),
    ("malformed-json", {"Content-Type": JSON}, b"{", 400, JSON, "malformed JSON", "invalid"),
    (
        "corrupt-gzip",
        {"Content-Type": PROTOBUF, "Content-Encoding": "gzip"},
        b"\x1f\x8bnot gzip at all",
        400,
        PROTOBUF,
        "cannot decompress gzip",
        "invalid",
    ),
    (
        "truncated-gzip",
        {"Content-Type": JSON, "Content-Encoding": "gzip"},
        _truncated_gzip(),
        400,
        JSON,
        "truncated",
        "invalid",
    ),
    (
        "garbage-after-gzip",
        {"Content-Type": PROTOBUF, "Content-Encoding": "gzip"},
        gzip.compress(b"") + b"junk",
        400,
        PROTOBUF,
        "cannot decompress gzip",
        "invalid",
    ),
]


@pytest.mark.parametrize(
    ("headers", "body", "status", "content_type", "fragment", "outcome"),
    [pytest.param(*case[1:], id=case[0]) for case in ERRORS],
)
async def test_refused_requests_get_a_status_body(
    receiver: Receiver,
    headers: dict[str, str],
    body: bytes,
    status: int,
    content_type: str,
    fragment: str,
    outcome: str,
) -> None:
    """Each refused request gets its status and a google.rpc.Status in the request's encoding."""
    answer = await post(receiver.url, body, headers)
    assert (answer.status, answer.content_type) == (status, content_type)
    assert fragment in rpc_status(answer).message
    assert receiver.pipeline.accepted == []
    assert receiver.outcome(outcome) == 1


async def test_bad_json_names_the_field_in_a_bad_request_detail(receiver: Receiver) -> None:
    """A 400 for OTLP/JSON carries a BadRequest detail with the JSON path of the problem."""
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": "X"}]}]}]}).encode()
    answer = await post(receiver.url, body, {"Content-Type": JSON})
    assert answer.status == 400
    data = json.loads(answer.body)
    assert data["code"] == code_pb2.INVALID_ARGUMENT
    [detail] = data["details"]
    assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    [violation] = detail["fieldViolations"]
    assert violation == {
        "field": "resourceSpans[0].scopeSpans[0].spans[0].kind",
        "description": "unknown SpanKind name 'X'",
    }


async def test_bodies_over_the_limit_are_413_before_and_after_decompression() -> None:
    """A body past max_message_bytes is 413, and so is a small gzip body that inflates past it."""
    async with serve(max_message_bytes=1024) as running:
        answer = await post(running.url, b"\x00" * 2048, {"Content-Type": PROTOBUF})
        assert answer.status == 413
        assert "larger than receiver.max_message_bytes (1024 bytes)" in rpc_status(answer).message
        bomb = gzip.compress(b"\x00" * 256 * 1024)
        assert len(bomb) < 1024
        headers = {"Content-Type": JSON, "Content-Encoding": "gzip"}
        answer = await post(running.url, bomb, headers)
        assert (answer.status, answer.content_type) == (413, JSON)
        assert "decompressed body larger" in rpc_status(answer).message
        assert running.outcome("too_large") == 2
        assert running.pipeline.accepted == []


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
async def test_backpressure_is_429_with_retry_after(receiver: Receiver, content_type: str) -> None:
    """A full queue answers 429, Retry-After in whole seconds rounded up, and a RetryInfo."""
    receiver.pipeline.backpressure = 1.5
    body = (
        one_span_request().SerializeToString()
        if content_type == PROTOBUF
        else json.dumps(ONE_SPAN_JSON).encode()
    )
    answer = await post(receiver.url, body, {"Content-Type": content_type})
    assert (answer.status, answer.content_type) == (429, content_type)
    assert answer.headers["Retry-After"] == "2"
    status = rpc_status(answer)
    assert status.code == code_pb2.RESOURCE_EXHAUSTED
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    assert info.retry_delay.seconds == 2


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token-0123456789", TOKEN, f"Basic {TOKEN}"],
    ids=["missing", "wrong", "no-scheme", "basic"],
)
async def test_receiver_token_is_required_when_configured(authorization: str | None) -> None:
    """Without the right bearer token the answer is 401 with WWW-Authenticate, before decoding."""
    async with serve(auth=BearerToken(TOKEN)) as running:
        headers = {"Content-Type": PROTOBUF}
        if authorization is not None:
            headers["Authorization"] = authorization
        answer = await post(running.url, b"\xff", headers)
        assert answer.status == 401
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert rpc_status(answer).code == code_pb2.UNAUTHENTICATED
        headers["Authorization"] = f"Bearer {TOKEN}"
        answer = await post(running.url, one_span_request().SerializeToString(), headers)
        assert answer.status == 200
        assert running.outcome("unauthenticated") == 1


async def test_sender_leaving_mid_body_is_counted_invalid(receiver: Receiver) -> None:
    """A client that closes after part of its declared body is counted ``invalid``, not an error."""
    port = int(receiver.url.split(":")[2].split("/")[0])
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        b"Content-Length: 1000\r\n\r\n" + b"\x0a" * 10
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    await wait_until(lambda: receiver.outcome("invalid") == 1)
    assert receiver.outcome("error") == 0
    assert receiver.pipeline.accepted == []


async def test_pipeline_failure_is_500_and_counted(receiver: Receiver) -> None:
    """An unexpected pipeline error answers 500 INTERNAL without details and counts ``error``."""
    receiver.pipeline.error = OSError("disk on fire")
    answer = await post(receiver.url, b"", {"Content-Type": PROTOBUF})
    assert answer.status == 500
    status = rpc_status(answer)
    assert (status.code, status.message) == (code_pb2.INTERNAL, "internal error")
    assert receiver.outcome("error") == 1


async def test_only_post_is_routed(receiver: Receiver) -> None:
    """GET on /v1/traces is 405 and other paths are 404."""
    async with aiohttp.ClientSession() as session:
        async with session.get(receiver.url) as response:
            assert response.status == 405
        async with session.post(receiver.url.replace("traces", "logs")) as response:
            assert response.status == 404


# --------------------------------------------------------------------------- the HTTP sender


@dataclass
class Reply:
    """A scripted sink answer."""

    status: int = 200
    body: bytes = b""
    content_type: str = PROTOBUF
    headers: dict[str, str] = field(default_factory=dict)


class Sink:
    """An OTLP/HTTP endpoint that records raw requests and follows a reply script."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.script: list[Reply] = []
        self.hold: asyncio.Event | None = None

    async def handle(self, request: web.Request) -> web.Response:
        """Record the request, then answer with the next scripted reply (default 200)."""
        self.bodies.append(await request.read())
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        if self.hold is not None:
            await self.hold.wait()
        reply = self.script.pop(0) if self.script else Reply()
        return web.Response(
            status=reply.status,
            body=reply.body,
            content_type=reply.content_type,
            headers=reply.headers,
        )

    def payloads(self) -> list[bytes]:
        """Bodies with gzip undone where the request said gzip."""
        return [
            gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body
            for body, headers in zip(self.bodies, self.headers, strict=True)
        ]


@asynccontextmanager
async def sink_server(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[tuple[Sink, str]]:
    """A Sink on 127.0.0.1:<free port>; yields it and its ``host:port``."""
    sink = Sink()
    app = web.Application(client_max_size=64 * MiB)
    app.router.add_post("/v1/traces", sink.handle)
    runner = web.AppRunner(app, auto_decompress=False, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    try:
        yield sink, f"127.0.0.1:{runner.addresses[0][1]}"
    finally:
        if sink.hold is not None:
            sink.hold.set()
        await runner.cleanup()


@asynccontextmanager
async def started(sender: OtlpHttpSender) -> AsyncIterator[OtlpHttpSender]:
    """``sender`` started, shut down afterwards."""
    await sender.start()
    try:
        yield sender
    finally:
        await sender.shutdown()


PAYLOAD = one_span_request().SerializeToString()


@pytest.mark.parametrize("compression", ["gzip", "none"])
async def test_sender_posts_protobuf_with_headers(compression: Literal["gzip", "none"]) -> None:
    """The sender POSTs the payload as x-protobuf, gzip-compressed when asked, with its headers."""
    async with sink_server() as (sink, endpoint):
        settings = ExporterConfig(
            endpoint=endpoint,
            insecure=True,
            compression=compression,
            headers={"x-tenant-id": "team-a"},
        )
        async with started(OtlpHttpSender(settings)) as sender:
            await sender.send(PAYLOAD)
        assert sink.payloads() == [PAYLOAD]
        [headers] = sink.headers
        assert headers["content-type"] == PROTOBUF
        assert headers["x-tenant-id"] == "team-a"
        assert headers["user-agent"] == "otel-user-enricher"
        assert headers.get("content-encoding") == ("gzip" if compression == "gzip" else None)
        if compression == "gzip":
            assert sink.bodies[0] != PAYLOAD


NOW = 1_795_000_000.0
STATUS_BODY = status_pb2.Status(code=3, message="span 3 has no trace id").SerializeToString()

CLASSIFIED: list[tuple[str, Reply, str, bool, float | None, str]] = [
    # (id, reply, code, retryable, min_delay, message fragment)
    ("503-retry-after", Reply(503, headers={"Retry-After": "7"}), "HTTP_503", True, 7.0, "503"),
    ("429-no-retry-after", Reply(429), "HTTP_429", True, None, "HTTP 429"),
    ("502", Reply(502), "HTTP_502", True, None, "HTTP 502"),
    ("504", Reply(504), "HTTP_504", True, None, "HTTP 504"),
    (
        "429-http-date",
        Reply(429, headers={"Retry-After": formatdate(NOW + 30, usegmt=True)}),
        "HTTP_429",
        True,
        30.0,
        "HTTP 429",
    ),
    (
        "503-bad-retry-after",
        Reply(503, headers={"Retry-After": "soon"}),
        "HTTP_503",
        True,
        None,
        "",
    ),
    (
        "400-protobuf-status",
        Reply(400, STATUS_BODY),
        "HTTP_400",
        False,
        None,
        "HTTP 400: span 3 has no trace id",
    ),
    (
        "400-json-status",
        Reply(400, b'{"code":3,"message":"bad json"}', JSON),
        "HTTP_400",
        False,
        None,
        "HTTP 400: bad json",
    ),
    ("400-text", Reply(400, b"nope", "text/plain"), "HTTP_400", False, None, "HTTP 400: nope"),
    ("401", Reply(401), "HTTP_401", False, None, "HTTP 401"),
    ("403", Reply(403), "HTTP_403", False, None, "HTTP 403"),
    ("404", Reply(404), "HTTP_404", False, None, "HTTP 404"),
    ("413", Reply(413), "HTTP_413", False, None, "HTTP 413"),
    ("415", Reply(415), "HTTP_415", False, None, "HTTP 415"),
    ("500", Reply(500), "HTTP_500", False, None, "HTTP 500"),
    (
        "redirect-not-followed",
        Reply(307, headers={"Location": "/elsewhere"}),
        "HTTP_307",
        False,
        None,
        "HTTP 307",
    ),
]


@pytest.mark.parametrize(
    ("reply", "code", "retryable", "min_delay", "fragment"),
    [pytest.param(*case[1:], id=case[0]) for case in CLASSIFIED],
)
async def test_sender_classifies_http_failures_per_the_otlp_spec(
    reply: Reply, code: str, retryable: bool, min_delay: float | None, fragment: str
) -> None:
    """429/502/503/504 are retryable with Retry-After as the floor; every other status is final."""
    async with sink_server() as (sink, endpoint):
        sink.script.append(reply)
        settings = ExporterConfig(endpoint=endpoint, insecure=True)
        async with started(OtlpHttpSender(settings, clock=lambda: NOW)) as sender:
            with pytest.raises(ExportFailed) as caught:
                await sender.send(PAYLOAD)
    err = caught.value
    assert (err.code, err.retryable) == (code, retryable)
    assert err.min_delay == (None if min_delay is None else pytest.approx(min_delay))
    assert fragment in str(err)
    assert len(sink.bodies) == 1  # one attempt: retrying is RetrySender's job


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
async def test_sender_reports_partial_success(content_type: str) -> None:
    """A 200 with rejected spans is not an error: it is counted and passed to the hook."""
    response = ExportTraceServiceResponse(
        partial_success=ExportTracePartialSuccess(rejected_spans=3, error_message="too old")
    )
    body = (
        response.SerializeToString()
        if content_type == PROTOBUF
        else json_format.MessageToJson(response).encode()
    )
    calls: list[tuple[int, str]] = []
    async with sink_server() as (sink, endpoint):
        sink.script.append(Reply(200, body, content_type))
        settings = ExporterConfig(endpoint=endpoint, insecure=True)
        sender = OtlpHttpSender(settings, on_partial_success=lambda n, m: calls.append((n, m)))
        async with started(sender):
            await sender.send(PAYLOAD)
            await sender.send(PAYLOAD)  # a plain 200 afterwards adds nothing
    assert calls == [(3, "too old")]
    assert sender.rejected_spans_total == 3


async def test_sender_ignores_an_unreadable_success_body() -> None:
    """A 200 whose body is not a response message still counts as delivered."""
    async with sink_server() as (sink, endpoint):
        sink.script.append(Reply(200, b"\xff\xff", PROTOBUF))
        settings = ExporterConfig(endpoint=endpoint, insecure=True)
        async with started(OtlpHttpSender(settings)) as sender:
            await sender.send(PAYLOAD)
        assert sender.rejected_spans_total == 0


async def test_sender_connection_refused_is_retryable_unavailable() -> None:
    """Nobody listening is UNAVAILABLE and retryable."""
    settings = ExporterConfig(endpoint=f"127.0.0.1:{free_port()}", insecure=True)
    async with started(OtlpHttpSender(settings)) as sender:
        with pytest.raises(ExportFailed) as caught:
            await sender.send(PAYLOAD)
    assert (caught.value.code, caught.value.retryable) == ("UNAVAILABLE", True)


async def test_sender_timeout_is_retryable_deadline_exceeded() -> None:
    """A downstream that never answers within the per-attempt timeout is DEADLINE_EXCEEDED."""
    async with sink_server() as (sink, endpoint):
        sink.hold = asyncio.Event()  # released when the sink stops
        settings = ExporterConfig(endpoint=endpoint, insecure=True, timeout=0.2)
        async with started(OtlpHttpSender(settings)) as sender:
            with pytest.raises(ExportFailed) as caught:
                await sender.send(PAYLOAD)
    assert (caught.value.code, caught.value.retryable) == ("DEADLINE_EXCEEDED", True)


async def test_sender_refuses_to_send_when_not_running() -> None:
    """Before start and after shutdown a send fails at once with the shutdown code."""
    sender = OtlpHttpSender(ExporterConfig(endpoint="127.0.0.1:1", insecure=True))
    for _ in range(2):
        with pytest.raises(ExportFailed) as caught:
            await sender.send(PAYLOAD)
        assert (caught.value.code, caught.value.retryable) == (SHUTDOWN_CODE, False)
        await sender.start()
        await sender.shutdown()


async def test_retry_link_waits_at_least_retry_after_then_delivers() -> None:
    """Wrapped in RetrySender, a 503 with Retry-After: 3 is retried after >= 3 s, then delivered."""
    delays: list[float] = []

    async def record(delay: float, stop: asyncio.Event) -> None:
        delays.append(delay)

    async with sink_server() as (sink, endpoint):
        sink.script.append(Reply(503, headers={"Retry-After": "3"}))
        settings = ExporterConfig(endpoint=endpoint, insecure=True)
        policy = RetryConfig(initial_interval=0.01, max_interval=0.05, jitter=0.0)
        async with started(OtlpHttpSender(settings)) as inner:
            await RetrySender(inner, policy, sleep=record).send(PAYLOAD)
        assert sink.payloads() == [PAYLOAD, PAYLOAD]
    assert delays == [3.0]


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and its key (skips without the openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not on PATH")
    directory: Path = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    command = [
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    return str(cert), str(key)


async def test_sender_verifies_tls_with_the_configured_ca(self_signed: tuple[str, str]) -> None:
    """Over https the sender trusts ca_file; without it the self-signed server is UNAVAILABLE."""
    cert, key = self_signed
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    async with sink_server(server_context) as (sink, endpoint):
        trusting = ExporterConfig(endpoint=endpoint, ca_file=cert)
        assert export_url(trusting).startswith("https://")
        async with started(OtlpHttpSender(trusting)) as sender:
            await sender.send(PAYLOAD)
        assert sink.payloads() == [PAYLOAD]
        system_roots = ExporterConfig(endpoint=endpoint)
        async with started(OtlpHttpSender(system_roots)) as sender:
            with pytest.raises(ExportFailed) as caught:
                await sender.send(PAYLOAD)
        assert (caught.value.code, caught.value.retryable) == ("UNAVAILABLE", True)


async def test_sender_start_reports_an_unreadable_ca_file(tmp_path: Path) -> None:
    """A ca_file that cannot be loaded is a ConfigError naming exporter.ca_file."""
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate")
    for ca_file in (str(bogus), str(tmp_path / "missing.pem")):
        # model_construct: validation would refuse the file before the sender sees it.
        settings = ExporterConfig.model_construct(endpoint="127.0.0.1:1", ca_file=ca_file)
        sender = OtlpHttpSender(settings)
        with pytest.raises(ConfigError, match=r"exporter\.ca_file"):
            await sender.start()


# --------------------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("soon", None),
        ("inf", None),
        (formatdate(NOW + 90, usegmt=True), 90.0),
        (formatdate(NOW - 90, usegmt=True), 0.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Retry-After is delay-seconds or an HTTP-date relative to now; anything else is ignored."""
    assert parse_retry_after(value, NOW) == expected


# --------------------------------------------------------------------------- config


def config(**sections: Any) -> Config:
    """A parsed config with an exporter endpoint and the given sections merged in."""
    exporter = {"endpoint": "jaeger:4317", **sections.pop("exporter", {})}
    data = {"exporter": exporter, "api": {"enabled": False}, **sections}
    return parse_config(data, base_dir=Path.cwd(), env={})


def test_config_defaults_keep_grpc_export_and_open_the_http_receiver() -> None:
    """By default spans leave over gRPC and the HTTP receiver listens on 127.0.0.1:4318."""
    cfg = config()
    assert (cfg.exporter.protocol, cfg.exporter.http_path) == ("grpc", "/v1/traces")
    assert (cfg.receiver.http_endpoint, cfg.receiver.http_enabled) == ("127.0.0.1:4318", True)
    disabled = config(receiver={"http_endpoint": ""})
    assert disabled.receiver.http_enabled is False


def test_http_export_url_follows_the_config() -> None:
    """protocol: http builds an http:// URL when insecure and https:// otherwise."""
    plain = config(
        exporter={
            "endpoint": "jaeger:4318",
            "protocol": "http",
            "insecure": True,
            "http_path": "/otlp/v1/traces",
        }
    )
    assert export_url(plain.exporter) == "http://jaeger:4318/otlp/v1/traces"
    secure = config(exporter={"endpoint": "jaeger:4318", "protocol": "http"}).exporter
    assert export_url(secure) == "https://jaeger:4318/v1/traces"


@pytest.mark.parametrize(
    ("sections", "problem"),
    [
        ({"exporter": {"protocol": "zipkin"}}, "exporter.protocol: must be one of grpc, http"),
        ({"exporter": {"http_path": "v1/traces"}}, "exporter.http_path: must start with '/'"),
        ({"exporter": {"http_path": "/v1/traces?x=1"}}, "exporter.http_path: must be a plain"),
        ({"receiver": {"http_endpoint": "4318"}}, "receiver.http_endpoint: expected host:port"),
        ({"receiver": {"http_endpoint": 4318}}, "receiver.http_endpoint: expected a string"),
        (
            {"receiver": {"grpc_endpoint": "0.0.0.0:4317", "http_endpoint": "0.0.0.0:4317"}},
            "receiver.http_endpoint: must differ from grpc_endpoint",
        ),
    ],
)
def test_config_refuses_bad_http_keys(sections: dict[str, Any], problem: str) -> None:
    """Bad protocol, path or HTTP listen endpoint values are config errors naming the key."""
    with pytest.raises(ConfigError) as caught:
        config(**sections)
    assert any(str(p).startswith(problem) for p in caught.value.problems), caught.value.problems


def test_both_receivers_may_use_port_zero() -> None:
    """Port 0 on both receivers is fine: each gets its own free port."""
    cfg = config(receiver={"grpc_endpoint": "127.0.0.1:0", "http_endpoint": "127.0.0.1:0"})
    assert cfg.receiver.http_endpoint == "127.0.0.1:0"


# --------------------------------------------------------------------------- inflating


def inflate(body: bytes, limit: int = 64 * 1024 * 1024) -> bytes:
    """The receiver's gzip inflater on ``body``."""
    return decompress(body, 31, "gzip", limit)


def test_members_spanning_chunk_boundaries_inflate_to_their_concatenation() -> None:
    """Members of every size, cut anywhere by the inflater's chunks, join exactly."""
    rng = random.Random(4)
    parts = [rng.randbytes(rng.choice([0, 1, 700, 40_000, 100_000])) for _ in range(60)]
    body = b"".join(gzip.compress(p, compresslevel=1) for p in parts)
    assert inflate(body) == b"".join(parts)


def test_up_to_the_member_cap_is_read_and_one_more_is_refused() -> None:
    """MAX_GZIP_MEMBERS members are fine; one more is a client error, not work."""
    member = gzip.compress(b"x")
    assert inflate(member * MAX_GZIP_MEMBERS) == b"x" * MAX_GZIP_MEMBERS
    with pytest.raises(Rejected) as caught:
        inflate(member * (MAX_GZIP_MEMBERS + 1))
    assert caught.value.status.http == 400 and "gzip members" in caught.value.message


def test_a_body_of_many_empty_members_is_refused_at_the_cap() -> None:
    """200,000 empty members (4 MB, once 30 s of a core) stop at the member cap."""
    with pytest.raises(Rejected) as caught:
        inflate(gzip.compress(b"") * 200_000)
    assert "more than" in caught.value.message


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (gzip.compress(b"abc")[:-3], "truncated"),
        (gzip.compress(b"abc") + b"junk", "cannot decompress gzip"),
        (b"", "truncated"),
    ],
    ids=["truncated", "trailing-junk", "empty"],
)
def test_broken_gzip_is_a_client_error(body: bytes, fragment: str) -> None:
    """Truncated or trailing-garbage bodies are refused with 400."""
    with pytest.raises(Rejected) as caught:
        inflate(body)
    assert caught.value.status.http == 400 and fragment in caught.value.message


def test_the_output_limit_holds_across_members() -> None:
    """The decompressed size is counted over every member together."""
    with pytest.raises(Rejected) as caught:
        inflate(gzip.compress(b"a" * 600) * 2, limit=1000)
    assert caught.value.status.http == 413


def test_a_small_body_that_inflates_far_leaves_the_event_loop() -> None:
    """80 KB of gzip'd zeros inflate to 80 MiB: inline, the inflater stops at its small
    output cap (the receiver then continues in a worker thread) instead of working
    through 64 MiB on the event loop."""
    from processor.receive.body import Bigger, decode_body

    body = gzip.compress(b"\0" * (80 << 20), compresslevel=9)
    with pytest.raises(Bigger):
        decode_body(body, "protobuf", "gzip", 64 << 20, inline=1 << 20)
    with pytest.raises(Rejected) as caught:  # in the worker: the limit, as before
        decode_body(body, "protobuf", "gzip", 64 << 20)
    assert caught.value.status.http == 413
    small = gzip.compress(b"x" * 1000)
    assert decode_body(small, "protobuf", "gzip", 64 << 20, inline=1 << 20) == b"x" * 1000


PROTOBUF_TYPE = {"Content-Type": PROTOBUF}


def padded_request(size: int) -> bytes:
    """One span whose attribute makes the request about ``size`` bytes."""
    request = one_span_request()
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.attributes.add(key="padding").value.string_value = "x" * size
    return request.SerializeToString()


async def test_a_chunked_body_does_not_take_the_whole_budget() -> None:
    """With one 2 MiB request held in flight under a 4 MiB budget, a small body sent
    without Content-Length (chunked) is accepted, and a 3 MiB one with it is told to
    retry (429): the chunked body held a small share, not max_message_bytes."""
    budget = InflightBudget(4 * MiB, retry_after_s=1.0)
    async with serve(budget=budget) as running:
        release = running.pipeline.hold = asyncio.Event()
        held = asyncio.create_task(post(running.url, padded_request(2 * MiB), PROTOBUF_TYPE))
        await running.pipeline.holding.wait()  # the 2 MiB request holds its budget now
        running.pipeline.hold = None

        async def chunks() -> AsyncIterator[bytes]:
            yield one_span_request().SerializeToString()

        async with (
            aiohttp.ClientSession() as session,
            session.post(running.url, data=chunks(), headers=PROTOBUF_TYPE) as reply,
        ):
            assert reply.status == 200
        refused = await post(running.url, padded_request(3 * MiB), PROTOBUF_TYPE)
        assert refused.status == 429 and "Retry-After" in refused.headers
        release.set()
        assert (await held).status == 200
