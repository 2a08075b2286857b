"""The column path against the full decode: same spans out, same counts, same usage.

Every request is handed to two correlators in the same state, one reading by
columns and one decoding in full (``columns=False``, the path the rest of the
suite pinned down first). Hypothesis builds the requests from the shapes that
matter: attribute order and types, missing and repeated keys, several resources
and scopes, traces already known, request events, long sessions and the
directory, with and without holding.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from correlation_kit import ANA, MIKE, MS, T0, S, event, gateway_span, kv, request_of, sent, who
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from processor.correlate.address import DEFAULT_ADDRESS_KEYS
from processor.correlate.correlator import Correlator, Outcome, Rules
from processor.correlate.hold import HoldBuffer
from processor.correlate.resolve import Resolver
from processor.correlate.span_identity import IdentityReader
from processor.correlate.usage import Price, UsageReader
from processor.identity.directory import parse_directory
from processor.identity.sessions.memory import MemorySessionStore
from processor.identity.sessions.traces import TraceIdentities
from processor.model import Session, User
from processor.wire import splice as splice_module
from processor.wire.columns import ColumnReader
from processor.wire.encoding import varint
from processor.wire.received import Received

PLAT = User(id="plat", email="platform@example.com", team="platform")
ADDRESSES = ["172.18.0.5", "172.18.0.6", "fd00::7", "10.9.0.1"]
DIRECTORY = parse_directory(
    {"users": [{"id": "plat", "email": "platform@example.com", "addresses": ["10.9.0.0/16"]}]}
)
COMPARE = settings(
    derandomize=True,
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _value(kind: str, data: st.DataObject) -> AnyValue:
    if kind == "addr":
        ip = data.draw(st.sampled_from([*ADDRESSES, "::ffff:172.18.0.6", "nonsense", ""]))
        text = f"[{ip}]:4{len(ip)}" if ":" in ip else (f"{ip}:40000" if ip else "")
        return AnyValue(string_value=data.draw(st.sampled_from([text, ip])))
    if kind == "count":
        return data.draw(
            st.sampled_from(
                [
                    AnyValue(int_value=data.draw(st.integers(0, 5000))),
                    AnyValue(string_value="12"),
                    AnyValue(double_value=7.5),
                    AnyValue(int_value=-3),
                ]
            )
        )
    if kind == "cost":
        return data.draw(
            st.sampled_from(
                [AnyValue(double_value=0.25), AnyValue(string_value="x"), AnyValue(int_value=2)]
            )
        )
    if kind == "email":
        emails = ["ana.lima@example.com", "mike.chen@example.com", ""]
        return AnyValue(string_value=data.draw(st.sampled_from(emails)))
    if kind == "status":
        return AnyValue(int_value=data.draw(st.sampled_from([200, 429, 500])))
    marker = "\x00user-enricher/span-end"  # the column reader's marker key, as a value
    text = data.draw(st.sampled_from(["openai", "anthropic", "gpt-4o", "claude-3", "", marker]))
    return AnyValue(string_value=text)


KEYS = {
    "src.addr": "addr",
    "client.address": "addr",
    "gen_ai.provider.name": "text",
    "gen_ai.request.model": "text",
    "gen_ai.response.model": "text",
    "gen_ai.usage.input_tokens": "count",
    "gen_ai.usage.output_tokens": "count",
    "agw.ai.usage.cost.total": "cost",
    "http.status": "status",
    "route": "text",
    # Identity a producer put on the span (Open WebUI's forwarded headers), and one of
    # the keys the service writes itself.
    "x-openwebui-user-email": "email",
    "x-openwebui-user-id": "email",
    "user.email": "email",
}


@st.composite
def spans(draw: Any, layouts: list[list[str]]) -> Span:
    data = draw(st.data())
    keys = draw(st.sampled_from(layouts))
    span = Span(
        trace_id=draw(st.sampled_from([b"", *(bytes([i]) * 16 for i in range(1, 5))])),
        span_id=draw(st.binary(min_size=8, max_size=8)),
        name="POST /v1/chat/completions",
        start_time_unix_nano=draw(st.sampled_from([0, *(T0 + k * 700 * MS for k in range(5))])),
    )
    span.attributes.extend(KeyValue(key=k, value=_value(KEYS[k], data)) for k in keys)
    return span


@st.composite
def requests(draw: Any) -> ExportTraceServiceRequest:
    key_lists = st.lists(st.sampled_from(sorted(KEYS)), max_size=8)
    # A few layouts per request, as a gateway writes; sometimes a key twice.
    layouts = draw(st.lists(key_lists, min_size=1, max_size=3))
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(1, 2))):
        rs = request.resource_spans.add()
        if draw(st.booleans()):
            rs.resource.attributes.append(kv("service.name", "agentgateway"))
        if draw(st.booleans()):
            rs.resource.attributes.append(kv("client.address", draw(st.sampled_from(ADDRESSES))))
        if not draw(st.integers(0, 5)):
            rs.resource.attributes.append(kv("user.id", "plat"))
        for _ in range(draw(st.integers(1, 2))):
            ss = rs.scope_spans.add()
            if draw(st.booleans()):
                ss.scope.name = "agentgateway"
                ss.schema_url = "https://opentelemetry.io/schemas/1.30.0"
            ss.spans.extend(draw(st.lists(spans(layouts), max_size=6)))
    return request


def _correlator(hold_ms: int, columns: bool) -> tuple[Correlator, MemorySessionStore]:
    store = MemorySessionStore(1000)
    hour = 3600 * S
    store.add(Session("172.18.0.5", MIKE, T0 - hour, T0 + 1500 * MS))  # ends mid-batch
    store.add(Session("172.18.0.5", ANA, T0 + 1200 * MS, T0 + hour))  # overlaps it
    store.add(Session("fd00::7", ANA, T0 - hour, T0 + hour))
    store.add(event(MIKE, T0 - 200 * MS, model="gpt-4o", ip="172.18.0.6"))
    store.add(event(ANA, T0 + 1300 * MS, ip="172.18.0.6"))
    store.add(event(MIKE, T0 + hour // 2, ip="fd00::7"))  # events there, none near the spans
    traces = TraceIdentities(600 * S, 1000)
    traces.put(bytes([2]) * 16, PLAT, T0)
    correlator = Correlator(
        Rules(DEFAULT_ADDRESS_KEYS, ("gen_ai.request.model",), ("jwt.sub",), hold_ms * MS),
        Resolver(window_ns=5 * S, skew_ns=500 * MS, policy="candidates"),
        IdentityReader(),
        store,
        traces,
        HoldBuffer(3),
        DIRECTORY,
        UsageReader({"gpt-4o": Price(2.5, 10.0)}),
        columns=columns,
    )
    return correlator, store


def _spans(payloads: list[bytes]) -> list[bytes]:
    """Every span sent, decoded and re-encoded canonically, in a stable order."""
    out: list[bytes] = []
    for data in payloads:
        request = ExportTraceServiceRequest.FromString(data)
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                context = (rs.resource.SerializeToString(), ss.scope.SerializeToString())
                out.extend(repr(context).encode() + s.SerializeToString() for s in ss.spans)
    return sorted(out)


def _summary(outs: list[Outcome]) -> dict[str, Any]:
    payloads = [p.data for o in outs for p in ([o.current] if o.current else []) + o.released]
    usage: dict[Any, Any] = Counter()
    for o in outs:
        for key, row in o.usage.items():
            usage[key, "calls"] += int(row[0])
            usage[key, "tokens"] += int(row[1]) * 100_000 + int(row[2])
            usage[key, "cost"] += round(row[3], 9)
            usage[key, "errors"] += int(row[4])
    return {
        "spans": _spans(payloads),
        "counts": [
            (o.spans, o.held, o.unattributed, o.no_address, o.failed, o.forced_out, o.attributed)
            for o in outs
        ],
        "usage": {k: v for k, v in usage.items() if v},
    }


@COMPARE
@given(batch=st.lists(requests(), min_size=1, max_size=3), hold_ms=st.sampled_from([0, 3000]))
def test_column_path_matches_the_full_decode(
    batch: list[ExportTraceServiceRequest], hold_ms: int
) -> None:
    """Same spans, attributions, counts and usage, request after request and at the drain."""
    results = []
    for columns in (True, False):
        correlator, _ = _correlator(hold_ms, columns)
        outs = [correlator.receive(Received.parse(r.SerializeToString()), T0) for r in batch]
        outs.append(correlator.drain())
        outs.append(Outcome(usage=correlator.usage_totals()))  # usage summed since
        results.append(_summary(outs))
    assert results[0] == results[1]


def test_column_path_is_taken_for_gateway_batches() -> None:
    """The comparison above is only worth something if the column path really runs."""
    correlator, _ = _correlator(0, True)
    span = Span(trace_id=b"\x05" * 16, span_id=b"\x01" * 8, start_time_unix_nano=T0)
    span.attributes.extend([kv("src.addr", "fd00::7"), kv("gen_ai.provider.name", "openai")])
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.append(span)
    received = Received.parse(request.SerializeToString())
    correlator.receive(received, T0)
    assert received._message is None  # never decoded in full


PRINCIPALS = parse_directory(
    {
        "users": [
            {"id": "plat", "email": "platform@example.com", "addresses": ["10.9.0.0/16"]},
            {"id": "svc", "email": "svc@example.com", "principals": {"jwt.sub": ["svc-1"]}},
        ]
    }
)


@pytest.mark.parametrize("hold_ms", [0, 3000])
@pytest.mark.parametrize("case", ["identity on spans", "identity on the resource", "principals"])
def test_identity_and_principals_take_the_column_path_with_the_same_result(
    case: str, hold_ms: int
) -> None:
    """Open WebUI's own identity, a resource's, and directory principals: the columns
    read them (no full decode) and give what the full decode gives."""
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    if case == "identity on the resource":
        rs.resource.attributes.append(kv("user.email", "mike.chen@example.com"))
    ss = rs.scope_spans.add()
    for i in range(6):
        span = Span(trace_id=bytes([1 + i % 3]) * 16, span_id=bytes([i + 1]) * 8)
        span.start_time_unix_nano = T0 + i * 100 * MS
        span.attributes.extend([kv("src.addr", "10.9.4.4:5000"), kv("gen_ai.provider.name", "x")])
        if case == "identity on spans" and i % 2:
            span.attributes.append(kv("x-openwebui-user-email", "ana.lima@example.com"))
            if i == 3:
                span.attributes.append(kv("user.email", "ana.lima@example.com"))  # present
        if case == "principals" and i % 2:
            span.attributes.append(kv("jwt.sub", "svc-1"))
        ss.spans.append(span)
    results, decoded = [], []
    for columns in (True, False):
        correlator, _ = _correlator(hold_ms, columns)
        correlator.directory = PRINCIPALS
        received = Received.parse(request.SerializeToString())
        outs = [correlator.receive(received, T0), correlator.drain()]
        outs.append(Outcome(usage=correlator.usage_totals()))
        results.append(_summary(outs))
        decoded.append(received._message is not None)
    assert decoded == [False, True]
    assert results[0] == results[1]
    methods = {key[0] for out in results[0]["counts"] for key in out[-1]}
    assert methods >= ({"span"} if case.startswith("identity") else {"directory"})


@pytest.mark.parametrize(
    "case",
    ["no trace id", "no start time", "marker key as a key", "key twice"],
)
def test_spans_the_columns_cannot_vouch_for_take_the_full_decode(case: str) -> None:
    """Anything that could misalign the columns sends the request to the full decode."""
    span = Span(trace_id=b"\x05" * 16, span_id=b"\x01" * 8, start_time_unix_nano=T0)
    span.attributes.append(kv("src.addr", "fd00::7"))
    if case == "no trace id":
        span.trace_id = b""
    elif case == "no start time":
        span.start_time_unix_nano = 0
    elif case == "marker key as a key":
        span.attributes.append(kv("\x00user-enricher/span-end", "x"))
    elif case == "key twice":
        span.attributes.append(kv("src.addr", "172.18.0.5"))
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.append(span)
    correlator, _ = _correlator(0, True)
    received = Received.parse(request.SerializeToString())
    correlator.receive(received, T0)
    assert received._message is not None


def test_layout_of_a_span_is_learned_once() -> None:
    """Layouts are remembered by their encoded keys: a second batch learns nothing."""
    reader = ColumnReader(["src.addr"])
    span = Span(trace_id=b"\x05" * 16, span_id=b"\x01" * 8, start_time_unix_nano=T0)
    span.attributes.extend([kv("route", "llm"), kv("src.addr", "fd00::7")])
    first = reader.read([span.SerializeToString()] * 3)
    assert (
        first is not None
        and first.values["src.addr"][2] == AnyValue(string_value="fd00::7").SerializeToString()
    )
    assert len(reader._layouts) == 1
    reader.read([span.SerializeToString()] * 5)
    assert len(reader._layouts) == 1


@COMPARE
@given(request=requests(), name=st.text(max_size=300))
def test_spliced_output_is_the_encoder_output(
    request: ExportTraceServiceRequest, name: str
) -> None:
    """The hand-framed request is byte for byte what the protobuf encoder writes."""
    extra = Span(attributes=[kv("user.name", name)]).SerializeToString()
    raw = request.SerializeToString()
    received = Received.parse(raw)
    extras = [extra if i % 2 else b"" for i in range(received.spans)]
    spliced = splice_module.splice(received, extras)
    if not received.spans:
        assert spliced is None
        return
    spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    for span, more in zip(spans, extras, strict=True):
        span.MergeFromString(more)
    assert spliced == request.SerializeToString()


@pytest.mark.parametrize(
    "tail", [b"\x1a\x00", b"\xc2\x3e\x00"], ids=["empty schema url", "unknown field 1000"]
)
def test_splice_declines_what_the_view_does_not_keep_exactly(tail: bytes) -> None:
    """Anything at the resource level the hand framing would not reproduce: the encoder."""
    request = ExportTraceServiceRequest()
    span = Span(trace_id=b"\x05" * 16, span_id=b"\x01" * 8, start_time_unix_nano=T0)
    request.resource_spans.add().scope_spans.add().spans.append(span)
    rs = request.resource_spans[0].SerializeToString() + tail
    raw = b"\x0a" + bytes([len(rs)]) + rs
    received = Received.parse(raw)
    assert splice_module.splice(received, [b"\x4a\x00"]) is None


def _twice(field_a: bytes, field_b: bytes, span: Span) -> bytes:
    """A request whose ResourceSpans carries its resource as two fields (they merge)."""
    encoded = span.SerializeToString()
    scope = b"\x12" + varint(len(encoded)) + encoded
    rs = field_a + field_b + b"\x12" + varint(len(scope)) + scope
    return b"\x0a" + varint(len(rs)) + rs


def _resource_field(*attributes: KeyValue) -> bytes:
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    encoded = Resource(attributes=list(attributes)).SerializeToString()
    return b"\x0a" + varint(len(encoded)) + encoded


@pytest.mark.parametrize(
    ("first", "span_src"),
    [
        (kv("user.email", "ana.lima@example.com"), "172.18.0.5"),  # identity on the resource
        (kv("client.address", "fd00::7"), None),  # the resource's address
    ],
    ids=["identity", "address"],
)
def test_a_resource_written_twice_merges_on_both_paths(
    first: KeyValue, span_src: str | None
) -> None:
    """Two resource fields merge (as protobuf says); neither path keeps only the last."""
    span = Span(trace_id=b"\x05" * 16, span_id=b"\x01" * 8, start_time_unix_nano=T0)
    if span_src:
        span.attributes.append(kv("src.addr", span_src))
    raw = _twice(_resource_field(first), _resource_field(kv("service.name", "gw")), span)
    results = []
    for columns in (True, False):
        correlator, _ = _correlator(0, columns)
        received = Received.parse(raw)
        correlator.admit(received)
        out = correlator.receive(received, T0)
        results.append(_summary([out, Outcome(usage=correlator.usage_totals())]))
    assert results[0] == results[1]
    assert results[0]["counts"][0][-1]  # attributed


def test_a_malformed_resource_is_refused_before_it_is_acknowledged() -> None:
    """The column path checks resources and scopes: the sender gets INVALID_ARGUMENT."""
    from google.protobuf.message import DecodeError

    span = Span(trace_id=b"\x05" * 16, span_id=b"\x01" * 8, start_time_unix_nano=T0)
    span.attributes.append(kv("src.addr", "172.18.0.5"))
    truncated = b"\x0a\x06\x0a\x04\x0a\x05ab"  # Resource{attributes: a key cut short}
    raw = _twice(truncated, b"", span)
    correlator, _ = _correlator(0, True)
    with pytest.raises(DecodeError):
        correlator.admit(Received.parse(raw))


@pytest.mark.parametrize("columns", [True, False])
@pytest.mark.parametrize("hold_ms", [0, 3000])
def test_a_held_span_is_still_matched_by_its_model(hold_ms: int, columns: bool) -> None:
    """Two users' request events at one address and time, each naming a model: every
    span goes to the user whose event names its model, held or not (held spans read
    their models at release)."""
    store = MemorySessionStore(100)
    store.add(event(MIKE, T0 - 100 * MS, model="gpt-4o"))
    store.add(event(ANA, T0 - 100 * MS, model="claude-sonnet-4"))
    correlator = Correlator(
        Rules(DEFAULT_ADDRESS_KEYS, ("gen_ai.request.model",), (), hold_ms * MS),
        Resolver(window_ns=5 * S, skew_ns=500 * MS, policy="nearest"),
        IdentityReader(),
        store,
        TraceIdentities(600 * S, 1000),
        HoldBuffer(100),
        columns=columns,
    )
    models = ["claude-sonnet-4", "gpt-4o", "claude-sonnet-4"]
    spans_in = [gateway_span(trace, model=m) for trace, m in enumerate(models, 1)]
    first = correlator.receive(Received.of(request_of(*spans_in)), T0)
    assert first.held == (3 if hold_ms else 0)
    got = [who(span)[0] for out in (first, correlator.drain()) for span in sent(out)]
    assert got == [ANA.email, MIKE.email, ANA.email]
