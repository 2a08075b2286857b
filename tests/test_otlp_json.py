"""Tests for the OTLP/JSON decoder: hex ids, lenient numbers, enums, nesting, errors."""

from __future__ import annotations

import base64
import gzip
import json
import math
from typing import Any

import pytest
from fuzz_strategies import requests
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import given, settings
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, StatusCode

from processor.errors import InvalidInput
from processor.receive.otlp_json import MAX_DEPTH, decode_json, encode_json_response

TRACE_HEX = "5b8efff798038103d269b633813fc60c"
SPAN_HEX = "eee19b7ec3c1b174"
PARENT_HEX = "aaaabbbbccccdddd"
TRACE = bytes.fromhex(TRACE_HEX)
SPAN = bytes.fromhex(SPAN_HEX)
PARENT = bytes.fromhex(PARENT_HEX)
T0 = 1_795_000_000_123_456_789  # needs all 64 bits' precision: a double would round it


def one_span(span: dict[str, Any], **scope_spans: Any) -> dict[str, Any]:
    """An OTLP/JSON request around one span."""
    return {"resourceSpans": [{"scopeSpans": [{"spans": [span], **scope_spans}]}]}


def request_of(span: Span) -> ExportTraceServiceRequest:
    """The protobuf request around one span."""
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
    )


def encode(data: Any) -> bytes:
    """JSON bytes as a client sends them."""
    return json.dumps(data).encode()


def attr(key: str, value: AnyValue) -> KeyValue:
    """A protobuf attribute."""
    return KeyValue(key=key, value=value)


# --------------------------------------------------------------------------- accepted forms

ACCEPTED: list[tuple[str, dict[str, Any], ExportTraceServiceRequest]] = [
    (
        "hex-ids-lower-case",
        one_span({"traceId": TRACE_HEX, "spanId": SPAN_HEX, "parentSpanId": PARENT_HEX}),
        request_of(Span(trace_id=TRACE, span_id=SPAN, parent_span_id=PARENT)),
    ),
    (
        "hex-ids-upper-case",
        one_span({"traceId": TRACE_HEX.upper(), "spanId": SPAN_HEX.upper()}),
        request_of(Span(trace_id=TRACE, span_id=SPAN)),
    ),
    (
        "empty-parent-span-id-is-a-root",
        one_span({"traceId": TRACE_HEX, "spanId": SPAN_HEX, "parentSpanId": ""}),
        request_of(Span(trace_id=TRACE, span_id=SPAN)),
    ),
    (
        "snake-case-keys",
        {
            "resource_spans": [
                {
                    "scope_spans": [
                        {"spans": [{"trace_id": TRACE_HEX, "start_time_unix_nano": str(T0)}]}
                    ]
                }
            ]
        },
        request_of(Span(trace_id=TRACE, start_time_unix_nano=T0)),
    ),
    (
        "fixed64-as-string-and-number",
        one_span({"startTimeUnixNano": str(T0), "endTimeUnixNano": T0 + 1}),
        request_of(Span(start_time_unix_nano=T0, end_time_unix_nano=T0 + 1)),
    ),
    (
        "int-value-as-string-number-and-negative",
        one_span(
            {
                "attributes": [
                    {"key": "a", "value": {"intValue": "9223372036854775807"}},
                    {"key": "b", "value": {"intValue": 42}},
                    {"key": "c", "value": {"intValue": "-7"}},
                    {"key": "d", "value": {"intValue": 1e3}},
                ]
            }
        ),
        request_of(
            Span(
                attributes=[
                    attr("a", AnyValue(int_value=2**63 - 1)),
                    attr("b", AnyValue(int_value=42)),
                    attr("c", AnyValue(int_value=-7)),
                    attr("d", AnyValue(int_value=1000)),
                ]
            )
        ),
    ),
    (
        "enums-as-integers",
        one_span({"kind": 2, "status": {"code": 2, "message": "boom"}}),
        request_of(
            Span(
                kind=Span.SPAN_KIND_SERVER,
                status=Status(code=Status.STATUS_CODE_ERROR, message="boom"),
            )
        ),
    ),
    (
        "enums-as-names",
        one_span({"kind": "SPAN_KIND_CLIENT", "status": {"code": "STATUS_CODE_OK"}}),
        request_of(Span(kind=Span.SPAN_KIND_CLIENT, status=Status(code=Status.STATUS_CODE_OK))),
    ),
    (
        "unknown-enum-number-is-kept",
        one_span({"kind": 99}),
        request_of(Span(kind=99)),  # type: ignore[arg-type]
    ),
    (
        "scalar-values",
        one_span(
            {
                "attributes": [
                    {"key": "s", "value": {"stringValue": "mike.chen@example.com"}},
                    {"key": "t", "value": {"boolValue": True}},
                    {"key": "d", "value": {"doubleValue": 0.25}},
                    {"key": "i", "value": {"doubleValue": "-Infinity"}},
                    {"key": "n", "value": {"doubleValue": 3}},
                    {"key": "e", "value": {}},
                ]
            }
        ),
        request_of(
            Span(
                attributes=[
                    attr("s", AnyValue(string_value="mike.chen@example.com")),
                    attr("t", AnyValue(bool_value=True)),
                    attr("d", AnyValue(double_value=0.25)),
                    attr("i", AnyValue(double_value=float("-inf"))),
                    attr("n", AnyValue(double_value=3.0)),
                    attr("e", AnyValue()),
                ]
            )
        ),
    ),
    (
        "bytes-value-base64-standard-url-safe-unpadded",
        one_span(
            {
                "attributes": [
                    {"key": "a", "value": {"bytesValue": base64.b64encode(b"\xfb\xff").decode()}},
                    {"key": "b", "value": {"bytesValue": "-_8"}},
                    {"key": "c", "value": {"bytesValue": ""}},
                ]
            }
        ),
        request_of(
            Span(
                attributes=[
                    attr("a", AnyValue(bytes_value=b"\xfb\xff")),
                    attr("b", AnyValue(bytes_value=b"\xfb\xff")),
                    attr("c", AnyValue(bytes_value=b"")),
                ]
            )
        ),
    ),
    (
        "nested-kvlist-and-array-values",
        one_span(
            {
                "attributes": [
                    {
                        "key": "http.request.header.x-openwebui-user-email",
                        "value": {"arrayValue": {"values": [{"stringValue": "ana@example.com"}]}},
                    },
                    {
                        "key": "nested",
                        "value": {
                            "kvlistValue": {
                                "values": [
                                    {
                                        "key": "inner",
                                        "value": {
                                            "arrayValue": {
                                                "values": [{"intValue": "1"}, {"boolValue": False}]
                                            }
                                        },
                                    },
                                    {"key": "empty", "value": {"kvlistValue": {}}},
                                ]
                            }
                        },
                    },
                    {"key": "empty-array", "value": {"arrayValue": {}}},
                ]
            }
        ),
        request_of(
            Span(
                attributes=[
                    attr(
                        "http.request.header.x-openwebui-user-email",
                        AnyValue(
                            array_value=ArrayValue(
                                values=[AnyValue(string_value="ana@example.com")]
                            )
                        ),
                    ),
                    attr(
                        "nested",
                        AnyValue(
                            kvlist_value=KeyValueList(
                                values=[
                                    attr(
                                        "inner",
                                        AnyValue(
                                            array_value=ArrayValue(
                                                values=[
                                                    AnyValue(int_value=1),
                                                    AnyValue(bool_value=False),
                                                ]
                                            )
                                        ),
                                    ),
                                    attr("empty", AnyValue(kvlist_value=KeyValueList())),
                                ]
                            )
                        ),
                    ),
                    attr("empty-array", AnyValue(array_value=ArrayValue())),
                ]
            )
        ),
    ),
    (
        "links-and-events",
        one_span(
            {
                "links": [{"traceId": TRACE_HEX.upper(), "spanId": PARENT_HEX, "flags": 257}],
                "events": [{"timeUnixNano": str(T0), "name": "exception"}],
            }
        ),
        request_of(
            Span(
                links=[Span.Link(trace_id=TRACE, span_id=PARENT, flags=257)],
                events=[Span.Event(time_unix_nano=T0, name="exception")],
            )
        ),
    ),
    (
        "unknown-keys-are-ignored",
        {
            "resourceSpans": [{"futureField": {"x": [1]}, "scopeSpans": [{"spans": [{}]}]}],
            "extra": 1,
        },
        request_of(Span()),
    ),
    (
        "null-means-unset",
        one_span({"name": None, "traceId": None, "attributes": None, "status": None}),
        request_of(Span()),
    ),
    ("empty-object-is-an-empty-request", {}, ExportTraceServiceRequest()),
]


@pytest.mark.parametrize(
    ("data", "expected"), [pytest.param(d, e, id=name) for name, d, e in ACCEPTED]
)
def test_decode_json_accepts_the_otlp_json_forms(
    data: dict[str, Any], expected: ExportTraceServiceRequest
) -> None:
    """Each accepted OTLP/JSON form decodes to exactly the expected protobuf request."""
    assert decode_json(encode(data)) == expected


def test_decode_json_reads_an_agentgateway_request_written_by_hand() -> None:
    """A full request as AgentGateway would send it decodes to the equal protobuf request."""
    expected = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(
                    attributes=[attr("service.name", AnyValue(string_value="agentgateway"))]
                ),
                schema_url="https://opentelemetry.io/schemas/1.27.0",
                scope_spans=[
                    ScopeSpans(
                        scope=InstrumentationScope(name="agentgateway", version="1.0.1"),
                        spans=[
                            Span(
                                trace_id=TRACE,
                                span_id=SPAN,
                                parent_span_id=PARENT,
                                name="POST /*",
                                kind=Span.SPAN_KIND_SERVER,
                                start_time_unix_nano=T0,
                                end_time_unix_nano=T0 + 4_738_000_000,
                                flags=0x301,
                                attributes=[
                                    attr("src.addr", AnyValue(string_value="10.0.0.7:40312")),
                                    attr("http.status", AnyValue(int_value=200)),
                                    attr("gen_ai.usage.input_tokens", AnyValue(int_value=12)),
                                    attr("agw.ai.usage.cost.total", AnyValue(double_value=0.0021)),
                                ],
                                status=Status(code=Status.STATUS_CODE_OK),
                            )
                        ],
                    )
                ],
            )
        ]
    )
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": "agentgateway"}}
                    ]
                },
                "schemaUrl": "https://opentelemetry.io/schemas/1.27.0",
                "scopeSpans": [
                    {
                        "scope": {"name": "agentgateway", "version": "1.0.1"},
                        "spans": [
                            {
                                "traceId": TRACE_HEX.upper(),
                                "spanId": SPAN_HEX,
                                "parentSpanId": PARENT_HEX,
                                "name": "POST /*",
                                "kind": 2,
                                "startTimeUnixNano": str(T0),
                                "endTimeUnixNano": str(T0 + 4_738_000_000),
                                "flags": 769,
                                "attributes": [
                                    {"key": "src.addr", "value": {"stringValue": "10.0.0.7:40312"}},
                                    {"key": "http.status", "value": {"intValue": "200"}},
                                    {"key": "gen_ai.usage.input_tokens", "value": {"intValue": 12}},
                                    {
                                        "key": "agw.ai.usage.cost.total",
                                        "value": {"doubleValue": 0.0021},
                                    },
                                ],
                                "status": {"code": 1},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    assert decode_json(encode(body)) == expected


# --------------------------------------------------------------------------- round trips


def to_otlp_json(request: ExportTraceServiceRequest) -> dict[str, Any]:
    """The OTLP/JSON form of ``request``: protobuf JSON with the ids rewritten to hex."""
    data = json_format.MessageToDict(request)
    for rs in data.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for item in [span, *span.get("links", [])]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in item:
                            item[key] = base64.b64decode(item[key]).hex()
    return data


def sdk_spans() -> list[ReadableSpan]:
    """Real spans from the OpenTelemetry SDK: server and client kinds, a link, an error."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=SdkResource.create({"service.name": "open-webui"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test", "1.0")
    with tracer.start_as_current_span("POST /api/chat/completions", kind=SpanKind.SERVER) as root:
        root.set_attribute("client.user.email", "mike.chen@example.com")
        root.set_attribute("client.user.roles", ["admin", "user"])
        link = Link(root.get_span_context(), {"why": "test"})
        with tracer.start_as_current_span("POST", kind=SpanKind.CLIENT, links=[link]) as child:
            child.set_attribute("http.status_code", 502)
            child.set_attribute("ratio", 0.5)
            child.add_event("retry", {"attempt": 2})
            child.set_status(StatusCode.ERROR, "bad gateway")
    provider.shutdown()
    return list(exporter.get_finished_spans())


def test_sdk_encoded_request_round_trips_through_otlp_json() -> None:
    """The SDK's protobuf request, written as OTLP/JSON, decodes back to the same request."""
    request = encode_spans(sdk_spans())
    assert sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans) == 2
    assert decode_json(encode(to_otlp_json(request))) == request


def _valid_ids(request: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    """``request`` with every id made 16 or 8 bytes (or left empty), as OTLP/JSON requires."""
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                items: list[Any] = [span, *span.links]
                for item in items:
                    item.trace_id = item.trace_id.ljust(16, b"\x01")[:16] if item.trace_id else b""
                    item.span_id = item.span_id.ljust(8, b"\x02")[:8] if item.span_id else b""
                parent = span.parent_span_id
                span.parent_span_id = parent.ljust(8, b"\x03")[:8] if parent else b""
    return request


def _canonical_nans(message: Message) -> None:
    """Make every NaN double the one NaN JSON can spell (sign and payload bits are lost)."""
    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            for child in value if field.is_repeated else [value]:
                _canonical_nans(child)
        elif field.type == FieldDescriptor.TYPE_DOUBLE and math.isnan(value):
            setattr(message, field.name, math.nan)


def _json_representable(request: ExportTraceServiceRequest) -> ExportTraceServiceRequest:
    _canonical_nans(request)
    return _valid_ids(request)


@settings(max_examples=150, deadline=None)
@given(requests().map(_json_representable))
def test_any_request_round_trips_through_otlp_json(request: ExportTraceServiceRequest) -> None:
    """Every generated request survives protobuf -> OTLP/JSON -> decode_json unchanged."""
    decoded = decode_json(encode(to_otlp_json(request)))
    # NaN != NaN: compare serialized forms, which keep the bits.
    assert decoded.SerializeToString(deterministic=True) == request.SerializeToString(
        deterministic=True
    )


# --------------------------------------------------------------------------- refused forms

TRACE_PATH = "resourceSpans[0].scopeSpans[0].spans[0]"
ATTR_PATH = f"{TRACE_PATH}.attributes[0].value"

REFUSED: list[tuple[str, bytes, str, str]] = [
    ("malformed-json", b'{"resourceSpans": [', "", "malformed JSON"),
    ("not-utf8", b'{"a": "\xff"}', "", "not UTF-8"),
    ("gzip-without-header", gzip.compress(b"{}"), "", "not UTF-8"),
    ("top-level-list", b"[]", "", "expected a JSON object"),
    (
        "resource-spans-not-a-list",
        encode({"resourceSpans": {}}),
        "resourceSpans",
        "expected a list",
    ),
    (
        "trace-id-too-short",
        encode(one_span({"traceId": "abc"})),
        f"{TRACE_PATH}.traceId",
        "expected 32 hex digits",
    ),
    (
        "trace-id-base64-as-protobuf-json-would-have-it",
        encode(one_span({"traceId": base64.b64encode(TRACE).decode()})),
        f"{TRACE_PATH}.traceId",
        "expected 32 hex digits",
    ),
    (
        "trace-id-not-hex",
        encode(one_span({"traceId": "z" * 32})),
        f"{TRACE_PATH}.traceId",
        "non-hex character",
    ),
    (
        "trace-id-with-spaces",
        encode(one_span({"traceId": " ".join([TRACE_HEX[:16], TRACE_HEX[17:]])})),
        f"{TRACE_PATH}.traceId",
        "non-hex character",
    ),
    (
        "trace-id-a-number",
        encode(one_span({"traceId": 12})),
        f"{TRACE_PATH}.traceId",
        "expected a string of 32 hex digits",
    ),
    (
        "span-id-trace-length",
        encode(one_span({"spanId": TRACE_HEX})),
        f"{TRACE_PATH}.spanId",
        "expected 16 hex digits",
    ),
    (
        "parent-span-id-odd",
        encode(one_span({"parent_span_id": "abc"})),
        f"{TRACE_PATH}.parent_span_id",
        "expected 16 hex digits",
    ),
    (
        "link-trace-id",
        encode(one_span({"links": [{}, {"traceId": SPAN_HEX}]})),
        f"{TRACE_PATH}.links[1].traceId",
        "expected 32 hex digits",
    ),
    (
        "fourth-span",
        encode({"resourceSpans": [{"scopeSpans": [{"spans": [{}, {}, {}, {"traceId": "00"}]}]}]}),
        "resourceSpans[0].scopeSpans[0].spans[3].traceId",
        "expected 32 hex digits",
    ),
    (
        "int-value-not-a-number",
        encode(one_span({"attributes": [{"key": "a", "value": {"intValue": "abc"}}]})),
        f"{ATTR_PATH}.intValue",
        "expected an integer",
    ),
    (
        "int-value-fraction",
        encode(one_span({"attributes": [{"key": "a", "value": {"intValue": 1.5}}]})),
        f"{ATTR_PATH}.intValue",
        "expected an integer",
    ),
    (
        "int-value-boolean",
        encode(one_span({"attributes": [{"key": "a", "value": {"intValue": True}}]})),
        f"{ATTR_PATH}.intValue",
        "expected an integer",
    ),
    (
        "int-value-beyond-int64",
        encode(one_span({"attributes": [{"key": "a", "value": {"intValue": str(2**63)}}]})),
        f"{ATTR_PATH}.intValue",
        "out of range",
    ),
    (
        "negative-time",
        encode(one_span({"startTimeUnixNano": "-1"})),
        f"{TRACE_PATH}.startTimeUnixNano",
        "out of range",
    ),
    (
        "unknown-enum-name",
        encode(one_span({"kind": "SPAN_KIND_BOGUS"})),
        f"{TRACE_PATH}.kind",
        "unknown SpanKind name",
    ),
    (
        "enum-wrong-type",
        encode(one_span({"status": {"code": [1]}})),
        f"{TRACE_PATH}.status.code",
        "expected a StatusCode number",
    ),
    ("name-a-number", encode(one_span({"name": 5})), f"{TRACE_PATH}.name", "expected a string"),
    (
        "bool-as-string",
        encode(one_span({"attributes": [{"key": "a", "value": {"boolValue": "true"}}]})),
        f"{ATTR_PATH}.boolValue",
        "expected true or false",
    ),
    (
        "double-as-word",
        encode(one_span({"attributes": [{"key": "a", "value": {"doubleValue": "much"}}]})),
        f"{ATTR_PATH}.doubleValue",
        "expected a number",
    ),
    (
        "bytes-not-base64",
        encode(one_span({"attributes": [{"key": "a", "value": {"bytesValue": "!!"}}]})),
        f"{ATTR_PATH}.bytesValue",
        "expected base64",
    ),
    (
        "two-oneof-members",
        encode(
            one_span({"attributes": [{"key": "a", "value": {"stringValue": "x", "intValue": 1}}]})
        ),
        f"{ATTR_PATH}.intValue",
        "only one may be set",
    ),
    (
        "camel-and-snake-of-one-field",
        encode(one_span({"name": "a", "traceId": TRACE_HEX, "trace_id": TRACE_HEX})),
        f"{TRACE_PATH}.trace_id",
        "conflicts with 'traceId'",
    ),
    (
        "span-not-an-object",
        encode({"resourceSpans": [{"scopeSpans": [{"spans": ["x"]}]}]}),
        TRACE_PATH,
        "expected an object",
    ),
    (
        "null-in-a-list",
        encode({"resourceSpans": [None]}),
        "resourceSpans[0]",
        "null is not allowed",
    ),
]


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [pytest.param(b, p, m, id=name) for name, b, p, m in REFUSED],
)
def test_decode_json_refuses_with_the_json_path(body: bytes, path: str, message: str) -> None:
    """Each refused body raises InvalidInput naming the offending JSON path and why."""
    with pytest.raises(InvalidInput) as caught:
        decode_json(body)
    [problem] = caught.value.problems
    assert problem.path == path
    assert message in problem.message
    assert str(caught.value) == (f"{path}: {problem.message}" if path else problem.message)


def test_decode_json_refuses_nesting_beyond_the_bound() -> None:
    """Attribute values nested past MAX_DEPTH are refused, not a stack overflow."""
    value: dict[str, Any] = {"stringValue": "leaf"}
    for _ in range(MAX_DEPTH):
        value = {"arrayValue": {"values": [value]}}
    with pytest.raises(InvalidInput, match="nested more than"):
        decode_json(encode(one_span({"attributes": [{"key": "deep", "value": value}]})))


def test_decode_json_refuses_json_too_deep_for_the_parser() -> None:
    """JSON nested deeper than Python's parser can go is a clear error too."""
    with pytest.raises(InvalidInput, match="malformed JSON"):
        decode_json(b"[" * 100_000 + b"]" * 100_000)


# --------------------------------------------------------------------------- responses


def test_encode_json_response_of_full_success_is_an_empty_object() -> None:
    """A response with nothing rejected is ``{}``."""
    assert encode_json_response(ExportTraceServiceResponse()) == b"{}"


def test_encode_json_response_spells_partial_success_in_lower_camel_case() -> None:
    """A partial success carries lowerCamelCase keys and parses back with protobuf."""
    response = ExportTraceServiceResponse(
        partial_success=ExportTracePartialSuccess(rejected_spans=2, error_message="no trace id")
    )
    body = encode_json_response(response)
    assert json.loads(body) == {
        "partialSuccess": {"rejectedSpans": "2", "errorMessage": "no trace id"}
    }
    assert json_format.Parse(body, ExportTraceServiceResponse()) == response
