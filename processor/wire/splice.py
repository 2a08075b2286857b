"""Writing a request back with bytes appended to its spans, without a decode (pure).

The column path appends each span's encoded attribution to the span as it came
(a protobuf parser merges repeated fields, so appended attributes join the
span's own) and leaves held spans out. :func:`splice` frames the request by hand
when it can prove the framing is the received one; :func:`rewrite` lets the C
encoder of the request view fix every length prefix otherwise.
"""

from __future__ import annotations

from itertools import chain
from operator import add
from typing import Any

from processor.wire.encoding import (
    PREFIXED,
    SPAN_PREFIX,
    VARINT_SIZE,
    Origin,
    field,
    field_size,
    varint,
)
from processor.wire.received import Received


def origins(received: Received) -> list[Origin]:
    """The resource and scope of every span, in request order."""
    out: list[Origin] = []
    for rs, frame in zip(received.view.resource_spans, received.frames(), strict=True):
        for ss, scope in zip(rs.scope_spans, frame.scopes, strict=True):
            origin = Origin(frame.resource, rs.schema_url, scope, ss.schema_url)
            out.extend([origin] * len(ss.spans))
    return out


def rewrite(view: Any, extras: list[bytes], held: set[int]) -> bytes:
    """The request with ``extras[i]`` appended to span ``i`` and held spans left out."""
    at = 0
    for rs in view.resource_spans:
        for ss in rs.scope_spans:
            spans = ss.spans
            count = len(spans)
            mine = extras[at : at + count]
            if held:
                kept = [
                    s + x
                    for i, (s, x) in enumerate(zip(spans, mine, strict=True), at)
                    if i not in held
                ]
            else:
                kept = list(map(add, spans, mine))
            spans[:] = kept
            at += count
        _drop_empty(rs.scope_spans)
    _drop_empty(view.resource_spans, "scope_spans")
    return bytes(view.SerializeToString())


def splice(received: Received, extras: list[bytes]) -> bytes | None:
    """The received bytes with ``extras[i]`` appended to span ``i``, framed by hand.

    Only the length prefixes change, so each span is copied once. None when the
    request holds anything the view does not know at the request, resource or
    scope level (the same framing of the spans as received would not give the
    received size), or a span too large for the prefix table: :func:`rewrite`
    handles those.
    """
    spans = received.span_bytes()
    lengths = list(map(len, spans))
    grown = list(map(add, lengths, map(len, extras)))
    if not grown or max(grown) >= PREFIXED:
        return None
    prefixes = list(map(SPAN_PREFIX.__getitem__, grown))
    pieces: list[bytes] = []  # the whole request, joined once at the end
    original = 0  # the size of the request as received, framed the same way
    at = 0
    for rs, frame in zip(received.view.resource_spans, received.frames(), strict=True):
        first = [] if frame.resource is None else [field(b"\x0a", frame.resource)]
        last = [field(b"\x1a", rs.schema_url.encode())] if rs.schema_url else []
        body: list[bytes] = []
        rs_new = rs_original = sum(map(len, first)) + sum(map(len, last))
        for ss, scope in zip(rs.scope_spans, frame.scopes, strict=True):
            end = at + count if (count := len(ss.spans)) else at
            head = [] if scope is None else [field(b"\x0a", scope)]
            tail = [field(b"\x1a", ss.schema_url.encode())] if ss.schema_url else []
            framing = sum(map(len, head)) + sum(map(len, tail))
            own, mine = lengths[at:end], prefixes[at:end]
            ss_new = framing + sum(grown[at:end]) + sum(map(len, mine))
            ss_original = framing + count + sum(own) + sum(map(VARINT_SIZE.__getitem__, own))
            body.append(b"\x12" + varint(ss_new))
            body.extend(head)
            body.extend(chain.from_iterable(zip(mine, spans[at:end], extras[at:end], strict=True)))
            body.extend(tail)
            rs_new += field_size(ss_new)
            rs_original += field_size(ss_original)
            at = end
        pieces.append(b"\x0a" + varint(rs_new))
        pieces.extend(first)
        pieces.extend(body)
        pieces.extend(last)
        original += field_size(rs_original)
    if original != len(received.raw):
        return None
    return b"".join(pieces)


def _drop_empty(items: Any, field: str = "spans") -> None:
    """Remove the entries of a repeated message field left with no ``field``."""
    for index in range(len(items) - 1, -1, -1):
        if not len(getattr(items[index], field)):
            del items[index]
