"""The rule at the door: accept a request only if a strict OTLP decoder would (pure).

Jaeger and the Collector decode what we forward strictly: wire structure, field
types, UTF-8 in every string, and trace/span ids of exactly 16/8 bytes (or
empty). A request the service acknowledges must get through them, so it is
checked here, before it is acknowledged, with two C-level parses: the full
``ExportTraceServiceRequest`` (structure, types, UTF-8) and one :data:`SpanIds`
view over every span joined (the ids, in one call). Only on a failure are the
spans walked, to name the first bad one.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from processor.wire.views import SpanIds

_ID_SIZES = (("trace_id", 16), ("span_id", 8), ("parent_span_id", 8))
_LINK_ID_SIZES = (("trace_id", 16), ("span_id", 8))


def check_request(raw: bytes) -> ExportTraceServiceRequest:
    """The full decode of ``raw``; raises ``DecodeError`` when a strict decoder would."""
    return ExportTraceServiceRequest.FromString(raw)


def check_ids(spans: Sequence[bytes]) -> None:
    """Raise ``DecodeError`` naming the first span whose ids have the wrong length."""
    ids = SpanIds.FromString(b"".join(spans))
    if not (_sized(ids, _ID_SIZES) and _sized(ids.links, _LINK_ID_SIZES)):
        raise DecodeError(_first_bad(spans))


def _sized(ids: object, sizes: tuple[tuple[str, int], ...]) -> bool:
    """Whether every id listed in ``ids`` is empty or of its size."""
    return all(set(map(len, getattr(ids, name))) <= {0, size} for name, size in sizes)


def _first_bad(spans: Sequence[bytes]) -> str:
    """Which span has which id of the wrong length (the slow path, on failure only)."""
    for index, span in enumerate(spans):
        ids = SpanIds.FromString(span)
        for owner, names, sizes in (("", ids, _ID_SIZES), ("links.", ids.links, _LINK_ID_SIZES)):
            for name, size in sizes:
                for value in getattr(names, name):
                    if len(value) not in (0, size):
                        return (
                            f"span {index}: {owner}{name} has {len(value)} bytes, expected {size}"
                        )
    return "a span id has the wrong length"  # pragma: no cover - check_ids found one
