"""OTLP/JSON: the JSON encoding of OTLP/HTTP requests and responses (pure functions).

OTLP/JSON is the protobuf JSON mapping with changes (OTLP spec, "JSON Protobuf
Encoding"), so ``google.protobuf.json_format`` cannot parse it as is:

- ``traceId``, ``spanId`` and ``parentSpanId`` (spans and links) are hex strings,
  in either case, not base64; an empty string means "not set";
- enums are integers (names are accepted too, as protobuf's parser does);
- 64-bit integers may be JSON numbers or decimal strings;
- keys are lowerCamelCase (the proto field names, ``trace_id``, are accepted too);
- unknown keys are ignored (the spec requires it, for forward compatibility).

The decoder walks the message descriptors itself so that an error names the JSON
path of the offending value, such as
``resourceSpans[0].scopeSpans[0].spans[3].traceId: expected 32 hex digits``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from functools import cache
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.rpc import status_pb2  # type: ignore[import-untyped, unused-ignore]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from processor.errors import InvalidInput, Problem

__all__ = ["MAX_DEPTH", "decode_json", "encode_json_response", "encode_json_status"]

# Nesting bound on messages (protobuf's own default recursion limit): attribute
# values nest (arrays, key-value lists), and a hostile body must not exhaust the stack.
MAX_DEPTH = 100

_F = FieldDescriptor

# Bytes fields carried as hex in OTLP/JSON, with their length in bytes.
_HEX_IDS = {"trace_id": 16, "span_id": 8, "parent_span_id": 8}
_HEX_PACKAGE = "opentelemetry.proto.trace.v1."

_INT_RANGES = {
    _F.TYPE_INT32: (-(2**31), 2**31 - 1),
    _F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    _F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    _F.TYPE_UINT32: (0, 2**32 - 1),
    _F.TYPE_FIXED32: (0, 2**32 - 1),
    _F.TYPE_INT64: (-(2**63), 2**63 - 1),
    _F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    _F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    _F.TYPE_UINT64: (0, 2**64 - 1),
    _F.TYPE_FIXED64: (0, 2**64 - 1),
}
_ENUM_RANGE = _INT_RANGES[_F.TYPE_INT32]

_INT_STRING = re.compile(r"-?[0-9]+")
_NUMBER_STRING = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_SPECIAL_DOUBLES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_HEX = re.compile(r"[0-9A-Fa-f]*")
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")


class _Invalid(Exception):
    """One problem at one JSON path (turned into InvalidInput at the top)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def decode_json(body: bytes) -> ExportTraceServiceRequest:
    """Parse an OTLP/JSON ``ExportTraceServiceRequest``; InvalidInput names what is wrong."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput([Problem("", f"body is not UTF-8 (byte {exc.start})")]) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f" at line {exc.lineno}, column {exc.colno}"
        raise InvalidInput([Problem("", f"malformed JSON: {exc.msg}{where}")]) from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        raise InvalidInput([Problem("", f"malformed JSON: {exc}")]) from None
    request = ExportTraceServiceRequest()
    try:
        _merge(data, request, "", 0)
    except _Invalid as exc:
        raise InvalidInput([Problem(exc.path, exc.message)]) from None
    return request


def encode_json_response(response: ExportTraceServiceResponse) -> bytes:
    """An ``ExportTraceServiceResponse`` as OTLP/JSON (``{}`` when all was accepted)."""
    return _dumps(response)


def encode_json_status(status: Any) -> bytes:
    """A ``google.rpc.Status`` (details included) as JSON, for OTLP/HTTP error bodies."""
    if not isinstance(status, status_pb2.Status):
        raise TypeError("expected a google.rpc.Status")
    return _dumps(status)


def _dumps(message: Message) -> bytes:
    data = json_format.MessageToDict(message)
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# --------------------------------------------------------------------------- the walk


@cache
def _fields(descriptor: Descriptor) -> Mapping[str, FieldDescriptor]:
    """The fields of a message by JSON name and by proto name."""
    by_key: dict[str, FieldDescriptor] = {}
    for field in descriptor.fields:
        by_key[field.json_name] = field
        by_key[field.name] = field
    return by_key


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _merge(data: Any, message: Message, path: str, depth: int) -> None:
    """Fill ``message`` from the JSON object ``data`` found at ``path``."""
    if not isinstance(data, dict):
        raise _Invalid(path, "expected an object" if path else "expected a JSON object")
    if depth >= MAX_DEPTH:
        raise _Invalid(path, f"nested more than {MAX_DEPTH} levels deep")
    fields = _fields(message.DESCRIPTOR)
    seen: dict[str, str] = {}  # field name or oneof name -> the key that set it
    for key, value in data.items():
        field = fields.get(key)
        if field is None or value is None:  # unknown keys are ignored; null means unset
            continue
        at = _join(path, key)
        for slot in (field.name, field.containing_oneof and field.containing_oneof.name):
            if not slot:
                continue
            if slot in seen:
                raise _Invalid(at, f"conflicts with {seen[slot]!r} (only one may be set)")
            seen[slot] = key
        if field.is_repeated:
            _merge_list(value, message, field, at, depth)
        elif field.type == _F.TYPE_MESSAGE:
            child = getattr(message, field.name)
            child.SetInParent()  # {} still sets a oneof member such as arrayValue
            _merge(value, child, at, depth + 1)
        else:
            setattr(message, field.name, _scalar(value, field, at))


def _merge_list(
    value: Any, message: Message, field: FieldDescriptor, path: str, depth: int
) -> None:
    if not isinstance(value, list):
        raise _Invalid(path, "expected a list")
    target = getattr(message, field.name)
    for index, item in enumerate(value):
        at = f"{path}[{index}]"
        if item is None:
            raise _Invalid(at, "null is not allowed in a list")
        if field.type == _F.TYPE_MESSAGE:
            _merge(item, target.add(), at, depth + 1)
        else:
            target.append(_scalar(item, field, at))


def _scalar(value: Any, field: FieldDescriptor, path: str) -> Any:
    """The Python value of a non-message field, checked against the field's type."""
    kind = field.type
    if kind in _INT_RANGES:
        return _integer(value, _INT_RANGES[kind], path)
    if kind == _F.TYPE_STRING:
        if not isinstance(value, str):
            raise _Invalid(path, "expected a string")
        return value
    if kind == _F.TYPE_BOOL:
        if not isinstance(value, bool):
            raise _Invalid(path, "expected true or false")
        return value
    if kind in (_F.TYPE_DOUBLE, _F.TYPE_FLOAT):
        return _double(value, path)
    if kind == _F.TYPE_ENUM:
        return _enum(value, field, path)
    if kind == _F.TYPE_BYTES:
        length = _HEX_IDS.get(field.name)
        if length is not None and field.full_name.startswith(_HEX_PACKAGE):
            return _hex_id(value, length, path)
        return _base64(value, path)
    raise _Invalid(path, f"unsupported field type {kind}")  # pragma: no cover - no such field


def _integer(value: Any, bounds: tuple[int, int], path: str) -> int:
    """An integer given as a JSON number or a decimal string, within ``bounds``."""
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float):
        number = int(value) if value.is_integer() else None
    elif isinstance(value, str):
        if _INT_STRING.fullmatch(value):
            number = int(value)
        elif _NUMBER_STRING.fullmatch(value):
            as_float = float(value)
            number = int(as_float) if as_float.is_integer() else None
    if number is None:
        raise _Invalid(path, "expected an integer (a JSON number or a decimal string)")
    low, high = bounds
    if not low <= number <= high:
        raise _Invalid(path, f"integer out of range {low}..{high}")
    return number


def _double(value: Any, path: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        if value in _SPECIAL_DOUBLES:
            return _SPECIAL_DOUBLES[value]
        if _NUMBER_STRING.fullmatch(value):
            return float(value)
    raise _Invalid(path, 'expected a number (or "NaN", "Infinity", "-Infinity")')


def _enum(value: Any, field: FieldDescriptor, path: str) -> int:
    enum = field.enum_type
    assert enum is not None  # an enum field always has its type
    if isinstance(value, str):
        named = enum.values_by_name.get(value)
        if named is None:
            raise _Invalid(path, f"unknown {enum.name} name {value!r}")
        number: int = named.number
        return number
    try:
        return _integer(value, _ENUM_RANGE, path)
    except _Invalid:
        raise _Invalid(path, f"expected a {enum.name} number") from None


def _hex_id(value: Any, length: int, path: str) -> bytes:
    """A trace or span id: ``2 * length`` hex digits in either case, or "" for unset."""
    digits = 2 * length
    if not isinstance(value, str):
        raise _Invalid(path, f"expected a string of {digits} hex digits")
    if value == "":
        return b""
    if len(value) != digits:
        raise _Invalid(path, f"expected {digits} hex digits, got {len(value)} characters")
    if not _HEX.fullmatch(value):
        raise _Invalid(path, f"expected {digits} hex digits, got a non-hex character")
    return bytes.fromhex(value)


def _base64(value: Any, path: str) -> bytes:
    """Standard or URL-safe base64, padding optional (protobuf's JSON mapping)."""
    if not isinstance(value, str):
        raise _Invalid(path, "expected a base64 string")
    if not _BASE64.fullmatch(value) or len(value.rstrip("=")) % 4 == 1:
        raise _Invalid(path, "expected base64")
    text = value.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:  # pragma: no cover - excluded by the checks above
        raise _Invalid(path, "expected base64") from None
