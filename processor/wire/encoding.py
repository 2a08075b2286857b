"""Assembling an ExportTraceServiceRequest from serialized parts, without a decode.

Held spans wait as bytes; when they are released they are sent in a new request
built here from their resource and scope bytes. The encoding is the protobuf
wire format of ``opentelemetry.proto.collector.trace.v1``:

    ExportTraceServiceRequest { 1: repeated ResourceSpans }
    ResourceSpans { 1: Resource, 2: repeated ScopeSpans, 3: string schema_url }
    ScopeSpans    { 1: InstrumentationScope, 2: repeated Span, 3: string schema_url }
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain

_F1, _F2, _F3 = b"\x0a", b"\x12", b"\x1a"  # fields 1-3, wire type 2 (length-delimited)


def varint(n: int) -> bytes:
    """``n`` as a protobuf varint."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: ``tag``, the length of ``payload``, ``payload``."""
    return tag + varint(len(payload)) + payload


def field_size(length: int) -> int:
    """The encoded size of a length-delimited field with a one-byte tag."""
    return 1 + len(varint(length)) + length


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a span sat: its resource and scope, serialized (None when absent)."""

    resource: bytes | None
    resource_schema_url: str
    scope: bytes | None
    scope_schema_url: str


# For spans under 16 KiB: a span field's prefix (ScopeSpans tag 2, length) and the
# varint size of the length, from tables.
PREFIXED = 1 << 14
SPAN_PREFIX = [_F2 + varint(n) for n in range(PREFIXED)]
VARINT_SIZE = [len(prefix) - 1 for prefix in SPAN_PREFIX]


def _span_field(span: bytes) -> bytes:
    n = len(span)
    return SPAN_PREFIX[n] + span if n < PREFIXED else field(_F2, span)


def _scope_spans(origin: Origin, spans: Sequence[bytes]) -> list[bytes]:
    """One ScopeSpans' encoded parts, in order (joined by the caller)."""
    parts = [] if origin.scope is None else [field(_F1, origin.scope)]
    lengths = list(map(len, spans))
    if lengths and max(lengths) < PREFIXED:  # every prefix from the table, in C
        prefixes = map(SPAN_PREFIX.__getitem__, lengths)
        parts.extend(chain.from_iterable(zip(prefixes, spans, strict=True)))
    else:
        parts.extend(map(_span_field, spans))
    if origin.scope_schema_url:
        parts.append(field(_F3, origin.scope_schema_url.encode()))
    return parts


def build_request(groups: Iterable[tuple[Origin, Sequence[bytes]]]) -> bytes:
    """Serialized request holding each group's spans under its resource and scope.

    Groups sharing a resource are placed under one ResourceSpans. Each level's
    length prefix comes from its parts' sizes, so the spans are copied once, by
    one join.
    """
    by_resource: dict[tuple[bytes | None, str], list[bytes]] = {}
    for origin, spans in groups:
        parts = _scope_spans(origin, spans)
        scopes = by_resource.setdefault((origin.resource, origin.resource_schema_url), [])
        scopes.append(_F2 + varint(sum(map(len, parts))))
        scopes.extend(parts)
    out: list[bytes] = []
    for (resource, schema_url), scopes in by_resource.items():
        if resource is not None:
            scopes.insert(0, field(_F1, resource))
        if schema_url:
            scopes.append(field(_F3, schema_url.encode()))
        out.append(_F1 + varint(sum(map(len, scopes))))
        out.extend(scopes)
    return b"".join(out)
