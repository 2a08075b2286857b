"""Send link of the export chain: OTLP/gRPC ``TraceService/Export``.

With ``compression: gzip`` (the default) calls go through :mod:`h2_grpc`, which
frames and gzips each message itself (ISA-L level 1, off the loop for large
requests): grpcio would compress at zlib's default level, several times the cost.
Without compression the ``grpc.aio`` channel serves.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import structlog
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from processor.errors import ConfigError, Problem
from processor.export.classify import (
    SHUTDOWN_CODE,
    ExportFailed,
    export_failed,
)
from processor.export.client_tls import client_context
from processor.export.config import ExporterConfig
from processor.export.h2_grpc import H2GrpcChannel

_log = structlog.get_logger(__name__)

# OTLP spec, "OTLP/gRPC": the unary method every trace receiver implements.
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


# on_partial_success(rejected_spans, error_message): called when the server accepted
# the request but rejected some spans (OTLP spec, "Partial Success").
PartialSuccessHook = Callable[[int, str], None]


# The largest request this sender hands gRPC (the merged batches stay far below it).
MAX_SEND_BYTES = 64 * 1024 * 1024


class OtlpGrpcSender:
    """Sender exporting serialized ``ExportTraceServiceRequest`` bytes over one gRPC channel.

    ``send`` raises :class:`ExportFailed` (a DownstreamError) classified per the OTLP spec.
    Spans the server rejects in a partial success are not an error: they are logged
    (``export_partial_success``), added to :attr:`rejected_spans_total` and passed to
    ``on_partial_success``.
    """

    def __init__(
        self,
        settings: ExporterConfig,
        *,
        on_partial_success: PartialSuccessHook | None = None,
    ) -> None:
        self._settings = settings
        self._on_partial_success = on_partial_success
        self._metadata = tuple((k.lower(), v) for k, v in settings.headers.items()) or None
        self._channel: grpc.aio.Channel | H2GrpcChannel | None = None
        self._export: Callable[[bytes, float | None], Awaitable[Any]] | None = None
        self._rejected_spans_total = 0

    @property
    def rejected_spans_total(self) -> int:
        """Spans the server rejected in partial successes since construction."""
        return self._rejected_spans_total

    async def start(self) -> None:
        """Open the channel; raises ConfigError if ``ca_file`` cannot be read."""
        if self._channel is not None:
            return
        if self._settings.compression == "gzip":
            self._start_h2(await client_context(self._settings, alpn=["h2"]))
            return
        channel = self._open_channel(await self._credentials())
        # request_serializer=None: the payload is already a serialized request and goes
        # on the wire as-is; only the (tiny) response is decoded.
        call = channel.unary_unary(
            EXPORT_METHOD,
            request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        self._channel = channel
        metadata = self._metadata

        def export(payload: bytes, timeout: float | None) -> Awaitable[Any]:
            return call(payload, timeout=timeout, metadata=metadata)  # type: ignore[no-any-return]

        self._export = export

    def _start_h2(self, ssl_context: ssl.SSLContext | None) -> None:
        channel = H2GrpcChannel(
            self._settings.endpoint, EXPORT_METHOD, self._metadata or (), ssl_context
        )
        self._channel = channel

        async def export(payload: bytes, time_limit: float | None) -> Any:
            answer = await channel.call(payload, time_limit)
            if answer is None:
                return None
            try:
                return ExportTraceServiceResponse.FromString(answer)
            except DecodeError:
                return None

        self._export = export

    async def send(self, payload: bytes) -> None:
        """Export one serialized request; raise ExportFailed on any RPC failure."""
        export = self._export
        if export is None:
            raise ExportFailed("exporter is not running", code=SHUTDOWN_CODE, retryable=False)
        timeout = self._settings.timeout
        try:
            response = await export(payload, timeout)
        except grpc.aio.AioRpcError as err:
            raise export_failed(err.code(), err.details() or "", err.trailing_metadata()) from err
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this send was cancelled
            # The aio channel closed under the call (shutdown): as the blocking one says.
            raise ExportFailed(
                "OTLP export failed: CANCELLED: the channel closed",
                code="CANCELLED",
                retryable=True,
            ) from None
        if response is not None:  # None: an OK answer whose body did not parse
            self._note_partial_success(response)

    async def shutdown(self, grace: float | None = None) -> None:
        """Close the channel, cancelling in-flight calls after ``grace`` seconds."""
        channel, self._channel, self._export = self._channel, None, None
        if channel is not None:
            await channel.close(grace)

    async def _credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials (system roots or ``ca_file``), or None for plaintext."""
        if self._settings.insecure:
            return None
        ca_file = self._settings.ca_file
        if ca_file is None:
            return grpc.ssl_channel_credentials()
        try:
            roots = await asyncio.to_thread(Path(ca_file).read_bytes)
        except OSError as err:
            problem = Problem("exporter.ca_file", f"cannot read {ca_file}: {err.strerror}")
            raise ConfigError([problem]) from err
        return grpc.ssl_channel_credentials(root_certificates=roots)

    def _open_channel(self, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
        """Create the (uncompressed) channel with large message limits."""
        options = [
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
            ("grpc.primary_user_agent", "otel-user-enricher"),
        ]
        target = self._settings.endpoint
        if credentials is None:
            return grpc.aio.insecure_channel(target, options=options)
        return grpc.aio.secure_channel(target, credentials, options=options)

    def _note_partial_success(self, response: ExportTraceServiceResponse) -> None:
        """Log and count spans rejected in a partial success (not retried, per the spec)."""
        # OTLP spec, "Partial Success": the client MUST NOT retry the request.
        rejected = int(response.partial_success.rejected_spans)
        if rejected <= 0:
            return
        message = str(response.partial_success.error_message)
        self._rejected_spans_total += rejected
        _log.warning("export_partial_success", rejected_spans=rejected, error_message=message)
        if self._on_partial_success is not None:
            self._on_partial_success(rejected, message)
