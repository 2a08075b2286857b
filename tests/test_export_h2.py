"""The gzip sender's own HTTP/2 transport: against a real grpc.aio server, and its pure parts.

test_export_grpc.py runs every sender behaviour under both compressions; this file
covers what only the HTTP/2 transport has: flow control past the first window, the
server's stream limit, reconnecting, and reading answers the way the gRPC spec says.
"""

from __future__ import annotations

import asyncio
import gzip
import os
from base64 import b64encode
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import (
    add_TraceServiceServicer_to_server,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from test_export_grpc import Fail, Sink, _free_port, _payload, _retry_info_trailers, _serve

from processor.export import ExportFailed, OtlpGrpcSender
from processor.export.config import ExporterConfig
from processor.export.grpc_frames import (
    Answer,
    answer_of,
    frame_gzip,
    grpc_timeout,
    reset_failure,
)

_S = grpc.StatusCode


def _big_payload(size: int) -> bytes:
    """A request carrying ``size`` random (incompressible) bytes in one attribute."""
    blob = AnyValue(bytes_value=os.urandom(size))
    span = Span(trace_id=bytes(range(16)), span_id=bytes(range(8)), name="big")
    span.attributes.append(KeyValue(key="blob", value=blob))
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
    )
    return bytes(request.SerializeToString())


async def test_a_request_larger_than_the_first_window_arrives_whole() -> None:
    """3 MiB that gzip cannot shrink: sent under flow control, received byte for byte."""
    sink = Sink()
    payload = _big_payload(3 * 1024 * 1024)
    async with _serve(sink) as target:
        sender = OtlpGrpcSender(ExporterConfig(endpoint=target, insecure=True))
        await sender.start()
        try:
            await sender.send(payload)
        finally:
            await sender.shutdown()
    assert [r.SerializeToString() for r in sink.requests] == [payload]


async def test_more_calls_than_the_server_allows_at_once_all_arrive() -> None:
    """With one stream allowed at a time, twelve concurrent sends wait their turn."""
    sink = Sink()
    payloads = [_big_payload(64 * 1024 + n) for n in range(12)]
    async with _serve(sink, options=[("grpc.max_concurrent_streams", 1)]) as target:
        sender = OtlpGrpcSender(ExporterConfig(endpoint=target, insecure=True))
        await sender.start()
        try:
            await asyncio.gather(*(sender.send(p) for p in payloads))
        finally:
            await sender.shutdown()
    assert sorted(r.SerializeToString() for r in sink.requests) == sorted(payloads)


async def _server_on(port: int, sink: Sink) -> grpc.aio.Server:
    server = grpc.aio.server()
    add_TraceServiceServicer_to_server(sink, server)  # type: ignore[no-untyped-call]
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


async def test_a_restarted_collector_is_reached_again() -> None:
    """Collector gone: a retryable UNAVAILABLE; back on the same port: delivered again."""
    port = _free_port()
    first, second = Sink(), Sink()
    sender = OtlpGrpcSender(ExporterConfig(endpoint=f"127.0.0.1:{port}", insecure=True))
    await sender.start()
    try:
        server = await _server_on(port, first)
        await sender.send(_payload())
        await server.stop(None)
        with pytest.raises(ExportFailed) as caught:
            await sender.send(_payload())
        assert (caught.value.code, caught.value.retryable) == ("UNAVAILABLE", True)
        server = await _server_on(port, second)
        try:
            await sender.send(_payload())
        finally:
            await server.stop(None)
    finally:
        await sender.shutdown()
    assert (len(first.requests), len(second.requests)) == (1, 1)


async def test_status_and_retry_hint_come_from_the_trailers() -> None:
    """The server's RESOURCE_EXHAUSTED with RetryInfo: retryable after its delay."""
    sink = Sink()
    sink.script = [Fail(_S.RESOURCE_EXHAUSTED, _retry_info_trailers(3)), Fail(_S.UNAUTHENTICATED)]
    async with _serve(sink) as target:
        sender = OtlpGrpcSender(ExporterConfig(endpoint=target, insecure=True))
        await sender.start()
        try:
            with pytest.raises(ExportFailed) as throttled:
                await sender.send(_payload())
            with pytest.raises(ExportFailed) as refused:
                await sender.send(_payload())
        finally:
            await sender.shutdown()
    assert (throttled.value.code, throttled.value.min_delay) == ("RESOURCE_EXHAUSTED", 3.0)
    assert "scripted failure" in str(refused.value)
    assert (refused.value.code, refused.value.retryable) == ("UNAUTHENTICATED", False)


class PeerSink(Sink):
    """A sink that also records the client address of each call."""

    def __init__(self) -> None:
        super().__init__()
        self.peers: list[str] = []

    async def Export(
        self, request: ExportTraceServiceRequest, context: Any
    ) -> ExportTraceServiceResponse:
        self.peers.append(context.peer())
        return await super().Export(request, context)


async def test_a_goaway_moves_later_calls_to_a_new_connection() -> None:
    """A collector that ends connections after 50 ms (GOAWAY): every call still succeeds."""
    sink = PeerSink()
    options = [("grpc.max_connection_age_ms", 50), ("grpc.max_connection_age_grace_ms", 60_000)]
    async with _serve(sink, options=options) as target:
        sender = OtlpGrpcSender(ExporterConfig(endpoint=target, insecure=True))
        await sender.start()
        try:
            async with asyncio.timeout(20):
                while len(set(sink.peers)) < 3:  # raises if a call is lost to a GOAWAY
                    await asyncio.gather(*(sender.send(_payload()) for _ in range(4)))
        finally:
            await sender.shutdown()
    assert len(sink.requests) == len(sink.peers)


async def test_a_peer_that_does_not_speak_http2_is_retryable_unavailable() -> None:
    """Garbage instead of HTTP/2 SETTINGS: the call fails retryably, nothing hangs."""

    async def babble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(babble, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        settings = ExporterConfig(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=20.0)
        sender = OtlpGrpcSender(settings)
        await sender.start()
        try:
            with pytest.raises(ExportFailed) as caught:
                await sender.send(_payload())
        finally:
            await sender.shutdown()
    finally:
        server.close()
        await server.wait_closed()
    assert (caught.value.code, caught.value.retryable) == ("UNAVAILABLE", True)


# --------------------------------------------------------------------------- pure parts


def _answer(headers: Sequence[tuple[str, str]], trailers: Sequence[tuple[str, str]] = ()) -> Answer:
    answer = Answer()
    answer.headers, answer.trailers = list(headers), list(trailers)
    return answer


def test_the_frame_is_flagged_sized_and_gunzips_to_the_payload() -> None:
    payload = _payload() * 50
    frame = frame_gzip(payload)
    assert frame[0] == 1
    assert int.from_bytes(frame[1:5], "big") == len(frame) - 5
    assert gzip.decompress(frame[5:]) == payload


@pytest.mark.parametrize(
    ("seconds", "header"), [(5.0, "5000m"), (0.0501, "51m"), (1e9, "99999999m")]
)
def test_grpc_timeout_rounds_up_and_caps_at_eight_digits(seconds: float, header: str) -> None:
    assert grpc_timeout(seconds) == header


def test_ok_answer_yields_the_message_plain_or_gzipped() -> None:
    plain = _answer([(":status", "200")], [("grpc-status", "0")])
    plain.data += b"\x00" + (3).to_bytes(4, "big") + b"abc"
    packed = gzip.compress(b"xyz")
    zipped = _answer([(":status", "200"), ("grpc-encoding", "gzip")], [("grpc-status", "0")])
    zipped.data += b"\x01" + len(packed).to_bytes(4, "big") + packed
    empty = _answer([(":status", "200")], [("grpc-status", "0")])
    assert (answer_of(plain), answer_of(zipped), answer_of(empty)) == (b"abc", b"xyz", None)


@pytest.mark.parametrize(
    ("headers", "code", "retryable"),
    [
        ([(":status", "503")], "UNAVAILABLE", True),  # a proxy in front of the collector
        ([(":status", "404")], "UNIMPLEMENTED", False),
        ([(":status", "200")], "UNKNOWN", False),  # no grpc-status at all
        ([(":status", "200"), ("grpc-status", "14")], "UNAVAILABLE", True),  # trailers-only
        ([(":status", "200"), ("grpc-status", "x")], "UNKNOWN", False),
    ],
)
def test_failed_answers_map_as_the_grpc_spec_says(
    headers: list[tuple[str, str]], code: str, retryable: bool
) -> None:
    with pytest.raises(ExportFailed) as caught:
        answer_of(_answer(headers))
    assert (caught.value.code, caught.value.retryable) == (code, retryable)


def test_message_is_percent_decoded_and_binary_trailers_unpadded() -> None:
    details = b64encode(_retry_info_trailers(2)[0][1]).decode().rstrip("=")
    trailers = [
        ("grpc-status", "8"),
        ("grpc-message", "slow%20down%3A%20full"),
        ("grpc-status-details-bin", details),
    ]
    with pytest.raises(ExportFailed) as caught:
        answer_of(_answer([(":status", "200")], trailers))
    assert "slow down: full" in str(caught.value)
    assert (caught.value.retryable, caught.value.min_delay) == (True, 2.0)


@pytest.mark.parametrize(
    ("error_code", "code"),
    [(0x7, "UNAVAILABLE"), (0x8, "CANCELLED"), (0xB, "RESOURCE_EXHAUSTED"), (0x2, "INTERNAL")],
)
def test_stream_resets_map_as_the_grpc_spec_says(error_code: int, code: str) -> None:
    assert reset_failure(error_code).code == code
