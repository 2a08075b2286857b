"""Tests for the OTLP/gRPC sender and the retry link against a real grpc.aio sink."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import grpc
import grpc.aio
import pytest
import structlog
from conftest import wait_until
from google.protobuf.duration_pb2 import Duration
from google.rpc import (  # type: ignore[import-untyped, unused-ignore]
    error_details_pb2,
    status_pb2,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import (
    TraceServiceServicer,
    add_TraceServiceServicer_to_server,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from pydantic import ValidationError

from processor.errors import ConfigError, DownstreamError
from processor.export import (
    SHUTDOWN_CODE,
    ExportFailed,
    OtlpGrpcSender,
    RetryConfig,
    RetrySender,
    event_sleep,
)
from processor.export.classify import STATUS_DETAILS_KEY
from processor.export.config import ExporterConfig

_S = grpc.StatusCode

# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Fail:
    """A scripted failure the sink answers with."""

    code: grpc.StatusCode
    trailers: tuple[tuple[str, bytes], ...] = ()


Step = Fail | ExportTraceServiceResponse


class Sink(TraceServiceServicer):
    """TraceService that records what it receives and follows a reply script."""

    def __init__(self) -> None:
        self.script: list[Step] = []
        self.requests: list[ExportTraceServiceRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.attempts = 0
        self.hold: asyncio.Event | None = None

    async def Export(
        self, request: ExportTraceServiceRequest, context: Any
    ) -> ExportTraceServiceResponse:
        """Record the call, then reply with the next scripted step (default: OK)."""
        self.attempts += 1
        self.metadata.append(dict(context.invocation_metadata()))
        if self.hold is not None:
            await self.hold.wait()
        step = self.script.pop(0) if self.script else ExportTraceServiceResponse()
        if isinstance(step, Fail):
            await context.abort(step.code, "scripted failure", trailing_metadata=step.trailers)
            raise AssertionError("context.abort() raises")
        self.requests.append(request)
        return step


@dataclass
class FakeTime:
    """Deterministic clock and sleep: sleeping only advances the clock."""

    now: float = 0.0
    delays: list[float] = field(default_factory=list)

    def clock(self) -> float:
        """Return the fake current time."""
        return self.now

    async def sleep(self, delay: float, stop: asyncio.Event) -> None:
        """Record the delay and advance the clock instead of waiting."""
        self.delays.append(delay)
        self.now += delay


class FixedRandom(random.Random):
    """Random source whose random() always returns the same value."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        """Return the fixed value."""
        return self.value


class Scripted:
    """In-memory Sender raising the scripted errors in turn, then succeeding."""

    def __init__(self, errors: Sequence[DownstreamError]) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def send(self, payload: bytes) -> None:
        """Raise the next scripted error, if any."""
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)


def _payload() -> bytes:
    """A small but realistic serialized ExportTraceServiceRequest."""
    span = Span(
        trace_id=bytes(range(16)),
        span_id=bytes(range(8)),
        name="chat gpt-4o",
        attributes=[KeyValue(key="gen_ai.system", value=AnyValue(string_value="openai"))],
    )
    resource = Resource(
        attributes=[KeyValue(key="service.name", value=AnyValue(string_value="agentgateway"))]
    )
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=[span])])]
    )
    return bytes(request.SerializeToString())


def _retry_info_trailers(seconds: int) -> tuple[tuple[str, bytes], ...]:
    """Trailers carrying a google.rpc.Status with a RetryInfo of ``seconds``."""
    status = status_pb2.Status(code=_S.RESOURCE_EXHAUSTED.value[0], message="slow down")
    info = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=seconds))
    status.details.add().Pack(info)
    return ((STATUS_DETAILS_KEY, bytes(status.SerializeToString())),)


def _policy(**overrides: Any) -> RetryConfig:
    """A jitter-free policy with small round numbers, overridable per test."""
    values: dict[str, Any] = {
        "initial_interval": 1.0,
        "multiplier": 2.0,
        "max_interval": 3.0,
        "max_elapsed": 100.0,
        "jitter": 0.0,
    }
    return RetryConfig(**(values | overrides))


def _free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@asynccontextmanager
async def _serve(
    sink: Sink,
    *,
    options: Sequence[tuple[str, Any]] = (),
    credentials: grpc.ServerCredentials | None = None,
) -> AsyncIterator[str]:
    """Run ``sink`` on an ephemeral 127.0.0.1 port and yield its endpoint."""
    server = grpc.aio.server(options=list(options))
    add_TraceServiceServicer_to_server(sink, server)  # type: ignore[no-untyped-call]
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


@asynccontextmanager
async def _sender(settings: ExporterConfig, **kwargs: Any) -> AsyncIterator[OtlpGrpcSender]:
    """A started OtlpGrpcSender, shut down on exit."""
    sender = OtlpGrpcSender(settings, **kwargs)
    await sender.start()
    try:
        yield sender
    finally:
        await sender.shutdown()


@pytest.fixture
def sink() -> Sink:
    """A fresh recording sink."""
    return Sink()


@pytest.fixture
async def endpoint(sink: Sink) -> AsyncIterator[str]:
    """The endpoint of a running server backed by ``sink``."""
    async with _serve(sink) as target:
        yield target


# --------------------------------------------------------------------------- OtlpGrpcSender


@pytest.mark.parametrize("compression", ["gzip", "none"])
async def test_delivers_payload_unchanged(
    sink: Sink, endpoint: str, compression: Literal["gzip", "none"]
) -> None:
    """The sink receives a request that serializes to exactly the bytes sent."""
    payload = _payload()
    settings = ExporterConfig(endpoint=endpoint, insecure=True, compression=compression)
    async with _sender(settings) as sender:
        await sender.send(payload)
    assert [r.SerializeToString() for r in sink.requests] == [payload]


@pytest.mark.parametrize(("compression", "accepted"), [("gzip", False), ("none", True)])
async def test_gzip_goes_on_the_wire(
    sink: Sink, compression: Literal["gzip", "none"], accepted: bool
) -> None:
    """A server with gzip disabled rejects the gzip sender, proving it compresses."""
    identity_only = [("grpc.compression_enabled_algorithms_bitset", 1)]
    async with _serve(sink, options=identity_only) as target:
        settings = ExporterConfig(endpoint=target, insecure=True, compression=compression)
        async with _sender(settings) as sender:
            if accepted:
                await sender.send(_payload())
            else:
                with pytest.raises(ExportFailed, match="gzip"):
                    await sender.send(_payload())
    assert len(sink.requests) == int(accepted)


async def test_headers_arrive_as_metadata(sink: Sink, endpoint: str) -> None:
    """Configured headers reach the server as (lower-cased) gRPC metadata."""
    headers = {"X-Scope-OrgID": "tenant-a", "authorization": "Bearer t0k"}
    async with _sender(ExporterConfig(endpoint=endpoint, insecure=True, headers=headers)) as sender:
        await sender.send(_payload())
    received = sink.metadata[0]
    assert received["x-scope-orgid"] == "tenant-a"
    assert received["authorization"] == "Bearer t0k"


async def test_partial_success_is_logged_and_counted(sink: Sink, endpoint: str) -> None:
    """Rejected spans are logged, counted and reported, without raising or retrying."""
    partial = ExportTracePartialSuccess(rejected_spans=3, error_message="too old")
    sink.script = [ExportTraceServiceResponse(partial_success=partial)]
    seen: list[tuple[int, str]] = []
    settings = ExporterConfig(endpoint=endpoint, insecure=True)
    with structlog.testing.capture_logs() as logs:
        async with _sender(settings, on_partial_success=lambda n, m: seen.append((n, m))) as s:
            await s.send(_payload())
            assert s.rejected_spans_total == 3
    assert seen == [(3, "too old")]
    assert sink.attempts == 1
    events = [e for e in logs if e["event"] == "export_partial_success"]
    assert events[0]["rejected_spans"] == 3


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        (_S.UNAVAILABLE, True),
        (_S.DATA_LOSS, True),
        (_S.INVALID_ARGUMENT, False),
        (_S.UNAUTHENTICATED, False),
        (_S.RESOURCE_EXHAUSTED, False),
    ],
)
async def test_rpc_error_is_classified(
    sink: Sink, endpoint: str, code: grpc.StatusCode, retryable: bool
) -> None:
    """A failing RPC raises ExportFailed carrying the status name and the OTLP verdict."""
    sink.script = [Fail(code)]
    async with _sender(ExporterConfig(endpoint=endpoint, insecure=True)) as sender:
        with pytest.raises(ExportFailed) as caught:
            await sender.send(_payload())
    assert (caught.value.code, caught.value.retryable) == (code.name, retryable)
    assert caught.value.min_delay is None


async def test_retry_info_hint_is_carried(sink: Sink, endpoint: str) -> None:
    """RESOURCE_EXHAUSTED with RetryInfo is retryable and carries the server's delay."""
    sink.script = [Fail(_S.RESOURCE_EXHAUSTED, _retry_info_trailers(7))]
    async with _sender(ExporterConfig(endpoint=endpoint, insecure=True)) as sender:
        with pytest.raises(ExportFailed) as caught:
            await sender.send(_payload())
    assert (caught.value.retryable, caught.value.min_delay) == (True, 7.0)


async def test_closed_port_is_retryable_unavailable() -> None:
    """Connecting to a port nobody listens on yields a retryable UNAVAILABLE."""
    settings = ExporterConfig(endpoint=f"127.0.0.1:{_free_port()}", insecure=True)
    async with _sender(settings) as sender:
        with pytest.raises(ExportFailed) as caught:
            await sender.send(_payload())
    assert (caught.value.code, caught.value.retryable) == ("UNAVAILABLE", True)


async def test_timeout_is_retryable_deadline_exceeded(sink: Sink, endpoint: str) -> None:
    """A server slower than the per-call timeout yields a retryable DEADLINE_EXCEEDED."""
    sink.hold = asyncio.Event()
    try:
        settings = ExporterConfig(endpoint=endpoint, insecure=True, timeout=0.05)
        async with _sender(settings) as sender:
            with pytest.raises(ExportFailed) as caught:
                await sender.send(_payload())
    finally:
        sink.hold.set()
    assert (caught.value.code, caught.value.retryable) == ("DEADLINE_EXCEEDED", True)


@pytest.mark.parametrize("compression", ["gzip", "none"])
async def test_shutdown_mid_export_cancels_the_call(
    sink: Sink, endpoint: str, compression: Literal["gzip", "none"]
) -> None:
    """A downstream that never answers: shutdown ends the call in flight (a worker
    thread's blocking call under gzip, an aio call without) and the send fails
    retryably, so the batch stays with the queue or spool instead of hanging."""
    sink.hold = asyncio.Event()
    settings = ExporterConfig(
        endpoint=endpoint, insecure=True, compression=compression, timeout=60.0
    )
    sender = OtlpGrpcSender(settings)
    await sender.start()
    try:
        sending = asyncio.ensure_future(sender.send(_payload()))
        await wait_until(lambda: sink.attempts == 1)
        await asyncio.wait_for(sender.shutdown(grace=0.05), timeout=10)
        with pytest.raises(ExportFailed) as caught:
            await asyncio.wait_for(sending, timeout=10)
    finally:
        sink.hold.set()
    assert caught.value.code == "CANCELLED"
    assert sink.requests == []


async def test_send_outside_lifecycle_is_permanent(endpoint: str) -> None:
    """Sending before start or after shutdown raises a non-retryable SHUTDOWN error."""
    sender = OtlpGrpcSender(ExporterConfig(endpoint=endpoint, insecure=True))
    with pytest.raises(ExportFailed) as before:
        await sender.send(_payload())
    await sender.start()
    await sender.shutdown()
    with pytest.raises(ExportFailed) as after:
        await sender.send(_payload())
    for caught in (before, after):
        assert (caught.value.code, caught.value.retryable) == (SHUTDOWN_CODE, False)


def _self_signed(tmp_path: Path) -> tuple[bytes, bytes]:
    """Generate a self-signed certificate for 127.0.0.1 and return (key, cert) PEM."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=localhost"),
            *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-keyout", str(key), "-out", str(cert)),
            *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return key.read_bytes(), cert.read_bytes()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
async def test_tls_with_ca_file(sink: Sink, tmp_path: Path) -> None:
    """With TLS and a ca_file trusting the server certificate the payload is delivered."""
    key, cert = _self_signed(tmp_path)
    credentials = grpc.ssl_server_credentials([(key, cert)])
    async with _serve(sink, credentials=credentials) as target:
        settings = ExporterConfig(endpoint=target, ca_file=str(tmp_path / "cert.pem"))
        async with _sender(settings) as sender:
            await sender.send(_payload())
    assert [r.SerializeToString() for r in sink.requests] == [_payload()]


async def test_unreadable_ca_file_is_config_error(tmp_path: Path) -> None:
    """start() reports a missing ca_file as a ConfigError naming the setting."""
    # Validation refuses a missing file; one removed after start-up reaches start().
    settings = ExporterConfig.model_construct(
        endpoint="127.0.0.1:1", ca_file=str(tmp_path / "missing.pem")
    )
    with pytest.raises(ConfigError, match="ca_file"):
        await OtlpGrpcSender(settings).start()


async def test_ca_file_without_a_certificate_is_config_error(tmp_path: Path) -> None:
    """With gzip (our own TLS client), a ca_file holding no certificate fails start()."""
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    settings = ExporterConfig(endpoint="127.0.0.1:1", ca_file=str(bogus), compression="gzip")
    with pytest.raises(ConfigError, match=r"exporter\.ca_file"):
        await OtlpGrpcSender(settings).start()


# --------------------------------------------------------------------------- RetrySender + sink


async def test_unavailable_then_ok_is_delivered_once(sink: Sink, endpoint: str) -> None:
    """UNAVAILABLE four times then OK delivers once, with growing delays capped at max."""
    sink.script = [Fail(_S.UNAVAILABLE)] * 4
    fake = FakeTime()
    hooked: list[tuple[int, float, str]] = []
    async with _sender(ExporterConfig(endpoint=endpoint, insecure=True)) as grpc_sender:
        retry = RetrySender(
            grpc_sender,
            _policy(),
            clock=fake.clock,
            sleep=fake.sleep,
            on_retry=lambda a, d, c: hooked.append((a, d, c)),
        )
        with structlog.testing.capture_logs() as logs:
            await retry.send(_payload())
    assert fake.delays == [1.0, 2.0, 3.0, 3.0]
    assert (sink.attempts, len(sink.requests)) == (5, 1)
    assert hooked == [(n, d, "UNAVAILABLE") for n, d in enumerate(fake.delays, start=1)]
    scheduled = [e for e in logs if e["event"] == "export_retry_scheduled"]
    assert [(e["attempt"], e["delay_s"], e["code"]) for e in scheduled] == hooked


@pytest.mark.parametrize("code", [_S.INVALID_ARGUMENT, _S.RESOURCE_EXHAUSTED, _S.INTERNAL])
async def test_permanent_error_is_not_retried(
    sink: Sink, endpoint: str, code: grpc.StatusCode
) -> None:
    """A permanent status makes exactly one attempt and is re-raised."""
    sink.script = [Fail(code)]
    fake = FakeTime()
    async with _sender(ExporterConfig(endpoint=endpoint, insecure=True)) as grpc_sender:
        retry = RetrySender(grpc_sender, _policy(), clock=fake.clock, sleep=fake.sleep)
        with pytest.raises(ExportFailed) as caught:
            await retry.send(_payload())
    assert (caught.value.code, sink.attempts, fake.delays) == (code.name, 1, [])


async def test_retry_info_floors_the_delay(sink: Sink, endpoint: str) -> None:
    """RESOURCE_EXHAUSTED with RetryInfo is retried after at least the server's hint."""
    sink.script = [Fail(_S.RESOURCE_EXHAUSTED, _retry_info_trailers(7))]
    fake = FakeTime()
    async with _sender(ExporterConfig(endpoint=endpoint, insecure=True)) as grpc_sender:
        retry = RetrySender(grpc_sender, _policy(), clock=fake.clock, sleep=fake.sleep)
        await retry.send(_payload())
    assert len(fake.delays) == 1
    assert fake.delays[0] >= 7.0
    assert (sink.attempts, len(sink.requests)) == (2, 1)


async def test_max_elapsed_reraises_last_error(sink: Sink, endpoint: str) -> None:
    """Once the next delay would exceed max_elapsed the last error is re-raised."""
    sink.script = [Fail(_S.UNAVAILABLE)] * 10
    fake = FakeTime()
    policy = _policy(max_interval=100.0, max_elapsed=10.0)
    async with _sender(ExporterConfig(endpoint=endpoint, insecure=True)) as grpc_sender:
        retry = RetrySender(grpc_sender, policy, clock=fake.clock, sleep=fake.sleep)
        with pytest.raises(ExportFailed) as caught:
            await retry.send(_payload())
    assert (caught.value.code, caught.value.retryable) == ("UNAVAILABLE", True)
    assert fake.delays == [1.0, 2.0, 4.0]
    assert sink.attempts == 4


async def test_shutdown_interrupts_pending_backoff(sink: Sink, endpoint: str) -> None:
    """shutdown() wakes an hour-long backoff at once and the pending send raises SHUTDOWN."""
    sink.script = [Fail(_S.UNAVAILABLE)]
    sleeping = asyncio.Event()

    async def sleep(delay: float, stop: asyncio.Event) -> None:
        sleeping.set()
        await event_sleep(delay, stop)

    policy = _policy(initial_interval=3600.0, max_interval=3600.0, max_elapsed=0.0)
    async with _sender(ExporterConfig(endpoint=endpoint, insecure=True)) as grpc_sender:
        retry = RetrySender(grpc_sender, policy, sleep=sleep)
        pending = asyncio.create_task(retry.send(_payload()))
        await sleeping.wait()
        await retry.shutdown()
        async with asyncio.timeout(30):  # hang guard only, not a timing assertion
            with pytest.raises(ExportFailed) as caught:
                await pending
    assert (caught.value.code, caught.value.retryable) == (SHUTDOWN_CODE, False)
    assert isinstance(caught.value.__cause__, ExportFailed)
    assert (sink.attempts, sink.requests) == (1, [])


# --------------------------------------------------------------------------- RetrySender alone


def _unavailable(min_delay: float | None = None) -> ExportFailed:
    """A retryable error as the gRPC sender raises it."""
    return ExportFailed("down", code="UNAVAILABLE", retryable=True, min_delay=min_delay)


@pytest.mark.parametrize(
    ("draw", "expected"),
    [(0.0, [0.5, 1.0, 2.0]), (0.5, [1.0, 2.0, 4.0]), (1.0, [1.5, 3.0, 5.0])],
    ids=["lowest", "middle", "highest-capped"],
)
async def test_jitter_spreads_around_the_interval(draw: float, expected: list[float]) -> None:
    """Jitter scales each interval by 1 +/- jitter, and the result stays <= max_interval."""
    fake = FakeTime()
    inner = Scripted([_unavailable()] * 3)
    policy = _policy(jitter=0.5, max_interval=5.0)
    retry = RetrySender(inner, policy, clock=fake.clock, sleep=fake.sleep, rng=FixedRandom(draw))
    await retry.send(b"x")
    assert fake.delays == expected


async def test_server_floor_beats_max_interval() -> None:
    """A server RetryInfo delay takes precedence even above max_interval."""
    fake = FakeTime()
    inner = Scripted([_unavailable(min_delay=60.0), _unavailable()])
    retry = RetrySender(inner, _policy(), clock=fake.clock, sleep=fake.sleep)
    await retry.send(b"x")
    assert fake.delays == [60.0, 2.0]


async def test_disabled_policy_makes_one_attempt() -> None:
    """With retries disabled a retryable error is raised after a single attempt."""
    fake = FakeTime()
    inner = Scripted([_unavailable()])
    retry = RetrySender(inner, _policy(enabled=False), clock=fake.clock, sleep=fake.sleep)
    with pytest.raises(ExportFailed):
        await retry.send(b"x")
    assert (inner.calls, fake.delays) == (1, [])


async def test_after_shutdown_send_gets_one_attempt() -> None:
    """After shutdown a send is still attempted once (final flush) but never retried."""
    fake = FakeTime()
    inner = Scripted([_unavailable()])
    retry = RetrySender(inner, _policy(), clock=fake.clock, sleep=fake.sleep)
    await retry.shutdown()
    with pytest.raises(ExportFailed) as caught:
        await retry.send(b"x")
    assert (caught.value.code, inner.calls, fake.delays) == (SHUTDOWN_CODE, 1, [])
    await retry.send(b"y")
    assert inner.calls == 2


async def test_event_sleep_returns_when_stopped() -> None:
    """event_sleep returns at once when the stop event is already set."""
    stop = asyncio.Event()
    stop.set()
    async with asyncio.timeout(30):  # hang guard only, not a timing assertion
        await event_sleep(3600.0, stop)


@pytest.mark.parametrize(
    "overrides",
    [
        {"initial_interval": 0.0},
        {"max_interval": 0.5},
        {"max_elapsed": -1.0},
        {"multiplier": 0.9},
        {"jitter": 1.5},
    ],
    ids=["initial", "max-below-initial", "elapsed", "multiplier", "jitter"],
)
def test_policy_rejects_bad_parameters(overrides: dict[str, float]) -> None:
    """The retry section refuses parameters that make the backoff meaningless."""
    with pytest.raises(ValidationError):
        _policy(**overrides)


async def test_hurry_ends_a_long_backoff() -> None:
    """During the shutdown drain, a batch in a 30 s backoff is retried at once."""
    from processor.errors import DownstreamError
    from processor.export import RetryConfig, RetrySender

    class FlakyOnce:
        """Fails once with UNAVAILABLE, then succeeds."""

        def __init__(self) -> None:
            self.calls = 0
            self.failed = asyncio.Event()

        async def send(self, payload: bytes) -> None:
            self.calls += 1
            if self.calls == 1:
                self.failed.set()
                raise DownstreamError("down", code="UNAVAILABLE", retryable=True)

    inner = FlakyOnce()
    policy = RetryConfig(initial_interval=30, max_interval=30, max_elapsed=300, jitter=0)
    sender = RetrySender(inner, policy)
    sending = asyncio.create_task(sender.send(b"x"))
    await inner.failed.wait()
    await asyncio.sleep(0)  # the send is now in its 30 s backoff
    sender.hurry()
    async with asyncio.timeout(5):
        await sending
    assert inner.calls == 2
