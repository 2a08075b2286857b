"""OTLP/gRPC over an HTTP/2 connection of our own, so gzip can be cheap.

grpcio compresses each message itself at zlib's default level and has no way
to send a message that is already compressed. Here the sender frames and gzips
the message itself (:mod:`grpc_frames`: ISA-L level 1, in a worker thread for
large requests) and drives the HTTP/2 connection with h2's state machine on
the event loop.

Only what the unary ``TraceService/Export`` call needs is here: one connection,
streams up to the server's limit, flow control, trailers, GOAWAY and resets.
Failures come out as :class:`ExportFailed`, classified like grpcio's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions
from h2.connection import ConnectionState
from h2.errors import ErrorCodes

from processor.config.scalars import split_endpoint
from processor.export.classify import ExportFailed, export_failed
from processor.export.compress import gzip_body
from processor.export.grpc_frames import (
    MAX_RESPONSE_BYTES,
    Answer,
    answer_of,
    frame_compressed,
    grpc_timeout,
    reset_failure,
    text_pairs,
)


class _GracefulH2(h2.connection.H2Connection):
    """h2's connection, kept open after a GOAWAY for the streams the server will finish.

    h2 takes a received GOAWAY as the connection's end and refuses every later frame
    (python-hyper/h2#1181), so the answers, PINGs and window updates of a server's
    graceful shutdown (gRPC's two GOAWAYs) would fail calls it processes. The caller
    opens no new stream once it has seen a GOAWAY.
    """

    def _receive_goaway_frame(self, frame: Any) -> Any:
        result = super()._receive_goaway_frame(frame)
        self.state_machine.state = ConnectionState.CLIENT_OPEN
        return result


def _unavailable(message: str) -> ExportFailed:
    return export_failed(grpc.StatusCode.UNAVAILABLE, message, None)


class _Stream(Answer):
    """An answer still arriving; ``ended`` resolves once it is whole (or failed)."""

    __slots__ = ("ended",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.ended: asyncio.Future[None] = loop.create_future()

    def end(self, failure: ExportFailed | None = None) -> None:
        if not self.ended.done():
            self.failure = failure
            self.ended.set_result(None)


class H2Connection(asyncio.Protocol):
    """One HTTP/2 client connection carrying unary gRPC calls."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self._h2 = _GracefulH2(config=config)
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, _Stream] = {}
        self._changed: asyncio.Future[None] = loop.create_future()
        # Resolved by the server's first SETTINGS (or the connection's end): until then its
        # stream limit is unknown, and streams opened past it would be refused.
        self.settled: asyncio.Future[None] = loop.create_future()
        self.usable = True  # False once the connection cannot take new streams

    # ----------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._h2.initiate_connection()
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as err:
            self._flush()  # h2 queued a GOAWAY
            self.abort(_unavailable(f"HTTP/2 protocol error from the collector: {err}"))
            return
        for event in events:
            self._on(event)
        self._flush()
        self._signal()
        if not self.usable and not self._streams:
            self.close()  # replaced (GOAWAY, ids used up) and now done

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        reason = f": {exc}" if exc else ""
        self._fail_streams(_unavailable(f"connection to the collector lost{reason}"), 0)
        self._settle()
        self._signal()

    # ----------------------------------------------------------------- calls

    async def unary(self, headers: list[tuple[bytes, bytes]], body: bytes) -> _Stream:
        """Send one request on a new stream and wait for its whole answer."""
        h2c = self._h2
        while h2c.open_outbound_streams >= h2c.remote_settings.max_concurrent_streams:
            self._check_usable()
            await asyncio.shield(self._changed)
        self._check_usable()
        try:
            stream_id = h2c.get_next_available_stream_id()
        except h2.exceptions.NoAvailableStreamIDError:
            self.usable = False  # the caller opens a new connection
            raise _unavailable("stream ids used up on this connection") from None
        stream = self._streams[stream_id] = _Stream(self._loop)
        try:
            h2c.send_headers(stream_id, headers)
            await self._send_body(stream_id, stream, memoryview(body))
            await stream.ended
        except BaseException:
            self._reset(stream_id)
            raise
        return stream

    async def _send_body(self, stream_id: int, stream: _Stream, view: memoryview) -> None:
        h2c = self._h2
        while view:
            if stream.ended.done():
                self._reset(stream_id)  # answered (or failed) before it read everything
                return
            room = min(h2c.local_flow_control_window(stream_id), h2c.max_outbound_frame_size)
            if room <= 0:
                self._flush()
                await asyncio.shield(self._changed)
                continue
            h2c.send_data(stream_id, view[:room].tobytes())
            view = view[room:]
        if not stream.ended.done():
            h2c.end_stream(stream_id)
        self._flush()

    def abort(self, failure: ExportFailed) -> None:
        """Fail every call in flight with ``failure`` and drop the connection."""
        self.usable = False
        self._fail_streams(failure, 0)
        if self._transport is not None:
            self._transport.abort()
        self._signal()

    @property
    def idle(self) -> bool:
        return not self._streams

    async def wait_idle(self) -> None:
        """Return once no call is in flight."""
        while self._streams:
            await asyncio.shield(self._changed)

    def alpn(self) -> str | None:
        """The protocol TLS negotiated (None on plaintext)."""
        if self._transport is None:
            return None
        ssl_object = self._transport.get_extra_info("ssl_object")
        return None if ssl_object is None else ssl_object.selected_alpn_protocol()

    def close(self) -> None:
        self.usable = False
        if self._transport is not None:
            self._transport.close()

    # ----------------------------------------------------------------- internals

    def _on(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.DataReceived):
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.data += event.data
                if len(stream.data) > MAX_RESPONSE_BYTES:
                    stream.end(
                        export_failed(grpc.StatusCode.RESOURCE_EXHAUSTED, "answer too large", None)
                    )
                    self._reset(event.stream_id)
        elif isinstance(event, h2.events.ResponseReceived):
            if (stream := self._streams.get(event.stream_id)) is not None:
                stream.headers = text_pairs(event.headers)
        elif isinstance(event, h2.events.TrailersReceived):
            if (stream := self._streams.get(event.stream_id)) is not None:
                stream.trailers = text_pairs(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            if (stream := self._streams.pop(event.stream_id, None)) is not None:
                stream.end()
        elif isinstance(event, h2.events.StreamReset):
            if (stream := self._streams.pop(event.stream_id, None)) is not None:
                stream.end(reset_failure(int(event.error_code or 0)))
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self._settle()
        elif isinstance(event, h2.events.ConnectionTerminated):
            # GOAWAY: no new streams here; those above last_stream_id were not processed,
            # so retrying them is safe; those at or below it may still complete (RFC 9113,
            # 6.8), which _GracefulH2 lets them do.
            self.usable = False
            detail = f"the collector closed the connection: {event.error_code!r}"
            self._fail_streams(_unavailable(detail), event.last_stream_id or 0)

    def _fail_streams(self, failure: ExportFailed, above: int) -> None:
        for stream_id in [sid for sid in self._streams if sid > above]:
            self._streams.pop(stream_id).end(failure)

    def _reset(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)
        try:
            self._h2.reset_stream(stream_id, ErrorCodes.CANCEL)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return  # already closed on our side
        self._flush()

    def _settle(self) -> None:
        if not self.settled.done():
            self.settled.set_result(None)

    def _check_usable(self) -> None:
        if not self.usable:
            raise _unavailable("the connection to the collector is closing")

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _signal(self) -> None:
        changed, self._changed = self._changed, self._loop.create_future()
        changed.set_result(None)


class H2GrpcChannel:
    """Unary gRPC calls to one endpoint over a (re)connected HTTP/2 connection."""

    def __init__(
        self,
        endpoint: str,
        path: str,
        metadata: tuple[tuple[str, str], ...],
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self._host, self._port = split_endpoint(endpoint)
        self._endpoint = endpoint
        self._ssl = ssl_context
        self._headers = [
            (b":method", b"POST"),
            (b":scheme", b"https" if ssl_context else b"http"),
            (b":path", path.encode()),
            (b":authority", endpoint.encode()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            (b"grpc-encoding", b"gzip"),
            (b"grpc-accept-encoding", b"identity,gzip"),
            (b"user-agent", b"otel-user-enricher"),
            *((key.encode(), value.encode()) for key, value in metadata),
        ]
        self._connection: H2Connection | None = None
        self._connecting = asyncio.Lock()
        self._closed = False

    async def call(self, payload: bytes, time_limit: float | None) -> bytes | None:
        """Export ``payload`` (a serialized request) gzipped; the answer's bytes or None."""
        body = frame_compressed(await gzip_body(payload))
        headers = self._headers
        if time_limit is not None:
            headers = [*headers, (b"grpc-timeout", grpc_timeout(time_limit).encode())]
        try:
            async with asyncio.timeout(time_limit):
                connection = await self._connect()
                stream = await connection.unary(headers, body)
        except TimeoutError:
            raise export_failed(
                grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", None
            ) from None
        return answer_of(stream)

    async def close(self, grace: float | None) -> None:
        """Refuse new calls, let calls in flight end for up to ``grace`` s, then cancel them."""
        self._closed = True
        connection, self._connection = self._connection, None
        if connection is None:
            return
        connection.usable = False
        if grace:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(connection.wait_idle(), grace)
        failure = export_failed(grpc.StatusCode.CANCELLED, "the channel closed", None)
        connection.abort(failure)

    async def _connect(self) -> H2Connection:
        connection = self._connection
        if connection is not None and connection.usable:
            return connection
        async with self._connecting:
            if self._closed:
                raise export_failed(grpc.StatusCode.CANCELLED, "the channel closed", None)
            connection = self._connection
            if connection is not None and connection.usable:
                return connection
            if connection is not None and connection.idle:
                connection.close()
            loop = asyncio.get_running_loop()
            try:
                _, connection = await loop.create_connection(
                    lambda: H2Connection(loop),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
            except (OSError, ssl.SSLError) as err:
                raise _unavailable(f"cannot connect to {self._endpoint}: {err}") from err
            if self._ssl is not None and connection.alpn() != "h2":
                connection.close()
                raise _unavailable(f"{self._endpoint} does not offer HTTP/2 (ALPN h2) over TLS")
            try:
                await connection.settled  # the call's time limit bounds this wait
            except BaseException:
                connection.close()
                raise
            if not connection.usable:
                raise _unavailable(f"{self._endpoint} closed the connection before its settings")
            self._connection = connection
            return connection
