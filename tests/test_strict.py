"""The rule at the door: a request is accepted only if a strict OTLP decoder would accept it."""

from __future__ import annotations

import grpc
import pytest
from correlation_kit import gateway_span, request_of
from fault_kit import EXPORT
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from processor.app.service import Service
from processor.tools.sink import TraceSink
from processor.wire.received import Received


def one_request(**changes: bytes) -> ExportTraceServiceRequest:
    """A gateway-shaped request of three spans; the second has ``changes`` applied."""
    request = request_of(*(gateway_span(trace=n, start=1000 + n) for n in range(1, 4)))
    span = request.resource_spans[0].scope_spans[0].spans[1]
    for name, value in changes.items():
        if name.startswith("link_"):
            link = span.links[0] if span.links else span.links.add()
            setattr(link, name.removeprefix("link_"), value)
        else:
            setattr(span, name, value)
    return request


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"trace_id": b"\x01" * 15}, "span 1: trace_id has 15 bytes, expected 16"),
        ({"span_id": b"\x01" * 9}, "span 1: span_id has 9 bytes, expected 8"),
        ({"parent_span_id": b"\x01" * 4}, "span 1: parent_span_id has 4 bytes, expected 8"),
        ({"link_trace_id": b"\x01" * 3}, "span 1: links.trace_id has 3 bytes, expected 16"),
        ({"link_span_id": b"\x01" * 7}, "span 1: links.span_id has 7 bytes, expected 8"),
    ],
)
def test_ids_of_the_wrong_length_are_refused_naming_the_span(
    changes: dict[str, bytes], message: str
) -> None:
    """Ids of the wrong size are refused, and the message says which span and id."""
    with pytest.raises(DecodeError, match=message):
        Received.parse(one_request(**changes).SerializeToString())


def test_empty_ids_and_right_sizes_pass() -> None:
    """Empty ids (proto3 defaults) and ids of their size are accepted."""
    raw = one_request(parent_span_id=b"", link_trace_id=b"\x02" * 16).SerializeToString()
    assert Received.parse(raw).spans == 3


def test_bad_utf8_in_a_span_string_is_refused() -> None:
    """A span name that is not UTF-8 is refused (Jaeger: "String field had bad UTF-8")."""
    raw = one_request().SerializeToString()
    name = b"POST /*"
    assert name in raw
    corrupt = raw.replace(name, b"POST \xff*", 1)
    with pytest.raises(DecodeError):
        Received.parse(corrupt)


async def test_the_service_refuses_what_the_sink_would(service: Service, sink: TraceSink) -> None:
    """INVALID_ARGUMENT for a bad id; a good request after it is delivered."""
    async with grpc.aio.insecure_channel(service.addresses.grpc) as channel:
        call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(one_request(span_id=b"\x01" * 9).SerializeToString(), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "span_id has 9 bytes" in (caught.value.details() or "")
        await call(one_request().SerializeToString(), timeout=10)
    assert len(await sink.wait_for_spans(3)) == 3
