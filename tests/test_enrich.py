"""Tables for the pure enrichment step: what gets a user, and what stays untouched."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from processor.correlate.address import DEFAULT_ADDRESS_KEYS
from processor.correlate.enrich import Enricher, EnrichStats
from processor.model import Session, User
from processor.sessions.memory import MemorySessionStore

MIKE = User(id="mike", email="mike.chen@example.com", name="Mike Chen", roles=("user",))
ANA = User(id="ana", email="ana.lima@example.com")
T0 = 1_795_000_000_000_000_000
MIN = 60 * 1_000_000_000


def kv(key: str, value: str | int) -> KeyValue:
    """A string or int attribute."""
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def gateway_span(src: str | None, start: int = T0, extra: Sequence[KeyValue] = ()) -> Span:
    """An AgentGateway-shaped span with events, links and status set."""
    span = Span(
        trace_id=bytes(range(16)),
        span_id=bytes(range(8)),
        name="POST /*",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=start,
        end_time_unix_nano=start + 5,
        status=Status(code=Status.STATUS_CODE_OK),
    )
    span.attributes.extend([kv("http.method", "POST"), kv("http.status", 200)])
    if src is not None:
        span.attributes.append(kv("src.addr", src))
    span.attributes.extend(extra)
    span.events.add(name="retry", time_unix_nano=start + 1).attributes.append(kv("n", 1))
    span.links.add(trace_id=bytes(16), span_id=bytes(8))
    return span


def request_of(*spans: Span, resource: Sequence[KeyValue] = ()) -> ExportTraceServiceRequest:
    """One resource, one scope, the given spans."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend([kv("service.name", "agentgateway"), *resource])
    ss = rs.scope_spans.add()
    ss.scope.name = "agentgateway"
    ss.spans.extend(spans)
    return req


def run(req: ExportTraceServiceRequest, *sessions: Session) -> EnrichStats:
    """Enrich ``req`` in place against a store holding ``sessions``."""
    store = MemorySessionStore(100)
    for s in sessions:
        store.add(s)
    return Enricher(DEFAULT_ADDRESS_KEYS).enrich(req, req.SerializeToString(), store)


def attrs(span: Span) -> dict[str, str]:
    """Span attributes as text, arrays joined with commas."""
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


def the_span(req: ExportTraceServiceRequest) -> Span:
    """The only span of ``req``."""
    return req.resource_spans[0].scope_spans[0].spans[0]


MIKE_SESSION = Session("172.18.0.5", MIKE, T0 - MIN, T0 + MIN)


def test_session_match_writes_identity() -> None:
    """One covering session writes every user key plus the attribution method."""
    req = request_of(gateway_span("172.18.0.5:40312"))
    stats = run(req, MIKE_SESSION)
    assert stats == EnrichStats(spans=1, enriched=1)
    got = attrs(the_span(req))
    assert {k: got[k] for k in got if k.startswith(("user.", "enduser."))} == {
        "user.id": "mike",
        "user.email": "mike.chen@example.com",
        "user.name": "Mike Chen",
        "user.roles": "user",
        "enduser.id": "mike",
        "user.attribution.method": "session",
        "user.attribution.confidence": "high",
    }


@pytest.mark.parametrize(
    ("src", "sessions", "expected"),
    [
        ("172.18.0.5:1", (), EnrichStats(spans=1, unmatched=1)),
        ("10.0.0.1:1", (MIKE_SESSION,), EnrichStats(spans=1, unmatched=1)),
        (
            "172.18.0.5:1",
            (MIKE_SESSION, Session("172.18.0.5", ANA, T0 - MIN, T0 + MIN)),
            EnrichStats(spans=1, ambiguous=1),
        ),
        (None, (MIKE_SESSION,), EnrichStats(spans=1, no_address=1)),
        ("not-an-ip", (MIKE_SESSION,), EnrichStats(spans=1, no_address=1)),
        (
            "172.18.0.5:1",
            (Session("172.18.0.5", MIKE, T0 + 1, T0 + MIN),),
            EnrichStats(spans=1, unmatched=1),
        ),
    ],
)
def test_no_single_user_leaves_span_byte_identical(
    src: str | None, sessions: tuple[Session, ...], expected: EnrichStats
) -> None:
    """No match, two users, or no usable address: the span is left exactly as it was."""
    req = request_of(gateway_span(src))
    before = req.SerializeToString()
    assert run(req, *sessions) == expected
    assert req.SerializeToString() == before


def test_everything_else_untouched() -> None:
    """Enrichment only appends attributes; every other field is as it arrived."""
    req = request_of(gateway_span("[::ffff:172.18.0.5]:40312"), resource=[kv("host", "gw-1")])
    original = ExportTraceServiceRequest()
    original.CopyFrom(req)
    run(req, MIKE_SESSION)
    span, orig_span = the_span(req), the_span(original)
    n = len(orig_span.attributes)
    assert list(span.attributes[:n]) == list(orig_span.attributes)
    del span.attributes[n:]
    assert req == original


def test_producer_identity_is_never_overwritten() -> None:
    """A span that already names its user keeps it and gets nothing from sessions."""
    req = request_of(gateway_span("172.18.0.5:1", extra=[kv("user.email", "ana.lima@example.com")]))
    before = req.SerializeToString()
    assert run(req, MIKE_SESSION) == EnrichStats(spans=1, identified=1)
    assert req.SerializeToString() == before


def test_resource_identity_counts_for_its_spans() -> None:
    """Identity on the resource marks all its spans as already identified."""
    req = request_of(gateway_span("172.18.0.5:1"), resource=[kv("enduser.id", "svc-bot")])
    assert run(req, MIKE_SESSION) == EnrichStats(spans=1, identified=1)


def test_only_absent_keys_are_inserted() -> None:
    """A non-identity key we write that is already present is kept, not duplicated."""
    extra = [kv("user.attribution.confidence", "manual")]
    req = request_of(gateway_span("172.18.0.5:1", extra=extra))
    run(req, MIKE_SESSION)
    keys = [a.key for a in the_span(req).attributes]
    assert keys.count("user.attribution.confidence") == 1
    assert attrs(the_span(req))["user.attribution.confidence"] == "manual"
    assert attrs(the_span(req))["user.email"] == "mike.chen@example.com"


def test_resource_address_used_when_span_has_none() -> None:
    """Resource attributes supply the address when the span has none."""
    req = request_of(gateway_span(None), resource=[kv("client.address", "172.18.0.5")])
    assert run(req, MIKE_SESSION).enriched == 1


def test_span_address_wins_over_resource() -> None:
    """Span attributes come before resource attributes."""
    req = request_of(gateway_span("10.9.9.9:1"), resource=[kv("client.address", "172.18.0.5")])
    assert run(req, MIKE_SESSION) == EnrichStats(spans=1, unmatched=1)


def test_batch_with_mixed_addresses_and_times() -> None:
    """Reusing lookups inside a batch never hands one span another span's user."""
    sessions = (
        Session("172.18.0.5", MIKE, T0, T0 + 10 * MIN),
        Session("172.18.0.5", ANA, T0 + 10 * MIN + 1, T0 + 20 * MIN),
        Session("fd00::7", ANA, T0, T0 + 20 * MIN),
    )
    plan = [
        ("172.18.0.5:1", T0 + 5 * MIN, "mike"),
        ("[fd00::7]:9", T0 + 5 * MIN, "ana"),
        ("172.18.0.5:1", T0 + 15 * MIN, "ana"),
        ("172.18.0.5:2", T0 + 2 * MIN, "mike"),
        ("172.18.0.5:2", T0 + 30 * MIN, None),
        ("172.18.0.5:2", T0 + 10 * MIN, "mike"),
        ("[fd00::7]:9", T0 - 1, None),
    ]
    req = request_of(*(gateway_span(src, start) for src, start, _ in plan))
    stats = run(req, *sessions)
    assert stats == EnrichStats(spans=7, enriched=5, unmatched=2)
    got = [attrs(s).get("user.id") for s in req.resource_spans[0].scope_spans[0].spans]
    assert got == [who for _, _, who in plan]


def test_empty_store_counts_all_unmatched() -> None:
    """With no sessions at all, every span is unmatched and nothing is changed."""
    req = request_of(gateway_span("172.18.0.5:1"), gateway_span("172.18.0.5:2"))
    assert run(req) == EnrichStats(spans=2, unmatched=2)


def test_empty_request() -> None:
    """An empty request enriches nothing."""
    assert run(ExportTraceServiceRequest(), MIKE_SESSION) == EnrichStats()
