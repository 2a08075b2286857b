"""Differential fuzz of every endpoint of a live service against a strict downstream.

Seeded and bounded (4,200 inputs, about 5 s here): valid requests with 1-3
bytes changed are sent to gRPC Export, OTLP/HTTP protobuf (some gzip-compressed)
and JSON, the session API over HTTP and gRPC, and the Open WebUI webhook. Each
answer must be a success or a client error (never 5xx, UNKNOWN or INTERNAL); every
span the service acknowledged must reach the sink, which decodes strictly as Jaeger
does, exactly once and equal to what was sent apart from the user attributes the
service appends. The counts are printed (``pytest -s``).
"""

from __future__ import annotations

import base64
import gzip
import json
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import grpc
import pytest
from conftest import TOKEN, Clock, service_config
from correlation_kit import gateway_span, request_of
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from processor.app.service import Service
from processor.correlate.identity import WRITTEN_KEYS
from processor.errors import InvalidInput
from processor.identity.intake.gen.user_enricher.v1 import sessions_pb2 as pb
from processor.receive.otlp_json import decode_json
from processor.tools.sink import TraceSink

SEED = 20261206
PER_TRACE_ENDPOINT = 1000
PER_IDENTITY_ENDPOINT = 400
SECRET = "wh-secret-0123456789abcdef"
NOW_S = 1_795_000_000
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PUSH = "/user_enricher.v1.SessionService/PushSessions"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
BEARER = {"Authorization": f"Bearer {TOKEN}"}
# gRPC codes a client mistake may get; anything else is the service's fault.
CLIENT_CODES = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
WRITTEN = frozenset(WRITTEN_KEYS)
PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
# One HTTP input: the body sent, the Export bytes it carries (None: not traces, or
# not decodable), and its headers.
Body = tuple[bytes, bytes | None, dict[str, str]]


@dataclass
class Tally:
    """What the run saw, per endpoint and overall."""

    accepted: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    faults: list[str] = field(default_factory=list)  # 5xx, UNKNOWN, INTERNAL, crashes
    acknowledged: Counter[bytes] = field(default_factory=Counter)  # span bytes -> count

    def answer(self, endpoint: str, ok: bool) -> None:
        """Count one answer."""
        (self.accepted if ok else self.refused)[endpoint] += 1


def mutate(rng: random.Random, data: bytes) -> bytes:
    """``data`` with 1-3 bytes replaced by random ones."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def mutate_text(rng: random.Random, text: str) -> bytes:
    """``text`` with 1-3 characters replaced by random printable ones, as UTF-8."""
    chars = list(text)
    for _ in range(rng.randint(1, 3)):
        chars[rng.randrange(len(chars))] = chr(rng.randrange(32, 127))
    return "".join(chars).encode()


def gateway_request() -> ExportTraceServiceRequest:
    """Five AgentGateway-shaped spans of five traces."""
    return request_of(*(gateway_span(trace=n, start=NOW_S * 10**9 + n) for n in range(1, 6)))


def otlp_json(request: ExportTraceServiceRequest) -> str:
    """``request`` as OTLP/JSON (ids in hex, as the spec says, not protobuf's base64)."""
    data = json_format.MessageToDict(request)
    for rs in data["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for item in (span, *span.get("links", [])):
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in item:
                            item[key] = base64.b64decode(item[key]).hex()
    return json.dumps(data)


def span_keys(raw: bytes) -> list[bytes]:
    """Each span of an Export request, serialized deterministically."""
    request = ExportTraceServiceRequest.FromString(raw)
    return [
        s.SerializeToString(deterministic=True)
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]


def without_user(span: Span) -> bytes:
    """``span`` without the attributes the service appended (trailing user.* keys)."""
    copy = Span()
    copy.CopyFrom(span)
    while copy.attributes and copy.attributes[-1].key in WRITTEN:
        del copy.attributes[-1]
    return copy.SerializeToString(deterministic=True)


@pytest.fixture
async def live(sink: TraceSink, clock: Clock) -> AsyncIterator[Service]:
    """The service with every endpoint on (webhook included), holding nothing."""
    clock.now_ns = NOW_S * 10**9
    config = service_config(
        sink.endpoint, webhooks={"openwebui": {"enabled": True, "secret": SECRET}}
    )
    svc = Service(config, clock_ns=clock)
    await svc.start()
    yield svc
    await svc.shutdown(grace_s=1.0)


async def grpc_inputs(
    svc: Service, rng: random.Random, tally: Tally, base: bytes, push: bytes
) -> None:
    """Mutated Export and PushSessions requests over gRPC."""
    async with grpc.aio.insecure_channel(svc.addresses.grpc) as channel:
        for method, seed, n, name in (
            (EXPORT, base, PER_TRACE_ENDPOINT, "grpc export"),
            (PUSH, push, PER_IDENTITY_ENDPOINT, "grpc sessions"),
        ):
            for _ in range(n):
                raw = mutate(rng, seed)
                try:
                    await channel.unary_unary(method)(raw, metadata=AUTH, timeout=10)
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    code = exc.code()
                if code not in CLIENT_CODES:
                    tally.faults.append(f"{name}: {code}")
                tally.answer(name, code == grpc.StatusCode.OK)
                if code == grpc.StatusCode.OK and method == EXPORT:
                    tally.acknowledged.update(span_keys(raw))


async def http_inputs(
    svc: Service,
    rng: random.Random,
    tally: Tally,
    cases: list[tuple[str, str, Callable[[], Body]]],
) -> None:
    """POST each case's bodies (see :data:`Body`)."""
    async with aiohttp.ClientSession() as client:
        for name, url, make in cases:
            n = PER_TRACE_ENDPOINT if "traces" in name else PER_IDENTITY_ENDPOINT
            for _ in range(n):
                body, export, headers = make()
                async with client.post(url, data=body, headers=headers) as reply:
                    await reply.read()
                    status = reply.status
                if status >= 500:
                    tally.faults.append(f"{name}: HTTP {status}")
                ok = 200 <= status < 300
                tally.answer(name, ok)
                if ok and export is not None:
                    tally.acknowledged.update(span_keys(export))


async def test_every_endpoint_refuses_or_delivers_intact(live: Service, sink: TraceSink) -> None:
    """Client error or delivered exactly once, intact: lost 0, duplicated 0, faults 0."""
    rng = random.Random(SEED)
    base = gateway_request().SerializeToString()
    text = otlp_json(gateway_request())
    session = {"kind": "call", "source_ip": "172.18.0.5", "user": {"email": "a@b.example"}}
    push = pb.PushSessionsRequest(sessions=[json_format.ParseDict(session, pb.Session())])
    hook = json.dumps(
        {
            "event": "message.created",
            "created_at": NOW_S,
            "actor": {"id": "u-1", "email": "mike.chen@example.com", "name": "Mike"},
            "data": {"model": "gpt-4o"},
        }
    )
    tally = Tally()
    await grpc_inputs(live, rng, tally, base, push.SerializeToString())

    def protobuf() -> Body:
        raw = mutate(rng, base)
        if rng.random() < 0.2:
            return gzip.compress(raw), raw, {**PROTOBUF, "Content-Encoding": "gzip"}
        return raw, raw, PROTOBUF

    def as_json() -> Body:
        body = mutate_text(rng, text)
        try:
            return body, decode_json(body).SerializeToString(), JSON
        except InvalidInput:
            return body, None, JSON  # the service must refuse it too

    def sessions() -> Body:
        return mutate_text(rng, json.dumps(session)), None, {**JSON, **BEARER}

    def webhook() -> Body:
        return mutate_text(rng, hook), None, JSON

    http, api = f"http://{live.addresses.otlp_http}", f"http://{live.addresses.http}"
    await http_inputs(
        live,
        rng,
        tally,
        [
            ("http traces protobuf", f"{http}/v1/traces", protobuf),
            ("http traces json", f"{http}/v1/traces", as_json),
            ("http sessions", f"{api}/v1/sessions", sessions),
            ("webhook", f"{api}/v1/webhooks/openwebui/{SECRET}", webhook),
        ],
    )
    acknowledged = sum(tally.acknowledged.values())
    await sink.wait_for_spans(acknowledged, timeout_s=30)
    await live.shutdown(grace_s=5.0)  # anything still queued arrives, or is counted lost
    delivered = Counter(without_user(s) for s in sink.spans())
    lost = sum((tally.acknowledged - delivered).values())
    duplicated = sum((delivered - tally.acknowledged).values())
    for endpoint in sorted({*tally.accepted, *tally.refused}):
        accepted, refused = tally.accepted[endpoint], tally.refused[endpoint]
        print(f"{endpoint:>22}: accepted {accepted:>4}, refused {refused:>4}")
    print(
        f"spans acknowledged {acknowledged}, delivered {sum(delivered.values())}, lost {lost}, "
        f"duplicated {duplicated}, faults (5xx/UNKNOWN/INTERNAL/crash) {len(tally.faults)}"
    )
    assert not tally.faults, tally.faults[:5]
    assert lost == 0 and duplicated == 0
    # The mutations must exercise both sides of the door on every endpoint.
    for endpoint in tally.refused:
        assert tally.accepted[endpoint] > 0 and tally.refused[endpoint] > 0, endpoint
