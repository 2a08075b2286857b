"""One Export request as received: its bytes, a cheap view of its structure, and a
full decode only when something needs it (pure)."""

from __future__ import annotations

from typing import Any, NamedTuple

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from processor.wire.columns import ColumnReader, Columns
from processor.wire.strict import check_ids, check_request
from processor.wire.views import RequestView


class Frame(NamedTuple):
    """One ResourceSpans around the spans: its resource and scopes, encoded and checked."""

    resource: bytes | None  # the Resource, encoded (None: absent)
    decoded: Resource  # the same, decoded (empty when absent)
    scopes: list[bytes | None]  # each ScopeSpans' InstrumentationScope, encoded


class Received:
    """An ExportTraceServiceRequest kept as bytes plus a :data:`RequestView` of them.

    The view (the structure decoded, resources, scopes and spans left as they
    came) costs a small part of a full decode; :meth:`message` decodes in full, once, for the paths
    that need every field.
    """

    __slots__ = ("_columns", "_frames", "_message", "_spans", "raw", "spans", "view")

    def __init__(self, raw: bytes, view: Any) -> None:
        self.raw = raw
        self.view = view
        self.spans: int = sum(len(ss.spans) for rs in view.resource_spans for ss in rs.scope_spans)
        self._message: ExportTraceServiceRequest | None = None
        self._spans: list[bytes] | None = None
        self._frames: list[Frame] | None = None
        self._columns: tuple[ColumnReader, Columns | None] | None = None

    @classmethod
    def parse(cls, raw: bytes) -> Received:
        """Read the request's structure; raises ``DecodeError`` when it is not one
        a strict OTLP decoder accepts (see :mod:`processor.wire.strict`)."""
        check_request(raw)  # not kept: the column path needs no full decode
        received = cls(raw, RequestView.FromString(raw))
        if received.spans:
            check_ids(received.span_bytes())
        return received

    @classmethod
    def of(cls, request: ExportTraceServiceRequest) -> Received:
        """A received request from a message (tests, and the OTLP/JSON receiver)."""
        received = cls.parse(request.SerializeToString())
        received._message = request
        return received

    def message(self) -> ExportTraceServiceRequest:
        """The full decode (cached); raises ``DecodeError`` for a malformed span."""
        if self._message is None:
            self._message = ExportTraceServiceRequest.FromString(self.raw)
        return self._message

    def frames(self) -> list[Frame]:
        """Each resource and its scopes (cached); raises ``DecodeError`` when one of
        them does not decode, as the full decode would."""
        if self._frames is None:
            frames = []
            for rs in self.view.resource_spans:
                resource = rs.resource.SerializeToString() if rs.HasField("resource") else None
                decoded = Resource.FromString(resource or b"")
                scopes = [
                    ss.scope.SerializeToString() if ss.HasField("scope") else None
                    for ss in rs.scope_spans
                ]
                for scope in scopes:
                    if scope:
                        InstrumentationScope.FromString(scope)
                frames.append(Frame(resource, decoded, scopes))
            self._frames = frames
        return self._frames

    def span_bytes(self) -> list[bytes]:
        """Every span, serialized, in request order (cached; do not change the list)."""
        if self._spans is None:
            out: list[bytes] = []
            for rs in self.view.resource_spans:
                for ss in rs.scope_spans:
                    out.extend(ss.spans)
            self._spans = out
        return self._spans

    def columns(self, reader: ColumnReader) -> Columns | None:
        """The spans' columns as ``reader`` reads them (cached per reader)."""
        if self._columns is None or self._columns[0] is not reader:
            self._columns = (reader, reader.read(self.span_bytes()))
        return self._columns[1]
