"""Partial views of the OTLP trace request, for reading it without a full decode (pure).

A protobuf parser accepts any message declared with the same field numbers and
wire types, so a *view* that declares only some fields of a message parses the
real encoding: undeclared fields are kept as unknown fields and written back
unchanged. Two views are used on the span path:

``RequestView``
    The request down to the span level, with each span left as bytes (and the
    resource and scope as opaque messages). Parsing it
    costs about a twentieth of a full decode, and writing it back, with bytes
    appended to some spans, lets the C encoder fix every length prefix.

``SpanColumns``
    Many spans concatenated and parsed as *one* message. Repeated fields
    concatenate and a non-repeated message field merges, so the parse yields
    every span's trace id and start time as one list each, and every attribute
    key and value of every span as two flat lists (``KeyValue`` has the same
    field numbers as ``attributes.key`` / ``attributes.value`` below). The
    caller separates spans with a marker (see ``columns``); nothing is read out
    of a string value by accident, because the parser walks the real structure.

The field numbers are those of ``opentelemetry/proto/trace/v1/trace.proto`` and
``collector/trace/v1/trace_service.proto``.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_REPEATED, _OPTIONAL = _F.LABEL_REPEATED, _F.LABEL_OPTIONAL
_PACKAGE = "user_enricher.views"

# message -> [(field name, number, type, label, message type)]
_MESSAGES: dict[str, list[tuple[str, int, int, int, str]]] = {
    # ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
    "RequestView": [("resource_spans", 1, _F.TYPE_MESSAGE, _REPEATED, "ResourceSpansView")],
    # ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2;
    #                 string schema_url = 3; }
    "ResourceSpansView": [
        ("resource", 1, _F.TYPE_MESSAGE, _OPTIONAL, "Opaque"),
        ("scope_spans", 2, _F.TYPE_MESSAGE, _REPEATED, "ScopeSpansView"),
        ("schema_url", 3, _F.TYPE_STRING, _OPTIONAL, ""),
    ],
    # ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2;
    #              string schema_url = 3; }
    "ScopeSpansView": [
        ("scope", 1, _F.TYPE_MESSAGE, _OPTIONAL, "Opaque"),
        ("spans", 2, _F.TYPE_BYTES, _REPEATED, ""),
        ("schema_url", 3, _F.TYPE_STRING, _OPTIONAL, ""),
    ],
    # Span { bytes trace_id = 1; fixed64 start_time_unix_nano = 7;
    #        repeated KeyValue attributes = 9; ... }
    "SpanColumns": [
        ("trace_id", 1, _F.TYPE_BYTES, _REPEATED, ""),
        ("start_time_unix_nano", 7, _F.TYPE_FIXED64, _REPEATED, ""),
        ("attributes", 9, _F.TYPE_MESSAGE, _OPTIONAL, "KeyValueColumns"),
    ],
    # KeyValue { string key = 1; AnyValue value = 2; } (keys are checked as UTF-8
    # once per distinct layout, by KeyList)
    "KeyValueColumns": [
        ("key", 1, _F.TYPE_BYTES, _REPEATED, ""),
        ("value", 2, _F.TYPE_BYTES, _REPEATED, ""),
    ],
    # Span { bytes trace_id = 1; bytes span_id = 2; bytes parent_span_id = 4; }:
    # every id of a request's spans, joined, read in one call (processor.wire.strict)
    # (links = 13 declared as one message, so every link's ids merge into one list)
    "SpanIds": [
        ("trace_id", 1, _F.TYPE_BYTES, _REPEATED, ""),
        ("span_id", 2, _F.TYPE_BYTES, _REPEATED, ""),
        ("parent_span_id", 4, _F.TYPE_BYTES, _REPEATED, ""),
        ("links", 13, _F.TYPE_MESSAGE, _OPTIONAL, "LinkIds"),
    ],
    # Span.Link { bytes trace_id = 1; bytes span_id = 2; }
    "LinkIds": [
        ("trace_id", 1, _F.TYPE_BYTES, _REPEATED, ""),
        ("span_id", 2, _F.TYPE_BYTES, _REPEATED, ""),
    ],
    # The keys of one span's attributes, read back from their encoding.
    "KeyList": [("key", 1, _F.TYPE_STRING, _REPEATED, "")],
    # A message kept as it came (its fields unknown). Unlike a bytes field, one that
    # occurs twice merges, as the real Resource or InstrumentationScope would.
    "Opaque": [],
}


def _build() -> dict[str, Any]:
    file = descriptor_pb2.FileDescriptorProto(
        name="user_enricher/views.proto", package=_PACKAGE, syntax="proto3"
    )
    for name, fields in _MESSAGES.items():
        message = file.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            field = message.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = f".{_PACKAGE}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in _MESSAGES
    }


_CLASSES = _build()
RequestView: Any = _CLASSES["RequestView"]
SpanColumns: Any = _CLASSES["SpanColumns"]
KeyList: Any = _CLASSES["KeyList"]
SpanIds: Any = _CLASSES["SpanIds"]
