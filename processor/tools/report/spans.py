"""Jaeger query responses -> :class:`SpanRecord`, one shape for both APIs (pure).

The legacy API (``/api/traces``) answers ``{"data": [trace, ...]}`` with Jaeger's own
span model: ``tags`` lists of ``{key, type, value}`` and a ``processes`` map naming
the service. API v3 (``/api/v3/traces``) answers OTLP/JSON wrapped as
``{"result": {"resourceSpans": [...]}}``; older releases streamed several such
objects one after another, so every top-level JSON value in the body is read.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from processor.errors import InvalidInput
from processor.receive.otlp_json import decode_json

__all__ = [
    "NotJSON",
    "Page",
    "ResponseError",
    "SpanRecord",
    "any_value",
    "load_json",
    "parse_legacy",
    "parse_v3",
]

_SERVICE_NAME = "service.name"


class ResponseError(ValueError):
    """A response body that is not what the API documents; the message says how."""


class NotJSON(ResponseError):
    """A response body that is not JSON at all."""


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One span as the report needs it: ids, service, start time and attributes."""

    trace_id: str  # lower-case hex, 32 digits
    span_id: str  # lower-case hex, 16 digits
    service: str
    start_us: int
    attributes: Mapping[str, Any]

    @property
    def key(self) -> tuple[str, str]:
        """What identifies the span across pages: (trace id, span id)."""
        return self.trace_id, self.span_id


@dataclass(frozen=True, slots=True)
class Page:
    """The spans of one query and how many traces the server returned."""

    spans: list[SpanRecord]
    traces: int


# --------------------------------------------------------------------------- legacy


def parse_legacy(body: bytes) -> Page:
    """Spans of a legacy ``/api/traces`` answer."""
    document = load_json(body)
    if not isinstance(document, dict):
        raise ResponseError("expected a JSON object")
    traces = document.get("data") or []
    if not isinstance(traces, list):
        raise ResponseError('"data" is not a list')
    spans: list[SpanRecord] = []
    for index, trace in enumerate(traces):
        if not isinstance(trace, dict):
            raise ResponseError(f"data[{index}] is not an object")
        spans.extend(_legacy_trace(trace, f"data[{index}]"))
    return Page(spans, len(traces))


def _legacy_trace(trace: dict[str, Any], path: str) -> Iterator[SpanRecord]:
    processes = trace.get("processes") or {}
    if not isinstance(processes, dict):
        raise ResponseError(f"{path}.processes is not an object")
    trace_spans = trace.get("spans") or []
    if not isinstance(trace_spans, list):
        raise ResponseError(f"{path}.spans is not a list")
    for index, span in enumerate(trace_spans):
        at = f"{path}.spans[{index}]"
        if not isinstance(span, dict):
            raise ResponseError(f"{at} is not an object")
        process = processes.get(span.get("processID"))
        service = process.get("serviceName", "") if isinstance(process, dict) else ""
        yield SpanRecord(
            trace_id=_hex_id(span.get("traceID", trace.get("traceID")), 32, f"{at}.traceID"),
            span_id=_hex_id(span.get("spanID"), 16, f"{at}.spanID"),
            service=str(service),
            start_us=_int(span.get("startTime"), f"{at}.startTime"),
            attributes=_legacy_tags(span.get("tags"), f"{at}.tags"),
        )


def _legacy_tags(tags: Any, path: str) -> dict[str, Any]:
    if tags is None:
        return {}
    if not isinstance(tags, list):
        raise ResponseError(f"{path} is not a list")
    out: dict[str, Any] = {}
    for tag in tags:
        if isinstance(tag, dict) and isinstance(tag.get("key"), str):
            out[tag["key"]] = tag.get("value")
    return out


def _hex_id(value: Any, digits: int, path: str) -> str:
    """A trace or span id, zero-padded (the legacy API drops leading zeros)."""
    if not isinstance(value, str) or not value:
        raise ResponseError(f"{path} is missing")
    return value.lower().rjust(digits, "0")


def _int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ResponseError(f"{path} is not a number")
    try:
        return int(value)
    except ValueError:
        raise ResponseError(f"{path} is not a number") from None


# --------------------------------------------------------------------------- v3


def parse_v3(body: bytes) -> Page:
    """Spans of an API v3 ``/api/v3/traces`` answer (one object or a stream of them)."""
    spans: list[SpanRecord] = []
    for chunk in _json_values(body):
        if not isinstance(chunk, dict):
            raise ResponseError("expected a JSON object")
        if "error" in chunk:
            raise ResponseError(f"error in the stream: {_error_message(chunk)}")
        result = _normalized(chunk.get("result", chunk))
        try:
            request = decode_json(json.dumps(result).encode())
        except InvalidInput as exc:
            raise ResponseError(f"not OTLP/JSON: {exc}") from None
        spans.extend(_otlp_spans(request))
    return Page(spans, len({span.trace_id for span in spans}))


def _normalized(result: Any) -> Any:
    """``result`` with what older Jaeger releases wrote made OTLP/JSON: span lists
    under ``instrumentationLibrarySpans`` and base64 ids (protobuf's JSON mapping)."""
    if not isinstance(result, dict) or not isinstance(result.get("resourceSpans"), list):
        return result
    for resource_spans in result["resourceSpans"]:
        if not isinstance(resource_spans, dict):
            continue
        if "scopeSpans" not in resource_spans and "instrumentationLibrarySpans" in resource_spans:
            resource_spans["scopeSpans"] = resource_spans.pop("instrumentationLibrarySpans")
        for scope_spans in resource_spans.get("scopeSpans") or []:
            for span in (scope_spans.get("spans") or []) if isinstance(scope_spans, dict) else []:
                if isinstance(span, dict):
                    _hex_ids(span)
    return result


def _hex_ids(span: dict[str, Any]) -> None:
    """Rewrite base64 trace and span ids of ``span`` (in place) as hex."""
    for key, size in (("traceId", 16), ("spanId", 8), ("parentSpanId", 8)):
        value = span.get(key)
        if isinstance(value, str) and value and len(value) != 2 * size:
            try:
                raw = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                continue  # left for the decoder to report
            if len(raw) == size:
                span[key] = raw.hex()


def _otlp_spans(request: ExportTraceServiceRequest) -> Iterator[SpanRecord]:
    for resource_spans in request.resource_spans:
        service = ""
        for kv in resource_spans.resource.attributes:
            if kv.key == _SERVICE_NAME:
                service = kv.value.string_value
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield SpanRecord(
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    service=service,
                    start_us=span.start_time_unix_nano // 1000,
                    attributes={kv.key: any_value(kv.value) for kv in span.attributes},
                )


def any_value(value: AnyValue) -> Any:
    """The Python value of an OTLP ``AnyValue`` (bytes as hex, like Jaeger shows them)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    if kind is None:
        return None
    return getattr(value, kind)


def _error_message(document: dict[str, Any]) -> str:
    error = document.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error.get("httpCode") or error)
    return str(error)


# --------------------------------------------------------------------------- JSON


def load_json(body: bytes) -> Any:
    """``body`` parsed as one JSON value; NotJSON when it is not JSON."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise NotJSON(_json_problem(exc)) from None


def _json_values(body: bytes) -> Iterator[Any]:
    """Every top-level JSON value in ``body``: one object, or several (newline-delimited)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise NotJSON("body is not UTF-8") from None
    decoder = json.JSONDecoder()
    position, found = 0, False
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            break
        try:
            value, position = decoder.raw_decode(text, position)
        except (ValueError, RecursionError) as exc:
            raise NotJSON(_json_problem(exc)) from None
        found = True
        yield value
    if not found:
        raise NotJSON("empty body")


def _json_problem(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
    return str(exc)
