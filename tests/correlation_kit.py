"""Builders for correlation tests: AgentGateway and Open WebUI spans, a ready correlator."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from processor.correlate.address import DEFAULT_ADDRESS_KEYS
from processor.correlate.correlator import Correlator, Outcome, Rules
from processor.correlate.hold import HoldBuffer
from processor.correlate.identity import EmailHasher
from processor.correlate.lag import LagLearner
from processor.correlate.resolve import AmbiguityPolicy, Resolver
from processor.correlate.span_identity import IdentityReader
from processor.correlate.usage import UsageReader
from processor.identity.directory import Directory
from processor.identity.sessions.memory import MemorySessionStore
from processor.identity.sessions.traces import TraceIdentities
from processor.model import Session, User
from processor.wire.received import Received

MS = 1_000_000
S = 1000 * MS
T0 = 1_795_000_000 * S
MIKE = User(id="mike", email="mike.chen@example.com", name="Mike Chen")
ANA = User(id="ana", email="ana.lima@example.com", name="Ana Lima")
GW = "172.18.0.5"


def kv(key: str, value: str | int | list[str]) -> KeyValue:
    """A string, int or string-array attribute."""
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, list):
        array = ArrayValue(values=[AnyValue(string_value=v) for v in value])
        return KeyValue(key=key, value=AnyValue(array_value=array))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def gateway_span(
    trace: int = 1,
    start: int = T0,
    src: str | None = f"{GW}:40312",
    model: str = "gpt-4o",
    extra: Sequence[KeyValue] = (),
) -> Span:
    """An AgentGateway LLM span, with an event, a link and a status."""
    span = Span(
        trace_id=trace.to_bytes(16, "big"),
        span_id=(trace * 7919).to_bytes(8, "big"),
        name="POST /*",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=start,
        end_time_unix_nano=start + 2 * S,
        status=Status(code=Status.STATUS_CODE_OK),
    )
    span.attributes.extend([kv("http.method", "POST"), kv("gen_ai.request.model", model)])
    if src is not None:
        span.attributes.append(kv("src.addr", src))
    span.attributes.extend(extra)
    span.events.add(name="first_token", time_unix_nano=start + MS)
    span.links.add(trace_id=bytes(16), span_id=bytes(8))
    return span


def webui_span(trace: int, user: User, start: int = T0 - 50 * MS) -> Span:
    """Open WebUI's own server span carrying client.user.* (ENABLE_OTEL)."""
    span = Span(
        trace_id=trace.to_bytes(16, "big"),
        span_id=(trace * 104729).to_bytes(8, "big"),
        name="POST /api/chat/completions",
        start_time_unix_nano=start,
        end_time_unix_nano=start + 3 * S,
    )
    span.attributes.extend(
        [
            kv("client.user.id", user.id),
            kv("client.user.email", user.email),
            kv("client.user.role", "user"),
        ]
    )
    return span


def request_of(
    *spans: Span, service: str = "agentgateway", resource: Sequence[KeyValue] = ()
) -> ExportTraceServiceRequest:
    """One resource, one scope, the given spans."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend([kv("service.name", service), *resource])
    rs.schema_url = "https://opentelemetry.io/schemas/1.27.0"
    ss = rs.scope_spans.add()
    ss.scope.name = service
    ss.spans.extend(spans)
    return req


def event(user: User, at: int, model: str = "", ip: str = GW, trace_id: str = "") -> Session:
    """A request event: ``user`` sent a request through ``ip`` at ``at``."""
    return Session(ip, user, at, at, model=model, trace_id=trace_id, kind="request")


@dataclass
class Kit:
    """A correlator over a real in-memory store, with its parts exposed."""

    hold_ms: int = 0
    policy: AmbiguityPolicy = "skip"
    max_held: int = 1000
    directory: Directory = field(default_factory=Directory.empty)
    extra_identity: dict[str, str] = field(default_factory=dict)
    hasher: EmailHasher | None = None
    lags: LagLearner | None = None
    usage: UsageReader | None = None

    def __post_init__(self) -> None:
        self.store = MemorySessionStore(10_000)
        self.traces = TraceIdentities(600 * S, 10_000)
        self.correlator = Correlator(
            Rules(
                DEFAULT_ADDRESS_KEYS,
                ("gen_ai.request.model",),
                ("jwt.sub",),
                self.hold_ms * MS,
                self.hasher,
            ),
            Resolver(window_ns=5 * S, skew_ns=500 * MS, policy=self.policy, lags=self.lags),
            IdentityReader(self.extra_identity),
            self.store,
            self.traces,
            HoldBuffer(self.max_held),
            self.directory,
            self.usage,
        )

    def add(self, *sessions: Session, now: int = T0) -> Outcome:
        """Store sessions the way the intake does, releasing what they explain."""
        out = Outcome()
        for s in sessions:
            self.store.add(s)
            got = self.correlator.on_session(s, now)
            out.released.extend(got.released)
            out.released_early += got.released_early
        return out

    def receive(self, request: ExportTraceServiceRequest, now: int = T0) -> Outcome:
        """Hand a request to the correlator (it is changed in place)."""
        return self.correlator.receive(Received.of(request), now)


def spans_of(payload: bytes) -> list[Span]:
    """Every span in a serialized request."""
    req = ExportTraceServiceRequest.FromString(payload)
    return [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]


def sent(out: Outcome) -> list[Span]:
    """Every span an outcome sends, current request first."""
    payloads = ([out.current.data] if out.current else []) + [p.data for p in out.released]
    return [s for p in payloads for s in spans_of(p)]


def attrs(span: Span) -> dict[str, str]:
    """Span attributes as text; arrays joined with commas."""
    out = {}
    for a in span.attributes:
        v = a.value
        if v.HasField("array_value"):
            out[a.key] = ",".join(x.string_value for x in v.array_value.values)
        elif v.HasField("int_value"):
            out[a.key] = str(v.int_value)
        else:
            out[a.key] = v.string_value
    return out


def who(span: Span) -> tuple[str | None, str | None, str | None]:
    """(user.email, method, confidence) written on ``span``."""
    a = attrs(span)
    return (
        a.get("user.email"),
        a.get("user.attribution.method"),
        a.get("user.attribution.confidence"),
    )
